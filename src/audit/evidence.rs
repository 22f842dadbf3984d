//! What the auditor's views show of a consent's evidence: a hash and never the text.
//! FHIR's `Attachment.hash` is a SHA-1 in base64 (R4 defines the element so); the
//! export and the consent history both use it, so it lives here rather than in either.

/// FHIR `Attachment.hash` of a text: its SHA-1 (as R4 defines the element), base64. The
/// auditor sees that evidence exists and can match it to the practice's copy, but never
/// reads it.
pub fn attachment_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    base64(digest.as_ref())
}

/// Standard base64 with padding (RFC 4648), as FHIR `base64Binary` requires.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
