//! Sessions on the shared opencode server, and what the worktrees must
//! wait for while they stay.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::model::{
    age, is_wellformed_opencode_id, ActualState, AgentSessionRow, Backend, DesiredState,
    OpencodeSession, OpencodeView, PathCheck,
};

use super::agents::{chat_not_live, close_row};
use super::{Action, ActionKind, OpencodeTarget, Owner, Pending, Plan, Policy, Target};

/// Worktrees that must wait this pass, with why: by directory (an opencode
/// session still works in it) and by session (opencode is failing and the
/// session's chats have opencode rows).
#[derive(Debug, Default)]
pub(super) struct Waits {
    dirs: HashMap<PathBuf, String>,
    sessions: HashMap<String, String>,
}

impl Waits {
    pub(super) fn for_worktree(&self, path: &Path, session: Option<&str>) -> Option<&String> {
        self.dirs
            .get(path)
            .or_else(|| session.and_then(|s| self.sessions.get(s)))
    }
}

/// Opencode sessions: those named by open rows of chats that are not live
/// (deleted, then their rows closed), and those under the root that no open
/// row names (deleted once older than the minimum age). Returns what the
/// worktrees must wait for.
pub(super) fn plan_opencode(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) -> Waits {
    let mut waits = Waits::default();
    let mut deleting: HashSet<String> = HashSet::new();
    for row in opencode_rows(desired) {
        plan_opencode_row(row, desired, actual, now, &mut deleting, &mut waits, out);
    }
    let OpencodeView::Listed { sessions } = &actual.opencode else {
        return waits;
    };
    plan_orphan_opencode(sessions, desired, actual, policy, now, &mut deleting, out);
    // Whatever stays on the server keeps its worktree.
    for s in sessions {
        let goes = deleting.contains(&s.id)
            || s.parent_id.as_deref().is_some_and(|p| deleting.contains(p));
        if !goes {
            waits
                .dirs
                .entry(s.worktree_dir.clone())
                .or_insert_with(|| format!("opencode session {} still works in it", s.id));
        }
    }
    waits
}

pub(super) fn opencode_rows(desired: &DesiredState) -> impl Iterator<Item = &AgentSessionRow> + '_ {
    desired
        .agent_sessions
        .iter()
        .filter(|r| r.backend == Backend::OpencodeServer)
}

/// An open `opencode_server` row of a chat that is not live: its session
/// deleted (once per session id), then the row closed; or, while opencode
/// cannot be asked, both kept (and, while it fails, the session's
/// worktree).
pub(super) fn plan_opencode_row(
    row: &AgentSessionRow,
    desired: &DesiredState,
    actual: &ActualState,
    now: SystemTime,
    deleting: &mut HashSet<String>,
    waits: &mut Waits,
    out: &mut Plan,
) {
    let kept = "its opencode session and row are kept";
    let Some(why) = chat_not_live(desired, row, now, kept, out) else {
        return;
    };
    let owner = Owner {
        session_id: Some(row.session_id.clone()),
        chat_id: Some(row.chat_id.clone()),
    };
    let close = |detail: String| close_row(row, &why, detail, None);
    let id = match row.agent_session_id.as_deref() {
        None => {
            out.actions
                .push(close("no opencode session id recorded".into()));
            return;
        }
        Some(id) if !is_wellformed_opencode_id(id) => {
            out.actions.push(close(format!(
                "malformed opencode session id {id:?}: the server would answer 500, so it is never sent"
            )));
            return;
        }
        Some(id) => id,
    };
    match &actual.opencode {
        OpencodeView::Off => out.actions.push(close(
            "opencode is off on this host (opencode.url is empty)".into(),
        )),
        OpencodeView::NotRunning { why: down } => out.pending.push(Pending {
            target: Target::Opencode(id.to_string()),
            why: format!(
                "{why}; opencode is not running ({down}): session {id} is deleted once it is \
                 back, and row {} stays open until then",
                row.id
            ),
        }),
        OpencodeView::Failing { why: failing } => {
            out.pending.push(Pending {
                target: Target::Opencode(id.to_string()),
                why: format!("{why}; waiting for opencode: {failing}"),
            });
            waits.sessions.insert(
                row.session_id.clone(),
                format!("waiting for opencode to delete session {id}: {failing}"),
            );
        }
        OpencodeView::Listed { .. } => {
            if deleting.insert(id.to_string()) {
                let listed = match &actual.opencode {
                    OpencodeView::Listed { sessions } => sessions.iter().find(|s| s.id == id),
                    _ => None,
                };
                out.actions.push(Action {
                    kind: ActionKind::DeleteOpencodeSession {
                        session: OpencodeTarget {
                            id: id.to_string(),
                            directory: listed.map(|s| s.directory.clone()),
                            worktree_dir: listed.map(|s| s.worktree_dir.clone()),
                            chat_id: Some(row.chat_id.clone()),
                            agent: Some(row.agent.clone()),
                            age_secs: listed.map(|s| age(now, s.created).as_secs()),
                        },
                    },
                    owner: owner.clone(),
                    reason: why.clone(),
                });
            }
            out.actions
                .push(close(format!("opencode session {id} deleted first")));
        }
    }
}

/// Sessions on the server that no open row names: deleted once older than
/// the minimum age (a child goes with its parent).
pub(super) fn plan_orphan_opencode(
    sessions: &[OpencodeSession],
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    deleting: &mut HashSet<String>,
    out: &mut Plan,
) {
    let named: HashSet<&str> = opencode_rows(desired)
        .filter_map(|r| r.agent_session_id.as_deref())
        .collect();
    let on_server: HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let session_of_dir: HashMap<&PathBuf, &str> = desired
        .worktrees
        .iter()
        .filter_map(|w| match actual.row_paths.get(&w.id) {
            Some(PathCheck::Inside { path, .. }) => Some((path, w.session_id.as_str())),
            _ => None,
        })
        .collect();
    for s in sessions {
        if named.contains(s.id.as_str()) || deleting.contains(&s.id) {
            continue;
        }
        // A child goes with its parent.
        if s.parent_id
            .as_deref()
            .is_some_and(|p| on_server.contains(p))
        {
            continue;
        }
        let old = age(now, s.created);
        let shown = humantime::format_duration(Duration::from_secs(old.as_secs()));
        if old < policy.opencode_orphan_min_age {
            out.pending.push(Pending {
                target: Target::Opencode(s.id.clone()),
                why: format!(
                    "no open row names opencode session {} in {}, {shown} old: deleted once {} old",
                    s.id,
                    s.directory.display(),
                    humantime::format_duration(policy.opencode_orphan_min_age)
                ),
            });
            continue;
        }
        deleting.insert(s.id.clone());
        out.actions.push(Action {
            kind: ActionKind::DeleteOpencodeSession {
                session: OpencodeTarget {
                    id: s.id.clone(),
                    directory: Some(s.directory.clone()),
                    worktree_dir: Some(s.worktree_dir.clone()),
                    chat_id: None,
                    agent: None,
                    age_secs: Some(old.as_secs()),
                },
            },
            owner: Owner {
                session_id: session_of_dir.get(&s.worktree_dir).map(|s| s.to_string()),
                chat_id: None,
            },
            reason: format!(
                "no open row names this session in {}, {shown} old",
                s.directory.display()
            ),
        });
    }
}
