//! The controller's own walk of the worktree: what git's listing may
//! not show (precious ignored files, nested repositories).

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::git::paths::rel_str;
use crate::git::scan::is_precious;
use crate::git::status::Status;
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
pub(crate) fn walk(
    dir: &Path,
    s: &Status,
    gitlinks: &HashSet<Vec<u8>>,
    precious: &GlobSet,
) -> Walked {
    let look = Lookups::new(s, gitlinks, precious);
    let mut w = Walked::default();
    let mut stack: Vec<Frame> = vec![Frame {
        path: dir.to_path_buf(),
        rel: Vec::new(),
        ignored_dir: None,
    }];
    while let Some(frame) = stack.pop() {
        let Some(entries) = listing(&frame.path, &frame.rel, &mut w) else {
            continue;
        };
        let files_matter = frame.ignored_dir.is_some() || look.holds_ignored.contains(&frame.rel);
        for e in entries {
            visit(e, &frame, files_matter, &look, &mut stack, &mut w);
        }
    }
    w
}

/// One directory the walk has yet to read.
pub(super) struct Frame {
    path: PathBuf,
    /// Relative to the worktree; empty for the worktree itself.
    rel: Vec<u8>,
    /// Inside an ignored directory whose name is precious: Some(precious?).
    ignored_dir: Option<bool>,
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
    fn new(s: &'a Status, gitlinks: &'a HashSet<Vec<u8>>, precious: &'a GlobSet) -> Self {
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

/// The entries of the directory at `path` (`rel` in the worktree), less its
/// `.git`. `None`, with the finding in `w`, when the walk goes no further
/// in: a nested repository's insides are its own work, and a directory that
/// cannot be listed is unreadable.
pub(super) fn listing(path: &Path, rel: &[u8], w: &mut Walked) -> Option<Vec<fs::DirEntry>> {
    let top = rel.is_empty();
    let listing = match fs::read_dir(path) {
        Ok(l) => l,
        Err(e) => {
            // Searchable but not readable: its `.git` may still be seen.
            if !top && fs::symlink_metadata(path.join(".git")).is_ok() {
                w.nested.push(rel_str(rel));
            } else {
                w.unreadable.push(format!("{} ({e})", shown(rel)));
            }
            return None;
        }
    };
    let mut entries = Vec::new();
    let mut has_git = false;
    for entry in listing {
        match entry {
            Ok(e) => {
                if e.file_name() == ".git" {
                    has_git = true;
                } else {
                    entries.push(e);
                }
            }
            Err(e) => w.unreadable.push(format!("{} ({e})", shown(rel))),
        }
    }
    if !top && has_git {
        w.nested.push(rel_str(rel));
        return None;
    }
    Some(entries)
}

/// One entry of the directory `frame`: a directory to read later (not a
/// submodule: git looks into those), or a file that may be precious.
/// `files_matter` says whether any file of `frame` can be: the type the
/// listing gives then spares a look at every other file.
pub(super) fn visit(
    e: fs::DirEntry,
    frame: &Frame,
    files_matter: bool,
    look: &Lookups<'_>,
    stack: &mut Vec<Frame>,
    w: &mut Walked,
) {
    let ft = e.file_type();
    // Most entries are files no ignore rule names: nothing to do.
    if matches!(&ft, Ok(t) if !t.is_dir()) && !files_matter {
        return;
    }
    let name = e.file_name();
    let child = if frame.rel.is_empty() {
        name.as_bytes().to_vec()
    } else {
        [frame.rel.as_slice(), b"/", name.as_bytes()].concat()
    };
    let ft = match ft {
        Ok(t) => t,
        Err(err) => {
            w.unreadable.push(format!("{} ({err})", rel_str(&child)));
            return;
        }
    };
    if ft.is_dir() {
        if look.gitlinks.contains(&child) {
            return;
        }
        let inside = frame
            .ignored_dir
            .or_else(|| look.ignored_dirs.get(child.as_slice()).copied());
        stack.push(Frame {
            path: e.path(),
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

/// A relative path as a reason shows it: the worktree itself is `.`.
pub(super) fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        rel_str(rel)
    }
}

pub(super) fn push_files(s: &Status, staged: Vec<Vec<u8>>, w: &Walked, out: &mut Vec<AtRisk>) {
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
