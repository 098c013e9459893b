//! The preflight: every reason removing a worktree would lose work.
//!
//! **Git's own view is the authority** (DESIGN rule 8). What `git status`
//! shows the worktree's owner is what counts as work; the preflight asks
//! the git CLI itself ([`super::cli`]: as the owner, hooks and fsmonitor
//! off, bounded) and adds checks of its own for what git does not report.
//! An added check can only keep a worktree, never clear one that git says
//! holds work. libgit2 decides nothing here: where it diverges from git
//! (whitespace in ignore rules, a `.GIT` directory, a symlinked
//! `.gitignore`, sha256 or reftable repositories, split or sparse indexes,
//! clean filters) it would decide wrongly.
//!
//! What counts as work, and the choices made where git leaves room:
//!
//! * **Identity first.** The directory judged is exactly the directory that
//!   would be deleted: its `.git` file names an admin entry whose `gitdir`
//!   names this very `.git` file back (same inode), git agrees on the top
//!   level and both git directories, and the main repository is the row's
//!   `repo_path`. A copy (`cp -a`) of a worktree, a moved worktree whose
//!   admin entry still names its old place, or a worktree of another
//!   repository is `not_a_worktree`: kept, and `--force` does not override.
//! * **Files**, from `git status --porcelain=v2 -z --untracked-files=all
//!   --ignored=matching --ignore-submodules=none` (the command line
//!   overrides `status.showUntrackedFiles=no` and a submodule's `ignore`
//!   setting): staged, unstaged, untracked, conflicted; and ignored files
//!   matching a `precious` glob (by relative path or by file name, so
//!   `.env` matches `sub/.env`; everything inside an ignored directory that
//!   itself matches). Other ignored files (`target/`, `node_modules/`) are
//!   build output, not work. A directory git says it could not open is
//!   `unreadable`.
//! * **The controller's own walk** of the whole directory (no symlink
//!   followed) finds what git does not report: nested repositories
//!   anywhere — in tracked directories too — that are not submodules, and
//!   entries that cannot be read (`unreadable`; never chmod'ed to get at
//!   them).
//! * **Hidden changes**: index entries marked assume-unchanged or
//!   skip-worktree (`git ls-files -v`) are compared by hand: mode, and the
//!   file's `git hash-object` against the index's object. A skip-worktree
//!   entry whose file is absent is sparse checkout, not a change; an absent
//!   assume-unchanged file loses nothing (its content is in the index).
//! * **Commits**: the tips are HEAD and the worktree's own branch (HEAD's
//!   branch, or the row's `branch` when HEAD is detached). A commit is lost
//!   when no other ref reaches it (`git rev-list <tips> --not --glob=refs/*`
//!   less the own branch and the per-worktree refs `refs/worktree/*`,
//!   `refs/bisect/*`, `refs/rewritten/*`, which vanish with the worktree).
//!   **Other worktrees' HEADs are not counted**: a detached HEAD is
//!   transient, and two worktrees detached on the same commit and removed
//!   in one pass would each rely on the other.
//! * **Merged elsewhere**: with a base (the row's `base_ref`, else the main
//!   repository's HEAD branch and each remote's default branch), a lost
//!   commit is not at risk when the base holds it in another shape: by
//!   `git cherry` (rebase-merge, cherry-pick), or when the whole
//!   `merge-base..tip` diff has the patch id of one commit of the base
//!   (squash-merge). A lost merge commit is work unless it is a clean merge
//!   of its two parents (`git merge-tree` gives its tree): an "evil" merge
//!   holds a resolution.
//! * **Commits only the HEAD reflog or `refs/worktree/*` reach** are not a
//!   reason to keep a worktree (an amended commit would be a false alarm
//!   on every worktree), but they are not dropped either: the removal keeps
//!   them under an archive ref ([`unreferenced_history`]).
//! * **Branch deleted**: HEAD names a branch that does not exist, and there
//!   is evidence it had commits (a HEAD reflog entry, or the row's `branch`
//!   is that branch); the newest commit of the HEAD reflog then stands for
//!   HEAD in the commit check, and staged means "differs from it".
//! * **Operations**: merge, rebase (also stopped on a clean tree), am,
//!   cherry-pick, revert (also a stopped sequence) and bisect, read from the
//!   worktree's own git directory; `git worktree lock`.
//! * **Submodules** are judged like the worktree, recursively
//!   ([`submodule`]): git's status says which have new commits, modified or
//!   untracked content; the controller adds, inside each, git's own status
//!   (with the paths), precious ignored files, nested repositories,
//!   unreadable entries, hidden index changes, operations in progress and —
//!   when the submodule's git directory goes away with the worktree —
//!   commits of its HEAD, branches, tags and stash entries that neither its
//!   remote-tracking refs nor the superproject's recorded commit reach. One
//!   reason per submodule, naming its path.
//! * **Not a worktree**: a non-empty directory with no `.git`, a standalone
//!   repository, a `.git` file whose admin entry is gone. A directory that
//!   does not exist, or is empty, has nothing to lose.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use globset::GlobSet;

use super::paths::{common_dir_of_admin, dot_git, DotGit};
use super::refs::RefsCache;
use crate::risk::AtRisk;

mod commits;
mod hidden;
mod identity;
mod listing;
mod nested;
mod operations;
mod submodule;
mod walk;

pub use commits::unreferenced_history;
use commits::*;
use hidden::*;
use identity::*;
use listing::*;
pub(crate) use listing::{git_status, index_entries};
use operations::*;
use submodule::*;
pub(crate) use walk::walk;
use walk::*;

/// Why a step of the preflight could not finish: the commit check, the
/// hidden index changes, a submodule's own commits, and the commits only
/// the worktree's reflog reaches that a removal keeps. Typed so that a
/// caller can tell git failing from what the repository holds, and git's
/// or the system's error stays with it as its source; the preflight
/// itself turns each into a reason ([`AtRisk::PreflightFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Git(#[from] super::cli::GitCliError),
    #[error("detached HEAD without a commit")]
    DetachedWithoutCommit,
    /// Git refuses to show HEAD's reflog (its branch is gone) and the
    /// file it keeps cannot be read either.
    #[error("HEAD has a reflog git will not show, and: {source}")]
    HeadReflog {
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// The file of an assume-unchanged or skip-worktree entry, which
    /// git's status does not look at, could not be looked at either.
    #[error("{path}: {source}")]
    HiddenFile { path: String, source: io::Error },
    /// The repository's surviving refs could not be listed
    /// ([`RefsCache::survivors`], whose failures are text).
    #[error("{0}")]
    Refs(String),
    /// A submodule's stash reflog could not be read (`stale::reflog`,
    /// whose failures are text).
    #[error("{0}")]
    Reflog(String),
}

/// What the preflight needs to know about one worktree.
pub struct Preflight<'a> {
    /// The worktree directory (already confined to the root by the caller).
    pub worktree: &'a Path,
    /// The branch recorded in the `worktrees` row, if any.
    pub branch: Option<&'a str>,
    /// The ref the worktree was created from (`worktrees.base_ref`), if any.
    pub base_ref: Option<&'a str>,
    /// The main repository the row names (`worktrees.repo_path`); `None`
    /// for a directory no row names.
    pub repo_path: Option<&'a Path>,
    /// Ignored files matching these globs are work (`.env`).
    pub precious: &'a GlobSet,
    /// The bound on each git command.
    pub timeout: Duration,
    /// Every reason, or only whether there is one.
    pub depth: Depth,
    /// The repository's surviving refs, listed once and shared by the
    /// preflights of its worktrees; `None` asks `git rev-list` every time.
    pub refs: Option<&'a RefsCache>,
}

/// How much of the preflight a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every reason: what a report shows, and what `--force` must weigh
    /// (some reasons it does not override).
    All,
    /// Whether anything is at risk: the checks stop after the first that
    /// finds a reason, cheapest first. An empty answer is exactly as
    /// thorough as [`Depth::All`]'s; a non-empty one may name fewer
    /// reasons.
    First,
}

/// Where one preflight's time went.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub total: Duration,
    /// Each git command it ran: the subcommand and how long it took.
    pub git: Vec<(String, Duration)>,
}

impl Cost {
    /// The time in git commands named `name`.
    pub fn in_git(&self, name: &str) -> Duration {
        self.git
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .sum()
    }

    /// The time in every git command.
    pub fn all_git(&self) -> Duration {
        self.git.iter().map(|(_, d)| *d).sum()
    }
}

/// Every reason removing the worktree would lose work; empty means safe.
/// Never returns an error: a check that cannot finish is itself a reason
/// ([`AtRisk::PreflightFailed`]), so that doubt always keeps the worktree.
pub fn preflight(p: &Preflight<'_>) -> Vec<AtRisk> {
    let (reasons, cost) = preflight_costed(p);
    tracing::debug!(
        worktree = %p.worktree.display(),
        total_ms = cost.total.as_secs_f64() * 1e3,
        git_ms = cost.all_git().as_secs_f64() * 1e3,
        git_commands = cost.git.len(),
        reasons = reasons.len(),
        "preflight"
    );
    reasons
}

/// [`preflight`], and where its time went.
pub fn preflight_costed(p: &Preflight<'_>) -> (Vec<AtRisk>, Cost) {
    let t = std::time::Instant::now();
    let (out, git) = super::cli::spent::measured(|| {
        let mut out = Vec::new();
        inspect(p, &mut out);
        out
    });
    let cost = Cost {
        total: t.elapsed(),
        git,
    };
    (out, cost)
}

const MAX_SUBMODULE_DEPTH: usize = 4;

fn failed(out: &mut Vec<AtRisk>, check: &str, e: impl std::fmt::Display) {
    out.push(AtRisk::PreflightFailed {
        error: format!("{check}: {e}"),
    });
}

fn not_a_worktree(out: &mut Vec<AtRisk>, detail: String) {
    out.push(AtRisk::NotAWorktree { detail });
}

fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// `(device, inode)`: what makes two spellings one file.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((file_id(a), file_id(b)), (Some(x), Some(y)) if x == y)
}

/// A symlink where the repository of the worktree `dir` keeps its state,
/// found from the `.git` file alone (git itself may no longer make sense
/// of a repository laid out that way); `None` for anything else, which
/// [`identify`] judges.
fn unsafe_repository(dir: &Path) -> Option<String> {
    let DotGit::File { gitdir } = dot_git(dir) else {
        return None;
    };
    let common = common_dir_of_admin(&gitdir)?;
    super::links::unsafe_links(&common, Some(&gitdir))
}

fn inspect(p: &Preflight<'_>, out: &mut Vec<AtRisk>) {
    // Checked before anything else, git included: nothing is acted on
    // through such a repository, whatever else it holds.
    if let Some(detail) = unsafe_repository(p.worktree) {
        out.push(AtRisk::UnsafeRepository { detail });
        return;
    }
    let Some(Linked { admin, common, git }) = identify(p, out) else {
        return;
    };
    // Under `Depth::First`, whether to stop: something was found.
    let done = |out: &Vec<AtRisk>| p.depth == Depth::First && !out.is_empty();
    let dir = p.worktree;
    locked(&admin, out);
    for op in operations(&admin) {
        out.push(AtRisk::OperationInProgress { operation: op });
    }
    if done(out) {
        return;
    }
    let status = status_of(&git, out);
    let mut subs = submodules_in_status(status.as_ref());
    if p.depth == Depth::First {
        if let Some(s) = &status {
            what_status_says(s, out);
        }
        push_submodules(std::mem::take(&mut subs), out);
        if done(out) {
            return;
        }
    }
    let stand_in = match &status {
        Some(s) => match commits(p, &git, &admin, &common, s, out) {
            Ok(h) => h,
            Err(e) => {
                failed(out, "commits", e);
                None
            }
        },
        None => None,
    };
    if done(out) {
        return;
    }
    let index = index_of(&git, out);
    let gitlinks = gitlinks_of(index.as_deref());
    if let Some(s) = &status {
        let staged = staged_of(&git, s, stand_in.as_deref(), out);
        let mut walked = walk(dir, s, &gitlinks, p.precious);
        // A pristine clone (its remote covers every commit, nothing of its
        // own in it) is not work, wherever the walk found it.
        walked
            .nested
            .retain(|rel| !nested::pristine_clone(&git, dir, rel, p.precious));
        push_files(s, staged, &walked, out);
    }
    if done(out) {
        return;
    }
    if let Some(index) = &index {
        push_hidden_changes(&git, dir, index, out);
        if done(out) {
            return;
        }
        let sp = Superproject {
            worktree: dir,
            admin: &admin,
            precious: p.precious,
        };
        check_submodules(&git, &sp, index, &mut subs);
    }
    push_submodules(subs, out);
}

#[cfg(test)]
mod tests;
