//! Stale and moved admin entries of the main repositories.

use std::time::{Duration, SystemTime};

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
        if let Some(why) = within_grace(entry, policy, now) {
            out.pending.push(Pending {
                target: Target::AdminEntry {
                    repo: entry.repo_path.clone(),
                    name: entry.name.clone(),
                },
                why,
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

/// Why a stale entry waits: its directory has not been missing for
/// `worktrees.stale_entry_grace` yet (someone may be moving it, or a root
/// may be coming back), or when it went missing could not be recorded.
fn within_grace(
    entry: &crate::model::StaleAdminEntry,
    policy: &Policy,
    now: SystemTime,
) -> Option<String> {
    let grace = policy.stale_entry_grace;
    let Some(since) = entry.missing_since else {
        return Some(format!(
            "directory {} is gone; when it went missing could not be recorded, so the entry \
             waits (worktrees.stale_entry_grace = {})",
            entry.worktree_path.display(),
            humantime::format_duration(grace)
        ));
    };
    let missing = now.duration_since(since).unwrap_or(Duration::ZERO);
    (missing < grace).then(|| {
        format!(
            "directory {} missing for {}; pruned once it has been missing for {} \
             (worktrees.stale_entry_grace)",
            entry.worktree_path.display(),
            humantime::format_duration(Duration::from_secs(missing.as_secs())),
            humantime::format_duration(grace)
        )
    })
}
