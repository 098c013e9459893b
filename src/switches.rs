//! Kill switches: settings that turn one kind of action off
//! (`processes.enabled`, `worktrees.enabled`, `opencode.enabled`).
//!
//! # Guarantees
//!
//! 1. An action of a kind switched off leaves the plan before anything is
//!    executed, and is reported as pending with the setting that holds it
//!    back: the pass still shows what it would do
//!    (`a_switched_off_kind_is_reported_as_pending_never_executed`).
//! 2. An agent row goes with its actuator: an `acp` row is closed only while
//!    processes are on (its process may still run), an `opencode_server`
//!    row only while opencode is on; a row must not say "closed" about
//!    something left running (`agent_rows_follow_their_actuator`).
//! 3. Everything else in the plan is kept, in its order
//!    (`all_on_keeps_the_plan_as_it_is`). A refused path is always
//!    reported: it acts on nothing.
//!
//! An agent working inside a worktree is terminated before the worktree is
//! removed only while processes are on (see `act`); otherwise it keeps the
//! worktree, as any other process does.

use serde::Serialize;

use crate::config::Config;
use crate::model::Backend;
use crate::plan::{Action, ActionKind, Pending, Plan};

/// Which kinds of action the configuration allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Switches {
    pub processes: bool,
    pub worktrees: bool,
    pub opencode: bool,
}

impl From<&Config> for Switches {
    fn from(c: &Config) -> Switches {
        Switches {
            processes: c.processes.enabled,
            worktrees: c.worktrees.enabled,
            opencode: c.opencode.enabled,
        }
    }
}

impl Switches {
    pub const ALL_ON: Switches = Switches {
        processes: true,
        worktrees: true,
        opencode: true,
    };

    /// The settings that are off, as `section.enabled` names.
    pub fn off(&self) -> Vec<&'static str> {
        [
            (self.processes, "processes.enabled"),
            (self.worktrees, "worktrees.enabled"),
            (self.opencode, "opencode.enabled"),
        ]
        .into_iter()
        .filter(|(on, _)| !on)
        .map(|(_, name)| name)
        .collect()
    }

    /// The setting that holds `action` back, if one does.
    fn holding_back(&self, action: &Action) -> Option<&'static str> {
        let processes = (!self.processes).then_some("processes.enabled");
        let worktrees = (!self.worktrees).then_some("worktrees.enabled");
        let opencode = (!self.opencode).then_some("opencode.enabled");
        match &action.kind {
            ActionKind::TerminateProcess { .. }
            | ActionKind::StopCgroup { .. }
            | ActionKind::RemoveCgroup { .. } => processes,
            ActionKind::CloseAgentRow {
                backend: Backend::Acp,
                ..
            } => processes,
            ActionKind::DeleteOpencodeSession { .. }
            | ActionKind::CloseAgentRow {
                backend: Backend::OpencodeServer,
                ..
            } => opencode,
            ActionKind::RemoveWorktree { .. }
            | ActionKind::MarkWorktreeRemoved { .. }
            | ActionKind::MarkWorktreeActive { .. }
            | ActionKind::PruneAdminEntry { .. } => worktrees,
            ActionKind::RefusePath { .. } => None,
        }
    }

    /// `plan` without the actions held back, which join its pending list.
    pub fn apply(&self, mut plan: Plan) -> Plan {
        if *self == Switches::ALL_ON {
            return plan;
        }
        let actions = std::mem::take(&mut plan.actions);
        for action in actions {
            match self.holding_back(&action) {
                Some(setting) => plan.pending.push(Pending {
                    target: action.key(),
                    why: format!(
                        "{} held back: {setting} is false ({})",
                        action.name(),
                        action.reason
                    ),
                }),
                None => plan.actions.push(action),
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Owner, ProcessTarget, Target, WorktreeTarget};
    use std::path::PathBuf;

    fn action(kind: ActionKind) -> Action {
        Action {
            kind,
            owner: Owner {
                session_id: Some("s1".into()),
                chat_id: Some("c1".into()),
            },
            reason: "chat c1 archived 4m ago".into(),
        }
    }

    fn terminate() -> Action {
        action(ActionKind::TerminateProcess {
            process: ProcessTarget {
                pid: 4242,
                start_time: 7,
                pgid: 4242,
                chat_id: "c1".into(),
                agent: Some("goose".into()),
                command: "goose acp".into(),
                age_secs: 600,
                recorded_by_row: None,
                tied_to: None,
            },
        })
    }

    fn close_row(backend: Backend) -> Action {
        action(ActionKind::CloseAgentRow {
            row_id: format!("{backend:?}-row"),
            backend,
            agent: "goose".into(),
            why: "chat archived".into(),
            recorded_process: None,
        })
    }

    fn remove() -> Action {
        action(ActionKind::RemoveWorktree {
            worktree: WorktreeTarget {
                row_id: Some("w1".into()),
                name: "w1".into(),
                path: PathBuf::from("/tmp/booworktrees/w1"),
                branch: None,
                base_ref: None,
                repo_path: None,
            },
        })
    }

    fn refuse() -> Action {
        action(ActionKind::RefusePath {
            worktree_id: "w2".into(),
            path: PathBuf::from("/etc"),
            why: "outside the root".into(),
        })
    }

    fn plan_of(actions: Vec<Action>) -> Plan {
        Plan {
            actions,
            ..Plan::default()
        }
    }

    fn names(plan: &Plan) -> Vec<&'static str> {
        plan.actions.iter().map(Action::name).collect()
    }

    #[test]
    fn all_on_keeps_the_plan_as_it_is() {
        let plan = plan_of(vec![
            terminate(),
            close_row(Backend::Acp),
            remove(),
            refuse(),
        ]);
        assert_eq!(Switches::ALL_ON.apply(plan.clone()), plan);
        assert!(Switches::ALL_ON.off().is_empty());
    }

    #[test]
    fn a_switched_off_kind_is_reported_as_pending_never_executed() {
        let switches = Switches {
            worktrees: false,
            ..Switches::ALL_ON
        };
        let out = switches.apply(plan_of(vec![terminate(), remove(), refuse()]));
        assert_eq!(names(&out), vec!["terminate_process", "refuse_path"]);
        assert_eq!(out.pending.len(), 1);
        assert_eq!(
            out.pending[0].target,
            Target::Worktree("/tmp/booworktrees/w1".into())
        );
        assert_eq!(
            out.pending[0].why,
            "remove_worktree held back: worktrees.enabled is false (chat c1 archived 4m ago)"
        );
        assert_eq!(switches.off(), vec!["worktrees.enabled"]);
    }

    #[test]
    fn agent_rows_follow_their_actuator() {
        let plan = || {
            plan_of(vec![
                terminate(),
                close_row(Backend::Acp),
                close_row(Backend::OpencodeServer),
            ])
        };
        let no_processes = Switches {
            processes: false,
            ..Switches::ALL_ON
        }
        .apply(plan());
        assert_eq!(names(&no_processes), vec!["close_agent_row"]);
        assert!(matches!(
            no_processes.actions[0].kind,
            ActionKind::CloseAgentRow {
                backend: Backend::OpencodeServer,
                ..
            }
        ));
        let no_opencode = Switches {
            opencode: false,
            ..Switches::ALL_ON
        }
        .apply(plan());
        assert_eq!(
            names(&no_opencode),
            vec!["terminate_process", "close_agent_row"]
        );
        assert!(matches!(
            no_opencode.actions[1].kind,
            ActionKind::CloseAgentRow {
                backend: Backend::Acp,
                ..
            }
        ));
    }
}
