//! The files beside a trash entry that say whose it is: its record
//! (`<entry>.retired`, the `(device, inode)` of the directory retired,
//! written and made durable before the rename) and its marker
//! (`<entry>.checking`, there while the retirement is not concluded). The
//! reclaimer goes by them alone ([`super::list`]).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{marker_name, record_name};

/// Makes `<entry>.checking` (new, empty, mode `0600`): while it is there
/// the entry is not the reclaimer's ([`list`]).
pub(super) fn make_marker(trash_fd: &OwnedFd, entry: &OsStr) -> Result<(), Errno> {
    openat(
        trash_fd,
        marker_name(entry).as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(drop)
}

/// Removes an entry's marker; one already gone is fine. Not made durable:
/// a marker that comes back after a crash keeps an entry, never loses one.
pub(super) fn forget_marker(trash_fd: &OwnedFd, entry: &OsStr) {
    match unlinkat(
        trash_fd,
        marker_name(entry).as_os_str(),
        UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => tracing::warn!(entry = ?entry, error = %e, "cannot remove a trash marker"),
    }
}

/// Writes `<entry>.retired` (`"<dev> <ino>\n"`, new, mode `0600`), and
/// makes it and its name durable before the rename it announces.
pub(super) fn write_record(
    trash_fd: &OwnedFd,
    entry: &OsStr,
    dev: u64,
    ino: u64,
) -> Result<(), Errno> {
    let fd = openat(
        trash_fd,
        record_name(entry).as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(format!("{dev} {ino}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        forget_record(trash_fd, entry);
        return Err(Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)));
    }
    nix::unistd::fsync(trash_fd)
}

/// Removes an entry's record; one already gone is fine.
pub(crate) fn forget_record(trash_fd: &OwnedFd, entry: &OsStr) {
    match unlinkat(
        trash_fd,
        record_name(entry).as_os_str(),
        UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => tracing::warn!(entry = ?entry, error = %e, "cannot remove a trash record"),
    }
}

/// The `(dev, ino)` an entry's record names; `None` when there is no
/// readable, well-formed record.
pub(super) fn read_record(trash_fd: &OwnedFd, entry: &OsStr) -> Option<(u64, u64)> {
    let fd = openat(
        trash_fd,
        record_name(entry).as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let st = fstat(&fd).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    let mut it = text.trim_end_matches('\n').split(' ');
    let dev = it.next()?.parse().ok()?;
    let ino = it.next()?.parse().ok()?;
    it.next().is_none().then_some((dev, ino))
}
