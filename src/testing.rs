//! Real local users for the tests that play a second user against a root
//! controller: the worktree's owner and a hostile neighbour. Only tests
//! call this; it is in the library so that unit and integration tests
//! share one way of making them.

use std::os::fd::AsRawFd;
use std::process::Command;

/// The orchestrator's user of the tests: owns repositories and worktrees.
pub const OWNER: &str = "bootest";
/// A second, hostile local user.
pub const MALLORY: &str = "mallory";

/// A local user's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalUser {
    pub uid: u32,
    pub gid: u32,
}

/// The local user `name`, created (a system user without a home or a
/// login shell) when missing. Needs root; test binaries run in parallel,
/// so the creation is serialised by a lock file.
pub fn local_user(name: &str) -> LocalUser {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests with a second local user need root (CI runs as root)"
    );
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/boo-reconciler-test-users.lock")
        .expect("open the test users' lock file");
    // SAFETY: flock on a descriptor this function owns; released on close.
    let rc = unsafe { nix::libc::flock(lock.as_raw_fd(), nix::libc::LOCK_EX) };
    assert_eq!(rc, 0, "lock the test users' lock file");
    if let Some(u) = lookup(name) {
        return u;
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--user-group", "--shell"])
        .args(["/usr/sbin/nologin", name])
        .output()
        .expect("run useradd");
    assert!(
        out.status.success(),
        "useradd {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lookup(name).unwrap_or_else(|| panic!("user {name} missing right after useradd"))
}

fn lookup(name: &str) -> Option<LocalUser> {
    let u = nix::unistd::User::from_name(name).ok()??;
    Some(LocalUser {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}
