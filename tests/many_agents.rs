//! Many agents at once, with real processes that ignore SIGTERM: a pass's
//! terminations share one grace (they do not queue behind
//! `loop.max_parallel_actions`), and none starts after `loop.pass_timeout`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use boo_reconciler::act::Outcome;
use boo_reconciler::model::Scope;
use boo_reconciler::report::PassResult;
use common::{alive, labelled, Agent, Db, World};

both_databases!(
    a_hundred_term_ignoring_agents_are_stopped_within_one_grace,
    no_termination_starts_after_the_pass_timeout,
);

/// One of these tests at a time: each runs up to 300 processes and 100
/// terminations, and two at once on a small machine measure the machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An agent and two children, all three ignoring SIGTERM (an ignored
/// signal stays ignored across fork and exec).
const THREE_IGNORING_TERM: &str = "trap '' TERM; sleep 1000 & sleep 1000 & wait";

/// The test's agents. A test that fails leaves none of their processes
/// behind: each agent leads its own group, and the group is killed while
/// its leader is still this test's unreaped child, so that its id cannot
/// name anyone else's group.
struct Agents(Vec<Agent>);

impl Drop for Agents {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(a.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `n` agents of chats `c<i>` (sessions `s<i>`), archived, each running
/// `script`; returned once each has `per_agent` labelled processes.
async fn archived_agents(w: &World, n: usize, script: &str, per_agent: usize) -> Agents {
    let mut agents = Vec::new();
    for i in 0..n {
        let (s, c) = (format!("s{i}"), format!("c{i}"));
        w.session(&s, "archived").await;
        w.chat(&c, &s, "archived").await;
        agents.push(w.agent(&c, &s, script, w.tmp.path()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..n {
        while labelled(&w.labels[0], &format!("c{i}")).len() < per_agent {
            assert!(
                Instant::now() < deadline,
                "agent c{i} never started its children"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Agents(agents)
}

/// Every live process of chats `c0..c<n>`, as (pid, start time).
fn processes_of(w: &World, n: usize) -> Vec<(i32, u64)> {
    (0..n)
        .flat_map(|i| labelled(&w.labels[0], &format!("c{i}")))
        .filter_map(|pid| Some((pid, common::start_time_of(pid)?)))
        .collect()
}

async fn a_hundred_term_ignoring_agents_are_stopped_within_one_grace(db: Db) {
    const AGENTS: usize = 100;
    let _turn = TURN.lock().await;
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_secs(2);
    let _agents = archived_agents(&w, AGENTS, THREE_IGNORING_TERM, 3).await;
    let before = processes_of(&w, AGENTS);
    assert_eq!(before.len(), AGENTS * 3, "three processes per agent");
    let config = w.config();
    // The general limit stays small, as by default: terminations must not
    // queue behind it.
    assert_eq!(config.r#loop.max_parallel_actions, 4);

    let t0 = Instant::now();
    let report = common::act_pass(
        &w.controller_with(config, w.store.clone()),
        Scope::Host,
        false,
    )
    .await;
    let took = t0.elapsed();

    let terminations: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.action.name() == "terminate_process")
        .collect();
    assert_eq!(terminations.len(), AGENTS, "{}", report.render());
    for r in &terminations {
        assert!(
            matches!(r.outcome, Outcome::Done { .. }),
            "{}: {:?}",
            r.target,
            r.outcome
        );
        let detail = serde_json::to_value(&r.detail).unwrap();
        assert_eq!(
            detail["killed"].as_array().map(Vec::len),
            Some(3),
            "the agent and both children outlived SIGTERM and were killed: {detail}"
        );
    }
    for (pid, start) in &before {
        assert!(!alive(*pid, *start), "pid {pid} survived the pass");
    }
    assert_eq!(
        report.result(),
        PassResult::Converged,
        "{}",
        report.render()
    );
    // One grace at a time per slot of loop.max_parallel_actions would take
    // 100 / 4 × 2 s = 50 s; one grace for all takes about 2 s. The bound
    // proves concurrency on a loaded debug build, not speed.
    let bound = w.term_grace * 3 + Duration::from_secs(20);
    assert!(
        took < bound,
        "100 TERM-ignoring agents took {took:?} (bound {bound:?}): their graces did not overlap"
    );
    println!("{AGENTS} agents × 3 TERM-ignoring processes, 2s grace: {took:?}");
}

async fn no_termination_starts_after_the_pass_timeout(db: Db) {
    const AGENTS: usize = 40;
    const SLOTS: usize = 4;
    let _turn = TURN.lock().await;
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_secs(6);
    let agents = archived_agents(&w, AGENTS, "trap '' TERM; while :; do sleep 1; done", 1).await;
    let ids: Vec<(i32, u64)> = agents.0.iter().map(|a| (a.pid(), a.start_time())).collect();
    let mut config = w.config();
    config.r#loop.pass_timeout = Duration::from_secs(3);
    // Few slots, so that most terminations wait for one when time runs out.
    config.processes.max_parallel_terminations = SLOTS;

    let t0 = Instant::now();
    let report = common::act_pass(
        &w.controller_with(config, w.store.clone()),
        Scope::Host,
        false,
    )
    .await;
    let took = t0.elapsed();

    let (started, left): (Vec<_>, Vec<_>) = report
        .results
        .iter()
        .partition(|r| !matches!(r.outcome, Outcome::Deferred { .. }));
    assert_eq!(started.len(), SLOTS, "{}", report.render());
    assert_eq!(left.len(), AGENTS - SLOTS, "{}", report.render());
    for r in &started {
        assert!(matches!(r.outcome, Outcome::Done { .. }), "{:?}", r.outcome);
    }
    for r in &left {
        let why = r.outcome.text();
        assert!(
            why.contains("loop.pass_timeout (3s)") && why.contains("left for the next pass"),
            "{why}"
        );
        assert_eq!(r.duration_ms, 0, "{} never ran", r.target);
    }
    // Write-ahead: a signal is announced by an intent first. Only the
    // terminations that had a slot before the deadline announced one.
    let audit = w.audit().await;
    let intents: BTreeSet<String> = audit
        .iter()
        .filter(|a| a.action == "terminate_process" && a.outcome == "intent")
        .map(|a| a.target.clone())
        .collect();
    let started_targets: BTreeSet<String> = started.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(
        intents, started_targets,
        "no termination started after the deadline"
    );
    let stopped = ids
        .iter()
        .filter(|(pid, start)| !alive(*pid, *start))
        .count();
    assert_eq!(stopped, SLOTS, "only the started ones were stopped");

    // The pass ended when the started ones did (grace, then SIGKILL), not
    // when ten rounds of them would have.
    assert!(
        took >= w.term_grace,
        "{took:?}: the started ones were waited for"
    );
    let bound = w.term_grace + Duration::from_secs(10);
    assert!(took < bound, "{took:?} (bound {bound:?})");

    // The report says what was left, and counts it among the errors.
    assert_eq!(report.left_for_next_pass().len(), AGENTS - SLOTS);
    assert_eq!(report.result(), PassResult::Error);
    assert_eq!(report.error_count(), AGENTS - SLOTS);
    let text = report.render();
    assert!(
        text.contains(&format!(
            "{} action(s) not started: loop.pass_timeout ran out; left for the next pass",
            AGENTS - SLOTS
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("result: error, {} error(s)", AGENTS - SLOTS)),
        "{text}"
    );

    // Left for the next pass, which stops them.
    w.term_grace = Duration::from_millis(200);
    let next = w.once(Scope::Host, false).await;
    assert_eq!(next.result(), PassResult::Converged, "{}", next.render());
    for (pid, start) in &ids {
        assert!(!alive(*pid, *start), "pid {pid} left running");
    }
}
