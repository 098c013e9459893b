//! Agents that try to slip past the label scan, end to end: real
//! processes, the controller's own pass, both databases. Each either goes
//! or is named; none is ever reported done while it runs, and a chat
//! reopened during the grace keeps its agent.

mod common;

use std::time::{Duration, Instant};

use boo_reconciler::model::Scope;
use boo_reconciler::report::exit;
use common::{alive, Db, World};

both_databases!(
    a_chat_reopened_during_the_grace_keeps_its_agent_and_the_audit_says_it_had_sigterm,
    an_agent_that_re_execs_without_its_labels_during_the_grace_is_killed,
    agents_that_cleared_or_zeroed_their_environment_are_stopped_through_their_rows,
    a_live_chats_process_below_an_archived_chats_agent_is_left_alone_and_named,
);

/// Whether `pid`'s environment no longer carries `label` (cleared by an
/// exec, or overwritten in place).
fn unlabelled(pid: i32, label: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        !env.split(|b| *b == 0)
            .any(|e| e.starts_with(format!("{label}=").as_bytes()))
    })
}

fn wait_unlabelled(pid: i32, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !unlabelled(pid, label) {
        assert!(Instant::now() < deadline, "pid {pid} kept its label");
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn a_chat_reopened_during_the_grace_keeps_its_agent_and_the_audit_says_it_had_sigterm(
    db: Db,
) {
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_secs(2);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    // The agent catches TERM and says so with a file; the chat is reopened
    // as soon as the agent has had it, well within the grace.
    let termed = w.tmp.path().join("termed");
    let a = w.agent(
        "c1",
        "s1",
        &format!(
            "trap \"touch '{}'\" TERM; while :; do sleep 0.05; done",
            termed.display()
        ),
        w.tmp.path(),
    );
    let (pid, start) = (a.pid(), a.start_time());

    let reopen = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !termed.exists() {
            assert!(Instant::now() < deadline, "the agent never had SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.sql("UPDATE chats SET status = 'open' WHERE id = 'c1'")
            .await;
    };
    let (report, ()) = tokio::join!(w.once(Scope::Host, false), reopen);
    assert!(alive(pid, start), "the reopened chat's agent was killed");
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    let audit = w.audit().await;
    let term = audit
        .iter()
        .find(|r| r.action == "terminate_process" && r.outcome != "intent")
        .unwrap_or_else(|| panic!("no outcome of the termination: {audit:?}"));
    assert_eq!(term.outcome, "skipped", "{term:?}");
    let said = format!("{} {}", term.reason, term.detail);
    assert!(
        said.contains("chat c1 is live again") && said.contains("already had SIGTERM"),
        "{said}"
    );

    // The next pass leaves the live chat's agent alone.
    let again = w.once(Scope::Host, false).await;
    assert!(again.results.is_empty(), "{}", again.render());
    assert!(alive(pid, start));
}

async fn an_agent_that_re_execs_without_its_labels_during_the_grace_is_killed(db: Db) {
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_secs(2);
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    // Once it had SIGTERM (it catches it), it re-execs itself without its
    // labels, ignoring TERM from then on.
    let a = w.agent(
        "c1",
        "s1",
        "trap 'T=1' TERM; while [ -z \"$T\" ]; do sleep 0.02; done; \
         exec env -i sh -c \"trap '' TERM; while :; do sleep 0.05; done\"",
        w.tmp.path(),
    );
    let (pid, start) = (a.pid(), a.start_time());
    let relabelled = tokio::task::spawn_blocking({
        let label = w.labels[0].clone();
        move || wait_unlabelled(pid, &label)
    });
    let report = w.once(Scope::Host, false).await;
    relabelled.await.unwrap();
    assert!(!alive(pid, start), "the agent lives on without its labels");
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    let detail = serde_json::to_value(&report.results[0].detail).unwrap();
    assert!(
        detail["killed"]
            .as_array()
            .is_some_and(|k| k.contains(&serde_json::json!(pid))),
        "{detail}"
    );
    assert_eq!(
        detail["identity_changed"],
        serde_json::json!([]),
        "{detail}"
    );
}

async fn agents_that_cleared_or_zeroed_their_environment_are_stopped_through_their_rows(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    w.chat("c2", "s1", "open").await;
    let fifo = w.tmp.path().join("never-written");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // One re-execs itself with an empty environment; the other overwrites
    // its environment block in place, as setproctitle() does (its
    // /proc/<pid>/environ then reads as zeros), and waits on a fifo.
    let cleared = w.agent(
        "c1",
        "s1",
        "sleep 0.2; exec env -i sleep 1000",
        w.tmp.path(),
    );
    let zeroed = w.agent(
        "c1",
        "s1",
        &format!(
            "set -- $(sed 's/.*) //' /proc/$$/stat); s=${{48}}; e=${{49}}; \
             head -c $((e - s)) /dev/zero | dd of=/proc/$$/mem bs=1 seek=$s conv=notrunc status=none; \
             read x < '{}'",
            fifo.display()
        ),
        w.tmp.path(),
    );
    // The live chat's agent, cleared the same way, runs on.
    let live = w.agent(
        "c2",
        "s1",
        "sleep 0.2; exec env -i sleep 1000",
        w.tmp.path(),
    );
    let agents = [("a1", &cleared), ("a2", &zeroed), ("a3", &live)];
    for (row, a) in agents {
        wait_unlabelled(a.pid(), &w.labels[0]);
        let chat = if row == "a3" { "c2" } else { "c1" };
        w.acp_row(row, chat, "s1", Some((a.pid(), a.start_time())))
            .await;
    }
    let zeros = std::fs::read(format!("/proc/{}/environ", zeroed.pid())).unwrap();
    assert!(
        !zeros.is_empty() && zeros.iter().all(|b| *b == 0),
        "not zeroed in place"
    );
    let (cp, cs) = (cleared.pid(), cleared.start_time());
    let (zp, zs) = (zeroed.pid(), zeroed.start_time());
    let (lp, ls) = (live.pid(), live.start_time());

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(
        !alive(cp, cs),
        "the agent that cleared its environment runs on"
    );
    assert!(
        !alive(zp, zs),
        "the agent that zeroed its environment runs on"
    );
    assert!(alive(lp, ls), "the live chat's agent was stopped");
    assert_eq!(w.agent_row("a1").await, ("closed".into(), true));
    assert_eq!(w.agent_row("a2").await, ("closed".into(), true));
    assert_eq!(w.agent_row("a3").await.0, "open");
    let audit = w.audit().await;
    for pid in [cp, zp] {
        let done = audit.iter().any(|r| {
            r.action == "terminate_process"
                && r.outcome == "done"
                && r.target.starts_with(&format!("process:{pid}@"))
        });
        assert!(done, "no termination of {pid} done: {audit:?}");
    }
    assert!(report.pending.is_empty(), "{}", report.render());
}

/// Kills a process group the test started when the test ends, pass or
/// fail: its processes ignore SIGTERM and some are not the test's
/// children.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn a_live_chats_process_below_an_archived_chats_agent_is_left_alone_and_named(db: Db) {
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_millis(500);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    w.chat("c2", "s1", "open").await;
    let a = w.agent(
        "c1",
        "s1",
        &format!(
            "trap '' TERM; sleep 1001 & {}=c2 sh -c 'sleep 1002 & wait' & wait",
            w.labels[0]
        ),
        w.tmp.path(),
    );
    let _group = KillGroup(a.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::labelled(&w.labels[0], "c2").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "chat c2's processes never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let of_c2: Vec<(i32, u64)> = common::labelled(&w.labels[0], "c2")
        .into_iter()
        .map(|p| (p, common::start_time_of(p).unwrap()))
        .collect();
    let of_c1: Vec<(i32, u64)> = common::labelled(&w.labels[0], "c1")
        .into_iter()
        .map(|p| (p, common::start_time_of(p).unwrap()))
        .collect();
    assert_eq!(of_c1.len(), 2, "the agent and its own child: {of_c1:?}");

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    for (p, s) in &of_c1 {
        assert!(!alive(*p, *s), "chat c1's pid {p} runs on");
    }
    for (p, s) in &of_c2 {
        assert!(alive(*p, *s), "live chat c2's pid {p} was stopped");
    }
    let detail = serde_json::to_value(&report.results[0].detail).unwrap();
    // Both carry chat c2's label: each is named.
    let spared: Vec<(i64, String)> = detail["spared"]
        .as_array()
        .expect("spared listed")
        .iter()
        .map(|s| {
            (
                s["pid"].as_i64().unwrap(),
                s["chat_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(i64, String)> = of_c2
        .iter()
        .map(|(p, _)| (*p as i64, "c2".into()))
        .collect();
    assert_eq!(spared, want, "{detail}");
    let audit = w.audit().await;
    let term = audit
        .iter()
        .find(|r| r.action == "terminate_process" && r.outcome == "done")
        .unwrap_or_else(|| panic!("no termination done: {audit:?}"));
    let said = format!("{} {}", term.reason, term.detail);
    assert!(
        said.contains("left alone below it") && said.contains("chat c2 is live"),
        "{said}"
    );
}
