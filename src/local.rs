//! Who this gateway is: its role, its organisation identifier, the key it signs with and
//! its clock. Built once from the validated config and shared by every part that acts in
//! the gateway's name; only the signer changes, when a reload brings a renewed key and
//! certificate (the signer swaps them in place, see [`crate::signing`]). It holds no
//! secret other than the signing key (the HMAC secret and the API token stay with the
//! parts that need them).

use std::sync::Arc;

use crate::chain::{Actor, AuditEvent, Event, Outcome};
use crate::clock::Clock;
use crate::config::Role;
use crate::identity::OrgId;
use crate::signing::Signer;

pub struct Local {
    pub role: Role,
    /// This gateway's organisation identifier (from its certificate).
    pub identity: OrgId,
    /// Signs envelopes, receipts and checkpoints; each signature names the certificate.
    pub signer: Arc<Signer>,
    pub clock: Clock,
}

impl Local {
    /// An audit event for a step this gateway takes by itself.
    pub fn own_event(&self, event: Event, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(event, outcome, Actor::Gateway).on_behalf_of(self.identity.as_str())
    }

    /// An audit event for a step taken by `actor`, on this gateway's behalf.
    pub fn event(&self, event: Event, outcome: Outcome, actor: Actor) -> AuditEvent {
        AuditEvent::new(event, outcome, actor).on_behalf_of(self.identity.as_str())
    }
}
