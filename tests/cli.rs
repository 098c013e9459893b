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
