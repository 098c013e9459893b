//! States of a worktree that the tests of more than one git module build
//! on a [`Fixture`]: written once, so that each test states only what it
//! does differently.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
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

#[derive(Debug, PartialEq, Eq)]
/// A file or a symlink, as [`files`] reads it.
pub enum Node {
    File { bytes: Vec<u8>, exec: bool },
    Symlink(Vec<u8>),
}

/// Every file and symlink below `dir` with its bytes and executable bit,
/// or its target, read without the controller's code; except `.git`
/// entries (a worktree's, a nested repository's) and the paths `skip`
/// names (top-level entries). A directory is not content: git tracks
/// none, and an empty one holds nothing to lose.
pub fn files(dir: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            e.file_name() != ".git" && !skip.iter().any(|s| rel == Path::new(s))
        });
    for e in walk {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = e.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(e.path()).unwrap();
            out.insert(rel, Node::Symlink(t.as_os_str().as_bytes().to_vec()));
        } else if ft.is_file() {
            let m = fs::metadata(e.path()).unwrap();
            out.insert(
                rel,
                Node::File {
                    bytes: fs::read(e.path()).unwrap(),
                    exec: m.permissions().mode() & 0o100 != 0,
                },
            );
        }
    }
    out
}
