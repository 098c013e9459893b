//! The fork lineage as the controller runs it (`processes.lineage`):
//! started once with the controller, it ties to their chat the processes an
//! agent forked that the scan does not see labelled, and after a pass has
//! stopped agents it names what they forked while they were being stopped,
//! which the pass then stops too ([`Controller::sweep_forked`]). Apart
//! from the pass because the lineage runs beside the passes, from the
//! controller's start, and all that reads it is here.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use super::{Acting, Controller, Notes, PassError};
use crate::act::ActionResult;
use crate::config::Config;
use crate::model::{Scope, Tied};
use crate::observe;
use crate::observe::processes::{self, LabelNames};
use crate::plan::{self, Plan};
use crate::report::{LineageRun, LineageView};

/// How many more rounds a pass gives to what a stopped agent forked while
/// it was being stopped (a fork loop through its grace).
pub const FORK_SWEEPS: usize = 3;

/// How long a sweep waits for the lineage to apply what the kernel has
/// queued.
const SWEEP_CATCH_UP: Duration = Duration::from_millis(500);

/// The fork lineage as this controller runs it.
pub(super) enum LineageState {
    Off,
    Running(observe::lineage::Lineage),
    /// The connector could not be opened; `required` (`true`, not `auto`)
    /// makes that an error of every pass.
    Unavailable {
        why: String,
        required: bool,
    },
}

impl LineageState {
    /// Starts the fork lineage as `processes.lineage` asks. Where `auto`
    /// cannot open the connector (a controller that is not root), why is
    /// logged once here and shown with every pass; it is not an error.
    pub(super) fn start(config: &Config) -> LineageState {
        let required = match config.processes.lineage() {
            crate::config::Lineage::Off => return LineageState::Off,
            crate::config::Lineage::On => true,
            crate::config::Lineage::Auto => false,
        };
        match observe::lineage::Lineage::start(LabelNames::from(&config.processes)) {
            Ok(lineage) => {
                tracing::info!("fork lineage: following every fork and exec on the host");
                LineageState::Running(lineage)
            }
            Err(e) => {
                let why = format!(
                    "processes.lineage: the process connector cannot be opened ({e}); it needs \
                     CAP_NET_ADMIN and AF_NETLINK: only labels are seen, and an agent not started \
                     through launch that clears its labels is not"
                );
                tracing::warn!("{why}");
                LineageState::Unavailable { why, required }
            }
        }
    }

    /// Whether the fork lineage runs, for the report.
    pub(super) fn view(&self) -> LineageView {
        match self {
            LineageState::Off => LineageView::default(),
            LineageState::Running(l) => LineageView {
                state: LineageRun::On,
                why: None,
                lost_events: l.lost(),
            },
            LineageState::Unavailable { why, .. } => LineageView {
                state: LineageRun::Unavailable,
                why: Some(why.clone()),
                lost_events: 0,
            },
        }
    }

    /// The processes tied to a chat by fork lineage that the scan did not
    /// see labelled; the scan's labelled processes seed the lineage. What
    /// the lineage lost, or why it is not running, is an error of the pass.
    pub(super) fn tied(&self, scan: &processes::Scan, errors: &mut Vec<String>) -> Vec<Tied> {
        match self {
            LineageState::Off => Vec::new(),
            LineageState::Unavailable { why, required } => {
                if *required {
                    errors.push(why.clone());
                }
                Vec::new()
            }
            LineageState::Running(lineage) => {
                lineage.seed(&scan.processes);
                let labelled = scan.processes.iter().map(|p| p.pid).collect();
                let (tied, note) = lineage.hidden(&labelled);
                errors.extend(note);
                tied
            }
        }
    }
}

impl Controller {
    /// What the agents this pass stopped forked while they were being
    /// stopped — after the scan, so in no action of the plan: a fork loop
    /// through the grace, each child in a session of its own. The lineage
    /// ties those children to the chat; the state is read again and they
    /// are stopped under the same rules, up to [`FORK_SWEEPS`] more rounds
    /// within the pass's time. What the last reading would still stop is
    /// an error of the pass, named: never a pass that says done while they
    /// run.
    pub(super) async fn sweep_forked(
        &self,
        scope: &Scope,
        results: &mut Vec<ActionResult>,
        how: Acting<'_>,
        notes: &mut Notes,
    ) {
        let LineageState::Running(lineage) = &self.lineage else {
            return;
        };
        let stopped: BTreeSet<String> = results
            .iter()
            .filter(|r| r.action.kind.waits_on_a_grace())
            .filter(|r| matches!(r.outcome.name(), "done" | "failed"))
            .filter_map(|r| r.action.owner.chat_id.clone())
            .collect();
        if stopped.is_empty() {
            return;
        }
        for round in 0..=FORK_SWEEPS {
            // What they forked before dying may still be on its way from
            // the kernel.
            let l = lineage.clone();
            let caught_up = tokio::task::spawn_blocking(move || l.caught_up(SWEEP_CATCH_UP))
                .await
                .unwrap_or(false);
            if !caught_up {
                tracing::warn!(
                    "the fork lineage is still applying events after {}: what a stopped agent \
                     forked last may be left to the next pass",
                    humantime::format_duration(SWEEP_CATCH_UP)
                );
            }
            let left: BTreeSet<(i32, u64)> = lineage
                .hidden(&Default::default())
                .0
                .into_iter()
                .filter(|t| stopped.contains(&t.chat_id))
                .map(|t| (t.pid, t.start_time))
                .collect();
            if left.is_empty() {
                return;
            }
            let Some(plan) = self
                .plan_again(scope, "what a stopped agent forked", notes)
                .await
            else {
                return;
            };
            let done: HashSet<&plan::Target> = results.iter().map(|r| &r.target).collect();
            let actions: Vec<plan::Action> = plan
                .actions
                .into_iter()
                .filter(|a| match &a.kind {
                    plan::ActionKind::TerminateProcess { process } => {
                        left.contains(&(process.pid, process.start_time))
                            && !done.contains(&a.key())
                    }
                    _ => false,
                })
                .collect();
            if actions.is_empty() {
                return;
            }
            if round == FORK_SWEEPS || how.stopped() {
                let named: Vec<String> = actions
                    .iter()
                    .map(|a| format!("{} ({})", a.key(), a.reason))
                    .collect();
                notes.errors.push(PassError::ForkedLeft {
                    rounds: round,
                    named,
                });
                return;
            }
            tracing::info!(
                round = round + 1,
                processes = actions.len(),
                "stopping what stopped agents forked while they were being stopped"
            );
            let plan = Plan {
                actions,
                ..Plan::default()
            };
            results.extend(self.act(&plan, how).await);
        }
    }
}
