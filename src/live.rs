//! A value that a configuration reload may replace while the gateway runs: readers take
//! the current one (an `Arc`, cheap to clone, unchanged for as long as they hold it);
//! the reload swaps in a whole new one at once. Used for the peers, the auditors and the
//! minimisation policy, so that a reader never sees half of an old and half of a new
//! configuration.

use std::sync::{Arc, RwLock};

pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn current(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => v.clone(),
            // A writer panicked while swapping: the value itself is whole either way.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value for every reader that asks after this.
    pub fn replace(&self, value: T) {
        let value = Arc::new(value);
        match self.0.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_what_it_took_and_the_next_one_sees_the_new_value() {
        let live = Live::new(1);
        let other = live.clone();
        let held = live.current();
        other.replace(2);
        assert_eq!(*held, 1);
        assert_eq!(*live.current(), 2);
    }
}
