//! The running controller: the queue every trigger goes through, wired to
//! the passes, the metrics and the status snapshot. Leadership
//! ([`leader`]), the interval loop ([`run_loop`]) and what `/status` and
//! `/readyz` show ([`snapshot`]) each have their own file.
//!
//! # Guarantees
//! - Every pass that acts goes through the one [`Queue`]: nudges,
//!   notifications and the interval never run the same key twice at once.
//! - A dry run (`?dry_run=true`) bypasses the queue: it writes nothing.
//! - The status snapshot is updated after every pass, and the metrics count
//!   every pass and every action.
//! - Shutdown drains every trigger: the tasks spawned for queued runs and
//!   for notifications are tracked ([`TaskTracker`]) and [`Service::drain`]
//!   waits for them, then for any blocking work a timed-out run left
//!   holding its targets (test
//!   `sigterm_during_a_nudge_triggered_removal_finishes_it_before_exit_0`).
//! - The host lock is confirmed (bounded) before every pass and, by the
//!   executor, before every destructive step. When it cannot be, the role
//!   is `unsure` at once (`/status`, `/readyz`, nudges answer 503), nothing
//!   is acted on, and the instance acts again only after it has taken the
//!   lock anew (test
//!   `a_frozen_leader_never_acts_after_another_instance_took_the_lock`).
//! - A run that times out while its actions still work answers "timed out
//!   after …, still working on <targets>" ([`QueueError::StillWorking`]);
//!   the follow-up waits for those targets (test
//!   `a_removal_that_outlasts_the_run_timeout_is_never_started_twice`).

pub mod leader;
pub mod run_loop;
pub mod snapshot;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::controller::queue::{Queue, QueueError};
use crate::controller::{Controller, Mode, Trigger};
use crate::metrics::Metrics;
use crate::model::{Force, Scope};
use crate::report::PassReport;
use crate::store::listen::Notice;
pub use crate::store::live::Liveness;

pub use crate::backoff::BackingOff;
pub use leader::{Role, STANDBY_RETRY};
pub use snapshot::{DriftItem, RecentPass, Status};

/// What the queue runs: a scope, with or without force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub scope: Scope,
    pub force: Force,
}

/// What a nudge came to: the pass, and what the database says of its
/// subject right after it.
pub struct NudgeOutcome {
    pub report: Arc<PassReport>,
    /// Whether the chat or session nudged is live now, or why that could
    /// not be read; `None` for the host.
    pub liveness: Option<Result<Liveness, String>>,
    /// The chats of a nudged session, or why they could not be read;
    /// `None` for a chat or the host, or when not asked for.
    pub chats: Option<Result<Vec<String>, String>>,
}

/// The service of one host.
pub struct Service {
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    queue: Queue<Key, Trigger, PassReport>,
    state: Arc<Mutex<snapshot::State>>,
    role: Arc<Mutex<Role>>,
    started: Instant,
    started_at: SystemTime,
    cancel: CancellationToken,
    /// Tasks spawned for queued and notification-triggered runs: drained
    /// on shutdown, so that every trigger's actions in flight finish.
    tasks: TaskTracker,
}

impl Service {
    /// A service whose runs stop starting actions once `cancel` fires.
    pub fn new(controller: Controller, cancel: CancellationToken) -> Arc<Service> {
        let controller = Arc::new(controller);
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(Mutex::new(snapshot::State::default()));
        let tasks = TaskTracker::new();
        controller
            .executor()
            .reclaimer()
            .attach_metrics(reclaim_metrics(&metrics));
        let queue = queue(&controller, &metrics, &state, &cancel, &tasks);
        let role = Role::at_start(controller.executor().fence().state());
        Arc::new(Service {
            controller,
            metrics,
            queue,
            state,
            role: Arc::new(Mutex::new(role)),
            started: Instant::now(),
            started_at: SystemTime::now(),
            cancel,
            tasks,
        })
    }

    /// Waits for every run spawned by a nudge or a notification to finish,
    /// then for the blocking work of runs that timed out to let go of its
    /// targets. Call once no new request can arrive.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        let executor = self.controller.executor();
        let mut said = false;
        while !executor.claimed().is_empty() {
            if !said {
                tracing::info!(targets = ?executor.claimed(), "waiting for work in flight to finish");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reconciles `scope` now and answers with what was done (or, for a dry
    /// run, what would be). Acting goes through the queue, which keys runs
    /// by scope and force: the other run options are the pass's to set.
    pub async fn reconcile(
        &self,
        scope: Scope,
        mode: Mode,
        trigger: Trigger,
    ) -> Result<Arc<PassReport>, QueueError> {
        let force = match mode {
            Mode::DryRun => {
                let report = self
                    .controller
                    .pass(scope, Mode::DryRun, trigger, &self.cancel)
                    .await;
                return Ok(Arc::new(report));
            }
            Mode::Act(opts) => opts.force,
        };
        if let Some(why) = self.role().not_acting() {
            return Err(QueueError::Standby(why));
        }
        let answer = self.queue.request(Key { scope, force }, trigger);
        self.metrics.workqueue_depth.set(self.queue.depth() as i64);
        let r = answer.await;
        self.metrics.workqueue_depth.set(self.queue.depth() as i64);
        match r {
            Err(QueueError::Timeout(after)) => {
                let targets = self.controller.executor().claimed();
                if targets.is_empty() {
                    Err(QueueError::Timeout(after))
                } else {
                    Err(QueueError::StillWorking { after, targets })
                }
            }
            r => r,
        }
    }

    /// A pass over `scope` asked for from outside (`POST /reconcile/…`,
    /// `once` sent to a running daemon), and what the database says of
    /// the scope's chat or session once it is done: the one door through
    /// which the HTTP API reaches the controller and the store. With
    /// `session_chats`, a nudged session's chats are read too (the close
    /// hook's answer names them); otherwise that query is not made.
    pub async fn nudge(
        &self,
        scope: Scope,
        mode: Mode,
        session_chats: bool,
    ) -> Result<NudgeOutcome, QueueError> {
        let report = self.reconcile(scope.clone(), mode, Trigger::Nudge).await?;
        let store = self.controller.store();
        let (liveness, chats) = match &scope {
            Scope::Host => (None, None),
            Scope::Chat(id) => (Some(store.chat_liveness(id).await), None),
            Scope::Session(id) => {
                let young = self.controller.config().worktrees.orphan_min_age;
                let live = store.session_liveness(id, SystemTime::now(), young).await;
                let chats = match session_chats {
                    true => Some(store.chats_of_session(id).await.map_err(|e| {
                        format!(
                            "cannot read the chats of session {id}: {e}; \
                             only those the pass acted for are answered for"
                        )
                    })),
                    false => None,
                };
                (Some(live), chats)
            }
        };
        let liveness = liveness.map(|read| {
            read.map_err(|e| {
                let kind = scope.kind().as_str();
                let id = scope.id().unwrap_or_default();
                format!("cannot read whether {kind} {id} is live: {e}")
            })
        });
        Ok(NudgeOutcome {
            report,
            liveness,
            chats,
        })
    }

    /// The service's metrics: what `/metrics` renders and the HTTP API
    /// counts nudges in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs the reclaimer of the root's trash on a task of its own until
    /// `cancel` fires.
    pub fn start_reclaimer(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(self.controller.executor().reclaimer()).run(cancel))
    }

    /// Holds `target` as an action of a run does, until the claim is
    /// dropped: what a test plays another run with.
    #[doc(hidden)]
    pub async fn hold(
        &self,
        target: &crate::plan::Target,
    ) -> Option<crate::act::run::claim::Claim> {
        self.controller.executor().hold(target).await
    }

    /// Turns database notifications on `channel` into requests until
    /// cancelled (PostgreSQL only; returns at once with SQLite). After a
    /// lost connection it asks for a full pass.
    pub async fn listen(self: &Arc<Self>, channel: &str) {
        let me = Arc::clone(self);
        self.controller
            .store()
            .listen(channel, self.cancel.clone(), move |notice| {
                let scope = match notice {
                    Notice::Reconcile(scope) => scope,
                    Notice::Reconnected => Scope::Host,
                };
                let me = Arc::clone(&me);
                me.tasks.clone().spawn(async move {
                    tracing::debug!(?scope, "notification");
                    if let Err(e) = me
                        .reconcile(scope.clone(), Mode::act(Force::Off), Trigger::Notification)
                        .await
                    {
                        tracing::warn!(?scope, error = %e, "notification not acted on");
                    }
                });
            })
            .await;
    }
}

/// The reclaimer's series, shared with the service's registry.
fn reclaim_metrics(metrics: &Metrics) -> crate::act::trash::reclaim::ReclaimMetrics {
    crate::act::trash::reclaim::ReclaimMetrics {
        entries: metrics.trash_entries.clone(),
        bytes: metrics.trash_bytes.clone(),
        duration: metrics.trash_reclaim_time.clone(),
        failures: metrics.trash_reclaim_failures.clone(),
    }
}

/// The queue every acting pass goes through: each run is counted in the
/// metrics and kept in the snapshot, and answers the requests that
/// arrived while an earlier run of its key was acting with that run's
/// actions too.
fn queue(
    controller: &Arc<Controller>,
    metrics: &Arc<Metrics>,
    state: &Arc<Mutex<snapshot::State>>,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Queue<Key, Trigger, PassReport> {
    // A run may take the pass timeout plus the actions in flight after
    // it: bound the wait at twice the pass timeout.
    let bound = controller.config().r#loop.pass_timeout * 2;
    let (c, m, s, cancel) = (
        Arc::clone(controller),
        Arc::clone(metrics),
        Arc::clone(state),
        cancel.clone(),
    );
    Queue::tracked(
        bound,
        tasks.clone(),
        move |key: Key, trigger: Trigger, overlapped: Option<Arc<PassReport>>| {
            let (c, m, s, cancel) = (c.clone(), m.clone(), s.clone(), cancel.clone());
            async move {
                let report = c
                    .pass(key.scope, Mode::act(key.force), trigger, &cancel)
                    .await;
                m.observe_pass(&report);
                snapshot::record(&s, &report);
                match overlapped {
                    Some(before) => report.after(&before),
                    None => report,
                }
            }
        },
    )
}
