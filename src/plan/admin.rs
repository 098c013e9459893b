//! Stale and moved admin entries of the main repositories.

use std::time::SystemTime;

use crate::model::{ActualState, DesiredState, PathCheck};

use super::worktrees::session_keeps_worktree;
use super::{Action, ActionKind, Owner, Pending, Plan, Policy, Target};

/// Admin entries whose directory is gone, unless a live session's row still
/// names that path (the orchestrator may be re-creating it).
pub(super) fn plan_admin_entries(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    for moved in &actual.moved_admin_entries {
        out.pending.push(Pending {
            target: Target::AdminEntry {
                repo: moved.repo_path.clone(),
                name: moved.name.clone(),
            },
            why: format!(
                "directory {} is gone but {} points at this entry: a moved worktree, \
                 never pruned (`git worktree repair {}` updates the entry)",
                moved.worktree_path.display(),
                moved.now_at.display(),
                moved.now_at.display()
            ),
        });
    }
    for entry in &actual.stale_admin_entries {
        let live_row = desired.worktrees.iter().find(|row| {
            matches!(actual.row_paths.get(&row.id),
                Some(PathCheck::Inside { path, .. }) if *path == entry.worktree_path)
                && session_keeps_worktree(desired, &row.session_id, policy, now)
        });
        if let Some(row) = live_row {
            out.pending.push(Pending {
                target: Target::AdminEntry {
                    repo: entry.repo_path.clone(),
                    name: entry.name.clone(),
                },
                why: format!(
                    "directory {} is gone but session {} is live",
                    entry.worktree_path.display(),
                    row.session_id
                ),
            });
            continue;
        }
        let session_id = desired
            .worktrees
            .iter()
            .find(|row| {
                matches!(actual.row_paths.get(&row.id),
                    Some(PathCheck::Inside { path, .. }) if *path == entry.worktree_path)
            })
            .map(|row| row.session_id.clone());
        out.actions.push(Action {
            kind: ActionKind::PruneAdminEntry {
                entry: entry.clone(),
            },
            owner: Owner {
                session_id,
                chat_id: None,
            },
            reason: format!(
                "worktree directory {} no longer exists",
                entry.worktree_path.display()
            ),
        });
    }
}
