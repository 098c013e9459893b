//! Claims: two runs never act on one target at once, even when a run is
//! abandoned while its blocking work goes on.
//!
//! # Guarantees
//! 1. **One holder.** A target is held by at most one [`Claim`]; a second
//!    run asking for it waits until it is released, then is told the
//!    target was handled (its plan predates that effect) (test
//!    `a_waiter_is_told_the_target_was_handled`).
//! 2. **Held until the work really ends.** A claim is a shared guard:
//!    every clone moved into a blocking task (a removal, a force archive)
//!    keeps the target claimed until that task returns, even when the
//!    run's future was dropped by a timeout or by shutdown (test
//!    `a_claim_outlives_the_dropped_run_while_its_blocking_work_goes_on`,
//!    and `a_removal_that_outlasts_the_run_timeout_is_never_started_twice`
//!    in `tests/crash.rs`).
//! 3. **Visible.** [`Claims::held`] lists the targets held now, for the
//!    answer of a run that timed out ("still working on X").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long the table remembers that a target was acted on.
const ACTED_MEMORY: Duration = Duration::from_secs(600);

/// The targets held now, and when each was last released.
#[derive(Default)]
pub struct Claims {
    inflight: Mutex<HashSet<String>>,
    /// A run whose plan is older than the last release leaves the target
    /// alone.
    acted: Mutex<HashMap<String, Instant>>,
    released: Notify,
}

/// A target held by one action, and by every blocking task it handed a
/// clone to; released when the last clone is dropped.
#[derive(Clone)]
pub struct Claim {
    _inner: Arc<Held>,
}

struct Held {
    claims: Arc<Claims>,
    target: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut acted = self.claims.acted.lock().expect("acted lock");
            let now = Instant::now();
            // Only plans older than a pass timeout could still be running:
            // forget older entries so that the map stays small.
            acted.retain(|_, t| now.duration_since(*t) < ACTED_MEMORY);
            acted.insert(self.target.clone(), now);
        }
        self.claims
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&self.target);
        self.claims.released.notify_waiters();
    }
}

impl Claims {
    /// Claims `target`; `None` when another run held it (waited for), or
    /// acted on it after `observed_at` (the caller's plan is then stale).
    pub async fn claim(self: &Arc<Self>, target: &str, observed_at: Instant) -> Option<Claim> {
        let mut waited = false;
        loop {
            let notified = self.released.notified();
            {
                let mut inflight = self.inflight.lock().expect("inflight lock");
                if !inflight.contains(target) {
                    let acted_since = self
                        .acted
                        .lock()
                        .expect("acted lock")
                        .get(target)
                        .is_some_and(|t| *t > observed_at);
                    if waited || acted_since {
                        return None;
                    }
                    inflight.insert(target.to_string());
                    return Some(Claim {
                        _inner: Arc::new(Held {
                            claims: Arc::clone(self),
                            target: target.to_string(),
                        }),
                    });
                }
            }
            waited = true;
            notified.await;
        }
    }

    /// The targets held now, sorted.
    pub fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inflight
            .lock()
            .expect("inflight lock")
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_is_told_the_target_was_handled() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim("t", Instant::now()).await.unwrap();
        let waiter = {
            let claims = Arc::clone(&claims);
            tokio::spawn(async move { claims.claim("t", Instant::now()).await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(!waiter.await.unwrap(), "the waiter leaves the target");
        assert!(claims.held().is_empty());
    }

    #[tokio::test]
    async fn a_claim_outlives_the_dropped_run_while_its_blocking_work_goes_on() {
        let claims = Arc::new(Claims::default());
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let run = {
            let claims = Arc::clone(&claims);
            async move {
                let claim = claims.claim("t", Instant::now()).await.unwrap();
                let held = claim.clone();
                tokio::task::spawn_blocking(move || {
                    let _held = held;
                    go_rx.recv().ok();
                })
                .await
                .ok();
            }
        };
        // The run is abandoned (a timeout) while its blocking work goes on.
        let _ = tokio::time::timeout(Duration::from_millis(50), run).await;
        assert_eq!(claims.held(), vec!["t".to_string()]);
        let observed = Instant::now();
        let second = {
            let claims = Arc::clone(&claims);
            tokio::spawn(async move { claims.claim("t", observed).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "still claimed by the blocking work");
        go_tx.send(()).unwrap();
        assert!(!second.await.unwrap());
        assert!(claims.held().is_empty());
    }
}
