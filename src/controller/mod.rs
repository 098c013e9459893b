//! The control loop: one pass = read desired state, observe actual state,
//! plan, act, report. Passes run on an interval with jitter, and on demand.
//!
//! This file runs a pass: acting until its deadline, the retakes of a
//! forced pass, the report. The other jobs have a file each: [`observe`]
//! reads both states and plans, [`lineage`] runs the fork lineage and
//! sweeps what a stopped agent forked, [`root_check`] holds the worktree
//! root to its record, [`summary`] logs a finished pass, [`queue`] is the
//! per-key queue and [`repeats`] logs a repeated error once a minute.
//!
//! # Guarantees
//! - A pass needs no memory of earlier passes: restarted anywhere, the next
//!   pass converges (the backoff of failing targets is the only state kept,
//!   and losing it only means an earlier retry).
//! - A pass is bounded by `loop.pass_timeout`, counted from its start: when
//!   it runs out, no new action starts (not even one already waiting for a
//!   slot), the pass ends once the actions in flight finish, and
//!   the report names each action left for the next pass (test
//!   `no_termination_starts_after_the_pass_timeout`).
//! - Once cancelled (SIGINT/SIGTERM), the loop starts no new pass and no new
//!   action; the actions in flight finish.
//! - A forced pass never leaves its step to another run. An action whose
//!   target another run held waits for that run; then the pass reads the
//!   state of that action's group again and acts on what is left (the
//!   other run may have kept the worktree at risk: exactly what force is
//!   for), up to [`FORCED_RETAKES`] times within `loop.pass_timeout`. A
//!   target still held after that is named in the report's `busy` and its
//!   errors: "busy, retry", never a quiet skip (tests
//!   `a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it`,
//!   `a_forced_request_held_past_the_pass_timeout_answers_409_busy`).

mod lineage;
mod observe;
pub mod queue;
pub mod repeats;
mod root_check;
mod summary;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::act::run::executor::{left_to_concurrent_run, Deadline};
use crate::act::{ActionResult, Executor, RunOptions};
use crate::config::Config;
use crate::model::{Force, Scope};
use crate::plan::{Plan, Policy};
use crate::report::{ObservedCounts, PassReport, StateUnreadable};
use crate::root::WorktreeRoot;
use crate::store::Store;
use lineage::LineageState;

pub use crate::report::Trigger;
pub use lineage::FORK_SWEEPS;
pub use summary::log_summary;

/// How many times a forced pass reads the state again after another run
/// held one of its targets; each time it waited for that run to finish.
pub const FORCED_RETAKES: usize = 3;

/// Plan only, or plan and act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write nothing: not the database, not the disk, not the audit table.
    DryRun,
    Act(RunOptions),
}

impl Mode {
    /// Acting, with or without force; the rest of the options are the
    /// pass's and the executor's to set.
    pub fn act(force: Force) -> Mode {
        Mode::Act(RunOptions::new(force))
    }
}

/// The controller of one host.
pub struct Controller {
    config: Config,
    store: Store,
    root: WorktreeRoot,
    executor: Arc<Executor>,
    policy: Policy,
    /// Lists the opencode server's sessions; it backs off as a whole while
    /// the server fails.
    opencode: crate::observe::opencode::SessionLister,
    /// The fork lineage (`processes.lineage`), or why it could not start.
    lineage: LineageState,
}

/// What a pass acts with: the run's options, the cancellation and the
/// pass's deadline.
#[derive(Clone, Copy)]
struct Acting<'a> {
    opts: RunOptions,
    cancel: &'a CancellationToken,
    deadline: Deadline,
}

impl Acting<'_> {
    /// Cancelled, or past the pass's deadline: no new action starts.
    fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || Instant::now() >= self.deadline.at
    }
}

/// What a pass noticed besides its plan: errors (exit 1) and warnings.
#[derive(Debug, Default)]
pub struct Notes {
    pub errors: Vec<PassError>,
    pub warnings: Vec<String>,
}

impl Notes {
    /// Adds `e` unless an error of the same text is there: a reading of
    /// the state taken again finds again what the first one found.
    fn add_once(&mut self, e: PassError) {
        let text = e.to_string();
        if !self.errors.iter().any(|x| x.to_string() == text) {
            self.errors.push(e);
        }
    }
}

/// An error of a pass: its result is `error` (exit 1). Typed while the
/// pass runs, with its source; its text is made once, into the report.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The state could not be read: nothing was planned.
    #[error(transparent)]
    State(#[from] crate::store::StoreError),
    /// The state could not be read again, for `what`.
    #[error("cannot read the state again for {what}: {source}")]
    StateAgain {
        what: String,
        #[source]
        source: crate::store::StoreError,
    },
    /// What observing the host could not see (processes, cgroups, the
    /// fork lineage, the worktree root, the opencode server), as the
    /// observer says it.
    #[error("{0}")]
    Observe(String),
    /// A row of the database that does not read; the pass goes on.
    #[error("database {url}: {row}")]
    UnreadableRow { url: String, row: String },
    /// The worktree root is not what was recorded: nothing under it is
    /// acted on.
    #[error("{0}")]
    RootHeld(String),
    #[error("recording when admin entries went missing (they wait until it can be): {0}")]
    MissingSince(#[source] crate::store::StoreError),
    #[error(
        "trash entry {} cannot be reclaimed ({failures} failure(s), next attempt in {next_attempt_in_s}s): {error}",
        path.display()
    )]
    TrashEntry {
        path: std::path::PathBuf,
        failures: u32,
        next_attempt_in_s: u64,
        error: String,
    },
    /// An action's audit record could not be written.
    #[error("{0}")]
    AuditRecord(String),
    /// Intents a crash left open could not be concluded.
    #[error("{0}")]
    Settle(String),
    /// A forced action that did not happen because another run held its
    /// target throughout.
    #[error(
        "busy, retry: the forced action on {target} did not happen: another run was \
         acting on it until after this pass's time (loop.pass_timeout {}) or {} times in \
         a row; nothing was done to it by this pass",
        humantime::format_duration(*pass_timeout),
        FORCED_RETAKES + 1
    )]
    Busy {
        target: String,
        pass_timeout: Duration,
    },
    /// Processes a stopped agent forked during its grace, still there
    /// after the sweeps of this pass.
    #[error(
        "{} process(es) forked by a stopped agent while it was being stopped are \
         still there after {rounds} more round(s) within this pass; the next pass \
         stops them: {}",
        named.len(),
        named.join("; ")
    )]
    ForkedLeft { rounds: usize, named: Vec<String> },
}

impl Controller {
    pub fn new(config: Config, store: Store, root: WorktreeRoot) -> Controller {
        let executor = Arc::new(Executor::new(store.clone(), root.clone(), &config));
        let policy = Policy {
            worktree_orphan_min_age: config.worktrees.orphan_min_age,
            process_orphan_min_age: config.processes.orphan_min_age,
            opencode_orphan_min_age: config.opencode.orphan_min_age,
            instance: config.processes.instance().map(str::to_owned),
            max_removals: config.worktrees.max_removals_per_pass,
            stale_entry_grace: config.worktrees.stale_entry_grace,
            max_terminations: config.processes.max_terminations_per_pass,
        };
        let lineage = LineageState::start(&config);
        Controller {
            config,
            store,
            root,
            executor,
            policy,
            opencode: Default::default(),
            lineage,
        }
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database it reads the desired state from and records in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The worktree root it watches.
    pub fn root(&self) -> &WorktreeRoot {
        &self.root
    }

    /// Records the root as it is now (`accept-root`): what was recorded
    /// before, and what is now.
    pub async fn accept_root(
        &self,
    ) -> anyhow::Result<(
        Option<crate::root_record::RootRecord>,
        crate::root_record::RootRecord,
    )> {
        root_check::accept(&self.store, &self.root, &self.config.host.id).await
    }

    /// One pass over `scope`.
    pub async fn pass(
        &self,
        scope: Scope,
        mode: Mode,
        trigger: Trigger,
        cancel: &CancellationToken,
    ) -> PassReport {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let deadline = Deadline {
            at: t0 + self.config.r#loop.pass_timeout,
            pass_timeout: self.config.r#loop.pass_timeout,
        };
        let mut notes = Notes::default();
        // Observe-only overrules every caller: nudges and `once` included.
        let mode = if self.config.r#loop.dry_run {
            Mode::DryRun
        } else {
            mode
        };
        let mut state_unreadable = None;
        let (plan, observed) = match self.plan(&scope, mode != Mode::DryRun, &mut notes).await {
            Ok(p) => p,
            Err(e) => {
                state_unreadable = Some(StateUnreadable::of(&e));
                notes.errors.push(PassError::State(e));
                (Plan::default(), ObservedCounts::default())
            }
        };
        let (planned, results) = match mode {
            Mode::DryRun => (plan.actions.clone(), Vec::new()),
            Mode::Act(mut opts) => {
                // A pass asked for by name looks at its kept worktrees
                // afresh; the interval's host pass may reuse their verdicts.
                opts.recheck_kept |= scope != Scope::Host;
                // Intents a crash left open are concluded before new ones.
                match self.executor.settle().await {
                    Ok(lines) => notes.warnings.extend(lines),
                    Err(e) => notes.errors.push(PassError::Settle(e)),
                }
                let how = Acting {
                    opts,
                    cancel,
                    deadline,
                };
                let mut results = self.act(&plan, how).await;
                if opts.force.is_on() {
                    self.retake_forced(&scope, &mut results, how, &mut notes)
                        .await;
                }
                self.sweep_forked(&scope, &mut results, how, &mut notes)
                    .await;
                (Vec::new(), results)
            }
        };
        // What a forced pass could not take from another run is said, by
        // target: the caller answers "busy, retry", never a quiet skip.
        let forced = matches!(mode, Mode::Act(o) if o.force.is_on());
        let busy = results
            .iter()
            .filter(|r| forced && left_to_concurrent_run(r))
            .map(|r| r.target.to_string());
        for target in busy {
            notes.errors.push(PassError::Busy {
                target,
                pass_timeout: self.config.r#loop.pass_timeout,
            });
        }
        // An action whose record is missing is an error of the pass.
        notes.errors.extend(
            results
                .iter()
                .filter_map(|r| r.audit_error.clone())
                .map(PassError::AuditRecord),
        );
        let mut report = PassReport {
            trigger,
            scope,
            dry_run: mode == Mode::DryRun,
            force: matches!(mode, Mode::Act(o) if o.force.is_on()),
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            observed,
            planned,
            results,
            pending: plan.pending,
            at_risk: Vec::new(),
            errors: notes.errors.iter().map(ToString::to_string).collect(),
            warnings: notes.warnings,
            state_unreadable,
        };
        report.collect_at_risk();
        report
    }

    /// A forced pass whose actions another run held (they waited for it to
    /// finish): reads the state again and acts on what is left in those
    /// actions' groups, so that a worktree the other run kept is archived
    /// and removed by this one. What the other run did is not redone: the
    /// fresh plan no longer has it. Stops after [`FORCED_RETAKES`] reads,
    /// past the pass timeout, or once cancelled; what is then still held
    /// stays in `results` as left to another run.
    async fn retake_forced(
        &self,
        scope: &Scope,
        results: &mut Vec<ActionResult>,
        how: Acting<'_>,
        notes: &mut Notes,
    ) {
        for _ in 0..FORCED_RETAKES {
            let groups: BTreeSet<String> = results
                .iter()
                .filter(|r| left_to_concurrent_run(r))
                .map(|r| r.action.group())
                .collect();
            if groups.is_empty() || how.stopped() {
                return;
            }
            let Some(plan) = self
                .plan_again(scope, "the forced actions another run held", notes)
                .await
            else {
                return;
            };
            let plan = Plan {
                actions: plan
                    .actions
                    .into_iter()
                    .filter(|a| groups.contains(&a.group()))
                    .collect(),
                ..plan
            };
            results.retain(|r| !left_to_concurrent_run(r));
            for r in self.act(&plan, how).await {
                match results.iter_mut().find(|old| old.target == r.target) {
                    Some(old) => *old = r,
                    None => results.push(r),
                }
            }
        }
    }

    /// The state read and planned again within a pass, for `what`: the
    /// notes of that reading are added where they are new (the first
    /// reading's are already there); a reading that fails is an error of
    /// the pass, and `None`.
    async fn plan_again(&self, scope: &Scope, what: &str, notes: &mut Notes) -> Option<Plan> {
        let mut fresh = Notes::default();
        let plan = match self.plan(scope, true, &mut fresh).await {
            Ok((plan, _)) => plan,
            Err(source) => {
                notes.errors.push(PassError::StateAgain {
                    what: what.to_string(),
                    source,
                });
                return None;
            }
        };
        for e in fresh.errors {
            notes.add_once(e);
        }
        for w in fresh.warnings {
            if !notes.warnings.contains(&w) {
                notes.warnings.push(w);
            }
        }
        Some(plan)
    }

    /// Executes a plan until the pass's deadline: from then on no action
    /// starts (those still waiting are deferred, left for the next pass)
    /// and the ones in flight are waited for.
    async fn act(&self, plan: &Plan, how: Acting<'_>) -> Vec<ActionResult> {
        let Acting {
            opts,
            cancel,
            deadline,
        } = how;
        let run = self
            .executor
            .execute_until(plan, opts, cancel, Some(deadline));
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep_until(deadline.at.into()) => {
                tracing::warn!(timeout = %humantime::format_duration(deadline.pass_timeout),
                    "pass timed out: no new actions, waiting for those in flight");
                run.await
            }
        }
    }

    pub fn next_delay(&self) -> Duration {
        let l = &self.config.r#loop;
        let jitter_ms = l.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..jitter_ms)
        };
        l.interval + Duration::from_millis(extra)
    }
}

/// Now, in whole seconds since the epoch, as the database records times.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts a pass's errors had when they were built as strings: the
    /// report, the answers and the logs say exactly what they said.
    #[test]
    fn a_pass_error_says_what_its_string_said() {
        let busy = PassError::Busy {
            target: "worktree:/w".into(),
            pass_timeout: Duration::from_secs(90),
        };
        assert_eq!(
            busy.to_string(),
            format!(
                "busy, retry: the forced action on worktree:/w did not happen: another run was \
                 acting on it until after this pass's time (loop.pass_timeout 1m 30s) or {} times \
                 in a row; nothing was done to it by this pass",
                FORCED_RETAKES + 1
            )
        );
        let forked = PassError::ForkedLeft {
            rounds: 3,
            named: vec!["process:7@1 (a)".into(), "process:8@2 (b)".into()],
        };
        assert_eq!(
            forked.to_string(),
            "2 process(es) forked by a stopped agent while it was being stopped are still there \
             after 3 more round(s) within this pass; the next pass stops them: process:7@1 (a); \
             process:8@2 (b)"
        );
        let trash = PassError::TrashEntry {
            path: "/r/.boo-trash/w.1".into(),
            failures: 2,
            next_attempt_in_s: 9,
            error: "EBUSY".into(),
        };
        assert_eq!(
            trash.to_string(),
            "trash entry /r/.boo-trash/w.1 cannot be reclaimed (2 failure(s), next attempt in \
             9s): EBUSY"
        );
        let row = PassError::UnreadableRow {
            url: "sqlite:///db".into(),
            row: "worktrees w1: path is not text".into(),
        };
        assert_eq!(
            row.to_string(),
            "database sqlite:///db: worktrees w1: path is not text"
        );
    }

    #[test]
    fn an_error_found_again_by_a_second_reading_is_noted_once() {
        let mut notes = Notes::default();
        notes.add_once(PassError::Observe("scanning processes failed: x".into()));
        notes.add_once(PassError::Observe("scanning processes failed: x".into()));
        notes.add_once(PassError::Settle("scanning processes failed: x".into()));
        notes.add_once(PassError::RootHeld("held".into()));
        assert_eq!(notes.errors.len(), 2, "by its text: {:?}", notes.errors);
    }
}
