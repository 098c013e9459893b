//! Keeping the history a removal would drop: commits that only the
//! worktree's HEAD reflog and its `refs/worktree/*` reach
//! ([`super::preflight::unreferenced_history`]) are put under one history
//! ref in the main repository (beside the stash-shaped archives of
//! `refs/boo/archive/`, not among them: it holds history, not files) before the worktree goes.
//!
//! # Guarantees
//!
//! 1. **Nothing dropped, nothing moved.** One new ref,
//!    `refs/boo/history/<worktree id>/<unix seconds>` (`-<n>` added
//!    when taken), points at a commit of the empty tree whose parents are the
//!    kept commits; an existing ref is never overwritten (`update-ref` with
//!    an empty old value), no branch or other ref is touched.
//!    Test: `history_only_the_reflog_reaches_survives_removal_and_gc`.
//! 2. **Written by git as the repository's owner** ([`super::cli`]), so a
//!    root controller leaves no root-owned object or ref file in another
//!    user's repository.
//! 3. **Submodules' git directories too.** A submodule initialised in the
//!    worktree keeps its git directory in the worktree's admin entry
//!    (`modules/<name>`), which the removal deletes: every commit of it that
//!    none of its own remote-tracking refs reaches is copied into the main
//!    repository and kept under the same ref ([`super::stale::keep_modules`]).
//!    Test: `a_submodules_own_commits_survive_the_removal_of_its_worktree`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::archive::{unix_secs, Archived, ARCHIVE_EMAIL, ARCHIVE_NAME};
use super::cli::Git;
use super::paths::{common_dir_of_admin, dot_git, ref_component, DotGit};

/// Commits `commits` (reachable from nothing that outlives the worktree)
/// under a new archive ref; `Ok(None)` when there is nothing to keep.
pub fn keep_history(
    worktree: &Path,
    worktree_id: &str,
    commits: &[String],
    now: SystemTime,
    timeout: Duration,
) -> Result<Option<Archived>, String> {
    let mut all = commits.to_vec();
    for c in module_history(worktree, timeout)? {
        if !all.contains(&c) {
            all.push(c);
        }
    }
    if all.is_empty() {
        return Ok(None);
    }
    let git = Git::for_dir(worktree, timeout).map_err(|e| e.to_string())?;
    let message = format!(
        "boo-reconciler: {} commit(s) of worktree {worktree_id} that only its HEAD reflog, \
         refs/worktree/* or its submodules' git directories reached",
        all.len()
    );
    keep_commits(&git, worktree_id, &all, &message, now).map(Some)
}

/// The commits of the submodules initialised in the worktree whose git
/// directories live in its admin entry (and go with it) that none of their
/// own remote-tracking refs reaches, copied into the main repository
/// ([`super::stale::keep_modules`]).
fn module_history(worktree: &Path, timeout: Duration) -> Result<Vec<String>, String> {
    let DotGit::File { gitdir: admin } = dot_git(worktree) else {
        return Ok(Vec::new());
    };
    let Some(common) = common_dir_of_admin(&admin) else {
        return Ok(Vec::new());
    };
    if std::fs::symlink_metadata(admin.join("modules")).is_err() {
        return Ok(Vec::new());
    }
    let main = Git::for_dir(&common, timeout)
        .map_err(|e| e.to_string())?
        .with_git_dir(&common);
    super::stale::keep_modules(&main, &admin, &common)
}

/// Commits `commits` (all in the repository `git` runs in) under a new
/// `refs/boo/history/<worktree id>/<unix seconds>[-<n>]`: one commit of the
/// empty tree whose parents they are, with `message`.
pub fn keep_commits(
    git: &Git,
    worktree_id: &str,
    commits: &[String],
    message: &str,
    now: SystemTime,
) -> Result<Archived, String> {
    let err = |e: super::cli::GitCliError| e.to_string();
    let empty = git
        .run(&["hash-object", "-w", "-t", "tree", "/dev/null"])
        .map_err(err)?
        .stdout_str()
        .trim()
        .to_string();
    let name = format!("user.name={ARCHIVE_NAME}");
    let email = format!("user.email={ARCHIVE_EMAIL}");
    let mut args: Vec<&str> = vec![
        "-c",
        &name,
        "-c",
        &email,
        "commit-tree",
        &empty,
        "-m",
        message,
    ];
    for c in commits {
        args.push("-p");
        args.push(c);
    }
    let commit = git.run(&args).map_err(err)?.stdout_str().trim().to_string();
    let base = format!(
        "refs/boo/history/{}/{}",
        ref_component(worktree_id),
        unix_secs(now)
    );
    for n in 0..1000u32 {
        let reference = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let (st, _) = git
            .run_status(
                &[
                    "update-ref",
                    "-m",
                    "boo-reconciler: history kept before removal",
                    &reference,
                    &commit,
                    "",
                ],
                &[],
            )
            .map_err(err)?;
        if st.success() {
            return Ok(Archived { reference, commit });
        }
        let (exists, _) = git
            .run_status(&["show-ref", "--verify", "-q", &reference], &[])
            .map_err(err)?;
        if !exists.success() {
            return Err(format!("cannot create {reference}"));
        }
    }
    Err(format!("no free name for {base}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::preflight::unreferenced_history;
    use crate::git::testutil::{write, Fixture};

    #[test]
    fn history_only_the_reflog_reaches_survives_removal_and_gc() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["checkout", "-q", "--detach"]);
        write(&wt.join("x.txt"), "x\n");
        let dropped = f.commit_all(&wt, "dropped");
        f.git(&wt, &["reset", "-q", "--hard", "HEAD~1"]);
        let lost = unreferenced_history(&wt, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(lost, vec![dropped.clone()]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = keep_history(&wt, "w", &lost, now, DEFAULT_TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(a.reference, "refs/boo/history/w/1700000000");
        let again = keep_history(&wt, "w", &lost, now, DEFAULT_TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(again.reference, "refs/boo/history/w/1700000000-1");
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        f.expire_and_gc();
        assert_eq!(f.git(&f.repo, &["cat-file", "-t", &dropped]), "commit");
        assert_eq!(f.git(&f.repo, &["show", &format!("{dropped}:x.txt")]), "x");
        // Nothing else moved.
        assert_eq!(f.rev(&f.repo, "b"), f.rev(&f.repo, "main"));
    }

    /// A submodule initialised in the worktree keeps its git directory in
    /// the worktree's admin entry, which the removal deletes: its commits
    /// no remote-tracking ref of its own reaches (a local branch, one only
    /// its HEAD reflog reaches) are kept, with all they reach, before.
    #[test]
    fn a_submodules_own_commits_survive_the_removal_of_its_worktree() {
        let f = Fixture::new();
        let (wt, sub) = f.worktree_with_submodule("w");
        f.git(&sub, &["checkout", "-q", "-b", "local"]);
        write(&sub.join("b.txt"), "branch\n");
        let on_branch = f.commit_all(&sub, "on a local branch");
        write(&sub.join("b.txt"), "reflog\n");
        let reflog_only = f.commit_all(&sub, "then reset away");
        f.git(&sub, &["reset", "-q", "--hard", &on_branch]);
        let upstream = f.rev(&sub, "origin/HEAD");
        let a = keep_history(&wt, "w", &[], SystemTime::now(), DEFAULT_TIMEOUT)
            .unwrap()
            .expect("the submodule's commits are kept");
        let parents = f.git(&f.repo, &["rev-list", "--parents", "-n1", &a.reference]);
        assert!(parents.contains(&on_branch), "{parents}");
        assert!(parents.contains(&reflog_only), "{parents}");
        // What a remote-tracking ref reaches is the remote's to keep.
        assert!(!parents.contains(&upstream), "{parents}");
        f.git(
            &f.repo,
            &[
                "worktree",
                "remove",
                "--force",
                "--force",
                wt.to_str().unwrap(),
            ],
        );
        assert!(!f.repo.join(".git/worktrees/w").exists());
        f.expire_and_gc();
        for c in [&on_branch, &reflog_only, &upstream] {
            assert_eq!(f.git(&f.repo, &["cat-file", "-t", c]), "commit", "{c}");
        }
        assert_eq!(
            f.git(&f.repo, &["show", &format!("{reflog_only}:b.txt")]),
            "reflog"
        );
    }

    #[test]
    fn nothing_to_keep_writes_nothing() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let refs = f.git(&f.repo, &["for-each-ref"]);
        assert_eq!(
            keep_history(&wt, "w", &[], SystemTime::now(), DEFAULT_TIMEOUT).unwrap(),
            None
        );
        assert_eq!(f.git(&f.repo, &["for-each-ref"]), refs);
    }

    /// A detached HEAD commit whose patch main has with other whitespace,
    /// with no HEAD reflog: the preflight rightly finds no work (patch ids
    /// ignore whitespace), and the commit is still kept before removal.
    #[test]
    fn a_detached_head_commit_without_a_reflog_is_kept_whatever_its_patch_id() {
        let f = Fixture::new();
        write(&f.repo.join("p.txt"), "a b\n");
        f.commit_all(&f.repo, "spaced on main");
        let wt = f.detached("w", "main~1");
        f.git(&wt, &["config", "core.logAllRefUpdates", "false"]);
        write(&wt.join("p.txt"), "a  b\n");
        let head = f.commit_all(&wt, "spaced otherwise, detached");
        f.git(&f.repo, &["reflog", "expire", "--expire=now", "--all"]);
        let lost = unreferenced_history(&wt, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(lost, vec![head.clone()]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        keep_history(&wt, "w", &lost, now, DEFAULT_TIMEOUT)
            .unwrap()
            .unwrap();
        f.git(
            &f.repo,
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        f.expire_and_gc();
        assert_eq!(f.git(&f.repo, &["cat-file", "-t", &head]), "commit");
    }
}
