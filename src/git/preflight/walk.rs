//! The controller's own walk of the worktree: what git's listing may
//! not show (precious ignored files, nested repositories).

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, Mode, SFlag};

use globset::GlobSet;

use crate::git::paths::rel_str;
use crate::git::scan::is_precious;
use crate::git::status::GitStatus;
use crate::risk::{sample, AtRisk};

use super::Walked;

/// Walks the whole worktree without following symlinks: nested
/// repositories that are not submodules (untracked, ignored or inside
/// tracked directories), ignored files that are precious, and anything
/// that cannot be read. Submodules are git's business (status looks into
/// them); a nested repository's insides are its own work and are not
/// walked further.
///
/// Each directory is read once, and what it holds is told by the type
/// the directory listing gives, without a `stat` per entry; files are
/// looked at one by one only where git reported an ignored file, because
/// only an ignored file can be precious.
///
/// Every directory is opened by name relative to its parent's handle with
/// `O_NOFOLLOW | O_DIRECTORY` (the worktree itself by its path, also with
/// `O_NOFOLLOW`): a directory the owner swaps for a symlink while the walk
/// runs is never followed out of the worktree, and shows as unreadable
/// (the tree changed under the walk; the next pass judges it again).
pub(crate) fn walk(
    dir: &Path,
    s: &GitStatus,
    gitlinks: &HashSet<Vec<u8>>,
    precious: &GlobSet,
) -> Walked {
    let look = Lookups::new(s, gitlinks, precious);
    let mut w = Walked::default();
    let mut stack: Vec<Frame> = vec![Frame {
        parent: None,
        path: dir.to_path_buf(),
        rel: Vec::new(),
        ignored_dir: None,
    }];
    while let Some(frame) = stack.pop() {
        let Some((handle, entries)) = listing(&frame, &mut w) else {
            continue;
        };
        let files_matter = frame.ignored_dir.is_some() || look.holds_ignored.contains(&frame.rel);
        for e in entries {
            visit(e, &frame, &handle, files_matter, &look, &mut stack, &mut w);
        }
    }
    w
}

/// One directory the walk has yet to read.
pub(super) struct Frame {
    /// The handle of the directory that holds it; `None` for the worktree.
    /// Shared by its siblings, so that only the directories on the way
    /// down hold a descriptor.
    parent: Option<Rc<Dir>>,
    /// For messages only: it is opened through `parent`, never by path.
    path: PathBuf,
    /// Relative to the worktree; empty for the worktree itself.
    rel: Vec<u8>,
    /// Inside an ignored directory whose name is precious: Some(precious?).
    ignored_dir: Option<bool>,
}

impl Frame {
    fn name(&self) -> &[u8] {
        match self.rel.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.rel[i + 1..],
            None => &self.rel,
        }
    }

    /// Opens the directory with `flags`, never through a symlink.
    fn open(&self, flags: OFlag) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match &self.parent {
            None => openat(AT_FDCWD, &self.path, flags, Mode::empty()),
            Some(p) => openat(
                p.as_fd(),
                std::ffi::OsStr::from_bytes(self.name()),
                flags,
                Mode::empty(),
            ),
        }
    }
}

/// One name a directory listing gave, with its type when the listing
/// told it.
pub(super) struct Entry {
    name: OsString,
    kind: Option<Type>,
}

/// What git's status says is ignored, and the submodules, indexed once so
/// that each entry of the walk is a lookup.
pub(super) struct Lookups<'a> {
    ignored_files: HashSet<&'a [u8]>,
    /// The directories that directly hold an ignored file: only there do
    /// files need a look.
    holds_ignored: HashSet<Vec<u8>>,
    /// An ignored directory, and whether its own name is precious (then
    /// everything in it is).
    ignored_dirs: std::collections::HashMap<&'a [u8], bool>,
    gitlinks: &'a HashSet<Vec<u8>>,
    precious: &'a GlobSet,
}

impl<'a> Lookups<'a> {
    fn new(s: &'a GitStatus, gitlinks: &'a HashSet<Vec<u8>>, precious: &'a GlobSet) -> Self {
        let ignored_files: HashSet<&[u8]> = s
            .ignored
            .iter()
            .filter(|p| !p.ends_with(b"/"))
            .map(|p| p.as_slice())
            .collect();
        let parent = |p: &[u8]| -> Vec<u8> {
            match p.iter().rposition(|b| *b == b'/') {
                Some(i) => p[..i].to_vec(),
                None => Vec::new(),
            }
        };
        let holds_ignored: HashSet<Vec<u8>> = ignored_files.iter().map(|p| parent(p)).collect();
        let ignored_dirs: std::collections::HashMap<&[u8], bool> = s
            .ignored
            .iter()
            .filter_map(|p| p.strip_suffix(b"/"))
            .map(|d| (d, is_precious(precious, d)))
            .collect();
        Lookups {
            ignored_files,
            holds_ignored,
            ignored_dirs,
            gitlinks,
            precious,
        }
    }
}

/// The handle and the entries of the directory of `frame`, less its
/// `.git`. `None`, with the finding in `w`, when the walk goes no further
/// in: a nested repository's insides are its own work, and a directory that
/// cannot be listed (or is no longer a directory) is unreadable.
pub(super) fn listing(frame: &Frame, w: &mut Walked) -> Option<(Rc<Dir>, Vec<Entry>)> {
    let rel = frame.rel.as_slice();
    let top = rel.is_empty();
    let opened = frame
        .open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)
        .and_then(Dir::from_fd);
    let mut dir = match opened {
        Ok(d) => d,
        Err(e) => {
            // Searchable but not readable: its `.git` may still be seen,
            // through a handle that needs no read permission.
            let has_git = frame
                .open(OFlag::O_PATH)
                .and_then(|d| fstatat(&d, ".git", AtFlags::AT_SYMLINK_NOFOLLOW))
                .is_ok();
            if !top && has_git {
                w.nested.push(rel_str(rel));
            } else {
                let why = match e {
                    Errno::ELOOP | Errno::ENOTDIR => "no longer a directory".to_string(),
                    e => std::io::Error::from(e).to_string(),
                };
                w.unreadable.push(format!("{} ({why})", shown(rel)));
            }
            return None;
        }
    };
    let mut entries = Vec::new();
    let mut has_git = false;
    for entry in dir.iter() {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                if name == b".git" {
                    has_git = true;
                } else {
                    entries.push(Entry {
                        name: OsString::from_vec(name.to_vec()),
                        kind: e.file_type(),
                    });
                }
            }
            Err(e) => w
                .unreadable
                .push(format!("{} ({})", shown(rel), std::io::Error::from(e))),
        }
    }
    if !top && has_git {
        w.nested.push(rel_str(rel));
        return None;
    }
    Some((Rc::new(dir), entries))
}

/// Whether `e`, in the directory `dir`, is a directory: the listing's type
/// when it gave one, else a `stat` of the name that does not follow a
/// symlink.
fn is_dir(dir: &Dir, e: &Entry) -> Result<bool, Errno> {
    match e.kind {
        Some(t) => Ok(t == Type::Directory),
        None => fstatat(dir, e.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
    }
}

/// One entry of the directory `frame`: a directory to read later (not a
/// submodule: git looks into those), or a file that may be precious.
/// `files_matter` says whether any file of `frame` can be: the type the
/// listing gives then spares a look at every other file.
pub(super) fn visit(
    e: Entry,
    frame: &Frame,
    handle: &Rc<Dir>,
    files_matter: bool,
    look: &Lookups<'_>,
    stack: &mut Vec<Frame>,
    w: &mut Walked,
) {
    // Most entries are files no ignore rule names: nothing to do.
    if matches!(e.kind, Some(t) if t != Type::Directory) && !files_matter {
        return;
    }
    let name = e.name.as_bytes();
    let child = if frame.rel.is_empty() {
        name.to_vec()
    } else {
        [frame.rel.as_slice(), b"/", name].concat()
    };
    let dir = match is_dir(handle, &e) {
        Ok(d) => d,
        Err(err) => {
            let err = std::io::Error::from(err);
            w.unreadable.push(format!("{} ({err})", rel_str(&child)));
            return;
        }
    };
    if dir {
        if look.gitlinks.contains(&child) {
            return;
        }
        let inside = frame.ignored_dir.or_else(|| {
            let precious = *look.ignored_dirs.get(child.as_slice())?;
            Some(precious && !is_virtualenv(handle, &e.name))
        });
        stack.push(Frame {
            parent: Some(Rc::clone(handle)),
            path: frame.path.join(&e.name),
            rel: child,
            ignored_dir: inside,
        });
        return;
    }
    let precious_here = match frame.ignored_dir {
        Some(dir_is_precious) => dir_is_precious || is_precious(look.precious, &child),
        None => look.ignored_files.contains(child.as_slice()) && is_precious(look.precious, &child),
    };
    if precious_here {
        w.precious.push(rel_str(&child));
    }
}

/// Whether the directory `name` in `parent` is a Python virtualenv (it
/// holds a `pyvenv.cfg`): what `python -m venv .env` makes is regenerable,
/// however precious its name reads, so its files are judged one by one
/// like any other ignored file.
fn is_virtualenv(parent: &Dir, name: &std::ffi::OsStr) -> bool {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty())
        .and_then(|d| fstatat(&d, "pyvenv.cfg", AtFlags::AT_SYMLINK_NOFOLLOW))
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
}

/// A relative path as a reason shows it: the worktree itself is `.`.
pub(super) fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        rel_str(rel)
    }
}

pub(super) fn push_files(s: &GitStatus, staged: Vec<Vec<u8>>, w: &Walked, out: &mut Vec<AtRisk>) {
    let strs = |v: &[Vec<u8>]| v.iter().map(|p| rel_str(p)).collect::<Vec<_>>();
    let lists = [
        (strs(&staged), 0),
        (strs(&s.unstaged), 1),
        (
            s.untracked
                .iter()
                .filter(|p| !p.ends_with(b"/"))
                .map(|p| rel_str(p))
                .collect(),
            2,
        ),
        (strs(&s.conflicts), 3),
        (w.precious.clone(), 4),
    ];
    for (list, which) in lists {
        if list.is_empty() {
            continue;
        }
        let (count, paths) = sample(list);
        out.push(match which {
            0 => AtRisk::Staged { count, paths },
            1 => AtRisk::Unstaged { count, paths },
            2 => AtRisk::Untracked { count, paths },
            3 => AtRisk::Conflicts { count, paths },
            _ => AtRisk::PreciousIgnored { count, paths },
        });
    }
    // A directory git lists as untracked without descending holds a
    // repository of its own; the walk names it.
    let mut nested = w.nested.clone();
    for p in s.untracked.iter().filter(|p| p.ends_with(b"/")) {
        let p = rel_str(p.strip_suffix(b"/").unwrap_or(p));
        if !nested.contains(&p) {
            nested.push(p);
        }
    }
    nested.sort();
    nested.dedup();
    for path in nested {
        out.push(AtRisk::NestedRepository { path });
    }
    if !w.unreadable.is_empty() {
        let (count, paths) = sample(w.unreadable.clone());
        out.push(AtRisk::Unreadable { count, paths });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testutil::precious;
    use std::os::unix::fs::symlink;

    /// A directory swapped for a symlink between its listing and its
    /// reading is not followed: what the link leads to (a repository and
    /// a precious file outside the worktree) is not judged, and the
    /// worktree shows as unreadable, which keeps it.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_walk_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let wt = tmp.path().join("wt");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(wt.join("a")).unwrap();
        std::fs::create_dir_all(elsewhere.join(".git")).unwrap();
        std::fs::write(elsewhere.join(".env"), "not the worktree's").unwrap();
        let status = GitStatus {
            ignored: vec![b"a/.env".to_vec()],
            ..GitStatus::default()
        };
        let (gitlinks, globs) = (HashSet::new(), precious());
        let look = Lookups::new(&status, &gitlinks, &globs);
        let mut w = Walked::default();
        let top = Frame {
            parent: None,
            path: wt.clone(),
            rel: Vec::new(),
            ignored_dir: None,
        };
        let (handle, entries) = listing(&top, &mut w).unwrap();
        let mut stack = Vec::new();
        for e in entries {
            visit(e, &top, &handle, false, &look, &mut stack, &mut w);
        }
        assert_eq!(stack.len(), 1, "a/ is to be read");
        std::fs::rename(wt.join("a"), tmp.path().join("a-moved")).unwrap();
        symlink(&elsewhere, wt.join("a")).unwrap();
        let a = stack.pop().unwrap();
        assert!(listing(&a, &mut w).is_none());
        assert_eq!(w.nested, Vec::<String>::new());
        assert_eq!(w.precious, Vec::<String>::new());
        assert_eq!(w.unreadable, vec!["a (no longer a directory)".to_string()]);
    }
}
