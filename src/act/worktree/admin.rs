//! The body of the action on stale admin entries (`.git/worktrees/<id>`
//! left behind by a directory that is gone).

use std::path::Path;
use std::time::SystemTime;

use crate::act::run::claim::Claim;
use crate::act::run::executor::{blocking_held, skipped, Applied, RunOptions};
use crate::act::run::outcome::{Detail, Outcome, Pruned};
use crate::act::worktree::WorktreeActor;
use crate::git;
use crate::model::{Force, StaleAdminEntry};
use crate::plan::Action;

impl WorktreeActor {
    /// Prunes a stale admin entry, write-ahead, unless its owner is live
    /// again.
    pub(in crate::act) async fn prune_admin_entry(
        &self,
        action: &Action,
        entry: &StaleAdminEntry,
        opts: RunOptions,
        claim: &Claim,
        intent: &mut Option<i64>,
    ) -> Applied {
        if let Some(why) = self.recheck.owner_is_live(action).await? {
            return Ok(skipped(why));
        }
        self.audit
            .announce(action, serde_json::json!(entry), intent)
            .await?;
        let (entry, root) = (entry.clone(), self.root.clone());
        let force = opts.force;
        // The stat of `exists` below, like the git work, runs here on the
        // blocking pool.
        blocking_held(claim, move || prune(&entry, root.path(), force)).await
    }
}

/// Keeps what only a stale admin entry holds ([`git::stale`]), then prunes
/// it, unless a directory under `root` points at it now (a worktree moved
/// since the observation: pruning would break it).
/// What a prune on the blocking pool comes to: a file system or git step
/// fails it with what that step said.
fn prune(entry: &StaleAdminEntry, root: &Path, force: Force) -> Result<(Outcome, Detail), String> {
    if let (Some(reason), Force::Off) = (&entry.locked, force) {
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
            Detail::None,
        ));
    }
    if Path::new(&entry.worktree_path).exists() {
        return Ok((
            Outcome::Skipped {
                why: format!("{} exists again", entry.worktree_path.display()),
            },
            Detail::None,
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
            Detail::None,
        ));
    }
    let mut detail = Pruned::default();
    let kept = git::stale::keep_entry_work(
        &entry.repo_path,
        &entry.name,
        SystemTime::now(),
        git::cli::DEFAULT_TIMEOUT,
    )
    .map_err(|e| {
        format!(
            "keeping what admin entry {} holds, nothing pruned: {e}",
            entry.name
        )
    })?;
    if let Some(k) = &kept {
        detail.archive = Some(k.archived.clone());
        detail.unreachable_commits = Some(k.commits.clone());
    }
    let n =
        git::admin::prune_for(&entry.repo_path, &entry.worktree_path).map_err(|e| e.to_string())?;
    let note = match &detail.archive {
        Some(a) => format!(
            "{} commit(s) kept under {}; {n} admin entry pruned",
            kept.as_ref().map_or(0, |k| k.commits.len()),
            a.reference
        ),
        None => format!("{n} admin entry pruned"),
    };
    Ok((Outcome::Done { note }, Detail::Pruned(detail)))
}
