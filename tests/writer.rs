//! A process that is not an agent (no labels, its working directory
//! elsewhere) writing into a clean worktree while a pass removes it: what
//! it writes after the worktree was judged is never retired. The real
//! controller path, real git, a real second process; the write after the
//! preflight is injected at the `remove.before_retire` point with a
//! callback (in this process's registry, so these tests take the `fail`
//! scenario lock: one at a time).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boo_reconciler::act::Outcome;
use boo_reconciler::model::Scope;
use boo_reconciler::risk::AtRisk;
use boo_reconciler::testing::{local_user, LocalUser, OWNER};
use common::{Db, World};

/// The variables that turn [`writer`] into the writing process.
const WRITER_OUT: &str = "BOO_TEST_WRITER_OUT";
const WRITER_STAGING: &str = "BOO_TEST_WRITER_STAGING";
const WRITER_LOG: &str = "BOO_TEST_WRITER_LOG";
const WRITER_STOP: &str = "BOO_TEST_WRITER_STOP";

/// Not a test of its own: the body of the writing process started by
/// [`a_writer_loop_never_loses_a_write`] (this binary again, with the
/// variables above set; without them it does nothing). Until the stop
/// file appears it writes numbered files into the worktree's ignored
/// `target/out/`: each written whole in a staging directory outside,
/// then renamed in (one system call by path: it lands in the worktree,
/// or fails once the worktree is gone), mostly every few milliseconds,
/// now and then after a pause. Its log says `start N` before
/// each rename and `done N` or `failed N` after.
#[test]
fn writer() {
    let Some(out) = std::env::var_os(WRITER_OUT).map(PathBuf::from) else {
        return;
    };
    let var = |k| PathBuf::from(std::env::var_os(k).unwrap());
    let (staging, log, stop) = (var(WRITER_STAGING), var(WRITER_LOG), var(WRITER_STOP));
    let mut log = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    let mut seq = 0u64;
    while !stop.exists() {
        seq += 1;
        let name = format!("w{seq}");
        fs::write(staging.join(&name), format!("{seq}\n")).unwrap();
        // One write(2) a line: the test reads the log while it grows.
        let mut say = |line: String| log.write_all(line.as_bytes()).unwrap();
        say(format!("start {seq}\n"));
        match fs::rename(staging.join(&name), out.join(&name)) {
            Ok(()) => say(format!("done {seq}\n")),
            Err(e) => {
                say(format!("failed {seq} {e}\n"));
                let _ = fs::remove_file(staging.join(&name));
            }
        }
        // Mostly a write every few milliseconds, now and then a pause
        // long enough for a whole pass.
        let pause = if fastrand::u8(..8) == 0 {
            0..600
        } else {
            0..40
        };
        std::thread::sleep(Duration::from_millis(fastrand::u64(pause)));
    }
}

/// What the writer's log says: the writes started and those done.
fn read_log(log: &Path) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let (mut started, mut done) = (BTreeSet::new(), BTreeSet::new());
    let text = fs::read_to_string(log).unwrap();
    // A last line still being written is not read.
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    for line in whole.lines() {
        let mut it = line.split(' ');
        let (Some(what), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "start" => started.insert(n),
            "done" => done.insert(n),
            _ => false,
        };
    }
    (started, done)
}

/// The writer's files in `dir`, by number.
fn written_in(dir: &Path) -> BTreeSet<u64> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_prefix('w').and_then(|n| n.parse().ok()))
        .collect()
}

/// Every entry below `dir` with its size and mtime: what a retired entry
/// must keep from its pass to the end.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.path().to_path_buf(), m.len(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    out.sort();
    out
}

/// The trash entries (directories) under the root.
fn trash_entries(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(root.join(".boo-trash")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn append(path: &Path, what: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(what.as_bytes())
        .unwrap();
}

/// The `changed_during_removal` details among a pass's results.
fn changed_details(report: &boo_reconciler::report::PassReport) -> Vec<String> {
    report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::KeptAtRisk { reasons, .. } => Some(reasons),
            _ => None,
        })
        .flatten()
        .filter_map(|r| match r {
            AtRisk::ChangedDuringRemoval { detail } => Some(detail.clone()),
            _ => None,
        })
        .collect()
}

/// Whether the pass removed the worktree `id`.
fn removed(report: &boo_reconciler::report::PassReport, id: &str) -> bool {
    let dir = format!("/{id}\"");
    report.results.iter().any(|r| {
        matches!(r.outcome, Outcome::Done { .. }) && format!("{:?}", r.target).contains(&dir)
    })
}

/// A clean worktree of a closed session, with build output (ignored, not
/// work: nothing the preflight keeps it for).
async fn clean_worktree_with_build_output(w: &World) -> PathBuf {
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::create_dir_all(wt.join("target/obj")).unwrap();
    fs::write(wt.join("target/build.log"), "start\n").unwrap();
    wt
}

/// Arms `remove.before_retire` (after the preflight, before the rename)
/// to write into `wt` once: appends to `target/build.log`, makes
/// `target/obj/late.o`. Counts the evaluations.
fn write_once_after_the_preflight(wt: &Path) -> Arc<AtomicUsize> {
    let fired = Arc::new(AtomicUsize::new(0));
    let (wt, n) = (wt.to_path_buf(), Arc::clone(&fired));
    fail::cfg_callback("remove.before_retire", move || {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            append(
                &wt.join("target/build.log"),
                "written after the preflight\n",
            );
            fs::write(wt.join("target/obj/late.o"), "late").unwrap();
        }
    })
    .unwrap();
    fired
}

/// The writes of [`write_once_after_the_preflight`] are in place.
fn the_late_writes_are_in_place(wt: &Path) {
    assert_eq!(
        fs::read_to_string(wt.join("target/build.log")).unwrap(),
        "start\nwritten after the preflight\n"
    );
    assert_eq!(fs::read(wt.join("target/obj/late.o")).unwrap(), b"late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_the_preflight_keeps_the_worktree() {
    let scenario = fail::FailScenario::setup();
    let w = World::new(Db::Sqlite).await;
    let wt = clean_worktree_with_build_output(&w).await;
    let ino = fs::metadata(&wt).unwrap().ino();
    let fired = write_once_after_the_preflight(&wt);

    let report = w.once(Scope::Session("s1".into()), false).await;
    assert_eq!(fired.load(Ordering::SeqCst), 1, "{}", report.render());
    let details = changed_details(&report);
    assert_eq!(details.len(), 1, "{}", report.render());
    assert!(
        details[0].contains("target/build.log (written)"),
        "{}",
        details[0]
    );
    assert!(
        details[0].contains("target/obj/late.o (new)"),
        "{}",
        details[0]
    );
    assert!(
        details[0].contains(&format!("put back at {}", wt.display())),
        "{}",
        details[0]
    );
    // The very directory, back at its name with the writes; nothing in
    // the trash (no entry, no record, no marker).
    assert_eq!(fs::metadata(&wt).unwrap().ino(), ino);
    the_late_writes_are_in_place(&wt);
    let trash = w.root.join(".boo-trash");
    assert_eq!(
        fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing in the trash"
    );
    let (state, reasons) = w.row_state("w1").await;
    assert_eq!(state, "at_risk");
    assert!(reasons.unwrap().contains("changed_during_removal"));

    // Judged again next pass: nothing written meanwhile, retired.
    let report = w.once(Scope::Session("s1".into()), false).await;
    assert!(removed(&report, "w1"), "{}", report.render());
    assert!(!wt.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
    let entries = trash_entries(&w.root);
    assert_eq!(entries.len(), 1);
    the_late_writes_are_in_place(&entries[0]);
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_in_place_a_write_after_the_preflight_keeps_the_worktree() {
    let scenario = fail::FailScenario::setup();
    let w = World::new(Db::Sqlite).await;
    let wt = clean_worktree_with_build_output(&w).await;
    // The trash on another file system: the rename is impossible
    // (EXDEV), the worktree is deleted in place.
    let trash = w.root.join(".boo-trash");
    fs::create_dir(&trash).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0700", "tmpfs"])
        .arg(&trash)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    }
    let fired = write_once_after_the_preflight(&wt);
    let report = w.once(Scope::Session("s1".into()), false).await;
    let details = changed_details(&report);
    let second = w.once(Scope::Session("s1".into()), false).await;
    let _ = Command::new("umount").arg(&trash).status();
    assert_eq!(fired.load(Ordering::SeqCst), 2, "{}", report.render());
    assert_eq!(details.len(), 1, "{}", report.render());
    assert!(
        details[0].contains("target/obj/late.o (new)"),
        "{}",
        details[0]
    );
    // Deleted in place only once nothing changed after the judgement.
    assert!(removed(&second, "w1"), "{}", second.render());
    assert!(
        second.render().contains("deleted in place"),
        "{}",
        second.render()
    );
    assert!(!wt.exists());
    scenario.teardown();
}

/// Every user may traverse the test's directory; the repository, its
/// worktrees, the root and the directory outside belong to `user`.
fn give_world_to(w: &World, user: LocalUser) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&w.repo, &w.root, &w.outside] {
        for e in walkdir::WalkDir::new(dir) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

/// What the rounds of [`a_writer_loop_never_loses_a_write`] came to.
#[derive(Default)]
struct Tally {
    passes: usize,
    started: usize,
    done: usize,
    while_judged: usize,
    after_judged: usize,
    other: usize,
    retired_while_writing: usize,
}

/// A writer loop (a real process of the worktrees' owner, not an agent:
/// no labels, its working directory outside) writes into a clean
/// worktree's build output while passes run, round after round (a fresh
/// worktree each). The owner's tree is stamped with the owner's
/// credentials. What the test holds the controller to:
/// 1. a write the writer started after the retiring pass's preflight was
///    done (sampled at `remove.before_retire`) is never in the trash;
/// 2. a retired entry never changes after its pass: nothing lands in a
///    retired tree after its check (the writer writes by path, with one
///    rename, so once the worktree is in the trash its writes fail);
/// 3. every write the writer made is, at the end, in the worktree or in
///    a retired entry: nothing put back is lost.
///
/// Writes done before the judgement are build output, ignored, not
/// work: retiring them with the worktree is what a removal is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_loop_never_loses_a_write() {
    let scenario = fail::FailScenario::setup();
    let owner = local_user(OWNER);
    let w = World::new(Db::Sqlite).await;
    // At each retirement's last step before the rename: the writes
    // started by then, in the round's log.
    let log_now: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    let sampled: Arc<Mutex<Vec<u64>>> = Arc::default();
    {
        let (log_now, sampled) = (Arc::clone(&log_now), Arc::clone(&sampled));
        fail::cfg_callback("remove.before_retire", move || {
            if let Some(log) = log_now.lock().unwrap().as_ref() {
                let started = read_log(log).0.last().copied().unwrap_or(0);
                sampled.lock().unwrap().push(started);
            }
        })
        .unwrap();
    }
    // Every round's worktree made first: git refuses a repository of
    // another user, and the world is then the owner's.
    const ROUNDS: usize = 8;
    for round in 1..=ROUNDS {
        let (session, id) = (format!("s{round}"), format!("w{round}"));
        let wt = w
            .chat_worktree(&session, &format!("c{round}"), &id, "archived")
            .await;
        fs::create_dir_all(wt.join("target/out")).unwrap();
        fs::create_dir_all(w.outside.join(&id).join("staging")).unwrap();
    }
    give_world_to(&w, owner);
    let mut t = Tally::default();
    let began = Instant::now();
    let mut round = 0;
    while round < ROUNDS && (round < 2 || began.elapsed() < Duration::from_secs(15)) {
        round += 1;
        let_a_writer_write_through_passes(&w, owner, round, &log_now, &sampled, &mut t).await;
    }
    eprintln!(
        "{round} rounds, {} passes while writing: {} writes started, {} done; kept as being \
         written while judged {}, as changed after it was judged {}, otherwise {}; retired \
         while the writer ran {}",
        t.passes,
        t.started,
        t.done,
        t.while_judged,
        t.after_judged,
        t.other,
        t.retired_while_writing
    );
    assert!(t.passes >= 6, "the passes must overlap the writes");
    assert!(
        t.after_judged >= 1,
        "a write after the judgement must have been put back"
    );
    scenario.teardown();
}

/// One round of [`a_writer_loop_never_loses_a_write`]: worktree
/// `w<round>`, a writer, passes until it is retired (or 12 passes), then
/// the checks.
async fn let_a_writer_write_through_passes(
    w: &World,
    owner: LocalUser,
    round: usize,
    log_now: &Mutex<Option<PathBuf>>,
    sampled: &Mutex<Vec<u64>>,
    t: &mut Tally,
) {
    let (session, id) = (format!("s{round}"), format!("w{round}"));
    let wt = w.root.join(&id);
    let out = wt.join("target/out");
    let dir = w.outside.join(&id);
    let staging = dir.join("staging");
    // Made by the writer, the owner: the log in the owner's directory.
    let log = dir.join("writer.log");
    let stop = dir.join("stop");
    *log_now.lock().unwrap() = Some(log.clone());
    sampled.lock().unwrap().clear();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer", "--nocapture", "--test-threads=1"])
        .env(WRITER_OUT, &out)
        .env(WRITER_STAGING, &staging)
        .env(WRITER_LOG, &log)
        .env(WRITER_STOP, &stop)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .uid(owner.uid)
        .gid(owner.gid)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !log.exists() || read_log(&log).1.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "no writes");
        std::thread::sleep(Duration::from_millis(5));
    }
    let scope = || Scope::Session(session.clone());
    // The entry retired while the writer ran, what it held right after
    // its pass, and the last write started before its rename.
    let mut retired = None;
    for _ in 0..12 {
        let before = trash_entries(&w.root);
        let report = w.once(scope(), false).await;
        t.passes += 1;
        if removed(&report, &id) {
            let entry = trash_entries(&w.root)
                .into_iter()
                .find(|e| !before.contains(e))
                .expect("a new trash entry");
            let cut = *sampled.lock().unwrap().last().unwrap();
            retired = Some((listing(&entry), entry, cut));
            t.retired_while_writing += 1;
            break;
        }
        for d in changed_details(&report) {
            if d.contains("while it was judged") {
                t.while_judged += 1;
            } else if d.contains("after it was judged") {
                t.after_judged += 1;
            } else {
                t.other += 1;
            }
        }
    }
    fs::write(&stop, "").unwrap();
    assert!(child.wait().unwrap().success(), "the writer failed");
    let (all_started, done) = read_log(&log);
    t.started += all_started.len();
    t.done += done.len();

    let mut found = written_in(&out);
    if let Some((held, entry, cut)) = &retired {
        // 1 and 2.
        let in_trash = written_in(&entry.join("target/out"));
        let late: Vec<_> = in_trash.iter().filter(|n| *n > cut).collect();
        assert!(
            late.is_empty(),
            "writes started after the preflight were retired: {late:?}"
        );
        assert_eq!(
            &listing(entry),
            held,
            "{} changed after its check",
            entry.display()
        );
        found.extend(in_trash);
    }
    // 3.
    let lost: Vec<_> = done.difference(&found).collect();
    assert!(lost.is_empty(), "round {round}: writes lost: {lost:?}");

    // Once the writer is done, the next pass retires the worktree with
    // everything it wrote.
    if retired.is_none() {
        let before = trash_entries(&w.root);
        let report = w.once(scope(), false).await;
        assert!(removed(&report, &id), "{}", report.render());
        let entry = trash_entries(&w.root)
            .into_iter()
            .find(|e| !before.contains(e))
            .unwrap();
        assert_eq!(written_in(&entry.join("target/out")), done);
    }
}

/// The steps of a removal that read the worktree (the git preflight to
/// its last check: status, the walk, hidden changes, submodules, nested
/// repositories; a force's archive and its check; the reflog history)
/// change nothing its stamp covers: a forced pass over a worktree with
/// all of them archives and retires it, no `changed_during_removal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_s_own_steps_change_nothing_the_stamp_covers() {
    let w = World::new(Db::Sqlite).await;
    let wt = clean_worktree_with_build_output(&w).await;
    let up = w.outside.join("up");
    fs::create_dir_all(&up).unwrap();
    common::git(&up, &["init", "-q", "-b", "main"]);
    fs::write(up.join("lib.txt"), "lib\n").unwrap();
    common::git(&up, &["add", "."]);
    common::git(&up, &["commit", "-q", "-m", "lib"]);
    common::git(
        &wt,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            up.to_str().unwrap(),
            "sub",
        ],
    );
    common::git(&wt, &["commit", "-q", "-m", "submodule"]);
    append(&wt.join("sub/lib.txt"), "changed in the submodule\n");
    let nested = wt.join("vendor/lib");
    fs::create_dir_all(&nested).unwrap();
    common::git(&nested, &["init", "-q", "-b", "main"]);
    fs::write(nested.join("nested.txt"), "nested\n").unwrap();
    common::git(&nested, &["add", "."]);
    common::git(&nested, &["commit", "-q", "-m", "nested"]);
    fs::write(wt.join("notes.txt"), "untracked\n").unwrap();
    append(&wt.join("README.md"), "staged\n");
    common::git(&wt, &["add", "README.md"]);
    append(&wt.join("README.md"), "unstaged\n");
    fs::write(wt.join(".env"), "SECRET=1\n").unwrap();

    let report = w.once(Scope::Session("s1".into()), true).await;
    assert!(changed_details(&report).is_empty(), "{}", report.render());
    assert!(removed(&report, "w1"), "{}", report.render());
    assert!(!wt.exists());
}

/// Killed between the rename and the comparison, the controller never
/// judged what may have been written meanwhile: the entry keeps its
/// marker, and no later process deletes it (it is foreign, for an
/// operator to look at), while the next pass converges on the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_check_leaves_the_entry_to_an_operator() {
    let w = World::new(Db::Sqlite).await;
    let wt = clean_worktree_with_build_output(&w).await;
    let once = |failpoints: Option<&str>| {
        let mut c = common::world_command(&w, &w.url);
        c.env_remove("FAILPOINTS");
        if let Some(f) = failpoints {
            c.env("FAILPOINTS", f);
        }
        common::set_all(&mut c, &w.label_settings());
        common::set_all(&mut c, &[("http.listen", "127.0.0.1:9")]);
        c.arg("once").output().unwrap()
    };
    let out = once(Some("trash.before_check=return"));
    assert!(!out.status.success(), "aborted");
    assert!(!wt.exists(), "renamed before the crash");
    let entries = trash_entries(&w.root);
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let mut marker = entry.clone().into_os_string();
    marker.push(".checking");
    assert!(Path::new(&marker).exists(), "the marker is there");

    // The next process: the row converges, the entry stays (`once`
    // reclaims the trash before it exits).
    let out = once(None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(w.row_state("w1").await.0, "removed", "{text}");
    assert_eq!(trash_entries(&w.root), entries, "{text}");
    assert_eq!(
        fs::read_to_string(entry.join("target/build.log")).unwrap(),
        "start\n"
    );
    let controller = w.controller();
    let status = controller.executor().reclaimer().status();
    assert_eq!(status.foreign, entries, "reported");
    assert_eq!(status.entries, 0);
}
