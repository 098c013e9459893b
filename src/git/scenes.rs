//! States of a worktree that the tests of more than one git module build
//! on a [`Fixture`]: written once, so that each test states only what it
//! does differently.

use std::fs;
use std::path::Path;

use super::testutil::{write, Fixture};

/// A repository of its own at `dir` (made if need be), with no commit: a
/// nested repository inside a worktree, a standalone one, a submodule's
/// upstream.
pub fn init_repo(f: &Fixture, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    f.git(dir, &["init", "-q"]);
}

/// Writes `content` to `file` below `dir` and commits everything there as
/// `msg`; the commit.
pub fn commit_file(f: &Fixture, dir: &Path, file: &str, content: &str, msg: &str) -> String {
    write(&dir.join(file), content);
    f.commit_all(dir, msg)
}

/// Worktree `wt` (branch `b`) stopped in a merge of `main` that conflicts
/// on `README`: "ours" committed on `b`, "theirs" on `main`.
pub fn conflicted_merge(f: &Fixture, wt: &Path) {
    commit_file(f, wt, "README", "ours\n", "ours");
    commit_file(f, &f.repo, "README", "theirs\n", "theirs");
    assert!(!f.try_git(wt, &["merge", "main"]).status.success());
}

/// A commit of `a.txt` on worktree `wt`'s branch `b`, which is then
/// deleted under it; the commit, now on no branch.
pub fn commit_on_a_deleted_branch(f: &Fixture, wt: &Path) -> String {
    let c = commit_file(f, wt, "a.txt", "a\n", "a");
    f.git(&f.repo, &["update-ref", "-d", "refs/heads/b"]);
    c
}
