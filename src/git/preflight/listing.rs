//! What git itself lists: status, the index, and the submodules they
//! name.

use std::collections::HashSet;
use std::path::Path;

use crate::git::cli::Git;
use crate::git::mode::octal::GITLINK;
use crate::git::paths::{join_rel, rel_str};
use crate::git::status;
use crate::git::status::GitStatus;
use crate::risk::{sample, AtRisk};

use super::{failed, hidden_changes, push_files, submodule_problems, Superproject};

/// Per submodule, what git's status says of it and what the controller's
/// own checks add, so that each submodule is one reason.
pub(super) type PerSubmodule = std::collections::BTreeMap<Vec<u8>, Vec<String>>;

/// Git's status of the worktree; `None` when git cannot give it (a reason
/// then), so that the checks that do not need it still run.
pub(super) fn status_of(git: &Git, out: &mut Vec<AtRisk>) -> Option<GitStatus> {
    match git_status(git) {
        Ok((s, unreadable)) => {
            if !unreadable.is_empty() {
                let (count, paths) = sample(unreadable);
                out.push(AtRisk::Unreadable { count, paths });
            }
            Some(s)
        }
        Err(e) => {
            failed(out, "status", e);
            None
        }
    }
}

/// What git's status says of each submodule: the start of its reason.
pub(super) fn submodules_in_status(status: Option<&GitStatus>) -> PerSubmodule {
    let mut subs = PerSubmodule::default();
    for (path, state) in status.iter().flat_map(|s| s.submodules.iter()) {
        subs.entry(path.clone()).or_default().push(state.describe());
    }
    subs
}

/// What git's status alone says, pushed before any costlier check so that
/// `Depth::First` can stop at it. Staged is final unless HEAD is unborn
/// (its branch deleted: the commit check decides).
pub(super) fn what_status_says(s: &GitStatus, out: &mut Vec<AtRisk>) {
    let staged = if s.head_oid.is_some() {
        s.staged.clone()
    } else {
        Vec::new()
    };
    let says = !staged.is_empty()
        || !s.unstaged.is_empty()
        || !s.untracked.is_empty()
        || !s.conflicts.is_empty();
    if says {
        push_files(s, staged, &Walked::default(), out);
    }
}

/// The index; `None` when git cannot list it (a reason then), so that the
/// checks that do not need it still run.
pub(super) fn index_of(git: &Git, out: &mut Vec<AtRisk>) -> Option<Vec<IndexEntry>> {
    match index_entries(git) {
        Ok(i) => Some(i),
        Err(e) => {
            failed(out, "index", e);
            None
        }
    }
}

/// The submodules' paths: the walk leaves them to git, and each is checked
/// on its own.
pub(super) fn gitlinks_of(index: Option<&[IndexEntry]>) -> HashSet<Vec<u8>> {
    index
        .into_iter()
        .flatten()
        .filter(|e| e.mode == GITLINK)
        .map(|e| e.path.clone())
        .collect()
}

/// The staged paths. HEAD is unborn because its branch was deleted when
/// there is a `stand_in`: what is staged is then what the index adds to the
/// branch's last commit, not the whole index.
pub(super) fn staged_of(
    git: &Git,
    s: &GitStatus,
    stand_in: Option<&str>,
    out: &mut Vec<AtRisk>,
) -> Vec<Vec<u8>> {
    let mut staged = s.staged.clone();
    if let Some(c) = stand_in {
        match git.run(&["diff-index", "--cached", "--name-only", "-z", c, "--"]) {
            Ok(o) => staged = nul_fields(&o.stdout),
            Err(e) => failed(out, "staged against reflog HEAD", e),
        }
    }
    staged
}

/// Changes git's status does not show, because the index says not to look.
pub(super) fn push_hidden_changes(
    git: &Git,
    dir: &Path,
    index: &[IndexEntry],
    out: &mut Vec<AtRisk>,
) {
    match hidden_changes(git, dir, index) {
        Ok(h) if !h.is_empty() => {
            let (count, paths) = sample(h);
            out.push(AtRisk::HiddenChanges { count, paths });
        }
        Ok(_) => {}
        Err(e) => failed(out, "assume-unchanged/skip-worktree", e),
    }
}

/// Adds to each submodule's reason what the controller's own checks find
/// beyond git's status ([`super::submodule`]).
pub(super) fn check_submodules(
    git: &Git,
    sp: &Superproject<'_>,
    index: &[IndexEntry],
    subs: &mut PerSubmodule,
) {
    for e in index.iter().filter(|e| e.mode == GITLINK && e.stage == 0) {
        let mut problems = Vec::new();
        let at = join_rel(sp.worktree, &e.path);
        submodule_problems(git, &at, Some(&e.object), sp, 0, &mut problems);
        if !problems.is_empty() {
            subs.entry(e.path.clone()).or_default().extend(problems);
        }
    }
}

pub(super) fn push_submodules(subs: PerSubmodule, out: &mut Vec<AtRisk>) {
    for (path, details) in subs {
        out.push(AtRisk::Submodule {
            path: rel_str(&path),
            detail: details.join("; "),
        });
    }
}

/// `git status` as the owner sees it, and the directories it could not
/// read.
pub(crate) fn git_status(git: &Git) -> Result<(GitStatus, Vec<String>), String> {
    let o = git
        .run(&[
            "status",
            "--porcelain=v2",
            "-z",
            "--branch",
            "--untracked-files=all",
            "--ignored=matching",
            "--ignore-submodules=none",
            "--no-renames",
        ])
        .map_err(|e| e.to_string())?;
    let s = status::parse(&o.stdout).map_err(|e| e.to_string())?;
    Ok((s, status::unreadable(&o.stderr_str())))
}

pub(super) fn nul_fields(out: &[u8]) -> Vec<Vec<u8>> {
    out.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// One index entry, as `git ls-files -s -v` prints it.
#[derive(Debug)]
pub(crate) struct IndexEntry {
    /// `H` cached, `S` skip-worktree, lower case for assume-unchanged, …
    pub tag: u8,
    pub mode: String,
    pub object: String,
    pub stage: u8,
    pub path: Vec<u8>,
}

pub(crate) fn index_entries(git: &Git) -> Result<Vec<IndexEntry>, String> {
    let o = git
        .run(&["ls-files", "-z", "-s", "-v"])
        .map_err(|e| e.to_string())?;
    nul_fields(&o.stdout)
        .into_iter()
        .map(|f| {
            let tab = f.iter().position(|b| *b == b'\t');
            let parsed = tab.and_then(|t| {
                let head = std::str::from_utf8(&f[..t]).ok()?;
                let mut it = head.split(' ');
                let tag = it.next()?.bytes().next()?;
                let mode = it.next()?.to_string();
                let object = it.next()?.to_string();
                let stage = it.next()?.parse().ok()?;
                Some(IndexEntry {
                    tag,
                    mode,
                    object,
                    stage,
                    path: f[t + 1..].to_vec(),
                })
            });
            parsed.ok_or_else(|| format!("unexpected ls-files line {:?}", rel_str(&f)))
        })
        .collect()
}

/// What the controller's own walk found.
#[derive(Default)]
pub(crate) struct Walked {
    pub nested: Vec<String>,
    pub precious: Vec<String>,
    pub unreadable: Vec<String>,
}
