//! The worktrees actor: the bodies of the actions on worktree directories,
//! their rows and stale admin entries ([`crate::act::worktree::admin`]): the re-checks,
//! the preflight, the verdict kept or the removal. It owns what only they
//! need: the root, the precious globs, the verdicts that keep, the refs
//! listed once per pass, the trash's reclaimer and the disposal of the
//! opencode instance.

mod admin;
pub mod dispose;
pub mod kept;
pub mod removal;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use globset::GlobSet;

use crate::act::process::terminate;
use crate::act::process::ProcessActor;
use crate::act::run::audit::Audit;
use crate::act::run::claim::Claim;
use crate::act::run::executor::{blocking, blocking_held, done, skipped, Applied, RunOptions};
use crate::act::run::intent;
use crate::act::run::liveness::Recheck;
use crate::act::run::outcome::{ActError, Checked, Detail, Outcome};
use crate::act::trash::reclaim::Reclaimer;
use crate::act::worktree::removal::{archive_then_retire, inspect, Inspection};
use crate::git;
use crate::observe::processes;
use crate::plan::{Action, WorktreeTarget};
use crate::risk::AtRisk;
use crate::root::WorktreeRoot;
use crate::store::Store;

/// Removes worktrees no live owner needs, or keeps them at risk.
pub(super) struct WorktreeActor {
    pub(super) store: Store,
    pub(super) root: WorktreeRoot,
    pub(super) precious: GlobSet,
    /// `processes.enabled`: whether an agent inside a worktree about to be
    /// removed is terminated; otherwise it keeps the worktree.
    pub(super) terminate_agents: bool,
    /// Verdicts that keep worktrees, reused while their fingerprint holds.
    pub(super) kept: Arc<kept::KeptVerdicts>,
    /// Each repository's surviving refs, listed once while unchanged.
    pub(super) refs: Arc<git::refs::RefsCache>,
    pub(super) reclaimer: Arc<Reclaimer>,
    /// The opencode server whose instance for a removed worktree is
    /// disposed of; `None` without opencode or with `opencode.enabled` off.
    pub(super) dispose: Option<crate::opencode::Client>,
    pub(super) audit: Arc<Audit>,
    pub(super) recheck: Arc<Recheck>,
    /// Stops the agents found inside a worktree being removed.
    pub(super) processes: Arc<ProcessActor>,
}

impl WorktreeActor {
    /// Marks a row removed whose directory is gone, unless its owner is
    /// live again or the directory is back.
    pub(super) async fn mark_worktree_removed(
        &self,
        action: &Action,
        worktree_id: &str,
        path: &Path,
    ) -> Applied {
        if let Some(why) = self.recheck.owner_is_live(action).await? {
            return Ok(skipped(why));
        }
        // A stat: on the blocking pool, as every file system call here (a
        // hung mount would hold an async thread).
        let dir = path.to_path_buf();
        if blocking(move || Ok(dir.exists() || dir.is_symlink())).await? {
            return Ok(skipped(format!("{} exists again", path.display())));
        }
        self.store.mark_worktree_removed(worktree_id).await?;
        Ok((done("row marked removed"), Detail::None))
    }

    /// Removes a worktree its owner no longer needs, or keeps it at risk.
    pub(super) async fn remove_worktree(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
        opts: RunOptions,
        claim: &Claim,
        intent: &mut Option<i64>,
    ) -> Applied {
        if !opts.force.is_on() && !opts.recheck_kept {
            if let Some(reused) = self.reuse_kept(wt, opts.pass).await {
                return Ok(reused);
            }
        }
        // Whatever this check finds replaces the last verdict.
        self.kept.forget(&wt.path);
        let checked_at = SystemTime::now();
        let git_before = {
            let (dir, kept, pass) = (wt.path.clone(), Arc::clone(&self.kept), opts.pass);
            blocking(move || {
                Ok(kept::git_state_with(&dir, &|common: &Path| {
                    kept.refs_stamp(common, pass)
                }))
            })
            .await?
        };
        if let Some(why) = self.recheck.worktree_claimed(action, wt).await? {
            return Ok(skipped(why));
        }
        let in_use = self.clear_worktree_of_agents(action, wt).await?;
        // A report (a pass asked for by name) and a force weigh every
        // reason; the interval's pass needs only whether there is one.
        let depth = if opts.force.is_on() || opts.recheck_kept {
            git::preflight::Depth::All
        } else {
            git::preflight::Depth::First
        };
        let verdict = {
            let (root, wt, precious) = (self.root.clone(), wt.clone(), self.precious.clone());
            let refs = Arc::clone(&self.refs);
            blocking_held(claim, move || {
                Ok(inspect(&root, &wt, &precious, depth, &refs))
            })
            .await?
        };
        let (reasons, pinned) = match verdict {
            Inspection::Refused(why) => return Ok((Outcome::Refused { why }, Detail::None)),
            Inspection::Gone => {
                if let Some(id) = &wt.row_id {
                    self.store.mark_worktree_removed(id).await?;
                }
                return Ok((done("directory already gone"), Detail::None));
            }
            Inspection::Reasons(mut r, pinned) => {
                r.extend(in_use);
                (r, pinned)
            }
        };
        let archive = !reasons.is_empty();
        let pinned = match pinned {
            Some(p)
                if !archive
                    || (opts.force.is_on() && reasons.iter().all(AtRisk::force_overrides)) =>
            {
                p
            }
            // Without a pinned directory there is always a reason nothing
            // overrides.
            _ => return self.keep_at_risk(wt, reasons, git_before, checked_at).await,
        };
        // The preflight may have taken a while: ask again right before
        // destroying anything.
        if let Some(why) = self.recheck.worktree_claimed(action, wt).await? {
            return Ok(skipped(why));
        }
        self.retire(action, wt, pinned, archive, reasons, claim, intent)
            .await
    }

    /// Keeps a worktree at risk: marks its row, and remembers the verdict
    /// with what it rests on, so that a later pass may reuse it while
    /// nothing changes.
    async fn keep_at_risk(
        &self,
        wt: &WorktreeTarget,
        reasons: Vec<AtRisk>,
        git_before: Option<u64>,
        checked_at: SystemTime,
    ) -> Applied {
        let changed = match &wt.row_id {
            Some(id) => self.store.mark_worktree_at_risk(id, &reasons).await?,
            // No row to compare with: the executor's memory of what it
            // recorded decides.
            None => true,
        };
        // What it costs to keep is measured once per verdict, with the
        // findings, and reused with the verdict.
        let (found, bytes) = {
            let (dir, r, kept) = (wt.path.clone(), reasons.clone(), Arc::clone(&self.kept));
            let covered = git_before.is_some();
            blocking(move || {
                let found = kept::findings(&dir, &r);
                let covered = covered && found.is_some();
                let bytes = kept.bytes(&dir, covered, || crate::act::trash::estimate_bytes(&dir));
                Ok((found, bytes))
            })
            .await?
        };
        let bytes = Some(bytes);
        let fingerprint = git_before
            .zip(found)
            .map(|(git, findings)| kept::Fingerprint { git, findings });
        self.kept
            .remember(&wt.path, fingerprint, &reasons, bytes, checked_at);
        Ok((
            Outcome::KeptAtRisk {
                reasons,
                unchanged: !changed,
            },
            Detail::Kept(Checked::new(checked_at, false, bytes)),
        ))
    }

    /// The destructive step of a removal, write-ahead: the intent, then
    /// [`archive_then_retire`] on the blocking pool, then the row and the
    /// opencode instance. A directory that changed while it was being
    /// removed is kept at risk (`changed_during_removal`) with no verdict
    /// remembered: the next pass judges it again.
    #[allow(clippy::too_many_arguments)]
    async fn retire(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
        pinned: crate::act::trash::Pinned,
        archive: bool,
        reasons: Vec<AtRisk>,
        claim: &Claim,
        intent: &mut Option<i64>,
    ) -> Applied {
        let now = SystemTime::now();
        self.audit
            .announce(
                action,
                intent::removal(&self.root, wt, &pinned, archive, now),
                intent,
            )
            .await?;
        let (root, target, precious) = (self.root.clone(), wt.clone(), self.precious.clone());
        let (outcome, mut removal) = blocking_held(claim, move || {
            Ok(archive_then_retire(
                &root, &target, &pinned, &precious, archive, &reasons, now,
            ))
        })
        .await?;
        if let Outcome::KeptAtRisk { reasons, .. } = &outcome {
            if let Some(id) = &wt.row_id {
                self.store.mark_worktree_at_risk(id, reasons).await?;
            }
        }
        if matches!(outcome, Outcome::Done { .. }) {
            if removal.trash.is_some() {
                self.reclaimer.wake();
            }
            crate::crash_point!("remove.before_row_update");
            if let Some(id) = &wt.row_id {
                self.store.mark_worktree_removed(id).await?;
            }
            removal.opencode_instance =
                dispose::after_removal(self.dispose.as_ref(), &self.root, wt).await;
        }
        Ok((outcome, Detail::Removed(removal)))
    }

    /// The last verdict on a kept worktree, when nothing it rests on has
    /// changed since: no preflight, no database call, no write.
    async fn reuse_kept(&self, wt: &WorktreeTarget, pass: u64) -> Option<(Outcome, Detail)> {
        let c = self.kept.candidate(&wt.path)?;
        let (dir, reasons, kept) = (wt.path.clone(), c.reasons.clone(), Arc::clone(&self.kept));
        let now = blocking(move || {
            Ok(kept::fingerprint_with(&dir, &reasons, &|common: &Path| {
                kept.refs_stamp(common, pass)
            }))
        })
        .await
        .ok()?;
        c.still(now).then(|| {
            (
                Outcome::KeptAtRisk {
                    reasons: c.reasons,
                    unchanged: true,
                },
                Detail::Kept(Checked::new(c.checked_at, true, c.bytes)),
            )
        })
    }

    /// Processes whose working directory is inside the worktree: labelled
    /// agents of chats that are not live are terminated first (as any
    /// agent); every other process keeps the worktree, as an `InUse`
    /// reason.
    async fn clear_worktree_of_agents(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
    ) -> Result<Vec<AtRisk>, ActError> {
        let dir = wt.path.clone();
        let users = blocking(move || Ok(processes::processes_in(&dir))).await?;
        let mut stopped_any = false;
        // processes.enabled = false: an agent is a process like any other.
        let agents = if self.terminate_agents {
            &users[..]
        } else {
            &[]
        };
        for (pid, command) in agents {
            let labels = self.processes.labels.clone();
            let pid = *pid;
            let Some(id) = blocking(move || Ok(processes::identity(pid, &labels))).await? else {
                continue;
            };
            let Some(chat) = id.chat_label else { continue };
            if self.recheck.chat_is_live(&chat).await? {
                continue;
            }
            tracing::info!(pid, command = %command, chat = %chat, worktree = %wt.path.display(),
                "stopping an agent of a chat that is not live before removing its worktree");
            let target = terminate::Agent {
                pid,
                start_time: id.start_time,
                chat_id: chat,
                recorded_by_row: None,
                tied_to: None,
            };
            self.processes.terminate_inside(action, &target).await?;
            stopped_any = true;
        }
        let remaining = if stopped_any {
            let dir = wt.path.clone();
            blocking(move || Ok(processes::processes_in(&dir))).await?
        } else {
            users
        };
        Ok(remaining
            .into_iter()
            .map(|(pid, command)| AtRisk::InUse { pid, command })
            .collect())
    }
}

impl WorktreeActor {
    /// What is there now of the worktree an interrupted removal's intent
    /// names: still in place, gone, and how many trash entries of it wait
    /// for reclaim.
    pub(in crate::act) fn found_after_removal(&self, detail: &serde_json::Value) -> String {
        let intent::PathIntent { path } = intent::read(detail);
        let Some(path) = path.map(std::path::PathBuf::from) else {
            return "no path recorded".into();
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let in_trash = crate::act::trash::list(&self.root)
            .map(|l| {
                l.entries
                    .iter()
                    .filter(|e| Some(&e.worktree_id) == name.as_ref())
                    .count()
            })
            .unwrap_or(0);
        let place = if path.symlink_metadata().is_ok() {
            format!("{} is still in place (judged again)", path.display())
        } else {
            format!("{} is gone", path.display())
        };
        match in_trash {
            0 => place,
            n => format!("{place}; {n} trash entr(ies) of it wait for reclaim"),
        }
    }
}
