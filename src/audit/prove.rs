//! `wijkpoort audit prove --message ID`: the offline proof of one stored envelope.
//!
//! An envelope is signed by its sender once per relay batch ([`crate::envelope_batch`]):
//! the store keeps, with each envelope, the batch signature and the envelope's path to
//! the signed root. This rebuilds the root from the envelope's exact bytes and its
//! path, checks the batch signature over it against the certificate the signature names
//! (kept in the store by its fingerprint), and says whom that certificate names and —
//! given trust anchors — whether it chained to one when the envelope was made. What it
//! proves: the holder of that certificate's key signed a batch, from `from` to `to`,
//! that contained exactly these bytes. It shows hashes, the path and the signature,
//! never the envelope's content.
//!
//! Envelopes stored before batch signatures carry a signature over their own bytes and
//! are checked as such.

use chrono::{DateTime, Utc};
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::verify::chains_to_anchor;
use super::AuditTrees;
use crate::envelope_batch::{verify_stored, EnvelopeProof};
use crate::message::Envelope;
use crate::receipt::sha256_hex;
use crate::store::{StoreError, T};

/// Which side of the exchange holds the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// This gateway sent it (its outbox).
    Sent,
    /// This gateway received it (its inbox).
    Received,
}

/// The proof of one stored envelope, and what checking it found.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeProofReport {
    pub side: Side,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub created_at: DateTime<Utc>,
    /// SHA-256 (hex) of the exact envelope bytes stored.
    pub envelope_sha256: String,
    /// Its path to the batch root (absent: signed on its own, before batch signatures).
    pub batch: Option<EnvelopeProof>,
    /// The root the path leads to from these bytes (hex).
    pub root: Option<String>,
    /// The signature as stored (`ALG:FINGERPRINT:HEX`).
    pub signature: Option<String>,
    /// The fingerprint of the signer's certificate the signature names.
    pub signer_certificate: Option<String>,
    /// The organisation the signer's certificate names, and its subject.
    pub signer_organisation: Option<String>,
    pub signer_subject: Option<String>,
    /// Whether the signer's certificate chained to a given trust anchor when the
    /// envelope was received (sent: made) (None: no anchors given).
    pub signer_chains_to_anchor: Option<bool>,
    /// The proof holds: the signature covers this envelope and the certificate names
    /// the envelope's sender (and chains to an anchor, when anchors were given).
    pub valid: bool,
    /// Why not, when it does not.
    pub problem: Option<String>,
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("no envelope with id {0:?} in this store (sent or received)")]
    NotFound(String),
    #[error("a stored message cannot be read: {0}")]
    Unreadable(String),
}

impl From<sled::Error> for ProveError {
    fn from(e: sled::Error) -> ProveError {
        ProveError::Store(StoreError::Sled(e))
    }
}

/// The proofs of every stored envelope with id `message_id` (sent, and received from
/// `from` or from any sender), each checked; `anchors` also check the signer's chain.
pub fn prove(
    trees: &impl AuditTrees,
    message_id: &str,
    from: Option<&str>,
    anchors: &[CertificateDer<'static>],
) -> Result<Vec<EnvelopeProofReport>, ProveError> {
    let mut found = Vec::new();
    let id = message_id.as_bytes();
    if let Some(record) = trees.tree(T::Sent).get(id)? {
        let record = trees.open_value(T::Sent, id, &record)?;
        let envelope = match trees.tree(T::SentEnvelopes).get(id)? {
            Some(e) => Some(trees.open_value(T::SentEnvelopes, id, &e)?),
            None => None,
        };
        let sent = crate::outbox::decode_in(trees, &record, envelope.as_deref())?;
        found.push((Side::Sent, sent.envelope, sent.signature, sent.batch, None));
    }
    for entry in trees.tree(T::Received).iter() {
        let (key, value) = entry?;
        let Some(split) = key.iter().position(|b| *b == 0) else {
            continue;
        };
        if &key[split + 1..] != message_id.as_bytes()
            || from.is_some_and(|f| f.as_bytes() != &key[..split])
        {
            continue;
        }
        let value = trees.open_value(T::Received, &key, &value)?;
        let received = crate::inbox::decode_in(trees, &value)?;
        found.push((
            Side::Received,
            received.envelope,
            Some(received.signature),
            received.batch,
            Some(received.received_at),
        ));
    }
    let mut reports = Vec::with_capacity(found.len());
    for (side, envelope, signature, batch, received_at) in found {
        let report = check(
            trees,
            side,
            &envelope,
            signature,
            batch,
            received_at,
            anchors,
        )?;
        if from.is_none_or(|f| f == report.from) {
            reports.push(report);
        }
    }
    if reports.is_empty() {
        return Err(ProveError::NotFound(message_id.to_string()));
    }
    Ok(reports)
}

fn check(
    trees: &impl AuditTrees,
    side: Side,
    envelope: &str,
    signature: Option<String>,
    batch: Option<EnvelopeProof>,
    received_at: Option<DateTime<Utc>>,
    anchors: &[CertificateDer<'static>],
) -> Result<EnvelopeProofReport, ProveError> {
    let parsed: Envelope = serde_json::from_str(envelope)
        .map_err(|e| ProveError::Unreadable(format!("the stored envelope: {e}")))?;
    let bytes = envelope.as_bytes();
    let root = batch
        .as_ref()
        .and_then(|b| b.root_for(bytes).ok())
        .map(hex::encode);
    let mut report = EnvelopeProofReport {
        side,
        message_id: parsed.id.clone(),
        from: parsed.from.to_string(),
        to: parsed.to.to_string(),
        created_at: parsed.created_at,
        envelope_sha256: sha256_hex(bytes),
        batch,
        root,
        signature: signature.clone(),
        signer_certificate: None,
        signer_organisation: None,
        signer_subject: None,
        signer_chains_to_anchor: None,
        valid: false,
        problem: None,
    };
    let Some(signature) = signature else {
        report.problem = Some("not signed yet: the relay signs a message when it sends it".into());
        return Ok(report);
    };
    let Some(fingerprint) = crate::signing::named_certificate(&signature) else {
        report.problem =
            Some("the signature names no certificate (made before signatures named theirs)".into());
        return Ok(report);
    };
    report.signer_certificate = Some(fingerprint.clone());
    let Some(cert) = trees.tree(T::Certificates).get(fingerprint.as_bytes())? else {
        report.problem = Some(format!(
            "the store does not hold the certificate {fingerprint} the signature names"
        ));
        return Ok(report);
    };
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(&cert) {
        report.signer_subject = Some(c.subject().to_string());
    }
    let identity = crate::identity::identify(&cert).map(|i| i.organisation_id.to_string());
    report.signer_organisation = identity.as_ref().ok().cloned();
    if let Some(b) = &report.batch {
        if b.from != report.from || b.to != report.to {
            report.problem = Some(format!(
                "the batch signature is from {} to {}, the envelope from {} to {}",
                b.from, b.to, report.from, report.to
            ));
            return Ok(report);
        }
    }
    if let Err(e) = verify_stored(&cert, bytes, &signature, report.batch.as_ref()) {
        report.problem = Some(e.to_string());
        return Ok(report);
    }
    if identity.as_deref().ok() != Some(report.from.as_str()) {
        report.problem = Some(format!(
            "the signer's certificate names {}, not the envelope's sender {}",
            report
                .signer_organisation
                .as_deref()
                .unwrap_or("no organisation"),
            report.from
        ));
        return Ok(report);
    }
    if !anchors.is_empty() {
        // When it was received (the receiver checked the chain then), else when it was
        // made (its own sender's clock).
        let at = received_at.unwrap_or(report.created_at);
        let chains = chains_to_anchor(trees, &cert, anchors, &at);
        report.signer_chains_to_anchor = Some(chains);
        if !chains {
            report.problem = Some(
                "the signer's certificate did not chain to a given trust anchor when the envelope was received (sent: made)"
                    .into(),
            );
            return Ok(report);
        }
    }
    report.valid = true;
    Ok(report)
}

/// The proofs as text: one block per stored envelope.
pub fn render(reports: &[EnvelopeProofReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let side = match r.side {
            Side::Sent => "sent",
            Side::Received => "received",
        };
        out.push_str(&format!(
            "envelope {} ({side}), from {} to {}, made {}\n",
            r.message_id,
            r.from,
            r.to,
            r.created_at.to_rfc3339()
        ));
        out.push_str(&format!("  envelope sha256   {}\n", r.envelope_sha256));
        match &r.batch {
            Some(b) => {
                out.push_str(&format!(
                    "  batch             {} of {} (position, size)\n",
                    b.proof.index, b.proof.size
                ));
                for (i, h) in b.proof.path.iter().enumerate() {
                    out.push_str(&format!("  path[{i}]           {h}\n"));
                }
                out.push_str(&format!(
                    "  root              {}\n",
                    r.root.as_deref().unwrap_or("(the path is malformed)")
                ));
            }
            None => out.push_str("  batch             none (signed on its own)\n"),
        }
        out.push_str(&format!(
            "  signature         {}\n",
            r.signature.as_deref().unwrap_or("none")
        ));
        out.push_str(&format!(
            "  signer            {} ({}), certificate {}\n",
            r.signer_organisation.as_deref().unwrap_or("?"),
            r.signer_subject.as_deref().unwrap_or("?"),
            r.signer_certificate.as_deref().unwrap_or("?")
        ));
        if let Some(chains) = r.signer_chains_to_anchor {
            out.push_str(&format!(
                "  chain             {}\n",
                if chains {
                    "chains to a trust anchor (when received; sent: when made)"
                } else {
                    "does NOT chain to a trust anchor"
                }
            ));
        } else {
            out.push_str(
                "  chain             not checked (give --ca or --config for trust anchors)\n",
            );
        }
        match &r.problem {
            None => out.push_str("  proof             valid\n"),
            Some(p) => out.push_str(&format!("  proof             NOT VALID: {p}\n")),
        }
    }
    out
}
