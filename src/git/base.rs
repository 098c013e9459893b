//! The bases a worktree's work is compared with when its row names no
//! `base_ref` (and for directories no row names): the branches the main
//! repository itself treats as "the" line of development.
//!
//! # Guarantees
//! - Only refs that exist are returned, each once: the main worktree's HEAD
//!   branch first (never a linked worktree's HEAD; nothing when the HEAD is
//!   detached or its branch unborn), then, remote by remote in name order,
//!   the branch `refs/remotes/<remote>/HEAD` points at
//!   (`fallback_bases_are_the_head_branch_and_the_remote_heads`,
//!   `a_detached_or_unborn_head_gives_no_base`).
//! - The answer is git's own: the git CLI reads the refs (packed, loose,
//!   reftable alike), with the repository's real configuration but hooks
//!   and fsmonitor off, no optional locks, no prompt, and no repository
//!   discovery (the git directory is named exactly).
//! - Bounded: each git call is killed after [`GIT_TIMEOUT`]; what could not
//!   be read is left out (fewer bases only ever mean more work kept).
//! - Run as the repository's owner when the controller is root, never with
//!   the controller's privileges.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::paths::common_dir_of_repo;

/// How long one git call may take before it is killed: reading a few refs
/// takes milliseconds, so this only bounds a hung file system or lock.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ref names to compare with when a worktree of `main_repo` has no
/// `base_ref`: `refs/heads/<the main worktree's HEAD branch>`, then
/// `refs/remotes/<remote>/<branch>` for every remote whose
/// `refs/remotes/<remote>/HEAD` names a branch that exists. Empty when
/// `main_repo` is not a repository or git cannot tell.
pub fn fallback_bases(main_repo: &Path) -> Vec<String> {
    let Some(common) = common_dir_of_repo(main_repo) else {
        return Vec::new();
    };
    let mut wanted: Vec<String> = Vec::new();
    // Exit 1 with nothing printed: HEAD is detached.
    if let Some(head) = git(&common, &["symbolic-ref", "-q", "HEAD"]) {
        let head = head.trim();
        if head.starts_with("refs/heads/") {
            wanted.push(head.to_string());
        }
    }
    // `*` matches across `/` here, so remotes with a `/` in their name are
    // found too; remote-tracking refs themselves are never listed (there
    // may be thousands).
    let remote_heads = git(
        &common,
        &[
            "for-each-ref",
            "--sort=refname",
            "--format=%(refname)%09%(symref)",
            "refs/remotes/*/HEAD",
        ],
    )
    .unwrap_or_default();
    for line in remote_heads.lines() {
        let Some((name, target)) = line.split_once('\t') else {
            continue;
        };
        let remote = name
            .strip_prefix("refs/remotes/")
            .and_then(|r| r.strip_suffix("/HEAD"));
        let Some(remote) = remote else { continue };
        // A HEAD of another remote's namespace is not this remote's
        // branch.
        if target.starts_with(&format!("refs/remotes/{remote}/"))
            && !wanted.contains(&target.into())
        {
            wanted.push(target.to_string());
        }
    }
    if wanted.is_empty() {
        return wanted;
    }
    // A symbolic ref may name a branch that does not exist (an unborn
    // HEAD, a remote branch pruned since): keep only those git lists. A
    // pattern also matches refs below it, so compare whole names.
    let mut args = vec!["for-each-ref", "--format=%(refname)"];
    args.extend(wanted.iter().map(String::as_str));
    let existing = git(&common, &args).unwrap_or_default();
    let existing: Vec<&str> = existing.lines().collect();
    wanted.retain(|w| existing.contains(&w.as_str()));
    wanted
}

/// Runs `git --git-dir=<common> <args>`; its stdout when it exits 0 within
/// [`GIT_TIMEOUT`], else `None`.
fn git(common: &Path, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(common)
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(common)
        // Whatever the controller's environment says, this repository is
        // the one named above.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_NAMESPACE")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    as_owner(&mut cmd, common);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(repo = %common.display(), error = %e, "cannot run git");
            return None;
        }
    };
    // Read while waiting: a full pipe must not look like a hang.
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + GIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                tracing::warn!(repo = %common.display(), ?args, "git timed out; killed");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    status.filter(|s| s.success()).map(|_| out)
}

/// When the controller runs as root, git runs as the owner of the git
/// directory (with that user's home, so that it reads that user's
/// configuration): the repository's own settings must not run anything
/// with root's privileges, and git would refuse a repository owned by
/// someone else anyway.
fn as_owner(cmd: &mut Command, common: &Path) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let Ok(meta) = std::fs::metadata(common) else {
        return;
    };
    if meta.uid() == 0 {
        return;
    }
    cmd.uid(meta.uid()).gid(meta.gid());
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
        Ok(Some(user)) => {
            cmd.env("HOME", user.dir);
        }
        // No such user: no home whose configuration could apply.
        _ => {
            cmd.env("HOME", "/nonexistent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testutil::{write, Fixture};

    #[test]
    fn fallback_bases_are_the_head_branch_and_the_remote_heads() {
        let f = Fixture::new();
        f.git(&f.repo, &["branch", "trunk"]);
        let clone = f.tmp.path().join("clone");
        f.git(
            f.tmp.path(),
            &[
                "clone",
                "-q",
                f.repo.to_str().unwrap(),
                clone.to_str().unwrap(),
            ],
        );
        assert_eq!(
            fallback_bases(&clone),
            ["refs/heads/main", "refs/remotes/origin/main"]
        );
        // A second remote whose HEAD is another branch; a local branch
        // checked out elsewhere (a linked worktree) changes nothing.
        f.git(
            &clone,
            &["remote", "add", "other", f.repo.to_str().unwrap()],
        );
        f.git(&clone, &["fetch", "-q", "other"]);
        f.git(&clone, &["remote", "set-head", "other", "trunk"]);
        let linked = f.root.join("l");
        f.git(
            &clone,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "feature",
                linked.to_str().unwrap(),
            ],
        );
        let want = [
            "refs/heads/main",
            "refs/remotes/origin/main",
            "refs/remotes/other/trunk",
        ];
        assert_eq!(fallback_bases(&clone), want);
        // The git directory works as well as the working directory; a
        // packed ref as well as a loose one.
        assert_eq!(fallback_bases(&clone.join(".git")), want);
        f.git(&clone, &["pack-refs", "--all"]);
        assert_eq!(fallback_bases(&clone), want);

        // A remote HEAD naming a branch that is gone is no base.
        f.git(&clone, &["update-ref", "-d", "refs/remotes/other/trunk"]);
        assert_eq!(
            fallback_bases(&clone),
            ["refs/heads/main", "refs/remotes/origin/main"]
        );
    }

    #[test]
    fn fallback_base_is_whatever_the_head_branch_is_named() {
        let f = Fixture::new();
        let repo = f.tmp.path().join("trunk-repo");
        std::fs::create_dir_all(&repo).unwrap();
        f.git(&repo, &["init", "-q", "-b", "trunk"]);
        write(&repo.join("a.txt"), "a\n");
        f.commit_all(&repo, "first");
        assert_eq!(fallback_bases(&repo), ["refs/heads/trunk"]);
    }

    #[test]
    fn a_detached_or_unborn_head_gives_no_base() {
        let f = Fixture::new();
        f.git(&f.repo, &["checkout", "-q", "--detach"]);
        assert_eq!(fallback_bases(&f.repo), Vec::<String>::new());

        let unborn = f.tmp.path().join("unborn");
        std::fs::create_dir_all(&unborn).unwrap();
        f.git(&unborn, &["init", "-q", "-b", "main"]);
        assert_eq!(fallback_bases(&unborn), Vec::<String>::new());

        // Not a repository (and no discovery upward into one that encloses
        // it).
        let plain = f.repo.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        assert_eq!(fallback_bases(&plain), Vec::<String>::new());
    }
}
