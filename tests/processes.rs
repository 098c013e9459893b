//! Agent processes end to end: real labelled processes spawned as a
//! launcher would, the controller's own pass, both databases.

mod common;

use std::time::{Duration, Instant};

use boo_reconciler::model::Scope;
use boo_reconciler::report::exit;
use common::{alive, labelled, Db, World};

both_databases!(
    agent_of_archived_chat_that_exits_on_term_is_gone_and_its_rows_closed,
    agents_ignoring_term_are_killed_after_one_grace_for_all_chats_at_once,
    every_descendant_is_gone_even_one_that_left_the_group,
    recorded_pid_with_another_start_time_is_never_signalled_and_its_row_closed,
    live_chat_agent_survives_deleted_chat_agent_is_stopped_young_orphan_survives,
    process_in_a_worktree_keeps_it_unless_it_is_an_agent_of_a_dead_chat,
    an_agent_stopped_inside_a_removed_worktree_is_audited_by_pid_and_start_time,
    row_whose_process_no_longer_exists_is_closed_even_for_a_live_chat,
);

async fn row_whose_process_no_longer_exists_is_closed_even_for_a_live_chat(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "open").await;
    let exited = w.agent("c1", "s1", "exec sleep 1000", w.tmp.path());
    let (gone_pid, gone_start) = (exited.pid(), exited.start_time());
    drop(exited);
    let running = w.agent("c1", "s1", "exec sleep 1000", w.tmp.path());
    let (pid, start) = (running.pid(), running.start_time());
    let init_start = common::start_time_of(1).expect("pid 1 runs");
    w.acp_row("gone", "c1", "s1", Some((gone_pid, gone_start)))
        .await;
    // pid 1 runs, but not the process this row recorded.
    w.acp_row("reused", "c1", "s1", Some((1, init_start + 12_345)))
        .await;
    w.acp_row("running", "c1", "s1", Some((pid, start))).await;

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(w.agent_row("gone").await, ("closed".into(), true));
    assert_eq!(w.agent_row("reused").await, ("closed".into(), true));
    assert_eq!(w.agent_row("running").await.0, "open");
    assert!(alive(pid, start), "the live chat's agent runs on");
    assert!(report.pending.is_empty(), "{}", report.render());
    let audit = w.audit().await;
    let reason = |target: &str| {
        audit
            .iter()
            .find(|a| a.target == target && a.outcome == "done")
            .map(|a| a.reason.clone())
            .unwrap_or_else(|| panic!("no audit record closing {target}: {audit:?}"))
    };
    assert!(
        reason("agent-row:gone").contains(&format!("recorded pid {gone_pid} is gone")),
        "{}",
        reason("agent-row:gone")
    );
    assert!(
        reason("agent-row:reused").contains("recorded pid 1 was reused"),
        "{}",
        reason("agent-row:reused")
    );
    assert!(!audit.iter().any(|a| a.action == "terminate_process"));

    // Converged: the next pass has nothing to do.
    let again = w.once(Scope::Host, false).await;
    assert!(again.results.is_empty(), "{}", again.render());
}

async fn agent_of_archived_chat_that_exits_on_term_is_gone_and_its_rows_closed(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    w.chat("c2", "s1", "open").await;
    let a = w.agent("c1", "s1", "exec sleep 1000", w.tmp.path());
    let (pid, start) = (a.pid(), a.start_time());
    w.acp_row("a1", "c1", "s1", Some((pid, start))).await;
    w.acp_row("a2", "c1", "s1", None).await;

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!alive(pid, start), "agent gone");
    assert_eq!(w.agent_row("a1").await, ("closed".into(), true));
    assert_eq!(w.agent_row("a2").await, ("closed".into(), true));
    let audit = w.audit().await;
    let intent = audit
        .iter()
        .position(|a| a.action == "terminate_process")
        .expect("audit records of the termination");
    assert_eq!(
        audit[intent].outcome, "intent",
        "announced before the signal"
    );
    let term = &audit[intent + 1];
    assert_eq!(term.action, "terminate_process");
    assert_eq!(term.outcome, "done");
    assert_eq!(term.target, audit[intent].target);
    assert!(term.intent_id.is_some(), "the outcome names its intent");
    assert_eq!(term.chat_id.as_deref(), Some("c1"));
    assert!(term.reason.contains("chat c1 archived"), "{}", term.reason);
    assert!(term.target.starts_with(&format!("process:{pid}@")));
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "close_agent_row" && a.outcome == "done")
            .count(),
        2
    );
    // The report lists the process with pid, agent, chat, age and reason.
    let json = serde_json::to_value(&report).unwrap();
    let p = &json["results"][0]["action"]["process"];
    assert_eq!(p["pid"], pid);
    assert_eq!(p["chat_id"], "c1");
    assert_eq!(p["agent"], "test-agent");
    assert!(p["age_secs"].is_u64());

    // Idempotent: nothing left to do.
    let again = w.once(Scope::Host, false).await;
    assert!(again.results.is_empty(), "{}", again.render());
}

async fn agents_ignoring_term_are_killed_after_one_grace_for_all_chats_at_once(db: Db) {
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_secs(2);
    let mut agents = Vec::new();
    for (s, c) in [("s1", "c1"), ("s2", "c2")] {
        w.session(s, "archived").await;
        w.chat(c, s, "open").await;
        let a = w.agent(
            c,
            s,
            "trap '' TERM; while :; do sleep 0.1; done",
            w.tmp.path(),
        );
        agents.push((a.pid(), a.start_time(), a));
    }
    let t0 = Instant::now();
    let report = w.once(Scope::Host, false).await;
    let took = t0.elapsed();
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    for (pid, start, _) in &agents {
        assert!(!alive(*pid, *start), "pid {pid} killed");
    }
    let notes: Vec<String> = report
        .results
        .iter()
        .map(|r| serde_json::to_string(&r.detail).unwrap())
        .collect();
    assert!(
        notes.iter().all(|n| n.contains("\"killed\":[")),
        "{notes:?}"
    );
    // Both graces ran side by side: the pass took less than the two
    // terminations added up (about one grace, not two).
    let sum: u64 = report.results.iter().map(|r| r.duration_ms).sum();
    assert!(
        (took.as_millis() as u64) < sum,
        "the pass took {took:?}; its terminations {sum} ms in all: they ran one after the other"
    );
    println!("two TERM-ignoring agents, 2s grace: {took:?}");
}

async fn every_descendant_is_gone_even_one_that_left_the_group(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    let a = w.agent(
        "c1",
        "s1",
        "sleep 1000 & sh -c 'sleep 1000 & wait' & setsid sleep 1000 & wait",
        w.tmp.path(),
    );
    // The shell, its two children, a grandchild: all labelled (inherited).
    let deadline = Instant::now() + Duration::from_secs(10);
    while labelled(&w.labels[0], "c1").len() < 5 {
        assert!(Instant::now() < deadline, "descendants never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = labelled(&w.labels[0], "c1");
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    // One action for the tree: the descendants go with their agent.
    assert_eq!(report.results.len(), 1, "{}", report.render());
    assert_eq!(
        labelled(&w.labels[0], "c1"),
        Vec::<i32>::new(),
        "all of {before:?} gone"
    );
    drop(a);
}

async fn recorded_pid_with_another_start_time_is_never_signalled_and_its_row_closed(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    // An unrelated, unlabelled process now holds the recorded pid.
    let mut bystander = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let pid = bystander.id() as i32;
    let start = common::start_time_of(pid).unwrap();
    w.acp_row("a1", "c1", "s1", Some((pid, start + 1))).await;

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(alive(pid, start), "the process at the reused pid survives");
    assert_eq!(w.agent_row("a1").await, ("closed".into(), true));
    let audit = w.audit().await;
    let close = audit
        .iter()
        .find(|a| a.action == "close_agent_row")
        .unwrap();
    assert!(close.reason.contains("was reused"), "{}", close.reason);
    assert!(!audit.iter().any(|a| a.action == "terminate_process"));
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

async fn live_chat_agent_survives_deleted_chat_agent_is_stopped_young_orphan_survives(db: Db) {
    let mut w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("live", "s1", "open").await;
    w.chat("gone", "s1", "open").await;
    let live = w.agent("live", "s1", "exec sleep 1000", w.tmp.path());
    let gone = w.agent("gone", "s1", "exec sleep 1000", w.tmp.path());
    let young = w.agent("never-had-a-row", "s1", "exec sleep 1000", w.tmp.path());
    w.sql("DELETE FROM chats WHERE id = 'gone'").await;

    // Young: both no-row agents are younger than the minimum age.
    let report = w.once(Scope::Host, false).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert_eq!(report.pending.len(), 2, "{}", report.render());
    assert!(alive(gone.pid(), gone.start_time()));

    // Once old enough (minimum age 1s), both are stopped; the live one stays.
    w.process_orphan_min_age = Duration::from_secs(1);
    std::thread::sleep(Duration::from_millis(1100));
    let (gp, gs, yp, ys) = (
        gone.pid(),
        gone.start_time(),
        young.pid(),
        young.start_time(),
    );
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(
        alive(live.pid(), live.start_time()),
        "live chat's agent survives"
    );
    assert!(!alive(gp, gs), "deleted chat's agent stopped");
    assert!(!alive(yp, ys), "no-row agent stopped once old");
    assert!(report
        .results
        .iter()
        .any(|r| r.action.reason.starts_with("chat gone has no row")));
}

async fn process_in_a_worktree_keeps_it_unless_it_is_an_agent_of_a_dead_chat(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    // An unlabelled process (an editor, a shell) working in the worktree.
    let mut editor = std::process::Command::new("sleep")
        .arg("1000")
        .current_dir(&path)
        .spawn()
        .unwrap();
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
    assert!(path.exists());
    let (state, reasons) = w.row_state("w1").await;
    assert_eq!(state, "at_risk");
    let reasons = reasons.unwrap();
    assert!(reasons.contains("in_use"), "{reasons}");
    assert!(reasons.contains(&editor.id().to_string()), "{reasons}");
    assert!(report
        .render()
        .contains(&format!("in use by pid {} (sleep", editor.id())));
    // Force does not override a process in the directory.
    let forced = w.once(Scope::Host, true).await;
    assert!(path.exists(), "{}", forced.render());
    editor.kill().unwrap();
    editor.wait().unwrap();

    // A labelled agent of the dead chat in the worktree: stopped, then the
    // worktree goes.
    agent_of_a_dead_chat_stopped_inside(&w, &path).await;
    assert!(!path.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
}

/// Starts an agent of a dead chat in `path`, a worktree of session s1, and
/// checks that a pass over s1 converges with it gone; its pid and start
/// time. Its label names a chat of another session, so only the worktree's
/// removal itself can stop it.
async fn agent_of_a_dead_chat_stopped_inside(w: &World, path: &std::path::Path) -> (i32, u64) {
    w.session("s9", "archived").await;
    w.chat("c9", "s9", "archived").await;
    let agent = w.agent("c9", "s9", "exec sleep 1000", path);
    let (pid, start) = (agent.pid(), agent.start_time());
    let report = w.once(Scope::Session("s1".into()), false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!alive(pid, start));
    (pid, start)
}

async fn an_agent_stopped_inside_a_removed_worktree_is_audited_by_pid_and_start_time(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    // Stopped by the removal of w1, not by a termination the planner
    // planned.
    let (pid, start) = agent_of_a_dead_chat_stopped_inside(&w, &path).await;
    let audit = w.audit().await;
    let stopped: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "terminate_process")
        .map(|a| (a.outcome.as_str(), a.target.as_str()))
        .collect();
    let target = format!("process:{pid}@{start}");
    assert_eq!(
        stopped,
        vec![("intent", target.as_str()), ("done", target.as_str())],
        "the same identity as a planned termination's: {audit:?}"
    );
}

/// The real ACP agent the orchestrator runs: qwen-code (pinned in
/// tests/agents), started as a launcher would — its own process group, the
/// labels, stdin piped. `qwen --acp` relaunches itself as a second node
/// process, and SIGTERM to the parent alone would leave that child alive
/// under pid 1 (see act::process::terminate's tests). Archiving the chat and running
/// a pass must leave neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_qwen_agent_and_its_relaunched_child_are_gone_after_the_chat_is_archived() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/.bin/qwen");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(bin.ancestors().nth(3).unwrap())
            .status()
            .expect("run npm");
        assert!(status.success(), "npm ci in tests/agents failed");
    }
    let w = World::new(Db::Postgres).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "open").await;
    let home = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .arg("--acp")
        .current_dir(home.path())
        .process_group(0)
        .env("HOME", home.path())
        .env(&w.labels[0], "c1")
        .env(&w.labels[1], "s1")
        .env(&w.labels[2], "qwen")
        .env_remove("QWEN_CODE_NO_RELAUNCH")
        .env_remove("SANDBOX")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qwen");
    let mut agent = common::Agent(child);
    // Up and answering: initialize over stdio JSON-RPC.
    let mut stdin = agent.0.stdin.take().unwrap();
    let stdout = agent.0.stdout.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":1,"clientCapabilities":{{"fs":{{"readTextFile":false,"writeTextFile":false}}}}}}}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("qwen --acp answers initialize");
    assert!(answer.contains("\"id\":1"), "{answer}");
    let node_procs = labelled(&w.labels[0], "c1");
    assert_eq!(
        node_procs.len(),
        2,
        "qwen and its relaunched child: {node_procs:?}"
    );

    // While the chat is live, the pass leaves both alone.
    let report = w.once(Scope::Host, false).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert_eq!(labelled(&w.labels[0], "c1").len(), 2);

    w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c1'")
        .await;
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(
        labelled(&w.labels[0], "c1"),
        Vec::<i32>::new(),
        "both node processes gone: {}",
        report.render()
    );
    drop(stdin);
}
