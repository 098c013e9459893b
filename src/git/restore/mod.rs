//! Bringing a force-archived worktree back ([`super::archive`] wrote it):
//! a new linked worktree with HEAD, the index, the working tree and the
//! untracked and precious files exactly as archived. What an archive is
//! made of is read by [`super::archive::list`], which lists the archives
//! too; the restore builds on that reading.
//!
//! Everything is done by the git CLI, as the main repository's owner
//! ([`super::cli`]): `git worktree add --no-checkout --detach` at the
//! archive's HEAD commit `H`, then each part checked out from its tree
//! through a scratch index (`git read-tree` + `git checkout-index`, which
//! write modes and symlinks as git does): the working tree `W`, then the
//! untracked part `U`; then the index is set to `I`'s tree and refreshed,
//! and HEAD put on its branch when it can be. Last, each nested repository
//! whose commits the archive kept is made again at the path the archive
//! recorded ([`super::archive::records`]): `git init` there, its kept
//! refs fetched from the main repository (`--no-tags --update-head-ok`)
//! to where they were (branches to `refs/heads/*`, tags, notes and every
//! other kept ref to its own name), the commits only a reflog reached
//! put back in HEAD's reflog and the stash entries in their order
//! (`refs/stash` and its reflog, oldest first), HEAD on the one branch at
//! the kept HEAD (detached at the kept HEAD when no branch or several
//! point there), its index set to HEAD's tree (`git read-tree HEAD`,
//! which leaves the files `U` brought back alone) and refreshed. A clean
//! submodule's files are not in `U`; they are checked out from its HEAD
//! into its (empty) directory.
//!
//! # Guarantees
//!
//! 1. **Never over anything.** The target must not exist or be an empty
//!    directory; git itself refuses to add a worktree over a non-empty one.
//!    A nested repository is made only in a directory (reached through
//!    directories, no symlink) that has no `.git`; otherwise it is skipped
//!    and [`Restored::nested`] says why.
//!    Tests: `a_non_empty_target_is_refused_and_left_alone`,
//!    `nested_repositories_without_a_recorded_path_are_reported_not_placed`.
//! 2. **Never moves a branch, never deletes the archive.** HEAD goes on the
//!    archived branch only when that branch still points at `H` and no
//!    other worktree has it checked out; otherwise it stays detached at
//!    `H`, and [`Restored::head`] says which. An unborn HEAD goes back on
//!    its branch, unborn, when no branch of that name exists and no other
//!    worktree is on it; otherwise it stays detached at the empty stand-in.
//!    No ref of the main repository is written or deleted: the nested
//!    repositories' commits are fetched from it.
//!    Tests: `a_restored_worktree_is_the_archived_one_byte_for_byte`,
//!    `an_unborn_head_comes_back_unborn_on_its_branch`,
//!    `nested_repositories_come_back_with_their_commits_and_branches`.
//! 3. **Byte for byte.** Every file of `W` and `U` comes back with its
//!    content, executable bit or symlink target, and the index holds `I`'s
//!    entries; a nested repository or submodule comes back with every ref
//!    the archive kept: branches, tags, notes, any other ref but the
//!    remote-tracking ones, its stash entries in order, and the commits
//!    only a reflog reached (in HEAD's reflog). Tests: as for 2, and
//!    `every_ref_of_a_nested_repository_and_a_submodule_survives_gc_and_comes_back`.
//! 4. **Never inside a git directory.** A target inside a `.git`
//!    directory, a bare repository, a linked worktree's admin entry or a
//!    submodule's directory under `.git/modules` (as written or as the
//!    kernel resolves it) is refused before anything is written.
//!    Test: `a_target_inside_a_git_directory_is_refused_and_nothing_written`.
//! 5. **Modes git does not keep come back exactly, never wider.** The
//!    permission bits the archive recorded ([`super::archive::modes`]: a
//!    `600` file, a `700` directory) are set again once everything else
//!    is back, through handles and as the owner; until then the new
//!    worktree's directory is `700`, so nothing is readable by others on
//!    its way back. Test: `modes_git_does_not_keep_come_back_exactly`.
//!
//! Not restored: empty directories (git tracks none, and they hold
//! nothing), index flags (assume-unchanged, skip-worktree), an
//! operation in progress (its state files are not archived); of a nested
//! repository or submodule: its index (set to HEAD's tree, so what it
//! had staged shows as changed files; content staged and then changed
//! again on disk is not archived), its remotes and remote-tracking refs,
//! its configuration, the reflog messages of its branches (a commit only
//! a reflog reached comes back in HEAD's reflog), and a submodule's link
//! to its `.git/modules` directory (it comes back as a repository of its
//! own, at the commit the worktree records). A nested repository whose
//! every commit a remote-tracking ref reaches is not kept (its remote
//! holds it; its files are in `U`): it comes back as plain files. The
//! kept commits of a nested repository whose path the archive does not
//! record (made before paths were) stay under `<ref>-nested/<n>` in the
//! main repository, and [`Restored::nested`] lists them as not placed.

mod nested;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::archive::list::{parts, ArchiveReadError, Parts};
use super::archive::modes::{self, ModeError};
use super::archive::records::ModeRecord;
use super::cli::{Git, GitCliError};
use nested::restore_nested;
pub use nested::NestedRestored;

/// Why a restore, or the placing of one nested repository in it, did not
/// happen. Typed so that a caller can tell a refusal (nothing written:
/// the target is taken, or inside a git directory) from a failure on the
/// way, and a nested repository left alone from one that could not be
/// filled; git's, the system's and the archive reading's own errors stay
/// with it as its source.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the target {to} is inside the git directory {git_dir}, where git keeps a \
         repository's own state: restore elsewhere (--to a path outside {git_dir})"
    )]
    InsideGitDir { to: PathBuf, git_dir: PathBuf },
    #[error("{to} is not empty: a restore writes only into a new or empty directory")]
    NotEmpty { to: PathBuf },
    #[error("{to} exists and is not a directory")]
    NotADirectory { to: PathBuf },
    /// `what`: `target` or `nested`.
    #[error("the {what} path is not UTF-8")]
    NotUtf8 { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Read(#[from] ArchiveReadError),
    #[error(transparent)]
    Git(#[from] GitCliError),
    /// A git command of a named step of the restore failed.
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: GitCliError,
    },
    #[error("{path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Modes(#[from] ModeError),
    /// The new worktree's directory could not be closed to others before
    /// anything was checked out into it.
    #[error("cannot close {to} while restoring: {source}")]
    Close { to: PathBuf, source: ModeError },
    #[error("the recorded path is not a plain relative path")]
    NestedNotPlain,
    #[error("the recorded path is empty")]
    NestedEmpty,
    #[error("{path} is not a directory after the files came back")]
    NestedNotADirectory { path: PathBuf },
    #[error("{path} does not exist after the files came back")]
    NestedMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Never made over what is there.
    #[error("{path} already has a .git: left as it is")]
    NestedHasGit { path: PathBuf },
}

/// What a restore made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub path: PathBuf,
    /// `refs/heads/<branch>` when HEAD is on its branch again, else
    /// `detached at <commit>` and why.
    pub head: String,
    /// HEAD is on its branch again, and that branch has no commit yet, as
    /// when archived.
    pub unborn: bool,
    /// The archive's HEAD part (for an unborn HEAD, its empty stand-in).
    pub commit: String,
    /// What became of each nested repository whose commits the archive
    /// kept, in path order (those whose path was not recorded last).
    pub nested: Vec<NestedRestored>,
    /// Each recorded file or directory whose permission bits could not be
    /// set again (`<path>: <why>`); empty when all were.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modes_not_set: Vec<String>,
}

/// Recreates the archived worktree of `reference` at `to` (see the
/// module's guarantees). `main` is the main repository's working directory
/// (or its git directory when bare).
pub fn restore(
    main: &Path,
    reference: &str,
    to: &Path,
    timeout: Duration,
) -> Result<Restored, RestoreError> {
    refuse_git_dir(to)?;
    refuse_anything_at(to)?;
    let git = Git::for_dir(main, timeout)?;
    let p = parts(&git, reference)?;
    let to_s = to.to_str().ok_or_else(|| RestoreError::NotUtf8 {
        what: "target",
        path: to.to_path_buf(),
    })?;
    git.run(&[
        "worktree",
        "add",
        "--no-checkout",
        "--detach",
        to_s,
        &p.head,
    ])?;
    let wt = Git::for_dir(to, timeout)?;
    // Closed to everyone but the owner until the recorded modes are set:
    // a secret is never readable by others on its way back.
    let made = fs::symlink_metadata(to)
        .map_err(|source| RestoreError::Stat {
            path: to.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    let closed = ModeRecord {
        path: Vec::new(),
        mode: 0o700,
        dir: true,
    };
    if let Some((_, why)) = modes::apply(to, &[closed], wt.run_as())?.into_iter().next() {
        return Err(RestoreError::Close {
            to: to.to_path_buf(),
            source: why,
        });
    }
    check_out_files(&wt, &p)?;
    set_index(&wt, &p)?;
    let (head, unborn) = match &p.records.unborn {
        Some(branch) => attach_unborn(&git, &wt, &p, branch)?,
        None => (attach(&git, &wt, &p)?, false),
    };
    let nested = restore_nested(&git, &wt, to, reference, &p.records)?;
    let modes_not_set = set_modes(to, &p.records.modes, made, &wt)?;
    Ok(Restored {
        path: to.to_path_buf(),
        head,
        unborn,
        commit: p.head,
        nested,
        modes_not_set,
    })
}

/// Sets the permission bits the archive recorded; the worktree's own
/// directory, when none is recorded for it, gets back the bits it was made
/// with. Returns each path whose bits could not be set, and why.
fn set_modes(
    to: &Path,
    recorded: &[ModeRecord],
    made: u32,
    wt: &Git,
) -> Result<Vec<String>, RestoreError> {
    let mut all = recorded.to_vec();
    if !all.iter().any(|m| m.path.is_empty()) {
        all.push(ModeRecord {
            path: Vec::new(),
            mode: made,
            dir: true,
        });
    }
    let failed = modes::apply(to, &all, wt.run_as())?;
    for (path, why) in &failed {
        tracing::warn!(path = %path, "permission bits not restored: {why}");
    }
    Ok(failed
        .into_iter()
        .map(|(path, why)| format!("{path}: {why}"))
        .collect())
}

/// Guarantee 1: a restore writes only into a new or an empty directory.
fn refuse_anything_at(to: &Path) -> Result<(), RestoreError> {
    if let Ok(mut entries) = fs::read_dir(to) {
        if entries.next().is_some() {
            return Err(RestoreError::NotEmpty {
                to: to.to_path_buf(),
            });
        }
    } else if fs::symlink_metadata(to).is_ok() {
        return Err(RestoreError::NotADirectory {
            to: to.to_path_buf(),
        });
    }
    Ok(())
}

/// Whether `dir` is where git keeps a repository's state: a `.git`
/// directory, a bare repository, a submodule's directory under
/// `.git/modules`, a linked worktree's admin entry.
fn is_git_dir(dir: &Path) -> bool {
    let file = |n: &str| fs::metadata(dir.join(n)).is_ok_and(|m| m.is_file());
    let dir_ = |n: &str| fs::metadata(dir.join(n)).is_ok_and(|m| m.is_dir());
    file("HEAD") && ((dir_("objects") && dir_("refs")) || file("commondir"))
}

/// Guarantee 4: never inside a git directory, as written or as the kernel
/// resolves it.
fn refuse_git_dir(to: &Path) -> Result<(), RestoreError> {
    let spellings = [
        crate::root::normalize_lexically(to),
        crate::root::resolve_existing(to),
    ];
    for spelled in &spellings {
        for at in spelled.ancestors() {
            if at.file_name() == Some(OsStr::new(".git")) || is_git_dir(at) {
                return Err(RestoreError::InsideGitDir {
                    to: to.to_path_buf(),
                    git_dir: at.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// The working tree `W`, then the untracked part `U`, each checked out
/// from its tree through a scratch index, so that git writes modes and
/// symlinks as it does.
fn check_out_files(wt: &Git, p: &Parts) -> Result<(), RestoreError> {
    // The scratch indexes live in the new worktree's own git directory:
    // the owner git runs as can write there.
    let admin = wt.run(&["rev-parse", "--absolute-git-dir"])?.stdout_str();
    let admin = PathBuf::from(admin.trim());
    let mut trees = vec![("restoring the working tree", p.worktree.as_str())];
    if let Some(u) = &p.untracked {
        trees.push(("restoring the untracked files", u));
    }
    for (n, (doing, commit)) in trees.into_iter().enumerate() {
        let index = admin.join(format!("boo-restore-index{n}"));
        let g = wt.with_index(&index);
        let done = g
            .run(&["read-tree", &format!("{commit}^{{tree}}")])
            .and_then(|_| g.run(&["checkout-index", "--all", "--force"]));
        // Removed as the user git wrote it as: the path is the owner's.
        let _ = crate::creds::with_fs_creds(wt.run_as(), || fs::remove_file(&index));
        done.map_err(step(doing))?;
    }
    Ok(())
}

/// The index `I`, its intent-to-add entries, and its stat data.
fn set_index(wt: &Git, p: &Parts) -> Result<(), RestoreError> {
    wt.run(&["read-tree", &format!("{}^{{tree}}", p.index)])
        .map_err(step("restoring the index"))?;
    // A tracked file in the working tree that the index part lacks was
    // added with intent to add (`git add -N`): the archive leaves such an
    // entry out of the index part, as `git stash` must; it is one again.
    let intended = wt
        .run(&[
            "diff-tree",
            "-r",
            "-z",
            "--name-only",
            "--no-renames",
            "--diff-filter=A",
            &p.index,
            &p.worktree,
        ])
        .map_err(step("reading intent-to-add entries"))?
        .stdout;
    let intended: Vec<&OsStr> = intended
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(OsStr::from_bytes)
        .collect();
    if !intended.is_empty() {
        let mut args: Vec<&OsStr> = ["add", "--intent-to-add", "--force", "--"]
            .iter()
            .map(OsStr::new)
            .collect();
        args.extend(intended);
        wt.run(&args)
            .map_err(step("restoring intent-to-add entries"))?;
    }
    // The index's stat data, so that what is unchanged shows as unchanged;
    // a non-zero exit only says that some file differs from the index.
    let _ = wt.run_status(&["update-index", "-q", "--refresh"], &[]);
    Ok(())
}

/// Puts HEAD back on the unborn branch `full` when no branch of that name
/// exists and no other worktree is on it; detached at the stand-in `H`
/// otherwise. Returns what HEAD is, and whether it is unborn.
fn attach_unborn(
    main: &Git,
    wt: &Git,
    p: &Parts,
    full: &str,
) -> Result<(String, bool), GitCliError> {
    let detached = |why: &str| {
        format!(
            "detached at {} (the empty stand-in for the unborn {full}: {why})",
            p.head
        )
    };
    let (st, _) = main.run_status(&["rev-parse", "--verify", "-q", full], &[])?;
    if st.success() {
        return Ok((detached("that branch exists now"), false));
    }
    if checked_out_elsewhere(main, full)? {
        return Ok((detached("another worktree is on that branch"), false));
    }
    // What `worktree add --orphan` would make, with any git: HEAD names a
    // branch that has no commit, the index and files stay as restored.
    wt.run(&["symbolic-ref", "HEAD", full])?;
    Ok((full.to_string(), true))
}

/// Whether a worktree of the main repository `main` has `full` checked out
/// (unborn there or not).
fn checked_out_elsewhere(main: &Git, full: &str) -> Result<bool, GitCliError> {
    let list = main.run(&["worktree", "list", "--porcelain"])?.stdout_str();
    Ok(list.lines().any(|l| l == format!("branch {full}")))
}

/// Puts HEAD on the archived branch when that moves nothing.
fn attach(main: &Git, wt: &Git, p: &Parts) -> Result<String, GitCliError> {
    let detached = |why: &str| format!("detached at {} ({why})", p.head);
    let Some(branch) = &p.branch else {
        return Ok(detached(
            "it was detached, or its branch deleted, when archived",
        ));
    };
    let full = format!("refs/heads/{branch}");
    let (st, o) = main.run_status(&["rev-parse", "--verify", "-q", &full], &[])?;
    if !st.success() {
        return Ok(detached(&format!("{full} no longer exists")));
    }
    if o.stdout_str().trim() != p.head {
        return Ok(detached(&format!("{full} has moved since")));
    }
    if checked_out_elsewhere(main, &full)? {
        return Ok(detached(&format!(
            "{full} is checked out in another worktree"
        )));
    }
    wt.run(&["symbolic-ref", "HEAD", &full])?;
    Ok(full)
}

/// A git failure in the named step of the restore.
fn step(step: &'static str) -> impl FnOnce(GitCliError) -> RestoreError {
    move |source| RestoreError::Step { step, source }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;
    use std::time::SystemTime;

    use super::nested::{restore_nested_one, KeptRefs};
    use super::*;
    use crate::git::archive::list::tests::{dirty, listed};
    use crate::git::archive::records::NestedRecord;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::scenes::{commit_file, files, init_repo, Node};
    use crate::git::testutil::{precious, set_exec, write, Fixture};

    fn files_of(dir: &Path) -> BTreeMap<String, Node> {
        files(dir, &[])
    }

    /// What a worktree holds: its files (see [`files_of`]), the index as
    /// `git ls-files -s` prints it, and HEAD.
    fn snapshot(f: &Fixture, wt: &Path) -> (BTreeMap<String, Node>, String, String) {
        let index = f.git(wt, &["ls-files", "-s"]);
        let head = f.git(wt, &["rev-parse", "HEAD"]);
        (files_of(wt), index, head)
    }

    /// Archives `wt` (worktree id `w`) as `--force` does, then removes it.
    fn forced(f: &Fixture, wt: &Path) -> crate::git::archive::Archived {
        let archived =
            crate::git::archive::archive(wt, "w", SystemTime::now(), &precious()).unwrap();
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        archived
    }

    /// [`forced`], then the archive restored to `to`.
    fn forced_and_restored(f: &Fixture, wt: &Path, to: &Path) -> Restored {
        let archived = forced(f, wt);
        restore(&f.repo, &archived.reference, to, DEFAULT_TIMEOUT).unwrap()
    }

    #[test]
    fn a_restored_worktree_is_the_archived_one_byte_for_byte() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let before = snapshot(&f, &wt);
        let to = f.root.join("w-restored");
        let r = forced_and_restored(&f, &wt, &to);
        assert_eq!(snapshot(&f, &to), before);
        // Its branch still points at HEAD and nothing else has it: on it.
        assert_eq!(r.head, "refs/heads/b-w");
        assert_eq!(f.git(&to, &["symbolic-ref", "HEAD"]), "refs/heads/b-w");
        // The archive is still there, and no branch moved.
        let refs = f.git(
            &f.repo,
            &["for-each-ref", "--format=%(refname)", "refs/boo/archive/"],
        );
        assert!(refs.starts_with("refs/boo/archive/w/"), "{refs}");
        assert_eq!(f.rev(&f.repo, "b-w"), before.2);
        // Git sees the same: the staged and the unstaged change, the
        // untracked files; the precious one is ignored as before.
        let status = f.git(&to, &["status", "--porcelain"]);
        assert!(status.contains("MM README"), "{status}");
        assert!(status.contains(" D lib.txt"), "{status}");
        assert!(status.contains("?? notes/"), "{status}");
        assert!(!status.contains(".env"), "{status}");
    }

    /// One change a generated state makes to a fresh worktree.
    #[derive(Clone, Debug)]
    enum Change {
        Edit(usize, usize),
        Stage(usize),
        Delete(usize),
        StageDelete(usize),
        Exec(usize),
        Untracked(usize, usize),
        Symlink(usize, usize),
        Precious(usize),
        Commit,
    }

    const TRACKED: [&str; 4] = ["README", "lib.txt", "src/a.rs", "src/deep/b.rs"];
    const NEW: [&str; 4] = ["notes.md", "src/new.rs", "src/deep/x/y.txt", "odd name.txt"];
    const BODY: [&str; 3] = ["", "one line\n", "two\nlines, no newline"];

    fn apply(f: &Fixture, wt: &Path, c: &Change) {
        let t = |i: usize| TRACKED[i % TRACKED.len()];
        match c {
            Change::Edit(i, b) => write(&wt.join(t(*i)), BODY[b % BODY.len()]),
            Change::Stage(i) => {
                if wt.join(t(*i)).exists() {
                    f.git(wt, &["add", "--", t(*i)]);
                }
            }
            Change::Delete(i) => {
                let _ = fs::remove_file(wt.join(t(*i)));
            }
            Change::StageDelete(i) => {
                let _ = f.try_git(wt, &["rm", "-q", "--cached", "--", t(*i)]);
            }
            Change::Exec(i) => {
                if wt.join(t(*i)).is_file() {
                    set_exec(&wt.join(t(*i)));
                }
            }
            Change::Untracked(i, b) => write(&wt.join(NEW[i % NEW.len()]), BODY[b % BODY.len()]),
            Change::Symlink(i, j) => {
                let at = wt.join(format!("link{i}"));
                let _ = fs::remove_file(&at);
                symlink(NEW[j % NEW.len()], at).unwrap();
            }
            Change::Precious(i) => write(
                &wt.join(["", "src/", "src/deep/"][i % 3]).join(".env"),
                "SECRET=1\n",
            ),
            Change::Commit => {
                f.git(wt, &["add", "-A"]);
                let _ = f.try_git(wt, &["commit", "-q", "-m", "work"]);
            }
        }
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        (0u8..9, 0usize..8, 0usize..8).prop_map(|(k, a, b)| match k {
            0 => Change::Edit(a, b),
            1 => Change::Stage(a),
            2 => Change::Delete(a),
            3 => Change::StageDelete(a),
            4 => Change::Exec(a),
            5 => Change::Untracked(a, b),
            6 => Change::Symlink(a, b),
            7 => Change::Precious(a),
            _ => Change::Commit,
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            // `BOO_RESTORE_CASES=500` makes a long run.
            cases: std::env::var("BOO_RESTORE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
            failure_persistence: None,
            ..Default::default()
        })]

        /// Generated states: archived as `--force` archives them, the
        /// worktree deleted, restored; what the snapshot reads (without the
        /// controller's code) is the same before and after.
        #[test]
        fn every_generated_state_comes_back_byte_for_byte(
            changes in proptest::collection::vec(change(), 0..10)
        ) {
            let f = Fixture::new();
            let wt = f.worktree("w", "b");
            write(&wt.join("src/a.rs"), "fn a() {}\n");
            write(&wt.join("src/deep/b.rs"), "fn b() {}\n");
            f.commit_all(&wt, "sources");
            for c in &changes {
                apply(&f, &wt, c);
            }
            let before = snapshot(&f, &wt);
            let archived = forced(&f, &wt);
            let to = f.root.join("restored");
            restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT).unwrap();
            proptest::prop_assert_eq!(snapshot(&f, &to), before);
        }
    }

    /// Found by the generated states: a deleted file's now empty directory
    /// does not come back, and nothing else differs.
    #[test]
    fn an_empty_directory_a_deleted_file_left_does_not_come_back() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("src/deep/b.rs"), "fn b() {}\n");
        f.commit_all(&wt, "sources");
        fs::remove_file(wt.join("src/deep/b.rs")).unwrap();
        let before = snapshot(&f, &wt);
        let to = f.root.join("restored");
        forced_and_restored(&f, &wt, &to);
        assert_eq!(snapshot(&f, &to), before);
        assert!(!to.join("src/deep").exists());
        assert!(f
            .git(&to, &["status", "--porcelain"])
            .ends_with("D src/deep/b.rs"));
    }

    #[test]
    fn a_branch_that_moved_or_is_checked_out_elsewhere_leaves_head_detached() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let head = f.rev(&wt, "HEAD");
        let archived =
            crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        // Still checked out in the original worktree.
        let to = f.root.join("r1");
        let r = restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT).unwrap();
        assert!(
            r.head.starts_with("detached at") && r.head.contains("checked out"),
            "{}",
            r.head
        );
        assert_eq!(f.rev(&to, "HEAD"), head);
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        // Moved since: HEAD stays where it was, the branch where it is.
        f.git(&f.repo, &["commit", "-q", "--allow-empty", "-m", "later"]);
        f.git(&f.repo, &["branch", "-f", "b-w", "main"]);
        let moved = f.rev(&f.repo, "b-w");
        let to = f.root.join("r2");
        let r = restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT).unwrap();
        assert!(r.head.contains("has moved"), "{}", r.head);
        assert_eq!(f.rev(&to, "HEAD"), head);
        assert_eq!(f.rev(&f.repo, "b-w"), moved);
    }

    #[test]
    fn a_non_empty_target_is_refused_and_left_alone() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let archived =
            crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        let to = f.root.join("taken");
        write(&to.join("mine.txt"), "mine\n");
        let e = restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(fs::read_to_string(to.join("mine.txt")).unwrap(), "mine\n");
        assert_eq!(fs::read_dir(&to).unwrap().count(), 1);
        // Not an archive at all.
        let e = restore(&f.repo, "main", &f.root.join("new"), DEFAULT_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an archive"), "{e}");
    }

    /// The permission bits of `rel` below `dir`.
    fn mode_of(dir: &Path, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(dir.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Every path below `dir`, `.git` directories included.
    fn all_paths(dir: &Path) -> Vec<PathBuf> {
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .collect()
    }

    #[test]
    fn modes_git_does_not_keep_come_back_exactly() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        // A secret, a private directory with a group-readable file, a
        // tracked file made private, a private script, an ordinary file, a
        // private nested repository's file; the worktree itself 750.
        write(&wt.join(".env"), "SECRET=1\n");
        chmod(&wt.join(".env"), 0o600);
        write(&wt.join("keys/id"), "key\n");
        chmod(&wt.join("keys/id"), 0o640);
        chmod(&wt.join("keys"), 0o700);
        chmod(&wt.join("lib.txt"), 0o600);
        write(&wt.join("run.sh"), "#!/bin/sh\n");
        chmod(&wt.join("run.sh"), 0o700);
        write(&wt.join("plain.txt"), "plain\n");
        let lib = wt.join("vendor/lib");
        init_repo(&f, &lib);
        commit_file(&f, &lib, "x.txt", "x\n", "nested work");
        write(&lib.join("token"), "t\n");
        chmod(&lib.join("token"), 0o600);
        // A clean submodule with a commit of its own and a private file:
        // its files come back from its HEAD, with their bits.
        let up = f.tmp.path().join("upstream");
        init_repo(&f, &up);
        commit_file(&f, &up, "lib.txt", "library\n", "lib");
        f.git(
            &wt,
            &["submodule", "add", "-q", up.to_str().unwrap(), "sub"],
        );
        f.git(&wt, &["commit", "-q", "-m", "submodule"]);
        commit_file(&f, &wt.join("sub"), "lib.txt", "changed\n", "only here");
        chmod(&wt.join("sub/lib.txt"), 0o600);
        chmod(&wt, 0o750);
        let to = f.root.join("back");
        let r = forced_and_restored(&f, &wt, &to);
        assert!(r.modes_not_set.is_empty(), "{r:?}");
        for (rel, mode) in [
            (".env", 0o600),
            ("keys", 0o700),
            ("keys/id", 0o640),
            ("lib.txt", 0o600),
            ("run.sh", 0o700),
            ("plain.txt", 0o644),
            ("README", 0o644),
            ("vendor/lib/token", 0o600),
            ("vendor/lib/x.txt", 0o644),
            ("sub/lib.txt", 0o600),
            ("", 0o750),
        ] {
            assert_eq!(mode_of(&to, rel), mode, "{rel}: {:o}", mode_of(&to, rel));
        }
        // Without a record the worktree's directory keeps the bits it was
        // made with (it was closed only while the files came back).
        let wt = f.worktree("w2", "b2");
        let to = f.root.join("back2");
        forced_and_restored(&f, &wt, &to);
        assert_eq!(mode_of(&to, ""), 0o755);
    }

    #[test]
    fn a_target_inside_a_git_directory_is_refused_and_nothing_written() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let a = crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        // A submodule gives the main repository a `.git/modules`.
        let up = f.tmp.path().join("upstream");
        init_repo(&f, &up);
        commit_file(&f, &up, "lib.txt", "lib\n", "lib");
        f.git(
            &f.repo,
            &["submodule", "add", "-q", up.to_str().unwrap(), "sub"],
        );
        let bare = f.tmp.path().join("bare.git");
        f.git(
            f.tmp.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        let outside = f.tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        symlink(f.repo.join(".git"), outside.join("link")).unwrap();
        let git_dir = f.repo.join(".git");
        for to in [
            git_dir.join("restored"),
            git_dir.join("worktrees/w/restored"),
            git_dir.join("worktrees/w"),
            git_dir.join("modules/sub/restored"),
            bare.join("restored"),
            bare.clone(),
            outside.join("link/restored"),
            f.root.join("x/../../repo/.git/refs/new"),
        ] {
            let before = all_paths(f.tmp.path());
            let refs = f.git(&f.repo, &["for-each-ref"]);
            let worktrees = f.git(&f.repo, &["worktree", "list", "--porcelain"]);
            let e = restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("inside the git directory"),
                "{}: {e}",
                to.display()
            );
            assert!(!to.exists() || to.join("HEAD").exists(), "{}", to.display());
            assert_eq!(all_paths(f.tmp.path()), before, "{}", to.display());
            assert_eq!(f.git(&f.repo, &["for-each-ref"]), refs);
            assert_eq!(
                f.git(&f.repo, &["worktree", "list", "--porcelain"]),
                worktrees
            );
        }
        // Control: beside them, the same restore is made.
        restore(
            &f.repo,
            &a.reference,
            &outside.join("fine"),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
    }

    #[test]
    fn archives_taken_in_one_second_are_all_listed_the_later_first() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let archive_at = |secs| {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            crate::git::archive::archive(&wt, "w", at, &precious()).unwrap()
        };
        let first = archive_at(1_700_000_000);
        fs::write(wt.join("later.txt"), "later\n").unwrap();
        let second = archive_at(1_700_000_000);
        assert_eq!(second.reference, format!("{}-1", first.reference));
        let list = listed(&f);
        let names: Vec<_> = list.iter().map(|x| (x.reference.as_str(), x.seq)).collect();
        assert_eq!(
            names,
            [
                (second.reference.as_str(), 1),
                (first.reference.as_str(), 0)
            ]
        );
        assert_eq!(list[0].untracked, list[1].untracked + 1, "later.txt");
        let to = f.root.join("back");
        restore(&f.repo, &list[0].reference, &to, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(fs::read_to_string(to.join("later.txt")).unwrap(), "later\n");
    }

    /// What a nested repository is, read with git: HEAD (its branch or
    /// `detached`), its branches and their commits, HEAD's history, and
    /// what `git status` says of its files.
    fn nested_state(f: &Fixture, dir: &Path) -> [String; 4] {
        let on = f.try_git(dir, &["symbolic-ref", "-q", "HEAD"]).stdout;
        let on = String::from_utf8_lossy(&on).trim().to_string();
        [
            if on.is_empty() { "detached".into() } else { on },
            f.git(
                dir,
                &[
                    "for-each-ref",
                    "--format=%(refname) %(objectname)",
                    "refs/heads/",
                ],
            ),
            f.git(dir, &["log", "--format=%H %s", "HEAD"]),
            f.git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        ]
    }

    /// A worktree with a nested plain repository (commits on two branches
    /// that nothing else has, an edited and an untracked file) and a
    /// submodule with a commit its upstream lacks.
    fn with_nested(f: &Fixture) -> PathBuf {
        let wt = f.worktree("w", "b");
        let lib = wt.join("vendor/lib");
        init_repo(f, &lib);
        commit_file(f, &lib, "x.txt", "x\n", "x");
        f.git(&lib, &["checkout", "-q", "-b", "topic"]);
        write(&lib.join("t.txt"), "topic\n");
        f.commit_all(&lib, "on topic");
        f.git(&lib, &["checkout", "-q", "main"]);
        write(&lib.join("m.txt"), "main\n");
        f.commit_all(&lib, "on main");
        write(&lib.join("x.txt"), "x, edited\n");
        write(&lib.join("u.txt"), "untracked in the nested repository\n");

        let up = f.tmp.path().join("upstream");
        fs::create_dir_all(&up).unwrap();
        f.git(&up, &["init", "-q"]);
        write(&up.join("lib.txt"), "library\n");
        f.commit_all(&up, "lib");
        f.git(
            &wt,
            &["submodule", "add", "-q", up.to_str().unwrap(), "sub"],
        );
        f.git(&wt, &["commit", "-q", "-m", "submodule"]);
        write(&wt.join("sub/lib.txt"), "library, changed here\n");
        f.commit_all(&wt.join("sub"), "only here");
        wt
    }

    #[test]
    fn nested_repositories_come_back_with_their_commits_and_branches() {
        let f = Fixture::new();
        let wt = with_nested(&f);
        let files = files_of(&wt);
        let index = f.git(&wt, &["ls-files", "-s"]);
        let status = f.git(&wt, &["status", "--porcelain"]);
        let lib = nested_state(&f, &wt.join("vendor/lib"));
        let sub = nested_state(&f, &wt.join("sub"));
        assert!(
            lib[3].contains("M x.txt") && lib[3].contains("?? u.txt"),
            "{lib:?}"
        );

        let archived = forced(&f, &wt);
        let refs = f.git(&f.repo, &["for-each-ref"]);
        let to = f.root.join("back");
        let r = restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT).unwrap();

        assert_eq!(files_of(&to), files);
        assert_eq!(f.git(&to, &["ls-files", "-s"]), index);
        assert_eq!(f.git(&to, &["status", "--porcelain"]), status);
        assert_eq!(nested_state(&f, &to.join("vendor/lib")), lib);
        assert_eq!(nested_state(&f, &to.join("sub")), sub);
        assert!(to.join("vendor/lib/.git").is_dir());
        // The restore read the main repository and wrote no ref there.
        assert_eq!(f.git(&f.repo, &["for-each-ref"]), refs);
        let n = &archived.reference;
        assert_eq!(
            r.nested,
            vec![
                NestedRestored {
                    path: Some("sub".into()),
                    kept: format!("{n}-nested/0"),
                    placed: true,
                    branches: vec!["main".into()],
                    refs: Vec::new(),
                    stash: 0,
                    reflog_only: 0,
                    head: "refs/heads/main".into(),
                },
                NestedRestored {
                    path: Some("vendor/lib".into()),
                    kept: format!("{n}-nested/1"),
                    placed: true,
                    branches: vec!["main".into(), "topic".into()],
                    refs: Vec::new(),
                    stash: 0,
                    reflog_only: 0,
                    head: "refs/heads/main".into(),
                },
            ]
        );
        assert_eq!(
            r.nested[1].describe(),
            "nested vendor/lib: restored with 2 branches, HEAD on main"
        );
    }

    /// Gives `dir` (a nested repository on branch `main`) every kind of
    /// ref: a second branch, a light and an annotated tag, a note, a ref
    /// of its own, two stash entries, and a commit only the reflogs reach.
    /// Returns that commit.
    fn every_kind_of_ref(f: &Fixture, dir: &Path, tag: &str) -> String {
        commit_file(f, dir, "x.txt", "x\n", "x");
        f.git(dir, &["checkout", "-q", "-b", "topic"]);
        commit_file(f, dir, "t.txt", "topic\n", "on topic");
        f.git(
            dir,
            &["tag", "-a", "-m", "annotated", &format!("{tag}-annotated")],
        );
        f.git(dir, &["checkout", "-q", "main"]);
        commit_file(f, dir, "m.txt", "main\n", "on main");
        f.git(dir, &["tag", &format!("{tag}-light")]);
        f.git(dir, &["notes", "add", "-m", "a note", "HEAD"]);
        f.git(dir, &["update-ref", "refs/keep/mine", "topic"]);
        let lost = commit_file(f, dir, "lost.txt", "lost\n", "reset away");
        f.git(dir, &["reset", "-q", "--hard", "HEAD~1"]);
        write(&dir.join("x.txt"), "stashed first\n");
        f.git(dir, &["stash", "push", "-q", "-m", "first"]);
        write(&dir.join("x.txt"), "stashed second\n");
        write(&dir.join("new.txt"), "untracked, stashed\n");
        f.git(dir, &["stash", "push", "-q", "-u", "-m", "second"]);
        lost
    }

    /// What a restore must bring back of a nested repository: every ref
    /// but the remote-tracking ones, and the stash list.
    fn kept_state(f: &Fixture, dir: &Path) -> (String, String) {
        let refs = f.git(
            dir,
            &["for-each-ref", "--format=%(objectname) %(refname)", "refs/"],
        );
        let refs: Vec<&str> = refs
            .lines()
            .filter(|l| !l.contains(" refs/remotes/"))
            .collect();
        (
            refs.join("\n"),
            f.git(dir, &["stash", "list", "--format=%H %gs"]),
        )
    }

    #[test]
    fn every_ref_of_a_nested_repository_and_a_submodule_survives_gc_and_comes_back() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let lib = wt.join("vendor/lib");
        init_repo(&f, &lib);
        f.git(&lib, &["checkout", "-q", "-b", "main"]);
        let lib_lost = every_kind_of_ref(&f, &lib, "lib");

        // A submodule added in the linked worktree: its git directory is
        // in the worktree's admin entry, and goes with it.
        let up = f.tmp.path().join("upstream");
        init_repo(&f, &up);
        f.git(&up, &["checkout", "-q", "-b", "main"]);
        commit_file(&f, &up, "lib.txt", "library\n", "lib");
        f.git(
            &wt,
            &["submodule", "add", "-q", up.to_str().unwrap(), "sub"],
        );
        f.git(&wt, &["commit", "-q", "-m", "submodule"]);
        let sub = wt.join("sub");
        assert!(f.repo.join(".git/worktrees/w/modules/sub").is_dir());
        let sub_lost = every_kind_of_ref(&f, &sub, "sub");

        let before = [kept_state(&f, &lib), kept_state(&f, &sub)];
        assert!(before[0].1.lines().count() == 2, "{before:?}");
        let a = forced(&f, &wt);
        assert!(!f.repo.join(".git/worktrees/w").exists());
        f.expire_and_gc();
        for lost in [&lib_lost, &sub_lost] {
            assert!(f.has_object(lost), "{lost} lost by gc");
        }

        let to = f.root.join("back");
        let r = restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT).unwrap();
        let (lib, sub) = (to.join("vendor/lib"), to.join("sub"));
        assert_eq!([kept_state(&f, &lib), kept_state(&f, &sub)], before);
        for (dir, lost, tag) in [(&lib, &lib_lost, "lib"), (&sub, &sub_lost, "sub")] {
            let logged = f.git(dir, &["log", "-g", "--format=%H", "HEAD"]);
            assert!(logged.lines().any(|l| l == lost), "{logged}");
            assert_eq!(f.git(dir, &["notes", "show", "main"]), "a note");
            assert_eq!(
                f.git(dir, &["cat-file", "-t", &format!("{tag}-annotated")]),
                "tag"
            );
            // The stash applies as it did.
            f.git(dir, &["stash", "apply", "-q", "stash@{1}"]);
            assert_eq!(
                fs::read_to_string(dir.join("x.txt")).unwrap(),
                "stashed first\n"
            );
        }
        let lib_said = r
            .nested
            .iter()
            .find(|n| n.path.as_deref() == Some("vendor/lib"))
            .unwrap();
        assert_eq!(
            lib_said.describe(),
            "nested vendor/lib: restored with 2 branches, 4 other refs, 2 stash entries, \
             1 reflog-only commit, HEAD on main"
        );
    }

    /// A nested clone whose every commit its remote has still holds an
    /// annotated tag of its own (its message is nowhere else): it is kept
    /// whole, and comes back.
    #[test]
    fn a_local_annotated_tag_on_a_pushed_commit_is_kept_and_comes_back() {
        let f = Fixture::new();
        let up = f.tmp.path().join("upstream");
        init_repo(&f, &up);
        commit_file(&f, &up, "lib.txt", "library\n", "lib");
        let wt = f.worktree("w", "b");
        let lib = wt.join("vendor/lib");
        f.git(&wt, &["clone", "-q", up.to_str().unwrap(), "vendor/lib"]);
        f.git(&lib, &["tag", "-a", "-m", "why this release", "mine"]);
        let tag = f.git(&lib, &["rev-parse", "mine"]);
        let a = forced(&f, &wt);
        f.expire_and_gc();
        assert!(f.has_object(&tag), "the tag object was lost");
        let to = f.root.join("back");
        restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT).unwrap();
        let back = to.join("vendor/lib");
        assert_eq!(f.git(&back, &["rev-parse", "mine"]), tag);
        assert_eq!(
            f.git(
                &back,
                &["tag", "-l", "--format=%(contents:subject)", "mine"]
            ),
            "why this release"
        );
    }

    #[test]
    fn a_repository_inside_a_nested_one_or_a_submodule_is_kept_and_comes_back() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        // vendor/lib holds vendor/lib/inner, a repository of its own.
        let lib = wt.join("vendor/lib");
        init_repo(&f, &lib);
        commit_file(&f, &lib, "x.txt", "x\n", "outer");
        let inner = lib.join("inner");
        init_repo(&f, &inner);
        commit_file(&f, &inner, "i.txt", "i\n", "inner work");
        f.git(&inner, &["tag", "inner-tag"]);
        write(&inner.join("i.txt"), "stashed\n");
        f.git(&inner, &["stash", "-q"]);
        // A submodule holding a repository of its own.
        let up = f.tmp.path().join("upstream");
        init_repo(&f, &up);
        commit_file(&f, &up, "lib.txt", "library\n", "lib");
        f.git(
            &wt,
            &["submodule", "add", "-q", up.to_str().unwrap(), "sub"],
        );
        f.git(&wt, &["commit", "-q", "-m", "submodule"]);
        let deep = wt.join("sub/deep");
        init_repo(&f, &deep);
        commit_file(&f, &deep, "d.txt", "d\n", "deep work");

        let before = [kept_state(&f, &inner), kept_state(&f, &deep)];
        let a = crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        crate::git::verify::check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap();
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        f.expire_and_gc();
        let to = f.root.join("back");
        let r = restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT).unwrap();
        let (inner, deep) = (to.join("vendor/lib/inner"), to.join("sub/deep"));
        assert_eq!(
            [kept_state(&f, &inner), kept_state(&f, &deep)],
            before,
            "{r:?}"
        );
        assert_eq!(f.git(&inner, &["log", "-1", "--format=%s"]), "inner work");
        assert_eq!(f.git(&deep, &["log", "-1", "--format=%s"]), "deep work");
        assert_eq!(
            f.git(&to.join("vendor/lib"), &["log", "-1", "--format=%s"]),
            "outer"
        );
    }

    /// A copy of the archive `reference` under `name` whose message is
    /// `message`, with the nested refs `-nested/<from>…` copied to
    /// `-nested/<to>…` for each pair: an archive as an older version, or
    /// a damaged one, would have written it.
    fn rewritten(
        f: &Fixture,
        reference: &str,
        name: &str,
        message: &str,
        nested: &[(usize, usize)],
    ) {
        let parents = f.git(&f.repo, &["rev-list", "--parents", "-n1", reference]);
        let mut args = vec!["commit-tree".to_string(), format!("{reference}^{{tree}}")];
        for p in parents.split(' ').skip(1) {
            args.push("-p".into());
            args.push(p.into());
        }
        args.push("-m".into());
        args.push(message.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let commit = f.git(&f.repo, &args);
        f.git(&f.repo, &["update-ref", name, &commit]);
        let kept = f.git(
            &f.repo,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                &format!("{reference}-nested/"),
            ],
        );
        for (from, to) in nested {
            let prefix = format!("{reference}-nested/{from}");
            for line in kept.lines() {
                let (r, id) = line.split_once(' ').unwrap();
                if let Some(rest) = r.strip_prefix(&prefix) {
                    if rest.is_empty() || rest.starts_with("-heads/") {
                        f.git(
                            &f.repo,
                            &["update-ref", &format!("{name}-nested/{to}{rest}"), id],
                        );
                    }
                }
            }
        }
    }

    /// The one removal of a restore: when a nested repository cannot be
    /// filled, the `.git` its `git init` just made goes, and only that.
    #[test]
    fn a_nested_repository_that_cannot_be_filled_leaves_only_its_files() {
        let f = Fixture::new();
        let to = f.root.join("back");
        write(&to.join("vendor/lib/x.txt"), "x\n");
        write(&to.join("vendor/lib/sub/y.txt"), "y\n");
        write(&to.join("vendor/other.txt"), "other\n");
        let before = files_of(&to);
        let wt = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        let url = f.repo.join(".git").display().to_string();
        let record = NestedRecord {
            n: 0,
            path: b"vendor/lib".to_vec(),
            clean: false,
        };
        // Refs the main repository does not have: the fetch fails after
        // the repository was made.
        let kept = KeptRefs {
            head: Some("0".repeat(40)),
            branches: vec![("main".into(), "0".repeat(40))],
            ..KeptRefs::default()
        };
        let refname = "refs/boo/archive/w/1-nested/0";
        let e = restore_nested_one(&wt, &to, &url, "sha1", refname, &record, &kept)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fetching its kept commits"), "{e}");
        assert!(
            !to.join("vendor/lib/.git").exists(),
            "the half-made repository went"
        );
        assert_eq!(files_of(&to), before, "nothing else was touched");
    }

    #[test]
    fn nested_repositories_without_a_recorded_path_are_reported_not_placed() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let lib = wt.join("vendor/lib");
        init_repo(&f, &lib);
        commit_file(&f, &lib, "x.txt", "x\n", "x");
        let a = forced(&f, &wt);
        let subject = f.git(&f.repo, &["log", "-1", "--format=%s", &a.reference]);
        // As archives were written before paths were recorded.
        let old = "refs/boo/archive/w/1700000001";
        let body = "boo-reconciler archive of worktree w (/gone/w) at 1700000001";
        rewritten(
            &f,
            &a.reference,
            old,
            &format!("{subject}\n\n{body}\n"),
            &[(0, 0)],
        );
        let refs = f.git(&f.repo, &["for-each-ref"]);
        let to = f.root.join("old");
        let r = restore(&f.repo, old, &to, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(r.nested.len(), 1, "{r:?}");
        let n = &r.nested[0];
        assert_eq!((n.path.as_deref(), n.placed), (None, false), "{n:?}");
        assert_eq!(n.kept, format!("{old}-nested/0"));
        assert!(n.describe().contains("not recorded"), "{}", n.describe());
        // Its files are back, its repository is not made up.
        assert_eq!(
            fs::read_to_string(to.join("vendor/lib/x.txt")).unwrap(),
            "x\n"
        );
        assert!(!to.join("vendor/lib/.git").exists());
        assert_eq!(f.git(&f.repo, &["for-each-ref"]), refs);

        // Records that cannot be followed are skipped, each saying why;
        // what is there is never overwritten.
        let odd = "refs/boo/archive/w/1700000002";
        let records = "nested 0 \"vendor/lib\"\nnested 1 \"vendor/lib\"\nnested 2 \"README\"\n\
                       nested 3 \"../escape\"\nnested 4 \"vendor/gone\"\nnested 5 \"vendor\"\n";
        rewritten(
            &f,
            &a.reference,
            odd,
            &format!("{subject}\n\n{body}\n\n{records}"),
            &[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)],
        );
        let to = f.root.join("odd");
        let r = restore(&f.repo, odd, &to, DEFAULT_TIMEOUT).unwrap();
        let said: Vec<(Option<&str>, bool, &str)> = r
            .nested
            .iter()
            .map(|n| (n.path.as_deref(), n.placed, n.head.as_str()))
            .collect();
        assert_eq!(said.len(), 6, "{said:?}");
        let why = |p: &str| {
            said.iter()
                .filter(|s| s.0 == Some(p))
                .map(|s| s.2)
                .collect::<Vec<_>>()
        };
        assert!(
            why("../escape")[0].contains("not a plain relative path"),
            "{said:?}"
        );
        assert!(why("README")[0].contains("not a directory"), "{said:?}");
        assert!(why("vendor/gone")[0].contains("does not exist"), "{said:?}");
        assert!(why("vendor")[0].contains("kept refs are gone"), "{said:?}");
        let lib = why("vendor/lib");
        assert_eq!(lib[0], "refs/heads/main", "{said:?}");
        assert!(lib[1].contains("already has a .git"), "{said:?}");
        assert_eq!(fs::read_to_string(to.join("README")).unwrap(), "hello\n");
        assert_eq!(f.git(&to.join("vendor/lib"), &["log", "--format=%s"]), "x");
    }

    #[test]
    fn an_unborn_head_comes_back_unborn_on_its_branch() {
        let f = Fixture::new();
        let wt = f.add_worktree(&f.root.join("w"), &["--orphan", "-b", "o"], None);
        write(&wt.join("first.txt"), "first\n");
        f.git(&wt, &["add", "first.txt"]);
        write(&wt.join("first.txt"), "first, edited\n");
        write(&wt.join("notes/second.txt"), "untracked\n");
        write(&wt.join(".env"), "SECRET=1\n");
        let files = files_of(&wt);
        let index = f.git(&wt, &["ls-files", "-s"]);
        let status = f.git(&wt, &["status", "--porcelain"]);
        let a = forced(&f, &wt);
        let refs = f.git(&f.repo, &["for-each-ref"]);

        let to = f.root.join("back");
        let r = restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT).unwrap();
        assert_eq!((r.head.as_str(), r.unborn), ("refs/heads/o", true), "{r:?}");
        assert_eq!(f.git(&to, &["symbolic-ref", "HEAD"]), "refs/heads/o");
        assert!(!f
            .try_git(&to, &["rev-parse", "-q", "--verify", "HEAD"])
            .status
            .success());
        assert_eq!(files_of(&to), files);
        assert_eq!(f.git(&to, &["ls-files", "-s"]), index);
        assert_eq!(f.git(&to, &["status", "--porcelain"]), status);
        assert_eq!(f.git(&f.repo, &["for-each-ref"]), refs);

        let listed = listed(&f);
        assert_eq!(listed[0].branch.as_deref(), Some("o"), "{listed:?}");

        // Another worktree is on it now: detached at the stand-in.
        let again = f.root.join("again");
        let r = restore(&f.repo, &a.reference, &again, DEFAULT_TIMEOUT).unwrap();
        assert!(!r.unborn && r.head.contains("another worktree"), "{r:?}");
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", to.to_str().unwrap()],
        );
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", again.to_str().unwrap()],
        );

        // The branch exists now: detached at the stand-in, and it says so.
        f.git(&f.repo, &["branch", "o", "main"]);
        let to = f.root.join("later");
        let r = restore(&f.repo, &a.reference, &to, DEFAULT_TIMEOUT).unwrap();
        assert!(!r.unborn && r.head.contains("exists now"), "{r:?}");
        assert_eq!(
            f.rev(&to, "HEAD"),
            f.rev(&f.repo, &format!("{}^1", a.reference))
        );
        assert_eq!(f.rev(&f.repo, "o"), f.rev(&f.repo, "main"));
        assert_eq!(files_of(&to), files);
        assert_eq!(f.git(&to, &["ls-files", "-s"]), index);
        f.git(&f.repo, &["branch", "-D", "o"]);

        // An archive that does not record the branch: detached.
        let subject = f.git(&f.repo, &["log", "-1", "--format=%s", &a.reference]);
        let old = "refs/boo/archive/w/1700000001";
        rewritten(&f, &a.reference, old, &format!("{subject}\n\nolder\n"), &[]);
        let to = f.root.join("old");
        let r = restore(&f.repo, old, &to, DEFAULT_TIMEOUT).unwrap();
        assert!(!r.unborn && r.head.starts_with("detached at"), "{r:?}");
        assert_eq!(files_of(&to), files);
    }
}
