//! What the trash holds, read through its checked handle: the entries the
//! reclaimer may delete, what it must leave alone, and the records left
//! behind; and the space an entry holds.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;

use super::record::{forget_marker, forget_record, read_record};
use super::{
    kind_of, marker_name, open_existing_trash, parse_entry, root_handle, trash_path,
    CHECKING_SUFFIX, RECORD_SUFFIX, STALE_RECORD,
};
use crate::act::trash::delete::DeleteError;
use crate::root::WorktreeRoot;

/// One entry waiting in the trash, retired by the controller itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashEntry {
    pub path: PathBuf,
    pub worktree_id: String,
    pub retired_at: SystemTime,
    /// The `(st_dev, st_ino)` its record names, which it has.
    pub dev: u64,
    pub ino: u64,
}

/// What the trash holds: the entries the reclaimer may delete, the names
/// it will not touch (not retired by the controller: no record, or a
/// record naming another directory, or a marker still beside it: its
/// retirement was not concluded), and the names of entries gone since
/// [`STALE_RECORD`] or more whose record or marker is still there.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub entries: Vec<TrashEntry>,
    pub foreign: Vec<PathBuf>,
    pub stale_records: Vec<OsString>,
}

/// Lists the trash of `root` through its checked handle; a missing trash
/// is empty, an unsafe one an error.
pub fn list(root: &WorktreeRoot) -> io::Result<Listing> {
    let dir = trash_path(root);
    let mut out = Listing::default();
    let as_io = |e: DeleteError| io::Error::other(e.to_string());
    let root_fd = root_handle(root, &dir).map_err(as_io)?;
    let Some(trash_fd) = open_existing_trash(root, &root_fd).map_err(as_io)? else {
        return Ok(out);
    };
    // `/proc/self/fd/N` is the directory the handle holds, not a path
    // looked up again.
    let names: Vec<OsString> =
        std::fs::read_dir(format!("/proc/self/fd/{}", trash_fd.as_raw_fd()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
    let now = SystemTime::now();
    for name in &names {
        let bytes = name.as_bytes();
        let beside = bytes
            .strip_suffix(RECORD_SUFFIX.as_bytes())
            .or_else(|| bytes.strip_suffix(CHECKING_SUFFIX.as_bytes()));
        if let Some(stem) = beside {
            let stem = OsStr::from_bytes(stem);
            if let Some((_, at)) = parse_entry(stem) {
                let old = now.duration_since(at).is_ok_and(|age| age >= STALE_RECORD);
                if old && !names.iter().any(|n| n == stem) {
                    out.stale_records.push(stem.to_os_string());
                }
                continue;
            }
        }
        let ours = parse_entry(name).and_then(|(id, at)| {
            let (dev, ino) = read_record(&trash_fd, name)?;
            let st = fstatat(&trash_fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
            // Looked at last: a marker gone now was gone once the entry
            // was found as judged, or once what was not is put back.
            let settled = matches!(
                fstatat(
                    &trash_fd,
                    marker_name(name).as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW
                ),
                Err(Errno::ENOENT)
            );
            let ours = (st.st_dev, st.st_ino) == (dev, ino) && kind_of(&st) == "directory";
            (ours && settled).then(|| TrashEntry {
                path: dir.join(name),
                worktree_id: id.to_string_lossy().into_owned(),
                retired_at: at,
                dev,
                ino,
            })
        });
        match ours {
            Some(e) => out.entries.push(e),
            None => out.foreign.push(dir.join(name)),
        }
    }
    out.entries.sort_by_key(|e| e.retired_at);
    out.foreign.sort();
    out.stale_records.sort();
    out.stale_records.dedup();
    Ok(out)
}

/// Removes the records and markers of `listing.stale_records` (see
/// [`STALE_RECORD`]).
pub fn forget_stale_records(root: &WorktreeRoot, listing: &Listing) {
    if listing.stale_records.is_empty() {
        return;
    }
    let Ok(root_fd) = root.open_handle() else {
        return;
    };
    if let Ok(Some(trash_fd)) = open_existing_trash(root, &root_fd) {
        for entry in &listing.stale_records {
            forget_record(&trash_fd, entry);
            forget_marker(&trash_fd, entry);
        }
    }
}

/// Removes the record of an entry the reclaimer has deleted.
pub fn forget_record_of(root: &WorktreeRoot, entry: &Path) {
    let Some(name) = entry.file_name() else {
        return;
    };
    let Ok(root_fd) = root.open_handle() else {
        return;
    };
    if let Ok(Some(trash_fd)) = open_existing_trash(root, &root_fd) {
        // Only once the entry itself is gone: a record outliving its entry
        // is harmless, an entry without one is never reclaimed.
        if matches!(
            fstatat(&trash_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW),
            Err(Errno::ENOENT)
        ) {
            forget_record(&trash_fd, name);
        }
    }
}

/// An estimate of the space an entry holds: the allocated blocks
/// (`st_blocks * 512`) of every file and directory below it, walked
/// without following a symlink or crossing into another file system. A
/// file with several links counts fully each time; what cannot be read
/// counts as zero.
pub fn estimate_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .same_file_system(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}
