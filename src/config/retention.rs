//! `[retention]`: how long each kind of stored data is kept, in days, validated once at
//! start (the purge that applies it is [`crate::retention`]). The README gives each
//! default and its source.

use chrono::Duration;
use serde::Deserialize;

/// Five years (in days, with a leap day): the shortest audit retention this build takes.
pub const AUDIT_MIN_DAYS: u32 = 1827;
/// Twenty years: the WGBO's period for the medical record (BW 7:454 lid 3), the longest.
pub const AUDIT_MAX_DAYS: u32 = 7305;

/// `[retention]` as written; every field in days. See the README for the reasoning.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    #[serde(default = "default_delivered")]
    pub delivered_body_days: u32,
    #[serde(default = "default_acknowledged")]
    pub acknowledged_body_days: u32,
    #[serde(default = "default_undelivered")]
    pub undelivered_body_days: u32,
    #[serde(default = "default_consent")]
    pub consent_after_end_days: u32,
    #[serde(default = "default_audit")]
    pub audit_days: u32,
}

fn default_delivered() -> u32 {
    30
}
fn default_acknowledged() -> u32 {
    30
}
fn default_undelivered() -> u32 {
    90
}
fn default_consent() -> u32 {
    AUDIT_MIN_DAYS
}
fn default_audit() -> u32 {
    AUDIT_MIN_DAYS
}

impl Default for RawRetention {
    fn default() -> RawRetention {
        RawRetention {
            delivered_body_days: default_delivered(),
            acknowledged_body_days: default_acknowledged(),
            undelivered_body_days: default_undelivered(),
            consent_after_end_days: default_consent(),
            audit_days: default_audit(),
        }
    }
}

/// The validated retention periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub delivered_body: Duration,
    pub acknowledged_body: Duration,
    pub undelivered_body: Duration,
    pub consent_after_end: Duration,
    pub audit: Duration,
}

impl RawRetention {
    /// Checks the periods; an error names the field and the rule.
    pub fn validate(&self) -> Result<Retention, (&'static str, String)> {
        if !(AUDIT_MIN_DAYS..=AUDIT_MAX_DAYS).contains(&self.audit_days) {
            return Err((
                "audit_days",
                format!(
                    "{} is outside {AUDIT_MIN_DAYS}..={AUDIT_MAX_DAYS}: access logs are kept at least five years (NEN 7513) and no longer than the medical record (20 years, WGBO)",
                    self.audit_days
                ),
            ));
        }
        if self.consent_after_end_days > self.audit_days {
            return Err((
                "consent_after_end_days",
                "must not exceed audit_days: a consent is evidence for the exchanges the audit log records, not longer".into(),
            ));
        }
        let days = |d: u32| Duration::days(i64::from(d));
        Ok(Retention {
            delivered_body: days(self.delivered_body_days),
            acknowledged_body: days(self.acknowledged_body_days),
            undelivered_body: days(self.undelivered_body_days),
            consent_after_end: days(self.consent_after_end_days),
            audit: days(self.audit_days),
        })
    }
}

impl Default for Retention {
    fn default() -> Retention {
        // The defaults pass validation by construction.
        let raw = RawRetention::default();
        let days = |d: u32| Duration::days(i64::from(d));
        Retention {
            delivered_body: days(raw.delivered_body_days),
            acknowledged_body: days(raw.acknowledged_body_days),
            undelivered_body: days(raw.undelivered_body_days),
            consent_after_end: days(raw.consent_after_end_days),
            audit: days(raw.audit_days),
        }
    }
}
