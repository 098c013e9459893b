//! Acting inside another user's tree with that user's filesystem
//! credentials (DESIGN rule 11).
//!
//! A root controller that writes, renames or unlinks by itself inside a
//! tree the orchestrator's user owns can be led anywhere by that user: a
//! `.git/logs` replaced by a symlink to `/etc` turns an ordinary write
//! into a root write in `/etc`. Done with the owner's credentials instead,
//! the kernel bounds every such step to what the owner could do anyway, so
//! whatever the owner plants can only lead the controller to the owner's
//! own files.
//!
//! [`with_fs_creds`] runs a closure on a thread of its own whose
//! filesystem uid, gid and supplementary groups are the owner's. Linux
//! keeps these per thread (`setfsuid(2)`, `setfsgid(2)` and the raw
//! `setgroups` system call; glibc's `setgroups` wrapper would change every
//! thread of the process, so it is not used), and a filesystem uid other
//! than 0 clears the thread's filesystem capabilities (`CAP_DAC_OVERRIDE`,
//! `CAP_FOWNER`, `CAP_CHOWN`, …): files it creates belong to the owner,
//! and every permission check is the owner's. The thread ends with the
//! closure, so no other work ever runs with those credentials.
//!
//! # Guarantees
//!
//! 1. **The owner's permissions, nothing more.** Test
//!    `a_switched_thread_is_refused_what_the_owner_is_refused` (root-only
//!    directory, real second user).
//! 2. **What it creates is the owner's.** Test
//!    `what_a_switched_thread_creates_belongs_to_the_owner`.
//! 3. **Switched or not run.** Every switch is read back; a thread whose
//!    credentials did not change runs nothing (an error instead).
//! 4. **No switch when none is needed**: a controller that is not root,
//!    or that owns the tree itself, runs the closure on the calling thread.

use std::io;
use std::path::{Path, PathBuf};

/// A user whose credentials a step inside their tree is taken with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

impl RunAs {
    /// The user `uid` as the system knows it: primary group, supplementary
    /// groups and home; a uid with no passwd entry is its own group and has
    /// no home.
    pub fn of_uid(uid: u32) -> RunAs {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        match user {
            Some(u) => {
                let name = std::ffi::CString::new(u.name.as_bytes()).ok();
                let groups = name
                    .and_then(|n| nix::unistd::getgrouplist(&n, u.gid).ok())
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|| vec![u.gid.as_raw()]);
                RunAs {
                    uid,
                    gid: u.gid.as_raw(),
                    groups,
                    home: Some(u.dir),
                }
            }
            None => RunAs {
                uid,
                gid: uid,
                groups: vec![uid],
                home: None,
            },
        }
    }
}

/// Who a step inside a tree owned by `owner` is taken as, when this
/// process runs as `me`: `Ok(None)` means "as this process" (it is the
/// owner); `Err` that it cannot switch (not root) and must not act there.
pub fn who_for(owner: u32, me: u32) -> Result<Option<RunAs>, NotOwner> {
    if owner == me {
        return Ok(None);
    }
    if me != 0 {
        return Err(NotOwner { owner, me });
    }
    Ok(Some(RunAs::of_uid(owner)))
}

/// Who a step inside `path` (not followed if a symlink) is taken as.
pub fn owner_of(path: &Path) -> io::Result<Option<RunAs>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    who_for(meta.uid(), nix::unistd::geteuid().as_raw()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {e}", path.display()),
        )
    })
}

/// A controller that is neither root nor the owner cannot act as the
/// owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("belongs to uid {owner}; this controller runs as uid {me} and cannot act as its owner (run it as root or as uid {owner})")]
pub struct NotOwner {
    pub owner: u32,
    pub me: u32,
}

/// Runs `f` with `who`'s filesystem credentials (see the module's
/// guarantees); with `None`, as this process on this thread.
pub fn with_fs_creds<T: Send>(who: Option<&RunAs>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let Some(who) = who else { return Ok(f()) };
    std::thread::scope(|s| {
        let t = std::thread::Builder::new()
            .name(format!("as-uid-{}", who.uid))
            .spawn_scoped(s, || -> io::Result<T> {
                switch_this_thread(who)?;
                Ok(f())
            })?;
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Switches the calling thread's filesystem credentials to `who`'s.
fn switch_this_thread(who: &RunAs) -> io::Result<()> {
    use nix::libc;
    let groups: Vec<libc::gid_t> = who.groups.clone();
    // SAFETY: the raw system call changes only this thread's supplementary
    // groups (glibc's wrapper would change every thread's); `groups`
    // outlives the call and its length is passed with it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::size_t,
            groups.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(who.gid));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(who.uid));
    // Neither call reports failure; an invalid id (-1) changes nothing
    // and answers the current one, which is how they are read back.
    let fsgid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(u32::MAX)).as_raw();
    let fsuid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(u32::MAX)).as_raw();
    if fsuid != who.uid || fsgid != who.gid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot take the filesystem credentials of uid {} gid {} (now uid {fsuid} gid {fsgid}): the controller needs CAP_SETUID and CAP_SETGID",
                who.uid, who.gid
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{local_user, OWNER};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn owner() -> RunAs {
        RunAs::of_uid(local_user(OWNER).uid)
    }

    #[test]
    fn a_switched_thread_is_refused_what_the_owner_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("root-only");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let who = owner();
        let r = with_fs_creds(Some(&who), || std::fs::write(private.join("x"), "x")).unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied,
            "the owner may not write into a root-only directory"
        );
        assert!(!private.join("x").exists());
        // The calling thread keeps its own credentials.
        std::fs::write(private.join("y"), "y").unwrap();
    }

    #[test]
    fn what_a_switched_thread_creates_belongs_to_the_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let who = owner();
        std::os::unix::fs::chown(tmp.path(), Some(who.uid), Some(who.gid)).unwrap();
        let file = tmp.path().join("made");
        with_fs_creds(Some(&who), || std::fs::write(&file, "x"))
            .unwrap()
            .unwrap();
        let m = std::fs::metadata(&file).unwrap();
        assert_eq!((m.uid(), m.gid()), (who.uid, who.gid));
    }

    #[test]
    fn no_switch_for_the_owner_itself() {
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(who_for(me, me), Ok(None));
        assert_eq!(
            who_for(4242, 1000),
            Err(NotOwner {
                owner: 4242,
                me: 1000
            })
        );
    }
}
