//! The controller's trash: where a worktree goes, with one rename, when it
//! is removed; the [`super::reclaim`] reclaimer frees the space later.
//!
//! # Layout
//!
//! `<root>/.boo-trash/` ([`TRASH_DIR`]), created by the controller, mode
//! `0700`. Each entry is one retired worktree directory, named
//! `<worktree id>.<unix nanos>` ([`entry_name`]): the id it had under the
//! root, a dot, and the time it was retired in nanoseconds since the epoch
//! (decimal digits only). The reclaimer deletes only entries whose name has
//! that shape ([`parse_entry`]); anything else in the trash is reported and
//! left alone.
//!
//! # Guarantees of [`retire`]
//! 1. **Exactly the worktree, nothing else.** The entry is checked with
//!    [`WorktreeRoot::check`], must be a directory (not a symlink, not a
//!    file), and is moved by name with one `renameat2(RENAME_NOREPLACE)`
//!    from a descriptor of the root whose `(st_dev, st_ino)` is still the
//!    prepared root's into a descriptor of the trash opened with
//!    `O_NOFOLLOW`. No symlink is followed, no existing trash entry is
//!    replaced, nothing below the entry is touched (test
//!    `retire_moves_exactly_the_worktree_and_nothing_else`).
//! 2. **Atomic.** The directory is either still at its place or wholly in
//!    the trash; a crash at any instant leaves one of the two (test
//!    `a_crash_right_after_the_rename_converges` in `tests/crash.rs`, the
//!    real binary killed right after the rename).
//! 3. **A swapped entry is put back.** When what was moved is not the
//!    directory that was checked (same device and inode), it is moved back
//!    and the retire fails. A symlink or a file is refused before the
//!    rename (test `retire_refuses_a_symlink_entry`); the swap itself needs
//!    a race between two system calls and is not provoked by a test.
//! 4. **Falls back, never guesses.** `EXDEV` (the trash on another file
//!    system) and `EBUSY` (the entry is a mount point, or in use as one)
//!    answer [`Retired::CannotRename`] with the reason: the caller deletes
//!    in place, as before, and says why (test
//!    `retire_reports_cannot_rename_when_the_trash_is_another_file_system`).
//! 5. **The trash is never a worktree.** [`WorktreeRoot::check`] refuses
//!    `<root>/.boo-trash` as a worktree path and the root observation skips
//!    it (tests `the_trash_is_never_a_worktree_path` and
//!    `the_trash_is_never_an_orphan`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, RenameFlags, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};

use super::remove::{dir_flags, RemoveError};
use crate::model::PathCheck;
use crate::root::WorktreeRoot;

pub use crate::root::TRASH_DIR;

/// What became of a worktree directory handed to [`retire`].
#[derive(Debug, PartialEq, Eq)]
pub enum Retired {
    /// Moved to this trash entry.
    Moved { entry: PathBuf },
    /// Nothing was there (already removed).
    Gone,
    /// The rename is impossible here; the directory is untouched.
    CannotRename { why: String },
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

/// The trash directory of `root`.
pub fn trash_path(root: &WorktreeRoot) -> PathBuf {
    root.path().join(TRASH_DIR)
}

/// Moves `dir`, a direct entry of `root`, into the trash (see the module's
/// guarantees). Creates the trash when missing.
pub fn retire(root: &WorktreeRoot, dir: &Path, now: SystemTime) -> Result<Retired, RemoveError> {
    let io_at = |path: &Path, e: Errno| RemoveError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    };
    let target = match root.check(dir) {
        PathCheck::Refused { why } => {
            return Err(RemoveError::OutsideRoot {
                path: dir.to_path_buf(),
                why,
            })
        }
        PathCheck::Inside { exists: false, .. } => return Ok(Retired::Gone),
        PathCheck::Inside { path, .. } => path,
    };
    let Some(name) = target.file_name().map(OsStr::to_os_string) else {
        return Err(RemoveError::OutsideRoot {
            path: dir.to_path_buf(),
            why: "no entry name".into(),
        });
    };
    let root_fd = openat(AT_FDCWD, root.path(), dir_flags(), Mode::empty())
        .map_err(|e| io_at(root.path(), e))?;
    let root_st = fstat(&root_fd).map_err(|e| io_at(root.path(), e))?;
    if (root_st.st_dev, root_st.st_ino) != (root.dev(), root.ino()) {
        return Err(RemoveError::OutsideRoot {
            path: target,
            why: format!(
                "the worktree root {} was replaced since it was prepared",
                root.path().display()
            ),
        });
    }
    let before = match fstatat(&root_fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Retired::Gone),
        Err(e) => return Err(io_at(&target, e)),
    };
    if SFlag::from_bits_truncate(before.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Err(RemoveError::OutsideRoot {
            path: target,
            why: "not a directory (a symlink or a file is never retired)".into(),
        });
    }
    let trash_fd = open_trash(&root_fd).map_err(|e| io_at(&trash_path(root), e))?;
    let entry = entry_name(&name, now);
    match renameat2(
        &root_fd,
        name.as_os_str(),
        &trash_fd,
        entry.as_os_str(),
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(Retired::Gone),
        Err(e @ (Errno::EXDEV | Errno::EBUSY)) => {
            return Ok(Retired::CannotRename {
                why: format!(
                    "renaming {} into {} failed: {e}",
                    target.display(),
                    trash_path(root).display()
                ),
            })
        }
        Err(e) => return Err(io_at(&target, e)),
    }
    let moved = fstatat(&trash_fd, entry.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(&target, e))?;
    if (moved.st_dev, moved.st_ino) != (before.st_dev, before.st_ino) {
        // Swapped between the check and the rename: whatever it is, it
        // goes back where it was found.
        let back = renameat2(
            &trash_fd,
            entry.as_os_str(),
            &root_fd,
            name.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        );
        return Err(RemoveError::OutsideRoot {
            path: target,
            why: format!(
                "the entry was replaced while it was being retired (moved back: {})",
                match back {
                    Ok(()) => "yes".to_string(),
                    Err(e) => format!("no, {e}"),
                }
            ),
        });
    }
    Ok(Retired::Moved {
        entry: trash_path(root).join(entry),
    })
}

/// Opens the trash below `root_fd`, creating it when missing; a trash that
/// is a symlink or not a directory fails (`ELOOP`, `ENOTDIR`).
fn open_trash(root_fd: &std::os::fd::OwnedFd) -> Result<std::os::fd::OwnedFd, Errno> {
    match mkdirat(root_fd, TRASH_DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    openat(root_fd, TRASH_DIR, dir_flags(), Mode::empty())
}

/// One entry waiting in the trash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashEntry {
    pub path: PathBuf,
    pub worktree_id: String,
    pub retired_at: SystemTime,
}

/// What the trash holds: the entries the reclaimer may delete, and the
/// names it will not touch (not made by the controller).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub entries: Vec<TrashEntry>,
    pub foreign: Vec<PathBuf>,
}

/// Lists the trash of `root`; a missing trash is empty.
pub fn list(root: &WorktreeRoot) -> io::Result<Listing> {
    let dir = trash_path(root);
    let mut out = Listing::default();
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symlink or a file): the trash is unusable",
            dir.display()
        )));
    }
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name();
        match parse_entry(&name) {
            Some((id, at)) => out.entries.push(TrashEntry {
                path: e.path(),
                worktree_id: id.to_string_lossy().into_owned(),
                retired_at: at,
            }),
            None => out.foreign.push(e.path()),
        }
    }
    out.entries.sort_by_key(|e| e.retired_at);
    out.foreign.sort();
    Ok(out)
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
        .same_file_system(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
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
    use super::testing::{fixture, Tmpfs};
    use super::*;
    use std::fs;

    #[test]
    fn entry_names_round_trip_and_foreign_names_are_refused() {
        let at = UNIX_EPOCH + Duration::new(1_764_000_000, 123);
        let name = entry_name(OsStr::new("w.1"), at);
        assert_eq!(name, OsStr::new("w.1.1764000000000000123"));
        assert_eq!(parse_entry(&name), Some((OsString::from("w.1"), at)));
        for foreign in ["w1", "w1.", ".123", "w1.12a", "w1.-1", "notes.txt"] {
            assert_eq!(parse_entry(OsStr::new(foreign)), None, "{foreign}");
        }
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
        let Retired::Moved { entry } = retire(&root, &wt, SystemTime::now()).unwrap() else {
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
        assert_eq!(
            retire(&root, &wt, SystemTime::now()).unwrap(),
            Retired::Gone
        );
    }

    #[test]
    fn retire_refuses_a_symlink_entry() {
        let (_tmp, root, outside) = fixture();
        let link = root.path().join("w1");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(matches!(
            retire(&root, &link, SystemTime::now()),
            Err(RemoveError::OutsideRoot { .. })
        ));
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
        assert!(list(&root).unwrap().entries.is_empty());
    }

    #[test]
    fn retire_refuses_a_trash_that_is_a_symlink() {
        let (_tmp, root, outside) = fixture();
        std::os::unix::fs::symlink(&outside, trash_path(&root)).unwrap();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        assert!(retire(&root, &wt, SystemTime::now()).is_err());
        assert!(wt.is_dir());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn retire_reports_cannot_rename_when_the_trash_is_another_file_system() {
        let (_tmp, root, _outside) = fixture();
        let wt = root.path().join("w1");
        fs::create_dir_all(&wt).unwrap();
        fs::create_dir_all(trash_path(&root)).unwrap();
        let Some(tmpfs) = Tmpfs::mount(&trash_path(&root)) else {
            return;
        };
        let r = retire(&root, &wt, SystemTime::now());
        drop(tmpfs);
        assert!(
            matches!(&r, Ok(Retired::CannotRename { why }) if why.contains("EXDEV")),
            "{r:?}"
        );
        assert!(wt.is_dir());
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
