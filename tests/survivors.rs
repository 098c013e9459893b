//! A process the kill cannot stop is named, never reported done: a real
//! agent held in uninterruptible sleep (frozen by the cgroup v1 freezer,
//! where SIGKILL waits until it is thawed), the controller's own pass, both
//! databases. Needs root and the v1 freezer hierarchy: without them these
//! fail, never skip.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use boo_reconciler::cgroup;
use boo_reconciler::metrics::Metrics;
use boo_reconciler::model::Scope;
use common::{Db, World};

const FREEZER: &str = "/sys/fs/cgroup/freezer";

/// A v1 freezer cgroup of this test's own: thawed and removed on drop, so
/// that what it held dies of the SIGKILL it was sent.
struct Freezer(PathBuf);

impl Freezer {
    fn new() -> Freezer {
        let p = PathBuf::from(FREEZER).join(format!("boo-it-{}", fastrand::u64(..)));
        std::fs::create_dir(&p).unwrap_or_else(|e| {
            panic!(
                "cannot make {}: {e}; these tests need root and the cgroup v1 freezer",
                p.display()
            )
        });
        Freezer(p)
    }

    fn freeze(&self, pid: i32) {
        std::fs::write(self.0.join("tasks"), pid.to_string()).unwrap();
        std::fs::write(self.0.join("freezer.state"), "FROZEN").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(self.0.join("freezer.state"))
            .unwrap()
            .trim()
            != "FROZEN"
        {
            assert!(std::time::Instant::now() < deadline, "never frozen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

both_databases!(
    a_labelled_agent_that_survives_sigkill_is_named_everywhere,
    a_cgroup_member_that_survives_the_kill_is_named_and_its_cgroup_kept,
);

async fn a_labelled_agent_that_survives_sigkill_is_named_everywhere(db: Db) {
    let mut w = World::new(db).await;
    w.term_grace = Duration::from_millis(200);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    let agent = w.agent("c1", "s1", "exec sleep 1000", w.tmp.path());
    let pid = agent.pid();
    let freezer = Freezer::new();
    freezer.freeze(pid);

    let report = w.once(Scope::Host, false).await;

    let t = report
        .results
        .iter()
        .find(|r| r.action.name() == "terminate_process")
        .unwrap_or_else(|| panic!("no termination: {}", report.render()));
    assert_eq!(t.outcome.name(), "failed", "{}", report.render());
    assert!(
        t.outcome.text().contains(&format!("pid {pid}")),
        "{}",
        t.outcome.text()
    );
    assert_eq!(report.survivors().len(), 1, "{}", report.render());
    assert_eq!(report.survivors()[0].1, pid);
    assert_eq!(report.survivors()[0].2, 'D');
    let text = report.render();
    assert!(text.contains("still there after the kill"), "{text}");
    assert!(text.contains("result: error"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.to_string().contains("\"survivors\""), "{json}");
    let m = Metrics::new();
    m.observe_pass(&report);
    assert!(m
        .render()
        .contains("boo_reconciler_agent_survivors_total 1"));
    let audit = w.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a.action == "terminate_process" && a.outcome == "failed"),
        "{audit:?}"
    );
    drop(freezer);
    // Thawed, it dies of the SIGKILL it had.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state_of(pid).is_some_and(|s| s != 'Z') {
        assert!(
            std::time::Instant::now() < deadline,
            "never died once thawed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(agent);
}

async fn a_cgroup_member_that_survives_the_kill_is_named_and_its_cgroup_kept(db: Db) {
    let mut w = World::new(db).await;
    let mount = cgroup::v2_mount().expect("the cgroup v2 hierarchy (run as root)");
    let parent = mount.join(format!("boo-it-survivor-{}", fastrand::u64(..)));
    std::fs::create_dir(&parent).unwrap();
    w.cgroup_parent = parent.display().to_string();
    w.term_grace = Duration::from_millis(200);
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    let name = cgroup::Record {
        chat: "c1".into(),
        session: Some("s1".into()),
        agent: "qwen".into(),
        instance: None,
        pid: 4242,
    }
    .name()
    .unwrap();
    let cg = parent.join(name);
    std::fs::create_dir(&cg).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read _go; exec sleep 1000"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    cgroup::enter(&cg, pid).unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let freezer = Freezer::new();
    freezer.freeze(pid);

    let report = w.once(Scope::Host, false).await;

    let stop = report
        .results
        .iter()
        .find(|r| r.action.name() == "stop_cgroup")
        .unwrap_or_else(|| panic!("no stop_cgroup: {}", report.render()));
    assert_eq!(stop.outcome.name(), "failed", "{}", report.render());
    assert_eq!(
        report
            .survivors()
            .iter()
            .map(|(_, p, s)| (*p, *s))
            .collect::<Vec<_>>(),
        vec![(pid, 'D')],
        "{}",
        report.render()
    );
    assert!(
        cg.exists(),
        "a cgroup with a process in it is never removed"
    );
    drop(freezer);
    let _ = child.wait();
    let _ = cgroup::remove(&parent);
}
