//! The one clock of a gateway: "now" for timestamps and "today" for consent periods and
//! the auditor's views, so that every part judges dates the same way and a test can move
//! time instead of sleeping.
//!
//! "Today" is the local calendar date of the machine the gateway runs on (in production
//! the Netherlands): a consent valid until 31 March covers messages until midnight Dutch
//! time, not until 01:00 or 02:00 the next day as a UTC date would.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Local, NaiveDate, Utc};

/// System time, shifted by an offset that only tests change.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// The local calendar date that consent periods are judged by.
    pub fn today(&self) -> NaiveDate {
        self.now().with_timezone(&Local).date_naive()
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_moves_every_clone() {
        let clock = Clock::system();
        let copy = clock.clone();
        let before = copy.today();
        clock.advance(chrono::Duration::days(3));
        assert_eq!(copy.today(), before + chrono::Duration::days(3));
        assert!(copy.now() > Utc::now() + chrono::Duration::days(2));
    }
}
