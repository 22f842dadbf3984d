//! What the fuzz targets (`tests/fuzz/`, README "Fuzzing") need of the library and no
//! other caller does: the identity rules without the issuer checks in front of them.
//! Hidden from the documentation; nothing in the gateway calls it.

use crate::identity::{CertIdentity, IdentityError};
use crate::issuers::Rule;

/// Reads the identity of an arbitrary certificate (DER) by an issuing CA's `rule`, as
/// [`crate::issuers::Issuers::identify`] does once the issuer's name and signature have
/// checked out.
pub fn identify_by_rule(der: &[u8], rule: Rule) -> Result<CertIdentity, IdentityError> {
    crate::issuers::read_by_rule(der, rule)
}
