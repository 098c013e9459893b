//! The binary as an operator runs it: exit codes and messages.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_boo-reconciler"));
    // Only what each test sets.
    for (k, _) in std::env::vars() {
        if k.starts_with("BOO_RECONCILER_") {
            c.env_remove(k);
        }
    }
    // A label no process carries: these passes must never see (let alone
    // stop) the agents other tests spawn.
    c.env(
        "BOO_RECONCILER_PROCESSES_CHAT_LABEL",
        format!("BOO_TEST_NOBODY_{}", fastrand::u64(..)),
    );
    c
}

#[test]
fn bad_configuration_value_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .env("BOO_RECONCILER_LOOP_INTERVAL", "soon")
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loop.interval"), "{err}");
    assert!(err.contains("soon"), "{err}");
    assert!(err.contains("BOO_RECONCILER_LOOP_INTERVAL"), "{err}");
}

#[test]
fn bad_value_in_file_exits_2_and_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[loop]\nmax_parallel_actions = 0\n").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loop.max_parallel_actions"), "{err}");
    assert!(err.contains("c.toml"), "{err}");
}

#[test]
fn root_that_is_a_symlink_or_slash_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    for root in ["/".to_string(), link.display().to_string()] {
        let out = bin()
            .current_dir(dir.path())
            .args(["--worktree-root", &root, "plan"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{root}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("worktree root"), "{err}");
    }
}

#[test]
fn unreachable_database_names_the_url_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args([
            "--database-url",
            "postgres://boo:hunter2@127.0.0.1:1/nowhere",
            "--worktree-root",
        ])
        .arg(dir.path().join("root"))
        .arg("once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1/nowhere"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn once_on_the_embedded_default_converges_on_an_empty_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .arg("--worktree-root")
        .arg(dir.path().join("root"))
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
    let out = bin()
        .current_dir(dir.path())
        .arg("--worktree-root")
        .arg(&root)
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!root.exists());
    assert!(!dir.path().join("boo-reconciler.db").exists());
}

#[test]
fn run_stops_cleanly_on_sigterm_and_logs_json() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .current_dir(dir.path())
        .arg("--worktree-root")
        .arg(dir.path().join("root"))
        .args([
            "--set",
            "loop.interval=1h",
            "--set",
            "http.listen=127.0.0.1:0",
            "--log-format",
            "json",
            "run",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The first pass runs at start; wait for its summary.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let msg = v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.push(msg.clone());
        if msg == "pass finished" {
            break;
        }
    }
    assert!(seen.iter().any(|m| m == "controller started"), "{seen:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn run_refuses_a_remote_listen_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .arg("--worktree-root")
        .arg(dir.path().join("root"))
        .args(["--set", "http.listen=0.0.0.0:0", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.token"), "{err}");
    assert!(err.contains("allow_insecure_remote"), "{err}");
}
