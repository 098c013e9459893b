//! The same error, logged once and then at most once a minute with a count.
//!
//! During an outage every pass (every 30 s, and every standby retry) meets
//! the same error; logging each one buries the line that said when it
//! started. An error is logged the first time it is met, and then at most
//! once per `every`, saying how many times it was met since it was last
//! logged. An error that stops recurring is forgotten, so that it is
//! logged at once when it comes back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a recurring error is logged again.
pub const EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Repeats {
    every: Duration,
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    /// Times met since it was last logged.
    unlogged: u64,
}

impl Default for Repeats {
    fn default() -> Repeats {
        Repeats::new(EVERY)
    }
}

impl Repeats {
    pub fn new(every: Duration) -> Repeats {
        Repeats {
            every,
            seen: HashMap::new(),
        }
    }

    /// The line to log for `error` met at `now`, or `None` to stay quiet.
    pub fn note(&mut self, error: &str, now: Instant) -> Option<String> {
        match self.seen.get_mut(error) {
            None => {
                self.seen.insert(
                    error.to_string(),
                    Seen {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(error.to_string())
            }
            Some(s) => {
                s.unlogged += 1;
                if now.saturating_duration_since(s.logged_at) < self.every {
                    return None;
                }
                let line = format!(
                    "{error} (again, {} time(s) in the last {})",
                    s.unlogged,
                    humantime::format_duration(Duration::from_secs(
                        now.saturating_duration_since(s.logged_at).as_secs()
                    ))
                );
                s.logged_at = now;
                s.unlogged = 0;
                Some(line)
            }
        }
    }

    /// Forgets the errors not in `current`: the ones a pass no longer met.
    pub fn keep_only<'a>(&mut self, current: impl IntoIterator<Item = &'a str>) {
        let current: std::collections::HashSet<&str> = current.into_iter().collect();
        self.seen.retain(|e, _| current.contains(e.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_is_logged_once_then_once_a_minute_with_a_count() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        let e = "database postgres://h/db (database.url): reading this host's rows: \
                 the database did not answer within 10s";
        assert_eq!(r.note(e, t0).as_deref(), Some(e));
        // A pass every 30 s: quiet until a minute has passed.
        assert_eq!(r.note(e, t0 + Duration::from_secs(30)), None);
        assert_eq!(
            r.note(e, t0 + Duration::from_secs(60)).as_deref(),
            Some(format!("{e} (again, 2 time(s) in the last 1m)").as_str())
        );
        assert_eq!(r.note(e, t0 + Duration::from_secs(90)), None);
        // Another error is not held back by the first.
        assert_eq!(
            r.note("other", t0 + Duration::from_secs(90)).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn an_error_that_comes_back_after_it_stopped_is_logged_at_once() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        assert!(r.note("down", t0).is_some());
        r.keep_only([]);
        assert_eq!(
            r.note("down", t0 + Duration::from_secs(5)).as_deref(),
            Some("down")
        );
    }
}
