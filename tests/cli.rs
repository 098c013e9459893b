//! The binary as an operator runs it: exit codes and messages.

mod common;

use std::process::Command;

use common::{free_port, git};

fn bin() -> Command {
    let mut c = common::bin_command();
    // A label no process carries: these passes must never see (let alone
    // stop) the agents other tests spawn.
    c.env(
        "BOO_RECONCILER_PROCESSES_CHAT_LABEL",
        format!("BOO_TEST_NOBODY_{}", fastrand::u64(..)),
    );
    c
}

/// [`bin`] working in `dir`.
fn bin_in(dir: &std::path::Path) -> Command {
    let mut c = bin();
    c.current_dir(dir);
    c
}

/// [`bin_in`] `dir`, with the worktree root `dir/root`.
fn bin_with_root(dir: &std::path::Path) -> Command {
    let mut c = bin_in(dir);
    c.arg("--worktree-root").arg(dir.join("root"));
    c
}

#[test]
fn bad_configuration_value_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = bin_in(dir.path());
    plan.env("BOO_RECONCILER_LOOP_INTERVAL", "soon").arg("plan");
    let needles = ["loop.interval", "soon", "BOO_RECONCILER_LOOP_INTERVAL"];
    expect_exit(code_and_stderr(&mut plan), 2, &needles);
}

#[test]
fn bad_value_in_file_exits_2_and_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[loop]\nmax_parallel_actions = 0\n").unwrap();
    let got = code_and_stderr(bin_in(dir.path()).arg("--config").arg(&file).arg("once"));
    expect_exit(got, 2, &["loop.max_parallel_actions", "c.toml"]);
}

#[test]
fn root_that_is_a_symlink_or_slash_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    for root in ["/".to_string(), link.display().to_string()] {
        let got = code_and_stderr(bin_in(dir.path()).args(["--worktree-root", &root, "plan"]));
        expect_exit(got, 2, &["worktree root"]);
    }
}

#[test]
fn unreachable_database_names_the_url_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut once = bin_with_root(dir.path());
    once.args([
        "--database-url",
        "postgres://boo:hunter2@127.0.0.1:1/nowhere",
    ])
    .arg("once");
    let err = expect_exit(code_and_stderr(&mut once), 1, &["127.0.0.1:1/nowhere"]);
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn once_on_the_embedded_default_converges_on_an_empty_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin_with_root(dir.path())
        .args(["once", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("boo-reconciler.db").exists());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"], serde_json::json!([]));
}

#[test]
fn plan_creates_nothing_not_even_the_root_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (code, err) = code_and_stderr(
        bin_in(dir.path())
            .arg("--worktree-root")
            .arg(&root)
            .arg("plan"),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
    assert!(!root.exists());
    assert!(!dir.path().join("boo-reconciler.db").exists());
}

#[test]
fn run_stops_cleanly_on_sigterm_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    // Every line must parse as JSON: `spawn_run`'s reader panics at one
    // that does not, and the messages awaited never come.
    let (mut child, rx) = spawn_hourly(&mut bin_with_root(dir.path()), "127.0.0.1:0", &[]);
    // The first pass runs at start; wait for its summary.
    let seen = wait_for(&rx, "pass finished");
    assert!(seen.iter().any(|m| m == "controller started"), "{seen:?}");
    stops_cleanly_on_sigterm(&mut child, &rx);
}

#[test]
fn run_refuses_a_remote_listen_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let got =
        code_and_stderr(bin_with_root(dir.path()).args(["--set", "http.listen=0.0.0.0:0", "run"]));
    expect_exit(got, 2, &["http.token", "allow_insecure_remote"]);
}

/// Runs `plan` in a fresh directory with `env` and `args`; its exit code
/// and standard error.
fn plan_with(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    let mut cmd = bin_with_root(dir.path());
    cmd.args(args).arg("plan");
    for (k, v) in env {
        cmd.env(k, v);
    }
    code_and_stderr(&mut cmd)
}

/// Runs `cmd` to its end; its exit code and standard error.
fn code_and_stderr(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks that a run ([`code_and_stderr`]'s answer) exited with `code` and
/// named each of `needles` on standard error; that standard error.
fn expect_exit((got, err): (Option<i32>, String), code: i32, needles: &[&str]) -> String {
    assert_eq!(got, Some(code), "expected one naming {needles:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    err
}

#[test]
fn a_label_that_ordinary_processes_carry_is_refused() {
    for (key, value) in [
        ("processes.chat_label", "PATH"),
        ("processes.agent_label", "HOME"),
        ("processes.session_label", "LC_ALL"),
    ] {
        let got = plan_with(&[], &["--set", &format!("{key}={value}")]);
        let needles = [
            key,
            &format!("{value:?}"),
            "from the command line",
            "ordinary processes do not carry",
        ];
        expect_exit(got, 2, &needles);
    }
    let got = plan_with(&[("BOO_RECONCILER_PROCESSES_CHAT_LABEL", "boo_chat")], &[]);
    expect_exit(got, 2, &["from BOO_RECONCILER_PROCESSES_CHAT_LABEL"]);
}

#[test]
fn two_labels_with_one_name_are_refused() {
    let got = plan_with(
        &[("BOO_RECONCILER_PROCESSES_CHAT_LABEL", "MY_LABEL")],
        &["--set", "processes.agent_label=MY_LABEL"],
    );
    expect_exit(got, 2, &["processes.agent_label", "processes.chat_label"]);
}

#[test]
fn an_unknown_boo_reconciler_variable_exits_2_naming_the_closest_setting() {
    let got = plan_with(&[("BOO_RECONCILER_WORKTREE_ROOT", "/srv/elsewhere")], &[]);
    let needles = [
        "BOO_RECONCILER_WORKTREE_ROOT",
        "BOO_RECONCILER_WORKTREES_ROOT",
        "worktrees.root",
    ];
    expect_exit(got, 2, &needles);
    // The token and the log filter are variables of the prefix too.
    let dir = tempfile::tempdir().unwrap();
    let mut once = bin_with_root(dir.path());
    once.env("BOO_RECONCILER_TOKEN", "t0ken")
        .env("BOO_RECONCILER_LOG", "info")
        .arg("once");
    expect_exit(code_and_stderr(&mut once), 0, &[]);
}

#[test]
fn a_duration_beyond_the_bound_exits_2_never_a_panic() {
    for (key, var) in [
        ("loop.interval", "BOO_RECONCILER_LOOP_INTERVAL"),
        ("loop.pass_timeout", "BOO_RECONCILER_LOOP_PASS_TIMEOUT"),
        (
            "processes.term_grace",
            "BOO_RECONCILER_PROCESSES_TERM_GRACE",
        ),
    ] {
        let got = plan_with(&[(var, "4000000000000000h")], &[]);
        expect_exit(got, 2, &[key, "4000000000000000h", var, "at most 365d"]);
    }
}

#[test]
fn run_at_the_duration_bound_serves_status_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, rx) = spawn_run(
        bin_with_root(dir.path())
            .args(["--set", &format!("http.listen=127.0.0.1:{port}")])
            .args(["--set", "loop.interval=365d", "--set", "loop.jitter=365d"])
            .args(["--set", "loop.pass_timeout=365d"]),
        &[],
    );
    wait_for(&rx, "pass finished");
    // The next pass is due in a year: /status shows it rather than panic.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_root_inside_a_system_directory_exits_2() {
    for root in ["/usr/lib", "/etc/ssh", "/var/lib/postgresql/15"] {
        let dir = tempfile::tempdir().unwrap();
        let got = code_and_stderr(bin_in(dir.path()).args(["--worktree-root", root, "once"]));
        expect_exit(got, 2, &[root, "lies inside the system directory"]);
        assert!(!dir.path().join("boo-reconciler.db").exists());
    }
}

#[test]
fn a_root_that_contains_the_database_or_the_configuration_file_exits_2() {
    // The embedded default database, in the working directory, inside the
    // root.
    let dir = tempfile::tempdir().unwrap();
    let got = code_and_stderr(
        bin_in(dir.path())
            .arg("--worktree-root")
            .arg(dir.path())
            .arg("once"),
    );
    expect_exit(
        got,
        2,
        &["contains the database file (database.url) boo-reconciler.db"],
    );
    assert!(!dir.path().join("boo-reconciler.db").exists());

    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let file = root.join("c.toml");
    std::fs::write(&file, "[loop]\ninterval = \"1m\"\n").unwrap();
    let mut plan = bin_in(dir.path());
    plan.arg("--config")
        .arg(&file)
        .arg("--worktree-root")
        .arg(&root);
    let got = code_and_stderr(plan.arg("plan"));
    expect_exit(got, 2, &["contains the configuration file", "c.toml"]);
}

#[test]
fn a_root_that_contains_a_main_repository_named_by_a_row_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let db = dir.path().join("boo.db");
    let url = format!("sqlite://{}", db.display());
    let repo = root.join("projects/app");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = boo_reconciler::store::Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
            .execute_raw(&format!(
                "INSERT INTO worktrees (id, session_id, repo_path, path, host, state) \
                 VALUES ('w1', 's1', '{}', '{}/w1', 'h1', 'removed')",
                repo.display(),
                root.display()
            ))
            .await
            .unwrap();
    });
    let run = |host: &str| {
        bin_in(dir.path())
            .args(["--database-url", &url, "--host-id", host])
            .arg("--worktree-root")
            .arg(&root)
            .arg("once")
            .output()
            .unwrap()
    };
    let out = run("h1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("contains the main repository"), "{err}");
    assert!(err.contains("projects/app"), "{err}");
    // Another host's rows are not this host's repositories.
    let out = run("h2");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `run` process whose JSON log messages arrive on a channel; stderr is
/// drained by a thread of its own so the daemon never blocks on it.
/// A `run` process, killed and reaped if a test ends without stopping it.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

fn spawn_run(cmd: &mut Command, run_args: &[&str]) -> (Daemon, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .args(["--log-format", "json", "run"])
        .args(run_args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let msg = v["fields"]["message"].as_str().unwrap_or_default();
            if tx.send(msg.to_string()).is_err() {
                return;
            }
        }
    });
    (Daemon(child), rx)
}

/// [`spawn_run`] with the HTTP server on `listen` and the next pass an
/// hour away: only the first pass runs within a test.
fn spawn_hourly(
    cmd: &mut Command,
    listen: &str,
    run_args: &[&str],
) -> (Daemon, std::sync::mpsc::Receiver<String>) {
    cmd.args(["--set", "loop.interval=1h"])
        .arg("--set")
        .arg(format!("http.listen={listen}"));
    spawn_run(cmd, run_args)
}

/// Waits for the message `want`; every message seen until then.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(m) if m == want => return seen,
            Ok(m) => seen.push(m),
            Err(e) => panic!("no {want:?} ({e}); saw {seen:?}"),
        }
    }
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Sends `child` SIGTERM and checks that it exits 0, having logged that it
/// stopped.
fn stops_cleanly_on_sigterm(child: &mut Daemon, rx: &std::sync::mpsc::Receiver<String>) {
    signal(child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let rest: Vec<String> = rx.iter().collect();
    assert!(rest.iter().any(|m| m == "stopped"), "{rest:?}");
}

#[test]
fn sighup_is_logged_and_ignored_and_run_still_stops_cleanly_on_sigterm() {
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = spawn_hourly(&mut bin_with_root(dir.path()), "127.0.0.1:0", &[]);
    wait_for(&rx, "pass finished");
    for _ in 0..3 {
        signal(&child, Signal::SIGHUP);
        let seen = wait_for(
            &rx,
            "SIGHUP ignored: the configuration is read only at start; restart to apply a changed one",
        );
        assert!(seen.is_empty(), "{seen:?}");
    }
    assert!(child.try_wait().unwrap().is_none(), "run died on SIGHUP");
    stops_cleanly_on_sigterm(&mut child, &rx);
}

/// A worktree `<root>/w1` of a repository holding `dirs` × `files`
/// committed files (nothing at risk), whose session s1 is archived: the
/// next pass of host h1 removes it.
struct ArchivedWorktree {
    dir: tempfile::TempDir,
    url: String,
    root: std::path::PathBuf,
    wt: std::path::PathBuf,
}

impl ArchivedWorktree {
    fn new(dirs: usize, files: usize) -> ArchivedWorktree {
        let dir = tempfile::tempdir().unwrap();
        let (repo, root) = (dir.path().join("repo"), dir.path().join("root"));
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        for d in 0..dirs {
            let sub = repo.join(format!("d{d:03}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..files {
                std::fs::write(sub.join(format!("f{f:03}")), "x").unwrap();
            }
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "files"]);
        let wt = root.join("w1");
        git(
            &repo,
            &["worktree", "add", "-q", "-b", "wt1", wt.to_str().unwrap()],
        );
        let url = format!("sqlite://{}", dir.path().join("boo.db").display());
        let w = ArchivedWorktree { dir, url, root, wt };
        w.sql("INSERT INTO sessions (id, status) VALUES ('s1', 'archived')");
        w.sql(&format!(
            "INSERT INTO worktrees (id, session_id, repo_path, path, branch, host) \
             VALUES ('w1', 's1', '{}', '{}', 'wt1', 'h1')",
            repo.display(),
            w.wt.display()
        ));
        w
    }

    fn sql(&self, statement: &str) {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = boo_reconciler::store::Store::connect(&self.url)
                .await
                .unwrap();
            store.migrate().await.unwrap();
            store.execute_raw(statement).await.unwrap();
        });
    }

    fn row_state(&self) -> Vec<Vec<Option<String>>> {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = boo_reconciler::store::Store::connect(&self.url)
                .await
                .unwrap();
            store
                .query_strings("SELECT state FROM worktrees WHERE id = 'w1'")
                .await
                .unwrap()
        })
    }

    /// The binary aimed at this host, its database and its root.
    fn bin(&self) -> Command {
        let mut c = bin();
        c.current_dir(self.dir.path())
            .args(["--database-url", &self.url, "--host-id", "h1"])
            .arg("--worktree-root")
            .arg(&self.root);
        c
    }
}

#[test]
fn sighup_during_a_removal_does_not_stop_it() {
    use nix::sys::signal::Signal;
    const DIRS: usize = 150;
    // Many committed files: deleting them takes long enough to be caught
    // half way.
    let w = ArchivedWorktree::new(DIRS, 100);
    let wt = w.wt.clone();
    let entries = || std::fs::read_dir(&wt).map(|d| d.count()).ok();
    let full = entries().unwrap();
    assert_eq!(full, DIRS + 1, "the directories and .git");

    let (mut child, rx) = spawn_hourly(&mut w.bin(), "127.0.0.1:0", &[]);
    // The first pass retires the worktree into the trash at once; the
    // reclaimer then deletes its files in the background: SIGHUP once that
    // deletion has begun.
    let trash = w.root.join(".boo-trash");
    let retired = || {
        std::fs::read_dir(&trash)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_dir())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(entry) = retired() {
            match std::fs::read_dir(&entry).map(|d| d.count()) {
                Ok(n) if n < full => break,
                Ok(_) => {}
                Err(_) => panic!("the reclaim finished before it could be caught half way"),
            }
        }
        assert!(std::time::Instant::now() < deadline, "no reclaim began");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    signal(&child, Signal::SIGHUP);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &String| m.starts_with("SIGHUP ignored"))
    {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(m) => seen.push(m),
            Err(e) => panic!("no SIGHUP log line ({e}); saw {seen:?}"),
        }
    }
    assert!(!wt.exists(), "the worktree was retired: {seen:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while retired().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reclaim did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "run died on SIGHUP");
    signal(&child, Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(w.row_state(), vec![vec![Some("removed".to_string())]]);
}

#[test]
fn run_dry_run_plans_reports_and_answers_nudges_and_acts_on_nothing() {
    let w = ArchivedWorktree::new(2, 2);
    let port = free_port();
    let (mut child, rx) = spawn_hourly(&mut w.bin(), &format!("127.0.0.1:{port}"), &["--dry-run"]);
    let seen = wait_for(&rx, "pass finished");
    assert!(
        seen.iter()
            .any(|m| m.starts_with("observe only (loop.dry_run)")),
        "{seen:?}"
    );
    let base = format!("http://127.0.0.1:{port}");
    let client =
        boo_reconciler::client::Client::new(&base, None, std::time::Duration::from_secs(60))
            .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = boo_reconciler::model::Scope::Session("s1".into());
    let answer = rt.block_on(client.nudge(&session, false)).unwrap();
    assert_eq!(answer["dry_run"], true, "{answer}");
    let kinds: Vec<&str> = answer["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["remove_worktree"], "{answer}");

    let status = rt.block_on(client.status()).unwrap();
    assert_eq!(status["config"]["loop"]["dry_run"], true, "{status}");
    let last = &status["last_host_pass"];
    assert_eq!(last["dry_run"], true, "{status}");
    assert!(
        last["planned"].as_array().is_some_and(|p| !p.is_empty()),
        "{status}"
    );
    let out = bin().args(["status", "--url", &base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("acting: no: observe only"), "{text}");

    assert!(w.wt.join("d000/f000").exists(), "acted on the worktree");
    assert_eq!(w.row_state(), vec![vec![Some("active".to_string())]]);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_switched_off_actuator_holds_its_actions_back_as_pending() {
    let w = ArchivedWorktree::new(1, 1);
    let out = w
        .bin()
        .env("BOO_RECONCILER_WORKTREES_ENABLED", "false")
        .args(["once", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"], serde_json::json!([]), "{report}");
    let pending = report["pending"].to_string();
    assert!(
        pending.contains("remove_worktree held back: worktrees.enabled is false"),
        "{report}"
    );
    assert!(w.wt.join("d000/f000").exists());
    assert_eq!(w.row_state(), vec![vec![Some("active".to_string())]]);
    // Switched on again, the same pass removes it.
    let out = w.bin().arg("once").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w.wt.exists());
}

#[test]
fn a_set_before_the_command_still_counts_when_another_follows_it() {
    // An operator's `--set worktrees.root=…` before the command, and a
    // `--set` after it: both apply (the root named must be the one used).
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("not-this-root");
    let mut plan = bin_in(dir.path());
    plan.arg("--set")
        .arg(format!("worktrees.root={}", gone.display()))
        .args(["plan", "--set", "loop.interval=5s"]);
    expect_exit(
        code_and_stderr(&mut plan),
        2,
        &[&gone.display().to_string()],
    );

    let twice = [
        "--worktree-root",
        "/tmp/a",
        "plan",
        "--worktree-root",
        "/tmp/b",
    ];
    let got = code_and_stderr(bin_in(dir.path()).args(twice));
    expect_exit(got, 2, &["--worktree-root given more than once"]);
}

/// `once --force` beside a daemon whose run holds the worktree past the
/// pass's time: the daemon answers 409 busy, and `once` exits 4 saying on
/// stderr which forced action did not happen. Nothing was done to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_force_exits_4_when_its_forced_action_did_not_happen() {
    use boo_reconciler::http::ServeOptions;
    use boo_reconciler::plan::Target;
    use boo_reconciler::service::Service;
    use common::{serve_on_loopback, set_all, startup_pass, world_command, Db, World, HOST};
    use std::time::Duration;

    const TOKEN: &str = "once-busy-token";
    let w = World::new(Db::Sqlite).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    std::fs::write(path.join("notes.txt"), "unsaved work\n").unwrap();
    // The daemon: holds the host's lock, so that `once` hands it the work.
    let _lock = w.store.try_lock_host(HOST).await.unwrap().expect("free");
    let mut config = w.config();
    config.r#loop.pass_timeout = Duration::from_secs(2);
    let service = Service::new(
        w.controller_with(config, w.store.clone()),
        tokio_util::sync::CancellationToken::new(),
    );
    startup_pass(&service).await;
    let (base, shutdown, server) =
        serve_on_loopback(&service, Some(TOKEN.into()), ServeOptions::default()).await;
    let once = |w: &World| {
        let mut c = world_command(w, &w.url);
        set_all(&mut c, &w.label_settings());
        set_all(
            &mut c,
            &[("http.listen", base.trim_start_matches("http://"))],
        );
        c.env("BOO_RECONCILER_TOKEN", TOKEN)
            .args(["once", "--force", "--chat", "c1"]);
        tokio::task::spawn_blocking(move || code_and_stderr(&mut c))
    };

    // Another run of the daemon holds the worktree until past the time of
    // the forced pass `once` asks for.
    let target = Target::Worktree(path.clone());
    let held = service.hold(&target).await.expect("free");
    let nudged = || {
        service
            .metrics()
            .nudges_total
            .with_label_values(&["chat"])
            .get()
    };
    let run = once(&w);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while nudged() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "once never nudged the daemon"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(held);
    let needles = ["did not happen", "busy", &target.to_string()];
    expect_exit(run.await.unwrap(), 4, &needles);
    assert!(path.join("notes.txt").exists(), "nothing done to it");

    // Nothing in the way: the forced action happens, exit 0.
    expect_exit(once(&w).await.unwrap(), 0, &[]);
    assert!(!path.exists());
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
