//! Bringing a force-archived worktree back ([`super::archive`] wrote it):
//! a new linked worktree with HEAD, the index, the working tree and the
//! untracked and precious files exactly as archived.
//!
//! Everything is done by the git CLI, as the main repository's owner
//! ([`super::cli`]): `git worktree add --no-checkout --detach` at the
//! archive's HEAD commit `H`, then each part checked out from its tree
//! through a scratch index (`git read-tree` + `git checkout-index`, which
//! write modes and symlinks as git does): the working tree `W`, then the
//! untracked part `U`; last, the index is set to `I`'s tree and refreshed.
//!
//! # Guarantees
//!
//! 1. **Never over anything.** The target must not exist or be an empty
//!    directory; git itself refuses to add a worktree over a non-empty one.
//!    Test: `a_non_empty_target_is_refused_and_left_alone`.
//! 2. **Never moves a branch, never deletes the archive.** HEAD goes on the
//!    archived branch only when that branch still points at `H` and no
//!    other worktree has it checked out; otherwise it stays detached at
//!    `H`, and [`Restored::head`] says which. No ref is written or deleted.
//!    Test: `a_restored_worktree_is_the_archived_one_byte_for_byte`.
//! 3. **Byte for byte.** Every file of `W` and `U` comes back with its
//!    content, executable bit or symlink target, and the index holds `I`'s
//!    entries. Test: `a_restored_worktree_is_the_archived_one_byte_for_byte`.
//!
//! Not restored: empty directories (git tracks none, and they hold
//! nothing), index flags (assume-unchanged, skip-worktree), an
//! operation in progress (its state files are not archived), and the git
//! directories of nested repositories (their working files are in `U`;
//! their kept commits stay under `<ref>-nested/…` in the main repository).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cli::Git;

/// What a restore made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub path: PathBuf,
    /// `refs/heads/<branch>` when HEAD is on its branch again, else
    /// `detached at <commit>` and why.
    pub head: String,
    pub commit: String,
}

/// The parts of an archive commit, as its parents name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parts {
    pub worktree: String,
    pub head: String,
    pub index: String,
    pub untracked: Option<String>,
    /// The branch HEAD was on when archived (`None`: detached, or the
    /// branch had been deleted).
    pub branch: Option<String>,
}

/// Reads the parts of the archive `reference` in the main repository
/// `git` runs in.
pub fn parts(git: &Git, reference: &str) -> Result<Parts, String> {
    let err = |e: super::cli::GitCliError| e.to_string();
    let line = git
        .run(&[
            "rev-list",
            "--parents",
            "-n1",
            &format!("{reference}^{{commit}}"),
            "--",
        ])
        .map_err(err)?
        .stdout_str();
    let ids: Vec<&str> = line.split_whitespace().collect();
    if !(3..=4).contains(&ids.len()) {
        return Err(format!(
            "{reference} is not an archive: a commit with two or three parents is"
        ));
    }
    let subject = git
        .run(&["log", "-1", "--format=%s", ids[0], "--"])
        .map_err(err)?
        .stdout_str();
    Ok(Parts {
        worktree: ids[0].to_string(),
        head: ids[1].to_string(),
        index: ids[2].to_string(),
        untracked: ids.get(3).map(|s| s.to_string()),
        branch: branch_of(subject.trim()),
    })
}

/// The branch an archive's subject (`WIP on <label>: <id> <summary>`)
/// names; a ref name cannot hold `:`, so the label ends at the first.
fn branch_of(subject: &str) -> Option<String> {
    let label = subject.strip_prefix("WIP on ")?.split(": ").next()?;
    (!label.starts_with('(') && !label.ends_with(" (deleted)") && !label.is_empty())
        .then(|| label.to_string())
}

/// One archive as `boo-reconciler archives` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archive {
    pub reference: String,
    pub worktree_id: String,
    /// When it was taken (the ref's last component).
    pub unix_secs: u64,
    /// HEAD's commit when archived.
    pub head: String,
    pub branch: Option<String>,
    pub staged: usize,
    pub unstaged: usize,
    pub untracked: usize,
    pub precious: usize,
    /// The nested repositories' and submodules' kept refs.
    pub nested: Vec<String>,
}

/// Every archive in the main repository `git` runs in, newest first.
pub fn archives(git: &Git, precious: &globset::GlobSet) -> Result<Vec<Archive>, String> {
    let err = |e: super::cli::GitCliError| e.to_string();
    let refs = git
        .run(&["for-each-ref", "--format=%(refname)", "refs/boo/archive/"])
        .map_err(err)?
        .stdout_str();
    let names: Vec<&str> = refs.lines().collect();
    let mut out = Vec::new();
    for name in &names {
        let Some((id, secs)) = archive_name(name) else {
            continue;
        };
        // A stale admin entry's HEAD is kept here too, as a plain commit:
        // history, nothing to restore.
        let Ok(p) = parts(git, name) else {
            tracing::debug!(reference = %name, "not a stash-shaped archive: not listed");
            continue;
        };
        let changed = |a: &str, b: &str| -> Result<usize, String> {
            Ok(git
                .run(&["diff-tree", "-r", "--name-only", "-z", "--no-renames", a, b])
                .map_err(err)?
                .stdout
                .split(|b| *b == 0)
                .filter(|f| !f.is_empty())
                .count())
        };
        let (mut untracked, mut kept) = (0, 0);
        if let Some(u) = &p.untracked {
            let files = git
                .run(&["ls-tree", "-r", "-z", "--name-only", u])
                .map_err(err)?
                .stdout;
            for f in files.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                if super::scan::is_precious(precious, f) {
                    kept += 1;
                } else {
                    untracked += 1;
                }
            }
        }
        let prefix = format!("{name}-nested/");
        out.push(Archive {
            reference: name.to_string(),
            worktree_id: id,
            unix_secs: secs,
            staged: changed(&p.head, &p.index)?,
            unstaged: changed(&p.index, &p.worktree)?,
            untracked,
            precious: kept,
            nested: names
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .map(|n| n.to_string())
                .collect(),
            head: p.head,
            branch: p.branch,
        });
    }
    out.sort_by(|a, b| {
        b.unix_secs
            .cmp(&a.unix_secs)
            .then(a.reference.cmp(&b.reference))
    });
    Ok(out)
}

/// `refs/boo/archive/<id>/<secs>` → `(id, secs)`; the nested repositories'
/// refs below it are not archives of their own.
fn archive_name(name: &str) -> Option<(String, u64)> {
    let rest = name.strip_prefix("refs/boo/archive/")?;
    let (id, secs) = rest.split_once('/')?;
    let secs: u64 = secs.parse().ok()?;
    (!id.is_empty()).then(|| (id.to_string(), secs))
}

/// Recreates the archived worktree of `reference` at `to` (see the
/// module's guarantees). `main` is the main repository's working directory
/// (or its git directory when bare).
pub fn restore(
    main: &Path,
    reference: &str,
    to: &Path,
    timeout: Duration,
) -> Result<Restored, String> {
    if let Ok(mut entries) = fs::read_dir(to) {
        if entries.next().is_some() {
            return Err(format!(
                "{} is not empty: a restore writes only into a new or empty directory",
                to.display()
            ));
        }
    } else if fs::symlink_metadata(to).is_ok() {
        return Err(format!("{} exists and is not a directory", to.display()));
    }
    let git = Git::for_dir(main, timeout).map_err(|e| e.to_string())?;
    let p = parts(&git, reference)?;
    let to_s = to.to_str().ok_or("the target path is not UTF-8")?;
    git.run(&[
        "worktree",
        "add",
        "--no-checkout",
        "--detach",
        to_s,
        &p.head,
    ])
    .map_err(|e| e.to_string())?;
    let wt = Git::for_dir(to, timeout).map_err(|e| e.to_string())?;
    // The scratch indexes live in the new worktree's own git directory:
    // the owner git runs as can write there.
    let admin = wt
        .run(&["rev-parse", "--absolute-git-dir"])
        .map_err(|e| e.to_string())?
        .stdout_str();
    let admin = PathBuf::from(admin.trim());
    let mut trees = vec![("working tree", p.worktree.as_str())];
    if let Some(u) = &p.untracked {
        trees.push(("untracked files", u));
    }
    for (n, (what, commit)) in trees.iter().enumerate() {
        let index = admin.join(format!("boo-restore-index{n}"));
        let g = wt.with_index(&index);
        let done = g
            .run(&["read-tree", &format!("{commit}^{{tree}}")])
            .and_then(|_| g.run(&["checkout-index", "--all", "--force"]));
        let _ = fs::remove_file(&index);
        done.map_err(|e| format!("restoring the {what}: {e}"))?;
    }
    wt.run(&["read-tree", &format!("{}^{{tree}}", p.index)])
        .map_err(|e| format!("restoring the index: {e}"))?;
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
        .map_err(|e| format!("reading intent-to-add entries: {e}"))?
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
            .map_err(|e| format!("restoring intent-to-add entries: {e}"))?;
    }
    // The index's stat data, so that what is unchanged shows as unchanged;
    // a non-zero exit only says that some file differs from the index.
    let _ = wt.run_status(&["update-index", "-q", "--refresh"], &[]);
    let head = attach(&git, &wt, &p)?;
    Ok(Restored {
        path: to.to_path_buf(),
        head,
        commit: p.head,
    })
}

/// Puts HEAD on the archived branch when that moves nothing.
fn attach(main: &Git, wt: &Git, p: &Parts) -> Result<String, String> {
    let detached = |why: &str| format!("detached at {} ({why})", p.head);
    let Some(branch) = &p.branch else {
        return Ok(detached(
            "it was detached, or its branch deleted, when archived",
        ));
    };
    let full = format!("refs/heads/{branch}");
    let (st, o) = main
        .run_status(&["rev-parse", "--verify", "-q", &full], &[])
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Ok(detached(&format!("{full} no longer exists")));
    }
    if o.stdout_str().trim() != p.head {
        return Ok(detached(&format!("{full} has moved since")));
    }
    let list = main
        .run(&["worktree", "list", "--porcelain"])
        .map_err(|e| e.to_string())?
        .stdout_str();
    if list.lines().any(|l| l == format!("branch {full}")) {
        return Ok(detached(&format!(
            "{full} is checked out in another worktree"
        )));
    }
    wt.run(&["symbolic-ref", "HEAD", &full])
        .map_err(|e| e.to_string())?;
    Ok(full)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::SystemTime;

    use super::*;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::testutil::{precious, set_exec, write, Fixture};

    /// What a worktree holds, read without the controller's code: every
    /// file below it but `.git` (mode and content or link target), the
    /// index as `git ls-files -s` prints it, and HEAD.
    fn snapshot(f: &Fixture, wt: &Path) -> (BTreeMap<String, String>, String, String) {
        let mut files = BTreeMap::new();
        for e in walkdir::WalkDir::new(wt).min_depth(1) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(wt)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let m = fs::symlink_metadata(e.path()).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                format!(
                    "{:o} {}",
                    m.permissions().mode() & 0o111,
                    String::from_utf8_lossy(&fs::read(e.path()).unwrap())
                )
            } else {
                // A directory is not content: git tracks none, and an
                // empty one holds nothing to lose.
                continue;
            };
            files.insert(rel, v);
        }
        let index = f.git(wt, &["ls-files", "-s"]);
        let head = f.git(wt, &["rev-parse", "HEAD"]);
        (files, index, head)
    }

    fn dirty(f: &Fixture, name: &str) -> PathBuf {
        let wt = f.worktree(name, &format!("b-{name}"));
        write(&wt.join("README"), "staged\n");
        f.git(&wt, &["add", "README"]);
        write(&wt.join("README"), "staged, then edited\n");
        write(&wt.join("notes/todo.md"), "untracked\n");
        write(&wt.join(".env"), "SECRET=1\n");
        write(&wt.join("run.sh"), "#!/bin/sh\n");
        set_exec(&wt.join("run.sh"));
        symlink("README", wt.join("link")).unwrap();
        fs::remove_file(wt.join("lib.txt")).unwrap();
        wt
    }

    /// Archives `wt` as `--force` does, removes it, and restores the
    /// archive to `to`.
    fn forced_and_restored(f: &Fixture, wt: &Path, to: &Path) -> Restored {
        let archived =
            crate::git::archive::archive(wt, "w", SystemTime::now(), &precious()).unwrap();
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
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
            let archived =
                crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
            f.git(&f.repo, &["worktree", "remove", "--force", wt.to_str().unwrap()]);
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
        let e = restore(&f.repo, &archived.reference, &to, DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(fs::read_to_string(to.join("mine.txt")).unwrap(), "mine\n");
        assert_eq!(fs::read_dir(&to).unwrap().count(), 1);
        // Not an archive at all.
        let e = restore(&f.repo, "main", &f.root.join("new"), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("not an archive"), "{e}");
    }

    #[test]
    fn archives_are_listed_newest_first_with_what_they_hold() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let older = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = crate::git::archive::archive(&wt, "w", older, &precious()).unwrap();
        let b = crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        let git = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        let list = archives(&git, &precious()).unwrap();
        assert_eq!(
            list.iter()
                .map(|x| x.reference.as_str())
                .collect::<Vec<_>>(),
            [b.reference.as_str(), a.reference.as_str()]
        );
        let x = &list[1];
        assert_eq!((x.worktree_id.as_str(), x.unix_secs), ("w", 1_700_000_000));
        assert_eq!(x.branch.as_deref(), Some("b-w"));
        assert_eq!(x.head, f.rev(&wt, "HEAD"));
        // README staged; README edited and lib.txt deleted after; notes,
        // run.sh and link untracked; .env precious.
        assert_eq!(
            (x.staged, x.unstaged, x.untracked, x.precious),
            (1, 2, 3, 1)
        );
        assert!(x.nested.is_empty());
    }

    #[test]
    fn a_plain_commit_under_the_archive_namespace_is_not_listed() {
        // A stale admin entry's HEAD is kept there as a plain commit.
        let f = Fixture::new();
        f.git(
            &f.repo,
            &["update-ref", "refs/boo/archive/gone/1700000000", "HEAD"],
        );
        let git = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(archives(&git, &precious()).unwrap(), vec![]);
    }

    #[test]
    fn only_archive_refs_are_archives() {
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000"),
            Some(("w-1".into(), 1_700_000_000))
        );
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000-nested/0"),
            None
        );
        assert_eq!(archive_name("refs/boo/history/w-1/1700000000"), None);
        assert_eq!(archive_name("refs/boo/archive/1700000000"), None);
    }

    #[test]
    fn the_branch_is_read_from_the_archive_subject() {
        assert_eq!(
            branch_of("WIP on boo/x: abc1234 fix: it"),
            Some("boo/x".into())
        );
        assert_eq!(branch_of("WIP on (no branch): abc1234 x"), None);
        assert_eq!(branch_of("WIP on boo/x (deleted): abc1234 x"), None);
        assert_eq!(branch_of("something else"), None);
    }
}
