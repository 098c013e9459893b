//! The directory judged is the directory retired, and the root and the
//! trash are checked, not trusted: against real local users (the
//! worktrees' owner and a hostile neighbour, `boo_reconciler::testing`),
//! a controller running as root, the real binary where start-up is what
//! is tested.
//!
//! These tests make users and change owners, so the suite runs as root
//! (as CI does).

mod common;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use boo_reconciler::act::Outcome;
use boo_reconciler::model::Scope;
use boo_reconciler::testing::{local_user, LocalUser, MALLORY, OWNER};
use common::{set_all, world_command, Db, World};
use tokio_util::sync::CancellationToken;

/// The variables that turn [`renamer`] into the renaming process.
const RENAMER_ROOT: &str = "BOO_TEST_RENAMER_ROOT";
const RENAMER_SECS: &str = "BOO_TEST_RENAMER_SECS";

/// Not a test of its own: the body of the process that renames
/// directories under a root in a loop, run as the worktrees' owner by
/// [`a_second_user_renaming_in_a_loop_never_gets_unjudged_work_retired`],
/// which starts this very binary again with `RENAMER_ROOT` set. Without it,
/// it does nothing. It swaps `clean` and `dirty` atomically
/// (`RENAME_EXCHANGE`: each name always holds one of the two) every few
/// milliseconds, stops by itself after `RENAMER_SECS`, and leaves each
/// directory at its own name.
#[test]
fn renamer() {
    let Some(root) = std::env::var_os(RENAMER_ROOT) else {
        return;
    };
    let secs: u64 = std::env::var(RENAMER_SECS).unwrap().parse().unwrap();
    let fd = nix::fcntl::open(
        Path::new(&root),
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let swap = || {
        nix::fcntl::renameat2(
            &fd,
            "clean",
            &fd,
            "dirty",
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
    };
    let ino = |name: &str| fs::symlink_metadata(Path::new(&root).join(name)).map(|m| m.ino());
    let clean_ino = ino("clean").unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut swaps = 0u64;
    while Instant::now() < end {
        if swap().is_ok() {
            swaps += 1;
        }
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..4000)));
    }
    // Each back at its own name, as long as both are still there.
    if ino("clean").is_ok_and(|i| i != clean_ino) {
        swap().unwrap();
    }
    eprintln!("renamer: {swaps} swaps");
}

/// Every user may traverse the test's directory; the repository, its
/// worktrees and the root belong to `user` (git runs as the owner).
fn give_world_to(w: &World, user: LocalUser) {
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&w.repo, &w.root] {
        for e in walkdir::WalkDir::new(dir) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

/// Every regular file below `dir` but git's own, with its contents.
fn work_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.file_name() != ".git")
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The directories directly under the root (the trash left out), by inode.
fn under_root_but_trash(root: &Path) -> Vec<(u64, PathBuf)> {
    fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != ".boo-trash")
        .map(|p| (fs::symlink_metadata(&p).unwrap().ino(), p))
        .collect()
}

/// The inodes of everything directly in the trash, and what its records
/// name.
fn in_trash(root: &Path) -> (Vec<u64>, Vec<String>) {
    let mut inodes = Vec::new();
    let mut records = Vec::new();
    let Ok(dir) = fs::read_dir(root.join(".boo-trash")) else {
        return (inodes, records);
    };
    for e in dir {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".retired") {
            records.push(fs::read_to_string(&p).unwrap());
        } else {
            inodes.push(fs::symlink_metadata(&p).unwrap().ino());
        }
    }
    (inodes, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_user_renaming_in_a_loop_never_gets_unjudged_work_retired() {
    let owner = local_user(OWNER);
    let w = World::new(Db::Sqlite).await;
    let clean = w.chat_worktree("s1", "c1", "clean", "archived").await;
    let dirty = w.chat_worktree("s2", "c2", "dirty", "open").await;
    fs::write(dirty.join("work.txt"), "the owner's unsaved work\n").unwrap();
    fs::write(dirty.join("README.md"), "edited, not committed\n").unwrap();
    // The owner may rename in the root (it is theirs, 0755): the user the
    // loop runs as. Nobody else may (a root writable by others is refused).
    give_world_to(&w, owner);
    let dev = fs::metadata(&w.root).unwrap().dev();
    let clean_ino = fs::metadata(&clean).unwrap().ino();
    let dirty_ino = fs::metadata(&dirty).unwrap().ino();
    let dirty_work = work_in(&dirty);
    assert_eq!(dirty_work.len(), 3, "{dirty_work:?}");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "renamer", "--nocapture", "--test-threads=1"])
        .env(RENAMER_ROOT, &w.root)
        .env(RENAMER_SECS, "8")
        .uid(owner.uid)
        .gid(owner.gid)
        .spawn()
        .unwrap();
    // Passes start once the renames have.
    let started = Instant::now();
    while fs::symlink_metadata(&clean).unwrap().ino() == clean_ino {
        assert!(started.elapsed() < Duration::from_secs(5), "no renames");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut passes = 0;
    let mut changed = 0;
    let mut kept = 0;
    while child.try_wait().unwrap().is_none() && passes < 60 {
        // Forced every other pass: what a force archives is what it retires.
        let report = w.once(Scope::Session("s1".into()), passes % 2 == 1).await;
        passes += 1;
        for r in &report.results {
            if let Outcome::KeptAtRisk { reasons, .. } = &r.outcome {
                kept += 1;
                changed += reasons
                    .iter()
                    .filter(|x| x.kind() == "changed_during_removal")
                    .count();
            }
        }
        // Never any dirty work in the trash, at any point.
        let (inodes, _) = in_trash(&w.root);
        assert!(
            !inodes.contains(&dirty_ino),
            "the dirty worktree was retired"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the renaming process failed");
    eprintln!("{passes} passes while renaming: {kept} kept, {changed} changed_during_removal");
    assert!(passes >= 3, "the passes must overlap the renames");

    // Once the renames stop, the next pass judges again and retires the
    // clean one (if no earlier pass did).
    let report = w.once(Scope::Session("s1".into()), false).await;
    let (inodes, records) = in_trash(&w.root);
    assert_eq!(inodes, vec![clean_ino], "{}", report.render());
    assert_eq!(records, vec![format!("{dev} {clean_ino}\n")]);
    assert_eq!(w.row_state("clean").await.0, "removed");
    assert_eq!(w.row_state("dirty").await.0, "active");
    // Every file of the dirty worktree is still there, outside the trash,
    // in the very directory it was in.
    let found: Vec<_> = under_root_but_trash(&w.root)
        .into_iter()
        .filter(|(ino, _)| *ino == dirty_ino)
        .collect();
    assert_eq!(found.len(), 1, "the dirty worktree is under the root");
    assert_eq!(work_in(&found[0].1), dirty_work);
    // The audit names only the clean one as retired.
    for r in w.audit().await {
        if r.action == "remove_worktree" && r.outcome == "done" {
            assert!(r.target.contains("clean"), "{r:?}");
        }
    }
}

/// The binary's `once` for `w`, with `settings`.
fn once(w: &World, settings: &[(&str, &str)]) -> Output {
    let mut c = world_command(w, &w.url);
    c.env_remove("FAILPOINTS");
    set_all(&mut c, &w.label_settings());
    set_all(&mut c, &[("http.listen", "127.0.0.1:9")]);
    set_all(&mut c, settings);
    c.arg("once").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_owned_by_another_user_or_writable_by_others_refuses_to_start() {
    let mallory = local_user(MALLORY);
    let w = World::new(Db::Sqlite).await;
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let root = w.root.display().to_string();

    // Another user's root: exit 2, naming it, its owner and mode, and how
    // to make a safe one.
    chown(&w.root, Some(mallory.uid), Some(mallory.gid)).unwrap();
    let out = once(&w, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&root), "{err}");
    assert!(
        err.contains(&format!("owned by {MALLORY} (uid {})", mallory.uid)),
        "{err}"
    );
    assert!(err.contains("mode 0755"), "{err}");
    assert!(err.contains("install -d -m 0755 -o root -g root"), "{err}");
    assert!(wt.is_dir(), "nothing acted on");
    assert_eq!(w.row_state("w1").await.0, "active");
    // Unless it is the orchestrator's user named in the configuration.
    let out = once(&w, &[("worktrees.owner", MALLORY)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!wt.exists(), "a configured owner's root is used");

    // World-writable (a sticky /tmp-like directory anyone could have made):
    // refused whoever owns it, the configured owner too.
    let wt = w.chat_worktree("s2", "c2", "w2", "archived").await;
    for (uid, gid, settings) in [
        (0, 0, vec![]),
        (mallory.uid, mallory.gid, vec![("worktrees.owner", MALLORY)]),
    ] {
        chown(&w.root, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&w.root, fs::Permissions::from_mode(0o1777)).unwrap();
        let out = once(&w, &settings);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&root) && err.contains("mode 1777"), "{err}");
        assert!(err.contains("others may write in it"), "{err}");
        assert!(wt.is_dir(), "nothing acted on");
    }
    // An unknown user in the setting is a configuration error naming it.
    fs::set_permissions(&w.root, fs::Permissions::from_mode(0o755)).unwrap();
    let out = once(&w, &[("worktrees.owner", "no-such-user-here")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("worktrees.owner"), "{err}");
}

/// The four plants: a symlink to a directory elsewhere, a regular file, a
/// directory of another user, a directory anyone may write in.
async fn a_planted_trash_fails_removals_and_is_never_used(plant: &str) {
    let mallory = local_user(MALLORY);
    let w = World::new(Db::Sqlite).await;
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::write(w.outside.join("keep.txt"), "keep\n").unwrap();
    let trash = w.root.join(".boo-trash");
    match plant {
        "symlink" => std::os::unix::fs::symlink(&w.outside, &trash).unwrap(),
        "file" => fs::write(&trash, "planted\n").unwrap(),
        "mallory" => {
            fs::create_dir(&trash).unwrap();
            fs::set_permissions(&trash, fs::Permissions::from_mode(0o700)).unwrap();
            chown(&trash, Some(mallory.uid), Some(mallory.gid)).unwrap();
        }
        _ => {
            fs::create_dir(&trash).unwrap();
            fs::set_permissions(&trash, fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let outside_before = fs::read_dir(&w.outside).unwrap().count();
    let report = w.once(Scope::Host, false).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed { error } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{plant}: {}", report.render());
    let error = failed[0];
    assert!(
        error.contains(&trash.display().to_string()),
        "{plant}: {error}"
    );
    let named = match plant {
        "symlink" => format!("symlink (to {})", w.outside.display()),
        "file" => "regular file".into(),
        "mallory" => format!("owned by {MALLORY} (uid {})", mallory.uid),
        _ => "mode 0777".into(),
    };
    assert!(error.contains(&named), "{plant}: {error}");
    assert!(
        error.contains("rm ") || error.contains("mv "),
        "what to do: {error}"
    );
    // Nothing moved, nothing went into it or through it.
    assert!(
        wt.join(".git").is_file(),
        "{plant}: the worktree is in place"
    );
    assert_eq!(w.row_state("w1").await.0, "active");
    assert_eq!(fs::read_dir(&w.outside).unwrap().count(), outside_before);
    assert_eq!(
        fs::read_to_string(w.outside.join("keep.txt")).unwrap(),
        "keep\n"
    );
    match plant {
        "symlink" => assert!(fs::symlink_metadata(&trash).unwrap().is_symlink()),
        "file" => assert_eq!(fs::read_to_string(&trash).unwrap(), "planted\n"),
        _ => assert_eq!(fs::read_dir(&trash).unwrap().count(), 0, "{plant}"),
    }
    // The reclaimer reports it and touches nothing either.
    let controller = w.controller();
    let status = controller.executor().reclaimer().status();
    assert!(
        status
            .errors
            .iter()
            .any(|e| e.error.contains(&trash.display().to_string())),
        "{plant}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trash_planted_as_a_symlink_is_never_followed() {
    a_planted_trash_fails_removals_and_is_never_used("symlink").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trash_planted_as_a_file_is_never_used() {
    a_planted_trash_fails_removals_and_is_never_used("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trash_owned_by_another_user_is_never_used() {
    a_planted_trash_fails_removals_and_is_never_used("mallory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trash_others_may_write_in_is_never_used() {
    a_planted_trash_fails_removals_and_is_never_used("0777").await;
}

async fn a_live_worktree_renamed_into_the_trash_is_never_reclaimed(db: Db) {
    let owner = local_user(OWNER);
    let w = World::new(db).await;
    // A retirement makes the trash, as the controller makes it.
    let gone = w.chat_worktree("s1", "c1", "gone", "archived").await;
    let live = w.chat_worktree("s2", "c2", "live", "open").await;
    for d in ["v1.2", "data.7"] {
        fs::create_dir_all(live.join(d)).unwrap();
        fs::write(live.join(d).join("keep.txt"), format!("{d}\n")).unwrap();
    }
    give_world_to(&w, owner);
    let report = w.once(Scope::Host, false).await;
    assert!(!gone.exists(), "{}", report.render());
    let work = work_in(&live);
    // The live worktree renamed into the trash under a name of the
    // entry's shape. (The trash is the controller's 0700 directory: only
    // the controller's user can do this, as when it runs as the
    // orchestrator's user, or an older trash was open to others.)
    let planted = w.root.join(".boo-trash/live.1764000000000000000");
    fs::rename(&live, &planted).unwrap();
    let controller = w.controller();
    let swept = controller
        .executor()
        .reclaimer()
        .sweep(&CancellationToken::new())
        .await;
    assert_eq!(swept.reclaimed, 1, "only the retired one: {swept:?}");
    let report = w.once(Scope::Host, false).await;
    controller
        .executor()
        .reclaimer()
        .sweep(&CancellationToken::new())
        .await;
    assert_eq!(work_in(&planted), work, "{}", report.render());
    let status = controller.executor().reclaimer().status();
    assert_eq!(status.entries, 0);
    assert_eq!(status.foreign, vec![planted.clone()], "reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worktree_renamed_into_the_trash_is_never_reclaimed_sqlite() {
    a_live_worktree_renamed_into_the_trash_is_never_reclaimed(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worktree_renamed_into_the_trash_is_never_reclaimed_postgres() {
    a_live_worktree_renamed_into_the_trash_is_never_reclaimed(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_the_trash_is_refused() {
    let w = World::new(Db::Sqlite).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    fs::write(path.join("notes.md"), "untracked\n").unwrap();
    let report = w.once(Scope::Host, true).await;
    assert!(!path.exists(), "{}", report.render());
    let restore = |to: &Path| {
        let mut c = world_command(&w, &w.url);
        c.args(["restore", "w1", "--to"]).arg(to).output().unwrap()
    };
    let trash = w.root.join(".boo-trash");
    for to in [
        trash.join("back"),
        trash.clone(),
        w.root.join("x/../.boo-trash/back2"),
    ] {
        let out = restore(&to);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", to.display());
        assert!(err.contains("inside the controller's trash"), "{err}");
        assert!(err.contains(&to.display().to_string()), "{err}");
    }
    assert!(!trash.join("back").exists() && !trash.join("back2").exists());
    // The same archive restores anywhere else.
    let out = restore(&w.outside.join("back"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(w.outside.join("back/notes.md")).unwrap(),
        "untracked\n"
    );
}

/// What a force archived is what it retires: a directory swapped into the
/// worktree's place after the archive (the binary held at
/// `remove.before_retire`) is neither retired nor moved, the worktree is
/// kept as `changed_during_removal`, and once things are back the next
/// forced pass archives and retires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_retires_only_the_directory_it_archived() {
    let w = World::new(Db::Sqlite).await;
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::write(wt.join("draft.txt"), "forced draft\n").unwrap();
    let other = w.chat_worktree("s2", "c2", "w2", "open").await;
    fs::write(other.join("work.txt"), "live work\n").unwrap();
    let (wt_work, other_work) = (work_in(&wt), work_in(&other));
    let archives = || {
        common::git(
            &w.repo,
            &[
                "for-each-ref",
                "--format=%(refname)",
                "refs/boo/archive/w1/",
            ],
        )
    };

    let mut c = world_command(&w, &w.url);
    c.env("FAILPOINTS", "remove.before_retire=sleep(4000)");
    set_all(&mut c, &w.label_settings());
    set_all(&mut c, &[("http.listen", "127.0.0.1:9")]);
    let child = c
        .args(["once", "--force"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The archive is written (and checked) before the held step.
    let started = Instant::now();
    while archives().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no archive");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let away = w.root.join("w1-away");
    fs::rename(&wt, &away).unwrap();
    fs::rename(&other, &wt).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("changed while it was being removed"),
        "{text}"
    );
    // Nothing moved: what was swapped in, and the archived one, in place.
    assert_eq!(work_in(&wt), other_work);
    assert_eq!(work_in(&away), wt_work);
    assert!(in_trash(&w.root).0.is_empty(), "nothing retired");
    let (state, reasons) = w.row_state("w1").await;
    assert_eq!(state, "at_risk");
    assert!(reasons.unwrap().contains("changed_during_removal"));

    // Back in place: judged again, archived again, retired.
    fs::rename(&wt, &other).unwrap();
    fs::rename(&away, &wt).unwrap();
    let out = once(&w, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let mut c = world_command(&w, &w.url);
    c.env_remove("FAILPOINTS");
    set_all(&mut c, &w.label_settings());
    set_all(&mut c, &[("http.listen", "127.0.0.1:9")]);
    let out = c.args(["once", "--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!wt.exists());
    assert_eq!(work_in(&other), other_work);
    assert_eq!(w.row_state("w1").await.0, "removed");
}
