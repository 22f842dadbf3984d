//! The one piece of DER writing wijkpoort does by hand: a tag, a definite length and
//! the content. Used to wrap a SEC1 EC key into PKCS#8 for ring ([`crate::signing`]) and
//! by the dev PKI for the otherNames rcgen cannot write. Nothing is parsed here.

/// DER: a tag, a definite length and the content.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}
