use super::*;
use crate::observe::processes::EnvChat;
use crate::observe::processes::{descendants, identity};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A process spawned by the test, killed (if need be) and reaped when
/// the test ends, pass or fail: it is the test's child, so once dead it
/// stays a zombie until reaped here (terminate counts zombies as gone).
/// Its descendants are re-parented to init, which reaps them.
struct Spawned(Child);

impl Spawned {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills whatever still carries the chat label when a test ends, so a
/// failing test (a regression that lets a descendant escape) leaves
/// nothing running behind it.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for p in crate::observe::processes::scan(&labels()).processes {
            if p.chat_id == self.0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
    }
}

/// A fresh chat id, and its sweep (keep it alive for the whole test).
fn new_chat() -> (String, Sweep) {
    let c = unique_chat();
    (c.clone(), Sweep(c))
}

fn unique_chat() -> String {
    format!("chat-{}-{}", std::process::id(), fastrand::u64(..))
}

fn labels() -> LabelNames {
    LabelNames::default()
}

/// No chat is live: the answer of a world where every chat was archived.
fn not_live(_: &str) -> Result<bool, String> {
    Ok(false)
}

/// `sh -c script` started as a launcher starts an agent: its own
/// process group, the labels in its environment.
fn agent(script: &str, chat: &str) -> Spawned {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .process_group(0)
        .env("BOO_CHAT_ID", chat)
        .env("BOO_SESSION_ID", "s-test")
        .env("BOO_AGENT", "sh")
        .stdin(Stdio::null());
    spawned(&mut cmd)
}

fn spawned(cmd: &mut Command) -> Spawned {
    let child = Spawned(cmd.spawn().expect("spawn"));
    crate::observe::processes::tests::wait_exec(child.pid());
    child
}

fn target_of(child: &Spawned, chat: &str) -> Agent {
    let id = identity(child.pid(), &labels()).expect("agent is running");
    Agent {
        pid: child.pid(),
        start_time: id.start_time,
        chat_id: chat.to_owned(),
        recorded_by_row: None,
        tied_to: None,
    }
}

/// Whether the process (pid, start time) is still there and not a zombie.
fn alive(pid: i32, start_time: u64) -> bool {
    identity(pid, &labels()).is_some_and(|i| i.start_time == start_time && is_alive_state(i.state))
}

/// Waits until `pid` has `n` live descendants (they are started in the
/// background by the agent's shell) and returns them.
async fn wait_for_descendants(pid: i32, n: usize) -> Vec<(i32, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = descendants(pid);
        if d.len() >= n {
            return d;
        }
        assert!(Instant::now() < deadline, "only {d:?} under {pid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// -- guarantee 1 ----------------------------------------------------

#[tokio::test]
async fn identity_is_rechecked_before_every_signal_a_reused_pid_is_never_signalled() {
    let (chat, _sweep) = new_chat();
    let a = agent("exec sleep 1000", &chat);
    let right = target_of(&a, &chat);

    // The pid now names a process that started at another time.
    let reused = Agent {
        start_time: right.start_time - 1,
        ..right.clone()
    };
    let out = terminate(&reused, Duration::from_millis(200), &labels(), &not_live).await;
    assert_eq!(
        out.not_signalled,
        Some(NotSignalled::StartTimeDiffers {
            found: right.start_time,
            expected: right.start_time - 1
        })
    );
    assert!(out.signalled.is_empty() && out.killed.is_empty(), "{out:?}");
    assert!(out.to_string().contains("identity mismatch"), "{out}");
    assert!(!out.all_gone());
    assert!(
        alive(right.pid, right.start_time),
        "the process must survive"
    );

    // Right start time, another chat's label.
    let other_chat = Agent {
        chat_id: "another-chat".into(),
        ..right.clone()
    };
    let out = terminate(
        &other_chat,
        Duration::from_millis(200),
        &labels(),
        &not_live,
    )
    .await;
    assert_eq!(
        out.not_signalled,
        Some(NotSignalled::LabelDiffers {
            found: Some(chat.clone()),
            expected: "another-chat".into()
        })
    );
    assert!(alive(right.pid, right.start_time));

    // Right start time, no label at all (an unrelated process).
    let mut cmd = Command::new("sleep");
    cmd.arg("1000").process_group(0).env_remove("BOO_CHAT_ID");
    let plain = spawned(&mut cmd);
    let plain_target = Agent {
        pid: plain.pid(),
        start_time: identity(plain.pid(), &labels()).unwrap().start_time,
        chat_id: chat.clone(),
        recorded_by_row: None,
        tied_to: None,
    };
    let out = terminate(
        &plain_target,
        Duration::from_millis(200),
        &labels(),
        &not_live,
    )
    .await;
    assert!(
        matches!(
            &out.not_signalled,
            Some(NotSignalled::LabelDiffers { found: None, .. })
        ),
        "{out:?}"
    );
    assert!(alive(plain_target.pid, plain_target.start_time));

    // And the right identity is stopped.
    let out = terminate(&right, Duration::from_secs(2), &labels(), &not_live).await;
    assert_eq!(out.not_signalled, None);
    assert!(!alive(right.pid, right.start_time));
}

#[tokio::test]
async fn identity_is_rechecked_before_every_signal_including_the_kill() {
    // The agent and its child ignore SIGTERM; during the grace, the
    // hook makes the child's pid (and then the agent's label) look
    // taken by another process, as a reused pid would be. Neither may
    // then get SIGKILL.
    // The child left the group (setsid): the group signal cannot
    // reach it, only a signal of its own could.
    let (chat, _sweep) = new_chat();
    let a = agent("trap '' TERM; setsid sleep 1000 & wait", &chat);
    let target = target_of(&a, &chat);
    let kids = wait_for_descendants(target.pid, 1).await;
    let (kid, kid_start) = kids[0];

    let out = run(
        &target,
        Duration::from_millis(300),
        &labels(),
        &not_live,
        &|| {},
        |t: &mut Tracking| {
            *t.procs.get_mut(&kid).unwrap() += 1;
        },
    )
    .await;
    assert_eq!(out.identity_changed, vec![kid], "{out:?}");
    assert!(!out.killed.contains(&kid), "{out:?}");
    assert!(alive(kid, kid_start), "a reused pid must not be killed");
    assert_eq!(out.killed, vec![target.pid], "{out:?}");
    nix::sys::signal::kill(Pid::from_raw(kid), Signal::SIGKILL).unwrap();

    // The agent execs into a TERM-ignoring sleep, so that it outlives
    // its child; the hook makes the agent's own pid look reused.
    let (chat, _sweep) = new_chat();
    let a = agent("trap '' TERM; sleep 1000 & exec sleep 1000", &chat);
    let target = target_of(&a, &chat);
    let (kid, kid_start) = wait_for_descendants(target.pid, 1).await[0];
    let out = run(
        &target,
        Duration::from_millis(300),
        &labels(),
        &not_live,
        &|| {},
        |t: &mut Tracking| {
            *t.procs.get_mut(&t.agent).unwrap() += 1;
        },
    )
    .await;
    assert_eq!(out.identity_changed, vec![target.pid], "{out:?}");
    assert!(
        alive(target.pid, target.start_time),
        "another start time: not killed"
    );
    // No killpg either: the descendant was killed on its own identity.
    assert_eq!(out.killed, vec![kid], "{out:?}");
    assert!(!alive(kid, kid_start));
}

/// Waits until `pid`'s environment carries no chat label (it re-exec'd
/// itself with none), or panics.
fn wait_unlabelled(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while identity(pid, &labels()).map(|i| i.env_chat) != Some(EnvChat::Absent) {
        assert!(Instant::now() < deadline, "pid {pid} kept its labels");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn an_agent_that_drops_its_labels_during_the_grace_is_killed() {
    // Once it had SIGTERM (it catches it), it re-execs itself without its
    // labels, ignoring TERM from then on: same pid, same start time, the
    // same process.
    let (chat, _sweep) = new_chat();
    let a = agent(
        "trap 'T=1' TERM; while [ -z \"$T\" ]; do sleep 0.02; done; \
         exec env -i sh -c \"trap '' TERM; while :; do sleep 0.05; done\"",
        &chat,
    );
    let target = target_of(&a, &chat);
    let out = run(
        &target,
        Duration::from_millis(1500),
        &labels(),
        &not_live,
        &|| {},
        |_: &mut Tracking| wait_unlabelled(target.pid),
    )
    .await;
    assert_eq!(out.not_signalled, None, "{out:?}");
    assert!(out.identity_changed.is_empty(), "{out:?}");
    assert!(out.killed.contains(&target.pid), "{out:?}");
    assert!(out.all_gone(), "{out:?}");
    assert!(!alive(target.pid, target.start_time), "the agent lives on");
    let outcome = crate::act::process::terminated_outcome(&out);
    assert_eq!(outcome.name(), "done", "{outcome:?}");
}

#[tokio::test]
async fn a_row_target_without_labels_is_stopped_but_never_one_with_another_chats_label() {
    let (chat, _sweep) = new_chat();
    let row = |pid: i32| Agent {
        pid,
        start_time: identity(pid, &labels()).unwrap().start_time,
        chat_id: chat.clone(),
        recorded_by_row: Some("a1".into()),
        tied_to: None,
    };
    // Another chat's label: a row's word never overrides it.
    let (other, _other_sweep) = new_chat();
    let labelled = agent("exec sleep 1000", &other);
    let t = row(labelled.pid());
    let out = terminate(&t, Duration::from_millis(200), &labels(), &not_live).await;
    assert_eq!(
        out.not_signalled,
        Some(NotSignalled::LabelDiffers {
            found: Some(other.clone()),
            expected: chat.clone()
        })
    );
    assert!(alive(t.pid, t.start_time));

    // No label at all: as a labelled target it is not the one observed;
    // as the row's, it is the process the row recorded.
    let mut cmd = Command::new("sleep");
    cmd.arg("1000").process_group(0).env_clear();
    // Its environment reads empty for good: wait for its command line.
    let cleared = Spawned(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{}/cmdline", cleared.pid())).unwrap_or_default()
        != b"sleep\x001000\x00"
    {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let t = row(cleared.pid());
    let as_labelled = Agent {
        recorded_by_row: None,
        tied_to: None,
        ..t.clone()
    };
    let out = terminate(
        &as_labelled,
        Duration::from_millis(200),
        &labels(),
        &not_live,
    )
    .await;
    assert!(
        matches!(
            out.not_signalled,
            Some(NotSignalled::LabelDiffers { found: None, .. })
        ),
        "{out:?}"
    );
    assert!(alive(t.pid, t.start_time));
    let out = terminate(&t, Duration::from_secs(2), &labels(), &not_live).await;
    assert_eq!(out.not_signalled, None, "{out:?}");
    assert_eq!(out.exited_on_term, vec![t.pid], "{out:?}");
    assert!(!alive(t.pid, t.start_time));
}

// -- guarantee 5 and 6: live chats ---------------------------------

/// Every question a termination asks, with when it was asked.
#[derive(Default)]
struct Asked(parking_lot::Mutex<Vec<(String, Instant)>>);

impl Asked {
    /// Records a question about `chat`; how many came before it.
    fn ask(&self, chat: &str) -> usize {
        let mut all = self.0.lock();
        let before = all.iter().filter(|(c, _)| c == chat).count();
        all.push((chat.to_owned(), Instant::now()));
        before
    }

    fn all(&self) -> Vec<(String, Instant)> {
        self.0.lock().clone()
    }
}

#[tokio::test]
async fn a_chat_reopened_during_the_grace_keeps_its_agent_and_says_it_had_sigterm() {
    // The executor found the chat not live and the termination began; by
    // the end of the grace the chat is live again.
    let (chat, _sweep) = new_chat();
    let a = agent("trap '' TERM; sleep 1000 & wait", &chat);
    let target = target_of(&a, &chat);
    let (kid, kid_start) = wait_for_descendants(target.pid, 1).await[0];
    let asked = Asked::default();
    let live = |c: &str| {
        asked.ask(c);
        Ok(c == chat)
    };
    let grace = Duration::from_secs(1);
    let started = Instant::now();
    let out = terminate(&target, grace, &labels(), &live).await;
    // Asked once, after the grace: right before SIGKILL.
    let asked = asked.all();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].1 - started >= grace,
        "asked before the grace ran out"
    );
    // It had SIGTERM, never SIGKILL.
    assert_eq!(out.signalled.len(), 2, "{out:?}");
    assert!(out.killed.is_empty(), "{out:?}");
    assert_eq!(
        out.kept_alive,
        Some(KeptAlive::LiveAgain {
            chat_id: chat.clone()
        })
    );
    let mut both = vec![target.pid, kid];
    both.sort();
    assert_eq!(out.kept, both, "{out:?}");
    assert!(alive(target.pid, target.start_time) && alive(kid, kid_start));
    assert!(!out.all_gone());
    let outcome = crate::act::process::terminated_outcome(&out);
    assert_eq!(outcome.name(), "skipped", "{outcome:?}");
    assert!(
        outcome.text().contains("is live again") && outcome.text().contains("already had SIGTERM"),
        "{}",
        outcome.text()
    );
}

#[tokio::test]
async fn a_chat_reopened_during_the_grace_keeps_its_agent_even_when_the_answer_fails() {
    // The database is down at the end of the grace: nothing is killed on a
    // guess, and the termination is a failure to retry, not "done".
    let (chat, _sweep) = new_chat();
    let a = agent("trap '' TERM; exec sleep 1000", &chat);
    let target = target_of(&a, &chat);
    let live = |_: &str| Err("connection refused".to_owned());
    let out = terminate(&target, Duration::from_millis(300), &labels(), &live).await;
    assert_eq!(out.signalled, vec![target.pid], "{out:?}");
    assert!(out.killed.is_empty(), "{out:?}");
    assert!(
        matches!(&out.kept_alive, Some(KeptAlive::LivenessUnknown { error, .. }) if error == "connection refused"),
        "{out:?}"
    );
    assert!(alive(target.pid, target.start_time));
    let outcome = crate::act::process::terminated_outcome(&out);
    assert_eq!(outcome.name(), "failed", "{outcome:?}");
    assert!(
        outcome.text().contains("never sent on a guess"),
        "{}",
        outcome.text()
    );
}

/// Kills the process group the test started (its processes ignore
/// SIGTERM, and some are not the test's children) when the test ends,
/// pass or fail.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// The one live process below `pid` whose command line is `cmd`.
fn below(pid: i32, cmd: &str) -> (i32, u64) {
    let found: Vec<(i32, u64)> = descendants(pid)
        .into_iter()
        .filter(|(p, _)| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmd)
        })
        .collect();
    assert_eq!(found.len(), 1, "{cmd} below {pid}: {found:?}");
    found[0]
}

/// An agent of chat A (TERM ignored, so that SIGKILL is needed) with a
/// child of its own and, in its group, a child labelled chat B whose own
/// child carries no label: `(agent, A's child, B's child, B's grandchild)`.
async fn agent_with_a_child_of_another_chat(
    a: &str,
    b: &str,
) -> (
    (Spawned, KillGroupOnDrop),
    Agent,
    (i32, u64),
    (i32, u64),
    (i32, u64),
) {
    let agent = agent(
        &format!(
            "trap '' TERM; sleep 1001 & BOO_CHAT_ID={b} sh -c 'env -u BOO_CHAT_ID sleep 1002 & wait' & wait"
        ),
        a,
    );
    let target = target_of(&agent, a);
    let group = KillGroupOnDrop(target.pid);
    wait_for_descendants(target.pid, 3).await;
    let own = below(target.pid, "sleep 1001");
    let of_b = below(target.pid, "sh -c env -u BOO_CHAT_ID sleep 1002 & wait");
    let b_child = below(of_b.0, "sleep 1002");
    ((agent, group), target, own, of_b, b_child)
}

#[tokio::test]
async fn a_live_chats_process_below_the_agent_is_left_alone_and_reported() {
    let ((a, _sa), (b, _sb)) = (new_chat(), new_chat());
    let (_agent, target, own, of_b, b_child) = agent_with_a_child_of_another_chat(&a, &b).await;
    let live = |c: &str| Ok(c == b);
    let out = terminate(&target, Duration::from_millis(500), &labels(), &live).await;
    assert_eq!(out.not_signalled, None, "{out:?}");
    // A's processes are gone, killed one by one: a group signal would
    // have reached B's too.
    assert_eq!(out.group, None, "{out:?}");
    let mut mine = vec![target.pid, own.0];
    mine.sort();
    assert_eq!(out.killed, mine, "{out:?}");
    assert!(!alive(target.pid, target.start_time) && !alive(own.0, own.1));
    // B's process and its unlabelled child were never signalled.
    assert_eq!(out.signalled, mine, "{out:?}");
    assert!(
        alive(of_b.0, of_b.1),
        "chat B's process was stopped: {out:?}"
    );
    assert!(
        alive(b_child.0, b_child.1),
        "its child was stopped: {out:?}"
    );
    assert_eq!(
        out.spared,
        vec![Spared {
            pid: of_b.0,
            chat_id: b.clone(),
            why: format!("chat {b} is live"),
        }]
    );
    assert!(out.to_string().contains("left alone below it"), "{out}");
    let outcome = crate::act::process::terminated_outcome(&out);
    assert!(
        outcome
            .text()
            .contains(&format!("{} (chat {b} is live)", of_b.0)),
        "{}",
        outcome.text()
    );

    // The same tree, chat B not live: all of it goes, as one group.
    let (_agent, target, own, of_b, b_child) = agent_with_a_child_of_another_chat(&a, &b).await;
    let out = terminate(&target, Duration::from_millis(500), &labels(), &not_live).await;
    assert_eq!(out.group, Some(target.pid), "{out:?}");
    assert!(out.spared.is_empty() && out.all_gone(), "{out:?}");
    for (p, s) in [(target.pid, target.start_time), own, of_b, b_child] {
        assert!(!alive(p, s), "pid {p} survived: {out:?}");
    }
}

#[tokio::test]
async fn a_process_of_a_chat_whose_liveness_cannot_be_read_is_left_alone() {
    let ((a, _sa), (b, _sb)) = (new_chat(), new_chat());
    let (_agent, target, own, of_b, b_child) = agent_with_a_child_of_another_chat(&a, &b).await;
    let live = |c: &str| {
        if c == b {
            Err("database down".to_owned())
        } else {
            Ok(false)
        }
    };
    let out = terminate(&target, Duration::from_millis(300), &labels(), &live).await;
    assert!(!alive(target.pid, target.start_time) && !alive(own.0, own.1));
    assert!(
        alive(of_b.0, of_b.1) && alive(b_child.0, b_child.1),
        "{out:?}"
    );
    assert_eq!(out.spared.len(), 1, "{out:?}");
    assert!(
        out.spared[0].why.contains("never signalled on a guess"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_chat_below_the_agent_reopened_during_the_grace_keeps_its_process() {
    let ((a, _sa), (b, _sb)) = (new_chat(), new_chat());
    let (_agent, target, own, of_b, b_child) = agent_with_a_child_of_another_chat(&a, &b).await;
    // B's shell ignores TERM too (inherited): it is still there after the
    // grace, when B is asked again. B is not live when first asked, live
    // from then on.
    let asked = Asked::default();
    let live = |c: &str| Ok(asked.ask(c) > 0 && c == b);
    let out = terminate(&target, Duration::from_millis(600), &labels(), &live).await;
    assert!(
        out.signalled.contains(&of_b.0),
        "B was not live at SIGTERM: {out:?}"
    );
    assert!(!alive(target.pid, target.start_time) && !alive(own.0, own.1));
    assert!(
        alive(of_b.0, of_b.1) && alive(b_child.0, b_child.1),
        "{out:?}"
    );
    assert_eq!(out.spared.len(), 1, "{out:?}");
    assert!(out.spared[0].why.contains("already had SIGTERM"), "{out:?}");
    assert_eq!(
        out.group,
        Some(target.pid),
        "SIGTERM went to the group: {out:?}"
    );
}

#[tokio::test]
async fn descendants_of_an_agent_gone_before_its_sigterm_are_still_stopped() {
    // The agent exits between the snapshot and its SIGTERM (here: while
    // chat B, below it, is asked about); its observed descendants are
    // still signalled, and the result is not "already gone".
    let ((a, _sa), (b, _sb)) = (new_chat(), new_chat());
    let ((mut agent, _group), target, own, of_b, b_child) =
        agent_with_a_child_of_another_chat(&a, &b).await;
    let agent_pid = target.pid;
    let live = |_: &str| {
        nix::sys::signal::kill(Pid::from_raw(agent_pid), Signal::SIGKILL).unwrap();
        // SIGKILL takes effect when the process next runs: on a loaded
        // machine that can be after this answer; wait until it is a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Process::new(agent_pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| is_alive_state(s.state))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGKILL never took effect"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(false)
    };
    let out = terminate(&target, Duration::from_millis(300), &labels(), &live).await;
    let _ = agent.0.wait();
    assert_eq!(out.not_signalled, None, "{out:?}");
    assert!(!out.signalled.contains(&target.pid), "{out:?}");
    for (p, s) in [own, of_b, b_child] {
        assert!(!alive(p, s), "pid {p} outlived its agent: {out:?}");
        assert!(out.signalled.contains(&p), "{out:?}");
    }
    assert!(out.all_gone(), "{out:?}");
}

// -- guarantee 2 ----------------------------------------------------

#[tokio::test]
async fn whole_group_and_every_descendant_are_signalled_even_those_that_called_setsid() {
    let (chat, _sweep) = new_chat();
    // sh ─┬─ sleep
    //     ├─ sh ── sleep                      (grandchild)
    //     └─ setsid sleep                     (own session and group)
    //     └─ setsid sh (ignores TERM) ── sleep (re-parented to init once
    //        sh dies on SIGTERM: must still get SIGKILL)
    let a = agent(
        "sleep 1000 & sh -c 'sleep 1000 & wait' & setsid sleep 1000 & \
         setsid sh -c \"trap '' TERM; sleep 1000 & wait\" & wait",
        &chat,
    );
    let target = target_of(&a, &chat);
    let kids = wait_for_descendants(target.pid, 6).await;
    let snap = Snapshot::take();
    let own_sessions = kids
        .iter()
        .filter(|(p, _)| snap.entries[p].sid == *p)
        .count();
    assert_eq!(own_sessions, 2, "two setsid descendants: {kids:?}");

    let out = terminate(&target, Duration::from_secs(1), &labels(), &not_live).await;
    assert_eq!(out.not_signalled, None);
    assert_eq!(out.group, Some(target.pid));
    assert!(out.survivors.is_empty(), "{out:?}");
    for (p, st) in kids.iter().chain([(target.pid, target.start_time)].iter()) {
        assert!(!alive(*p, *st), "pid {p} survived: {out:?}");
        assert!(out.signalled.contains(p), "{p} not in {out:?}");
    }
    // The TERM-ignoring setsid pair outlived its parent and was killed.
    assert_eq!(out.killed.len(), 2, "{out:?}");
    assert_eq!(out.exited_on_term.len(), 5, "{out:?}");
}

#[tokio::test]
async fn whole_group_and_every_descendant_are_signalled_and_nothing_else() {
    // A sibling that is neither labelled nor a descendant survives, and
    // so does this test process.
    let (chat, _sweep) = new_chat();
    let a = agent("sleep 1000 & wait", &chat);
    let mut sib = Command::new("sleep");
    sib.arg("1000").process_group(0);
    let sibling = spawned(&mut sib);
    let sib_start = identity(sibling.pid(), &labels()).unwrap().start_time;
    let target = target_of(&a, &chat);
    wait_for_descendants(target.pid, 1).await;

    let out = terminate(&target, Duration::from_secs(2), &labels(), &not_live).await;
    assert!(out.all_gone(), "{out:?}");
    assert!(!out.signalled.contains(&sibling.pid()));
    assert!(alive(sibling.pid(), sib_start), "the sibling must survive");
    let me = std::process::id() as i32;
    assert!(!out.signalled.contains(&me));
    assert!(identity(me, &labels()).is_some());
}

#[tokio::test]
async fn whole_group_and_every_descendant_are_signalled_but_not_a_group_the_agent_does_not_lead() {
    // Spawned without its own group, the agent shares this test's
    // group: it and its child are signalled one by one, never killpg.
    let (chat, _sweep) = new_chat();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 1000 & wait"])
        .env("BOO_CHAT_ID", &chat);
    let a = spawned(&mut cmd);
    let target = target_of(&a, &chat);
    let kids = wait_for_descendants(target.pid, 1).await;
    let out = terminate(&target, Duration::from_secs(2), &labels(), &not_live).await;
    assert_eq!(out.group, None, "{out:?}");
    assert!(out.all_gone(), "{out:?}");
    assert!(!alive(kids[0].0, kids[0].1));
    assert_eq!(out.exited_on_term.len(), 2, "{out:?}");
}

// -- guarantee 3 ----------------------------------------------------

#[tokio::test]
async fn never_signals_pid_1_0_negatives_itself_its_ancestors_or_its_own_group() {
    let me = Me::current();
    let snap = Snapshot::take();
    let ancestors: HashSet<i32> = snap.ancestors_of(me.pid).into_iter().collect();
    let parent = nix::unistd::getppid().as_raw();
    for pid in [0, -1, -me.pgid, 1, me.pid, parent] {
        let start = identity(pid, &labels()).map_or(0, |i| i.start_time);
        let out = terminate(
            &Agent {
                pid,
                start_time: start,
                chat_id: "c".into(),
                recorded_by_row: None,
                tied_to: None,
            },
            Duration::from_millis(100),
            &labels(),
            &not_live,
        )
        .await;
        assert!(
            matches!(out.not_signalled, Some(NotSignalled::Protected { .. })),
            "pid {pid}: {out:?}"
        );
        assert!(out.signalled.is_empty());
    }
    for pgid in [0, 1, -5, me.pgid, me.pid] {
        assert!(guard_group(pgid, &me, &snap, &ancestors).is_err(), "{pgid}");
    }
    if let Some(&a) = ancestors.iter().find(|&&a| a > 1) {
        let pgid = snap.entries[&a].pgid;
        assert!(guard_group(pgid, &me, &snap, &ancestors).is_err());
    }
    // send_group itself refuses, whatever the caller checked.
    send_group(me.pgid, Signal::SIGTERM, &me);
    send_group(1, Signal::SIGTERM, &me);
    send_group(0, Signal::SIGTERM, &me);
    // Still here.
}

// -- guarantee 4 ----------------------------------------------------

#[tokio::test]
async fn exits_on_sigterm_is_reported_exited_on_term() {
    let (chat, _sweep) = new_chat();
    let a = agent("sleep 1000 & wait", &chat);
    let target = target_of(&a, &chat);
    let kids = wait_for_descendants(target.pid, 1).await;
    let started = Instant::now();
    let out = terminate(&target, Duration::from_secs(5), &labels(), &not_live).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let mut both = vec![target.pid, kids[0].0];
    both.sort();
    assert_eq!(out.signalled, both);
    assert_eq!(out.exited_on_term, both);
    assert!(out.killed.is_empty() && out.survivors.is_empty(), "{out:?}");
    assert!(!alive(target.pid, target.start_time));
    assert!(!alive(kids[0].0, kids[0].1));
}

#[tokio::test]
async fn term_then_grace_then_kill_and_concurrent_terminations_take_one_grace() {
    let grace = Duration::from_secs(1);
    let ((c1, _s1), (c2, _s2)) = (new_chat(), new_chat());
    let a1 = agent("trap '' TERM; sleep 1000", &c1);
    let a2 = agent("trap '' TERM; sleep 1000", &c2);
    let (t1, t2) = (target_of(&a1, &c1), target_of(&a2, &c2));
    let k1 = wait_for_descendants(t1.pid, 1).await;
    let k2 = wait_for_descendants(t2.pid, 1).await;

    let started = Instant::now();
    let l = labels();
    let (o1, o2) = tokio::join!(
        terminate(&t1, grace, &l, &not_live),
        terminate(&t2, grace, &l, &not_live)
    );
    let took = started.elapsed();
    assert!(took >= grace, "SIGKILL came before the grace: {took:?}");
    assert!(
        took < grace.mul_f64(1.8),
        "two concurrent terminations took {took:?}, more than one grace"
    );
    for (out, t, k) in [(&o1, &t1, &k1), (&o2, &t2, &k2)] {
        assert!(out.exited_on_term.is_empty(), "{out:?}");
        let mut both = vec![t.pid, k[0].0];
        both.sort();
        assert_eq!(out.killed, both, "{out:?}");
        assert!(out.survivors.is_empty());
        assert!(!alive(t.pid, t.start_time) && !alive(k[0].0, k[0].1));
        assert!(
            out.to_string().contains("2 killed after the grace"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn term_then_grace_then_kill_reports_an_already_gone_agent() {
    let (chat, _sweep) = new_chat();
    let mut a = agent("exit 0", &chat);
    let pid = a.pid();
    a.0.wait().unwrap();
    let out = terminate(
        &Agent {
            pid,
            start_time: 1,
            chat_id: chat,
            recorded_by_row: None,
            tied_to: None,
        },
        Duration::from_millis(100),
        &labels(),
        &not_live,
    )
    .await;
    // Gone, or (if the pid was taken already) another process.
    assert!(
        matches!(
            out.not_signalled,
            Some(NotSignalled::Gone | NotSignalled::StartTimeDiffers { .. })
        ),
        "{out:?}"
    );
}

// -- guarantee 5 ----------------------------------------------------

#[test]
fn outcome_is_a_serializable_report() {
    let out = Terminated {
        pid: 10,
        group: Some(10),
        signalled: vec![10, 11, 12],
        exited_on_term: vec![10, 11],
        killed: vec![],
        survivors: vec![Survivor {
            pid: 12,
            state: 'D',
        }],
        identity_changed: vec![],
        not_signalled: None,
        ..Terminated::default()
    };
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["survivors"][0]["state"], "D");
    assert_eq!(v["signalled"], serde_json::json!([10, 11, 12]));
    assert_eq!(v["not_signalled"], serde_json::Value::Null);
    assert!(!out.all_gone());
    assert_eq!(
        out.to_string(),
        "pid 10: SIGTERM to 3 process(es) (group 10); 2 exited; still there after SIGKILL: 12 (D)"
    );
    let refused = Terminated {
        pid: 10,
        not_signalled: Some(NotSignalled::StartTimeDiffers {
            found: 5,
            expected: 4,
        }),
        ..Terminated::default()
    };
    let v = serde_json::to_value(&refused).unwrap();
    assert_eq!(v["not_signalled"]["reason"], "start_time_differs");
    assert_eq!(v["not_signalled"]["found"], 5);

    // SIGKILL withheld, and a live chat's process left alone: both named.
    let kept = Terminated {
        pid: 10,
        group: Some(10),
        signalled: vec![10, 11],
        kept_alive: Some(KeptAlive::LiveAgain {
            chat_id: "c1".into(),
        }),
        kept: vec![10, 11],
        spared: vec![Spared {
            pid: 12,
            chat_id: "c2".into(),
            why: "chat c2 is live".into(),
        }],
        ..Terminated::default()
    };
    assert!(!kept.all_gone());
    assert_eq!(
        kept.to_string(),
        "pid 10: SIGTERM to 2 process(es) (group 10); 0 exited; chat c1 is live again: \
         SIGKILL withheld; it already had SIGTERM; still running: 10, 11; \
         left alone below it: 12 (chat c2 is live)"
    );
    let v = serde_json::to_value(&kept).unwrap();
    assert_eq!(v["kept_alive"]["reason"], "live_again");
    assert_eq!(v["kept"], serde_json::json!([10, 11]));
    assert_eq!(v["spared"][0]["chat_id"], "c2");
    // Nothing kept or spared: the fields are left out of the record.
    let v = serde_json::to_value(&out).unwrap();
    assert!(
        v.get("kept_alive").is_none() && v.get("spared").is_none(),
        "{v}"
    );
}

// -- a real ACP agent -------------------------------------------------

const QWEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/agents");

/// `npm ci` in tests/agents when its node_modules is missing, so that a
/// fresh clone (CI) installs the pinned qwen-code; failing is fatal.
fn ensure_qwen() -> PathBuf {
    let dir = Path::new(QWEN_DIR);
    let bin = dir.join("node_modules/.bin/qwen");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .status()
            .expect("npm must be installed to run the real ACP agent test");
        assert!(status.success(), "npm ci in {QWEN_DIR} failed: {status}");
    }
    assert!(bin.exists(), "{} missing after npm ci", bin.display());
    bin
}

/// qwen-code (`@qwen-code/qwen-code`, pinned to 0.10.1 in tests/agents)
/// as a warm ACP agent. What it does, as observed on 0.10.1 (and the
/// same on 0.15.10) with Node 20:
///
/// - `qwen --acp` is `node cli.js --acp`. Unless `QWEN_CODE_NO_RELAUNCH`
///   or `SANDBOX` is set, it relaunches itself at start-up
///   (`relaunchAppInChildProcess`): it spawns `node cli.js --acp` again
///   with `QWEN_CODE_NO_RELAUNCH=true`, stdio inherited and the rest of
///   the environment (our labels too), and then only waits for it. The
///   child is the one that speaks ACP on stdin/stdout.
/// - The parent installs no SIGTERM handler while it waits: SIGTERM to
///   the parent alone ends it and leaves the child re-parented to pid 1
///   and alive (still reading the stdin pipe) — the orphaned-agent leak.
/// - It needs no credentials to start and answer `initialize`.
///
/// Why 0.10.1: from 0.12.0 on, qwen-code has an optional dependency on
/// `@teddyzhu/clipboard`, whose platform packages other than
/// linux-x64-gnu are not in the registry; `npm install` then writes a
/// lock file that `npm ci` rejects as out of sync. 0.24.4 relaunches
/// twice (an entry wrapper, then this same relaunch) and asks for Node
/// 22.
///
/// The test starts it as a launcher would (own process group, labels,
/// stdin piped), asks `initialize`, checks that both node processes run
/// and carry the label, then terminates the agent and proves both gone.
#[tokio::test]
async fn real_qwen_acp_agent_and_its_relaunched_child_are_both_gone() {
    let bin = ensure_qwen();
    let home = tempfile::tempdir().unwrap();
    let (chat, _sweep) = new_chat();
    let mut cmd = Command::new(&bin);
    cmd.arg("--acp")
        .current_dir(home.path())
        .process_group(0)
        .env("HOME", home.path())
        .env("BOO_CHAT_ID", &chat)
        .env("BOO_SESSION_ID", "s-qwen")
        .env("BOO_AGENT", "qwen")
        .env_remove("QWEN_CODE_NO_RELAUNCH")
        .env_remove("SANDBOX")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut a = spawned(&mut cmd);
    let target = target_of(&a, &chat);

    // initialize over stdio JSON-RPC: proves the agent is up.
    let mut stdin = a.0.stdin.take().unwrap();
    let stdout = a.0.stdout.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":1,"clientCapabilities":{{"fs":{{"readTextFile":false,"writeTextFile":false}}}}}}}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("qwen --acp did not answer initialize");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(
        answer["result"]["agentInfo"]["name"], "qwen-code",
        "{answer}"
    );

    // The relaunched child: a node process under the agent, labelled.
    let kids = wait_for_descendants(target.pid, 1).await;
    let child: Vec<(i32, u64)> = kids
        .iter()
        .copied()
        .filter(|(p, _)| {
            let cmdline = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmdline.contains("qwen") && cmdline.contains("--acp")
        })
        .collect();
    assert_eq!(child.len(), 1, "relaunched child not found among {kids:?}");
    let (child_pid, child_start) = child[0];
    let id = identity(child_pid, &labels()).unwrap();
    assert_eq!(
        id.chat_label.as_deref(),
        Some(chat.as_str()),
        "label inherited"
    );
    assert_eq!(id.ppid, target.pid);
    assert_eq!(id.pgid, target.pid, "in the agent's group");

    let out = terminate(&target, Duration::from_secs(5), &labels(), &not_live).await;
    eprintln!("qwen: {out}");
    assert_eq!(out.not_signalled, None, "{out:?}");
    assert!(out.survivors.is_empty(), "{out:?}");
    assert!(
        !alive(target.pid, target.start_time),
        "qwen parent still alive"
    );
    assert!(
        !alive(child_pid, child_start),
        "qwen's relaunched child survived: {out:?}"
    );
    for (p, st) in kids {
        assert!(!alive(p, st), "descendant {p} survived");
    }
    drop(stdin);
}
