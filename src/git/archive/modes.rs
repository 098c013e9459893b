//! Permission bits git does not keep: an archive records them
//! ([`super::records::ModeRecord`]) and a restore puts them back.
//!
//! Git stores a file as `644` or `755` and a directory not at all, so a
//! `.env` at `600` or a `700` directory would come back readable by
//! everyone. The archive records each file of its working-tree and
//! untracked parts, and each directory above one (and the worktree's
//! own), whose bits are not what git writes (`644`, `755`; `755` for a
//! directory); the restore sets exactly those bits again.
//!
//! # Guarantees
//!
//! 1. **Never wider than archived.** What was recorded comes back exactly
//!    (permission bits only: no set-id or sticky bit is recorded or set).
//!    Test: `restore.rs` `modes_git_does_not_keep_come_back_exactly`,
//!    `tests/archives.rs` `an_owners_secrets_come_back_with_their_modes`.
//! 2. **Through handles, as the owner, never through a symlink.** Each
//!    path is opened component by component from the restored worktree's
//!    directory with `O_NOFOLLOW`, its type checked on the handle, and
//!    the bits set with `fchmod` on it, with the filesystem credentials
//!    of the user git ran as: a symlink planted on the way is refused,
//!    and nothing outside what the owner could change is reachable.
//!    Test: `a_symlink_where_a_recorded_path_was_is_not_followed`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};

use super::super::mode::{EXEC, REGULAR};
use super::super::paths::join_rel;
use super::records::ModeRecord;

/// Why recorded permission bits could not be set: for one path (kept
/// with it in what [`apply`] returns, the rest are still set), or for
/// the whole pass. Typed so that a caller can tell a planted symlink or
/// a changed type from the system refusing, and the errno or I/O error
/// stays with it as its source.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("not a plain relative path")]
    NotPlain,
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: Errno },
    /// The type the record names is not what is there now.
    #[error("not a {} any more", type_named(.dir))]
    Changed { dir: bool },
    /// The handle of the restored worktree's directory could not be
    /// duplicated.
    #[error(transparent)]
    Dup(std::io::Error),
    #[error(transparent)]
    Stat(Errno),
    #[error(transparent)]
    Chmod(Errno),
    #[error("cannot act as the owner: {source}")]
    Owner { source: std::io::Error },
}

fn type_named(dir: &bool) -> &'static str {
    if *dir {
        "directory"
    } else {
        "regular file"
    }
}

/// What git writes for a file of `git_mode`, or for a directory.
fn git_default(git_mode: Option<u32>) -> u32 {
    match git_mode {
        Some(EXEC) => 0o755,
        Some(_) => 0o644,
        None => 0o755,
    }
}

/// The directories above `rel` (`a/b/c` → `a/b`, `a`), nearest first.
fn parents(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = rel.len();
    std::iter::from_fn(move || {
        let cut = rel[..end].iter().rposition(|b| *b == b'/')?;
        end = cut;
        Some(&rel[..cut])
    })
}

/// The records of every file of `files` (path relative to `workdir`, and
/// the mode git stores it with) and of every directory above one, the
/// worktree's own included, whose permission bits differ from what git
/// writes. Symlinks, gitlinks and anything no longer there are skipped.
pub(super) fn odd_modes(
    workdir: &Path,
    files: impl IntoIterator<Item = (Vec<u8>, u32)>,
) -> Vec<ModeRecord> {
    let mut out = Vec::new();
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    dirs.insert(Vec::new());
    for (rel, git_mode) in files {
        for p in parents(&rel) {
            if !dirs.insert(p.to_vec()) {
                break;
            }
        }
        if git_mode != EXEC && git_mode != REGULAR {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(join_rel(workdir, &rel)) else {
            continue;
        };
        let bits = meta.permissions().mode() & 0o777;
        if meta.is_file() && bits != git_default(Some(git_mode)) {
            out.push(ModeRecord {
                path: rel,
                mode: bits,
                dir: false,
            });
        }
    }
    for rel in dirs {
        let Ok(meta) = fs::symlink_metadata(join_rel(workdir, &rel)) else {
            continue;
        };
        let bits = meta.permissions().mode() & 0o777;
        if meta.is_dir() && bits != git_default(None) {
            out.push(ModeRecord {
                path: rel,
                mode: bits,
                dir: true,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Opens `rel` below the directory `top` without following a symlink at
/// any step; `dir`: it must be a directory, else a regular file.
fn open_below(top: &OwnedFd, rel: &[u8], dir: bool) -> Result<OwnedFd, ModeError> {
    let names: Vec<&[u8]> = rel
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let plain = |c: &[u8]| c != b"." && c != b"..";
    if !names.iter().all(|c| plain(c)) {
        return Err(ModeError::NotPlain);
    }
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut at = top.try_clone().map_err(ModeError::Dup)?;
    for (i, c) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let flags = if last && !dir {
            // Non-blocking: a fifo put there since must not hang the open.
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC
        } else {
            dir_flags
        };
        let name = OsStr::from_bytes(c);
        at = openat(at.as_fd(), name, flags, Mode::empty()).map_err(|source| ModeError::Open {
            path: PathBuf::from(name),
            source,
        })?;
    }
    let st = fstat(at.as_fd()).map_err(ModeError::Stat)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let want = if dir { SFlag::S_IFDIR } else { SFlag::S_IFREG };
    if kind != want {
        return Err(ModeError::Changed { dir });
    }
    Ok(at)
}

/// Sets each of `modes` below `to`: files first, then directories from
/// the deepest up (a directory made read-only last cannot stop the rest).
/// Run with the filesystem credentials of `who`. Returns each path that
/// could not be set, with why.
pub(crate) fn apply(
    to: &Path,
    modes: &[ModeRecord],
    who: Option<&crate::creds::RunAs>,
) -> Result<Vec<(String, ModeError)>, ModeError> {
    let mut order: Vec<&ModeRecord> = modes.iter().collect();
    order.sort_by_key(|m| {
        (
            m.dir,
            std::cmp::Reverse(m.path.iter().filter(|b| **b == b'/').count() + m.path.len().min(1)),
        )
    });
    crate::creds::with_fs_creds(who, || {
        let top = openat(
            AT_FDCWD,
            to,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| ModeError::Open {
            path: to.to_path_buf(),
            source,
        })?;
        let mut failed = Vec::new();
        for m in order {
            let set = open_below(&top, &m.path, m.dir).and_then(|fd| {
                fchmod(fd.as_fd(), Mode::from_bits_truncate(m.mode)).map_err(ModeError::Chmod)
            });
            if let Err(why) = set {
                failed.push((String::from_utf8_lossy(&m.path).into_owned(), why));
            }
        }
        Ok(failed)
    })
    .map_err(|source| ModeError::Owner { source })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bits(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_symlink_where_a_recorded_path_was_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("x"), "x\n").unwrap();
        fs::write(victim.join("f"), "f\n").unwrap();
        let to = t.path().join("to");
        fs::create_dir_all(to.join("real")).unwrap();
        fs::write(to.join("real/secret"), "s\n").unwrap();
        symlink(victim.join("f"), to.join("link")).unwrap();
        symlink(&victim, to.join("d")).unwrap();
        let before: Vec<u32> = ["", "x", "f"]
            .iter()
            .map(|r| bits(&victim.join(r)))
            .collect();
        let rec = |p: &str, mode, dir| ModeRecord {
            path: p.as_bytes().to_vec(),
            mode,
            dir,
        };
        let failed = apply(
            &to,
            &[
                rec("link", 0o600, false),
                rec("d/x", 0o600, false),
                rec("d", 0o700, true),
                rec("real/../d/x", 0o600, false),
                rec("real/secret", 0o600, false),
                rec("real", 0o700, true),
            ],
            None,
        )
        .unwrap();
        let after: Vec<u32> = ["", "x", "f"]
            .iter()
            .map(|r| bits(&victim.join(r)))
            .collect();
        assert_eq!(after, before, "nothing through a link changed");
        let mut names: Vec<&str> = failed.iter().map(|(p, _)| p.as_str()).collect();
        names.sort();
        assert_eq!(names, ["d", "d/x", "link", "real/../d/x"], "{failed:?}");
        // What is there is set; a file is set before its directory closes.
        assert_eq!(bits(&to.join("real/secret")), 0o600);
        assert_eq!(bits(&to.join("real")), 0o700);
    }

    #[test]
    fn parents_are_listed_nearest_first() {
        let p: Vec<&[u8]> = parents(b"a/b/c").collect();
        assert_eq!(p, [b"a/b".as_slice(), b"a".as_slice()]);
        assert_eq!(parents(b"top").count(), 0);
    }
}
