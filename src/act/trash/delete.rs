//! Deleting a worktree directory: never following symlinks, never crossing
//! into another mounted file system, never outside the root.
//!
//! Why not `std::fs::remove_dir_all`? In the standard library of this
//! toolchain (rustc 1.95, `library/std/src/sys/fs/unix.rs`, module
//! `remove_dir_impl`, "Modern implementation using openat(), unlinkat() and
//! fdopendir()") it *is* symlink-safe on Linux: the top path is `lstat`ed and
//! a symlink is unlinked, never entered; every directory below is opened
//! with `openat(parent_fd, name, O_NOFOLLOW | O_DIRECTORY)` and its entries
//! removed with `unlinkat(fd, name)`; `ENOTDIR`/`ELOOP` (a symlink or a file)
//! means "unlink, don't traverse". Its documentation says "This function
//! does **not** follow symbolic links and it will simply remove the symbolic
//! link itself" and "On most platforms, `fs::remove_dir_all` protects
//! against symlink TOCTOU races by default" (the exceptions it lists are
//! Miri and Redox). But it descends into mount points (no `st_dev` or
//! mount-id check), so "never leaves the file system" would rest on a check
//! made before the deletion started; it gives up on `EACCES` with no way to
//! fix permissions; and it recurses on the call stack. So this module
//! carries its own walk in the same openat/unlinkat style, with those three
//! additions (source read from the rust-docs `src/std/sys/fs/unix.rs.html`
//! and `src/std/fs.rs.html` of the installed 1.95.0 toolchain).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fchmodat, fstat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::model::PathCheck;
use crate::root::{normalize_lexically, WorktreeRoot};

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("{path} is not a direct entry of the worktree root: {why}")]
    OutsideRoot { path: PathBuf, why: String },
    #[error("mount point inside {path}: {mount}")]
    MountPoint { path: PathBuf, mount: PathBuf },
    /// The trash is not the controller's own `0700` directory.
    #[error("the trash {path} {why}")]
    UnsafeTrash { path: PathBuf, why: String },
    /// What is at the name is not the directory that was judged.
    #[error("{path} is not the directory that was judged: {why}")]
    Changed { path: PathBuf, why: String },
    #[error("cannot remove {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Mount points at or below `dir`.
///
/// Two sources, merged and sorted:
/// - `/proc/self/mountinfo`: every mount point of this mount namespace at
///   or below `dir`, including bind mounts of the same device, which no
///   `st_dev` comparison can see. The file is parsed here rather than with
///   `procfs`, whose `MountInfo` reads it as UTF-8 (one non-UTF-8 mount point
///   anywhere on the host fails the whole read) and does not decode the
///   kernel's octal escapes (`\040` for a space), so it would miss
///   `<dir>/a b`.
/// - a walk of `dir` (walkdir, `follow_links(false)`) reporting every
///   directory whose `st_dev` differs from `dir`'s, without descending into
///   it.
///
/// Symlinks are never followed: a symlink below `dir` is neither entered nor
/// reported, wherever it points. `dir` is made absolute and lexically
/// normalized, and its parent canonicalized, to compare with mountinfo's
/// resolved paths; its last component is not resolved. Directories the walk
/// cannot read are skipped ([`delete_dir`] checks each directory again as
/// it deletes). Errors: `dir` cannot be inspected (e.g. `NotFound`), or
/// mountinfo cannot be read.
pub fn mount_points_inside(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = resolve_parent(dir)?;
    let meta = fs::symlink_metadata(&dir)?;
    let mut found = std::collections::BTreeSet::new();
    for mount in parse_mountinfo(&fs::read(crate::mounts::MOUNTINFO)?) {
        if mount.starts_with(&dir) {
            found.insert(mount);
        }
    }
    if meta.is_dir() {
        let mut walk = walkdir::WalkDir::new(&dir).follow_links(false).into_iter();
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.depth() > 0 => {
                    tracing::debug!("mount scan of {} skips: {e}", dir.display());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !entry.file_type().is_dir() {
                continue;
            }
            match entry.metadata() {
                Ok(m) if m.dev() != meta.dev() => {
                    found.insert(entry.path().to_path_buf());
                    walk.skip_current_dir();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("mount scan of {} skips: {e}", dir.display()),
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Deletes `dir`, a direct entry of `root`, and everything below it.
///
/// Guarantees:
/// 1. **Only a direct entry of the root.** `dir` is checked with
///    [`WorktreeRoot::check`] (lexical normalization, then
///    `symlink_metadata`) right before deleting; a path outside the root, the
///    root itself, a nested path, or a symlink entry is refused with
///    [`DeleteError::OutsideRoot`] and nothing is touched. The deletion then
///    works from a descriptor of the root opened with `O_NOFOLLOW` whose
///    `(st_dev, st_ino)` must still be the prepared root's, and opens the
///    entry by name relative to it with `O_NOFOLLOW | O_DIRECTORY`, so a
///    symlink swapped in after the check is refused too, never followed.
///    A regular file entry is refused (`ENOTDIR`).
/// 2. **No mount point inside.** Any mount point at or below the entry
///    ([`mount_points_inside`]: mountinfo and an `st_dev` walk) refuses the
///    whole removal with [`DeleteError::MountPoint`] before anything is
///    deleted.
/// 3. **Symlinks are never followed.** Every directory is opened relative to
///    its parent's descriptor with `openat(O_NOFOLLOW | O_DIRECTORY)`; a
///    symlink (to a file, a directory, itself, `..`, anything) fails that
///    open and is removed with `unlinkat` as a link: its target and the
///    target's content are untouched. Permission fixes use `fchmod` on an
///    opened directory descriptor or `fchmodat(AT_SYMLINK_NOFOLLOW)`, and only
///    for directories, never through a symlink.
/// 4. **Never leaves the file system.** Independently of (2), each directory
///    is compared, once opened, with the entry: same `st_dev` and same mount
///    id (`/proc/self/fdinfo`). A mount point that appears during the
///    deletion stops it with [`DeleteError::MountPoint`] before anything on
///    the other mount is touched (what was already deleted stays deleted).
/// 5. **Inside the entry, only what its owner could delete.** A root
///    controller empties an entry owned by another user on a thread with
///    that user's filesystem credentials ([`crate::creds`]); only the
///    entry's own name, in the root it owns, is removed as itself. Something
///    the owner could not delete (another user's directory inside) stops the
///    removal with an error and stays. Test
///    `inside_an_entry_root_deletes_only_what_its_owner_could`.
///
/// Permissions: when `EACCES` stops opening or emptying a directory (a
/// `0o500` or `0o000` directory, as git makes some object directories, when
/// not running as root), the directory concerned gets `u+rwx` and the
/// operation is retried once. The root itself is never chmod'ed.
///
/// Idempotent: an entry that does not exist, or vanishes during the
/// deletion, is already removed: `Ok`.
///
/// Limits: one open descriptor per directory level, so a tree nested deeper
/// than the descriptor limit fails with an I/O error (and is left partly
/// deleted, never anything outside it). Needs `/proc` (mountinfo, fdinfo,
/// and `/proc/self/fd/N` to list an opened directory).
pub fn delete_dir(root: &WorktreeRoot, dir: &Path) -> Result<(), DeleteError> {
    delete_dir_expecting(root, dir, None)
}

/// [`delete_dir`], of exactly the directory `expected` names by
/// `(st_dev, st_ino)`: once the entry is opened (relative to the root's
/// handle, without following a link), anything else there is refused with
/// [`DeleteError::Changed`] before anything is deleted, and the walk then
/// empties the directory through that very handle. What a rename swaps
/// into the name afterwards is at most an empty directory removed by name
/// (`rmdir` refuses one that holds anything).
pub fn delete_dir_expecting(
    root: &WorktreeRoot,
    dir: &Path,
    expected: Option<(u64, u64)>,
) -> Result<(), DeleteError> {
    let target = match root.check(dir) {
        PathCheck::Refused { why } => {
            return Err(DeleteError::OutsideRoot {
                path: dir.to_path_buf(),
                why,
            })
        }
        PathCheck::Inside { exists: false, .. } => return Ok(()),
        PathCheck::Inside { path, .. } => path,
    };
    let name = match target.file_name() {
        Some(name) => name.to_owned(),
        None => {
            return Err(DeleteError::OutsideRoot {
                path: dir.to_path_buf(),
                why: "no entry name".into(),
            })
        }
    };
    match mount_points_inside(&target) {
        Ok(mounts) => {
            if let Some(mount) = mounts.into_iter().next() {
                return Err(DeleteError::MountPoint {
                    path: target,
                    mount,
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DeleteError::Io {
                path: target,
                source,
            })
        }
    }
    delete_entry(root, &name, &target, expected)
}

/// The deletion proper, after [`delete_dir`]'s checks (guarantees 1, 3, 4;
/// 2 is `delete_dir`'s pre-check).
fn delete_entry(
    root: &WorktreeRoot,
    name: &OsStr,
    target: &Path,
    expected: Option<(u64, u64)>,
) -> Result<(), DeleteError> {
    let io_at = |path: &Path, e: io::Error| DeleteError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let root_fd = openat(AT_FDCWD, root.path(), dir_flags(), Mode::empty())
        .map_err(|e| io_at(root.path(), e.into()))?;
    let root_st = fstat(&root_fd).map_err(|e| io_at(root.path(), e.into()))?;
    if (root_st.st_dev, root_st.st_ino) != (root.dev(), root.ino()) {
        return Err(DeleteError::OutsideRoot {
            path: target.to_path_buf(),
            why: format!(
                "the worktree root {} was replaced since it was prepared",
                root.path().display()
            ),
        });
    }
    let root_fs = FsId::of(&root_fd).map_err(|e| io_at(root.path(), e))?;
    let entry_fd = match open_child(&root_fd, name, false).map_err(|e| io_at(target, e.into()))? {
        Child::Gone => return Ok(()),
        Child::Dir(fd) => fd,
        Child::NotDir => {
            let why = match fstatat(&root_fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK =>
                {
                    format!(
                        "symlink to {}",
                        readlinkat(&root_fd, name)
                            .map(|t| PathBuf::from(t).display().to_string())
                            .unwrap_or_else(|e| format!("<unreadable: {e}>"))
                    )
                }
                Ok(_) => {
                    return Err(io_at(target, io::Error::from(Errno::ENOTDIR)));
                }
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(io_at(target, e.into())),
            };
            return Err(DeleteError::OutsideRoot {
                path: target.to_path_buf(),
                why,
            });
        }
    };
    if let Some((dev, ino)) = expected {
        let st = fstat(&entry_fd).map_err(|e| io_at(target, e.into()))?;
        if (st.st_dev, st.st_ino) != (dev, ino) {
            return Err(DeleteError::Changed {
                path: target.to_path_buf(),
                why: format!(
                    "it is device {}, inode {}; the directory judged was device {dev}, inode {ino}",
                    st.st_dev, st.st_ino
                ),
            });
        }
    }
    if FsId::of(&entry_fd).map_err(|e| io_at(target, e))? != root_fs {
        return Err(DeleteError::MountPoint {
            path: target.to_path_buf(),
            mount: target.to_path_buf(),
        });
    }
    // Inside the entry, every unlink and chmod is the owner's: whatever
    // the owner (or anyone the owner let in) planted there can lead the
    // walk only where the owner could go. The entry's own name, in the
    // controller's directory, is the controller's to remove.
    let owner = fstat(&entry_fd)
        .map_err(|e| io_at(target, e.into()))?
        .st_uid;
    let who = crate::creds::who_for(owner, nix::unistd::geteuid().as_raw())
        .map_err(|e| io_at(target, io::Error::new(io::ErrorKind::PermissionDenied, e)))?;
    crate::creds::with_fs_creds(who.as_ref(), || remove_contents(entry_fd, target, root_fs))
        .map_err(|e| io_at(target, e))??;
    // The root is not ours to chmod: no permission fix here.
    unlink(&root_fd, name, UnlinkatFlags::RemoveDir, false).map_err(|e| io_at(target, e.into()))?;
    tracing::debug!("removed {}", target.display());
    Ok(())
}

/// One directory being emptied.
struct Level {
    fd: OwnedFd,
    path: PathBuf,
    /// Its name in the parent level.
    name: OsString,
    /// Entries still to remove, each with whether the listing said it is
    /// a directory.
    pending: Vec<(OsString, bool)>,
}

/// Empties the directory `top` (opened with [`dir_flags`]), depth first,
/// with an explicit stack; every directory must be on the file system and
/// mount `fs`.
fn remove_contents(top: OwnedFd, top_path: &Path, fs: FsId) -> Result<(), DeleteError> {
    let io_at = |path: &Path, e: io::Error| DeleteError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let pending = list(&top).map_err(|e| io_at(top_path, e))?;
    let mut stack = vec![Level {
        fd: top,
        path: top_path.to_path_buf(),
        name: OsString::new(),
        pending,
    }];
    while let Some(level) = stack.last_mut() {
        let Some((name, listed_as_dir)) = level.pending.pop() else {
            let done = stack.pop().expect("the stack is not empty");
            if let Some(parent) = stack.last() {
                drop(done.fd);
                unlink(&parent.fd, &done.name, UnlinkatFlags::RemoveDir, true)
                    .map_err(|e| io_at(&done.path, e.into()))?;
            }
            continue;
        };
        crate::crash_point!("remove.between_entries");
        if !listed_as_dir
            && unlink_non_dir(&level.fd, &name)
                .map_err(|e| io_at(&level.path.join(&name), e.into()))?
        {
            continue;
        }
        let path = level.path.join(&name);
        match open_child(&level.fd, &name, true).map_err(|e| io_at(&path, e.into()))? {
            Child::Gone => {}
            Child::NotDir => unlink(&level.fd, &name, UnlinkatFlags::NoRemoveDir, true)
                .map_err(|e| io_at(&path, e.into()))?,
            Child::Dir(fd) => {
                if FsId::of(&fd).map_err(|e| io_at(&path, e))? != fs {
                    return Err(DeleteError::MountPoint {
                        path: top_path.to_path_buf(),
                        mount: path,
                    });
                }
                let pending = list(&fd).map_err(|e| io_at(&path, e))?;
                stack.push(Level {
                    fd,
                    path,
                    name,
                    pending,
                });
            }
        }
    }
    Ok(())
}

/// Unlinks `name` in `parent` if it is not a directory: `Ok(true)` when it
/// is gone, `Ok(false)` when it is a directory (left untouched, for the
/// caller's checked walk). Most entries are files, listed as such: this
/// saves opening each one first. `unlinkat` never follows a symlink, and a
/// name listed as a file that has become a directory answers `EISDIR`.
fn unlink_non_dir(parent: &OwnedFd, name: &OsStr) -> Result<bool, Errno> {
    match unlink(parent, name, UnlinkatFlags::NoRemoveDir, true) {
        Ok(()) => Ok(true),
        Err(Errno::EISDIR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Open a directory for listing, never through a symlink (`O_NOFOLLOW`
/// on the last component; callers pass a single name or a canonical path).
pub(crate) fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
}

enum Child {
    Dir(OwnedFd),
    /// A symlink, a file, a socket, …: to be unlinked, never opened.
    NotDir,
    Gone,
}

/// Opens `name` in `parent` as a directory without following a symlink.
/// On `EACCES`, gives `u+rwx` first to `parent` (if `may_chmod_parent`;
/// search permission may be what is missing) and then to the child
/// directory itself, retrying after each.
fn open_child(parent: &OwnedFd, name: &OsStr, may_chmod_parent: bool) -> Result<Child, Errno> {
    let mut parent_tried = !may_chmod_parent;
    let mut child_tried = false;
    loop {
        match openat(parent, name, dir_flags(), Mode::empty()) {
            Ok(fd) => return Ok(Child::Dir(fd)),
            // ELOOP: a symlink under O_NOFOLLOW; ENOTDIR: not a directory
            // (or a symlink, on some kernels, under O_DIRECTORY).
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Ok(Child::NotDir),
            Err(Errno::ENOENT) => return Ok(Child::Gone),
            Err(Errno::EACCES) if !parent_tried => {
                parent_tried = true;
                add_owner_rwx(parent)?;
            }
            Err(Errno::EACCES) if !child_tried => {
                child_tried = true;
                if !add_owner_rwx_at(parent, name)? {
                    return Err(Errno::EACCES);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// `unlinkat`; `ENOENT` is success (already gone). On `EACCES`, gives the
/// parent `u+rwx` (if `may_chmod_parent`) and retries once.
fn unlink(
    parent: &OwnedFd,
    name: &OsStr,
    flag: UnlinkatFlags,
    may_chmod_parent: bool,
) -> Result<(), Errno> {
    let again = match unlinkat(parent, name, flag) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EACCES) if may_chmod_parent => {
            if !add_owner_rwx(parent)? {
                return Err(Errno::EACCES);
            }
            unlinkat(parent, name, flag)
        }
        Err(e) => return Err(e),
    };
    match again {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `u+rwx` on an opened directory (the descriptor, not a path: nothing to
/// follow). `Ok(false)`: it already had them.
fn add_owner_rwx(dir: &OwnedFd) -> Result<bool, Errno> {
    let st = fstat(dir)?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    if mode.contains(Mode::S_IRWXU) {
        return Ok(false);
    }
    fchmod(dir, mode | Mode::S_IRWXU).map(|()| true)
}

/// `u+rwx` on the directory `name` in `parent`, only if it is a directory,
/// and with `AT_SYMLINK_NOFOLLOW` (glibc refuses a symlink with
/// `EOPNOTSUPP` rather than following it). `Ok(false)`: nothing changed.
fn add_owner_rwx_at(parent: &OwnedFd, name: &OsStr) -> Result<bool, Errno> {
    let st = fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Ok(false);
    }
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    if mode.contains(Mode::S_IRWXU) {
        return Ok(false);
    }
    fchmodat(
        parent,
        name,
        mode | Mode::S_IRWXU,
        FchmodatFlags::NoFollowSymlink,
    )
    .map(|()| true)
}

/// The names in an opened directory, sorted (the walk pops from the end, so
/// it removes entries in descending name order, reproducibly).
/// `/proc/self/fd/N` resolves to the very directory the descriptor holds
/// (not to a path looked up again), so this lists what was opened with
/// `O_NOFOLLOW`.
/// Each name comes with whether the listing (`d_type`) says it is a
/// directory: a hint that saves a system call per file, never trusted for
/// safety (see [`remove_contents`]).
fn list(dir: &OwnedFd) -> io::Result<Vec<(OsString, bool)>> {
    let mut names = fs::read_dir(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()))?
        .map(|entry| {
            entry.map(|e| {
                // Unknown type: assume a directory, the path that checks.
                let is_dir = e.file_type().map_or(true, |t| t.is_dir());
                (e.file_name(), is_dir)
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(names)
}

/// Which file system and which mount a directory is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsId {
    dev: u64,
    /// From `/proc/self/fdinfo/N` (Linux 3.15+); distinguishes a bind mount
    /// of the same device. `None` only on kernels without it.
    mnt_id: Option<u64>,
}

impl FsId {
    pub(crate) fn of(fd: &OwnedFd) -> io::Result<FsId> {
        let st = fstat(fd)?;
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
        let mnt_id = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok());
        Ok(FsId {
            dev: st.st_dev,
            mnt_id,
        })
    }
}

/// `dir` absolute and lexically normalized, with its parent canonicalized.
fn resolve_parent(dir: &Path) -> io::Result<PathBuf> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let normalized = normalize_lexically(&absolute);
    match (normalized.parent(), normalized.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
        _ => Ok(normalized),
    }
}

/// The mount points (field 5) of `/proc/self/mountinfo`, octal escapes
/// decoded.
fn parse_mountinfo(text: &[u8]) -> Vec<PathBuf> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .filter(|field| field.starts_with(b"/"))
        .map(|field| PathBuf::from(OsString::from_vec(crate::mounts::unescape_octal(field))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    use std::process::Command;

    /// `<tmp>/root` prepared, `<tmp>/outside` with precious content, and
    /// `<root>/wt1` with a file.
    struct Fixture {
        t: tempfile::TempDir,
        root: WorktreeRoot,
    }

    impl Fixture {
        fn new() -> Fixture {
            let t = tempfile::tempdir().unwrap();
            let root = WorktreeRoot::prepare(&t.path().join("root")).unwrap();
            let outside = t.path().join("outside");
            fs::create_dir_all(outside.join("sub")).unwrap();
            fs::write(outside.join("precious"), "keep").unwrap();
            fs::write(outside.join("sub/deep"), "keep").unwrap();
            fs::create_dir_all(root.path().join("wt1/a/b")).unwrap();
            fs::write(root.path().join("wt1/a/b/file"), "x").unwrap();
            Fixture { t, root }
        }
        fn wt1(&self) -> PathBuf {
            self.root.path().join("wt1")
        }
        fn outside(&self) -> PathBuf {
            self.t.path().join("outside")
        }
        fn assert_outside_intact(&self) {
            let o = self.outside();
            assert_eq!(fs::read_to_string(o.join("precious")).unwrap(), "keep");
            assert_eq!(fs::read_to_string(o.join("sub/deep")).unwrap(), "keep");
        }
    }

    fn gone(p: &Path) -> bool {
        matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// A mount made by a test, unmounted when dropped.
    struct Mount(PathBuf);

    impl Mount {
        /// `Err` is the reason mounting is impossible here.
        fn new(args: &[&OsStr], at: &Path) -> Result<Mount, String> {
            let out = Command::new("mount")
                .args(args)
                .arg(at)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if out.status.success() {
                Ok(Mount(at.to_path_buf()))
            } else {
                Err(format!(
                    "mount {:?} {} failed: {}",
                    args,
                    at.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
        fn tmpfs(at: &Path) -> Result<Mount, String> {
            Mount::new(&["-t".as_ref(), "tmpfs".as_ref(), "tmpfs".as_ref()], at)
        }
        fn bind(source: &Path, at: &Path) -> Result<Mount, String> {
            Mount::new(&["--bind".as_ref(), source.as_os_str()], at)
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let ok = Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }

    /// Mounting needs privileges the sandbox may lack: the mount tests skip
    /// with the reason, unless BOO_REQUIRE_MOUNT_TESTS is set.
    fn mount_or_skip(m: Result<Mount, String>, test: &str) -> Option<Mount> {
        match m {
            Ok(m) => Some(m),
            Err(why) if std::env::var_os("BOO_REQUIRE_MOUNT_TESTS").is_none() => {
                eprintln!("SKIPPED {test}: {why}");
                None
            }
            Err(why) => panic!("{test}: {why}"),
        }
    }

    #[test]
    fn remove_dir_removes_the_entry_and_everything_below() {
        let f = Fixture::new();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        assert!(f.root.path().is_dir());
    }

    #[test]
    fn remove_dir_never_follows_symlink_to_file_outside_root() {
        let f = Fixture::new();
        symlink(f.outside().join("precious"), f.wt1().join("abs")).unwrap();
        symlink("../../../outside/precious", f.wt1().join("a/rel")).unwrap();
        symlink(f.outside().join("precious"), f.wt1().join("a/b/deep")).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        f.assert_outside_intact();
    }

    #[test]
    fn remove_dir_never_follows_symlink_to_directory_outside_root() {
        let f = Fixture::new();
        symlink(f.outside(), f.wt1().join("abs")).unwrap();
        symlink("../../../outside", f.wt1().join("a/rel")).unwrap();
        symlink(f.outside().join("sub"), f.wt1().join("a/b/sub")).unwrap();
        // To the temporary directory holding both the root and `outside`
        // (never to `/`: a regression would then delete the host).
        symlink("../../../..", f.wt1().join("a/b/top")).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        assert!(f.outside().join("sub").is_dir());
        f.assert_outside_intact();
    }

    #[test]
    fn the_file_fast_path_unlinks_exactly_the_entry_and_never_a_directory() {
        let f = Fixture::new();
        let wt = f.wt1();
        fs::write(wt.join("file"), "x").unwrap();
        symlink(f.outside(), wt.join("link-to-dir")).unwrap();
        symlink(f.outside().join("precious"), wt.join("link-to-file")).unwrap();
        fs::write(wt.join("sibling"), "keep").unwrap();
        let dir = openat(AT_FDCWD, &wt, dir_flags(), Mode::empty()).unwrap();
        for name in ["file", "link-to-dir", "link-to-file"] {
            assert_eq!(unlink_non_dir(&dir, OsStr::new(name)), Ok(true), "{name}");
            assert!(gone(&wt.join(name)), "{name}");
        }
        // A directory (say, one that replaced a file after the listing) is
        // left whole for the checked walk.
        fs::create_dir(wt.join("empty")).unwrap();
        for name in ["a", "empty"] {
            assert_eq!(unlink_non_dir(&dir, OsStr::new(name)), Ok(false), "{name}");
            assert!(wt.join(name).is_dir(), "{name}");
        }
        assert_eq!(fs::read_to_string(wt.join("a/b/file")).unwrap(), "x");
        // Already gone is success; nothing else was touched.
        assert_eq!(unlink_non_dir(&dir, OsStr::new("file")), Ok(true));
        assert_eq!(fs::read_to_string(wt.join("sibling")).unwrap(), "keep");
        f.assert_outside_intact();
        assert!(f.outside().join("sub").is_dir());
    }

    #[test]
    fn remove_dir_handles_symlink_loop_inside() {
        let f = Fixture::new();
        symlink("self", f.wt1().join("self")).unwrap();
        symlink("b", f.wt1().join("a/b/ping")).unwrap();
        symlink("ping", f.wt1().join("a/b/pong")).unwrap();
        symlink("..", f.wt1().join("up")).unwrap();
        symlink(f.wt1(), f.wt1().join("a/itself")).unwrap();
        symlink(f.root.path(), f.wt1().join("a/b/root")).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        assert!(f.root.path().is_dir());
        f.assert_outside_intact();
    }

    #[test]
    fn remove_dir_leaves_siblings_untouched() {
        let f = Fixture::new();
        fs::create_dir_all(f.root.path().join("wt2/src")).unwrap();
        fs::write(f.root.path().join("wt2/src/work"), "keep").unwrap();
        fs::write(f.root.path().join("wt10"), "keep").unwrap();
        // Links from wt1 to its siblings and to its parent.
        symlink(f.root.path().join("wt2"), f.wt1().join("to-wt2")).unwrap();
        symlink("../wt2/src", f.wt1().join("a/b/rel-wt2")).unwrap();
        symlink("..", f.wt1().join("parent")).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        assert_eq!(
            fs::read_to_string(f.root.path().join("wt2/src/work")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs::read_to_string(f.root.path().join("wt10")).unwrap(),
            "keep"
        );
        f.assert_outside_intact();
    }

    #[test]
    fn remove_dir_refuses_path_outside_root() {
        let f = Fixture::new();
        let cases = [
            f.outside(),
            f.root.path().join("../outside"),
            f.root.path().join("wt1/../../outside"),
            f.root.path().to_path_buf(),
            f.root.path().join("wt1/a"),
            PathBuf::from("wt1"),
            PathBuf::from(""),
        ];
        for p in cases {
            match delete_dir(&f.root, &p) {
                Err(DeleteError::OutsideRoot { .. }) => {}
                other => panic!("{}: expected OutsideRoot, got {other:?}", p.display()),
            }
        }
        f.assert_outside_intact();
        assert!(f.wt1().join("a/b/file").exists());
    }

    #[test]
    fn remove_dir_refuses_symlink_entry() {
        let f = Fixture::new();
        symlink(f.outside(), f.root.path().join("evil")).unwrap();
        symlink(f.wt1(), f.root.path().join("alias")).unwrap();
        for name in ["evil", "alias"] {
            let p = f.root.path().join(name);
            match delete_dir(&f.root, &p) {
                Err(DeleteError::OutsideRoot { why, .. }) => {
                    assert!(why.starts_with("symlink to "), "{why}")
                }
                other => panic!("{name}: expected OutsideRoot, got {other:?}"),
            }
            assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        }
        f.assert_outside_intact();
        assert!(f.wt1().join("a/b/file").exists());
    }

    #[test]
    fn delete_entry_refuses_symlink_swapped_in_after_check() {
        // The walk itself, past `check`: the entry is opened with O_NOFOLLOW.
        let f = Fixture::new();
        let p = f.root.path().join("evil");
        symlink(f.outside(), &p).unwrap();
        match delete_entry(&f.root, OsStr::new("evil"), &p, None) {
            Err(DeleteError::OutsideRoot { why, .. }) => {
                assert_eq!(why, format!("symlink to {}", f.outside().display()))
            }
            other => panic!("expected OutsideRoot, got {other:?}"),
        }
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        f.assert_outside_intact();
    }

    #[test]
    fn remove_dir_refuses_file_entry() {
        let f = Fixture::new();
        let p = f.root.path().join("stray");
        fs::write(&p, "x").unwrap();
        match delete_dir(&f.root, &p) {
            Err(DeleteError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(nix::libc::ENOTDIR))
            }
            other => panic!("expected Io(ENOTDIR), got {other:?}"),
        }
        assert!(p.exists());
    }

    #[test]
    fn remove_dir_refuses_replaced_root() {
        let t = tempfile::tempdir().unwrap();
        let root = WorktreeRoot::prepare(&t.path().join("root")).unwrap();
        fs::rename(root.path(), t.path().join("old-root")).unwrap();
        fs::create_dir_all(t.path().join("root/wt1")).unwrap();
        match delete_dir(&root, &root.path().join("wt1")) {
            Err(DeleteError::OutsideRoot { why, .. }) => assert!(why.contains("replaced"), "{why}"),
            other => panic!("expected OutsideRoot, got {other:?}"),
        }
        assert!(t.path().join("root/wt1").is_dir());
    }

    #[test]
    fn remove_dir_is_idempotent_on_missing_dir() {
        let f = Fixture::new();
        delete_dir(&f.root, &f.root.path().join("never-existed")).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
    }

    /// A tree with read-only and unreadable directories and files, and a
    /// symlink from a read-only directory to a directory outside; created
    /// by `build_read_only_tree`, then locked by `lock_read_only_tree`.
    fn build_read_only_tree(f: &Fixture) {
        let wt = f.wt1();
        fs::create_dir_all(wt.join("objects/ab/locked")).unwrap();
        fs::create_dir_all(wt.join("noexec/inner")).unwrap();
        fs::write(wt.join("objects/ab/cdef"), "obj").unwrap();
        fs::write(wt.join("objects/ab/locked/secret"), "s").unwrap();
        fs::write(wt.join("noexec/inner/f"), "f").unwrap();
        symlink(f.outside(), wt.join("objects/ab/out")).unwrap();
    }

    fn lock_read_only_tree(f: &Fixture) {
        let wt = f.wt1();
        let chmod =
            |p: PathBuf, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        chmod(wt.join("objects/ab/cdef"), 0o400);
        chmod(wt.join("objects/ab/locked/secret"), 0o000);
        chmod(wt.join("objects/ab/locked"), 0o000);
        chmod(wt.join("objects/ab"), 0o500);
        chmod(wt.join("objects"), 0o500);
        chmod(wt.join("noexec"), 0o600);
        chmod(wt.clone(), 0o500);
        chmod(f.outside(), 0o500);
    }

    #[test]
    fn remove_dir_removes_read_only_nested_dirs() {
        let f = Fixture::new();
        build_read_only_tree(&f);
        lock_read_only_tree(&f);
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        f.assert_outside_intact();
        assert_eq!(fs::metadata(f.outside()).unwrap().mode() & 0o777, 0o500);
    }

    /// A root controller deletes inside an entry with its owner's
    /// credentials: the owner's own read-only directories go (the owner may
    /// chmod them), another user's directory planted inside does not (the
    /// owner could not delete it either), and the entry's name stays
    /// until it is empty.
    #[test]
    fn inside_an_entry_root_deletes_only_what_its_owner_could() {
        use crate::testing::{local_user, MALLORY, OWNER};
        let (owner, mallory) = (local_user(OWNER), local_user(MALLORY));
        let f = Fixture::new();
        fs::set_permissions(f.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(f.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        build_read_only_tree(&f);
        for entry in walkdir::WalkDir::new(f.wt1()) {
            lchown(entry.unwrap().path(), Some(owner.uid), Some(owner.gid)).unwrap();
        }
        lock_read_only_tree(&f);
        // Owned by the owner, so that only the owner's credentials delete
        // it: root's would take it whatever its owner.
        fs::set_permissions(f.wt1(), fs::Permissions::from_mode(0o755)).unwrap();
        let theirs = f.wt1().join("zz-mallory");
        fs::create_dir(&theirs).unwrap();
        fs::write(theirs.join("kept"), "mallory's").unwrap();
        for p in [&theirs, &theirs.join("kept")] {
            lchown(p, Some(mallory.uid), Some(mallory.gid)).unwrap();
        }
        let e = delete_dir(&f.root, &f.wt1()).unwrap_err();
        assert!(
            e.to_string().contains("zz-mallory/kept") && e.to_string().contains("denied"),
            "{e}"
        );
        assert_eq!(
            fs::read_to_string(theirs.join("kept")).unwrap(),
            "mallory's"
        );
        f.assert_outside_intact();
        // Once mallory's directory is gone, the same removal finishes: what
        // the owner could delete, it did delete (the chmod path included).
        fs::remove_dir_all(&theirs).unwrap();
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
        f.assert_outside_intact();
    }

    /// As root the permission bits never stop anything; run the same removal
    /// as `nobody` in a child process so that the chmod-and-retry path runs.
    #[test]
    fn remove_dir_removes_read_only_nested_dirs_as_unprivileged_user() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            // Not root: remove_dir_removes_read_only_nested_dirs already
            // runs unprivileged.
            return;
        }
        let f = Fixture::new();
        fs::set_permissions(f.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = 65534;
        build_read_only_tree(&f);
        for entry in walkdir::WalkDir::new(f.t.path()).min_depth(1) {
            lchown(entry.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
        }
        lock_read_only_tree(&f);
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "act::trash::delete::tests::unprivileged_removal_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BOO_TEST_UNPRIVILEGED_ROOT", f.root.path())
            .uid(nobody)
            .gid(nobody)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed: {log}");
        assert!(log.contains("unprivileged removal done"), "{log}");
        assert!(gone(&f.wt1()), "{log}");
        f.assert_outside_intact();
        assert_eq!(fs::metadata(f.outside()).unwrap().mode() & 0o777, 0o500);
    }

    /// Runs only inside the child process of the test above.
    #[test]
    fn unprivileged_removal_child() {
        let Some(root) = std::env::var_os("BOO_TEST_UNPRIVILEGED_ROOT") else {
            return;
        };
        assert!(!nix::unistd::geteuid().is_root());
        let root = WorktreeRoot::prepare(Path::new(&root)).unwrap();
        delete_dir(&root, &root.path().join("wt1")).unwrap();
        println!("unprivileged removal done");
    }

    #[test]
    fn unescape_octal_decodes_mountinfo_escapes() {
        assert_eq!(
            crate::mounts::unescape_octal(br"/tmp/a\040b\011c\134d"),
            b"/tmp/a b\tc\\d"
        );
        assert_eq!(crate::mounts::unescape_octal(br"/x\08"), br"/x\08");
        assert_eq!(crate::mounts::unescape_octal(br"/x\"), br"/x\");
        let info = b"27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                     42 27 0:39 / /tmp/w\\040t/m rw,relatime - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(info),
            vec![PathBuf::from("/"), PathBuf::from("/tmp/w t/m")]
        );
    }

    #[test]
    fn mount_points_inside_does_not_follow_symlinks() {
        let f = Fixture::new();
        // Followed, these would reach /proc, /sys, /dev: other file systems.
        symlink("/", f.wt1().join("slash")).unwrap();
        symlink("/proc", f.wt1().join("a/proc")).unwrap();
        assert_eq!(
            mount_points_inside(&f.wt1()).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn mount_points_inside_finds_tmpfs_and_bind_mounts() {
        let f = Fixture::new();
        let wt = f.wt1();
        fs::create_dir_all(wt.join("tmp fs")).unwrap();
        fs::create_dir_all(wt.join("a/bound")).unwrap();
        let Some(_m1) = mount_or_skip(Mount::tmpfs(&wt.join("tmp fs")), "mount_points_inside")
        else {
            return;
        };
        let _m2 = Mount::bind(&f.outside(), &wt.join("a/bound")).unwrap();
        let found = mount_points_inside(&wt).unwrap();
        assert_eq!(found, vec![wt.join("a/bound"), wt.join("tmp fs")]);
        // Through a non-canonical spelling too.
        let found = mount_points_inside(&f.root.path().join("x/../wt1")).unwrap();
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn remove_dir_refuses_mount_point_inside() {
        let f = Fixture::new();
        let mnt = f.wt1().join("a/mnt");
        fs::create_dir(&mnt).unwrap();
        let Some(m) = mount_or_skip(Mount::tmpfs(&mnt), "remove_dir_refuses_mount_point_inside")
        else {
            return;
        };
        fs::write(mnt.join("precious"), "keep").unwrap();
        // The walk removes `a/zz` before it reaches `a/mnt` (descending
        // order): only the pre-check keeps it.
        fs::write(f.wt1().join("a/zz"), "x").unwrap();
        match delete_dir(&f.root, &f.wt1()) {
            Err(DeleteError::MountPoint { mount, .. }) => assert_eq!(mount, mnt),
            other => panic!("expected MountPoint, got {other:?}"),
        }
        // Refused before anything was deleted.
        assert_eq!(fs::read_to_string(mnt.join("precious")).unwrap(), "keep");
        assert!(f.wt1().join("a/zz").exists());
        assert!(f.wt1().join("a/b/file").exists());
        drop(m);
        delete_dir(&f.root, &f.wt1()).unwrap();
        assert!(gone(&f.wt1()));
    }

    #[test]
    fn remove_dir_refuses_bind_mount_on_same_device() {
        let f = Fixture::new();
        let at = f.wt1().join("a/b/bound");
        fs::create_dir(&at).unwrap();
        let Some(_m) = mount_or_skip(
            Mount::bind(&f.outside(), &at),
            "remove_dir_refuses_bind_mount_on_same_device",
        ) else {
            return;
        };
        // Same device: only mountinfo (and the mount id) can tell.
        assert_eq!(
            fs::metadata(&at).unwrap().dev(),
            fs::metadata(f.wt1()).unwrap().dev()
        );
        match delete_dir(&f.root, &f.wt1()) {
            Err(DeleteError::MountPoint { mount, .. }) => assert_eq!(mount, at),
            other => panic!("expected MountPoint, got {other:?}"),
        }
        f.assert_outside_intact();
    }

    #[test]
    fn remove_dir_refuses_entry_that_is_a_mount_point() {
        let f = Fixture::new();
        let Some(_m) = mount_or_skip(
            Mount::tmpfs(&f.wt1()),
            "remove_dir_refuses_entry_that_is_a_mount_point",
        ) else {
            return;
        };
        fs::write(f.wt1().join("precious"), "keep").unwrap();
        match delete_dir(&f.root, &f.wt1()) {
            Err(DeleteError::MountPoint { mount, .. }) => assert_eq!(mount, f.wt1()),
            other => panic!("expected MountPoint, got {other:?}"),
        }
        assert!(f.wt1().join("precious").exists());
    }

    /// Guarantee 4 without the pre-check of guarantee 2: a mount that
    /// appears after `mount_points_inside` ran still stops the walk before
    /// anything on it is touched, for another device and for a bind mount of
    /// the same device.
    #[test]
    fn removal_walk_never_leaves_the_file_system() {
        let f = Fixture::new();
        let mnt = f.wt1().join("a/mnt");
        fs::create_dir(&mnt).unwrap();
        let Some(m) = mount_or_skip(
            Mount::tmpfs(&mnt),
            "removal_walk_never_leaves_the_file_system",
        ) else {
            return;
        };
        fs::write(mnt.join("precious"), "keep").unwrap();
        match delete_entry(&f.root, OsStr::new("wt1"), &f.wt1(), None) {
            Err(DeleteError::MountPoint { mount, .. }) => assert_eq!(mount, mnt),
            other => panic!("expected MountPoint, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(mnt.join("precious")).unwrap(), "keep");
        drop(m);

        let _b = Mount::bind(&f.outside(), &mnt).unwrap();
        match delete_entry(&f.root, OsStr::new("wt1"), &f.wt1(), None) {
            Err(DeleteError::MountPoint { mount, .. }) => assert_eq!(mount, mnt),
            other => panic!("expected MountPoint, got {other:?}"),
        }
        f.assert_outside_intact();
    }
}
