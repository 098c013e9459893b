//! The fork lineage (`processes.lineage`) end to end: agents started
//! without `launch`, that hide after the controller started listening —
//! a double-forked grandchild with an empty environment in a session of
//! its own, and the agent itself re-exec'd without its labels and no row
//! recording it — are stopped by the controller's own pass, and nothing
//! else is. Both databases; needs root (CAP_NET_ADMIN).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use boo_reconciler::model::Scope;
use common::{Db, World};

both_databases!(
    hidden_forks_of_a_labelled_agent_are_stopped_with_its_chat,
    a_fork_loop_through_the_grace_is_stopped_by_the_same_pass,
);

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    common::start_time_of(pid).is_some_and(|s| common::alive(pid, s))
}

fn labelled_env(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| !e.is_empty())
}

async fn hidden_forks_of_a_labelled_agent_are_stopped_with_its_chat(db: Db) {
    let mut w = World::new(db).await;
    w.lineage = true;
    w.term_grace = Duration::from_millis(300);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "open").await;
    let dir = w.tmp.path().to_path_buf();
    // The controller listens before the agent hides.
    let controller = w.controller();
    let script = format!(
        "trap '' TERM; while [ ! -e {d}/go ]; do sleep 0.02; done; \
         (setsid env -i sh -c 'echo $$ > {d}/grandchild; trap \"\" TERM; while :; do sleep 1; done' &); \
         exec env -i sh -c 'echo $$ > {d}/agent; trap \"\" TERM; while :; do sleep 1; done'",
        d = dir.display()
    );
    let agent = w.agent("c1", "s1", &script, &dir);
    // A bystander with an empty environment, forked by no agent.
    let mut bystander = std::process::Command::new("env")
        .args(["-i", "sleep", "1000"])
        .spawn()
        .unwrap();
    // A first pass sees the labelled agent (chat live: nothing to do).
    let first = common::act_pass(&controller, Scope::Host, false).await;
    assert!(first.results.is_empty(), "{}", first.render());
    std::fs::write(dir.join("go"), "").unwrap();
    let grandchild = read_pid(&dir.join("grandchild"));
    assert_eq!(read_pid(&dir.join("agent")), agent.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while labelled_env(agent.pid()) && {
        let env = std::fs::read(format!("/proc/{}/environ", agent.pid())).unwrap_or_default();
        String::from_utf8_lossy(&env).contains(&w.labels[0])
    } {
        assert!(
            Instant::now() < deadline,
            "the agent never dropped its labels"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        common::labelled(&w.labels[0], "c1").is_empty(),
        "nothing labelled is left"
    );

    w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c1'")
        .await;
    let report = common::act_pass(&controller, Scope::Host, false).await;

    let stopped: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.action.name() == "terminate_process")
        .collect();
    assert!(!stopped.is_empty(), "{}", report.render());
    for r in &stopped {
        assert_eq!(r.outcome.name(), "done", "{}", report.render());
        assert!(
            r.action.reason.contains("now without its labels"),
            "{}",
            r.action.reason
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(agent.pid()) || alive(grandchild) {
        assert!(
            Instant::now() < deadline,
            "agent alive: {}, grandchild alive: {}\n{}",
            alive(agent.pid()),
            alive(grandchild),
            report.render()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        alive(bystander.id() as i32),
        "an unrelated process was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    drop(agent);
}

/// The pids written one per line to `path` so far.
fn pids_in(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills, on drop, the children listed in a file that are still the
/// `sleep 1000` they were: a failing test leaves none behind.
struct Reap(std::path::PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in pids_in(&self.0) {
            if std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == b"sleep\x001000\x00")
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A labelled agent that ignores TERM and keeps forking detached children
/// with an empty environment, each in a session of its own and ignoring
/// TERM too, through its whole grace: the children forked after the scan
/// are in no action of the plan. The same pass stops them (the lineage
/// ties them to the chat), and says done only when none is left.
async fn a_fork_loop_through_the_grace_is_stopped_by_the_same_pass(db: Db) {
    let mut w = World::new(db).await;
    w.lineage = true;
    w.term_grace = Duration::from_millis(500);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    let dir = w.tmp.path().to_path_buf();
    let controller = w.controller();
    let kids = dir.join("kids");
    let _reap = Reap(kids.clone());
    let script = format!(
        "trap '' TERM; while :; do \
           (setsid env -i sh -c 'echo $$ >> {k}; exec sleep 1000' &); sleep 0.02; \
         done",
        k = kids.display()
    );
    let agent = w.agent("c1", "s1", &script, &dir);
    let mut bystander = std::process::Command::new("env")
        .args(["-i", "sleep", "1000"])
        .spawn()
        .unwrap();
    // Some children exist before the pass; more come through the grace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_in(&kids).len() < 5 {
        assert!(Instant::now() < deadline, "the loop never forked");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = pids_in(&kids).len();

    let report = common::act_pass(&controller, Scope::Host, false).await;

    let all = pids_in(&kids);
    assert!(
        all.len() > before,
        "the loop forked through the grace ({before} before the pass, {} after)",
        all.len()
    );
    assert!(!alive(agent.pid()), "{}", report.render());
    let left: Vec<i32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "children still alive after the pass: {left:?}\n{}",
        report.render()
    );
    assert!(report.errors.is_empty(), "{}", report.render());
    for r in report
        .results
        .iter()
        .filter(|r| r.action.name() == "terminate_process")
    {
        assert_eq!(r.outcome.name(), "done", "{}", report.render());
    }
    // Children forked after the scan were stopped by name: they were in
    // no action of the first plan.
    let stopped: Vec<String> = report
        .results
        .iter()
        .map(|r| r.target.to_string())
        .collect();
    let late: Vec<&i32> = all[before..]
        .iter()
        .filter(|p| {
            stopped
                .iter()
                .any(|t| t.starts_with(&format!("process:{p}@")))
        })
        .collect();
    assert!(
        !late.is_empty(),
        "no child forked during the grace was an action of the pass\n{}",
        report.render()
    );
    assert!(
        alive(bystander.id() as i32),
        "an unrelated process was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    drop(agent);
}
