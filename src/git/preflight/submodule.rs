//! Submodules, judged like the worktree itself, recursively.
//!
//! Git's status of the superproject says only that a submodule has
//! "modified content", "untracked content" or "new commits". It does not
//! look at what the submodule's own status would show beyond that:
//! ignored files that are precious (`.env`), nested repositories in its
//! ignored directories, index entries marked assume-unchanged, or commits
//! that only the submodule's git directory holds. Each initialised
//! submodule (and its own submodules, to [`MAX_SUBMODULE_DEPTH`]) gets the
//! worktree's whole check here, and what it finds becomes phrases of one
//! [`AtRisk::Submodule`] reason naming the submodule's path.
//!
//! Commits count only when the submodule's git directory goes away with
//! the worktree (it lives inside the worktree or in its admin entry,
//! `modules/<name>`): HEAD, branches, tags and the stash (each entry)
//! that none of the submodule's remote-tracking refs, nor the commit the
//! superproject records for it, reaches. Commits only its HEAD reflog
//! reaches are not a reason (an amended commit would be a false alarm on
//! every submodule), but the removal keeps them
//! ([`crate::git::keep::keep_history`]), as it does the worktree's own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::git::cli::Git;
use crate::git::mode::octal::GITLINK;
use crate::git::paths::{join_rel, rel_str};
use crate::risk::{sample, AtRisk};

use super::{
    git_status, gitlinks_of, hidden_changes, index_entries, inside, is_empty_dir, nested,
    operations, push_files, rev_list, walk, PreflightError, MAX_SUBMODULE_DEPTH,
};

/// The superproject worktree a submodule is judged for.
pub(super) struct Superproject<'a> {
    pub worktree: &'a Path,
    /// Its git directory (the admin entry).
    pub admin: &'a Path,
    pub precious: &'a GlobSet,
}

/// What the submodule checked out at `sub` would lose beyond what the
/// superproject's status reports, as short phrases. `recorded` is the
/// commit the superproject's index records for it.
pub(super) fn submodule_problems(
    git: &Git,
    sub: &Path,
    recorded: Option<&str>,
    sp: &Superproject<'_>,
    depth: usize,
    problems: &mut Vec<String>,
) {
    match fs::symlink_metadata(sub) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return problems.push(format!("cannot stat: {e}")),
        // A typechange; the superproject's status reports it.
        Ok(m) if !m.is_dir() => return,
        Ok(_) => {}
    }
    match is_empty_dir(sub) {
        Err(e) => return problems.push(format!("cannot read directory: {e}")),
        Ok(true) => return, // not initialized
        Ok(false) => {}
    }
    if fs::symlink_metadata(sub.join(".git")).is_err() {
        return problems.push("not initialized, but its directory holds files".into());
    }
    let g = git.at(sub);
    let gitdir = match g.run(&["rev-parse", "--absolute-git-dir"]) {
        Ok(o) => PathBuf::from(o.stdout_str().trim()),
        Err(e) => return problems.push(format!("cannot open: {e}")),
    };
    let ops = operations(&gitdir);
    if !ops.is_empty() {
        problems.push(format!("{} in progress", ops.join(", ")));
    }
    let index = own_work(&g, sub, sp.precious, problems);
    if inside(&gitdir, sp.worktree) || inside(&gitdir, sp.admin) {
        match own_commits(&g, &gitdir, recorded) {
            Ok(0) => {}
            Ok(n) => problems.push(format!("{n} commit(s) on no remote-tracking ref")),
            Err(e) => problems.push(format!("commit check failed: {e}")),
        }
    }
    if depth < MAX_SUBMODULE_DEPTH {
        if let Some(index) = index {
            nested_submodules(&g, sub, &index, sp, depth, problems);
        }
    }
}

/// The submodule's own files, as the worktree's are judged: git's status
/// there (staged, unstaged, untracked, conflicts, what it cannot read),
/// the walk (precious ignored files, nested repositories that are not
/// pristine clones, unreadable entries), and hidden index changes. Its
/// index, for the submodules inside it.
fn own_work(
    g: &Git,
    sub: &Path,
    precious: &GlobSet,
    problems: &mut Vec<String>,
) -> Option<Vec<super::IndexEntry>> {
    let (status, unreadable) = match git_status(g) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("status failed: {e}"));
            return None;
        }
    };
    let index = match index_entries(g) {
        Ok(i) => i,
        Err(e) => {
            problems.push(format!("index cannot be read: {e}"));
            return None;
        }
    };
    let mut found = Vec::new();
    if !unreadable.is_empty() {
        let (count, paths) = sample(unreadable);
        found.push(AtRisk::Unreadable { count, paths });
    }
    let gitlinks = gitlinks_of(Some(&index));
    let mut walked = walk(sub, &status, &gitlinks, precious);
    walked
        .nested
        .retain(|rel| !nested::pristine_clone(g, sub, rel, precious));
    push_files(&status, status.staged.clone(), &walked, &mut found);
    match hidden_changes(g, sub, &index) {
        Ok(h) if !h.is_empty() => {
            let (count, paths) = sample(h);
            found.push(AtRisk::HiddenChanges { count, paths });
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("assume-unchanged/skip-worktree check failed: {e}")),
    }
    problems.extend(found.iter().map(AtRisk::to_string));
    Some(index)
}

/// How many commits of the submodule's HEAD, branches, tags and stash
/// entries neither a remote-tracking ref nor the superproject's recorded
/// commit reaches.
fn own_commits(g: &Git, gitdir: &Path, recorded: Option<&str>) -> Result<usize, PreflightError> {
    let mut tips: Vec<String> = ["HEAD", "--branches", "--tags"].map(String::from).to_vec();
    tips.extend(crate::git::stale::reflog(gitdir, "refs/stash").map_err(PreflightError::Reflog)?);
    let mut hide = vec!["--not".to_string(), "--remotes".to_string()];
    if let Some(r) = recorded {
        if g.commit_of(r)?.is_some() {
            hide.push(r.to_string());
        }
    }
    Ok(rev_list(g, &tips, &hide)?.len())
}

/// What the submodules of the submodule at `sub` (at `depth`, opened as
/// `g`, its index `index`) would lose, each as one phrase: a submodule's
/// own submodules go with it.
fn nested_submodules(
    g: &Git,
    sub: &Path,
    index: &[super::IndexEntry],
    sp: &Superproject<'_>,
    depth: usize,
    problems: &mut Vec<String>,
) {
    for e in index.iter().filter(|e| e.mode == GITLINK && e.stage == 0) {
        let mut inner = Vec::new();
        submodule_problems(
            g,
            &join_rel(sub, &e.path),
            Some(&e.object),
            sp,
            depth + 1,
            &mut inner,
        );
        if !inner.is_empty() {
            problems.push(format!(
                "submodule {}: {}",
                rel_str(&e.path),
                inner.join(", ")
            ));
        }
    }
}
