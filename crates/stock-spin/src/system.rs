//! The clock and id ports over WASI: wall-clock time, sleeping between CAS retries, and
//! random UUIDs.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stock_domain::ports::{Clock, IdGenerator};

/// `wasi:clocks` wall-clock time; sleeping blocks the (single-threaded) instance.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Random v4 UUIDs (`wasi:random`), and backoff jitter from a xorshift generator seeded
/// by one of them: jitter needs to differ between instances, not to be unpredictable.
pub struct RandomIds {
    state: Cell<u64>,
}

impl RandomIds {
    pub fn new() -> Self {
        let seed = uuid::Uuid::new_v4().as_u128();
        // Xorshift must not start at zero.
        let state = ((seed >> 64) as u64 ^ seed as u64) | 1;
        Self {
            state: Cell::new(state),
        }
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator for RandomIds {
    fn new_id(&self) -> String {
        uuid::Uuid::new_v4().hyphenated().to_string()
    }

    fn jitter(&self, bound: u64) -> u64 {
        let mut x = self.state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.set(x);
        x % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hyphenated_uuids() {
        let ids = RandomIds::new();
        let (a, b) = (ids.new_id(), ids.new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let ids = RandomIds::new();
        for bound in [1, 2, 7, 64] {
            for _ in 0..100 {
                assert!(ids.jitter(bound) < bound);
            }
        }
    }

    #[test]
    fn the_clock_reads_milliseconds_since_the_epoch() {
        // 2020-01-01: any real clock is past it; seconds would be far below.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
