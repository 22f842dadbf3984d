//! The `[limits]` section: how much of the gateway one client, one peer or a flood may
//! take. Every field has a default (the README's "Limits" table says each one and why);
//! [`RawLimits::validate`] checks them once at start. What enforces them is
//! `crate::server::limits`.

use std::time::Duration;

use serde::Deserialize;

/// `[limits]` as written; every field may be left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Open connections on the mTLS listener, identified or not.
    pub max_connections: usize,
    /// mTLS connections not yet identified as a configured peer or auditor (in the
    /// handshake, or after it without a peer's certificate). When full, the oldest is
    /// closed to make room.
    pub max_unidentified: usize,
    /// Unidentified mTLS connections from one source address.
    pub max_unidentified_per_source: usize,
    /// New mTLS connections (each a TLS handshake) accepted per second, on average.
    pub handshakes_per_sec: u32,
    /// How many handshakes may come at once above that rate.
    pub handshake_burst: u32,
    pub handshake_timeout_ms: u64,
    /// From the first byte of a request until its headers are complete.
    pub header_read_timeout_ms: u64,
    /// Reading a request's whole body.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in progress and no bytes moving is closed after this.
    pub idle_timeout_ms: u64,
    /// One request, from its headers to its answer.
    pub request_timeout_ms: u64,
    /// Requests one configured peer or auditor may have in progress at once.
    pub max_requests_per_peer: usize,
    /// Open connections on the local API.
    pub local_api_max_connections: usize,
    /// File descriptors kept free beyond every connection cap: the store, the relays'
    /// outgoing connections, log files.
    pub fd_reserve: u64,
    /// Free space kept on the store's filesystem: below it, new submissions and relayed
    /// batches are answered 503 `disk_full`; reads and audit records go on.
    pub disk_reserve_mb: u64,
    /// Refusals of clients that could not be identified are summarised per source
    /// address and reason over this interval.
    pub audit_summary_interval_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 512,
            max_unidentified: 128,
            max_unidentified_per_source: 32,
            handshakes_per_sec: 100,
            handshake_burst: 200,
            handshake_timeout_ms: 5_000,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            max_requests_per_peer: 8,
            local_api_max_connections: 64,
            fd_reserve: 128,
            disk_reserve_mb: 512,
            audit_summary_interval_ms: 10_000,
        }
    }
}

/// The validated limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_unidentified: usize,
    pub max_unidentified_per_source: usize,
    pub handshakes_per_sec: u32,
    pub handshake_burst: u32,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_requests_per_peer: usize,
    pub local_api_max_connections: usize,
    pub fd_reserve: u64,
    pub disk_reserve_bytes: u64,
    pub audit_summary_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        RawLimits::default()
            .validate()
            .unwrap_or_else(|(field, problem)| panic!("default limits: {field}: {problem}"))
    }
}

impl Limits {
    /// File descriptors the connection caps may take, plus the reserve.
    pub fn descriptors_needed(&self) -> u64 {
        (self.max_connections + self.local_api_max_connections) as u64 + self.fd_reserve
    }
}

impl RawLimits {
    /// Checks every limit; a mistake names its field (within `[limits]`).
    pub fn validate(&self) -> Result<Limits, (&'static str, String)> {
        let positive = |field: &'static str, v: u64| {
            if v == 0 {
                Err((field, "must be positive".to_string()))
            } else {
                Ok(())
            }
        };
        positive("max_connections", self.max_connections as u64)?;
        positive("max_unidentified", self.max_unidentified as u64)?;
        positive(
            "max_unidentified_per_source",
            self.max_unidentified_per_source as u64,
        )?;
        positive("handshakes_per_sec", self.handshakes_per_sec.into())?;
        positive("handshake_burst", self.handshake_burst.into())?;
        positive("max_requests_per_peer", self.max_requests_per_peer as u64)?;
        positive(
            "local_api_max_connections",
            self.local_api_max_connections as u64,
        )?;
        if self.max_unidentified >= self.max_connections {
            return Err((
                "max_unidentified",
                format!(
                    "must be below max_connections ({}), so that identified peers keep room",
                    self.max_connections
                ),
            ));
        }
        if self.max_unidentified_per_source > self.max_unidentified {
            return Err((
                "max_unidentified_per_source",
                format!(
                    "must not be above max_unidentified ({})",
                    self.max_unidentified
                ),
            ));
        }
        let ms = |field: &'static str, v: u64| {
            if !(10..=3_600_000).contains(&v) {
                Err((field, format!("{v} ms: must be between 10 ms and one hour")))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        Ok(Limits {
            max_connections: self.max_connections,
            max_unidentified: self.max_unidentified,
            max_unidentified_per_source: self.max_unidentified_per_source,
            handshakes_per_sec: self.handshakes_per_sec,
            handshake_burst: self.handshake_burst,
            handshake_timeout: ms("handshake_timeout_ms", self.handshake_timeout_ms)?,
            header_read_timeout: ms("header_read_timeout_ms", self.header_read_timeout_ms)?,
            body_read_timeout: ms("body_read_timeout_ms", self.body_read_timeout_ms)?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms)?,
            request_timeout: ms("request_timeout_ms", self.request_timeout_ms)?,
            max_requests_per_peer: self.max_requests_per_peer,
            local_api_max_connections: self.local_api_max_connections,
            fd_reserve: self.fd_reserve,
            disk_reserve_bytes: self.disk_reserve_mb.saturating_mul(1024 * 1024),
            audit_summary_interval: ms(
                "audit_summary_interval_ms",
                self.audit_summary_interval_ms,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        let l = Limits::default();
        assert!(l.max_unidentified < l.max_connections);
        assert!(
            l.descriptors_needed() <= 1024,
            "defaults fit the usual 1,024"
        );
    }

    #[test]
    fn a_mistake_names_its_field() {
        let raw = RawLimits {
            max_unidentified: 600,
            ..RawLimits::default()
        };
        assert_eq!(raw.validate().unwrap_err().0, "max_unidentified");
        let raw = RawLimits {
            idle_timeout_ms: 0,
            ..RawLimits::default()
        };
        assert_eq!(raw.validate().unwrap_err().0, "idle_timeout_ms");
    }
}
