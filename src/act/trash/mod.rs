//! The controller's trash: where a worktree goes, with one rename, when it
//! is removed; the [`crate::act::trash::reclaim`] reclaimer frees the space later.
//!
//! # Layout
//!
//! `<root>/.boo-trash/` ([`TRASH_DIR`]), created by the controller, mode
//! `0700`. Each entry is one retired worktree directory, named
//! `<worktree id>.<unix nanos>` ([`entry_name`]): the id it had under the
//! root, a dot, and the time it was retired in nanoseconds since the epoch
//! (decimal digits only). Beside each entry, its **record**
//! `<entry>.retired` ([`RECORD_SUFFIX`]) holds the `(st_dev, st_ino)` of
//! the directory the controller retired under that name. From before the
//! rename until the retired tree is found as it was judged, a **marker**
//! `<entry>.checking` ([`CHECKING_SUFFIX`]) is there too: while it is, the
//! entry is not the reclaimer's ([`list`] counts it as foreign).
//!
//! # Why a record file, not the database
//!
//! The reclaimer deletes only what the controller retired itself, so it
//! needs to know, for each name in the trash, which directory that was. The
//! write-ahead intent of the removal names the entry and its
//! `(device, inode)` too, for the audit; but the reclaimer's authority is
//! the record in the trash: the reclaimer runs beside the passes with no
//! store of its own (it must free space while the shared database is
//! unreachable, and at start-up before it is), and a fact about this host's
//! disk is best kept on that disk. The record is written inside the `0700`
//! trash, which only the controller's user can write to, before the rename,
//! and made durable (`fsync` of the file and of the trash) before the
//! directory moves: a crash at any point leaves either a record without an
//! entry (removed once old, [`STALE_RECORD`]) or both. The marker is made
//! before the record and is made durable with it; it goes (not durably:
//! one that comes back keeps an entry, never loses one) once the retired
//! tree is found as judged.
//!
//! Why a marker, not a lock: the reclaimer of another instance on the
//! host may look at the trash while a retirement is being checked, and a
//! crash in the middle of the check must not hand the entry to it either:
//! what was written meanwhile was never judged.
//!
//! # The trash is checked, not trusted (DESIGN rule 11)
//!
//! Before every use the trash is opened without following a link
//! (`O_NOFOLLOW | O_DIRECTORY`, relative to the root's checked handle) and
//! judged on that handle: a directory owned by the controller's effective
//! user, mode `0700`. A symlink, a file, another user's directory or one
//! others may enter is an error naming it, its owner and mode and what to
//! do ([`DeleteError::UnsafeTrash`]): never followed, never used (tests
//! `a_planted_trash_is_never_used`, and `tests/trash_safety.rs` with a
//! real second user).
//!
//! # Guarantees of [`retire`]
//! 1. **The directory judged is the directory retired.** [`pin`] opens the
//!    worktree directory without following a link, relative to the root's
//!    handle, *before* the preflight, and keeps the descriptor (so its
//!    inode cannot be freed and reused). [`retire`] moves the entry only
//!    while the name still holds that very directory, and compares what
//!    it moved with it right after the rename; anything else (swapped in
//!    between, or moved away) is put back with `RENAME_NOREPLACE`, under
//!    its own name or, when that is taken again, `<name>.returned.<nanos>`,
//!    and answers [`Retired::Changed`]. A directory renamed away during
//!    the preflight and back before the check is caught by its `st_ctime`,
//!    which every rename sets. The worktree is then kept
//!    (`changed_during_removal`) and judged again by the next pass (tests
//!    `a_directory_swapped_in_before_the_rename_is_put_back`,
//!    `a_directory_moved_away_before_the_rename_is_not_retired`, and
//!    `tests/trash_safety.rs`: a second user renaming in a loop, and
//!    `a_force_retires_only_the_directory_it_archived`).
//! 2. **Exactly the worktree, nothing else.** The entry must be a direct
//!    entry of the root ([`WorktreeRoot::check`]) and is moved by name with
//!    one `renameat2(RENAME_NOREPLACE)` from the root's checked handle into
//!    the trash's. No symlink is followed, no existing trash entry is
//!    replaced, nothing below the entry is touched (test
//!    `retire_moves_exactly_the_worktree_and_nothing_else`).
//! 3. **Atomic.** The directory is either still at its place or wholly in
//!    the trash; a crash at any instant leaves one of the two (tests
//!    `a_crash_right_after_the_rename_converges` and
//!    `a_crash_between_the_record_and_the_rename_converges` in
//!    `tests/crash.rs`).
//! 4. **Falls back, never guesses.** `EXDEV` (the trash on another file
//!    system) and `EBUSY` (the entry is a mount point, or in use as one)
//!    answer [`Retired::CannotRename`] with the reason: the caller deletes
//!    in place, the pinned directory only, and says why (test
//!    `retire_reports_cannot_rename_when_the_trash_is_another_file_system`).
//! 5. **What was judged is what is reclaimed.** [`Pinned::stamp_tree`]
//!    stamps the tree below the pinned directory ([`crate::act::trash::stamp`])
//!    before the preflight; right after the rename, through the pinned
//!    handle, the retired entry is stamped again and compared. Any entry
//!    made, removed, renamed, written or changed in between (a process
//!    that is not an agent writing into the worktree while it is judged)
//!    puts the directory back at its name (or `<name>.returned.<nanos>`)
//!    with what was written, and answers [`Retired::Changed`] naming the
//!    entries. Until the comparison is done the marker keeps the
//!    reclaimer off; an entry that cannot be put back stays in the trash
//!    without its record, with its marker, and is never deleted. A
//!    directory whose tree was not stamped is never retired (tests
//!    `a_write_in_the_rename_window_is_put_back`,
//!    `a_write_into_the_retired_entry_before_the_check_is_put_back`,
//!    `a_tree_as_judged_is_retired_and_offered_to_the_reclaimer`,
//!    `what_cannot_be_put_back_stays_in_the_trash_and_is_never_reclaimed`,
//!    `retire_refuses_a_directory_whose_tree_was_not_stamped`). Limits: a
//!    write through a descriptor opened before the rename can still land
//!    after the comparison; a crash between the rename and the end of the
//!    comparison leaves the entry with its marker, never reclaimed (it is
//!    listed as foreign, for an operator to look at: test
//!    `a_crash_before_the_check_leaves_the_entry_to_an_operator` in
//!    `tests/writer.rs`).
//! 6. **The trash is never a worktree.** [`WorktreeRoot::check`] refuses
//!    `<root>/.boo-trash` as a worktree path and the root observation skips
//!    it (tests `the_trash_is_never_a_worktree_path` and
//!    `the_trash_is_never_an_orphan`).

pub mod delete;
mod listing;
pub mod reclaim;
mod record;
pub mod stamp;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::Uid;

pub use self::listing::{
    estimate_bytes, forget_record_of, forget_stale_records, list, Listing, TrashEntry,
};
pub(crate) use self::record::forget_record;
use self::record::{forget_marker, make_marker, write_record};
use self::stamp::Stamp;
use crate::act::trash::delete::{dir_flags, DeleteError};
use crate::model::PathCheck;
use crate::root::{user_label, WorktreeRoot};

pub use crate::root::TRASH_DIR;

/// The suffix of an entry's record: `<entry>.retired`.
pub const RECORD_SUFFIX: &str = ".retired";

/// The suffix of an entry's marker: `<entry>.checking`, there from
/// before the rename until the retired entry is found as judged.
pub const CHECKING_SUFFIX: &str = ".checking";

/// A record older than this whose entry is gone is removed: its retire
/// never renamed (a crash between the two) or its entry was reclaimed.
/// A retire takes microseconds between the record and the rename; an hour
/// is far beyond any clock step.
pub const STALE_RECORD: Duration = Duration::from_secs(3600);

/// What became of a worktree directory handed to [`retire`].
#[derive(Debug, PartialEq, Eq)]
pub enum Retired {
    /// Moved to this trash entry.
    Moved { entry: PathBuf },
    /// Nothing was there (already removed).
    Gone,
    /// The rename is impossible here; the directory is untouched.
    CannotRename { why: String },
    /// The name no longer held the directory judged, what the rename
    /// moved was not it, or its tree changed after it was stamped;
    /// nothing was retired, and what moved was put back (`why` says
    /// what changed and where it went).
    Changed { why: String },
}

/// `<worktree id>.<unix nanos>`.
pub fn entry_name(id: &OsStr, at: SystemTime) -> OsString {
    let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut name = id.to_os_string();
    name.push(format!(".{nanos}"));
    name
}

/// The worktree id and retirement time of a trash entry's name; `None`
/// for a name the controller did not make (never deleted).
pub fn parse_entry(name: &OsStr) -> Option<(OsString, SystemTime)> {
    let bytes = name.as_bytes();
    let dot = bytes.iter().rposition(|b| *b == b'.')?;
    let (id, nanos) = (&bytes[..dot], &bytes[dot + 1..]);
    if id.is_empty() || nanos.is_empty() || !nanos.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let nanos: u128 = std::str::from_utf8(nanos).ok()?.parse().ok()?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let at = UNIX_EPOCH + Duration::new(secs, (nanos % 1_000_000_000) as u32);
    Some((OsStr::from_bytes(id).to_os_string(), at))
}

/// The record's name of an entry.
pub fn record_name(entry: &OsStr) -> OsString {
    let mut r = entry.to_os_string();
    r.push(RECORD_SUFFIX);
    r
}

/// The marker's name of an entry.
pub fn marker_name(entry: &OsStr) -> OsString {
    let mut r = entry.to_os_string();
    r.push(CHECKING_SUFFIX);
    r
}

/// The trash directory of `root`.
pub fn trash_path(root: &WorktreeRoot) -> PathBuf {
    root.path().join(TRASH_DIR)
}

/// A worktree directory held open from before its preflight to its
/// retirement: what was judged, by `(st_dev, st_ino)`. The descriptor is
/// kept so that the inode stays allocated (a directory deleted and another
/// made in its place cannot get its number).
#[derive(Debug)]
pub struct Pinned {
    fd: OwnedFd,
    name: OsString,
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// `st_ctime` when pinned. A rename of the directory sets it (as do
    /// entries made or removed right inside it), so a directory moved away
    /// while it was judged and brought back before the check is seen too:
    /// the preflight takes far longer than a timestamp's tick.
    ctime: (i64, i64),
    /// Its tree when judged ([`Pinned::stamp_tree`]): what [`retire`]
    /// compares the retired entry with.
    stamp: Option<Stamp>,
}

impl Pinned {
    /// `st_dev` of the directory judged.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `st_ino` of the directory judged.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The directory's path, spelled with the canonical root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of its trash entry if retired at `at`.
    pub fn entry_name(&self, at: SystemTime) -> OsString {
        entry_name(&self.name, at)
    }

    /// Stamps the tree below the directory ([`stamp::take_settled`]),
    /// through the pinned handle and with its owner's filesystem
    /// credentials; [`retire`] compares the retired entry with it. Call
    /// right after [`pin`], before the preflight. `Some` names the entries
    /// being written while it was stamped: the tree is in use, and a
    /// later change of them might not show.
    pub fn stamp_tree(&mut self) -> Result<Option<String>, DeleteError> {
        let (stamp, fresh) = self.as_owner(stamp::take_settled)?;
        self.stamp = Some(stamp);
        Ok((!fresh.is_empty())
            .then(|| stamp::describe("were being written while it was judged", fresh)))
    }

    /// `None` while the tree below the directory is as stamped; else what
    /// changed. Wherever the directory is now: it is read through the
    /// pinned handle.
    pub fn tree_changed(&self) -> Result<Option<String>, DeleteError> {
        let Some(before) = &self.stamp else {
            return Err(DeleteError::Changed {
                path: self.path.clone(),
                why: "its tree was not stamped when it was judged".into(),
            });
        };
        let now = self.as_owner(stamp::take)?;
        let changes = stamp::changes(before, &now);
        Ok((!changes.is_empty()).then(|| stamp::describe("changed after it was judged", changes)))
    }

    /// `f` on the pinned handle, on a thread with the filesystem
    /// credentials of the directory's owner (DESIGN rule 11): what the
    /// owner planted below it can lead nowhere the owner could not go.
    fn as_owner<T: Send>(
        &self,
        f: impl FnOnce(&OwnedFd) -> io::Result<T> + Send,
    ) -> Result<T, DeleteError> {
        let at = |e: io::Error| DeleteError::Io {
            path: self.path.clone(),
            source: e,
        };
        let owner = fstat(&self.fd).map_err(|e| io_at(&self.path, e))?.st_uid;
        let who = crate::creds::who_for(owner, Uid::effective().as_raw())
            .map_err(|e| at(io::Error::new(io::ErrorKind::PermissionDenied, e)))?;
        crate::creds::with_fs_creds(who.as_ref(), || f(&self.fd))
            .map_err(at)?
            .map_err(at)
    }

    /// `None` while the name still holds the directory judged; else why
    /// not (moved away, deleted, or another directory in its place).
    pub fn changed(&self, root: &WorktreeRoot) -> Result<Option<String>, DeleteError> {
        let root_fd = root_handle(root, &self.path)?;
        Ok(match self.place(&root_fd)? {
            Place::Here => None,
            Place::Deleted => Some(format!("{} was deleted", self.path.display())),
            Place::Elsewhere(why) => Some(why),
        })
    }

    /// Where the pinned directory is now, seen from the root's handle.
    fn place(&self, root_fd: &OwnedFd) -> Result<Place, DeleteError> {
        match fstatat(root_fd, self.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if (st.st_dev, st.st_ino) == (self.dev, self.ino) => {
                return Ok(if (st.st_ctime, st.st_ctime_nsec) == self.ctime {
                    Place::Here
                } else {
                    Place::Elsewhere(format!(
                        "{} was renamed, or entries were made or removed right inside it, \
                         while it was being judged (its ctime moved)",
                        self.path.display()
                    ))
                })
            }
            Ok(st) => {
                return Ok(Place::Elsewhere(format!(
                    "{} is now another {} (device {}, inode {}), not the directory judged \
                     (device {}, inode {})",
                    self.path.display(),
                    kind_of(&st),
                    st.st_dev,
                    st.st_ino,
                    self.dev,
                    self.ino
                )))
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_at(&self.path, e)),
        }
        // Nothing at the name: deleted (no link left), or moved away.
        let st = fstat(&self.fd).map_err(|e| io_at(&self.path, e))?;
        Ok(if st.st_nlink == 0 {
            Place::Deleted
        } else {
            Place::Elsewhere(format!(
                "the directory judged (device {}, inode {}) was moved away from {}",
                self.dev,
                self.ino,
                self.path.display()
            ))
        })
    }
}

enum Place {
    Here,
    Deleted,
    Elsewhere(String),
}

/// What [`pin`] found at a worktree's path.
#[derive(Debug)]
pub enum Pin {
    Pinned(Pinned),
    /// Nothing there.
    Gone,
    /// Not a directory (a file, a fifo, …): never retired.
    NotADirectory(String),
}

fn io_at(path: &Path, e: Errno) -> DeleteError {
    DeleteError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFREG => "regular file",
        _ => "special file",
    }
}

/// The root's checked handle ([`WorktreeRoot::open_handle`]); a refusal
/// is a refusal of `path`.
fn root_handle(root: &WorktreeRoot, path: &Path) -> Result<OwnedFd, DeleteError> {
    root.open_handle().map_err(|e| DeleteError::OutsideRoot {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Pins `dir`, a direct entry of `root`, for [`retire`]: opens it without
/// following a link, relative to the root's checked handle. Call before
/// the preflight: its verdict is then about this directory.
pub fn pin(root: &WorktreeRoot, dir: &Path) -> Result<Pin, DeleteError> {
    let path = match root.check(dir) {
        PathCheck::Refused { why } => {
            return Err(DeleteError::OutsideRoot {
                path: dir.to_path_buf(),
                why,
            })
        }
        PathCheck::Inside { exists: false, .. } => return Ok(Pin::Gone),
        PathCheck::Inside { path, .. } => path,
    };
    let Some(name) = path.file_name().map(OsStr::to_os_string) else {
        return Err(DeleteError::OutsideRoot {
            path: dir.to_path_buf(),
            why: "no entry name".into(),
        });
    };
    let root_fd = root_handle(root, &path)?;
    // O_PATH: a handle to the directory itself, which needs no read
    // permission (a `0000` directory is still judged, as `unreadable`).
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(&root_fd, name.as_os_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Pin::Gone),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            return Ok(Pin::NotADirectory(format!(
                "{} is not a directory (a symlink or a file is never retired)",
                path.display()
            )))
        }
        Err(e) => return Err(io_at(&path, e)),
    };
    let st = fstat(&fd).map_err(|e| io_at(&path, e))?;
    Ok(Pin::Pinned(Pinned {
        fd,
        name,
        path,
        dev: st.st_dev,
        ino: st.st_ino,
        ctime: (st.st_ctime, st.st_ctime_nsec),
        stamp: None,
    }))
}

#[cfg(test)]
thread_local! {
    /// Runs right before the rename, in this thread only: how the tests
    /// make the world move between the last check and the act.
    pub(crate) static BEFORE_RENAME: std::cell::RefCell<Option<Box<dyn Fn()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A test's hook, given the trash entry's path.
#[cfg(test)]
pub(crate) type EntryHook = Box<dyn Fn(&Path)>;

#[cfg(test)]
thread_local! {
    /// Runs right after the rename, before the retired tree is compared,
    /// in this thread only, with the entry's path.
    pub(crate) static AFTER_RENAME: std::cell::RefCell<Option<EntryHook>> =
        const { std::cell::RefCell::new(None) };
}

/// Moves the pinned directory into the trash (see the module's
/// guarantees). Creates the trash when missing.
pub fn retire(
    root: &WorktreeRoot,
    pinned: &Pinned,
    now: SystemTime,
) -> Result<Retired, DeleteError> {
    let target = &pinned.path;
    if let PathCheck::Refused { why } = root.check(target) {
        return Err(DeleteError::OutsideRoot {
            path: target.clone(),
            why,
        });
    }
    if pinned.stamp.is_none() {
        return Err(DeleteError::Changed {
            path: target.clone(),
            why: "its tree was not stamped when it was judged: nothing is retired".into(),
        });
    }
    let root_fd = root_handle(root, target)?;
    match pinned.place(&root_fd)? {
        Place::Here => {}
        Place::Deleted => return Ok(Retired::Gone),
        Place::Elsewhere(why) => return Ok(Retired::Changed { why }),
    }
    let trash_fd = open_trash(root, &root_fd)?;
    let entry = pinned.entry_name(now);
    let trash_at = |name: OsString| trash_path(root).join(name);
    // The marker first: the record's `fsync` of the trash makes both
    // names durable before the rename.
    make_marker(&trash_fd, &entry).map_err(|e| io_at(&trash_at(marker_name(&entry)), e))?;
    if let Err(e) = write_record(&trash_fd, &entry, pinned.dev, pinned.ino) {
        forget_marker(&trash_fd, &entry);
        return Err(io_at(&trash_at(record_name(&entry)), e));
    }
    crate::crash_point!("trash.after_record");
    #[cfg(test)]
    BEFORE_RENAME.with(|h| {
        if let Some(h) = h.borrow().as_ref() {
            h()
        }
    });
    let renamed = renameat2(
        &root_fd,
        pinned.name.as_os_str(),
        &trash_fd,
        entry.as_os_str(),
        RenameFlags::RENAME_NOREPLACE,
    );
    if let Err(e) = renamed {
        forget_record(&trash_fd, &entry);
        forget_marker(&trash_fd, &entry);
        return match e {
            Errno::ENOENT => Ok(match pinned.place(&root_fd)? {
                Place::Deleted | Place::Here => Retired::Gone,
                Place::Elsewhere(why) => Retired::Changed { why },
            }),
            Errno::EXDEV | Errno::EBUSY => Ok(Retired::CannotRename {
                why: format!(
                    "renaming {} into {} failed: {e}",
                    target.display(),
                    trash_path(root).display()
                ),
            }),
            e => Err(io_at(target, e)),
        };
    }
    let moved = fstatat(&trash_fd, entry.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(target, e))?;
    if (moved.st_dev, moved.st_ino) != (pinned.dev, pinned.ino) {
        // Swapped between the last check and the rename: what moved is
        // not what was judged. It goes back where it was found, and its
        // record goes (it names the directory judged, which is not in the
        // trash).
        let back = put_back(&trash_fd, &entry, &root_fd, &pinned.name, root);
        forget_record(&trash_fd, &entry);
        forget_marker(&trash_fd, &entry);
        return Ok(Retired::Changed {
            why: format!(
                "another {} (device {}, inode {}) was renamed into {} just before it was \
                 retired, not the directory judged (device {}, inode {}); {}",
                kind_of(&moved),
                moved.st_dev,
                moved.st_ino,
                target.display(),
                pinned.dev,
                pinned.ino,
                back.unwrap_or_else(|e| e)
            ),
        });
    }
    crate::crash_point!("trash.before_check");
    #[cfg(test)]
    AFTER_RENAME.with(|h| {
        if let Some(h) = h.borrow().as_ref() {
            h(&trash_at(entry.clone()))
        }
    });
    // The very directory judged, in the trash, where nothing writes to
    // it by its old path any more: its tree must be as it was judged.
    let changed = match pinned.tree_changed() {
        Ok(None) => {
            // Settled: from here on, the entry is the reclaimer's.
            forget_marker(&trash_fd, &entry);
            return Ok(Retired::Moved {
                entry: trash_at(entry),
            });
        }
        Ok(Some(changed)) => changed,
        Err(e) => format!("its tree could not be compared with the one judged ({e})"),
    };
    // Written to while it was judged: it goes back, with what was
    // written. Its record goes either way: put back, the record is
    // stale; not put back, the entry must never be reclaimed, and the
    // marker stays to say so (a reclaimer that read the record before it
    // went finds the marker still there).
    let back = put_back(&trash_fd, &entry, &root_fd, &pinned.name, root);
    forget_record(&trash_fd, &entry);
    if back.is_ok() {
        forget_marker(&trash_fd, &entry);
    }
    Ok(Retired::Changed {
        why: format!("{changed}; {}", back.unwrap_or_else(|e| e)),
    })
}

/// Moves the trash entry `entry` back into the root: under `name`, or
/// under `<name>.returned.<nanos>` when `name` is taken again; never over
/// anything. Says where it went, or (`Err`) that it stays in the trash.
fn put_back(
    trash_fd: &OwnedFd,
    entry: &OsStr,
    root_fd: &OwnedFd,
    name: &OsStr,
    root: &WorktreeRoot,
) -> Result<String, String> {
    let mut tries = vec![name.to_os_string()];
    let mut other = name.to_os_string();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    other.push(format!(".returned.{nanos}"));
    tries.push(other);
    let mut last = None;
    for to in tries {
        match renameat2(
            trash_fd,
            entry,
            root_fd,
            to.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(format!("put back at {}", root.path().join(&to).display())),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or_else(String::new, |e| e.to_string());
    tracing::error!(entry = %trash_path(root).join(entry).display(), error = %e,
        "cannot put back what was moved into the trash but must not be retired; it stays \
         in the trash, where the reclaimer never deletes it (no record names it)");
    Err(format!(
        "it could not be put back ({e}) and stays as {}, which the reclaimer leaves alone",
        trash_path(root).join(entry).display()
    ))
}

/// Opens the trash below the root's handle, creating it (mode `0700`)
/// when missing, and checks it on its handle.
fn open_trash(root: &WorktreeRoot, root_fd: &OwnedFd) -> Result<OwnedFd, DeleteError> {
    match mkdirat(root_fd, TRASH_DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io_at(&trash_path(root), e)),
    }
    open_existing_trash(root, root_fd)?.ok_or_else(|| io_at(&trash_path(root), Errno::ENOENT))
}

/// Opens the trash below the root's handle without following a link and
/// judges it on that handle: a directory owned by the controller's
/// effective user, mode `0700`. `None` when there is none.
pub fn open_existing_trash(
    root: &WorktreeRoot,
    root_fd: &OwnedFd,
) -> Result<Option<OwnedFd>, DeleteError> {
    let path = trash_path(root);
    let unsafe_trash = |why: String| DeleteError::UnsafeTrash {
        path: path.clone(),
        why,
    };
    let fd = match openat(root_fd, TRASH_DIR, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            let what = match fstatat(root_fd, TRASH_DIR, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if kind_of(&st) == "symlink" => format!(
                    "is a symlink (to {}), owned by {}",
                    nix::fcntl::readlinkat(root_fd, TRASH_DIR)
                        .map(|t| PathBuf::from(t).display().to_string())
                        .unwrap_or_else(|e| format!("<unreadable: {e}>")),
                    user_label(st.st_uid)
                ),
                Ok(st) => format!(
                    "is a {}, owned by {} with mode {:04o}",
                    kind_of(&st),
                    user_label(st.st_uid),
                    st.st_mode & 0o7777
                ),
                Err(_) => format!("cannot be opened as a directory ({e})"),
            };
            return Err(unsafe_trash(format!(
                "{what}: it is never followed nor used. Nothing is retired until it is gone: \
                 remove it (`rm {}`) and the controller creates its own trash, a directory \
                 of its user with mode 0700",
                path.display()
            )));
        }
        Err(e) => return Err(io_at(&path, e)),
    };
    let st = fstat(&fd).map_err(|e| io_at(&path, e))?;
    let me = Uid::effective().as_raw();
    if st.st_uid != me || st.st_mode & 0o7777 != 0o700 {
        return Err(unsafe_trash(format!(
            "is owned by {} with mode {:04o}; the trash must be the controller's own \
             directory, owned by {} with mode 0700, or others could plant, swap or take \
             what is retired there. Nothing is retired until it is fixed: check what it \
             holds, move it out of the root (`mv {} <elsewhere>`), and the controller \
             creates a new one",
            user_label(st.st_uid),
            st.st_mode & 0o7777,
            user_label(me),
            path.display()
        )));
    }
    Ok(Some(fd))
}

/// What the trash's tests and the reclaimer's share.
#[cfg(test)]
pub(crate) mod testing {
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::root::WorktreeRoot;

    /// A prepared worktree root and, beside it, a directory `outside`
    /// holding `keep.txt` ("keep"), which nothing may touch.
    pub(crate) fn fixture() -> (tempfile::TempDir, WorktreeRoot, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep.txt"), "keep").unwrap();
        (tmp, WorktreeRoot::prepare(&root).unwrap(), outside)
    }

    /// Pins `dir` and retires it at once.
    pub(crate) fn retire_path(
        root: &WorktreeRoot,
        dir: &Path,
    ) -> Result<super::Retired, super::DeleteError> {
        match super::pin(root, dir)? {
            super::Pin::Pinned(mut p) => {
                p.stamp_tree()?;
                super::retire(root, &p, std::time::SystemTime::now())
            }
            super::Pin::Gone => Ok(super::Retired::Gone),
            super::Pin::NotADirectory(why) => Err(super::DeleteError::OutsideRoot {
                path: dir.to_path_buf(),
                why,
            }),
        }
    }

    /// `dir` pinned, its tree stamped (settled), as a removal's
    /// inspection leaves it.
    pub(crate) fn pin_stamped(root: &WorktreeRoot, dir: &Path) -> super::Pinned {
        let super::Pin::Pinned(mut p) = super::pin(root, dir).unwrap() else {
            panic!("{} not pinned", dir.display())
        };
        assert_eq!(p.stamp_tree().unwrap(), None, "settled");
        p
    }

    /// A tmpfs mounted at `at` until dropped. None where this run cannot
    /// mount one (it needs root): the test then skips, and says so.
    pub(crate) struct Tmpfs(PathBuf);

    impl Tmpfs {
        pub(crate) fn mount(at: &Path) -> Option<Tmpfs> {
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
            if !mounted {
                eprintln!("skipping: cannot mount a tmpfs (needs root)");
            }
            mounted.then(|| Tmpfs(at.to_path_buf()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{fixture, pin_stamped, retire_path, Tmpfs};
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn entry_names_round_trip_and_foreign_names_are_refused() {
        let at = UNIX_EPOCH + Duration::new(1_764_000_000, 123);
        let name = entry_name(OsStr::new("w.1"), at);
        assert_eq!(name, OsStr::new("w.1.1764000000000000123"));
        assert_eq!(parse_entry(&name), Some((OsString::from("w.1"), at)));
        for foreign in ["w1", "w1.", ".123", "w1.12a", "w1.-1", "notes.txt"] {
            assert_eq!(parse_entry(OsStr::new(foreign)), None, "{foreign}");
        }
        assert_eq!(
            parse_entry(&record_name(&name)),
            None,
            "a record is no entry"
        );
    }

    #[test]
    fn retire_moves_exactly_the_worktree_and_nothing_else() {
        let (_tmp, root, outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(wt.join("sub")).unwrap();
        fs::write(wt.join("sub/f.txt"), "x").unwrap();
        std::os::unix::fs::symlink(outside.join("keep.txt"), wt.join("link")).unwrap();
        let sibling = root.path().join("w2");
        fs::create_dir_all(&sibling).unwrap();
        fs::write(sibling.join("g.txt"), "y").unwrap();
        let judged = fs::metadata(&wt).unwrap().ino();
        let Retired::Moved { entry } = retire_path(&root, &wt).unwrap() else {
            panic!("not moved")
        };
        assert!(!wt.exists());
        assert_eq!(entry.parent().unwrap(), trash_path(&root));
        assert_eq!(fs::read(entry.join("sub/f.txt")).unwrap(), b"x");
        assert!(fs::symlink_metadata(entry.join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(sibling.join("g.txt")).unwrap(), b"y");
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
        let listing = list(&root).unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].worktree_id, "w1");
        assert_eq!(listing.entries[0].ino, judged);
        assert!(listing.foreign.is_empty(), "{:?}", listing.foreign);
        // The trash is the controller's own, 0700; the record is durable
        // beside the entry and names the directory retired.
        let t = fs::symlink_metadata(trash_path(&root)).unwrap();
        assert_eq!(t.mode() & 0o7777, 0o700);
        let rec =
            fs::read_to_string(trash_path(&root).join(record_name(entry.file_name().unwrap())))
                .unwrap();
        assert_eq!(rec, format!("{} {judged}\n", t.dev()));
        assert_eq!(retire_path(&root, &wt).unwrap(), Retired::Gone);
    }

    #[test]
    fn retire_refuses_a_symlink_entry() {
        let (_tmp, root, outside) = fixture();
        let link = root.path().join("w1");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(matches!(
            pin(&root, &link),
            Err(DeleteError::OutsideRoot { .. })
        ));
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
        assert!(list(&root).unwrap().entries.is_empty());
    }

    /// Swaps the names `a` and `b` under `root` (through a third name).
    fn swap(root: &Path, a: &str, b: &str) {
        let tmp = root.join("swap-tmp");
        fs::rename(root.join(a), &tmp).unwrap();
        fs::rename(root.join(b), root.join(a)).unwrap();
        fs::rename(&tmp, root.join(b)).unwrap();
    }

    fn before_rename(f: impl Fn() + 'static) {
        BEFORE_RENAME.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    fn no_hook() {
        BEFORE_RENAME.with(|h| *h.borrow_mut() = None);
    }

    #[test]
    fn a_directory_swapped_in_before_the_rename_is_put_back() {
        let (_tmp, root, _outside) = fixture();
        let clean = root.path().join("clean");
        let dirty = root.path().join("dirty");
        fs::create_dir_all(&clean).unwrap();
        fs::create_dir_all(&dirty).unwrap();
        fs::write(dirty.join("work.txt"), "work").unwrap();
        let pinned = pin_stamped(&root, &clean);
        // Judged: clean. Then, between the last check and the rename, the
        // dirty one takes its name.
        let r = root.path().to_path_buf();
        before_rename(move || swap(&r, "clean", "dirty"));
        let got = retire(&root, &pinned, SystemTime::now());
        no_hook();
        let Ok(Retired::Changed { why }) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("put back at"), "{why}");
        // Put back where it was found: the dirty work is at the clean
        // one's name, outside the trash; nothing is left in the trash.
        assert_eq!(fs::read(clean.join("work.txt")).unwrap(), b"work");
        assert!(dirty.is_dir());
        let listing = list(&root).unwrap();
        assert!(listing.entries.is_empty() && listing.foreign.is_empty());
        assert_eq!(fs::read_dir(trash_path(&root)).unwrap().count(), 0);
    }

    fn after_rename(f: impl Fn(&Path) + 'static) {
        AFTER_RENAME.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    fn no_after_rename() {
        AFTER_RENAME.with(|h| *h.borrow_mut() = None);
    }

    fn append(path: &Path, what: &str) {
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(what.as_bytes())
            .unwrap();
    }

    /// A worktree-like tree: `sub/f.txt` ("x") and `sub/deeper/`.
    fn small_tree(root: &WorktreeRoot) -> PathBuf {
        let wt = root.path().join("w1");
        fs::create_dir_all(wt.join("sub/deeper")).unwrap();
        fs::write(wt.join("sub/f.txt"), "x").unwrap();
        wt
    }

    #[test]
    fn a_write_in_the_rename_window_is_put_back() {
        let (_tmp, root, _outside) = fixture();
        let wt = small_tree(&root);
        let pinned = pin_stamped(&root, &wt);
        // Judged; then, between the last check and the rename, a process
        // writes deep inside (the top directory's ctime does not move).
        let w = wt.clone();
        before_rename(move || {
            append(&w.join("sub/f.txt"), "+more");
            fs::write(w.join("sub/deeper/new.o"), "o").unwrap();
        });
        let got = retire(&root, &pinned, SystemTime::now());
        no_hook();
        let Ok(Retired::Changed { why }) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("changed after it was judged"), "{why}");
        assert!(why.contains("sub/f.txt (written)"), "{why}");
        assert!(why.contains("sub/deeper/new.o (new)"), "{why}");
        assert!(
            why.contains(&format!("put back at {}", wt.display())),
            "{why}"
        );
        // Back at its name, with what was written; nothing left in the
        // trash: no entry, no record, no marker.
        assert_eq!(fs::read(wt.join("sub/f.txt")).unwrap(), b"x+more");
        assert_eq!(fs::read(wt.join("sub/deeper/new.o")).unwrap(), b"o");
        assert_eq!(fs::metadata(&wt).unwrap().ino(), pinned.ino());
        assert_eq!(fs::read_dir(trash_path(&root)).unwrap().count(), 0);
    }

    #[test]
    fn a_write_into_the_retired_entry_before_the_check_is_put_back() {
        let (_tmp, root, _outside) = fixture();
        let wt = small_tree(&root);
        let pinned = pin_stamped(&root, &wt);
        // Through a descriptor opened before the rename, or a path into
        // the trash: written after the move, before the check. Meanwhile
        // the reclaimer is never offered the entry.
        let r = root.clone();
        after_rename(move |entry| {
            let listing = list(&r).unwrap();
            assert!(listing.entries.is_empty(), "{:?}", listing.entries);
            assert_eq!(listing.foreign, vec![entry.to_path_buf()]);
            fs::set_permissions(entry.join("sub/f.txt"), fs::Permissions::from_mode(0o600))
                .unwrap();
        });
        let got = retire(&root, &pinned, SystemTime::now());
        no_after_rename();
        let Ok(Retired::Changed { why }) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("sub/f.txt (changed)"), "{why}");
        assert!(wt.join("sub/f.txt").is_file());
        assert_eq!(fs::read_dir(trash_path(&root)).unwrap().count(), 0);
    }

    #[test]
    fn a_tree_as_judged_is_retired_and_offered_to_the_reclaimer() {
        let (_tmp, root, _outside) = fixture();
        let wt = small_tree(&root);
        let pinned = pin_stamped(&root, &wt);
        // Read, not written, meanwhile: nothing a stamp covers.
        let w = wt.clone();
        before_rename(move || drop(fs::read(w.join("sub/f.txt")).unwrap()));
        let got = retire(&root, &pinned, SystemTime::now());
        no_hook();
        let Ok(Retired::Moved { entry }) = got else {
            panic!("{got:?}")
        };
        let name = entry.file_name().unwrap();
        assert!(!trash_path(&root).join(marker_name(name)).exists());
        let listing = list(&root).unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert!(listing.foreign.is_empty(), "{:?}", listing.foreign);
    }

    #[test]
    fn what_cannot_be_put_back_stays_in_the_trash_and_is_never_reclaimed() {
        let (_tmp, root, _outside) = fixture();
        let wt = small_tree(&root);
        let pinned = pin_stamped(&root, &wt);
        // Written after the move, and the root made immutable: nothing can
        // be renamed into it, so the entry cannot go back.
        let r = root.path().to_path_buf();
        let immutable = std::rc::Rc::new(std::cell::Cell::new(false));
        let set = std::rc::Rc::clone(&immutable);
        after_rename(move |entry| {
            append(&entry.join("sub/f.txt"), "+late");
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&r)
                .status()
                .is_ok_and(|s| s.success());
            set.set(ok);
        });
        let got = retire(&root, &pinned, SystemTime::now());
        no_after_rename();
        if !immutable.get() {
            eprintln!("skipping: cannot make the root immutable (chattr +i needs root on ext4)");
            return;
        }
        let unset = std::process::Command::new("chattr")
            .arg("-i")
            .arg(root.path())
            .status()
            .unwrap();
        assert!(unset.success());
        let Ok(Retired::Changed { why }) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("could not be put back"), "{why}");
        assert!(!wt.exists());
        // In the trash, with the late write, and never the reclaimer's:
        // its record is gone and its marker stays.
        let listing = list(&root).unwrap();
        assert!(listing.entries.is_empty(), "{:?}", listing.entries);
        assert_eq!(listing.foreign.len(), 1);
        let entry = &listing.foreign[0];
        assert_eq!(fs::read(entry.join("sub/f.txt")).unwrap(), b"x+late");
        let name = entry.file_name().unwrap();
        assert!(!trash_path(&root).join(record_name(name)).exists());
        assert!(trash_path(&root).join(marker_name(name)).exists());
    }

    #[test]
    fn retire_refuses_a_directory_whose_tree_was_not_stamped() {
        let (_tmp, root, _outside) = fixture();
        let wt = small_tree(&root);
        let Pin::Pinned(pinned) = pin(&root, &wt).unwrap() else {
            panic!("not pinned")
        };
        let got = retire(&root, &pinned, SystemTime::now());
        assert!(
            matches!(&got, Err(DeleteError::Changed { why, .. }) if why.contains("not stamped")),
            "{got:?}"
        );
        assert!(wt.join("sub/f.txt").is_file());
        assert!(!trash_path(&root).exists() || list(&root).unwrap().entries.is_empty());
    }

    #[test]
    fn a_directory_moved_away_before_the_rename_is_not_retired() {
        let (_tmp, root, _outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        let pinned = pin_stamped(&root, &wt);
        // Moved away after the preflight: the pin says so at once.
        fs::rename(&wt, root.path().join("w1-moved")).unwrap();
        assert!(pinned.changed(&root).unwrap().is_some());
        assert!(matches!(
            retire(&root, &pinned, SystemTime::now()),
            Ok(Retired::Changed { .. })
        ));
        // Another directory made at its name is not the one judged.
        fs::create_dir(&wt).unwrap();
        assert!(matches!(
            retire(&root, &pinned, SystemTime::now()),
            Ok(Retired::Changed { .. })
        ));
        assert!(wt.is_dir() && root.path().join("w1-moved").is_dir());
        // Moved away between the last check and the rename.
        let pinned = pin_stamped(&root, &wt);
        let (from, to) = (wt.clone(), root.path().join("w1-later"));
        before_rename(move || fs::rename(&from, &to).unwrap());
        let got = retire(&root, &pinned, SystemTime::now());
        no_hook();
        assert!(matches!(got, Ok(Retired::Changed { .. })), "{got:?}");
        assert!(root.path().join("w1-later").is_dir());
        assert_eq!(fs::read_dir(trash_path(&root)).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_moved_away_and_back_while_judged_is_caught() {
        let (_tmp, root, _outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        let pinned = pin_stamped(&root, &wt);
        assert_eq!(pinned.changed(&root).unwrap(), None);
        // Away while the preflight looks at something else, then back:
        // same device and inode at the name, but not what was judged.
        std::thread::sleep(Duration::from_millis(20));
        fs::rename(&wt, root.path().join("elsewhere")).unwrap();
        fs::rename(root.path().join("elsewhere"), &wt).unwrap();
        let why = pinned.changed(&root).unwrap().expect("caught");
        assert!(why.contains("ctime"), "{why}");
        assert!(matches!(
            retire(&root, &pinned, SystemTime::now()),
            Ok(Retired::Changed { .. })
        ));
        assert!(wt.is_dir());
    }

    #[test]
    fn a_planted_trash_is_never_used() {
        let mallory = crate::testing::local_user(crate::testing::MALLORY);
        type Plant<'a> = (&'a str, &'a dyn Fn(&Path, &Path));
        let plants: [Plant; 4] = [
            ("symlink", &|trash, outside| {
                std::os::unix::fs::symlink(outside, trash).unwrap()
            }),
            ("regular file", &|trash, _| fs::write(trash, "x").unwrap()),
            ("mallory", &|trash, _| {
                fs::create_dir(trash).unwrap();
                fs::set_permissions(trash, fs::Permissions::from_mode(0o700)).unwrap();
                std::os::unix::fs::chown(trash, Some(mallory.uid), Some(mallory.gid)).unwrap();
            }),
            ("0777", &|trash, _| {
                fs::create_dir(trash).unwrap();
                fs::set_permissions(trash, fs::Permissions::from_mode(0o777)).unwrap();
            }),
        ];
        for (what, plant) in plants {
            let (_tmp, root, outside) = fixture();
            let trash = trash_path(&root);
            plant(&trash, &outside);
            let wt = root.path().join("w1");
            fs::create_dir_all(&wt).unwrap();
            fs::write(wt.join("f"), "x").unwrap();
            let err = retire_path(&root, &wt).unwrap_err().to_string();
            assert!(err.contains(&trash.display().to_string()), "{what}: {err}");
            let named = match what {
                "symlink" => "symlink (to ".to_string(),
                "regular file" => "regular file".into(),
                "mallory" => format!("owned by {}", crate::testing::MALLORY),
                _ => "mode 0777".into(),
            };
            assert!(err.contains(&named), "{what}: {err}");
            assert!(err.contains("never followed nor used") || err.contains("Nothing is retired"));
            assert_eq!(fs::read(wt.join("f")).unwrap(), b"x", "{what}: not moved");
            assert!(list(&root).is_err(), "{what}: not listed either");
            // Nothing went into it, nor through the symlink.
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{what}");
            assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
            if fs::symlink_metadata(&trash).unwrap().is_dir() {
                assert_eq!(fs::read_dir(&trash).unwrap().count(), 0, "{what}");
            }
        }
    }

    #[test]
    fn only_names_with_a_record_of_their_directory_are_entries() {
        let (_tmp, root, _outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        let Retired::Moved { entry } = retire_path(&root, &wt).unwrap() else {
            panic!("not moved")
        };
        let trash = trash_path(&root);
        // The right shape, no record; a record naming another directory;
        // a record whose entry went long ago.
        let planted = trash.join("w2.1764000000000000000");
        fs::create_dir(&planted).unwrap();
        let swapped = trash.join("w3.1764000000000000001");
        fs::create_dir(&swapped).unwrap();
        fs::write(
            trash.join(record_name(swapped.file_name().unwrap())),
            "1 2\n",
        )
        .unwrap();
        let stale = OsString::from("w4.1764000000000000002");
        fs::write(trash.join(record_name(&stale)), "1 2\n").unwrap();
        let listing = list(&root).unwrap();
        assert_eq!(
            listing.entries.iter().map(|e| &e.path).collect::<Vec<_>>(),
            [&entry]
        );
        assert_eq!(listing.foreign, vec![planted, swapped]);
        assert_eq!(listing.stale_records, vec![stale.clone()]);
        forget_stale_records(&root, &listing);
        assert!(!trash.join(record_name(&stale)).exists());
        assert!(trash.join(record_name(entry.file_name().unwrap())).exists());
    }

    #[test]
    fn retire_reports_cannot_rename_when_the_trash_is_another_file_system() {
        let (_tmp, root, _outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        fs::create_dir_all(trash_path(&root)).unwrap();
        fs::set_permissions(trash_path(&root), fs::Permissions::from_mode(0o700)).unwrap();
        let Some(tmpfs) = Tmpfs::mount(&trash_path(&root)) else {
            return;
        };
        fs::set_permissions(trash_path(&root), fs::Permissions::from_mode(0o700)).unwrap();
        let r = retire_path(&root, &wt);
        let left = fs::read_dir(trash_path(&root)).unwrap().count();
        drop(tmpfs);
        assert!(
            matches!(&r, Ok(Retired::CannotRename { why }) if why.contains("EXDEV")),
            "{r:?}"
        );
        assert!(wt.is_dir());
        assert_eq!(left, 0, "no record left behind");
    }

    #[test]
    fn the_trash_is_never_a_worktree_path() {
        let (_tmp, root, _outside) = fixture();
        fs::create_dir_all(trash_path(&root)).unwrap();
        assert!(matches!(
            root.check(&trash_path(&root)),
            PathCheck::Refused { .. }
        ));
    }

    #[test]
    fn estimate_counts_allocated_blocks() {
        let (_tmp, root, _outside) = fixture();
        let d = root.path().join("d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), vec![1u8; 64 * 1024]).unwrap();
        assert!(estimate_bytes(&d) >= 64 * 1024);
    }
}
