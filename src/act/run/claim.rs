//! Claims: two runs never act on one target at once, even when a run is
//! abandoned while its blocking work goes on.
//!
//! # Guarantees
//! 1. **One holder.** A target is held by at most one [`Claim`]; a second
//!    run asking for it waits until it is released, then is told the
//!    target was handled (its plan predates that effect) (test
//!    `a_waiter_is_told_the_target_was_handled`). A forced run told so
//!    plans again from what the holder left; it does not stop at this
//!    answer (test `a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it`).
//! 2. **Held until the work really ends.** A claim is a shared guard:
//!    every clone moved into a blocking task (a removal, a force archive)
//!    keeps the target claimed until that task returns, even when the
//!    run's future was dropped by a timeout or by shutdown (test
//!    `a_claim_outlives_the_dropped_run_while_its_blocking_work_goes_on`,
//!    and `a_removal_that_outlasts_the_run_timeout_is_never_started_twice`
//!    in `tests/crash.rs`).
//! 3. **Visible.** [`Claims::held`] lists the targets held now, for the
//!    answer of a run that timed out ("still working on X").
//! 4. **A stale plan leaves the target alone.** A run whose state was read
//!    before the target's last release is told it was handled, for
//!    [`ACTED_MEMORY`] after that release (tests
//!    `a_plan_older_than_the_last_release_is_told_the_target_was_handled`,
//!    `the_last_release_is_forgotten_after_the_acted_memory`).
//!
//! Release times are read from tokio's clock, so that tests can pause it;
//! outside a paused test it is the system's monotonic clock, the clock of
//! the plan's `observed_at`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::plan::Target;

/// How long the table remembers that a target was acted on: longer than
/// any pass may run.
pub const ACTED_MEMORY: Duration = Duration::from_secs(600);

/// The targets held now, and when each was last released.
#[derive(Default)]
pub struct Claims {
    inflight: Mutex<HashSet<Target>>,
    /// A run whose plan is older than the last release leaves the target
    /// alone.
    acted: Mutex<HashMap<Target, tokio::time::Instant>>,
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
    target: Target,
    /// Cleared by [`Claim::unused`]: nothing was done to the target.
    acted: std::sync::atomic::AtomicBool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.acted.load(std::sync::atomic::Ordering::Relaxed) {
            let mut acted = self.claims.acted.lock();
            let now = tokio::time::Instant::now();
            // Only plans older than a pass timeout could still be running:
            // forget older entries so that the map stays small.
            acted.retain(|_, t| now.duration_since(*t) < ACTED_MEMORY);
            acted.insert(self.target.clone(), now);
        }
        self.claims.inflight.lock().remove(&self.target);
        self.claims.released.notify_waiters();
    }
}

impl Claim {
    /// Releases a claim whose action never started (the pass ran out of
    /// time while it waited for a permit): the target is not remembered as
    /// acted on, so that a run whose plan predates this release still
    /// acts on it rather than leaving it to a run that did nothing.
    pub fn unused(self) {
        self._inner
            .acted
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Claims {
    /// Claims `target`; `None` when another run held it (waited for), or
    /// acted on it after `observed_at` (the caller's plan is then stale).
    pub async fn claim(self: &Arc<Self>, target: &Target, observed_at: Instant) -> Option<Claim> {
        let mut waited = false;
        loop {
            let notified = self.released.notified();
            {
                let mut inflight = self.inflight.lock();
                if !inflight.contains(target) {
                    let acted_since = self
                        .acted
                        .lock()
                        .get(target)
                        .is_some_and(|t| t.into_std() > observed_at);
                    if waited || acted_since {
                        return None;
                    }
                    inflight.insert(target.clone());
                    return Some(Claim {
                        _inner: Arc::new(Held {
                            claims: Arc::clone(self),
                            target: target.clone(),
                            acted: std::sync::atomic::AtomicBool::new(true),
                        }),
                    });
                }
            }
            waited = true;
            notified.await;
        }
    }

    /// The targets held now, as text, sorted.
    pub fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inflight
            .lock()
            .iter()
            .map(ToString::to_string)
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
        let first = claims.claim(&t("t"), Instant::now()).await.unwrap();
        let waiter = {
            let claims = Arc::clone(&claims);
            tokio::spawn(async move { claims.claim(&t("t"), Instant::now()).await.is_some() })
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
                let claim = claims.claim(&t("t"), Instant::now()).await.unwrap();
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
        assert_eq!(claims.held(), vec!["agent-row:t".to_string()]);
        let observed = Instant::now();
        let second = {
            let claims = Arc::clone(&claims);
            tokio::spawn(async move { claims.claim(&t("t"), observed).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "still claimed by the blocking work");
        go_tx.send(()).unwrap();
        assert!(!second.await.unwrap());
        assert!(claims.held().is_empty());
    }

    fn t(name: &str) -> Target {
        Target::AgentRow(name.into())
    }

    /// Now on tokio's clock, as the plan's `observed_at`.
    fn observed() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_older_than_the_last_release_is_told_the_target_was_handled() {
        let claims = Arc::new(Claims::default());
        let before = observed();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(claims.claim(&t("a"), before).await.unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(claims.claim(&t("a"), before).await.is_none(), "stale plan");
        let after = observed();
        assert!(claims.claim(&t("a"), after).await.is_some(), "fresh plan");
        assert!(claims.claim(&t("b"), before).await.is_some(), "per target");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_released_unused_leaves_no_mark_of_an_action() {
        let claims = Arc::new(Claims::default());
        let before = observed();
        tokio::time::advance(Duration::from_secs(1)).await;
        claims.claim(&t("a"), before).await.unwrap().unused();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            claims.claim(&t("a"), before).await.is_some(),
            "nothing was done to it: an older plan still acts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_release_is_forgotten_after_the_acted_memory() {
        let claims = Arc::new(Claims::default());
        let before = observed();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(claims.claim(&t("a"), before).await.unwrap());
        tokio::time::advance(ACTED_MEMORY).await;
        // Any release prunes what is older than the memory.
        drop(claims.claim(&t("b"), observed()).await.unwrap());
        assert!(claims.claim(&t("a"), before).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_waits_as_long_as_the_holder_holds() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim(&t("a"), observed()).await.unwrap();
        let waiter = {
            let (claims, at) = (Arc::clone(&claims), observed());
            tokio::spawn(async move { claims.claim(&t("a"), at).await.is_some() })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished(), "no timeout frees a held target");
        assert_eq!(claims.held(), vec!["agent-row:a".to_string()]);
        drop(first);
        assert!(!waiter.await.unwrap());
        assert!(claims.held().is_empty());
    }
}
