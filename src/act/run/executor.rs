//! The executor: carries out a [`Plan`], one group at a time per session,
//! many groups at once.
//!
//! # Guarantees
//! - At most `loop.max_parallel_actions` actions run at once, terminations
//!   apart: those take a slot of `processes.max_parallel_terminations`
//!   ([`ActionKind::waits_on_a_grace`]), so that every termination of a pass
//!   gets SIGTERM at once and they wait out one grace together, not one
//!   grace per slot (test
//!   `a_hundred_term_ignoring_agents_are_stopped_within_one_grace`). Groups
//!   (sessions, orphans) run concurrently, and within a group each
//!   [`Stage`] starts only once the previous one finished without failing.
//! - Liveness is re-read from the database right before every destructive
//!   action, and again after the preflight: a chat reopened mid-pass keeps
//!   everything.
//! - A path claimed by any live row is never removed: both re-checks before
//!   a worktree removal look at every row of this host naming the same
//!   directory, not only the row acted on (test
//!   `a_path_claimed_by_a_live_row_is_never_removed`, and
//!   `a_path_claimed_by_a_live_row_added_after_the_plan_is_never_removed`).
//! - The preflight runs right before removal, never from a cached verdict.
//! - Every action taken is recorded in the audit table with its reason and
//!   outcome; a worktree kept at risk or a refused path is recorded when its
//!   verdict changes, not on every pass.
//! - Write-ahead: a destructive step (a signal, an opencode deletion, a
//!   worktree retirement, deletion or force archive, an admin prune) first
//!   appends an `intent` record, then confirms the host lock ([`Fence`]),
//!   and only then acts; its outcome record names the intent. When the
//!   intent cannot be written or the lock not confirmed, the step is not
//!   taken and the action fails (tests
//!   `a_read_only_database_stops_every_destructive_action`,
//!   `a_frozen_leader_never_acts_after_another_instance_took_the_lock`).
//!   An intent left without an outcome (a crash, a lost database) is
//!   concluded by a later pass with what it found ([`Executor::settle`]).
//! - A failing target backs off on its own ([`super::backoff`]); others go on.
//! - Once cancelled, or past the run's [`Deadline`] (`loop.pass_timeout`),
//!   no new action starts, not even one already waiting for a slot: it is
//!   deferred, named in the report as left for the next pass;
//!   those in flight finish (test
//!   `no_termination_starts_after_the_pass_timeout`).
//! - Two runs (a nudge beside the interval pass) never act on the same
//!   target at once: the later one waits, then leaves the target to the
//!   first ([`crate::act::run::claim`]), with the outcome
//!   [`HANDLED_BY_CONCURRENT_RUN`]. A forced run does not stop there: the
//!   other run may have kept the worktree that force is for, so the
//!   controller reads the state again and takes its own step
//!   ([`crate::controller::Controller::pass`]). An action once started runs to its end (effect,
//!   row, audit record) on a task of its own, holding its claim, even when
//!   the run that started it is abandoned by a timeout or a shutdown (test
//!   `a_removal_that_outlasts_the_run_timeout_is_never_started_twice`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::act::process::ProcessActor;
use crate::act::run::audit::Audit;
use crate::act::run::claim::{Claim, Claims};
use crate::act::run::liveness::Recheck;
use crate::act::run::outcome::{ActError, ActionResult, Detail, Outcome};
use crate::act::session::SessionActor;
use crate::act::trash::reclaim::Reclaimer;
use crate::act::worktree::kept;
use crate::act::worktree::WorktreeActor;
use crate::backoff::{BackingOff, Backoff};
use crate::config::Config;
use crate::model::Force;
use crate::observe::processes::LabelNames;
use crate::plan::{Action, ActionKind, ActionName, Plan, Stage, Target};
use crate::root::WorktreeRoot;
use crate::store::lock::Fence;
use crate::store::OpenIntent;
use crate::store::Store;

/// What an action's body comes to: its outcome and what it found, or an
/// error that fails it.
pub(in crate::act) type Applied = Result<(Outcome, Detail), ActError>;

/// Per-run choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Archive, then remove, worktrees that are at risk.
    pub force: Force,
    /// Run the full preflight of kept worktrees even when their verdict
    /// could be reused: the pass was asked for by name (a nudge, a
    /// notification, `once --chat`).
    pub recheck_kept: bool,
    /// The number of the run, set by [`Executor::execute`] and by nothing
    /// else: what is read once per run (a repository's refs) is keyed by it.
    pub(in crate::act) pass: u64,
}

impl RunOptions {
    /// Acting, with or without force.
    pub fn new(force: Force) -> RunOptions {
        RunOptions {
            force,
            ..RunOptions::default()
        }
    }
}

/// The scheduling of a plan's actions: groups, stages, the limits,
/// backoff and claims. What an action does is its resource's actor's
/// ([`ProcessActor`], [`SessionActor`], [`WorktreeActor`]), each with the narrow
/// context it needs; the [`Audit`] and the [`Recheck`] are shared by all.
pub struct Executor {
    /// `loop.max_parallel_actions`: every action but those that wait on a
    /// grace.
    limit: Arc<Semaphore>,
    /// `processes.max_parallel_terminations`: the actions that wait on a
    /// grace, apart from the others so that they never hold their slots
    /// through it.
    terminations: Arc<Semaphore>,
    backoff: Mutex<Backoff<Target>>,
    /// Targets an action is running on now, across concurrent runs, held
    /// until their blocking work ends.
    claims: Arc<Claims>,
    /// Runs started, for [`RunOptions::pass`].
    passes: AtomicU64,
    /// The audit record of each action and the write-ahead intents, with
    /// the host lock they are confirmed against.
    audit: Arc<Audit>,
    processes: Arc<ProcessActor>,
    sessions: SessionActor,
    worktrees: WorktreeActor,
}

impl Executor {
    pub fn new(store: Store, root: WorktreeRoot, config: &Config) -> Executor {
        let host = config.host.id.clone();
        let fence = Arc::new(Fence::new(store.timeouts().query));
        let audit = Arc::new(Audit::new(store.clone(), host.clone(), fence));
        let recheck = Arc::new(Recheck {
            store: store.clone(),
            root: root.clone(),
            host: host.clone(),
            orphan_min_age: config.worktrees.orphan_min_age,
        });
        let opencode = crate::opencode::Client::new(&config.opencode);
        let processes = Arc::new(ProcessActor {
            store: store.clone(),
            host,
            labels: LabelNames::from(&config.processes),
            term_grace: config.processes.term_grace,
            audit: Arc::clone(&audit),
            recheck: Arc::clone(&recheck),
        });
        let worktrees = WorktreeActor {
            store: store.clone(),
            root: root.clone(),
            precious: config.precious_globs(),
            terminate_agents: config.processes.enabled,
            kept: Arc::new(kept::KeptVerdicts::new(config.worktrees.recheck_interval)),
            refs: Arc::default(),
            reclaimer: Arc::new(Reclaimer::new(root, config.worktrees.reclaim_parallel)),
            // `opencode.enabled`: whether a removed worktree's opencode
            // instance is disposed of.
            dispose: opencode.clone().filter(|_| config.opencode.enabled),
            audit: Arc::clone(&audit),
            recheck: Arc::clone(&recheck),
            processes: Arc::clone(&processes),
        };
        let sessions = SessionActor {
            opencode,
            store,
            audit: Arc::clone(&audit),
            recheck,
        };
        Executor {
            limit: Arc::new(Semaphore::new(config.r#loop.max_parallel_actions.max(1))),
            terminations: Arc::new(Semaphore::new(
                config.processes.max_parallel_terminations.max(1),
            )),
            backoff: Mutex::new(Backoff::default()),
            claims: Arc::new(Claims::default()),
            passes: AtomicU64::new(0),
            audit,
            processes,
            sessions,
            worktrees,
        }
    }

    /// The host lock every destructive step is confirmed against.
    pub fn fence(&self) -> &Arc<Fence> {
        self.audit.fence()
    }

    /// The reclaimer of this root's trash.
    pub fn reclaimer(&self) -> &Arc<Reclaimer> {
        &self.worktrees.reclaimer
    }

    /// The opencode server's client the actions use, `None` without one:
    /// the controller lists sessions with the same connections.
    pub fn opencode(&self) -> Option<&crate::opencode::Client> {
        self.sessions.opencode.as_ref()
    }

    /// The targets an action (or its blocking work) is running on now.
    pub fn claimed(&self) -> Vec<String> {
        self.claims.held()
    }

    /// Holds `target` as an action of a run does, until the claim is
    /// dropped: what a test plays another run with. `None` when another
    /// holder had it (waited for).
    #[doc(hidden)]
    pub async fn hold(&self, target: &Target) -> Option<Claim> {
        self.claims.claim(target, Instant::now()).await
    }

    /// Targets currently backing off, by target.
    pub fn backoff_snapshot(&self) -> Vec<BackingOff> {
        let now = Instant::now();
        let mut v: Vec<BackingOff> = self
            .backoff
            .lock()
            .entries()
            .map(|(target, e)| {
                BackingOff::new(
                    target.to_string(),
                    e.failures,
                    e.next_attempt.saturating_duration_since(now),
                    e.last_error.clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    /// Carries out `plan`. Results come back in plan order.
    pub async fn execute(
        self: &Arc<Self>,
        plan: &Plan,
        opts: RunOptions,
        cancel: &CancellationToken,
    ) -> Vec<ActionResult> {
        self.execute_until(plan, opts, cancel, None).await
    }

    /// [`Executor::execute`], starting no action after `deadline`: those
    /// not started by then (those waiting for a slot included) are
    /// deferred, left for the next pass.
    pub async fn execute_until(
        self: &Arc<Self>,
        plan: &Plan,
        opts: RunOptions,
        cancel: &CancellationToken,
        deadline: Option<Deadline>,
    ) -> Vec<ActionResult> {
        let stop = Stop {
            cancel: cancel.clone(),
            deadline,
        };
        let opts = RunOptions {
            pass: self.passes.fetch_add(1, Ordering::Relaxed),
            ..opts
        };
        let observed_at = plan.observed_at.unwrap_or_else(Instant::now);
        let mut groups: BTreeMap<String, Vec<(usize, Action)>> = BTreeMap::new();
        for (i, a) in plan.actions.iter().enumerate() {
            groups.entry(a.group()).or_default().push((i, a.clone()));
        }
        let mut set = JoinSet::new();
        for (_, actions) in groups {
            let me = Arc::clone(self);
            let stop = stop.clone();
            set.spawn(async move { me.run_group(actions, opts, observed_at, stop).await });
        }
        let mut results: Vec<(usize, ActionResult)> = Vec::with_capacity(plan.actions.len());
        while let Some(done) = set.join_next().await {
            match done {
                Ok(mut r) => results.append(&mut r),
                // A panic in one group must not take the pass down; its
                // actions are missing from the results and re-planned next
                // pass.
                Err(e) => tracing::error!(error = %e, "an action group panicked"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    async fn run_group(
        self: Arc<Self>,
        actions: Vec<(usize, Action)>,
        opts: RunOptions,
        observed_at: Instant,
        stop: Stop,
    ) -> Vec<(usize, ActionResult)> {
        let mut stages: BTreeMap<Stage, Vec<(usize, Action)>> = BTreeMap::new();
        for (i, a) in actions {
            stages.entry(a.stage()).or_default().push((i, a));
        }
        let mut out = Vec::new();
        let mut blocked: Option<String> = None;
        for (_, actions) in stages {
            let mut set = JoinSet::new();
            for (i, action) in actions {
                if let Some(why) = &blocked {
                    out.push((i, self.deferred(action, why.clone())));
                    continue;
                }
                let me = Arc::clone(&self);
                let stop = stop.clone();
                set.spawn(async move { (i, me.run_one(action, opts, observed_at, &stop).await) });
            }
            while let Some(done) = set.join_next().await {
                let Ok((i, r)) = done else { continue };
                if matches!(r.outcome, Outcome::Failed { .. } | Outcome::Deferred { .. }) {
                    blocked.get_or_insert_with(|| {
                        format!("waiting on {}: {}", r.target, r.outcome.text())
                    });
                }
                out.push((i, r));
            }
        }
        out
    }

    fn deferred(&self, action: Action, why: String) -> ActionResult {
        ActionResult::not_run(action, Outcome::Deferred { why })
    }

    async fn run_one(
        self: &Arc<Self>,
        action: Action,
        opts: RunOptions,
        observed_at: Instant,
        stop: &Stop,
    ) -> ActionResult {
        let target = action.key();
        if let Some(why) = stop.why() {
            return self.deferred(action, why);
        }
        let held_back = self
            .backoff
            .lock()
            .blocking(&target, Instant::now())
            .map(|e| e.why(Instant::now()));
        if let Some(why) = held_back {
            return self.deferred(action, why);
        }
        // Another run (a nudge beside the interval pass) acting on the same
        // target: wait for it, then leave the target to it. The plan this
        // action came from predates that run's effect; a forced pass plans
        // again from what that run left. The wait is not cut short by the
        // deadline: a claim waited for is never taken, so nothing starts
        // after it, and the answer then reflects that run's effect.
        let Some(claim) = self.claims.claim(&target, observed_at).await else {
            let why = HANDLED_BY_CONCURRENT_RUN.into();
            return ActionResult::not_run(action, Outcome::Skipped { why });
        };
        let Some((permit, gate)) = self.slot(&action.kind, stop).await else {
            claim.unused();
            return self.deferred(action, stop.why_stopped());
        };
        let action_copy = action.clone();
        // Once started, the action runs to its end on a task of its own,
        // holding its claim and its permit: a run abandoned by a timeout or
        // a shutdown drops only its wait for the answer, never the removal
        // half done, its row update or its audit record.
        let me = Arc::clone(self);
        let work = tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let mut intent = None;
            let (outcome, detail) = match me.apply(&action, opts, &claim, &mut intent, &gate).await
            {
                Ok(r) => r,
                Err(error) => (
                    Outcome::Failed {
                        error: error.to_string(),
                    },
                    Detail::None,
                ),
            };
            {
                let mut b = me.backoff.lock();
                match &outcome {
                    Outcome::Failed { error } => {
                        b.failed(&target, Instant::now(), error);
                    }
                    _ => b.succeeded(&target),
                }
            }
            let mut result = ActionResult {
                target: target.clone(),
                action,
                outcome,
                detail,
                duration_ms: started.elapsed().as_millis() as u64,
                intent_id: intent,
                audit_error: None,
            };
            result.audit_error = me.audit.record(&result, &target).await;
            drop(claim);
            result
        });
        match work.await {
            Ok(r) => r,
            Err(e) => ActionResult::not_run(
                action_copy,
                Outcome::Failed {
                    error: format!("the action's task failed: {e}"),
                },
            ),
        }
    }

    /// A slot to run an action of `kind` in, from its own limit, and the
    /// gate it holds until its SIGTERM is sent; `None` when the run stops
    /// (cancelled, or past its deadline) before both are free, or at the
    /// very moment they came free.
    ///
    /// A termination holds a slot of `loop.max_parallel_actions` (the gate)
    /// only while it writes its intent, reads `/proc` and sends SIGTERM, and
    /// one of `processes.max_parallel_terminations` through its grace: a
    /// pass's terminations share one grace, and no more of them than of
    /// any other action read `/proc` or write to the database at once.
    async fn slot(&self, kind: &ActionKind, stop: &Stop) -> Option<(OwnedSemaphorePermit, Gate)> {
        let acquire = |limit: &Arc<Semaphore>| {
            let limit = Arc::clone(limit);
            async move {
                tokio::select! {
                    biased;
                    () = stop.stopped() => None,
                    p = limit.acquire_owned() => Some(p.expect("semaphore never closed")),
                }
            }
        };
        let (permit, gate) = if kind.waits_on_a_grace() {
            let permit = acquire(&self.terminations).await?;
            let gate = acquire(&self.limit).await?;
            (permit, Gate(Mutex::new(Some(gate))))
        } else {
            (acquire(&self.limit).await?, Gate::default())
        };
        // A slot freed in the same instant as the deadline passed must not
        // start the action: look once more.
        stop.why().is_none().then_some((permit, gate))
    }

    /// Runs the body of `action`; a destructive step is announced first
    /// (`intent`).
    async fn apply(
        &self,
        action: &Action,
        opts: RunOptions,
        claim: &Claim,
        intent: &mut Option<i64>,
        gate: &Gate,
    ) -> Applied {
        let (p, w) = (&self.processes, &self.worktrees);
        match &action.kind {
            ActionKind::TerminateProcess { process } => {
                p.terminate_process(action, process, intent, gate).await
            }
            ActionKind::StopCgroup { cgroup } => p.stop_cgroup(action, cgroup, intent, gate).await,
            ActionKind::RemoveCgroup { path } => p.remove_cgroup(path).await,
            ActionKind::DeleteOpencodeSession { session } => {
                self.sessions
                    .delete_opencode_session(action, session, intent)
                    .await
            }
            ActionKind::CloseAgentRow {
                row_id,
                recorded_process: Some(recorded),
                ..
            } => p.close_row_of_gone_process(row_id, *recorded).await,
            ActionKind::CloseAgentRow { row_id, .. } => p.close_agent_row(action, row_id).await,
            ActionKind::RemoveWorktree { worktree } => {
                w.remove_worktree(action, worktree, opts, claim, intent)
                    .await
            }
            ActionKind::MarkWorktreeRemoved { worktree_id, path } => {
                w.mark_worktree_removed(action, worktree_id, path).await
            }
            ActionKind::MarkWorktreeActive { worktree_id } => {
                w.store.mark_worktree_active(worktree_id).await?;
                Ok((done("row marked active"), Detail::None))
            }
            ActionKind::PruneAdminEntry { entry } => {
                w.prune_admin_entry(action, entry, opts, claim, intent)
                    .await
            }
            ActionKind::RefusePath { why, path, .. } => Ok((
                Outcome::Refused {
                    why: format!("path {} refused: {why}; nothing touched", path.display()),
                },
                Detail::None,
            )),
        }
    }

    /// Concludes the intents left without an outcome
    /// ([`Audit::settle`]), each with what is found of its target now
    /// (by the actor of its resource).
    pub async fn settle(self: &Arc<Self>) -> Result<Vec<String>, String> {
        self.audit
            .settle(|i| {
                let me = Arc::clone(self);
                async move {
                    tokio::task::spawn_blocking(move || me.found_now(&i))
                        .await
                        .unwrap_or_else(|e| format!("cannot look: {e}"))
                }
            })
            .await
    }

    /// What is there now of the target of `i`, by the actor of its
    /// resource, looked up without acting (on the blocking pool).
    fn found_now(&self, i: &OpenIntent) -> String {
        match ActionName::parse(&i.action) {
            Some(ActionName::TerminateProcess) => self.processes.found_after_signal(&i.detail),
            Some(ActionName::StopCgroup) => ProcessActor::found_after_cgroup_stop(&i.detail),
            Some(ActionName::RemoveWorktree) => self.worktrees.found_after_removal(&i.detail),
            Some(ActionName::DeleteOpencodeSession) => SessionActor::found_after_deletion(),
            _ => "the target is planned again like any other".into(),
        }
    }
}

/// When a run stops starting actions: `loop.pass_timeout` after its pass
/// began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    /// The setting it comes from, for the reason deferred actions carry.
    pub pass_timeout: Duration,
}

impl Deadline {
    /// Why an action not started by `self` was left: names the setting
    /// and says it waits for the next pass.
    pub fn why(&self) -> String {
        format!(
            "not started: {} ({}) ran out before it could start; left for the next pass",
            crate::config::PASS_TIMEOUT,
            humantime::format_duration(self.pass_timeout)
        )
    }
}

/// What stops a run from starting actions: a cancellation (shutdown, or
/// the caller's own timeout) or its deadline.
#[derive(Clone)]
struct Stop {
    cancel: CancellationToken,
    deadline: Option<Deadline>,
}

impl Stop {
    /// Why no action may start now; `None` while they may.
    fn why(&self) -> Option<String> {
        if self.cancel.is_cancelled() {
            return Some("the controller is stopping".into());
        }
        self.deadline
            .filter(|d| Instant::now() >= d.at)
            .map(|d| d.why())
    }

    /// Why no action may start, once [`Stop::stopped`] resolved (or
    /// [`Stop::why`] said so): the cancellation, else the deadline.
    fn why_stopped(&self) -> String {
        match (self.why(), self.deadline) {
            (Some(why), _) => why,
            (None, Some(d)) => d.why(),
            (None, None) => "the controller is stopping".into(),
        }
    }

    /// Resolves once no action may start any more.
    async fn stopped(&self) {
        match self.deadline {
            Some(d) => tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep_until(d.at.into()) => {}
            },
            None => self.cancel.cancelled().await,
        }
    }
}

/// The slot of `loop.max_parallel_actions` a termination holds until its
/// SIGTERM is sent ([`Executor::slot`]); empty for other actions, and once
/// opened.
#[derive(Default)]
pub(in crate::act) struct Gate(Mutex<Option<OwnedSemaphorePermit>>);

impl Gate {
    /// Lets the next action start: this one only waits now.
    pub(in crate::act) fn open(&self) {
        self.0.lock().take();
    }
}

/// Why an action was left to another run that held its target while this
/// run's plan was made.
pub const HANDLED_BY_CONCURRENT_RUN: &str = "handled by a concurrent run";

/// Whether `result` is an action left to another run
/// ([`HANDLED_BY_CONCURRENT_RUN`]): its plan was stale, not its target
/// judged.
pub fn left_to_concurrent_run(result: &ActionResult) -> bool {
    matches!(&result.outcome, Outcome::Skipped { why } if why == HANDLED_BY_CONCURRENT_RUN)
}

/// Done, with `note`.
pub(in crate::act) fn done(note: &str) -> Outcome {
    Outcome::Done { note: note.into() }
}

/// Skipped, because `why`.
pub(in crate::act) fn skipped(why: String) -> (Outcome, Detail) {
    (Outcome::Skipped { why }, Detail::None)
}

/// [`blocking`], holding `claim` until `f` returns: the target stays
/// claimed even when the caller's future is dropped first (a timeout, a
/// shutdown).
pub(in crate::act) async fn blocking_held<T: Send + 'static>(
    claim: &Claim,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ActError> {
    let held = claim.clone();
    blocking(move || {
        let _held = held;
        f()
    })
    .await
}

/// Runs `f` on the blocking pool: file system and `/proc` work never
/// holds an async thread.
pub(in crate::act) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ActError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ActError::Worker)?
        .map_err(ActError::Step)
}
