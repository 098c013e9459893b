//! The running controller: the queue every trigger goes through, the
//! interval loop, and what `/status`, `/readyz` and `/metrics` show.
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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::act::{ActionResult, Outcome, RunOptions};
use crate::controller::queue::{Queue, QueueError};
use crate::controller::{Controller, Mode, Trigger};
use crate::metrics::Metrics;
use crate::plan::{Pending, Scope};
use crate::report::{KeptWorktree, PassReport};
use crate::store::listen::Notice;

/// How many recent passes `/status` lists.
const RECENT: usize = 20;
/// How often a standby instance tries to take the host's lock.
pub const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// How long `/readyz` waits for the database (at most
/// `database.query_timeout`).
const READY_PING: Duration = Duration::from_secs(2);

/// What the queue runs: a scope, with or without force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub scope: Scope,
    pub force: bool,
}

/// Whether this instance acts for its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Holds the host's lock and acts.
    Leader,
    /// Another instance holds the host's lock, or it is not taken yet:
    /// this one does not act.
    Standby { why: String },
    /// The lock could not be confirmed within its bound: this instance
    /// stopped acting at once and acts again only once it has taken the
    /// lock anew.
    Unsure { why: String },
}

/// One line of the pass history.
#[derive(Clone, Debug, Serialize)]
pub struct RecentPass {
    pub trigger: String,
    pub scope: Scope,
    pub started_at: String,
    pub duration_ms: u64,
    pub result: &'static str,
    pub actions: usize,
}

#[derive(Default)]
struct State {
    last_pass: Option<Arc<PassReport>>,
    last_host_pass: Option<Arc<PassReport>>,
    last_host_pass_done: Option<Instant>,
    recent: VecDeque<RecentPass>,
    next_pass_at: Option<SystemTime>,
}

/// The service of one host.
pub struct Service {
    pub controller: Arc<Controller>,
    pub metrics: Arc<Metrics>,
    queue: Queue<Key, Trigger, PassReport>,
    state: Arc<Mutex<State>>,
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
        let state = Arc::new(Mutex::new(State::default()));
        // A run may take the pass timeout plus the actions in flight after
        // it: bound the wait at twice the pass timeout.
        let bound = controller.config.r#loop.pass_timeout * 2;
        let tasks = TaskTracker::new();
        let reclaim = crate::act::reclaim::ReclaimMetrics {
            entries: metrics.trash_entries.clone(),
            bytes: metrics.trash_bytes.clone(),
            duration: metrics.trash_reclaim_time.clone(),
            failures: metrics.trash_reclaim_failures.clone(),
        };
        controller.executor().reclaimer().attach_metrics(reclaim);
        let queue = {
            let (c, m, s, cancel) = (
                Arc::clone(&controller),
                Arc::clone(&metrics),
                Arc::clone(&state),
                cancel.clone(),
            );
            Queue::tracked(
                bound,
                tasks.clone(),
                move |key: Key, trigger: Trigger, overlapped: Option<Arc<PassReport>>| {
                    let (c, m, s, cancel) = (c.clone(), m.clone(), s.clone(), cancel.clone());
                    async move {
                        let report = c
                            .pass(
                                key.scope,
                                Mode::Act(RunOptions {
                                    force: key.force,
                                    ..Default::default()
                                }),
                                trigger,
                                &cancel,
                            )
                            .await;
                        m.observe_pass(&report);
                        record(&s, &report);
                        match overlapped {
                            Some(before) => report.after(&before),
                            None => report,
                        }
                    }
                },
            )
        };
        // Leader only with a lock in hand: `run` takes it, an embedder
        // may have installed one.
        let role = match controller.executor().fence().state() {
            crate::store::lock::FenceState::Held => Role::Leader,
            _ => Role::Standby {
                why: "taking the host lock".into(),
            },
        };
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
    /// run, what would be).
    pub async fn reconcile(
        &self,
        scope: Scope,
        force: bool,
        dry_run: bool,
        trigger: Trigger,
    ) -> Result<Arc<PassReport>, QueueError> {
        match (self.role(), dry_run) {
            (Role::Standby { why }, false) => return Err(QueueError::Standby(why)),
            (Role::Unsure { why }, false) => {
                return Err(QueueError::Standby(format!(
                    "unsure of the host lock: {why}"
                )))
            }
            _ => {}
        }
        if dry_run {
            let report = self
                .controller
                .pass(scope, Mode::DryRun, trigger, &self.cancel)
                .await;
            return Ok(Arc::new(report));
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

    /// Acts for the host until cancelled: takes the host's lock (standing by
    /// while another instance holds it), then runs a host pass at once and
    /// every `loop.interval` (plus jitter) while the lock is held. Tells
    /// systemd READY=1 after the first pass and pets its watchdog from the
    /// loop (no-ops without systemd).
    pub async fn run(&self) {
        let host = self.controller.config.host.id.clone();
        let mut ready_sent = false;
        let mut trigger = Trigger::Startup;
        let mut repeats = crate::controller::repeats::Repeats::default();
        let fence = Arc::clone(self.controller.executor().fence());
        while !self.cancel.is_cancelled() {
            let Some(lock) = self.acquire(&host, &mut repeats).await else {
                break;
            };
            tracing::info!(host, lock = ?lock, "acting for this host");
            fence.install(lock);
            self.set_role(Role::Leader);
            loop {
                if let Err(why) = fence.confirm().await {
                    tracing::error!(host, why, "not acting; taking the host lock again");
                    self.set_role(Role::Unsure { why });
                    trigger = Trigger::Startup;
                    break;
                }
                match self.reconcile(Scope::Host, false, false, trigger).await {
                    Ok(report) => crate::controller::log_summary(&report, &mut repeats),
                    Err(e) => {
                        if let Some(line) = repeats.note(&e.to_string(), Instant::now()) {
                            tracing::error!(error = %line, "host pass did not finish");
                        }
                    }
                }
                if !ready_sent {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    ready_sent = true;
                }
                let delay = self.controller.next_delay();
                self.state.lock().expect("state lock").next_pass_at =
                    Some(SystemTime::now() + delay);
                tokio::select! {
                    slept = self.sleep_petting_watchdog(delay) => if !slept { break },
                    // An action found the lock unconfirmable: take it
                    // again now, not at the next interval.
                    _ = fence.lost() => {}
                }
                trigger = Trigger::Interval;
            }
        }
        // The actions in flight finish under the lock; then it goes.
        self.drain().await;
        fence.release();
    }

    /// Turns database notifications on `channel` into requests until
    /// cancelled (PostgreSQL only; returns at once with SQLite). After a
    /// lost connection it asks for a full pass.
    pub async fn listen(self: &Arc<Self>, channel: &str) {
        let me = Arc::clone(self);
        self.controller
            .store
            .listen(channel, self.cancel.clone(), move |notice| {
                let scope = match notice {
                    Notice::Reconcile(scope) => scope,
                    Notice::Reconnected => Scope::Host,
                };
                let me = Arc::clone(&me);
                me.tasks.clone().spawn(async move {
                    tracing::debug!(?scope, "notification");
                    if let Err(e) = me
                        .reconcile(scope.clone(), false, false, Trigger::Notification)
                        .await
                    {
                        tracing::warn!(?scope, error = %e, "notification not acted on");
                    }
                });
            })
            .await;
    }

    /// Waits for the host's lock; `None` once cancelled.
    async fn acquire(
        &self,
        host: &str,
        repeats: &mut crate::controller::repeats::Repeats,
    ) -> Option<crate::store::lock::HostLock> {
        let mut said = None;
        loop {
            match self.controller.store.try_lock_host(host).await {
                Ok(Some(lock)) => return Some(lock),
                Ok(None) => {
                    let role = self.without_lock(host).await;
                    // Said once per kind: unsure, then standby once the
                    // holder is known to be another instance.
                    let kind = std::mem::discriminant(&role);
                    if said != Some(kind) {
                        match &role {
                            Role::Unsure { why } => tracing::warn!("{why}; waiting for it"),
                            Role::Standby { why } => {
                                tracing::warn!("{why}; standing by until it goes away")
                            }
                            Role::Leader => {}
                        }
                        said = Some(kind);
                    }
                    self.set_role(role);
                }
                Err(e) => {
                    if let Some(line) = repeats.note(&e.to_string(), Instant::now()) {
                        tracing::error!(error = %line, "cannot take the host lock; retrying");
                    }
                    let why = format!("cannot take the host lock: {e}");
                    // Whether another instance took over is unknown.
                    self.set_role(match self.controller.executor().fence().state() {
                        crate::store::lock::FenceState::Lost { why: lost } => Role::Unsure {
                            why: format!("{lost}; {why}"),
                        },
                        _ => Role::Standby { why },
                    });
                }
            }
            if !self.sleep_petting_watchdog(STANDBY_RETRY).await {
                return None;
            }
        }
    }

    /// The role while another session holds the host's lock. After a lock
    /// was dropped because it could not be confirmed, that session may be
    /// this instance's own old one (a frozen connection the server has not
    /// ended yet): `unsure` until `pg_locks` shows another backend, then
    /// `standby`.
    async fn without_lock(&self, host: &str) -> Role {
        let fence = self.controller.executor().fence();
        let mut holder = None;
        if let crate::store::lock::FenceState::Lost { why } = fence.state() {
            let old = fence.lost_backend();
            match self.controller.store.lock_holder(host).await {
                Ok(Some(pid)) if Some(pid) == old => {
                    return Role::Unsure {
                        why: format!(
                            "{why}; the lock of host {host} is still held by this instance's \
                             previous connection (backend {pid}), until the database server \
                             ends that session"
                        ),
                    }
                }
                Ok(Some(pid)) => holder = Some(pid),
                _ => {
                    return Role::Unsure {
                        why: format!(
                            "{why}; the lock of host {host} is still held, by this instance's \
                             previous connection or by another instance"
                        ),
                    }
                }
            }
        }
        fence.release();
        Role::Standby {
            why: format!(
                "another instance holds the lock of host {host}{}",
                holder
                    .map(|pid| format!(" (backend {pid})"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Sleeps `d`, petting systemd's watchdog at least twice per watchdog
    /// period; false when cancelled.
    async fn sleep_petting_watchdog(&self, d: Duration) -> bool {
        let mut usec = 0;
        let period = if sd_notify::watchdog_enabled(false, &mut usec) {
            Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
        } else {
            None
        };
        let until = tokio::time::Instant::now() + d;
        loop {
            if period.is_some() {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let step = period.map_or(until - now, |p| p.min(until - now));
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = tokio::time::sleep(step) => {}
            }
        }
    }

    pub fn set_role(&self, role: Role) {
        self.metrics
            .leader
            .set(i64::from(matches!(role, Role::Leader)));
        *self.role.lock().expect("role lock") = role;
    }

    /// The role; `unsure` as soon as a confirmation of the lock failed,
    /// even in the middle of a pass.
    pub fn role(&self) -> Role {
        let role = self.role.lock().expect("role lock").clone();
        match (role, self.controller.executor().fence().state()) {
            (Role::Leader, crate::store::lock::FenceState::Lost { why }) => Role::Unsure { why },
            (role, _) => role,
        }
    }

    /// `Ok` when the database answers, this instance leads, and a host pass
    /// finished within three intervals; otherwise why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self.role() {
            Role::Standby { why } => return Err(format!("standby: {why}")),
            Role::Unsure { why } => return Err(format!("unsure of the host lock: {why}")),
            Role::Leader => {}
        }
        // A readiness probe gives up within a second or two: answer
        // before it does, however long a query may take.
        let bound = READY_PING.min(self.controller.config.database.query_timeout);
        match tokio::time::timeout(bound, self.controller.store.ping()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "the database did not answer within {}",
                    humantime::format_duration(bound)
                ))
            }
        }
        let limit = self.controller.config.r#loop.interval * 3;
        let last = self.state.lock().expect("state lock").last_host_pass_done;
        match last {
            Some(t) if t.elapsed() <= limit => Ok(()),
            Some(t) => Err(format!(
                "the last host pass finished {} ago, more than three intervals",
                humantime::format_duration(Duration::from_secs(t.elapsed().as_secs()))
            )),
            None => Err("no host pass has finished yet".into()),
        }
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> Status {
        let st = self.state.lock().expect("state lock");
        let host = st.last_host_pass.clone();
        let drift: Vec<DriftItem> = host
            .as_deref()
            .map(|r| {
                r.results
                    .iter()
                    .filter(|a| {
                        !matches!(a.outcome, Outcome::Done { .. } | Outcome::Skipped { .. })
                    })
                    .map(DriftItem::from_result)
                    .chain(r.pending.iter().map(DriftItem::from_pending))
                    .collect()
            })
            .unwrap_or_default();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            host: self.controller.config.host.id.clone(),
            role: self.role(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            config: toml_to_json(self.controller.config.summary()),
            last_pass: st.last_pass.clone(),
            last_host_pass: host.clone(),
            pending_drift: drift,
            at_risk: host.map(|r| r.at_risk.clone()).unwrap_or_default(),
            backoff: self
                .controller
                .executor()
                .backoff_snapshot()
                .into_iter()
                .map(|(target, failures, next_in, last_error)| Backoff {
                    target,
                    failures,
                    next_attempt_in_secs: next_in.as_secs(),
                    last_error,
                })
                .collect(),
            next_pass_at: st
                .next_pass_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            queue_depth: self.queue.depth(),
            recent_passes: st.recent.iter().cloned().collect(),
            trash: self.controller.executor().reclaimer().status(),
        }
    }
}

/// Keeps the last passes and their triggers.
fn record(state: &Mutex<State>, report: &PassReport) {
    let report = Arc::new(report.clone());
    let mut st = state.lock().expect("state lock");
    if report.scope == Scope::Host {
        st.last_host_pass = Some(Arc::clone(&report));
        st.last_host_pass_done = Some(Instant::now());
    }
    st.recent.push_front(RecentPass {
        trigger: report.trigger.clone(),
        scope: report.scope.clone(),
        started_at: humantime::format_rfc3339_millis(report.started_at).to_string(),
        duration_ms: report.duration_ms,
        result: match report.exit_code() {
            0 => "converged",
            3 => "at_risk",
            _ => "error",
        },
        actions: report.results.len(),
    });
    st.recent.truncate(RECENT);
    st.last_pass = Some(report);
}

fn toml_to_json(t: toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

/// Drift that the last host pass left: not done, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct DriftItem {
    pub target: String,
    pub kind: String,
    pub state: String,
    pub reason: String,
}

impl DriftItem {
    fn from_result(a: &ActionResult) -> DriftItem {
        DriftItem {
            target: a.target.clone(),
            kind: a.action.name().into(),
            state: a.outcome.name().into(),
            reason: a.action.reason.clone(),
        }
    }

    fn from_pending(p: &Pending) -> DriftItem {
        DriftItem {
            target: p.target.clone(),
            kind: "pending".into(),
            state: "pending".into(),
            reason: p.why.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Backoff {
    pub target: String,
    pub failures: u32,
    pub next_attempt_in_secs: u64,
    pub last_error: String,
}

/// The `/status` document.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub host: String,
    #[serde(flatten)]
    pub role: Role,
    pub started_at: String,
    pub uptime_secs: u64,
    /// The settings, secrets left out.
    pub config: serde_json::Value,
    pub last_pass: Option<Arc<PassReport>>,
    pub last_host_pass: Option<Arc<PassReport>>,
    pub pending_drift: Vec<DriftItem>,
    pub at_risk: Vec<KeptWorktree>,
    pub backoff: Vec<Backoff>,
    pub next_pass_at: Option<String>,
    pub queue_depth: usize,
    pub recent_passes: Vec<RecentPass>,
    /// Retired worktrees waiting for the reclaimer, and those it cannot
    /// delete.
    pub trash: crate::act::reclaim::TrashStatus,
}
