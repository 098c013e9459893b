//! Nested repositories that are not work: a pristine clone (CMake's
//! FetchContent, a vendored checkout in an ignored build directory) that
//! its own remote-tracking refs fully cover and that holds nothing of its
//! own. Anything else in it keeps the worktree as `nested_repository`.

use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::git::cli::Git;
use crate::git::paths::join_rel;
use crate::git::scan::is_precious;
use crate::git::status::parse;

use super::operations;

/// Whether the nested repository at `rel` (in the worktree `dir`) is a
/// pristine clone: git's status there shows no change, no untracked file
/// and no precious ignored file; no operation is in progress; and every
/// commit its HEAD, branches, tags, stash and HEAD reflog reach, one of
/// its remote-tracking refs reaches too (a repository without any has
/// nothing that covers it). Any doubt (git cannot answer) is `false`.
pub(super) fn pristine_clone(git: &Git, dir: &Path, rel: &str, precious: &GlobSet) -> bool {
    let at: PathBuf = join_rel(dir, rel.as_bytes());
    let g = git.at(&at);
    let Ok(gitdir) = g.run(&["rev-parse", "--absolute-git-dir"]) else {
        return false;
    };
    if !operations(Path::new(gitdir.stdout_str().trim())).is_empty() {
        return false;
    }
    let status = g.run(&[
        "status",
        "--porcelain=v2",
        "-z",
        "--untracked-files=all",
        // Traditional with all untracked files: every ignored file by
        // name, so that a precious one inside an ignored directory shows.
        "--ignored=traditional",
        "--ignore-submodules=none",
    ]);
    let Ok(status) = status.map(|o| parse(&o.stdout)) else {
        return false;
    };
    let Ok(s) = status else { return false };
    if !(s.staged.is_empty()
        && s.unstaged.is_empty()
        && s.untracked.is_empty()
        && s.conflicts.is_empty()
        && s.submodules.is_empty())
        || s.ignored.iter().any(|p| is_precious(precious, p))
    {
        return false;
    }
    let covered = g.run(&["for-each-ref", "--count=1", "--format=x", "refs/remotes/"]);
    if !matches!(&covered, Ok(o) if !o.stdout.is_empty()) {
        return false;
    }
    let own = g.run_status(
        &[
            "rev-list",
            "--max-count=1",
            "HEAD",
            "--branches",
            "--tags",
            "--glob=refs/stash",
            "--reflog",
            "--not",
            "--remotes",
        ],
        &[],
    );
    matches!(own, Ok((st, o)) if st.success() && o.stdout.is_empty())
}
