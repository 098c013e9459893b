//! Real cgroups, real processes. These need a writable cgroup v2
//! hierarchy (root, as CI runs them): without one they fail, never skip.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;

/// A cgroup of this test's own under the v2 hierarchy, emptied and
/// removed on drop.
pub(crate) struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub(crate) fn new(tag: &str) -> TestCgroup {
        let mount = cgroup::v2_mount().expect(
            "these tests need the cgroup v2 hierarchy mounted and writable (run them as root)",
        );
        let path = mount.join(format!(
            "boo-unit-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot make {}: {e} (run as root)", path.display()));
        TestCgroup { path }
    }

    /// A child cgroup named as `launch` names an agent's.
    pub(crate) fn agent(&self, chat: &str) -> PathBuf {
        let name = cgroup::Record {
            chat: chat.into(),
            session: None,
            agent: "test".into(),
            instance: None,
            pid: 4242,
        }
        .name()
        .unwrap();
        let p = self.path.join(name);
        std::fs::create_dir(&p).unwrap();
        p
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let mut all = vec![self.path.clone()];
            let mut i = 0;
            while i < all.len() {
                all.extend(cgroup::children(&all[i]).unwrap_or_default());
                i += 1;
            }
            for c in &all {
                let _ = cgroup::kill(c);
            }
            if cgroup::remove(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `sh -c script` started in `cg` before it runs a line: it waits on its
/// standard input until it has been moved.
fn spawn_in(cg: &Path, env: &[(&str, &str)], script: &str) -> Child {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("read _go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    cgroup::enter(cg, child.id() as i32).unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    child
}

fn labels() -> LabelNames {
    let n = fastrand::u64(..);
    LabelNames {
        chat: format!("BOO_UNIT_CHAT_{n}"),
        session: format!("BOO_UNIT_SESSION_{n}"),
        agent: format!("BOO_UNIT_AGENT_{n}"),
        ..LabelNames::default()
    }
}

/// Chats live by name; `error` makes every read fail.
#[derive(Default)]
struct Chats {
    live: Mutex<HashSet<String>>,
    error: AtomicBool,
    asked: Mutex<Vec<String>>,
}

impl ChatLiveness for Chats {
    fn is_live<'a>(&'a self, chat: &'a str) -> crate::act::process::terminate::LiveAnswer<'a> {
        self.asked.lock().push(chat.to_owned());
        let answer = if self.error.load(Ordering::SeqCst) {
            Err("database unreachable".into())
        } else {
            Ok(self.live.lock().contains(chat))
        };
        Box::pin(std::future::ready(answer))
    }
}

/// No gate to open.
fn nothing() {}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` ignores SIGTERM now: its script's `trap '' TERM` has
/// run. Being in the cgroup is not enough: the shell enters it before it
/// reads its script, and a SIGTERM before the trap would end it.
fn ignores_term(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (nix::libc::SIGTERM - 1)) != 0)
}

fn alive(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| processes::is_alive_state(s.state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_escape_of_a_launched_agent_is_stopped_with_its_cgroup() {
    let parent = TestCgroup::new("escape");
    let cg = parent.agent("gone-chat");
    let outside = parent.agent("bystander");
    let labels = labels();
    // Ignores TERM; a double-forked grandchild in a new session with an
    // empty environment; a loop forking detached children without labels;
    // and itself re-exec'd without its labels.
    let script = "trap '' TERM; \
        (setsid sh -c 'env -i sh -c \"trap \\\"\\\" TERM; while :; do sleep 1; done\" &' &); \
        (while :; do env -i setsid sleep 1000 & sleep 0.05; done) & \
        exec env -i sh -c 'trap \"\" TERM; while :; do sleep 1; done'";
    let mut agent = spawn_in(
        &cg,
        &[(&labels.chat, "gone-chat"), (&labels.agent, "x")],
        script,
    );
    // A process of the same chat's labels outside the cgroup is not this
    // cgroup's to stop.
    let mut bystander = spawn_in(
        &outside,
        &[(&labels.chat, "gone-chat"), (&labels.agent, "x")],
        "exec sleep 1000",
    );
    wait_for("the escapes to start", || {
        cgroup::members(&cg).unwrap().len() >= 5
    });
    let before = cgroup::members(&cg).unwrap();

    let chats = Chats::default();
    let s = stop(
        &cg,
        "gone-chat",
        Duration::from_millis(300),
        &labels,
        &chats,
        &nothing,
    )
    .await;

    assert!(s.killed, "{s}");
    assert!(s.survivors.is_empty(), "{s}");
    assert!(s.removed, "{s}");
    assert!(!cg.exists(), "the empty cgroup is removed");
    for pid in before {
        assert!(!alive(pid), "pid {pid} of the cgroup survived: {s}");
    }
    assert!(
        alive(bystander.id() as i32),
        "a process outside the cgroup is never signalled"
    );
    assert_eq!(*chats.asked.lock(), vec!["gone-chat".to_owned()]);
    let _ = agent.wait();
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_exits_on_term_is_not_killed_and_its_cgroup_removed() {
    let parent = TestCgroup::new("term");
    let cg = parent.agent("c");
    let labels = labels();
    let mut agent = spawn_in(&cg, &[], "exec sleep 1000");
    wait_for("the agent", || !cgroup::members(&cg).unwrap().is_empty());
    let chats = Chats::default();
    let s = stop(&cg, "c", Duration::from_secs(10), &labels, &chats, &nothing).await;
    assert_eq!(s.signalled, vec![agent.id() as i32], "{s}");
    assert!(!s.killed, "{s}");
    assert!(s.removed, "{s}");
    assert!(
        chats.asked.lock().is_empty(),
        "nothing left to kill: liveness not needed"
    );
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_reopened_during_the_grace_keeps_its_agent() {
    let parent = TestCgroup::new("reopen");
    let cg = parent.agent("c");
    let labels = labels();
    let mut agent = spawn_in(&cg, &[], "trap '' TERM; while :; do sleep 0.05; done");
    wait_for("the agent to ignore TERM", || ignores_term(agent.id()));
    let chats = Arc::new(Chats::default());
    let reopen = {
        let chats = Arc::clone(&chats);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            chats.live.lock().insert("c".into());
        })
    };
    let s = stop(
        &cg,
        "c",
        Duration::from_millis(500),
        &labels,
        &*chats,
        &nothing,
    )
    .await;
    reopen.await.unwrap();
    assert_eq!(
        s.not_killed,
        Some(NotKilled::LiveAgain {
            chat_id: "c".into()
        }),
        "{s}"
    );
    assert!(!s.killed && !s.removed, "{s}");
    assert!(alive(agent.id() as i32), "the live chat's agent runs on");
    assert!(s.to_string().contains("had SIGTERM, not SIGKILL"), "{s}");
    assert!(matches!(stopped_outcome(&s), Outcome::Skipped { .. }));
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liveness_that_cannot_be_read_kills_nothing() {
    let parent = TestCgroup::new("unknown");
    let cg = parent.agent("c");
    let labels = labels();
    let mut agent = spawn_in(&cg, &[], "trap '' TERM; while :; do sleep 0.05; done");
    wait_for("the agent to ignore TERM", || ignores_term(agent.id()));
    let chats = Chats::default();
    chats.error.store(true, Ordering::SeqCst);
    let s = stop(
        &cg,
        "c",
        Duration::from_millis(200),
        &labels,
        &chats,
        &nothing,
    )
    .await;
    assert!(
        matches!(s.not_killed, Some(NotKilled::LivenessUnknown { .. })),
        "{s}"
    );
    assert!(alive(agent.id() as i32));
    assert!(matches!(stopped_outcome(&s), Outcome::Failed { .. }));
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_chats_process_inside_another_agents_cgroup_is_spared() {
    let parent = TestCgroup::new("spare");
    let cg = parent.agent("dead");
    let labels = labels();
    let mut dead = spawn_in(
        &cg,
        &[(&labels.chat, "dead"), (&labels.agent, "x")],
        "trap '' TERM; while :; do sleep 0.05; done",
    );
    // Started by the dead chat's agent's side, but labelled for a chat
    // that is live; its own child carries no labels at all.
    let mut live = spawn_in(
        &cg,
        &[(&labels.chat, "live"), (&labels.agent, "y")],
        "env -i sleep 1000 & wait",
    );
    let live_pid = live.id() as i32;
    let ppid = |pid: i32| {
        procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .map(|s| s.ppid)
    };
    wait_for("the dead chat's agent to ignore TERM", || {
        ignores_term(dead.id())
    });
    wait_for("the live chat's child", || {
        cgroup::members(&cg)
            .unwrap()
            .iter()
            .any(|&p| ppid(p).is_ok_and(|pp| pp == live_pid))
    });
    let chats = Chats::default();
    chats.live.lock().insert("live".into());
    let s = stop(
        &cg,
        "dead",
        Duration::from_millis(200),
        &labels,
        &chats,
        &nothing,
    )
    .await;
    assert!(!alive(dead.id() as i32), "{s}");
    assert!(alive(live.id() as i32), "{s}");
    let spared: Vec<i32> = s.spared.iter().map(|x| x.pid).collect();
    assert_eq!(
        spared.len(),
        2,
        "the live chat's process and its child: {s}"
    );
    for pid in &spared {
        assert!(alive(*pid), "spared pid {pid} killed: {s}");
        assert!(*pid == live_pid || ppid(*pid).unwrap() == live_pid);
    }
    assert!(s.spared.iter().all(|x| x.chat_id == "live"));
    assert!(s.survivors.is_empty() && !s.removed, "{s}");
    assert!(s.to_string().contains("spared"), "{s}");
    let _ = dead.wait();
    let _ = live.kill();
    let _ = live.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_that_left_the_cgroup_is_never_signalled() {
    let parent = TestCgroup::new("reuse");
    let cg = parent.agent("c");
    let rel = relative_of(&cg).await.expect("a v2 cgroup");
    // This pid is not (or no longer) a member: what a member's pid reused
    // by a process elsewhere looks like at the moment of the signal.
    let mut elsewhere = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = elsewhere.id() as i32;
    let sent = signal_members(&rel, vec![pid], Signal::SIGKILL).await;
    assert!(sent.is_empty());
    assert!(alive(pid), "a process outside the cgroup was signalled");
    // The same pid, once a member, is.
    cgroup::enter(&cg, pid).unwrap();
    let sent = signal_members(&rel, vec![pid], Signal::SIGKILL).await;
    assert_eq!(sent, vec![pid]);
    let _ = elsewhere.wait();
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_agents_that_ignore_term_fall_within_one_grace_each_in_its_cgroup() {
    let parent = TestCgroup::new("many");
    let labels = labels();
    let mut children = Vec::new();
    let mut cgroups = Vec::new();
    for i in 0..100 {
        let cg = parent.agent(&format!("chat-{i}"));
        children.push(spawn_in(
            &cg,
            &[],
            "trap '' TERM; sleep 1000 & sleep 1000 & wait",
        ));
        cgroups.push(cg);
    }
    for cg in &cgroups {
        wait_for("three members", || cgroup::members(cg).unwrap().len() >= 3);
    }
    let chats = Arc::new(Chats::default());
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, cg) in cgroups.iter().enumerate() {
        let (cg, labels, chats) = (cg.clone(), labels.clone(), Arc::clone(&chats));
        set.spawn(async move {
            stop(&cg, &format!("chat-{i}"), grace, &labels, &*chats, &nothing).await
        });
    }
    let all = set.join_all().await;
    let took = started.elapsed();
    for s in &all {
        assert!(s.removed && s.survivors.is_empty(), "{s}");
    }
    // A bound that proves the graces overlap (one after another they
    // would take 200 s), not a timing.
    assert!(took < grace * 10, "100 stops took {took:?}");
    for mut c in children {
        let _ = c.wait();
    }
}
