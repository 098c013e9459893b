//! The executor: carries out a [`Plan`], one group at a time per session,
//! many groups at once.
//!
//! # Guarantees
//! - At most `max_parallel_actions` actions run at once; groups (sessions,
//!   orphans) run concurrently, and within a group each [`Stage`] starts only
//!   once the previous one finished without failing.
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
//! - A failing target backs off on its own ([`backoff`]); others go on.
//! - Once cancelled, no new action starts; those in flight finish.
//! - Two runs (a nudge beside the interval pass) never act on the same
//!   target at once: the later one waits, then leaves the target to the
//!   first ([`claim`]). An action once started runs to its end (effect,
//!   row, audit record) on a task of its own, holding its claim, even when
//!   the run that started it is abandoned by a timeout or a shutdown (test
//!   `a_removal_that_outlasts_the_run_timeout_is_never_started_twice`).

pub mod backoff;
pub mod claim;
pub mod dispose;
mod intent;
pub mod kept;
pub mod reclaim;
pub mod remove;
pub mod terminate;
pub mod trash;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use globset::GlobSet;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::git;
use crate::model::PathCheck;
use crate::observe::processes::{self, LabelNames};
use crate::plan::{Action, ActionKind, Plan, Stage, WorktreeTarget};
use crate::risk::AtRisk;
use crate::root::WorktreeRoot;
use crate::store::lock::Fence;
use crate::store::{AuditRecord, Store};
use backoff::Backoff;
use claim::{Claim, Claims};
use reclaim::Reclaimer;

/// What became of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done now (or found already done).
    Done { note: String },
    /// The worktree holds work; it was kept and marked.
    KeptAtRisk {
        reasons: Vec<AtRisk>,
        /// The row already carried exactly these reasons: nothing new to
        /// record.
        unchanged: bool,
    },
    /// Nothing to do after all: the owner is live again, or the target is
    /// no longer there.
    Skipped { why: String },
    /// Not attempted this pass: backing off, an earlier stage failed, or
    /// the controller is stopping. Still drift.
    Deferred { why: String },
    /// Refused as unsafe (a path outside the root).
    Refused { why: String },
    /// Attempted and failed; the target backs off.
    Failed { error: String },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::KeptAtRisk { .. } => "kept_at_risk",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        }
    }

    fn text(&self) -> String {
        match self {
            Outcome::Done { note } => note.clone(),
            Outcome::KeptAtRisk { reasons, .. } => reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Outcome::Skipped { why } | Outcome::Deferred { why } | Outcome::Refused { why } => {
                why.clone()
            }
            Outcome::Failed { error } => error.clone(),
        }
    }
}

/// One action and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct ActionResult {
    pub action: Action,
    pub target: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Extra facts: the archive ref of a forced removal, and the like.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    pub duration_ms: u64,
    /// The `intent` audit record written before the action's destructive
    /// step, if it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<i64>,
    /// The outcome could not be written to the audit table: an error of
    /// the pass, whatever the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_error: Option<String>,
}

/// Per-run choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Archive, then remove, worktrees that are at risk.
    pub force: bool,
    /// Run the full preflight of kept worktrees even when their verdict
    /// could be reused: the pass was asked for by name (a nudge, a
    /// notification, `once --chat`).
    pub recheck_kept: bool,
    /// The number of the run, set by [`Executor::execute`]: what is read
    /// once per run (a repository's refs) is keyed by it.
    pub pass: u64,
}

/// Everything the executor needs; cheap to share between passes.
pub struct Executor {
    pub store: Store,
    pub root: WorktreeRoot,
    pub host: String,
    pub precious: GlobSet,
    pub orphan_min_age: std::time::Duration,
    pub labels: LabelNames,
    pub term_grace: std::time::Duration,
    /// `processes.enabled`: whether an agent inside a worktree about to be
    /// removed is terminated; otherwise it keeps the worktree.
    pub terminate_agents: bool,
    /// `None` when this host has no opencode (`opencode.url` empty).
    pub opencode: Option<crate::opencode::Client>,
    /// `opencode.enabled`: whether a removed worktree's opencode instance
    /// is disposed of ([`dispose`]).
    pub dispose_opencode_instances: bool,
    limit: Arc<Semaphore>,
    backoff: Mutex<Backoff>,
    /// The last verdict recorded per target for repeated outcomes (kept at
    /// risk, refused), so that the audit table gets changes, not repeats.
    recorded: Mutex<HashMap<String, String>>,
    /// Targets an action is running on now, across concurrent runs, held
    /// until their blocking work ends.
    claims: Arc<Claims>,
    reclaimer: Arc<Reclaimer>,
    /// Verdicts that keep worktrees, reused while their fingerprint holds.
    kept: Arc<kept::KeptVerdicts>,
    /// Each repository's surviving refs, listed once while unchanged.
    refs: Arc<git::refs::RefsCache>,
    /// Runs started, for [`RunOptions::pass`].
    passes: std::sync::atomic::AtomicU64,
    /// The host lock, confirmed before every destructive step.
    fence: Arc<Fence>,
    /// Intents written by actions still running: never concluded as
    /// interrupted.
    in_flight: Mutex<std::collections::HashSet<i64>>,
    /// Whether some intent may be left without an outcome: at start (a
    /// previous process may have crashed) and after an outcome record
    /// failed to be written.
    settle_needed: std::sync::atomic::AtomicBool,
}

impl Executor {
    pub fn new(store: Store, root: WorktreeRoot, config: &Config) -> Executor {
        Executor {
            root: root.clone(),
            host: config.host.id.clone(),
            precious: config.precious_globs(),
            orphan_min_age: config.worktrees.orphan_min_age,
            labels: LabelNames::from(&config.processes),
            term_grace: config.processes.term_grace,
            terminate_agents: config.processes.enabled,
            opencode: crate::opencode::Client::new(&config.opencode),
            dispose_opencode_instances: config.opencode.enabled,
            limit: Arc::new(Semaphore::new(config.r#loop.max_parallel_actions.max(1))),
            backoff: Mutex::new(Backoff::default()),
            recorded: Mutex::new(HashMap::new()),
            claims: Arc::new(Claims::default()),
            reclaimer: Arc::new(Reclaimer::new(root, config.worktrees.reclaim_parallel)),
            kept: Arc::new(kept::KeptVerdicts::new(config.worktrees.recheck_interval)),
            refs: Arc::default(),
            passes: std::sync::atomic::AtomicU64::new(0),
            fence: Arc::new(Fence::new(store.timeouts().query)),
            in_flight: Mutex::new(Default::default()),
            settle_needed: std::sync::atomic::AtomicBool::new(true),
            store,
        }
    }

    /// The host lock every destructive step is confirmed against.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// The reclaimer of this root's trash.
    pub fn reclaimer(&self) -> &Arc<Reclaimer> {
        &self.reclaimer
    }

    /// The targets an action (or its blocking work) is running on now.
    pub fn claimed(&self) -> Vec<String> {
        self.claims.held()
    }

    /// Targets currently backing off: (target, failures, next attempt in,
    /// last error).
    pub fn backoff_snapshot(&self) -> Vec<(String, u32, std::time::Duration, String)> {
        let now = Instant::now();
        let b = self.backoff.lock().expect("backoff lock");
        let mut v: Vec<_> = b
            .entries()
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.failures,
                    e.next_attempt.saturating_duration_since(now),
                    e.last_error.clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Carries out `plan`. Results come back in plan order.
    pub async fn execute(
        self: &Arc<Self>,
        plan: &Plan,
        opts: RunOptions,
        cancel: &CancellationToken,
    ) -> Vec<ActionResult> {
        let opts = RunOptions {
            pass: self
                .passes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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
            let cancel = cancel.clone();
            set.spawn(async move { me.run_group(actions, opts, observed_at, cancel).await });
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
        cancel: CancellationToken,
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
                let cancel = cancel.clone();
                set.spawn(async move { (i, me.run_one(action, opts, observed_at, &cancel).await) });
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
        ActionResult {
            target: action.target(),
            action,
            outcome: Outcome::Deferred { why },
            detail: serde_json::Value::Null,
            duration_ms: 0,
            intent_id: None,
            audit_error: None,
        }
    }

    async fn run_one(
        self: &Arc<Self>,
        action: Action,
        opts: RunOptions,
        observed_at: Instant,
        cancel: &CancellationToken,
    ) -> ActionResult {
        let target = action.target();
        if cancel.is_cancelled() {
            return self.deferred(action, "the controller is stopping".into());
        }
        if let Some(e) = self
            .backoff
            .lock()
            .expect("backoff lock")
            .blocking(&target, Instant::now())
        {
            let why = format!(
                "backing off after {} failure(s), next attempt in {}: {}",
                e.failures,
                humantime::format_duration(std::time::Duration::from_secs(
                    e.next_attempt
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                )),
                e.last_error
            );
            return self.deferred(action, why);
        }
        // Another run (a nudge beside the interval pass) acting on the same
        // target: wait for it, then leave the target to it. The plan this
        // action came from predates that run's effect.
        let (action_target, action_copy) = (target.clone(), action.clone());
        let Some(claim) = self.claims.claim(&target, observed_at).await else {
            return ActionResult {
                target,
                action,
                outcome: Outcome::Skipped {
                    why: "handled by a concurrent run".into(),
                },
                detail: serde_json::Value::Null,
                duration_ms: 0,
                intent_id: None,
                audit_error: None,
            };
        };
        let permit = Arc::clone(&self.limit)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        // Once started, the action runs to its end on a task of its own,
        // holding its claim and its permit: a run abandoned by a timeout or
        // a shutdown drops only its wait for the answer, never the removal
        // half done, its row update or its audit record.
        let me = Arc::clone(self);
        let work = tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let mut intent = None;
            let (outcome, detail) = match me.apply(&action, opts, &claim, &mut intent).await {
                Ok(r) => r,
                Err(error) => (Outcome::Failed { error }, serde_json::Value::Null),
            };
            {
                let mut b = me.backoff.lock().expect("backoff lock");
                match &outcome {
                    Outcome::Failed { error } => {
                        b.failed(&target, Instant::now(), error);
                    }
                    _ => b.succeeded(&target),
                }
            }
            let mut result = ActionResult {
                target,
                action,
                outcome,
                detail,
                duration_ms: started.elapsed().as_millis() as u64,
                intent_id: intent,
                audit_error: None,
            };
            result.audit_error = me.record(&result).await;
            if let Some(id) = intent {
                me.in_flight.lock().expect("in-flight lock").remove(&id);
            }
            drop(claim);
            result
        });
        match work.await {
            Ok(r) => r,
            Err(e) => ActionResult {
                target: action_target,
                action: action_copy,
                outcome: Outcome::Failed {
                    error: format!("the action's task failed: {e}"),
                },
                detail: serde_json::Value::Null,
                duration_ms: 0,
                intent_id: None,
                audit_error: None,
            },
        }
    }

    /// Writes the audit record of a result (and logs it), unless it repeats
    /// the verdict last recorded for the same target; an outcome that
    /// concludes an intent is always written. Answers why the record could
    /// not be written, if it could not.
    async fn record(&self, r: &ActionResult) -> Option<String> {
        let text = r.outcome.text();
        let worth = r.intent_id.is_some() || self.worth_recording(r, &text);
        match &r.outcome {
            Outcome::Failed { .. } => {
                tracing::warn!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text}")
            }
            // The same verdict again (a worktree still kept, a deferral):
            // at info it would repeat every kept worktree every pass;
            // `/status` and the report still show it.
            _ if !worth => {
                tracing::debug!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text} (as last recorded)")
            }
            _ => {
                tracing::info!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text}")
            }
        }
        if !worth {
            return None;
        }
        let detail = serde_json::json!({
            "action": &r.action.kind,
            "outcome": &r.outcome,
            "detail": &r.detail,
        });
        let audit = AuditRecord {
            host: self.host.clone(),
            chat_id: r.action.owner.chat_id.clone(),
            session_id: r.action.owner.session_id.clone(),
            action: r.action.name().to_string(),
            target: r.target.clone(),
            outcome: r.outcome.name().to_string(),
            reason: if text.is_empty() {
                r.action.reason.clone()
            } else {
                format!("{}: {text}", r.action.reason)
            },
            detail,
            intent_id: r.intent_id,
        };
        match self.store.append_audit(&audit).await {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, target = %r.target, "cannot write audit record");
                if r.intent_id.is_some() {
                    // Its intent stays open: conclude it once the
                    // database answers again.
                    self.settle_needed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Some(format!(
                    "the audit record of {} {} could not be written: {e}",
                    r.action.name(),
                    r.target
                ))
            }
        }
    }

    /// Whether a result without an intent deserves a record: not a
    /// deferral, not a verdict that repeats the one last recorded.
    fn worth_recording(&self, r: &ActionResult, text: &str) -> bool {
        if matches!(r.outcome, Outcome::Deferred { .. }) {
            return false;
        }
        if matches!(
            r.outcome,
            Outcome::KeptAtRisk {
                unchanged: true,
                ..
            }
        ) {
            return false;
        }
        let fingerprint = format!("{}:{text}", r.outcome.name());
        let mut rec = self.recorded.lock().expect("recorded lock");
        let repeats = matches!(
            r.outcome,
            Outcome::KeptAtRisk { .. } | Outcome::Refused { .. } | Outcome::Skipped { .. }
        );
        if repeats && rec.get(&r.target) == Some(&fingerprint) {
            return false;
        }
        rec.insert(r.target.clone(), fingerprint);
        true
    }

    async fn apply(
        &self,
        action: &Action,
        opts: RunOptions,
        claim: &Claim,
        intent: &mut Option<i64>,
    ) -> Result<(Outcome, serde_json::Value), String> {
        let none = serde_json::Value::Null;
        match &action.kind {
            ActionKind::TerminateProcess { process } => {
                if let Some(why) = self.owner_is_live(action).await? {
                    return Ok((Outcome::Skipped { why }, none));
                }
                let target = terminate::Target {
                    pid: process.pid,
                    start_time: process.start_time,
                    chat_id: process.chat_id.clone(),
                };
                self.announce(action, serde_json::json!(target), intent)
                    .await?;
                let t = terminate::terminate(&target, self.term_grace, &self.labels).await;
                Ok((terminated_outcome(&t), serde_json::json!(t)))
            }
            ActionKind::DeleteOpencodeSession { session } => {
                self.delete_opencode_session(action, session, intent).await
            }
            ActionKind::CloseAgentRow {
                row_id,
                recorded_process: Some(recorded),
                ..
            } => self.close_row_of_gone_process(row_id, *recorded).await,
            ActionKind::CloseAgentRow { row_id, .. } => {
                if let Some(why) = self.owner_is_live(action).await? {
                    return Ok((Outcome::Skipped { why }, none));
                }
                let closed = self
                    .store
                    .close_agent_row(row_id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((row_closed(closed, "row already closed"), none))
            }
            ActionKind::RemoveWorktree { worktree } => {
                self.remove_worktree(action, worktree, opts, claim, intent)
                    .await
            }
            ActionKind::MarkWorktreeRemoved { worktree_id, path } => {
                if let Some(why) = self.owner_is_live(action).await? {
                    return Ok((Outcome::Skipped { why }, none));
                }
                if path.exists() || path.is_symlink() {
                    return Ok((
                        Outcome::Skipped {
                            why: format!("{} exists again", path.display()),
                        },
                        none,
                    ));
                }
                self.store
                    .mark_worktree_removed(worktree_id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    Outcome::Done {
                        note: "row marked removed".into(),
                    },
                    none,
                ))
            }
            ActionKind::MarkWorktreeActive { worktree_id } => {
                self.store
                    .mark_worktree_active(worktree_id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    Outcome::Done {
                        note: "row marked active".into(),
                    },
                    none,
                ))
            }
            ActionKind::PruneAdminEntry { entry } => {
                if let Some(why) = self.owner_is_live(action).await? {
                    return Ok((Outcome::Skipped { why }, none));
                }
                self.announce(action, serde_json::json!(entry), intent)
                    .await?;
                let (entry, root) = (entry.clone(), self.root.clone());
                let force = opts.force;
                blocking_held(claim, move || prune_admin_entry(&entry, root.path(), force)).await
            }
            ActionKind::RefusePath { why, path, .. } => Ok((
                Outcome::Refused {
                    why: format!("path {} refused: {why}; nothing touched", path.display()),
                },
                none,
            )),
        }
    }

    /// `Some(why)` when the action's owner became live again since the plan:
    /// the chat for a chat's action, else the session (any live chat of it)
    /// for a session's action.
    async fn owner_is_live(&self, action: &Action) -> Result<Option<String>, String> {
        if let Some(chat) = &action.owner.chat_id {
            let st = self
                .store
                .chat_state(chat)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(st.is_live().then(|| format!("chat {chat} is live again")));
        }
        if let Some(session) = &action.owner.session_id {
            let st = self
                .store
                .session_state(session)
                .await
                .map_err(|e| e.to_string())?;
            if st.keeps_worktree(SystemTime::now(), self.orphan_min_age) {
                return Ok(Some(format!("session {session} is live again")));
            }
        }
        Ok(None)
    }

    /// `Some(why)` when the worktree must be kept after all: its owner is
    /// live again, another row of a live session names the same directory,
    /// or, for an orphan, a row now names it.
    async fn worktree_claimed(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
    ) -> Result<Option<String>, String> {
        if wt.row_id.is_some() {
            if let Some(why) = self.owner_is_live(action).await? {
                return Ok(Some(why));
            }
            return self.live_row_naming(wt).await;
        }
        let rows = self
            .store
            .worktree_rows_naming(&wt.path.to_string_lossy(), &wt.name)
            .await
            .map_err(|e| e.to_string())?;
        Ok((!rows.is_empty()).then(|| format!("row {} now names this directory", rows.join(", "))))
    }

    /// `Some(why)` when a row of this host other than the one acted on
    /// names the same directory and its session keeps its worktree (the
    /// rule of [`Executor::owner_is_live`]): a path claimed by any live row
    /// is never removed. Two rows may name one directory (the orchestrator
    /// reusing a path, a row copied by hand); the row acted on speaks only
    /// for its own session.
    ///
    /// The directory is looked up as spelled by the plan (lexically and
    /// canonically, with and without a trailing `/`) and as `<root>/<id>`;
    /// the planner compares every row through its confined path, so a
    /// spelling missed here was already seen there.
    async fn live_row_naming(&self, wt: &WorktreeTarget) -> Result<Option<String>, String> {
        let mut paths: Vec<String> = git::paths::spellings(&wt.path)
            .into_iter()
            .chain([self.root.path().join(&wt.name)])
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        paths.extend(paths.clone().into_iter().map(|p| format!("{p}/")));
        paths.sort();
        paths.dedup();
        let rows = self
            .store
            .host_worktree_rows_naming(&self.host, &paths, &wt.name)
            .await
            .map_err(|e| e.to_string())?;
        let now = SystemTime::now();
        for (id, session) in rows {
            if wt.row_id.as_deref() == Some(id.as_str()) {
                continue;
            }
            let st = self
                .store
                .session_state(&session)
                .await
                .map_err(|e| e.to_string())?;
            if st.keeps_worktree(now, self.orphan_min_age) {
                return Ok(Some(format!(
                    "row {id} of live session {session} names this directory too"
                )));
            }
        }
        Ok(None)
    }

    async fn remove_worktree(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
        opts: RunOptions,
        claim: &Claim,
        intent: &mut Option<i64>,
    ) -> Result<(Outcome, serde_json::Value), String> {
        let none = serde_json::Value::Null;
        if !opts.force && !opts.recheck_kept {
            if let Some(reused) = self.reuse_kept(wt, opts.pass).await {
                return Ok(reused);
            }
        }
        // Whatever this check finds replaces the last verdict.
        self.kept.forget(&wt.path);
        let checked_at = SystemTime::now();
        let git_before = {
            let (dir, kept, pass) = (wt.path.clone(), Arc::clone(&self.kept), opts.pass);
            blocking(move || {
                Ok(kept::git_state_with(&dir, &|common: &Path| {
                    kept.refs_stamp(common, pass)
                }))
            })
            .await?
        };
        if let Some(why) = self.worktree_claimed(action, wt).await? {
            return Ok((Outcome::Skipped { why }, none));
        }
        let in_use = self.clear_worktree_of_agents(action, wt).await?;
        // A report (a pass asked for by name) and a force weigh every
        // reason; the interval's pass needs only whether there is one.
        let depth = if opts.force || opts.recheck_kept {
            git::preflight::Depth::All
        } else {
            git::preflight::Depth::First
        };
        let verdict = {
            let (root, wt, precious) = (self.root.clone(), wt.clone(), self.precious.clone());
            let refs = Arc::clone(&self.refs);
            blocking_held(claim, move || {
                Ok(inspect(&root, &wt, &precious, depth, &refs))
            })
            .await?
        };
        let reasons = match verdict {
            Inspection::Refused(why) => return Ok((Outcome::Refused { why }, none)),
            Inspection::Gone => {
                if let Some(id) = &wt.row_id {
                    self.store
                        .mark_worktree_removed(id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok((
                    Outcome::Done {
                        note: "directory already gone".into(),
                    },
                    none,
                ));
            }
            Inspection::Reasons(mut r) => {
                r.extend(in_use);
                r
            }
        };
        let archive = !reasons.is_empty();
        if archive && !(opts.force && reasons.iter().all(AtRisk::force_overrides)) {
            let changed = match &wt.row_id {
                Some(id) => self
                    .store
                    .mark_worktree_at_risk(id, &reasons)
                    .await
                    .map_err(|e| e.to_string())?,
                // No row to compare with: the executor's memory of what it
                // recorded decides.
                None => true,
            };
            let found = {
                let (dir, r) = (wt.path.clone(), reasons.clone());
                blocking(move || Ok(kept::findings(&dir, &r))).await?
            };
            let fingerprint = git_before
                .zip(found)
                .map(|(git, findings)| kept::Fingerprint { git, findings });
            self.kept
                .remember(&wt.path, fingerprint, &reasons, checked_at);
            return Ok((
                Outcome::KeptAtRisk {
                    reasons,
                    unchanged: !changed,
                },
                checked(checked_at, false),
            ));
        }
        // The preflight may have taken a while: ask again right before
        // destroying anything.
        if let Some(why) = self.worktree_claimed(action, wt).await? {
            return Ok((Outcome::Skipped { why }, none));
        }
        let now = SystemTime::now();
        self.announce(
            action,
            intent::removal(&self.root, wt, archive, now),
            intent,
        )
        .await?;
        let (root, target, precious) = (self.root.clone(), wt.clone(), self.precious.clone());
        let (outcome, mut detail) = blocking_held(claim, move || {
            Ok(archive_and_remove(
                &root, &target, &precious, archive, &reasons, now,
            ))
        })
        .await?;
        if matches!(outcome, Outcome::Done { .. }) {
            if detail.get("trash").is_some() {
                self.reclaimer.wake();
            }
            crate::crash_point!("remove.before_row_update");
            if let Some(id) = &wt.row_id {
                self.store
                    .mark_worktree_removed(id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            dispose::after_removal(self, wt, &mut detail).await;
        }
        Ok((outcome, detail))
    }
}

impl Executor {
    /// The last verdict on a kept worktree, when nothing it rests on has
    /// changed since: no preflight, no database call, no write.
    async fn reuse_kept(
        &self,
        wt: &WorktreeTarget,
        pass: u64,
    ) -> Option<(Outcome, serde_json::Value)> {
        let c = self.kept.candidate(&wt.path)?;
        let (dir, reasons, kept) = (wt.path.clone(), c.reasons.clone(), Arc::clone(&self.kept));
        let now = blocking(move || {
            Ok(kept::fingerprint_with(&dir, &reasons, &|common: &Path| {
                kept.refs_stamp(common, pass)
            }))
        })
        .await
        .ok()?;
        c.still(now).then(|| {
            (
                Outcome::KeptAtRisk {
                    reasons: c.reasons,
                    unchanged: true,
                },
                checked(c.checked_at, true),
            )
        })
    }

    /// Aborts, then deletes, a session on the opencode server, once sure
    /// that no live chat owns it now.
    async fn delete_opencode_session(
        &self,
        action: &Action,
        session: &crate::plan::OpencodeTarget,
        intent: &mut Option<i64>,
    ) -> Result<(Outcome, serde_json::Value), String> {
        let none = serde_json::Value::Null;
        let Some(client) = &self.opencode else {
            return Ok((
                Outcome::Skipped {
                    why: "opencode is off on this host".into(),
                },
                none,
            ));
        };
        // A row's session goes only while its chat is not live. (An orphan's
        // owner session only orders it before that session's worktree: the
        // session itself may well be live.)
        if session.chat_id.is_some() {
            if let Some(why) = self.owner_is_live(action).await? {
                return Ok((Outcome::Skipped { why }, none));
            }
        }
        // An orphan may have been claimed by a row since the plan.
        for chat in self
            .store
            .chats_with_open_rows_naming(&session.id)
            .await
            .map_err(|e| e.to_string())?
        {
            if self
                .store
                .chat_state(&chat)
                .await
                .map_err(|e| e.to_string())?
                .is_live()
            {
                return Ok((
                    Outcome::Skipped {
                        why: format!("live chat {chat} has an open row naming it"),
                    },
                    none,
                ));
            }
        }
        self.announce(
            action,
            serde_json::json!({ "session": &session.id }),
            intent,
        )
        .await?;
        client.abort(&session.id).await.map_err(|e| e.to_string())?;
        let note = match client
            .delete(&session.id)
            .await
            .map_err(|e| e.to_string())?
        {
            crate::opencode::Deleted::Deleted => "aborted and deleted (with its child sessions)",
            crate::opencode::Deleted::AlreadyGone => "already gone on the server (404)",
        };
        Ok((Outcome::Done { note: note.into() }, none))
    }

    /// Closes a row whose recorded process no longer exists, whatever its
    /// chat's liveness: the process is looked up again right before, and
    /// the row is closed only while it still records exactly that process.
    /// Nothing is signalled.
    async fn close_row_of_gone_process(
        &self,
        row_id: &str,
        recorded: crate::plan::RecordedProcess,
    ) -> Result<(Outcome, serde_json::Value), String> {
        let labels = self.labels.clone();
        let now_at_pid = blocking(move || {
            Ok(processes::identity(recorded.pid, &labels)
                .filter(|id| processes::is_alive_state(id.state)))
        })
        .await?;
        if let Some(id) = now_at_pid {
            if recorded.start_time.is_none_or(|s| s == id.start_time) {
                return Ok((
                    Outcome::Skipped {
                        why: format!("pid {} runs as recorded again", recorded.pid),
                    },
                    serde_json::Value::Null,
                ));
            }
        }
        let closed = self
            .store
            .close_agent_row_recording(row_id, recorded.pid, recorded.start_time)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            row_closed(
                closed,
                "row already closed, or it records another process now",
            ),
            serde_json::Value::Null,
        ))
    }

    /// Processes whose working directory is inside the worktree: labelled
    /// agents of chats that are not live are terminated first (as any
    /// agent); every other process keeps the worktree, as an `InUse`
    /// reason.
    async fn clear_worktree_of_agents(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
    ) -> Result<Vec<AtRisk>, String> {
        let dir = wt.path.clone();
        let users = blocking(move || Ok(processes::processes_in(&dir))).await?;
        let mut stopped_any = false;
        // processes.enabled = false: an agent is a process like any other.
        let agents = if self.terminate_agents {
            &users[..]
        } else {
            &[]
        };
        for (pid, command) in agents {
            let labels = self.labels.clone();
            let pid = *pid;
            let Some(id) = blocking(move || Ok(processes::identity(pid, &labels))).await? else {
                continue;
            };
            let Some(chat) = id.chat_label else { continue };
            let state = self
                .store
                .chat_state(&chat)
                .await
                .map_err(|e| e.to_string())?;
            if state.is_live() {
                continue;
            }
            tracing::info!(pid, command = %command, chat = %chat, worktree = %wt.path.display(),
                "stopping an agent of a chat that is not live before removing its worktree");
            let target = terminate::Target {
                pid,
                start_time: id.start_time,
                chat_id: chat,
            };
            self.terminate_inside(action, &target).await?;
            stopped_any = true;
        }
        let remaining = if stopped_any {
            let dir = wt.path.clone();
            blocking(move || Ok(processes::processes_in(&dir))).await?
        } else {
            users
        };
        Ok(remaining
            .into_iter()
            .map(|(pid, command)| AtRisk::InUse { pid, command })
            .collect())
    }
}

/// The detail of a kept worktree: when its verdict was reached, and
/// whether this pass reused it.
fn checked(at: SystemTime, reused: bool) -> serde_json::Value {
    serde_json::json!({
        "checked_at": humantime::format_rfc3339_seconds(at).to_string(),
        "verdict_reused": reused,
    })
}

/// What closing an agent row came to: `closed` is whether this call closed
/// it; otherwise `why_not` says why nothing changed.
fn row_closed(closed: bool, why_not: &str) -> Outcome {
    if closed {
        Outcome::Done {
            note: "row closed".into(),
        }
    } else {
        Outcome::Skipped {
            why: why_not.into(),
        }
    }
}

/// What a termination came to, as an outcome.
fn terminated_outcome(t: &terminate::Terminated) -> Outcome {
    match &t.not_signalled {
        Some(terminate::NotSignalled::Gone) => Outcome::Done {
            note: format!("pid {} already gone", t.pid),
        },
        Some(terminate::NotSignalled::Protected { why }) => Outcome::Refused {
            why: format!("pid {}: {why}", t.pid),
        },
        Some(other) => Outcome::Skipped {
            why: format!("pid {}: {other}", t.pid),
        },
        None if !t.survivors.is_empty() => Outcome::Failed {
            error: format!(
                "{} process(es) survived SIGKILL: {}; retried next pass",
                t.survivors.len(),
                t.survivors
                    .iter()
                    .map(|s| format!("pid {} (state {})", s.pid, s.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => Outcome::Done {
            note: t.to_string(),
        },
    }
}

/// The preflight's verdict on a worktree directory.
#[derive(Debug)]
pub enum Inspection {
    Refused(String),
    Gone,
    Reasons(Vec<AtRisk>),
}

/// Confines the path again and runs every check that decides whether the
/// directory may go: mount points, then the git preflight, to `depth`.
pub fn inspect(
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
    precious: &GlobSet,
    depth: git::preflight::Depth,
    refs: &git::refs::RefsCache,
) -> Inspection {
    match root.check(&wt.path) {
        PathCheck::Refused { why } => {
            return Inspection::Refused(format!("path {} refused: {why}", wt.path.display()))
        }
        PathCheck::Inside { exists: false, .. } => return Inspection::Gone,
        PathCheck::Inside { .. } => {}
    }
    let mut reasons = match remove::mount_points_inside(&wt.path) {
        Ok(mounts) => mounts
            .into_iter()
            .map(|m| AtRisk::MountPoint {
                path: m.display().to_string(),
            })
            .collect(),
        Err(e) => vec![AtRisk::PreflightFailed {
            error: format!("looking for mount points: {e}"),
        }],
    };
    if depth == git::preflight::Depth::First && !reasons.is_empty() {
        return Inspection::Reasons(reasons);
    }
    reasons.extend(git::preflight::preflight(&git::preflight::Preflight {
        worktree: &wt.path,
        branch: wt.branch.as_deref(),
        base_ref: wt.base_ref.as_deref(),
        repo_path: wt.repo_path.as_deref(),
        precious,
        timeout: git::cli::DEFAULT_TIMEOUT,
        depth,
        refs: Some(refs),
    }));
    Inspection::Reasons(reasons)
}

/// Archives the worktree when asked to, keeps the commits only its reflog
/// reaches, then retires the directory into the trash with one rename
/// ([`trash::retire`]; in place with [`remove::remove_dir`] where the
/// rename is impossible, `EXDEV` or `EBUSY`) and prunes its admin entry.
/// Call only after [`inspect`] has cleared the worktree (or `archive`
/// keeps what it found).
///
/// Guarantees:
/// 1. **Git first, then the rename.** The force archive (checked against
///    git's own view) and the commits only the reflog reaches are written
///    before the directory moves; when either fails nothing is removed
///    (tests `dirty_worktree_is_kept_at_risk_and_forced_removal_archives_it`,
///    `a_crash_in_the_middle_of_a_force_archive_converges`).
/// 2. **Exactly the worktree.** The directory is retired whole with one
///    rename into the trash, nothing below it or beside it touched (test
///    `removal_retires_exactly_the_worktree_and_the_reclaimer_frees_only_it`).
/// 3. **Every step resumable.** Killed after the rename, after the admin
///    prune or before the row update, the next pass converges without a
///    false alarm (tests `a_crash_right_after_the_rename_converges`,
///    `a_crash_after_the_admin_prune_converges`,
///    `a_crash_before_the_row_update_converges`).
/// 4. **Falls back, and says so.** Where the rename is impossible (`EXDEV`,
///    `EBUSY`) the directory is deleted in place with [`remove::remove_dir`]
///    and a log line gives the reason (test
///    `retire_reports_cannot_rename_when_the_trash_is_another_file_system`
///    for the verdict; the deletion is `remove_dir`'s, with its own tests).
pub fn archive_and_remove(
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
    precious: &GlobSet,
    archive: bool,
    reasons: &[AtRisk],
    now: SystemTime,
) -> (Outcome, serde_json::Value) {
    let mut detail = serde_json::Map::new();
    // Read before deletion: the `.git` file is the only trustworthy link to
    // the main repository (the row's repo_path is untrusted input).
    let repo = git::admin::main_repository_of(&wt.path);
    if archive {
        let archived = git::archive::archive(&wt.path, &wt.name, now, precious)
            .map_err(|e| e.to_string())
            .and_then(|a| {
                // Built through libgit2: git's own view must find all of
                // its work in it before anything is deleted.
                git::verify::check_archive(
                    &wt.path,
                    &a.reference,
                    precious,
                    git::cli::DEFAULT_TIMEOUT,
                )
                .map(|()| a)
                .map_err(|e| format!("the archive is incomplete: {e}"))
            });
        match archived {
            Ok(a) => {
                detail.insert("archive".into(), serde_json::json!(a));
                detail.insert("forced_over".into(), serde_json::json!(reasons));
            }
            Err(e) => {
                return (
                    Outcome::Failed {
                        error: format!(
                            "archiving before forced removal failed, nothing removed: {e}"
                        ),
                    },
                    serde_json::Value::Object(detail),
                )
            }
        }
    }
    // Commits only the worktree's reflog and per-worktree refs reach would
    // go with it: keep them first (not a reason to keep the worktree).
    let timeout = git::cli::DEFAULT_TIMEOUT;
    match git::preflight::unreferenced_history(&wt.path, timeout).and_then(|commits| {
        git::keep::keep_history(&wt.path, &wt.name, &commits, SystemTime::now(), timeout)
    }) {
        Ok(Some(kept)) => {
            detail.insert("history".into(), serde_json::json!(kept));
        }
        Ok(None) => {}
        Err(e) => {
            return (
                Outcome::Failed {
                    error: format!(
                        "keeping the commits only its reflog reaches failed, nothing removed: {e}"
                    ),
                },
                serde_json::Value::Object(detail),
            )
        }
    }
    crate::crash_point!("remove.before_retire");
    // Everything git-related is done: from the rename on, the worktree is
    // gone for git, for the orchestrator and for the answer; the space is
    // the reclaimer's.
    let mut in_place = None;
    match trash::retire(root, &wt.path, SystemTime::now()) {
        Ok(trash::Retired::Moved { entry }) => {
            crate::crash_point!("remove.after_rename");
            detail.insert("trash".into(), entry.display().to_string().into());
        }
        Ok(trash::Retired::Gone) => {}
        Ok(trash::Retired::CannotRename { why }) => {
            tracing::warn!(worktree = %wt.path.display(), why = %why,
                "cannot retire the worktree into the trash with one rename; deleting it in place");
            in_place = Some(why);
        }
        Err(e) => {
            return (
                Outcome::Failed {
                    error: e.to_string(),
                },
                serde_json::Value::Object(detail),
            )
        }
    }
    if let Some(why) = &in_place {
        if let Err(e) = remove::remove_dir(root, &wt.path) {
            return (
                Outcome::Failed {
                    error: e.to_string(),
                },
                serde_json::Value::Object(detail),
            );
        }
        detail.insert("deleted_in_place".into(), why.clone().into());
    }
    let mut note = match detail.get("archive") {
        Some(a) => format!(
            "archived to {} and removed",
            a["reference"].as_str().unwrap_or("?")
        ),
        None => "removed".to_string(),
    };
    match detail.get("trash") {
        Some(t) => note.push_str(&format!(
            " (retired to {}, space reclaimed in the background)",
            t.as_str().unwrap_or("?")
        )),
        None if in_place.is_some() => note.push_str(" (deleted in place)"),
        None => {}
    }
    if let Some(h) = detail.get("history") {
        note.push_str(&format!(
            "; commits only its reflog reached kept under {}",
            h["reference"].as_str().unwrap_or("?")
        ));
    }
    if let Some(repo) = repo {
        match git::admin::prune_for(&repo, &wt.path) {
            Ok(n) => {
                detail.insert("admin_entries_pruned".into(), n.into());
                crate::crash_point!("remove.after_admin_prune");
            }
            // The directory is gone; the stale entry is found and pruned
            // by a later pass.
            Err(e) => note.push_str(&format!("; admin entry not pruned yet: {e}")),
        }
    }
    (Outcome::Done { note }, serde_json::Value::Object(detail))
}

/// Keeps the commits only a stale admin entry's HEAD reaches, then prunes
/// it, unless a directory under `root` points at it now (a worktree moved
/// since the observation: pruning would break it).
fn prune_admin_entry(
    entry: &crate::model::StaleAdminEntry,
    root: &Path,
    force: bool,
) -> Result<(Outcome, serde_json::Value), String> {
    if let (Some(reason), false) = (&entry.locked, force) {
        return Ok((
            Outcome::Skipped {
                why: format!(
                    "admin entry is locked ({}): pruned only with force",
                    if reason.is_empty() {
                        "no reason given"
                    } else {
                        reason
                    }
                ),
            },
            serde_json::Value::Null,
        ));
    }
    if Path::new(&entry.worktree_path).exists() {
        return Ok((
            Outcome::Skipped {
                why: format!("{} exists again", entry.worktree_path.display()),
            },
            serde_json::Value::Null,
        ));
    }
    if let Some(dir) = git::admin::moved_to(entry, root) {
        return Ok((
            Outcome::Skipped {
                why: format!(
                    "{} points at this entry: a moved worktree, left alone",
                    dir.display()
                ),
            },
            serde_json::Value::Null,
        ));
    }
    let mut detail = serde_json::Map::new();
    let unreachable = git::admin::unreachable_commits(entry).map_err(|e| e.to_string())?;
    if !unreachable.is_empty() {
        let a = git::admin::archive_head(entry, SystemTime::now()).map_err(|e| e.to_string())?;
        detail.insert("archive".into(), serde_json::json!(a));
        detail.insert("unreachable_commits".into(), serde_json::json!(unreachable));
    }
    let n =
        git::admin::prune_for(&entry.repo_path, &entry.worktree_path).map_err(|e| e.to_string())?;
    let note = match detail.get("archive") {
        Some(a) => format!(
            "{} commit(s) kept under {}; {n} admin entry pruned",
            unreachable.len(),
            a["reference"].as_str().unwrap_or("?")
        ),
        None => format!("{n} admin entry pruned"),
    };
    Ok((Outcome::Done { note }, serde_json::Value::Object(detail)))
}

/// [`blocking`], holding `claim` until `f` returns: the target stays
/// claimed even when the caller's future is dropped first (a timeout, a
/// shutdown).
async fn blocking_held<T: Send + 'static>(
    claim: &Claim,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let held = claim.clone();
    blocking(move || {
        let _held = held;
        f()
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker thread failed: {e}"))?
}
