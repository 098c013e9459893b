//! Crash at any point converges: the real binary is killed at each named
//! crash point of a removal (src/failpoint.rs), started again, and the next
//! pass must converge with no false alarm and no person: the row
//! `removed`, the admin entry pruned, the branch kept, the trash emptied,
//! nothing outside the worktree touched.
//!
//! The crash points are compiled into the binary of the test build: the
//! `fail` dev-dependency turns on its `failpoints` feature under
//! `cargo test`, for the library and the binary alike (a plain `cargo
//! build` leaves them out). A point armed with `return` aborts the process
//! on the spot (SIGABRT: no destructor, no flush), as `kill -9` would.
//!
//! Both databases. The PostgreSQL host lock is keyed by the host id across
//! the database, so the tests of this file take turns.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{free_port, git, set_all, world_command, Db, Tree, World, HOST};

both_databases!(
    a_crash_right_after_the_rename_converges,
    a_crash_between_the_record_and_the_rename_converges,
    a_crash_after_the_admin_prune_converges,
    a_crash_before_the_row_update_converges,
    a_crash_in_the_middle_of_a_reclaim_converges,
    a_crash_in_the_middle_of_a_force_archive_converges,
    a_removal_that_outlasts_the_run_timeout_is_never_started_twice,
    sigterm_during_a_nudge_triggered_removal_finishes_it_before_exit_0,
);

/// One test at a time: they share the host id, hence the PostgreSQL lock.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The binary, for `w`'s database, host, root and labels.
fn bin(w: &World) -> Command {
    let mut c = world_command(w, &w.url);
    // Only the crash points each test arms.
    c.env_remove("FAILPOINTS");
    set_all(&mut c, &w.label_settings());
    // No daemon to nudge here: a port nobody listens on.
    set_all(&mut c, &[("http.listen", "127.0.0.1:9")]);
    c
}

/// `once [args]` to completion, with `FAILPOINTS` when given.
async fn once(w: &World, failpoints: Option<&str>, args: &[&str]) -> Output {
    let mut c = bin(w);
    c.arg("once").args(args);
    if let Some(f) = failpoints {
        c.env("FAILPOINTS", f);
    }
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn explain(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_killed(o: &Output) {
    assert_eq!(
        o.status.signal(),
        Some(nix::sys::signal::Signal::SIGABRT as i32),
        "the crash point did not kill the process: {}",
        explain(o)
    );
}

/// Every file under `dir` with its contents, as a crash may have left it.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::files(dir, Tree::HalfWay)
}

/// What the trash holds but the records of what was retired
/// (`<entry>.retired`).
fn trash_entries(w: &World) -> Vec<PathBuf> {
    trash_names(w)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".retired"))
        .collect()
}

/// The records in the trash.
fn trash_records(w: &World) -> Vec<PathBuf> {
    trash_names(w)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".retired"))
        .collect()
}

fn trash_names(w: &World) -> Vec<PathBuf> {
    match fs::read_dir(w.root.join(".boo-trash")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// An archived session's clean worktree `w1` beside a live session's
/// worktree `w2` with work in it, and a directory outside the root.
struct Scene {
    w: World,
    wt: PathBuf,
    tip: String,
    before: Vec<Vec<(String, Vec<u8>)>>,
    heads: String,
    /// The record a crash between it and its rename left, if any.
    unrenamed_record: Option<PathBuf>,
}

impl Scene {
    async fn new(db: Db, tracked_files: usize) -> Scene {
        let w = World::new(db).await;
        fs::write(w.outside.join("keep.txt"), "outside\n").unwrap();
        // A tracked symlink out of the root: retired and reclaimed as a
        // link, its target untouched.
        std::os::unix::fs::symlink(w.outside.join("keep.txt"), w.repo.join("link-out")).unwrap();
        git(&w.repo, &["add", "link-out"]);
        git(&w.repo, &["commit", "-q", "-m", "a link out"]);
        if tracked_files > 0 {
            for i in 0..tracked_files {
                let d = w.repo.join(format!("src/d{}", i % 10));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
            }
            git(&w.repo, &["add", "."]);
            git(&w.repo, &["commit", "-q", "-m", "many files"]);
        }
        let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
        let tip = git(&wt, &["rev-parse", "HEAD"]);
        let live = w.chat_worktree("s2", "c2", "w2", "open").await;
        fs::write(live.join("draft.txt"), "unsaved work\n").unwrap();
        let before = vec![files(&live), files(&w.outside), files(&w.repo)];
        let heads = git(&w.repo, &["for-each-ref", "refs/heads"]);
        Scene {
            w,
            wt,
            tip,
            before,
            heads,
            unrenamed_record: None,
        }
    }

    /// The crash left the removal's intent, and nothing concluding it.
    async fn interrupted_removal_announced(&self) {
        let open = self.w.store.open_intents(HOST).await.unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0].action, "remove_worktree");
        assert_eq!(
            open[0].detail["path"].as_str(),
            Some(self.wt.to_str().unwrap())
        );
    }

    /// The next pass records what it found of the interrupted removal.
    async fn interrupted_removal_concluded(&self) {
        let audit = self.w.audit().await;
        let found: Vec<_> = audit
            .iter()
            .filter(|r| r.action == "remove_worktree" && r.outcome == "interrupted")
            .collect();
        assert_eq!(found.len(), 1, "{audit:?}");
        assert!(found[0].intent_id.is_some());
        assert!(found[0].reason.contains("found:"), "{}", found[0].reason);
    }

    /// The next pass converges, and everything the issue lists holds.
    async fn converges(&self, args: &[&str]) {
        let w = &self.w;
        let entry = w.repo.join(".git/worktrees/w1");
        if entry.exists() && !self.wt.exists() {
            // Left stale by the crash: like any admin entry whose
            // directory is gone it waits out `worktrees.stale_entry_grace`
            // (what only it holds is kept when it goes).
            let out = once(w, None, args).await;
            assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
            assert!(entry.exists(), "pruned within its grace");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("stale_entry_grace"), "{text}");
        }
        let mut args = args.to_vec();
        args.extend(["--set", "worktrees.stale_entry_grace=0s"]);
        let out = once(w, None, &args).await;
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("kept_at_risk"), "a false alarm: {text}");
        assert!(!self.wt.exists(), "the worktree is gone from the root");
        assert_eq!(w.row_state("w1").await.0, "removed");
        let list = git(&w.repo, &["worktree", "list", "--porcelain"]);
        assert!(!list.contains(&self.wt.display().to_string()), "{list}");
        assert!(
            !w.repo.join(".git/worktrees/w1").exists(),
            "admin entry pruned"
        );
        assert_eq!(
            git(&w.repo, &["rev-parse", "boo/w1"]),
            self.tip,
            "branch kept"
        );
        assert_eq!(trash_entries(w), Vec::<PathBuf>::new(), "trash emptied");
        // A record goes with its entry; only one whose rename never
        // happened may stay (until it is an hour old).
        for r in trash_records(w) {
            assert_eq!(
                self.unrenamed_record.as_ref(),
                Some(&r),
                "outlived its entry"
            );
        }
        let live = w.root.join("w2");
        assert_eq!(
            vec![files(&live), files(&w.outside), files(&w.repo)],
            self.before,
            "nothing outside the worktree touched"
        );
        assert_eq!(git(&w.repo, &["for-each-ref", "refs/heads"]), self.heads);
        assert_eq!(w.row_state("w2").await.0, "active");
        let open = w.store.open_intents(HOST).await.unwrap();
        assert!(open.is_empty(), "every intent concluded: {open:?}");
        // And it stays converged: nothing left to do, no alarm.
        let again = once(w, None, &[]).await;
        assert_eq!(again.status.code(), Some(0), "{}", explain(&again));
    }
}

async fn crash_at(db: Db, point: &str) -> Scene {
    let _turn = TURN.lock().await;
    let s = Scene::new(db, 0).await;
    let out = once(&s.w, Some(&format!("{point}=return")), &[]).await;
    assert_killed(&out);
    s.interrupted_removal_announced().await;
    s
}

async fn a_crash_right_after_the_rename_converges(db: Db) {
    let s = crash_at(db, "remove.after_rename").await;
    assert!(!s.wt.exists(), "retired before the crash");
    assert_eq!(trash_entries(&s.w).len(), 1);
    assert_eq!(s.w.row_state("w1").await.0, "active", "row not written yet");
    assert!(s.w.repo.join(".git/worktrees/w1").exists());
    s.converges(&[]).await;
    s.interrupted_removal_concluded().await;
}

async fn a_crash_between_the_record_and_the_rename_converges(db: Db) {
    let mut s = crash_at(db, "trash.after_record").await;
    assert!(s.wt.is_dir(), "not renamed yet");
    assert_eq!(trash_entries(&s.w), Vec::<PathBuf>::new());
    let records = trash_records(&s.w);
    assert_eq!(records.len(), 1, "the record is written first");
    // It names the directory about to move (device, inode), durably.
    let st = fs::metadata(&s.wt).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::read_to_string(&records[0]).unwrap(),
        format!("{} {}\n", st.dev(), st.ino())
    );
    // The intent names the same directory and entry.
    let open = s.w.store.open_intents(HOST).await.unwrap();
    assert_eq!(open[0].detail["ino"].as_u64(), Some(st.ino()));
    let entry = open[0].detail["trash_entry"].as_str().unwrap().to_string();
    assert_eq!(
        records[0].file_name().unwrap().to_string_lossy(),
        format!("{entry}.retired")
    );
    s.unrenamed_record = Some(records[0].clone());
    s.converges(&[]).await;
    s.interrupted_removal_concluded().await;
}

async fn a_crash_after_the_admin_prune_converges(db: Db) {
    let s = crash_at(db, "remove.after_admin_prune").await;
    assert!(!s.w.repo.join(".git/worktrees/w1").exists());
    assert_eq!(s.w.row_state("w1").await.0, "active");
    s.converges(&[]).await;
    s.interrupted_removal_concluded().await;
}

async fn a_crash_before_the_row_update_converges(db: Db) {
    let s = crash_at(db, "remove.before_row_update").await;
    assert!(!s.wt.exists());
    assert_eq!(s.w.row_state("w1").await.0, "active");
    s.converges(&[]).await;
    s.interrupted_removal_concluded().await;
}

async fn a_crash_in_the_middle_of_a_reclaim_converges(db: Db) {
    let _turn = TURN.lock().await;
    let s = Scene::new(db, 400).await;
    let out = once(&s.w, Some("remove.between_entries=150*off->return"), &[]).await;
    assert_killed(&out);
    // The answer came first: the worktree was retired and its row written
    // before the reclaim began.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("retired to"), "{}", explain(&out));
    assert_eq!(s.w.row_state("w1").await.0, "removed");
    let left = trash_entries(&s.w);
    assert_eq!(left.len(), 1, "half deleted, still in the trash");
    let remaining = files(&left[0]).len();
    assert!(
        remaining > 0 && remaining < 400,
        "{remaining} files left: not in the middle"
    );
    s.converges(&[]).await;
}

async fn a_crash_in_the_middle_of_a_force_archive_converges(db: Db) {
    let _turn = TURN.lock().await;
    let s = Scene::new(db, 0).await;
    fs::write(s.wt.join("notes.txt"), "work in progress\n").unwrap();
    let out = once(&s.w, Some("archive.midway=return"), &["--force"]).await;
    assert_killed(&out);
    assert_eq!(
        fs::read(s.wt.join("notes.txt")).unwrap(),
        b"work in progress\n",
        "nothing removed before the archive is complete"
    );
    assert_eq!(git(&s.w.repo, &["for-each-ref", "refs/boo/archive"]), "");
    s.interrupted_removal_announced().await;
    let open = s.w.store.open_intents(HOST).await.unwrap();
    assert!(
        open[0].detail["archive_ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("refs/boo/archive/w1/")),
        "a force's intent names its archive ref: {:?}",
        open[0].detail
    );
    s.converges(&["--force"]).await;
    s.interrupted_removal_concluded().await;
    let archive = git(
        &s.w.repo,
        &["for-each-ref", "--format=%(refname)", "refs/boo/archive"],
    );
    assert!(!archive.is_empty(), "the forced removal archived first");
    assert_eq!(
        git(&s.w.repo, &["show", &format!("{archive}^3:notes.txt")]),
        "work in progress"
    );
}

/// A `run` process with `FAILPOINTS`, its log in a file; killed on drop.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    fn start(w: &World, failpoints: &str, settings: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = w.tmp.path().join(format!("daemon-{port}.log"));
        let mut c = bin(w);
        set_all(
            &mut c,
            &[
                ("http.listen", &format!("127.0.0.1:{port}")),
                ("loop.interval", "1h"),
                ("loop.jitter", "0s"),
                ("database.notify_channel", "boo_test_nobody"),
            ],
        );
        set_all(&mut c, settings);
        let child = c
            .arg("run")
            .env("FAILPOINTS", failpoints)
            .stderr(fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, log, port }
    }

    fn logged(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for(&self, text: &str) {
        for _ in 0..600 {
            if self.logged().contains(text) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the daemon did not log {text:?}:\n{}", self.logged());
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, then the exit code (within 30 s).
    async fn stop(&mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the daemon did not stop on SIGTERM:\n{}", self.logged());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scene whose session is open while the daemon starts, archived once
/// its start-up pass is done: the removal is the nudge's.
async fn daemon_scene(db: Db, failpoints: &str, settings: &[(&str, &str)]) -> (Scene, Daemon) {
    let s = Scene::new(db, 0).await;
    s.w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    s.w.sql("UPDATE chats SET status = 'open' WHERE id = 'c1'")
        .await;
    let d = Daemon::start(&s.w, failpoints, settings);
    d.wait_for("pass finished").await;
    s.w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c1'")
        .await;
    s.w.sql("UPDATE sessions SET status = 'archived' WHERE id = 's1'")
        .await;
    (s, d)
}

fn removals(audit: &[boo_reconciler::store::AuditRecord]) -> Vec<String> {
    audit
        .iter()
        .filter(|r| r.action == "remove_worktree" && r.outcome != "intent")
        .map(|r| r.outcome.clone())
        .collect()
}

async fn a_removal_that_outlasts_the_run_timeout_is_never_started_twice(db: Db) {
    let _turn = TURN.lock().await;
    // A run is abandoned after twice the pass timeout (2 s); the removal's
    // slow step takes 3 s.
    let (s, mut d) = daemon_scene(
        db,
        "remove.before_retire=sleep(3000)",
        &[("loop.pass_timeout", "1s")],
    )
    .await;
    let http = http_client();
    let first = http
        .post(d.url("/sessions/s1/reconcile"))
        .send()
        .await
        .unwrap();
    let status = first.status();
    let body = first.text().await.unwrap();
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body.contains("still working on worktree:") && body.contains("w1"),
        "{body}"
    );
    assert!(s.wt.exists(), "the slow step is still under way");
    // The follow-up waits for the claim and leaves the target to the run
    // that holds it.
    let second = http
        .post(d.url("/sessions/s1/reconcile"))
        .send()
        .await
        .unwrap();
    let body = second.text().await.unwrap();
    assert!(
        !s.wt.exists(),
        "the follow-up answered after the removal: {body}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    let mut outcomes = Vec::new();
    worktree_outcomes(&answer, &mut outcomes);
    assert!(
        outcomes.iter().all(|o| o != "done"),
        "the follow-up removed nothing itself: {body}"
    );
    for _ in 0..200 {
        if trash_entries(&s.w).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(d.stop().await, Some(0), "{}", d.logged());
    let audit = s.w.audit().await;
    let outcomes = removals(&audit);
    assert_eq!(
        outcomes.iter().filter(|o| *o == "done").count(),
        1,
        "started once, recorded once: {outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o == "failed"), "{outcomes:?}");
    s.converges(&[]).await;
}

async fn sigterm_during_a_nudge_triggered_removal_finishes_it_before_exit_0(db: Db) {
    let _turn = TURN.lock().await;
    let (s, mut d) = daemon_scene(db, "remove.before_retire=sleep(3000)", &[]).await;
    let url = d.url("/sessions/s1/reconcile");
    let nudge = tokio::spawn(async move { http_client().post(url).send().await });
    // The removal is in its slow step (the preflight takes well under 1 s).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        s.wt.exists(),
        "still in the slow step when the signal comes"
    );
    assert_eq!(d.stop().await, Some(0), "{}", d.logged());
    assert!(!s.wt.exists(), "the removal in flight finished before exit");
    assert_eq!(s.w.row_state("w1").await.0, "removed");
    assert_eq!(removals(&s.w.audit().await), vec!["done".to_string()]);
    let answer = nudge.await.unwrap();
    if let Ok(r) = answer {
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
    // Whatever the reclaimer had not freed yet, the next process does.
    s.converges(&[]).await;
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The outcomes of every result about a worktree in a JSON answer.
fn worktree_outcomes(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(t), Some(o)) = (m.get("target"), m.get("outcome")) {
                if t.as_str().is_some_and(|t| t.starts_with("worktree:")) {
                    out.push(o.as_str().unwrap_or_default().to_string());
                }
            }
            m.values().for_each(|v| worktree_outcomes(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| worktree_outcomes(v, out)),
        _ => {}
    }
}
