//! What the scan counts as unreadable: a process it may not read (another
//! user's, seen with that user's neighbour's file-system credentials, as a
//! controller running as that neighbour would see it), by the process's
//! real uid; never a process gone mid-scan, nor a kernel thread.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::creds::{with_fs_creds, RunAs};
use crate::testing::{local_user, MALLORY, OWNER};

/// A spawned process killed and reaped when the test ends, pass or fail.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How `seen` reads in an assertion message.
fn what(seen: &Seen) -> String {
    match seen {
        Seen::Agent(a) => format!("agent of chat {}", a.chat_id),
        Seen::NotAnAgent => "not an agent".into(),
        Seen::Gone => "gone".into(),
        Seen::Unreadable { uid } => format!("unreadable, uid {uid}"),
    }
}

/// [`scan_one`] of `pid` on a thread with `uid`'s file-system credentials.
fn scan_as(uid: u32, pid: i32, labels: &LabelNames) -> Seen {
    with_fs_creds(Some(&RunAs::of_uid(uid)), || scan_one(pid, labels, None))
        .expect("switch the thread's credentials")
}

#[test]
fn another_users_process_is_counted_unreadable_by_its_uid_and_a_gone_one_is_not() {
    let owner = local_user(OWNER);
    let mallory = local_user(MALLORY);
    let n = fastrand::u64(..);
    let labels = LabelNames {
        chat: format!("BOO_UNREADABLE_CHAT_{n}"),
        agent: format!("BOO_UNREADABLE_AGENT_{n}"),
        ..LabelNames::default()
    };
    let mut agent = Spawned(
        Command::new("sleep")
            .arg("1000")
            .uid(owner.uid)
            .gid(owner.gid)
            .process_group(0)
            .env(&labels.chat, "c1")
            .env(&labels.agent, "a1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the owner's agent"),
    );
    let pid = agent.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{pid}/environ")).map_or(true, |e| e.is_empty()) {
        assert!(Instant::now() < deadline, "the agent never exec'd");
        std::thread::sleep(Duration::from_millis(2));
    }

    // Root, and the agent's own user, read it: an agent.
    for uid in [None, Some(owner.uid)] {
        let seen = match uid {
            None => scan_one(pid, &labels, None),
            Some(uid) => scan_as(uid, pid, &labels),
        };
        assert!(
            matches!(&seen, Seen::Agent(a) if a.chat_id == "c1"),
            "read as {uid:?}: {}",
            what(&seen)
        );
    }
    // Another user may not: unknown, counted under the agent's uid.
    let seen = scan_as(mallory.uid, pid, &labels);
    assert!(
        matches!(seen, Seen::Unreadable { uid } if uid == owner.uid),
        "read as mallory: {}",
        what(&seen)
    );

    // A kernel thread is never an agent; only root may open its
    // environment, and another user's failure to is not counted.
    let kthread = list_pids().unwrap().into_iter().find(|p| {
        Process::new(*p)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.flags & PF_KTHREAD != 0)
    });
    if let Some(k) = kthread {
        let seen = scan_as(mallory.uid, k, &labels);
        assert!(
            matches!(seen, Seen::NotAnAgent),
            "kernel thread {k}: {}",
            what(&seen)
        );
    }

    // Gone: the process has exited and been reaped.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    for seen in [
        scan_one(pid, &labels, None),
        scan_as(mallory.uid, pid, &labels),
    ] {
        assert!(matches!(seen, Seen::Gone), "after exit: {}", what(&seen));
    }
}
