//! An inventory of a working tree from libgit2's status, completed by hand
//! where status is blind: inside ignored directories (precious files, nested
//! repositories) and at nested repositories.
//!
//! Status is read-only here: the index is read, never written
//! (`GIT_STATUS_OPT_UPDATE_INDEX` is not set), and submodules are excluded
//! (their callers inspect them on their own).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{Repository, Status, StatusOptions};
use globset::GlobSet;

use super::mode::SKIP_WORKTREE;
use super::paths::{has_dot_git, join_rel};

/// What status found, as `/`-separated paths relative to the working tree.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Index differs from HEAD.
    pub staged: Vec<Vec<u8>>,
    /// Working tree differs from the index (tracked files).
    pub unstaged: Vec<Vec<u8>>,
    /// Files (and symlinks) that no ignore rule covers and the index lacks.
    pub untracked: Vec<Vec<u8>>,
    /// Unmerged index entries.
    pub conflicts: Vec<Vec<u8>>,
    /// Ignored files matching a precious glob, and every file inside an
    /// ignored directory that matches one.
    pub precious: Vec<Vec<u8>>,
    /// Directories, not submodules, that hold a `.git` of their own
    /// (untracked or ignored). Their contents are not listed elsewhere.
    pub nested: Vec<Vec<u8>>,
    /// Tracked files identical in index and working tree (only when asked).
    pub unmodified: Vec<Vec<u8>>,
}

impl Scan {
    /// Whether the scan found nothing a removal would lose: no change, no
    /// untracked or precious file, no nested repository. Unmodified files
    /// are in HEAD already.
    pub fn is_clean(&self) -> bool {
        let Scan {
            staged,
            unstaged,
            untracked,
            conflicts,
            precious,
            nested,
            unmodified: _,
        } = self;
        [staged, unstaged, untracked, conflicts, precious, nested]
            .iter()
            .all(|v| v.is_empty())
    }
}

/// Whether an ignored path counts as work: its path relative to the
/// working tree or its file name matches one of the globs (so `.env`
/// matches `sub/.env`).
pub fn is_precious(precious: &GlobSet, rel: &[u8]) -> bool {
    if precious.is_empty() {
        return false;
    }
    let p = Path::new(std::ffi::OsStr::from_bytes(rel));
    precious.is_match(p) || p.file_name().is_some_and(|n| precious.is_match(n))
}

fn strip_slash(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"/").unwrap_or(p)
}

fn child(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        c.extend_from_slice(rel);
        c.push(b'/');
    }
    c.extend_from_slice(name);
    c
}

/// Where files found by [`walk`] go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Inside an untracked directory: every file is untracked.
    Untracked,
    /// Inside an ignored directory: only precious files (and everything
    /// below a precious directory) count.
    Ignored,
    /// Inside a precious ignored directory: every file is precious.
    Precious,
}

/// Lists a directory status did not descend into. Symlinks are listed as
/// symlinks, never followed; a directory holding a `.git` is a nested
/// repository and is not entered.
fn walk(base: &Path, rel: &[u8], how: Walk, precious: &GlobSet, scan: &mut Scan) -> io::Result<()> {
    let dir = join_rel(base, rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let c = child(rel, name.as_bytes());
        let ft = e.file_type()?;
        if ft.is_dir() {
            if has_dot_git(&e.path()) {
                scan.nested.push(c);
                continue;
            }
            let inner = match how {
                Walk::Ignored if is_precious(precious, &c) => Walk::Precious,
                h => h,
            };
            walk(base, &c, inner, precious, scan)?;
        } else if ft.is_file() || ft.is_symlink() {
            match how {
                Walk::Untracked => scan.untracked.push(c),
                Walk::Precious => scan.precious.push(c),
                Walk::Ignored => {
                    if is_precious(precious, &c) {
                        scan.precious.push(c)
                    }
                }
            }
        }
        // Sockets, fifos and devices hold no work and cannot be archived.
    }
    Ok(())
}

/// Errors of a scan: libgit2's or the file system's.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("status: {0}")]
    Git(#[from] git2::Error),
    #[error("listing {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Runs status on the working tree of `repo` (never writing its index) and
/// completes it: ignored directories are listed by hand, without asking git
/// to recurse into them, to find precious files and nested repositories.
///
/// Cost: every ignored directory is walked (but no ignore rule is evaluated
/// inside it, since git cannot re-include below an ignored directory), so a
/// huge `node_modules` costs one directory listing per directory. A glob
/// matching the file name can match anywhere, so there is no sound way to
/// skip a subtree; correctness first.
pub fn scan(
    repo: &Repository,
    precious: &GlobSet,
    include_unmodified: bool,
) -> Result<Scan, ScanError> {
    let workdir = repo
        .workdir()
        .ok_or_else(|| git2::Error::from_str("repository has no working directory"))?
        .to_path_buf();
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(true)
        .recurse_ignored_dirs(false)
        .exclude_submodules(true)
        .include_unmodified(include_unmodified)
        .include_unreadable_as_untracked(true)
        .renames_head_to_index(false)
        .renames_index_to_workdir(false)
        .update_index(false);
    let statuses = repo.statuses(Some(&mut opts))?;
    // libgit2 honours assume-unchanged but not skip-worktree: a sparse
    // checkout's absent files would look deleted. Both kinds are compared
    // by hand (`preflight::hidden_changes`, archive's tree of the working
    // tree), so their working-tree side is left out here.
    let skip_worktree: HashSet<Vec<u8>> = repo
        .index()?
        .iter()
        .filter(|e| e.flags_extended & SKIP_WORKTREE != 0)
        .map(|e| e.path)
        .collect();
    let mut scan = Scan::default();
    let staged = Status::INDEX_NEW
        | Status::INDEX_MODIFIED
        | Status::INDEX_DELETED
        | Status::INDEX_RENAMED
        | Status::INDEX_TYPECHANGE;
    let unstaged = Status::WT_MODIFIED
        | Status::WT_DELETED
        | Status::WT_RENAMED
        | Status::WT_TYPECHANGE
        | Status::WT_UNREADABLE;
    for e in statuses.iter() {
        let s = e.status();
        let raw = e.path_bytes();
        let path = strip_slash(raw).to_vec();
        let is_dir_entry = raw.ends_with(b"/");
        if s.is_conflicted() {
            scan.conflicts.push(path);
            continue;
        }
        if s.intersects(staged) {
            scan.staged.push(path.clone());
        }
        if s.intersects(unstaged) && !skip_worktree.contains(&path) {
            scan.unstaged.push(path.clone());
        }
        if s.contains(Status::WT_NEW) {
            if is_dir_entry {
                if has_dot_git(&join_rel(&workdir, &path)) {
                    scan.nested.push(path);
                } else {
                    walk(&workdir, &path, Walk::Untracked, precious, &mut scan).map_err(
                        |source| ScanError::Io {
                            path: String::from_utf8_lossy(&path).into_owned(),
                            source,
                        },
                    )?;
                }
            } else {
                scan.untracked.push(path);
            }
            continue;
        }
        if s.contains(Status::IGNORED) {
            if is_dir_entry {
                if has_dot_git(&join_rel(&workdir, &path)) {
                    scan.nested.push(path);
                } else {
                    let how = if is_precious(precious, &path) {
                        Walk::Precious
                    } else {
                        Walk::Ignored
                    };
                    walk(&workdir, &path, how, precious, &mut scan).map_err(|source| {
                        ScanError::Io {
                            path: String::from_utf8_lossy(&path).into_owned(),
                            source,
                        }
                    })?;
                }
            } else if is_precious(precious, &path) {
                scan.precious.push(path);
            }
            continue;
        }
        if include_unmodified && s == Status::CURRENT {
            scan.unmodified.push(path);
        }
    }
    Ok(scan)
}
