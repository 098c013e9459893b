//! The service's documented deployment: a root controller over
//! repositories that belong to the orchestrator's user (here the real
//! second user `nobody`). It removes clean worktrees and keeps dirty ones,
//! as any other deployment; git runs as the owner; a force archive leaves
//! nothing root-owned in the owner's repository.
//!
//! These tests switch users, so the suite runs as root (as CI does).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use boo_reconciler::model::Scope;
use common::{archived_world, git, git_command, Db};

const NOBODY: u32 = 65534;

fn give_to_nobody(dir: &Path) {
    for e in walkdir::WalkDir::new(dir) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// `git` as the owner, the way the owner works in their repository.
fn git_as_nobody(dir: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    git_command(dir)
        .args(args)
        .env("HOME", "/nonexistent")
        .gid(NOBODY)
        .uid(NOBODY)
        .output()
        .unwrap()
}

fn root_owned(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.metadata().unwrap().uid() == 0)
        .map(|e| e.path().display().to_string())
        .collect()
}

async fn a_root_service_over_another_users_repositories_removes_clean_and_keeps_dirty(db: Db) {
    let w = archived_world(db).await;
    let clean = w.worktree("clean", "s1").await;
    let dirty = w.worktree("dirty", "s1").await;
    let forced = w.worktree("forced", "s1").await;
    fs::write(dirty.join("todo.txt"), "the owner's work\n").unwrap();
    fs::write(forced.join("draft.txt"), "forced draft\n").unwrap();
    fs::write(forced.join("README.md"), "edited\n").unwrap();
    // Every user may traverse the test's directory; the repository, its
    // worktrees and the root belong to the owner.
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(&w.repo);
    give_to_nobody(&w.root);

    let report = w.once(Scope::Session("s1".into()), false).await;
    assert!(!clean.exists(), "the clean worktree goes: {report:?}");
    assert!(dirty.exists() && forced.exists());
    assert_eq!(w.row_state("clean").await.0, "removed");
    let (state, reasons) = w.row_state("dirty").await;
    assert_eq!(state, "at_risk");
    assert!(reasons.unwrap().contains("todo.txt"));
    assert_eq!(
        fs::read_to_string(dirty.join("todo.txt")).unwrap(),
        "the owner's work\n"
    );

    // Force: archived, removed, and nothing root-owned left behind in the
    // owner's repository, which the owner can go on using.
    fs::remove_dir_all(&dirty).unwrap();
    let report = w.once(Scope::Session("s1".into()), true).await;
    assert!(!forced.exists(), "{report:?}");
    let common = w.repo.join(".git");
    assert_eq!(root_owned(&common), Vec::<String>::new());
    let reference = git(
        &w.repo,
        &[
            "-c",
            "safe.directory=*",
            "for-each-ref",
            "--format=%(refname)",
            "refs/boo/archive/forced/",
        ],
    );
    assert!(!reference.is_empty(), "no archive ref");
    let place = w.tmp.path().join("owners-place");
    fs::create_dir(&place).unwrap();
    give_to_nobody(&place);
    let restored = place.join("restored");
    let out = git_as_nobody(
        &w.repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            restored.to_str().unwrap(),
            &format!("{reference}^1"),
        ],
    );
    common::assert_succeeded(&out);
    let out = git_as_nobody(&restored, &["stash", "apply", "-q", "--index", &reference]);
    common::assert_succeeded(&out);
    assert_eq!(
        fs::read_to_string(restored.join("draft.txt")).unwrap(),
        "forced draft\n"
    );
    assert_eq!(
        fs::read_to_string(restored.join("README.md")).unwrap(),
        "edited\n"
    );
    fs::write(restored.join("more.txt"), "more\n").unwrap();
    assert!(git_as_nobody(&restored, &["add", "more.txt"])
        .status
        .success());
    let out = git_as_nobody(&restored, &["commit", "-q", "-m", "owner goes on"]);
    common::assert_succeeded(&out);
}

async fn a_directory_the_owner_cannot_read_is_unreadable_and_kept(db: Db) {
    let w = archived_world(db).await;
    let wt = w.worktree("w1", "s1").await;
    fs::create_dir_all(wt.join("d")).unwrap();
    fs::write(wt.join("d/secret.txt"), "cannot be read by its owner\n").unwrap();
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(&w.repo);
    give_to_nobody(&w.root);
    fs::set_permissions(wt.join("d"), fs::Permissions::from_mode(0o000)).unwrap();
    for force in [false, true] {
        w.once(Scope::Session("s1".into()), force).await;
        let (state, reasons) = w.row_state("w1").await;
        assert_eq!(state, "at_risk", "force {force}");
        assert!(reasons.unwrap().contains("unreadable"), "force {force}");
        // Not chmod'ed to get at it.
        assert_eq!(fs::metadata(wt.join("d")).unwrap().mode() & 0o777, 0o000);
    }
    fs::set_permissions(wt.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        fs::read_to_string(wt.join("d/secret.txt")).unwrap(),
        "cannot be read by its owner\n"
    );
}

/// The daemon run as the orchestrator's user (systemd `User=`): what that
/// user cannot read is kept as `unreadable`, never chmod'ed and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_running_as_the_owner_keeps_what_it_cannot_read() {
    use std::os::unix::process::CommandExt;
    let w = archived_world(Db::Sqlite).await;
    let wt = w.worktree("w1", "s1").await;
    let clean = w.worktree("w2", "s1").await;
    fs::create_dir_all(wt.join("d")).unwrap();
    fs::write(wt.join("d/notes.txt"), "the owner's notes\n").unwrap();
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(w.tmp.path());
    fs::set_permissions(wt.join("d"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_boo-reconciler"))
        .args(["--database-url", &w.url, "--host-id", common::HOST])
        .args(["--worktree-root", w.root.to_str().unwrap()])
        .args(["--set", "opencode.url=", "--set", "http.listen=127.0.0.1:1"])
        .args(["--set", &format!("processes.chat_label={}", w.labels[0])])
        .args(["once", "--json"])
        .current_dir(w.tmp.path())
        .env("HOME", "/nonexistent")
        .gid(NOBODY)
        .uid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("unreadable"), "{stdout}");
    assert!(!clean.exists(), "the clean worktree goes: {stdout}");
    assert_eq!(fs::metadata(wt.join("d")).unwrap().mode() & 0o777, 0o000);
    fs::set_permissions(wt.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        fs::read_to_string(wt.join("d/notes.txt")).unwrap(),
        "the owner's notes\n"
    );
}

both_databases!(
    a_root_service_over_another_users_repositories_removes_clean_and_keeps_dirty,
    a_directory_the_owner_cannot_read_is_unreadable_and_kept,
);
