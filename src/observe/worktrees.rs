//! Worktrees on disk: the entries directly under the root, the verdict on
//! every row's untrusted path, and the main repositories' admin entries
//! that point into the root at directories that no longer exist (an entry
//! that a directory under the root still points at is reported as moved,
//! never as stale).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::git;
use crate::model::{EntryKind, WorktreeDir, WorktreeRow};
use crate::model::{MovedAdminEntry, PathCheck, StaleAdminEntry};
use crate::root::WorktreeRoot;

/// What one observation of the worktree root found.
#[derive(Debug, Default)]
pub struct RootView {
    pub dirs: Vec<WorktreeDir>,
    pub row_paths: Vec<(String, PathCheck)>,
    /// What each row's path resolves to (see [`WorktreeRoot::resolve_claim`]).
    pub row_targets: Vec<(String, (u64, u64))>,
    pub stale_admin_entries: Vec<StaleAdminEntry>,
    pub moved_admin_entries: Vec<MovedAdminEntry>,
    /// Things that could not be read; the pass goes on without them.
    pub errors: Vec<String>,
    /// Why the root is not the directory the controller prepared (another
    /// one is mounted or put at its path, or none: unmounted): nothing was
    /// observed under it, and the pass must not take the missing
    /// directories for removed ones.
    pub root_held: Option<String>,
}

/// Observes the root and the rows of this host; `repositories` are main
/// repositories known from elsewhere (rows of removed worktrees, earlier
/// passes) whose admin entries are checked too. Blocking: call it from a
/// blocking thread.
pub fn observe(root: &WorktreeRoot, rows: &[WorktreeRow], repositories: &[PathBuf]) -> RootView {
    let mut out = RootView::default();
    // An unmounted root shows the empty directory under its mount point:
    // every worktree would look gone, every row removed, every admin entry
    // stale. The root is read only while it is itself.
    if let Err(e) = root.open_handle() {
        let why = format!(
            "the worktree root is not itself, so nothing under it is judged, marked removed or pruned this pass: {e}"
        );
        out.errors.push(why.clone());
        out.root_held = Some(why);
        return out;
    }
    let paths: Vec<PathBuf> = match fs::read_dir(root.path()) {
        Ok(entries) => entries
            .filter_map(|entry| match entry {
                // The controller's own trash: what it holds is already
                // removed, and is the reclaimer's (test
                // `the_trash_is_never_an_orphan`).
                Ok(e) if e.file_name() == crate::root::TRASH_DIR => None,
                Ok(e) => Some(e.path()),
                Err(err) => {
                    out.errors
                        .push(format!("reading {}: {err}", root.path().display()));
                    None
                }
            })
            .collect(),
        Err(err) => {
            out.errors.push(format!(
                "listing worktree root {}: {err}",
                root.path().display()
            ));
            Vec::new()
        }
    };
    // Hundreds of entries and row paths, each a handful of small reads.
    for entry in super::on_cores(&paths, 32, |p| entry_at(p)) {
        match entry {
            Ok(Some(dir)) => out.dirs.push(dir),
            // Vanished between listing and stat: nothing to do.
            Ok(None) => {}
            Err(err) => out.errors.push(err),
        }
    }
    out.row_paths = super::on_cores(rows, 32, |row| (row.id.clone(), root.check(&row.path)));
    // Only a refused path needs resolving: one the root takes in is
    // matched by that path, and a stat per row would double the cost of
    // every idle pass.
    let refused: Vec<&WorktreeRow> = rows
        .iter()
        .zip(&out.row_paths)
        .filter(|(_, (_, check))| matches!(check, PathCheck::Refused { .. }))
        .map(|(row, _)| row)
        .collect();
    out.row_targets = super::on_cores(&refused, 32, |row| {
        root.resolve_claim(&row.path).map(|id| (row.id.clone(), id))
    })
    .into_iter()
    .flatten()
    .collect();
    out.dirs.sort_by(|a, b| a.name.cmp(&b.name));

    // Every main repository this host's worktrees belong to, by their own
    // `.git` files and by the rows.
    let repos: BTreeSet<PathBuf> = out
        .dirs
        .iter()
        .filter_map(|d| d.repo_path.clone())
        .chain(rows.iter().map(|r| r.repo_path.clone()))
        .chain(repositories.iter().cloned())
        .collect();
    // The `.git` files were read with the entries: every repository's
    // entries are checked against the same links.
    let links = git::admin::Gitlinks::new(
        out.dirs
            .iter()
            .filter_map(|d| d.gitdir.clone().map(|g| (g, d.path.clone()))),
    );
    for repo in repos {
        if !repo.join(".git").is_dir() {
            // A row naming a repository that is gone or not a main
            // repository: nothing to prune there.
            continue;
        }
        match git::admin::scan_entries(&repo, root.path(), &links) {
            Ok(mut scan) => {
                out.stale_admin_entries.append(&mut scan.stale);
                out.moved_admin_entries.append(&mut scan.moved);
            }
            Err(err) => out.errors.push(err.to_string()),
        }
    }
    out
}

/// The entry at `path`; `None` when it vanished since the listing.
fn entry_at(path: &std::path::Path) -> Result<Option<WorktreeDir>, String> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(entry_of(path.to_path_buf(), &meta))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("reading {}: {err}", path.display())),
    }
}

fn entry_of(path: PathBuf, meta: &fs::Metadata) -> WorktreeDir {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    // Without a time the entry counts as new: doubt must never make a
    // directory look old enough to reap.
    let created = meta
        .created()
        .or_else(|_| meta.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    // One read of the `.git` file serves both the repository and the
    // admin-entry links.
    let gitdir = match kind {
        EntryKind::Directory => match git::paths::dot_git(&path) {
            git::paths::DotGit::File { gitdir } => Some(gitdir),
            _ => None,
        },
        _ => None,
    };
    let repo_path = gitdir
        .as_deref()
        .and_then(git::admin::main_repository_of_gitdir);
    WorktreeDir {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path,
        kind,
        created,
        repo_path,
        gitdir,
        file_id: Some((
            std::os::unix::fs::MetadataExt::dev(meta),
            std::os::unix::fs::MetadataExt::ino(meta),
        )),
    }
}
