//! A controller that is not root cannot read other users' environments:
//! their agents are invisible to it, and it says how many processes (and
//! whose) it could not read instead of passing over them.
//!
//! These tests switch users, so the suite runs as root (as CI does).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use boo_reconciler::testing::{local_user, MALLORY, OWNER};
use common::{set_all, world_command, Db};

/// A labelled `sleep` of `uid`: an agent of chat `c1` in `w`'s labels.
fn agent_of(w: &common::World, uid: u32, gid: u32) -> common::Agent {
    let child = std::process::Command::new("sleep")
        .arg("1000")
        .uid(uid)
        .gid(gid)
        .process_group(0)
        .env(&w.labels[0], "c1")
        .env(&w.labels[1], "s1")
        .env(&w.labels[2], "test-agent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the agent");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{pid}/environ")).map_or(true, |e| e.is_empty()) {
        assert!(Instant::now() < deadline, "the agent never exec'd");
        std::thread::sleep(Duration::from_millis(2));
    }
    common::Agent(child)
}

/// `c` with `args` after its own, run as `user` (its uid and group only)
/// in a clean environment.
fn as_user(
    c: &std::process::Command,
    user: &boo_reconciler::testing::LocalUser,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", user.uid),
            &format!("--regid={}", user.gid),
            "--clear-groups",
            "--",
        ])
        .arg(c.get_program())
        .args(c.get_args())
        .args(args)
        .current_dir(c.get_current_dir().expect("a command with a directory"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the controller as another user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_running_as_another_user_counts_the_agent_it_cannot_read() {
    let w = common::archived_world(Db::Postgres).await;
    let owner = local_user(OWNER);
    let mallory = local_user(MALLORY);
    let agent = agent_of(&w, owner.uid, owner.gid);
    // The controller running as mallory must reach the worktree root.
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // Root reads it: an agent of an archived chat, none of bootest's
    // processes unreadable.
    let root_view = w.plan().await;
    assert_eq!(root_view.observed.processes, 1, "{}", root_view.render());
    assert!(
        !root_view
            .observed
            .unreadable_by_uid
            .contains_key(&owner.uid),
        "{:?}",
        root_view.observed
    );

    // mallory cannot: the agent is invisible, and counted under bootest.
    let mut c = world_command(&w, &w.url);
    set_all(&mut c, &w.label_settings());
    set_all(&mut c, &[("opencode.url", "")]);
    let out = as_user(&c, &mallory, &["plan", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("plan --json as mallory did not answer JSON ({e}): {shown}"));
    let observed = &report["observed"];
    assert_eq!(observed["processes"], 0, "the agent is invisible: {shown}");
    assert!(
        report["planned"].as_array().is_none_or(Vec::is_empty),
        "nothing is planned for what cannot be seen: {shown}"
    );
    let of_owner = observed["unreadable_by_uid"][owner.uid.to_string()].as_u64();
    assert!(
        of_owner.is_some_and(|n| n >= 1),
        "bootest's agent is counted unreadable: {observed}"
    );
    let total = observed["unreadable_processes"].as_u64().unwrap_or(0);
    let by_uid: u64 = observed["unreadable_by_uid"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(
        total, by_uid,
        "every unreadable process has its uid: {observed}"
    );
    assert!(
        observed["unreadable_by_uid"]
            .get(mallory.uid.to_string())
            .is_none(),
        "mallory's own processes are readable to it: {observed}"
    );
    // Nor can it follow the fork lineage (no CAP_NET_ADMIN): with the
    // default, auto, that is said, not an error.
    assert_eq!(observed["lineage"]["state"], "unavailable", "{shown}");
    let why = observed["lineage"]["why"].as_str().unwrap_or_default();
    assert!(why.contains("CAP_NET_ADMIN"), "{shown}");
    let errors = report["errors"].to_string();
    assert!(!errors.contains("processes.lineage"), "{shown}");
    // Asked for outright, its absence is an error of the pass.
    let required = as_user(
        &c,
        &mallory,
        &["--set", "processes.lineage=true", "plan", "--json"],
    );
    let stdout = String::from_utf8_lossy(&required.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {stdout}\n{}",
            String::from_utf8_lossy(&required.stderr)
        )
    });
    assert!(
        report["errors"].to_string().contains("processes.lineage"),
        "{stdout}"
    );
    assert_eq!(required.status.code(), Some(1), "{stdout}");
    drop(agent);
}
