//! Files into trees: every blob the archive writes is written here, from the
//! raw bytes on disk (no clean filter runs), into an in-memory index that
//! is never the worktree's own.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::{Commit, Index, IndexEntry, IndexTime, ObjectType, Oid, Repository, Signature};
use globset::GlobSet;

use super::super::mode::{EXEC, GITLINK, REGULAR, SYMLINK};
use super::super::paths::{join_rel, open_exact};
use super::super::scan::scan;
use super::super::GitError;

/// How deep [`Builder::add_repo_files`] follows repositories inside
/// repositories before it takes the rest as plain directories.
pub(crate) const MAX_NESTING: usize = 8;

/// An index entry for `path` whose stat data is blank: the in-memory index
/// only ever becomes a tree, so only path, object and mode count.
pub(super) fn entry(path: &[u8], id: Oid, mode: u32) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.to_vec(),
    }
}

/// The mode a regular file is stored with. With `core.fileMode` false the
/// executable bit on disk means nothing, so the index's mode stands.
fn file_mode(meta: &fs::Metadata, tracked_mode: Option<u32>, filemode: bool) -> u32 {
    if filemode {
        if meta.permissions().mode() & 0o100 != 0 {
            EXEC
        } else {
            REGULAR
        }
    } else {
        match tracked_mode {
            Some(m @ (EXEC | REGULAR)) => m,
            _ => REGULAR,
        }
    }
}

/// Writes the file or symlink at `path` as a blob, raw. `None` when there
/// is no file or symlink there (absent, a directory, a fifo…).
/// `tracked_mode` is the index mode, kept for regular files when
/// `core.fileMode` is false.
fn workdir_blob(
    repo: &Repository,
    path: &Path,
    tracked_mode: Option<u32>,
    filemode: bool,
) -> io::Result<Option<(Oid, u32)>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        let id = repo
            .blob(target.as_os_str().as_bytes())
            .map_err(io::Error::other)?;
        return Ok(Some((id, SYMLINK)));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let mode = file_mode(&meta, tracked_mode, filemode);
    // Streamed into the object database: a large file is never held in
    // memory whole.
    let odb = repo.odb().map_err(io::Error::other)?;
    let mut file = fs::File::open(path)?;
    let mut w = odb
        .writer(meta.len() as usize, ObjectType::Blob)
        .map_err(io::Error::other)?;
    io::copy(&mut file, &mut w)?;
    let id = w.finalize().map_err(io::Error::other)?;
    Ok(Some((id, mode)))
}

/// `prefix/rel`, or `rel` at the top.
pub(super) fn prefixed(prefix: &[u8], rel: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return rel.to_vec();
    }
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(rel);
    p
}

/// Builds the trees and commits of one archive, reporting errors against
/// the worktree.
pub(super) struct Builder<'r> {
    pub repo: &'r Repository,
    pub worktree: &'r Path,
    pub workdir: PathBuf,
    filemode: bool,
    sig: Signature<'static>,
}

impl<'r> Builder<'r> {
    /// Every commit is signed by [`super::ARCHIVE_NAME`] at `secs`, so that
    /// an archive says what made it and when.
    pub fn new(
        repo: &'r Repository,
        worktree: &'r Path,
        secs: u64,
    ) -> Result<Builder<'r>, GitError> {
        let workdir = repo
            .workdir()
            .ok_or_else(|| super::invalid(worktree, "no working directory".into()))?
            .to_path_buf();
        let filemode = repo
            .config()
            .and_then(|c| c.get_bool("core.filemode"))
            .unwrap_or(true);
        let sig = Signature::new(
            super::ARCHIVE_NAME,
            super::ARCHIVE_EMAIL,
            &git2::Time::new(secs as i64, 0),
        )
        .map_err(|source| GitError::Op {
            op: "signature",
            path: worktree.to_path_buf(),
            source,
        })?;
        Ok(Builder {
            repo,
            worktree,
            workdir,
            filemode,
            sig,
        })
    }

    pub fn git(&self, op: &'static str) -> impl Fn(git2::Error) -> GitError + '_ {
        move |source| GitError::Op {
            op,
            path: self.worktree.to_path_buf(),
            source,
        }
    }

    pub fn io(&self, path: &Path) -> impl Fn(io::Error) -> GitError + '_ {
        let path = path.to_path_buf();
        move |e| GitError::Invalid {
            path: path.clone(),
            detail: format!("cannot archive: {e}"),
        }
    }

    /// The blob of the working tree's file at `rel` (see [`workdir_blob`]).
    pub fn workdir_blob(
        &self,
        rel: &[u8],
        tracked_mode: Option<u32>,
    ) -> Result<Option<(Oid, u32)>, GitError> {
        let full = join_rel(&self.workdir, rel);
        workdir_blob(self.repo, &full, tracked_mode, self.filemode).map_err(self.io(&full))
    }

    pub fn add(&self, idx: &mut Index, path: &[u8], id: Oid, mode: u32) -> Result<(), GitError> {
        idx.add(&entry(path, id, mode))
            .map_err(self.git("index add"))
    }

    /// Writes `idx` as a tree; `op` names it in an error.
    pub fn write_tree(&self, idx: &mut Index, op: &'static str) -> Result<Oid, GitError> {
        idx.write_tree_to(self.repo).map_err(self.git(op))
    }

    /// A commit of `tree` (written as `op`) with `parents`, referenced by
    /// nothing yet.
    pub fn commit(
        &self,
        tree: Oid,
        op: &'static str,
        msg: &str,
        parents: &[&Commit<'_>],
    ) -> Result<Commit<'r>, GitError> {
        let tree = self.repo.find_tree(tree).map_err(self.git(op))?;
        let id = self
            .repo
            .commit(None, &self.sig, &self.sig, msg, &tree, parents)
            .map_err(self.git("commit"))?;
        self.repo.find_commit(id).map_err(self.git("commit"))
    }

    /// Adds the file at `dir/rel` to `idx` as `prefix/rel`; a vanished file
    /// is skipped (it holds nothing any more).
    pub fn add_file(
        &self,
        idx: &mut Index,
        dir: &Path,
        prefix: &[u8],
        rel: &[u8],
    ) -> Result<(), GitError> {
        let full = join_rel(dir, rel);
        if let Some((id, mode)) =
            workdir_blob(self.repo, &full, None, self.filemode).map_err(self.io(&full))?
        {
            self.add(idx, &prefixed(prefix, rel), id, mode)?;
        }
        Ok(())
    }

    /// Adds every file worth keeping of the repository (or plain directory)
    /// at `dir` to `idx` below `prefix`: its tracked files as on disk,
    /// untracked and precious ignored files, and recursively its nested
    /// repositories and submodules. `.git` is never included.
    pub fn add_repo_files(
        &self,
        idx: &mut Index,
        dir: &Path,
        prefix: &[u8],
        precious: &GlobSet,
        depth: usize,
    ) -> Result<(), GitError> {
        let repo = match open_exact(dir) {
            Ok(r) if r.workdir().is_some() && depth < MAX_NESTING => r,
            _ => return self.add_plain_dir(idx, dir, prefix),
        };
        let index = repo.index().map_err(self.git("nested index"))?;
        let mut tracked: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut gitlinks: BTreeSet<Vec<u8>> = BTreeSet::new();
        for e in index.iter() {
            if e.mode == GITLINK {
                gitlinks.insert(e.path.clone());
            } else {
                tracked.insert(e.path.clone());
            }
        }
        let s = scan(&repo, precious, false).map_err(|e| GitError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("cannot archive nested repository: {e}"),
        })?;
        tracked.extend(s.untracked);
        tracked.extend(s.precious);
        for rel in &tracked {
            self.add_file(idx, dir, prefix, rel)?;
        }
        for rel in gitlinks.iter().chain(s.nested.iter()) {
            let sub = join_rel(dir, rel);
            if sub.is_dir() {
                self.add_repo_files(idx, &sub, &prefixed(prefix, rel), precious, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Adds every file below `dir` except `.git` entries.
    fn add_plain_dir(&self, idx: &mut Index, dir: &Path, prefix: &[u8]) -> Result<(), GitError> {
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git");
        for e in walk {
            let e = e.map_err(|e| GitError::Invalid {
                path: dir.to_path_buf(),
                detail: format!("cannot archive: {e}"),
            })?;
            let ft = e.file_type();
            if !(ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            self.add_file(idx, dir, prefix, rel.as_os_str().as_bytes())?;
        }
        Ok(())
    }
}
