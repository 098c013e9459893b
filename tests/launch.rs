//! `boo-reconciler launch` and the teardown of the cgroups it makes, end
//! to end: the real binary, real cgroups (v2, as root), real processes,
//! the controller's own pass on both databases. Without a writable cgroup
//! v2 hierarchy these fail, never skip.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boo_reconciler::cgroup;
use boo_reconciler::model::Scope;
use common::{bin_command, set_all, Db, World};

/// A cgroup parent of this test's own, emptied and removed on drop.
struct Parent(PathBuf);

impl Parent {
    fn new(tag: &str) -> Parent {
        let mount = cgroup::v2_mount()
            .expect("these tests need the cgroup v2 hierarchy mounted and writable (run as root)");
        let p = mount.join(format!(
            "boo-it-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&p)
            .unwrap_or_else(|e| panic!("cannot make {}: {e} (run as root)", p.display()));
        Parent(p)
    }

    fn setting(&self) -> String {
        format!("processes.cgroup_parent={}", self.0.display())
    }

    fn agent_cgroups(&self) -> Vec<PathBuf> {
        cgroup::children(&self.0).unwrap()
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        for _ in 0..50 {
            for c in cgroup::children(&self.0).unwrap_or_default() {
                let _ = cgroup::kill(&c);
            }
            if cgroup::remove(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The launcher with `w`'s labels and `settings`, running `script` for
/// chat `chat`.
fn launcher(w: &World, settings: &[&str], chat: &str, script: &str) -> Command {
    let mut c = bin_command();
    set_all(&mut c, &w.label_settings());
    for s in settings {
        c.arg("--set").arg(s);
    }
    c.args([
        "launch",
        "--chat",
        chat,
        "--session",
        "s1",
        "--agent",
        "qwen",
        "--",
    ])
    .args(["sh", "-c", script]);
    c
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    common::start_time_of(pid).is_some_and(|s| common::alive(pid, s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_its_stdio_gets_its_labels_and_its_own_cgroup() {
    let w = World::new(Db::Sqlite).await;
    let parent = Parent::new("stdio");
    let mut child = launcher(
        &w,
        &[&parent.setting()],
        "chat:1/x",
        &format!(
            "read line; echo \"got $line\"; echo \"chat=${}\"; echo \"agent=${}\"; \
             echo \"session=${}\"; cat /proc/self/cgroup; echo \"pgid=$(ps -o pgid= $$)\"",
            w.labels[0], w.labels[2], w.labels[1]
        ),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}\n{err}");
    assert!(err.is_empty(), "nothing said when all went well: {err}");
    assert!(
        out.contains("got hello"),
        "standard input and output are the agent's: {out}"
    );
    assert!(out.contains("chat=chat:1/x"), "{out}");
    assert!(out.contains("agent=qwen"), "{out}");
    assert!(out.contains("session=s1"), "{out}");
    let name = format!("chat=chat%3A1%2Fx,session=s1,agent=qwen,pid={pid}");
    assert!(
        out.contains(&format!("/{name}\n")),
        "in the cgroup recording its chat, session, agent and pid: {out}"
    );
    assert!(
        out.contains(&format!("pgid={pid}")) || out.contains(&format!("pgid= {pid}")),
        "it leads its process group: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_parent_that_is_missing_or_not_a_cgroup_is_exit_2_saying_what_to_do() {
    let w = World::new(Db::Sqlite).await;
    let mount = cgroup::v2_mount().expect("cgroup v2");
    let missing = mount.join(format!("boo-it-missing-{}", fastrand::u64(..)));
    let out = launcher(
        &w,
        &[&format!("processes.cgroup_parent={}", missing.display())],
        "c",
        "echo ran",
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("mkdir"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
    assert!(!missing.exists(), "a named parent is never made on a guess");

    let out = launcher(
        &w,
        &[&format!(
            "processes.cgroup_parent={}",
            w.tmp.path().display()
        )],
        "c",
        "echo ran",
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not in the cgroup v2 hierarchy"), "{err}");

    // A parent this user may not write: root's, launched as nobody.
    let parent = Parent::new("notwritable");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_boo-reconciler"))
        .args(["--set", &parent.setting()])
        .args(["launch", "--chat", "c", "--agent", "a", "--", "echo", "ran"])
        .current_dir("/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not writable by uid 65534") && err.contains("chown"),
        "{err}"
    );
    assert!(parent.agent_cgroups().is_empty());

    // `once` (and `run`) refuse it at start the same way.
    let mut once = common::world_command(&w, &w.url);
    once.args(["--set", "opencode.url="])
        .arg("--set")
        .arg(format!(
            "processes.cgroup_parent={}",
            w.tmp.path().display()
        ))
        .arg("once");
    let out = once.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not in the cgroup v2 hierarchy"), "{err}");

    let out = launcher(&w, &["processes.cgroup_parent=somewhere"], "c", "echo ran")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("processes.cgroup_parent"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_no_cgroup_can_be_made_it_says_why_once_and_runs_with_labels() {
    let w = World::new(Db::Sqlite).await;
    // auto, as a user other than root: no subtree of its own to use.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_boo-reconciler"))
        .env("BOO_RECONCILER_PROCESSES_CGROUP_PARENT", "auto")
        .args(["--set", &format!("processes.chat_label={}", w.labels[0])])
        .args(["--set", &format!("processes.agent_label={}", w.labels[2])])
        .args(["launch", "--chat", "c9", "--agent", "goose", "--"])
        .args(["sh", "-c", &format!("echo chat=${}", w.labels[0])])
        .current_dir("/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "said once: {err}");
    assert!(
        err.contains("no cgroup for this agent") && err.contains("not root"),
        "{err}"
    );
    assert!(stdout.contains("chat=c9"), "{stdout}");

    // off: nothing said, labels set.
    let out = launcher(
        &w,
        &["processes.cgroup_parent=off"],
        "c8",
        &format!("echo chat=${}", w.labels[0]),
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chat=c8"));

    // A command that cannot be run is 127, as from a shell.
    let mut c = bin_command();
    c.args([
        "launch",
        "--chat",
        "c",
        "--agent",
        "a",
        "--",
        "/nonexistent/agent",
    ]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/agent"));
}

both_databases!(
    one_pass_stops_every_escape_of_a_launched_agent_and_nothing_else,
    a_live_chats_launched_agent_runs_on_and_an_empty_cgroup_is_removed,
    a_cgroup_whose_record_cannot_be_read_is_reported_and_left_alone,
    a_chat_reopened_during_the_grace_keeps_its_launched_agent,
    a_cgroup_left_with_only_a_live_chats_process_is_left_alone_quietly,
    a_crash_in_the_middle_of_a_stop_cgroup_is_settled_and_the_next_pass_stops_it,
);

/// The controller is killed (abort, as `kill -9`) after the members of an
/// agent cgroup had SIGTERM and before the kill. The next run concludes
/// the open intent, saying what is left of the cgroup, and stops it; the
/// live chat's agent beside it is untouched throughout.
async fn a_crash_in_the_middle_of_a_stop_cgroup_is_settled_and_the_next_pass_stops_it(db: Db) {
    let w = World::new(db).await;
    let parent = Parent::new("crash");
    w.session("s1", "open").await;
    w.chat("gone", "s1", "archived").await;
    w.chat("live", "s1", "open").await;
    let mut agent = spawn_launched(
        &w,
        &parent,
        "gone",
        "trap '' TERM; while :; do sleep 1; done",
    );
    let mut bystander = spawn_launched(&w, &parent, "live", "exec sleep 1000");
    wait_for("two agent cgroups", || parent.agent_cgroups().len() == 2);
    let cg = parent
        .agent_cgroups()
        .into_iter()
        .find(|c| c.to_string_lossy().contains("chat=gone,"))
        .unwrap();
    let once = |failpoints: Option<&str>| {
        let mut c = common::world_command(&w, &w.url);
        set_all(&mut c, &w.label_settings());
        set_all(
            &mut c,
            &[("opencode.url", ""), ("processes.term_grace", "500ms")],
        );
        c.arg("--set").arg(parent.setting()).arg("once");
        c.env_remove("FAILPOINTS");
        if let Some(f) = failpoints {
            c.env("FAILPOINTS", f);
        }
        c.output().unwrap()
    };
    let explain = |o: &std::process::Output| {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let crashed = once(Some("stop_cgroup.after_term=return"));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&crashed.status),
        Some(nix::sys::signal::Signal::SIGABRT as i32),
        "the crash point did not kill the process: {}",
        explain(&crashed)
    );
    // The agent ignores TERM: it runs on, in its cgroup, with an open
    // intent recorded.
    assert!(alive(agent.id() as i32), "{}", explain(&crashed));
    assert!(cg.exists());
    let open: Vec<_> = w
        .audit()
        .await
        .into_iter()
        .filter(|a| a.action == "stop_cgroup" && a.outcome == "intent")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");

    let next = once(None);
    let out = explain(&next);
    assert_eq!(next.status.code(), Some(0), "{out}");
    assert!(
        out.contains("process(es) still in") && out.contains("planned again like any agent"),
        "the open intent is concluded with what is left: {out}"
    );
    wait_for("the agent to be gone", || !alive(agent.id() as i32));
    assert!(!cg.exists(), "{out}");
    assert!(
        alive(bystander.id() as i32),
        "the live chat's agent runs on"
    );
    let audit = w.audit().await;
    let concluded = audit
        .iter()
        .find(|a| a.action == "stop_cgroup" && a.outcome == "interrupted")
        .unwrap_or_else(|| panic!("the intent is not concluded: {audit:?}"));
    assert!(concluded.intent_id.is_some(), "{concluded:?}");
    assert_eq!(concluded.target, open[0].target, "{concluded:?}");
    assert!(
        concluded.reason.contains("process(es) still in"),
        "{concluded:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "stop_cgroup" && a.outcome == "done"),
        "{audit:?}"
    );
    let _ = agent.wait();
    let _ = bystander.kill();
    let _ = bystander.wait();
}

async fn a_cgroup_left_with_only_a_live_chats_process_is_left_alone_quietly(db: Db) {
    let mut w = World::new(db).await;
    let parent = Parent::new("spared");
    w.cgroup_parent = parent.0.display().to_string();
    w.session("s1", "open").await;
    w.chat("gone", "s1", "archived").await;
    w.chat("live", "s1", "open").await;
    // The archived chat's cgroup holds only a process labelled for the
    // live chat (started below the archived chat's agent, say).
    let mut child = spawn_launched(
        &w,
        &parent,
        "gone",
        &format!(
            "exec env {}=live {}=goose sleep 1000",
            w.labels[0], w.labels[2]
        ),
    );
    wait_for("the process in its cgroup", || {
        parent
            .agent_cgroups()
            .first()
            .is_some_and(|c| !cgroup::members(c).unwrap().is_empty())
    });
    // One controller, as a daemon's passes share one.
    let controller = w.controller();
    for _ in 0..2 {
        let report = common::act_pass(&controller, Scope::Host, false).await;
        let stop = report
            .results
            .iter()
            .find(|r| r.action.name() == "stop_cgroup")
            .unwrap_or_else(|| panic!("no stop_cgroup: {}", report.render()));
        assert_eq!(stop.outcome.name(), "skipped", "{}", report.render());
        assert!(
            stop.outcome.text().contains("only processes of live chats"),
            "{}",
            report.render()
        );
        assert!(
            stop.intent_id.is_none(),
            "nothing announced: nothing is signalled"
        );
        assert!(alive(child.id() as i32));
    }
    let audit = w.audit().await;
    assert_eq!(
        audit.iter().filter(|a| a.action == "stop_cgroup").count(),
        1,
        "recorded once, not every pass: {audit:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

async fn a_chat_reopened_during_the_grace_keeps_its_launched_agent(db: Db) {
    let mut w = World::new(db).await;
    let parent = Parent::new("reopen");
    w.cgroup_parent = parent.0.display().to_string();
    w.term_grace = Duration::from_secs(3);
    w.session("s1", "open").await;
    w.chat("c", "s1", "archived").await;
    let mut agent = spawn_launched(
        &w,
        &parent,
        "c",
        "trap '' TERM; while :; do sleep 0.05; done",
    );
    wait_for("the agent in its cgroup", || {
        parent
            .agent_cgroups()
            .first()
            .is_some_and(|c| !cgroup::members(c).unwrap().is_empty())
    });
    let controller = w.controller();
    let pass = tokio::spawn(async move { common::act_pass(&controller, Scope::Host, false).await });
    // The user reopens the chat while the agent has its TERM.
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.sql("UPDATE chats SET status = 'open' WHERE id = 'c'")
        .await;
    let report = pass.await.unwrap();

    let stop = report
        .results
        .iter()
        .find(|r| r.action.name() == "stop_cgroup")
        .unwrap_or_else(|| panic!("no stop_cgroup: {}", report.render()));
    assert_eq!(stop.outcome.name(), "skipped", "{}", report.render());
    assert!(
        stop.outcome.text().contains("live again") && stop.outcome.text().contains("had SIGTERM"),
        "{}",
        report.render()
    );
    assert!(
        alive(agent.id() as i32),
        "the reopened chat's agent was killed"
    );
    let audit = w.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a.action == "stop_cgroup" && a.outcome == "skipped"),
        "{audit:?}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Every escape of the table that a cgroup contains: TERM
/// ignored, a double-forked `env -i` grandchild in its own session, a
/// fork loop of detached unlabelled children, and the agent itself
/// re-exec'd without its labels (what `setproctitle` or an overwritten
/// environment look like to a scan).
const ESCAPES: &str = "trap '' TERM; \
    (setsid sh -c 'env -i sh -c \"trap \\\"\\\" TERM; while :; do sleep 1; done\" &' &); \
    (while :; do env -i setsid sleep 1000 & sleep 0.05; done) & \
    exec env -i sh -c 'trap \"\" TERM; while :; do sleep 1; done'";

fn spawn_launched(w: &World, parent: &Parent, chat: &str, script: &str) -> Child {
    launcher(w, &[&parent.setting()], chat, script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn one_pass_stops_every_escape_of_a_launched_agent_and_nothing_else(db: Db) {
    let mut w = World::new(db).await;
    let parent = Parent::new("escape");
    w.cgroup_parent = parent.0.display().to_string();
    w.term_grace = Duration::from_millis(500);
    w.session("s1", "open").await;
    w.chat("gone", "s1", "archived").await;
    w.chat("live", "s1", "open").await;
    let mut agent = spawn_launched(&w, &parent, "gone", ESCAPES);
    let mut bystander = spawn_launched(&w, &parent, "live", "exec sleep 1000");
    let agent_cg = |p: &Parent, chat: &str| {
        p.agent_cgroups().into_iter().find(|c| {
            c.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("chat={chat},"))
        })
    };
    wait_for("the escapes", || {
        agent_cg(&parent, "gone").is_some_and(|c| cgroup::members(&c).unwrap().len() >= 5)
    });
    let cg = agent_cg(&parent, "gone").unwrap();
    let members = cgroup::members(&cg).unwrap();
    w.acp_row(
        "a1",
        "gone",
        "s1",
        Some((
            agent.id() as i32,
            common::start_time_of(agent.id() as i32).unwrap(),
        )),
    )
    .await;

    let report = w.once(Scope::Host, false).await;

    let stop = report
        .results
        .iter()
        .find(|r| r.action.name() == "stop_cgroup")
        .unwrap_or_else(|| panic!("no stop_cgroup: {}", report.render()));
    assert_eq!(stop.outcome.name(), "done", "{}", report.render());
    assert!(
        !report
            .results
            .iter()
            .any(|r| r.action.name() == "terminate_process"),
        "the contained agent is stopped once, with its cgroup: {}",
        report.render()
    );
    for pid in &members {
        assert!(!alive(*pid), "pid {pid} escaped: {}", report.render());
    }
    assert!(!cg.exists(), "the emptied cgroup is removed");
    assert!(
        alive(bystander.id() as i32),
        "the live chat's agent runs on"
    );
    assert_eq!(w.agent_row("a1").await.0, "closed", "{}", report.render());
    let audit = w.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a.action == "stop_cgroup" && a.outcome == "done"),
        "{audit:?}"
    );
    let _ = agent.wait();
    let _ = bystander.kill();
    let _ = bystander.wait();
}

async fn a_live_chats_launched_agent_runs_on_and_an_empty_cgroup_is_removed(db: Db) {
    let mut w = World::new(db).await;
    let parent = Parent::new("live");
    w.cgroup_parent = parent.0.display().to_string();
    w.process_orphan_min_age = Duration::ZERO;
    w.session("s1", "open").await;
    w.chat("live", "s1", "open").await;
    let mut agent = spawn_launched(&w, &parent, "live", "exec sleep 1000");
    let mut done = spawn_launched(&w, &parent, "live", "exit 0");
    let _ = done.wait();
    wait_for("two cgroups", || parent.agent_cgroups().len() == 2);

    let report = w.once(Scope::Host, false).await;

    assert!(alive(agent.id() as i32), "{}", report.render());
    let removed: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.action.name() == "remove_cgroup")
        .collect();
    assert_eq!(removed.len(), 1, "{}", report.render());
    assert_eq!(removed[0].outcome.name(), "done", "{}", report.render());
    let left = parent.agent_cgroups();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]
        .to_string_lossy()
        .contains(&format!("pid={}", agent.id())));
    assert!(
        !report
            .results
            .iter()
            .any(|r| r.action.name() == "stop_cgroup"),
        "{}",
        report.render()
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

async fn a_cgroup_whose_record_cannot_be_read_is_reported_and_left_alone(db: Db) {
    let mut w = World::new(db).await;
    let parent = Parent::new("garbled");
    w.cgroup_parent = parent.0.display().to_string();
    w.process_orphan_min_age = Duration::ZERO;
    let cg = parent.0.join("not-a-record");
    std::fs::create_dir(&cg).unwrap();
    let mut inside = Command::new("sh")
        .args(["-c", "read _go; exec sleep 1000"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cgroup::enter(&cg, inside.id() as i32).unwrap();
    inside.stdin.take().unwrap().write_all(b"go\n").unwrap();

    let report = w.once(Scope::Host, false).await;

    assert!(report.results.is_empty(), "{}", report.render());
    let pending = report
        .pending
        .iter()
        .find(|p| p.target.to_string() == format!("cgroup:{}", cg.display()))
        .unwrap_or_else(|| panic!("not reported: {}", report.render()));
    assert!(
        pending.why.contains("does not record an agent"),
        "{}",
        pending.why
    );
    assert!(alive(inside.id() as i32));
    let _ = inside.kill();
    let _ = inside.wait();
    let _: &Path = &cg;
}
