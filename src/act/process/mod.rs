//! The processes actor: the bodies of the actions on agent processes,
//! their cgroups ([`crate::act::process::cgroup`]) and their rows, with what they need
//! and nothing else.

pub mod cgroup;
pub mod terminate;

use std::sync::Arc;
use std::time::Duration;

use crate::act::run::audit::Audit;
use crate::act::run::executor::{blocking, skipped, Applied, Gate};
use crate::act::run::intent::{self, PathIntent, SignalIntent};
use crate::act::run::liveness::Recheck;
use crate::act::run::outcome::{ActError, Detail, Outcome};
use crate::observe::processes;
use crate::plan::{Action, ActionName, ProcessTarget, RecordedProcess};
use crate::store::{AuditRecord, Store};

/// Stops agents and closes their rows.
pub(super) struct ProcessActor {
    pub(super) store: Store,
    pub(super) host: String,
    pub(super) labels: processes::LabelNames,
    /// `processes.term_grace`: how long SIGTERM is given before SIGKILL.
    pub(super) term_grace: Duration,
    pub(super) audit: Arc<Audit>,
    pub(super) recheck: Arc<Recheck>,
}

impl ProcessActor {
    /// Stops an agent process, write-ahead, unless its chat is live again.
    pub(super) async fn terminate_process(
        &self,
        action: &Action,
        process: &ProcessTarget,
        intent: &mut Option<i64>,
        gate: &Gate,
    ) -> Applied {
        if let Some(why) = self.recheck.owner_is_live(action).await? {
            return Ok(skipped(why));
        }
        let target = terminate::Agent {
            pid: process.pid,
            start_time: process.start_time,
            chat_id: process.chat_id.clone(),
            recorded_by_row: process.recorded_by_row.clone(),
            tied_to: process.tied_to,
        };
        self.audit
            .announce(action, serde_json::json!(target), intent)
            .await?;
        let open = || gate.open();
        let t = terminate::terminate_then(
            &target,
            self.term_grace,
            &self.labels,
            &*self.recheck,
            &open,
        )
        .await;
        Ok((terminated_outcome(&t), Detail::Terminated(t)))
    }

    /// [`terminate::terminate`] with this executor's grace and labels; the
    /// store answers, right before SIGKILL, whether the agent's chat (or
    /// the chat of a process below it) is live.
    pub(super) async fn stop_agent(&self, target: &terminate::Agent) -> terminate::Terminated {
        terminate::terminate(target, self.term_grace, &self.labels, &*self.recheck).await
    }

    /// Terminates an agent found inside a worktree about to be removed,
    /// write-ahead like any signal: intent, lock confirmed, signal,
    /// outcome.
    pub(super) async fn terminate_inside(
        &self,
        action: &Action,
        target: &terminate::Agent,
    ) -> Result<(), ActError> {
        let name = ActionName::TerminateProcess.as_str();
        let what = target.key().to_string();
        let reason = format!(
            "an agent of chat {} inside a worktree being removed",
            target.chat_id
        );
        let id = self
            .audit
            .intend(
                &action.owner,
                name,
                &what,
                &reason,
                serde_json::json!(target),
            )
            .await?;
        let confirmed = self.audit.confirm().await;
        let (outcome, note) = match &confirmed {
            Ok(()) => {
                let t = self.stop_agent(target).await;
                let o = terminated_outcome(&t);
                let note = o.text();
                (o, note)
            }
            Err(e) => (
                Outcome::Failed {
                    error: e.to_string(),
                },
                e.to_string(),
            ),
        };
        let record = AuditRecord {
            host: self.host.clone(),
            chat_id: action.owner.chat_id.clone(),
            session_id: action.owner.session_id.clone(),
            action: name.into(),
            target: what,
            outcome: outcome.name().into(),
            reason: format!("{reason}: {note}"),
            detail: serde_json::json!({ "outcome": &outcome }),
            intent_id: Some(id),
        };
        // An outcome that could not be written is concluded by a later
        // settle; the removal goes on by what happened.
        let _ = self.audit.conclude(Some(id), &record).await;
        confirmed
    }

    /// Closes an agent row whose process is gone, unless its chat is live
    /// again.
    pub(super) async fn close_agent_row(&self, action: &Action, row_id: &str) -> Applied {
        if let Some(why) = self.recheck.owner_is_live(action).await? {
            return Ok(skipped(why));
        }
        let closed = self.store.close_agent_row(row_id).await?;
        Ok((row_closed(closed, "row already closed"), Detail::None))
    }

    /// Closes a row whose recorded process no longer exists, whatever its
    /// chat's liveness: the process is looked up again right before, and
    /// the row is closed only while it still records exactly that process.
    /// Nothing is signalled.
    pub(super) async fn close_row_of_gone_process(
        &self,
        row_id: &str,
        recorded: RecordedProcess,
    ) -> Applied {
        let labels = self.labels.clone();
        let now_at_pid = blocking(move || {
            Ok(processes::identity(recorded.pid, &labels)
                .filter(|id| processes::is_alive_state(id.state)))
        })
        .await?;
        if let Some(id) = now_at_pid {
            if recorded.start_time.is_none_or(|s| s == id.start_time) {
                return Ok(skipped(format!(
                    "pid {} runs as recorded again",
                    recorded.pid
                )));
            }
        }
        let closed = self
            .store
            .close_agent_row_recording(row_id, recorded.pid, recorded.start_time)
            .await?;
        Ok((
            row_closed(
                closed,
                "row already closed, or it records another process now",
            ),
            Detail::None,
        ))
    }
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

/// What a termination came to, as an outcome. `Done` only when nothing
/// tracked of the agent is left: a survivor, or SIGKILL withheld with
/// processes still running, is never done.
pub(super) fn terminated_outcome(t: &terminate::Terminated) -> Outcome {
    match (&t.not_signalled, &t.kept_alive) {
        (Some(terminate::NotSignalled::Gone), _) => Outcome::Done {
            note: format!("pid {} already gone", t.pid),
        },
        (Some(terminate::NotSignalled::Protected { why }), _) => Outcome::Refused {
            why: format!("pid {}: {why}", t.pid),
        },
        (Some(other), _) => Outcome::Skipped {
            why: format!("pid {}: {other}", t.pid),
        },
        // Reopened during the grace: the chat keeps its agent, which had
        // SIGTERM (the text says so).
        (None, Some(terminate::KeptAlive::LiveAgain { .. })) => {
            Outcome::Skipped { why: t.to_string() }
        }
        (None, Some(terminate::KeptAlive::LivenessUnknown { .. })) => Outcome::Failed {
            error: format!("{t}; retried next pass"),
        },
        (None, None) if !t.survivors.is_empty() => Outcome::Failed {
            error: format!(
                "{} process(es) survived SIGKILL: {}; retried next pass ({t})",
                t.survivors.len(),
                t.survivors
                    .iter()
                    .map(|s| format!("pid {} (state {})", s.pid, s.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        (None, None) => Outcome::Done {
            note: t.to_string(),
        },
    }
}

impl ProcessActor {
    /// What is there now of the process an interrupted signal's intent
    /// names, looked up without acting.
    pub(in crate::act) fn found_after_signal(&self, detail: &serde_json::Value) -> String {
        let SignalIntent { pid, start_time } = intent::read(detail);
        let pid = pid.unwrap_or(0) as i32;
        match processes::identity(pid, &self.labels) {
            Some(id)
                if processes::is_alive_state(id.state) && Some(id.start_time) == start_time =>
            {
                format!("pid {pid} still runs (planned again like any agent)")
            }
            _ => format!("pid {pid} is gone"),
        }
    }

    /// What is there now of the cgroup an interrupted stop's intent names.
    pub(in crate::act) fn found_after_cgroup_stop(detail: &serde_json::Value) -> String {
        match intent::read::<PathIntent>(detail).path {
            Some(path) => match crate::cgroup::members(std::path::Path::new(&path)) {
                Ok(m) if !m.is_empty() => format!(
                    "{} process(es) still in {path} (planned again like any agent)",
                    m.len()
                ),
                _ => format!("{path} is empty or gone"),
            },
            None => "no path recorded".into(),
        }
    }
}
