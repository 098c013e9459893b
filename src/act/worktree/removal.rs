//! Deciding whether a worktree directory may go, and removing it: blocking
//! work, run on the blocking pool by the executor (and by the benchmark
//! directly).

use std::time::SystemTime;

use globset::GlobSet;

use crate::act::run::outcome::{Outcome, Removal};
use crate::act::trash;
use crate::act::trash::delete;
use crate::git;
use crate::model::PathCheck;
use crate::plan::WorktreeTarget;
use crate::risk::AtRisk;
use crate::root::WorktreeRoot;

/// The preflight's verdict on a worktree directory.
#[derive(Debug)]
pub enum Inspection {
    Refused(String),
    Gone,
    /// What removal would destroy (nothing: empty), and the directory
    /// judged, pinned before the preflight; `None` only with a reason that
    /// nothing overrides (not a directory, not pinned).
    Reasons(Vec<AtRisk>, Option<trash::Pinned>),
}

/// Confines the path again, pins the directory ([`trash::pin`]: what the
/// preflight judges is what [`archive_then_retire`] may retire), and runs
/// every check that decides whether it may go: mount points, then the
/// stamp of its tree ([`trash::Pinned::stamp_tree`]: anything written
/// from here on shows when it is retired), then the git preflight, to
/// `depth`. A name that no longer holds the pinned directory once the
/// preflight is done, or a tree being written while it is stamped, is
/// `changed_during_removal`: the verdict is not about what is there.
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
    let mut pinned = match trash::pin(root, &wt.path) {
        Ok(trash::Pin::Pinned(p)) => p,
        Ok(trash::Pin::Gone) => return Inspection::Gone,
        Ok(trash::Pin::NotADirectory(detail)) => {
            return Inspection::Reasons(vec![AtRisk::NotAWorktree { detail }], None)
        }
        Err(e @ delete::DeleteError::OutsideRoot { .. }) => {
            return Inspection::Refused(e.to_string())
        }
        Err(e) => {
            let error = format!("pinning the directory before judging it: {e}");
            return Inspection::Reasons(vec![AtRisk::PreflightFailed { error }], None);
        }
    };
    let mut reasons = match delete::mount_points_inside(&wt.path) {
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
    // Before the preflight, so that what is written while git looks shows
    // too; not below a mount point, which keeps the worktree whatever
    // else is found (and a walk must not cross).
    if reasons.is_empty() {
        match pinned.stamp_tree() {
            Ok(None) => {}
            Ok(Some(detail)) => reasons.push(AtRisk::ChangedDuringRemoval { detail }),
            Err(e) => reasons.push(AtRisk::PreflightFailed {
                error: format!("stamping its tree: {e}"),
            }),
        }
    }
    if depth == git::preflight::Depth::First && !reasons.is_empty() {
        return Inspection::Reasons(reasons, Some(pinned));
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
    match pinned.changed(root) {
        Ok(None) => {}
        Ok(Some(detail)) => reasons.push(AtRisk::ChangedDuringRemoval { detail }),
        Err(e) => reasons.push(AtRisk::PreflightFailed {
            error: format!("checking the directory judged is still in place: {e}"),
        }),
    }
    Inspection::Reasons(reasons, Some(pinned))
}

/// Archives the worktree when asked to, keeps the commits only its reflog
/// reaches, then retires the directory into the trash with one rename
/// ([`trash::retire`]; in place with [`delete::delete_dir`] where the
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
///    `EBUSY`) the directory is deleted in place with [`delete::delete_dir`]
///    and a log line gives the reason (test
///    `retire_reports_cannot_rename_when_the_trash_is_another_file_system`
///    for the verdict; the deletion is `delete_dir`'s, with its own tests).
/// 5. **What was judged (and archived) is what is retired.** `pinned` is
///    the directory [`inspect`] pinned before its preflight: after the
///    force archive and the history are written it must still be at its
///    name, and [`trash::retire`] moves it only if the rename moved that
///    very directory (else it is put back). Otherwise nothing is removed
///    and the answer is [`Outcome::KeptAtRisk`] with
///    `changed_during_removal` (tests in `tests/trash_safety.rs`, and
///    `a_directory_swapped_in_before_the_rename_is_put_back`); the deletion
///    in place deletes only the pinned directory
///    ([`delete::delete_dir_expecting`]).
/// 6. **What was judged is what is reclaimed.** Once the rename has moved
///    the pinned directory into the trash, and before anything is
///    unlinked or the admin entry pruned, its tree is compared with the
///    stamp [`inspect`] took before the preflight ([`trash::retire`]):
///    any entry made, removed, renamed, written or changed meanwhile (by
///    any process, agent or not) puts the directory back at its name
///    with what was written, and the answer is [`Outcome::KeptAtRisk`]
///    with `changed_during_removal` naming the entries; the next pass
///    judges it again (tests `a_write_in_the_rename_window_is_put_back`
///    and, in `tests/writer.rs`,
///    `a_write_after_the_preflight_keeps_the_worktree` and
///    `a_writer_loop_never_loses_a_write`). Deleting in place (guarantee
///    4), the tree is compared right before the deletion: there the
///    window is the walk's (test
///    `deleting_in_place_a_write_after_the_preflight_keeps_the_worktree`).
///    Neither the reflog history nor a force's archive writes into the
///    worktree directory (only into the main repository), and the git
///    preflight runs with `GIT_OPTIONAL_LOCKS=0`, its index in the admin
///    entry: none of them changes what the stamp covers.
#[allow(clippy::too_many_arguments)]
pub fn archive_then_retire(
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
    pinned: &trash::Pinned,
    precious: &GlobSet,
    archive: bool,
    reasons: &[AtRisk],
    now: SystemTime,
) -> (Outcome, Removal) {
    let mut detail = Removal::default();
    // Read before deletion: the `.git` file is the only trustworthy link to
    // the main repository (the row's repo_path is untrusted input).
    let repo = git::admin::main_repository_of(&wt.path);
    if archive {
        match force_archive(wt, precious, now) {
            Ok(a) => {
                detail.archive = Some(a);
                detail.forced_over = Some(reasons.to_vec());
            }
            Err(e) => {
                let error = format!("archiving before forced removal failed, nothing removed: {e}");
                return (Outcome::Failed { error }, detail);
            }
        }
    }
    // Commits only the worktree's reflog and per-worktree refs reach would
    // go with it: keep them first (not a reason to keep the worktree).
    match keep_reflog_history(wt) {
        Ok(kept) => detail.history = kept,
        Err(e) => {
            let error =
                format!("keeping the commits only its reflog reaches failed, nothing removed: {e}");
            return (Outcome::Failed { error }, detail);
        }
    }
    crate::crash_point!("remove.before_retire");
    let changed = |detail: String| {
        tracing::warn!(worktree = %wt.path.display(), detail = %detail,
            "the worktree changed while it was being removed; kept, judged again next pass");
        Outcome::KeptAtRisk {
            reasons: vec![AtRisk::ChangedDuringRemoval { detail }],
            unchanged: false,
        }
    };
    // What the archive and the history were taken from must be what is
    // about to move.
    match pinned.changed(root) {
        Ok(None) => {}
        Ok(Some(why)) => return (changed(why), detail),
        Err(e) => {
            let error = e.to_string();
            return (Outcome::Failed { error }, detail);
        }
    }
    // Everything git-related is done: from the rename on, the worktree is
    // gone for git, for the orchestrator and for the answer; the space is
    // the reclaimer's.
    let mut in_place = None;
    match trash::retire(root, pinned, now) {
        Ok(trash::Retired::Moved { entry }) => {
            crate::crash_point!("remove.after_rename");
            detail.trash = Some(entry.display().to_string());
        }
        Ok(trash::Retired::Gone) => {}
        Ok(trash::Retired::Changed { why }) => return (changed(why), detail),
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
                detail,
            )
        }
    }
    if let Some(why) = &in_place {
        // Best effort: the deletion follows the walk, and what is written
        // between the two is not seen.
        match pinned.tree_changed() {
            Ok(None) => {}
            Ok(Some(why)) => return (changed(why), detail),
            Err(e) => {
                let error = e.to_string();
                return (Outcome::Failed { error }, detail);
            }
        }
        let judged = Some((pinned.dev(), pinned.ino()));
        if let Err(e) = delete::delete_dir_expecting(root, &wt.path, judged) {
            if let delete::DeleteError::Changed { why, .. } = e {
                return (changed(why), detail);
            }
            return (
                Outcome::Failed {
                    error: e.to_string(),
                },
                detail,
            );
        }
        detail.deleted_in_place = Some(why.clone());
    }
    let mut note = removed_note(&detail);
    if let Some(repo) = repo {
        match git::admin::prune_for(&repo, &wt.path) {
            Ok(n) => {
                detail.admin_entries_pruned = Some(n);
                crate::crash_point!("remove.after_admin_prune");
            }
            // The directory is gone; the stale entry is found and pruned
            // by a later pass.
            Err(e) => note.push_str(&format!("; admin entry not pruned yet: {e}")),
        }
    }
    (Outcome::Done { note }, detail)
}

/// Archives the worktree's whole state, then checks the archive against
/// git's own view: it was built through libgit2, and git must find all of
/// the work in it before anything is deleted.
fn force_archive(
    wt: &WorktreeTarget,
    precious: &GlobSet,
    now: SystemTime,
) -> Result<git::archive::Archived, String> {
    let a = git::archive::archive(&wt.path, &wt.name, now, precious).map_err(|e| e.to_string())?;
    git::verify::check_archive(&wt.path, &a.reference, precious, git::cli::DEFAULT_TIMEOUT)
        .map_err(|e| format!("the archive is incomplete: {e}"))?;
    Ok(a)
}

/// Keeps the commits only the worktree's reflog and per-worktree refs
/// reach, under a ref of their own; `None` when there are none.
fn keep_reflog_history(wt: &WorktreeTarget) -> Result<Option<git::archive::Archived>, String> {
    let timeout = git::cli::DEFAULT_TIMEOUT;
    let commits =
        git::preflight::unreferenced_history(&wt.path, timeout).map_err(|e| e.to_string())?;
    git::keep::keep_history(&wt.path, &wt.name, &commits, SystemTime::now(), timeout)
}

/// What a removal's note says of its steps so far.
fn removed_note(r: &Removal) -> String {
    let mut note = match &r.archive {
        Some(a) => format!("archived to {} and removed", a.reference),
        None => "removed".to_string(),
    };
    match (&r.trash, &r.deleted_in_place) {
        (Some(t), _) => note.push_str(&format!(
            " (retired to {t}, space reclaimed in the background)"
        )),
        (None, Some(_)) => note.push_str(" (deleted in place)"),
        (None, None) => {}
    }
    if let Some(h) = &r.history {
        note.push_str(&format!(
            "; commits only its reflog reached kept under {}",
            h.reference
        ));
    }
    note
}
