//! Per-target exponential backoff: a target that keeps failing is retried
//! less and less often, without holding back any other target.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The first retry waits this long after a failure.
pub const BASE: Duration = Duration::from_secs(5);
/// No target waits longer than this between attempts.
pub const MAX: Duration = Duration::from_secs(600);

/// A key backing off after failures, as `/status` shows it: when the next
/// attempt is, in whole seconds from now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackingOff {
    pub target: String,
    pub failures: u32,
    pub next_attempt_in_secs: u64,
    pub last_error: String,
}

impl BackingOff {
    /// `target`, backing off for `next_attempt_in` more (rounded down to
    /// whole seconds).
    pub fn new(
        target: String,
        failures: u32,
        next_attempt_in: Duration,
        last_error: String,
    ) -> BackingOff {
        BackingOff {
            target,
            failures,
            next_attempt_in_secs: next_attempt_in.as_secs(),
            last_error,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub failures: u32,
    pub next_attempt: Instant,
    pub last_error: String,
}

impl Entry {
    /// Why the target is not attempted at `now`.
    pub fn why(&self, now: Instant) -> String {
        let wait = self.next_attempt.saturating_duration_since(now).as_secs();
        format!(
            "backing off after {} failure(s), next attempt in {}: {}",
            self.failures,
            humantime::format_duration(Duration::from_secs(wait)),
            self.last_error
        )
    }
}

/// Failing targets by key. Success forgets a target entirely.
#[derive(Debug)]
pub struct Backoff<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            entries: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    /// The entry that holds `target` back at `now`, if any.
    pub fn blocking(&self, target: &K, now: Instant) -> Option<&Entry> {
        self.entries.get(target).filter(|e| e.next_attempt > now)
    }

    /// Records a failure: the delay doubles with each consecutive failure.
    pub fn failed(&mut self, target: &K, now: Instant, error: &str) -> &Entry {
        let e = self.entries.entry(target.clone()).or_insert(Entry {
            failures: 0,
            next_attempt: now,
            last_error: String::new(),
        });
        e.failures = e.failures.saturating_add(1);
        e.next_attempt = now + delay(e.failures);
        e.last_error = error.to_string();
        e
    }

    pub fn succeeded(&mut self, target: &K) {
        self.entries.remove(target);
    }

    pub fn entries(&self) -> impl Iterator<Item = (&K, &Entry)> {
        self.entries.iter()
    }
}

/// `BASE * 2^(failures-1)`, capped at `MAX`.
pub fn delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1 << exp).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_is_capped() {
        assert_eq!(delay(1), Duration::from_secs(5));
        assert_eq!(delay(2), Duration::from_secs(10));
        assert_eq!(delay(3), Duration::from_secs(20));
        assert_eq!(delay(100), MAX);
    }

    #[test]
    fn failing_target_does_not_block_others_and_success_resets() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.failed(&"a", t0, "boom");
        assert!(b.blocking(&"a", t0).is_some());
        assert!(b.blocking(&"b", t0).is_none());
        assert!(b.blocking(&"a", t0 + BASE).is_none());
        b.failed(&"a", t0, "boom");
        assert_eq!(b.blocking(&"a", t0).unwrap().failures, 2);
        b.succeeded(&"a");
        assert!(b.blocking(&"a", t0).is_none());
    }
}
