//! Every ref of the nested repositories and submodules: their `.git` goes
//! with the worktree (a submodule's git directory too, when it lives in
//! the worktree's admin entry), so each one that holds a commit no
//! remote-tracking ref reaches is copied whole into the main repository
//! beside the archive ref `<ref>`, as `<ref>-nested/<n>`:
//!
//! ```text
//! <ref>-nested/<n>                 its HEAD's commit
//! <ref>-nested/<n>-heads/<branch>  each branch
//! <ref>-nested/<n>-refs/<rest>     each other ref refs/<rest> but the
//!                                  remote-tracking ones (tags, notes,
//!                                  refs/stash, …), unpeeled
//! <ref>-nested/<n>-stash/<k>       stash@{k}, every entry
//! <ref>-nested/<n>-logs/<k>        the commits only a reflog reaches,
//!                                  the newest first
//! ```
//!
//! The objects are copied with a pack built in the nested repository and
//! indexed into the main one (what a fetch does, but of commits that no
//! ref names too: stash entries, reflog-only commits).

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use git2::{ObjectType, Oid, Repository};

use super::super::paths::{join_rel, open_exact, rel_str};
use super::super::reach::unreachable;
use super::super::GitError;
use super::records::NestedRecord;

/// What one nested repository holds, as it is kept.
#[derive(Debug, Default)]
pub(crate) struct NestedRefs {
    pub head: Option<Oid>,
    /// Full name and unpeeled target of every direct ref but the
    /// remote-tracking ones.
    pub refs: Vec<(String, Oid)>,
    /// stash@{0}, stash@{1}, …
    pub stash: Vec<Oid>,
    /// Commits only a reflog reaches, the newest first.
    pub logs: Vec<Oid>,
    /// The commits every remote-tracking ref points at.
    remotes: Vec<Oid>,
}

impl NestedRefs {
    /// Every commit a kept ref leads to.
    fn tips(&self, repo: &Repository) -> Vec<Oid> {
        let mut tips: Vec<Oid> = self.head.into_iter().collect();
        for (_, id) in &self.refs {
            if let Ok(c) = repo.find_object(*id, None).and_then(|o| o.peel_to_commit()) {
                tips.push(c.id());
            }
        }
        tips.extend(&self.stash);
        tips.extend(&self.logs);
        tips.sort();
        tips.dedup();
        tips
    }
}

/// The commits the reflog `name` of `repo` records, the newest first;
/// entries whose commit is gone are left out.
///
/// Only a reflog that exists is read: libgit2 creates an empty one for a
/// ref that has none when asked for it, a write into the repository (and
/// a change to the tree the removal has stamped) that reading must not
/// make.
fn reflog_commits(repo: &Repository, name: &str) -> Vec<Oid> {
    if !repo.path().join("logs").join(name).is_file() {
        return Vec::new();
    }
    let Ok(log) = repo.reflog(name) else {
        return Vec::new();
    };
    log.iter()
        .map(|e| e.id_new())
        .filter(|id| !id.is_zero() && repo.find_commit(*id).is_ok())
        .collect()
}

/// Reads what `repo` holds (see [`NestedRefs`]).
pub(crate) fn read_refs(repo: &Repository) -> Result<NestedRefs, git2::Error> {
    let mut r = NestedRefs {
        head: repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .ok()
            .map(|c| c.id()),
        ..NestedRefs::default()
    };
    let mut logged = vec!["HEAD".to_string()];
    for reference in repo.references()? {
        let Ok(reference) = reference else { continue };
        let Ok(name) = reference.name() else { continue };
        let name = name.to_string();
        let Some(id) = reference.target() else {
            continue; // symbolic (refs/remotes/origin/HEAD): its target is listed
        };
        if name.starts_with("refs/remotes/") {
            if let Ok(c) = reference.peel_to_commit() {
                r.remotes.push(c.id());
            }
        } else {
            r.refs.push((name.clone(), id));
        }
        if name != "refs/stash" {
            logged.push(name);
        }
    }
    r.refs.sort();
    r.stash = reflog_commits(repo, "refs/stash");
    if r.stash.is_empty() {
        // A stash without a reflog still has its one entry.
        if let Some((_, id)) = r.refs.iter().find(|(n, _)| n == "refs/stash") {
            r.stash.push(*id);
        }
    }
    let mut seen: HashSet<Oid> = HashSet::new();
    let candidates: Vec<Oid> = logged
        .iter()
        .flat_map(|n| reflog_commits(repo, n))
        .filter(|id| seen.insert(*id))
        .collect();
    if !candidates.is_empty() {
        let mut hide = r.tips(repo);
        hide.extend(&r.remotes);
        let lost: HashSet<Oid> = unreachable(repo, &candidates, &hide)?.into_iter().collect();
        r.logs = candidates
            .into_iter()
            .filter(|c| lost.contains(c))
            .collect();
    }
    Ok(r)
}

/// Commits of `repo` that a kept ref or reflog reaches and no
/// remote-tracking ref does, plus its refs to objects that are not
/// commits (an annotated tag: its message and tagger are its own, wherever
/// its commit is; whether the remote has it cannot be told, so it counts).
fn local_only_commits(repo: &Repository, refs: &NestedRefs) -> Result<usize, git2::Error> {
    let tag_objects = refs
        .refs
        .iter()
        .filter(|(_, id)| {
            repo.find_object(*id, None)
                .map_or(true, |o| o.kind() != Some(ObjectType::Commit))
        })
        .count();
    Ok(unreachable(repo, &refs.tips(repo), &refs.remotes)?.len() + tag_objects)
}

/// Those of `nested` (paths below `workdir`, in path order, each with
/// whether it is a clean submodule) that hold commits that no
/// remote-tracking ref reaches, as the archive records them: `n` is the
/// index in `nested`, which names its refs.
pub(super) fn to_keep(
    workdir: &Path,
    nested: &[(Vec<u8>, bool)],
) -> Result<Vec<NestedRecord>, GitError> {
    let mut out = Vec::new();
    for (n, (rel, clean)) in nested.iter().enumerate() {
        let dir = join_rel(workdir, rel);
        let Ok(repo) = open_exact(&dir) else {
            continue;
        };
        let unpushed = read_refs(&repo)
            .and_then(|refs| local_only_commits(&repo, &refs))
            .map_err(|source| GitError::Op {
                op: "nested commits",
                path: dir.clone(),
                source,
            })?;
        if unpushed > 0 {
            out.push(NestedRecord {
                n,
                path: rel.clone(),
                clean: *clean,
            });
        }
    }
    Ok(out)
}

/// The name in the main repository that keeps the nested repository's
/// ref `name` below `base` (`<ref>-nested/<n>`).
pub(crate) fn kept_name(base: &str, name: &str) -> String {
    match name.strip_prefix("refs/heads/") {
        Some(branch) => format!("{base}-heads/{branch}"),
        None => format!("{base}-refs/{}", name.strip_prefix("refs/").unwrap_or(name)),
    }
}

/// Copies every object the kept refs of `nested` reach into `main`, as
/// one pack.
fn copy_objects(
    main: &Repository,
    nested: &Repository,
    refs: &NestedRefs,
) -> Result<(), git2::Error> {
    let mut pb = nested.packbuilder()?;
    let mut walk = nested.revwalk()?;
    for tip in refs.tips(nested) {
        walk.push(tip)?;
    }
    pb.insert_walk(&mut walk)?;
    for (_, id) in &refs.refs {
        // An annotated tag (or a ref to a tree or a blob): the object
        // itself, with what it leads to.
        if nested.find_object(*id, None)?.kind() != Some(ObjectType::Commit) {
            pb.insert_recursive(*id, None)?;
        }
    }
    let odb = main.odb()?;
    let mut w = odb.packwriter()?;
    let mut failed = None;
    pb.foreach(|buf| match w.write_all(buf) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(git2::Error::from_str(&format!("writing the pack: {e}")));
    }
    w.commit()?;
    Ok(())
}

/// Copies the nested repository at `dir` into `main` below `base`
/// (`<ref>-nested/<n>`, see the module's layout).
fn keep_one(main: &Repository, dir: &Path, base: &str) -> Result<usize, git2::Error> {
    let nested = open_exact(dir)?;
    let refs = read_refs(&nested)?;
    copy_objects(main, &nested, &refs)?;
    let msg = "boo-reconciler: archive nested repository";
    let mut names: Vec<(String, Oid)> = Vec::new();
    names.extend(refs.head.map(|h| (base.to_string(), h)));
    names.extend(refs.refs.iter().map(|(n, id)| (kept_name(base, n), *id)));
    for (k, id) in refs.stash.iter().enumerate() {
        names.push((format!("{base}-stash/{k}"), *id));
    }
    for (k, id) in refs.logs.iter().enumerate() {
        names.push((format!("{base}-logs/{k}"), *id));
    }
    for (name, id) in &names {
        main.reference(name, *id, false, msg)?;
    }
    Ok(names.len())
}

/// Keeps every ref of each of `kept` (see [`to_keep`]) below
/// `<reference>-nested/<n>`.
pub(super) fn keep_nested_commits(
    main: &Repository,
    workdir: &Path,
    kept: &[NestedRecord],
    reference: &str,
) -> Result<(), GitError> {
    for k in kept {
        let dir = join_rel(workdir, &k.path);
        let refname = format!("{reference}-nested/{}", k.n);
        let count = keep_one(main, &dir, &refname).map_err(|source| GitError::Op {
            op: "keep nested repository",
            path: dir.clone(),
            source,
        })?;
        tracing::info!(
            nested = %rel_str(&k.path),
            reference = %refname,
            refs = count,
            "archived nested repository refs"
        );
    }
    Ok(())
}
