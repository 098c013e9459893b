//! The work queue: nudges, notifications and the interval all ask for a key
//! (a chat, a session, the host) to be reconciled, here.
//!
//! # Guarantees
//! - A key is never run twice at the same time.
//! - Requests for a key that is waiting to start join that run; requests
//!   for a key that is running coalesce into one follow-up run.
//! - Every waiter gets the outcome of a run that started after its request
//!   (a run already under way may have read the database before the change
//!   that prompted the request).
//! - A run carries the trigger of the first request that created it.
//! - A follow-up run is handed the outcome of the run it followed: its
//!   waiters asked while that run was acting, so what it did is part of
//!   their answer (200 close calls for one chat all hear of the one
//!   teardown, not one of them and 199 empty answers).
//! - Each run is bounded by a timeout; on timeout its waiters get an error
//!   and the key is free again. Only the wait is abandoned: an action the
//!   run started goes on to its end holding its claim
//!   ([`crate::act::run::claim`]), so a follow-up never acts on its target
//!   meanwhile.
//! - Every task the queue spawns is on its [`TaskTracker`], for a shutdown
//!   to wait on.
//!
//! Different keys run concurrently; the executor keeps two runs from acting
//! on the same target at once.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// What a waiter receives: the run's outcome, or why there is none.
pub type Answer<R> = Result<Arc<R>, QueueError>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The run took longer than the queue's timeout and was abandoned.
    #[error("the run did not finish within {0:?}")]
    Timeout(Duration),
    /// The run timed out while its blocking work still held these targets:
    /// they stay claimed until that work ends (a follow-up waits for them).
    #[error("timed out after {after:?}, still working on {}", targets.join(", "))]
    StillWorking {
        after: Duration,
        targets: Vec<String>,
    },
    /// The queue was dropped before the run finished.
    #[error("the controller is shutting down")]
    Closed,
    /// This instance does not act for its host: another one does.
    #[error("standby: {0}")]
    Standby(String),
}

type Runner<K, T, R> =
    dyn Fn(K, T, Option<Arc<R>>) -> Pin<Box<dyn Future<Output = R> + Send>> + Send + Sync;

struct Waiting<T, R> {
    trigger: T,
    waiters: Vec<oneshot::Sender<Answer<R>>>,
    /// For a follow-up: the outcome of the run it followed.
    overlapped: Option<Arc<R>>,
}

enum Slot<T, R> {
    /// Queued: its run has not started yet.
    Pending(Waiting<T, R>),
    /// Running; requests made meanwhile wait for the follow-up run.
    Running(Option<Waiting<T, R>>),
}

struct Inner<K, T, R> {
    slots: Mutex<HashMap<K, Slot<T, R>>>,
    run: Box<Runner<K, T, R>>,
    timeout: Duration,
    /// Every task the queue spawns, for a shutdown to wait on.
    tracker: TaskTracker,
}

/// The queue. Cheap to clone.
pub struct Queue<K, T, R> {
    inner: Arc<Inner<K, T, R>>,
}

impl<K, T, R> Clone for Queue<K, T, R> {
    fn clone(&self) -> Self {
        Queue {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, T, R> Queue<K, T, R>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    /// A queue whose runs call `run(key, trigger, overlapped)`, each bounded
    /// by `timeout`; `overlapped` is, for a follow-up run, the outcome of the
    /// run its requests arrived during.
    pub fn new<F, Fut>(timeout: Duration, run: F) -> Self
    where
        F: Fn(K, T, Option<Arc<R>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Queue::tracked(timeout, TaskTracker::new(), run)
    }

    /// [`Queue::new`], its tasks spawned on `tracker`.
    pub fn tracked<F, Fut>(timeout: Duration, tracker: TaskTracker, run: F) -> Self
    where
        F: Fn(K, T, Option<Arc<R>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Queue {
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                run: Box::new(move |k, t, o| Box::pin(run(k, t, o))),
                timeout,
                tracker,
            }),
        }
    }

    /// Asks for `key` to be reconciled; resolves with the outcome of a run
    /// that started after this call.
    pub fn request(&self, key: K, trigger: T) -> impl Future<Output = Answer<R>> + Send {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut slots = self.inner.slots.lock();
            match slots.get_mut(&key) {
                Some(Slot::Pending(w)) => {
                    w.waiters.push(tx);
                    false
                }
                Some(Slot::Running(next)) => {
                    next.get_or_insert_with(|| Waiting {
                        trigger: trigger.clone(),
                        waiters: Vec::new(),
                        overlapped: None,
                    })
                    .waiters
                    .push(tx);
                    false
                }
                None => {
                    slots.insert(
                        key.clone(),
                        Slot::Pending(Waiting {
                            trigger,
                            waiters: vec![tx],
                            overlapped: None,
                        }),
                    );
                    true
                }
            }
        };
        if start {
            let inner = Arc::clone(&self.inner);
            self.inner.tracker.spawn(drive(inner, key));
        }
        async move { rx.await.unwrap_or(Err(QueueError::Closed)) }
    }

    /// Keys waiting to start (not counting those running).
    pub fn depth(&self) -> usize {
        let slots = self.inner.slots.lock();
        slots
            .values()
            .map(|s| match s {
                Slot::Pending(_) | Slot::Running(Some(_)) => 1,
                Slot::Running(None) => 0,
            })
            .sum()
    }
}

/// Runs `key` until no follow-up is asked for.
async fn drive<K, T, R>(inner: Arc<Inner<K, T, R>>, key: K)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    loop {
        // Take the pending run and mark the key running, in one step, so
        // that a request from now on waits for a follow-up.
        let waiting = {
            let mut slots = inner.slots.lock();
            match slots.remove(&key) {
                Some(Slot::Pending(w)) => {
                    slots.insert(key.clone(), Slot::Running(None));
                    w
                }
                Some(other) => {
                    // Not ours to run (cannot happen: only `drive` moves a
                    // key out of Pending).
                    slots.insert(key.clone(), other);
                    return;
                }
                None => return,
            }
        };
        let answer = match tokio::time::timeout(
            inner.timeout,
            (inner.run)(key.clone(), waiting.trigger, waiting.overlapped),
        )
        .await
        {
            Ok(r) => Ok(Arc::new(r)),
            Err(_) => Err(QueueError::Timeout(inner.timeout)),
        };
        for w in waiting.waiters {
            // A waiter that gave up (dropped its future) is fine.
            let _ = w.send(answer.clone());
        }
        let mut slots = inner.slots.lock();
        match slots.remove(&key) {
            Some(Slot::Running(Some(mut next))) => {
                next.overlapped = answer.ok();
                slots.insert(key.clone(), Slot::Pending(next));
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// (run number, trigger, run number of the run it followed)
    type Out = (usize, &'static str, Option<usize>);

    /// A runner that counts runs, tracks overlap per key and takes `d`.
    fn counting(
        d: Duration,
    ) -> (
        Queue<&'static str, &'static str, Out>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ) {
        let runs = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let max_overlap = Arc::new(AtomicUsize::new(0));
        let (r2, g2, m2) = (runs.clone(), running.clone(), max_overlap.clone());
        let q = Queue::new(
            Duration::from_secs(60),
            move |_k, trig, prev: Option<Arc<Out>>| {
                let (r, g, m) = (r2.clone(), g2.clone(), m2.clone());
                async move {
                    let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                    let now = g.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(d).await;
                    g.fetch_sub(1, Ordering::SeqCst);
                    (n, trig, prev.map(|p| p.0))
                }
            },
        );
        (q, runs, max_overlap)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_for_a_waiting_key_share_one_run() {
        let (q, runs, _) = counting(Duration::from_secs(1));
        let futs: Vec<_> = (0..200).map(|_| q.request("c1", "nudge")).collect();
        let answers = futures_join(futs).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a.as_ref().unwrap().0 == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_during_a_run_coalesce_into_one_follow_up() {
        let (q, runs, overlap) = counting(Duration::from_secs(1));
        let first = q.request("c1", "interval");
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The run is under way: these need a run that starts later.
        let later: Vec<_> = (0..5).map(|_| q.request("c1", "nudge")).collect();
        assert_eq!(q.depth(), 1);
        assert_eq!(first.await.unwrap().0, 1);
        let answers = futures_join(later).await;
        // The follow-up hears of the run its requests overlapped.
        assert!(answers
            .iter()
            .all(|a| **a.as_ref().unwrap() == (2, "nudge", Some(1))));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(overlap.load(Ordering::SeqCst), 1, "never twice at once");
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_run_concurrently() {
        let (q, runs, overlap) = counting(Duration::from_secs(1));
        let a = q.request("c1", "nudge");
        let b = q.request("c2", "nudge");
        let (a, b) = tokio::join!(a, b);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(overlap.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn run_keeps_the_trigger_of_its_first_request() {
        let (q, _, _) = counting(Duration::from_secs(1));
        let a = q.request("host", "notification");
        let b = q.request("host", "interval");
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.unwrap().1, "notification");
        assert_eq!(b.unwrap().1, "notification");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_past_the_timeout_answers_an_error_and_frees_the_key() {
        let q: Queue<&str, (), ()> = Queue::new(Duration::from_secs(2), |_k, (), _| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let a = q.request("c1", ()).await;
        assert_eq!(a.unwrap_err(), QueueError::Timeout(Duration::from_secs(2)));
        assert_eq!(q.depth(), 0);
        let b = q.request("c1", ()).await;
        assert!(b.is_err(), "a new run starts (and times out again)");
    }

    async fn futures_join<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::with_capacity(futs.len());
        let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
        for h in handles {
            out.push(h.await);
        }
        out
    }
}
