//! Why a worktree is kept: every state that removing it would destroy.
//!
//! The preflight ([`crate::git::preflight`]) produces these; the store keeps
//! them as JSON in `worktrees.at_risk_reasons`; status and reports print
//! them. Each variant carries enough detail for an operator to find the work
//! without opening the worktree.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Paths are listed up to this many; the count says how many there were.
pub const SAMPLE: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AtRisk {
    /// Changes in the index that are not committed.
    Staged { count: usize, paths: Vec<String> },
    /// Tracked files whose content differs from the index.
    Unstaged { count: usize, paths: Vec<String> },
    /// Untracked files that no ignore rule covers.
    Untracked { count: usize, paths: Vec<String> },
    /// Unmerged index entries.
    Conflicts { count: usize, paths: Vec<String> },
    /// Commits of HEAD or the worktree's branch that no other ref reaches
    /// and that have no patch-equivalent commit in the base ref.
    UnmergedCommits {
        count: usize,
        head: String,
        commits: Vec<String>,
    },
    /// A merge, rebase, cherry-pick, revert or bisect in progress.
    OperationInProgress { operation: String },
    /// `git worktree lock` was run on it.
    Locked { reason: Option<String> },
    /// A submodule with its own uncommitted changes or unpushed commits.
    Submodule { path: String, detail: String },
    /// A git repository inside the worktree that is not a submodule.
    NestedRepository { path: String },
    /// Index entries marked assume-unchanged or skip-worktree whose file
    /// differs from the index: git status does not show them.
    HiddenChanges { count: usize, paths: Vec<String> },
    /// The branch the worktree's HEAD names no longer exists.
    BranchDeleted { branch: String },
    /// Ignored files that match a `worktrees.precious` glob (`.env`).
    PreciousIgnored { count: usize, paths: Vec<String> },
    /// A directory that is not a valid worktree and is not empty.
    NotAWorktree { detail: String },
    /// A mount point inside the directory: removal would cross into
    /// another file system.
    MountPoint { path: String },
    /// A process whose working directory is inside the worktree.
    InUse { pid: i32, command: String },
    /// Entries the preflight (or git, as the worktree's owner) could not
    /// read: what they hold is unknown, so the worktree is kept. Never
    /// chmod'ed to get at them; `--force` does not override (an archive
    /// could not hold them either).
    Unreadable { count: usize, paths: Vec<String> },
    /// The preflight itself could not finish; without a verdict the
    /// worktree is kept.
    PreflightFailed { error: String },
    /// A symlink where git keeps the repository's own state (`objects`,
    /// `refs`, `logs`, `packed-refs`, an admin entry): every write to the
    /// repository would land wherever it leads ([`crate::git::links`]).
    /// `--force` does not override: nothing is acted on through it.
    UnsafeRepository { detail: String },
    /// The directory at the worktree's path stopped being the one the
    /// preflight judged (another directory renamed into its place, or it
    /// was moved away) before it was retired; whatever was moved is put
    /// back, and the next pass judges again.
    ChangedDuringRemoval { detail: String },
}

impl AtRisk {
    /// Whether `force` may override this reason (after archiving). A mount
    /// point or a process in the directory is not work to preserve: removal
    /// would be wrong, not just lossy. A directory that is not a worktree
    /// has no repository to archive into. A failed preflight gives no
    /// verdict to override, nor does a directory changed while it was
    /// being removed (what was judged is not what is there). Force
    /// overrides none of these.
    pub fn force_overrides(&self) -> bool {
        !matches!(
            self,
            AtRisk::MountPoint { .. }
                | AtRisk::InUse { .. }
                | AtRisk::PreflightFailed { .. }
                | AtRisk::NotAWorktree { .. }
                | AtRisk::Unreadable { .. }
                | AtRisk::UnsafeRepository { .. }
                | AtRisk::ChangedDuringRemoval { .. }
        )
    }

    /// A short stable name for metrics and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            AtRisk::Staged { .. } => "staged",
            AtRisk::Unstaged { .. } => "unstaged",
            AtRisk::Untracked { .. } => "untracked",
            AtRisk::Conflicts { .. } => "conflicts",
            AtRisk::UnmergedCommits { .. } => "unmerged_commits",
            AtRisk::OperationInProgress { .. } => "operation_in_progress",
            AtRisk::Locked { .. } => "locked",
            AtRisk::Submodule { .. } => "submodule",
            AtRisk::NestedRepository { .. } => "nested_repository",
            AtRisk::HiddenChanges { .. } => "hidden_changes",
            AtRisk::BranchDeleted { .. } => "branch_deleted",
            AtRisk::PreciousIgnored { .. } => "precious_ignored",
            AtRisk::NotAWorktree { .. } => "not_a_worktree",
            AtRisk::MountPoint { .. } => "mount_point",
            AtRisk::InUse { .. } => "in_use",
            AtRisk::Unreadable { .. } => "unreadable",
            AtRisk::PreflightFailed { .. } => "preflight_failed",
            AtRisk::UnsafeRepository { .. } => "unsafe_repository",
            AtRisk::ChangedDuringRemoval { .. } => "changed_during_removal",
        }
    }
}

fn paths(f: &mut fmt::Formatter<'_>, what: &str, count: usize, paths: &[String]) -> fmt::Result {
    write!(f, "{count} {what}: {}", paths.join(", "))?;
    if count > paths.len() {
        write!(f, ", … ({} more)", count - paths.len())?;
    }
    Ok(())
}

impl fmt::Display for AtRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtRisk::Staged { count, paths: p } => paths(f, "staged change(s)", *count, p),
            AtRisk::Unstaged { count, paths: p } => paths(f, "unstaged change(s)", *count, p),
            AtRisk::Untracked { count, paths: p } => paths(f, "untracked file(s)", *count, p),
            AtRisk::Conflicts { count, paths: p } => paths(f, "conflicted path(s)", *count, p),
            AtRisk::UnmergedCommits {
                count,
                head,
                commits,
            } => write!(
                f,
                "{count} commit(s) reachable from no other ref (HEAD {head}): {}",
                commits.join(", ")
            ),
            AtRisk::OperationInProgress { operation } => write!(f, "{operation} in progress"),
            AtRisk::Locked { reason: Some(r) } => write!(f, "worktree locked: {r}"),
            AtRisk::Locked { reason: None } => write!(f, "worktree locked"),
            AtRisk::Submodule { path, detail } => write!(f, "submodule {path}: {detail}"),
            AtRisk::NestedRepository { path } => write!(f, "nested repository at {path}"),
            AtRisk::HiddenChanges { count, paths: p } => paths(
                f,
                "assume-unchanged/skip-worktree file(s) that differ",
                *count,
                p,
            ),
            AtRisk::BranchDeleted { branch } => write!(f, "branch {branch} was deleted"),
            AtRisk::PreciousIgnored { count, paths: p } => {
                paths(f, "precious ignored file(s)", *count, p)
            }
            AtRisk::NotAWorktree { detail } => write!(f, "not a git worktree: {detail}"),
            AtRisk::MountPoint { path } => write!(f, "mount point inside: {path}"),
            AtRisk::InUse { pid, command } => write!(f, "in use by pid {pid} ({command})"),
            AtRisk::Unreadable { count, paths: p } => paths(f, "unreadable entr(y/ies)", *count, p),
            AtRisk::PreflightFailed { error } => write!(f, "preflight failed: {error}"),
            AtRisk::UnsafeRepository { detail } => write!(
                f,
                "unsafe repository: {detail}; replace the link by what git keeps there, or remove the worktree by hand"
            ),
            AtRisk::ChangedDuringRemoval { detail } => {
                write!(f, "changed while it was being removed: {detail}")
            }
        }
    }
}

/// Builds a path-list variant's `(count, sample)` from every path found.
pub fn sample(mut all: Vec<String>) -> (usize, Vec<String>) {
    all.sort();
    all.dedup();
    let count = all.len();
    all.truncate(SAMPLE);
    (count, all)
}
