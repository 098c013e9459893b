//! Worktree rows and the directories under the root that no row claims.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::model::{
    age, ActualState, DesiredState, EntryKind, PathCheck, Table, WorktreeRow, WorktreeState,
};

use super::opencode::Waits;
use super::{file_name, Action, ActionKind, Owner, Pending, Plan, Policy, Target, WorktreeTarget};

/// Plans the rows of this host; returns the directories the rows claim so
/// that they are not taken for orphans.
pub(super) fn plan_worktree_rows(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    waits: &Waits,
    out: &mut Plan,
) -> HashSet<PathBuf> {
    let mut claimed = HashSet::new();
    let live_claims = live_claims(desired, actual, policy, now);
    for row in &desired.worktrees {
        let check = actual.row_paths.get(&row.id);
        if let Some(PathCheck::Inside { path, .. }) = check {
            claimed.insert(path.clone());
        }
        // A directory named by the row's id belongs to the row even when the
        // row's path is refused: it is not an orphan to reap. Nor is the one
        // the row's path leads to, however it is spelled.
        if let Some(d) = actual.dirs.iter().find(|d| d.name == row.id) {
            claimed.insert(d.path.clone());
        }
        for d in resolved_dirs(actual, row) {
            claimed.insert(d.clone());
        }
        let Some(reason) = worktree_released(desired, row, policy, now, out) else {
            continue;
        };
        if let Some(PathCheck::Inside { path, exists: true }) = check {
            if let Some(why) = worktree_held(row, path, &reason, &live_claims, waits) {
                out.pending.push(Pending {
                    target: Target::Worktree(path.to_path_buf()),
                    why,
                });
                continue;
            }
        }
        out.actions.push(released_row_action(row, check, reason));
    }
    // An unreadable worktree row still owns `<root>/<its id>`.
    for u in &desired.unreadable {
        let (Table::Worktrees, Some(id)) = (u.table, &u.id) else {
            continue;
        };
        if let Some(d) = actual.dirs.iter().find(|d| &d.name == id) {
            claimed.insert(d.path.clone());
            out.pending.push(Pending {
                target: Target::Worktree(d.path.to_path_buf()),
                why: format!("{u}; its directory is kept"),
            });
        }
    }
    claimed
}

/// Why the session of `row` releases its worktree; `None` when it keeps
/// it (a live session's at-risk mark is cleared) or the row must wait (its
/// session's row cannot be read, or does not exist yet and the worktree
/// row is young: rule 7), pushed as pending.
pub(super) fn worktree_released(
    desired: &DesiredState,
    row: &WorktreeRow,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) -> Option<String> {
    let wait = |why: String, out: &mut Plan| {
        out.pending.push(Pending {
            target: Target::WorktreeRow(row.id.clone()),
            why,
        });
        None
    };
    if let Some(u) = desired.unreadable(Table::Sessions, &row.session_id) {
        return wait(format!("{u}; its worktree is kept"), out);
    }
    let session = desired.sessions.get(&row.session_id);
    let release = match session {
        Some(s) => s.releases_worktree_because(now, policy.worktree_orphan_min_age),
        None => Some(format!("session {} has no row", row.session_id)),
    };
    let Some(reason) = release else {
        if row.state == WorktreeState::AtRisk {
            out.actions.push(Action {
                kind: ActionKind::MarkWorktreeActive {
                    worktree_id: row.id.clone(),
                },
                owner: worktree_owner(row),
                reason: format!("session {} is live again", row.session_id),
            });
        }
        return None;
    };
    // A session row that does not exist yet may simply not be committed
    // yet.
    let session_missing = session.is_none_or(|s| s.session.is_none());
    let row_age = age(now, row.created_at);
    if session_missing && row_age < policy.worktree_orphan_min_age {
        return wait(
            format!(
                "{reason}, but the worktree row is {} old: released once {} old",
                humantime::format_duration(Duration::from_secs(row_age.as_secs())),
                humantime::format_duration(policy.worktree_orphan_min_age)
            ),
            out,
        );
    }
    Some(reason)
}

/// Why the existing directory of a released row must stay this pass: a
/// row of a live session names it too, or something still works in it.
pub(super) fn worktree_held(
    row: &WorktreeRow,
    path: &Path,
    reason: &str,
    live_claims: &HashMap<PathBuf, Vec<&WorktreeRow>>,
    waits: &Waits,
) -> Option<String> {
    let other = live_claims
        .get(path)
        .and_then(|rows| rows.iter().find(|r| r.id != row.id));
    if let Some(other) = other {
        return Some(format!(
            "{reason}; but row {} of live session {} names this directory too: kept",
            other.id, other.session_id
        ));
    }
    waits
        .for_worktree(path, Some(&row.session_id))
        .map(|wait| format!("{reason}; {wait}"))
}

/// What to do with a released row, by what its path is.
pub(super) fn released_row_action(
    row: &WorktreeRow,
    check: Option<&PathCheck>,
    reason: String,
) -> Action {
    let (kind, reason) = match check {
        Some(PathCheck::Inside { path, exists: true }) => (
            ActionKind::RemoveWorktree {
                worktree: WorktreeTarget {
                    row_id: Some(row.id.clone()),
                    name: file_name(path),
                    path: path.clone(),
                    branch: row.branch.clone(),
                    base_ref: row.base_ref.clone(),
                    repo_path: Some(row.repo_path.clone()),
                },
            },
            reason,
        ),
        Some(PathCheck::Inside {
            path,
            exists: false,
        }) => (
            ActionKind::MarkWorktreeRemoved {
                worktree_id: row.id.clone(),
                path: path.clone(),
            },
            format!("{reason}; directory already gone"),
        ),
        Some(PathCheck::Refused { why }) => (
            ActionKind::RefusePath {
                worktree_id: row.id.clone(),
                path: row.path.clone(),
                why: why.clone(),
            },
            reason,
        ),
        None => (
            ActionKind::RefusePath {
                worktree_id: row.id.clone(),
                path: row.path.clone(),
                why: "path was not checked".into(),
            },
            reason,
        ),
    };
    Action {
        kind,
        owner: worktree_owner(row),
        reason,
    }
}

pub(super) fn worktree_owner(row: &WorktreeRow) -> Owner {
    Owner {
        session_id: Some(row.session_id.clone()),
        chat_id: None,
    }
}

/// Whether a worktree row's session keeps its worktree, counting a session
/// whose row cannot be read as one that does.
pub(super) fn session_keeps_worktree(
    desired: &DesiredState,
    session_id: &str,
    policy: &Policy,
    now: SystemTime,
) -> bool {
    desired.unreadable(Table::Sessions, session_id).is_some()
        || desired
            .sessions
            .get(session_id)
            .is_some_and(|s| s.keeps_worktree(now, policy.worktree_orphan_min_age))
}

/// The directories that rows of live sessions claim, with those rows: a
/// row claims its confined path, the directory named after its id (the
/// layout `<root>/<worktree id>`) and the directory its path leads to
/// under any spelling (by device and inode).
pub(super) fn live_claims<'a>(
    desired: &'a DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
) -> HashMap<PathBuf, Vec<&'a WorktreeRow>> {
    let by_name: HashMap<&str, &PathBuf> = actual
        .dirs
        .iter()
        .map(|d| (d.name.as_str(), &d.path))
        .collect();
    let mut out: HashMap<PathBuf, Vec<&WorktreeRow>> = HashMap::new();
    for row in &desired.worktrees {
        if !session_keeps_worktree(desired, &row.session_id, policy, now) {
            continue;
        }
        let mut paths: Vec<&PathBuf> = Vec::with_capacity(2);
        if let Some(PathCheck::Inside { path, .. }) = actual.row_paths.get(&row.id) {
            paths.push(path);
        }
        if let Some(p) = by_name.get(row.id.as_str()) {
            if !paths.contains(p) {
                paths.push(p);
            }
        }
        // The directory its path leads to, under any spelling (a symlink, a
        // relative path), refused or not.
        for p in resolved_dirs(actual, row) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        for p in paths {
            out.entry(p.clone()).or_default().push(row);
        }
    }
    out
}

/// The entries under the root that `row`'s path leads to, by `(device,
/// inode)`, however the path spells it.
fn resolved_dirs<'a>(
    actual: &'a ActualState,
    row: &WorktreeRow,
) -> impl Iterator<Item = &'a PathBuf> {
    let target = actual.row_targets.get(&row.id).copied();
    actual
        .dirs
        .iter()
        .filter(move |d| target.is_some() && d.file_id == target)
        .map(|d| &d.path)
}

/// Directories under the root that no row claims.
pub(super) fn plan_orphan_dirs(
    actual: &ActualState,
    claimed: &HashSet<PathBuf>,
    policy: &Policy,
    now: SystemTime,
    waits: &Waits,
    out: &mut Plan,
) {
    for dir in &actual.dirs {
        if claimed.contains(&dir.path) {
            continue;
        }
        let target = Target::Worktree(dir.path.to_path_buf());
        if dir.kind != EntryKind::Directory {
            out.pending.push(Pending {
                target,
                why: format!(
                    "{:?} entry under the root with no row: not a worktree, left alone",
                    dir.kind
                )
                .to_lowercase(),
            });
            continue;
        }
        let old = age(now, dir.created);
        let shown = humantime::format_duration(Duration::from_secs(old.as_secs()));
        if old < policy.worktree_orphan_min_age {
            out.pending.push(Pending {
                target,
                why: format!(
                    "no row for this directory, {shown} old: reaped once {} old",
                    humantime::format_duration(policy.worktree_orphan_min_age)
                ),
            });
            continue;
        }
        if let Some(wait) = waits.for_worktree(&dir.path, None) {
            out.pending.push(Pending {
                target,
                why: format!("no row for this directory, {shown} old; {wait}"),
            });
            continue;
        }
        out.actions.push(Action {
            kind: ActionKind::RemoveWorktree {
                worktree: WorktreeTarget {
                    row_id: None,
                    name: dir.name.clone(),
                    path: dir.path.clone(),
                    branch: None,
                    base_ref: None,
                    repo_path: None,
                },
            },
            owner: Owner::default(),
            reason: format!("no row for this directory, {shown} old"),
        });
    }
}
