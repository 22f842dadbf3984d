//! Pseudonyms: the keyed HMAC of a child's BSN that the audit log, its indexes and the
//! consent index use in place of the BSN, so the log holds no direct identifier yet an
//! auditor with the gateway's secret can still find a child's records by BSN. Owns the
//! derivation of its key from the gateway's secret, nothing else.

use ring::hmac;

use crate::message::Bsn;

/// Turns a BSN into the pseudonym the audit log and indexes use.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: hmac::Key,
}

impl Pseudonymiser {
    pub fn new(secret: &[u8]) -> Pseudonymiser {
        // Derive a key for this one purpose, so that the same secret can key other things.
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"wijkpoort audit subject pseudonym v1");
        Pseudonymiser {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    pub fn pseudonym(&self, bsn: &Bsn) -> String {
        hex::encode(hmac::sign(&self.key, bsn.as_str().as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_stable_keyed_and_hides_the_bsn() {
        let bsn = Bsn::try_from("111222333".to_string()).unwrap();
        let a = Pseudonymiser::new(b"key one").pseudonym(&bsn);
        assert_eq!(a, Pseudonymiser::new(b"key one").pseudonym(&bsn));
        assert_ne!(a, Pseudonymiser::new(b"key two").pseudonym(&bsn));
        assert!(!a.contains("111222333"));
        assert_eq!(a.len(), 64);
    }
}
