//! Force preserves: the full state of a worktree committed under
//! `refs/boo/archive/<worktree id>/<unix seconds>` before removal.
//!
//! The archive is shaped like a `git stash push --include-untracked`
//! commit, so that in a fresh worktree checked out (detached) at the ref's
//! first parent, `git stash apply --index <ref>` brings every file back
//! byte for byte, with its executable bit or symlink target:
//!
//! * `W` (the ref): tree = the working tree's tracked files as they are on
//!   disk (including assume-unchanged files, whose changes `git stash`
//!   would miss, and skip-worktree files, taken from the index when absent
//!   as sparse checkout leaves them); parents `H`, `I` and, when there are
//!   untracked or precious files, `U`.
//! * `H`: HEAD's commit, also when detached. When HEAD names a branch that
//!   no longer exists, the newest commit of the worktree's HEAD reflog (the
//!   commit the branch last pointed at here), which keeps the orphaned
//!   commits reachable. When there is no such commit (an unborn branch), a
//!   parentless commit of the empty tree stands in for it.
//! * `I`: tree = the index, parent `H`. A conflicted path is stored as its
//!   working-tree file (with the conflict markers), or left out if that
//!   file is absent: `git stash` refuses to stash a conflicted index, and
//!   the stages themselves come from commits that refs keep. Intent-to-add
//!   entries are not staged content and are left out of `I` (their file is
//!   in `W`).
//! * `U`: parentless, tree = untracked files, ignored files matching the
//!   precious globs, and the working files of nested repositories and of
//!   submodules with uncommitted changes (below their paths).
//!
//! Nested repositories and submodules holding a commit that none of their
//! remote-tracking refs reaches (from HEAD, a branch, a tag, a note, any
//! other ref, a stash entry or a reflog) are also copied whole into the
//! main repository ([`nested`]): HEAD to `<ref>-nested/<n>`, branches to
//! `<ref>-nested/<n>-heads/<branch>`, every other ref but the
//! remote-tracking ones to `<ref>-nested/<n>-refs/<rest>`, stash@{k} to
//! `<ref>-nested/<n>-stash/<k>`, and the commits only a reflog reaches to
//! `<ref>-nested/<n>-logs/<k>` (`n` counts the nested repositories and
//! submodules of the worktree from 0, in path order, those inside nested
//! repositories and submodules included). A submodule's git directory may
//! live in the worktree's admin entry and go with it; it is read through
//! the submodule's `.git` link wherever it is.
//!
//! What the restore needs beyond the stash shape is recorded in W's
//! message body, which `git stash apply` ignores ([`records`]): the path
//! of each `n` whose commits were fetched (and whether its files are its
//! HEAD's, a clean submodule's, rather than in U), the branch an
//! unborn HEAD named, and the permission bits git would not give back
//! ([`modes`]: a `600` file, a `700` directory). Archives made before these records have none.
//!
//! File contents are stored raw (no clean filters), which is what
//! "byte for byte" means. Trees are built in memory (`git2::Index::new`);
//! the worktree's index file, its branch, `refs/stash` and every other ref
//! are left alone. Operation state files (a rebase's todo list, `MERGE_HEAD`)
//! are not archived, only their effect on files and HEAD.
//!
//! Each part is one function below (`head_commit`, `index_part`,
//! `worktree_tree`, `untracked_part`, then `stash_commits` and the nested
//! repositories' commits in `nested`); `tree` writes every blob and tree.
//! Nothing is referenced until all of it is written, so a failure anywhere
//! before the ref leaves only unreachable objects behind.

/// Reading archives back is the git CLI's job, as for the restore built on it.
pub mod list;
pub(crate) mod modes;
pub(crate) use tree::MAX_NESTING;
pub(crate) mod nested;
pub mod records;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use git2::{Commit, ErrorCode, Index, Oid, Repository};
use globset::GlobSet;

use super::mode::{ASSUME_VALID, GITLINK, INTENT_TO_ADD, SKIP_WORKTREE, STAGE_MASK};
use super::paths::{
    common_dir_of_admin, dot_git, has_dot_git, is_inside, join_rel, open_exact, ref_component,
    DotGit,
};
use super::scan::scan;
use super::GitError;
use tree::Builder;

/// Where an archived state was stored in the main repository.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    pub reference: String,
    pub commit: String,
}

/// The identity of every commit the reconciler writes.
pub const ARCHIVE_NAME: &str = "boo-reconciler";
pub const ARCHIVE_EMAIL: &str = "boo-reconciler@localhost";

pub(crate) fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates `base` (or `base-1`, `base-2`, … when it exists) pointing at
/// `id`, never overwriting. Returns the name created.
pub(crate) fn create_archive_ref(
    repo: &Repository,
    base: &str,
    id: Oid,
    msg: &str,
) -> Result<String, git2::Error> {
    for n in 0..10_000u32 {
        let name = if n == 0 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        match repo.reference(&name, id, false, msg) {
            Ok(_) => return Ok(name),
            Err(e) if e.code() == ErrorCode::Exists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(git2::Error::from_str("no free archive ref name"))
}

/// The ref an archive of `worktree_id` made at `now` is written to
/// (`-<n>` is appended when it exists already): what the write-ahead
/// intent of a force names before the archive is made.
pub fn archive_ref_base(worktree_id: &str, now: SystemTime) -> String {
    format!(
        "refs/boo/archive/{}/{}",
        ref_component(worktree_id),
        unix_secs(now)
    )
}

fn invalid(worktree: &Path, detail: String) -> GitError {
    GitError::Invalid {
        path: worktree.to_path_buf(),
        detail,
    }
}

/// The worktree's repository, and the main repository its archive ref is
/// written to.
struct Opened {
    repo: Repository,
    main: Repository,
}

/// Opens `worktree` and its main repository, refusing every layout in
/// which the archive ref would be removed together with the worktree.
fn open(worktree: &Path) -> Result<Opened, GitError> {
    let admin = match dot_git(worktree) {
        DotGit::File { gitdir } => gitdir,
        DotGit::Directory => return Err(invalid(
            worktree,
            "a standalone repository: an archive ref would live inside the directory being removed"
                .into(),
        )),
        DotGit::Missing => return Err(invalid(worktree, "not a git worktree (no .git)".into())),
        DotGit::Broken { detail } => return Err(invalid(worktree, detail)),
    };
    let common = common_dir_of_admin(&admin).ok_or_else(|| {
        invalid(
            worktree,
            format!(
                "{} is not a linked worktree's git directory",
                admin.display()
            ),
        )
    })?;
    if is_inside(&common, worktree) {
        return Err(invalid(
            worktree,
            "the main repository lives inside the worktree; an archive there would be removed with it"
                .into(),
        ));
    }
    if let Some(detail) = super::links::unsafe_links(&common, Some(&admin)) {
        return Err(invalid(
            worktree,
            format!("unsafe repository, nothing archived: {detail}"),
        ));
    }
    let repo = open_exact(worktree).map_err(|source| GitError::Open {
        path: worktree.to_path_buf(),
        source,
    })?;
    let main = open_exact(&common).map_err(|source| GitError::Open {
        path: common.clone(),
        source,
    })?;
    Ok(Opened { repo, main })
}

/// The newest commit HEAD's reflog recorded, if the reflog has one that
/// still exists.
fn reflog_head(repo: &Repository) -> Option<Oid> {
    // libgit2 would create a missing reflog on reading it: a write.
    if !repo.path().join("logs/HEAD").is_file() {
        return None;
    }
    let log = repo.reflog("HEAD").ok()?;
    log.iter()
        .map(|e| e.id_new())
        .find(|id| !id.is_zero())
        .filter(|id| repo.find_commit(*id).is_ok())
}

/// What HEAD stands for: its commit (`None`: unborn), how the archive's
/// messages name the branch, and the branch HEAD names.
struct HeadTarget {
    commit: Option<Oid>,
    label: String,
    branch: Option<String>,
}

fn head_target(b: &Builder<'_>) -> Result<HeadTarget, GitError> {
    let head_ref = b.repo.find_reference("HEAD").map_err(b.git("read HEAD"))?;
    Ok(
        match head_ref.symbolic_target().map_err(b.git("read HEAD"))? {
            Some(t) => {
                let short = t.strip_prefix("refs/heads/").unwrap_or(t).to_string();
                let branch = Some(t.to_string());
                match b.repo.refname_to_id(t) {
                    Ok(id) => HeadTarget {
                        commit: Some(id),
                        label: short,
                        branch,
                    },
                    // The branch is gone: the commit it last had here keeps its
                    // history reachable.
                    Err(_) => HeadTarget {
                        commit: reflog_head(b.repo),
                        label: format!("{short} (deleted)"),
                        branch,
                    },
                }
            }
            None => HeadTarget {
                commit: Some(head_ref.peel_to_commit().map_err(b.git("read HEAD"))?.id()),
                label: "(no branch)".to_string(),
                branch: None,
            },
        },
    )
}

/// H, the `<label>: <short id> <summary>` the other parts' messages name
/// it by, as `git stash` does, and the branch an unborn HEAD named (H is
/// then a stand-in).
fn head_commit<'r>(
    b: &Builder<'r>,
    worktree_id: &str,
) -> Result<(Commit<'r>, String, Option<String>), GitError> {
    let HeadTarget {
        commit,
        label,
        branch,
    } = head_target(b)?;
    let unborn = commit.is_none().then_some(branch).flatten();
    let head = match commit {
        Some(id) => b.repo.find_commit(id).map_err(b.git("read HEAD commit"))?,
        None => {
            // `git stash apply` needs a base commit; the empty tree is what
            // an unborn branch has.
            let mut empty = Index::new().map_err(b.git("write empty tree"))?;
            let tree = b.write_tree(&mut empty, "write empty tree")?;
            let msg = format!("boo-reconciler: unborn HEAD of {worktree_id} ({label})");
            b.commit(tree, "write empty tree", &msg, &[])?
        }
    };
    let on = format!(
        "{label}: {} {}",
        &head.id().to_string()[..7],
        head.summary().ok().flatten().unwrap_or("")
    );
    Ok((head, on, unborn))
}

/// I, and what the working-tree part needs to know of the index.
struct Staged {
    /// The index as stored in I: stage 0 entries, each conflicted path as
    /// its working-tree file.
    idx: Index,
    tree: Oid,
    skip_worktree: BTreeSet<Vec<u8>>,
    /// Path and mode of each intent-to-add entry: tracked, but with no
    /// staged content.
    intent_to_add: Vec<(Vec<u8>, u32)>,
}

/// I: the index, conflicts resolved to the working-tree file.
fn index_part(b: &Builder<'_>, index: &Index) -> Result<Staged, GitError> {
    let mut idx = Index::new().map_err(b.git("index"))?;
    let mut conflicted: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut skip_worktree: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut intent_to_add: Vec<(Vec<u8>, u32)> = Vec::new();
    for e in index.iter() {
        if e.flags & STAGE_MASK != 0 {
            conflicted.insert(e.path.clone());
            continue;
        }
        if e.flags_extended & INTENT_TO_ADD != 0 {
            intent_to_add.push((e.path.clone(), e.mode));
            continue;
        }
        if e.flags_extended & SKIP_WORKTREE != 0 {
            skip_worktree.insert(e.path.clone());
        }
        b.add(&mut idx, &e.path, e.id, e.mode)?;
    }
    for path in &conflicted {
        if let Some((id, mode)) = b.workdir_blob(path, None)? {
            b.add(&mut idx, path, id, mode)?;
        }
    }
    let tree = b.write_tree(&mut idx, "write index tree")?;
    Ok(Staged {
        idx,
        tree,
        skip_worktree,
        intent_to_add,
    })
}

/// The commit a submodule at `dir` has checked out, else the one the index
/// records (`recorded`).
fn submodule_head(dir: &Path, recorded: Oid) -> Oid {
    open_exact(dir)
        .ok()
        .and_then(|r| {
            r.head()
                .and_then(|h| h.peel_to_commit())
                .ok()
                .map(|c| c.id())
        })
        .unwrap_or(recorded)
}

/// W's entry for the tracked `path`: the file as it is on disk; `None` for
/// a file deleted, or now a directory (its files are untracked).
fn worktree_entry(
    b: &Builder<'_>,
    staged: &Staged,
    path: &[u8],
    id: Oid,
    mode: u32,
) -> Result<Option<(Oid, u32)>, GitError> {
    let full = join_rel(&b.workdir, path);
    if mode == GITLINK {
        return Ok(Some((submodule_head(&full, id), GITLINK)));
    }
    Ok(match b.workdir_blob(path, Some(mode))? {
        Some(blob) => Some(blob),
        // Sparse checkout left it out: the index holds its content.
        None if staged.skip_worktree.contains(path) && fs::symlink_metadata(&full).is_err() => {
            Some((id, mode))
        }
        None => None,
    })
}

/// W's tree: the tracked files (I's and the intent-to-add ones) as on disk.
fn worktree_tree(b: &Builder<'_>, staged: &Staged) -> Result<Oid, GitError> {
    let mut idx = Index::new().map_err(b.git("index"))?;
    let tracked: Vec<(Vec<u8>, Oid, u32)> = staged
        .idx
        .iter()
        .map(|e| (e.path.clone(), e.id, e.mode))
        .chain(
            staged
                .intent_to_add
                .iter()
                .map(|(p, m)| (p.clone(), Oid::ZERO_SHA1, *m)),
        )
        .collect();
    for (path, id, mode) in tracked {
        if let Some((id, mode)) = worktree_entry(b, staged, &path, id, mode)? {
            b.add(&mut idx, &path, id, mode)?;
        }
    }
    b.write_tree(&mut idx, "write worktree tree")
}

/// Whether the submodule `sub` holds anything its commit does not; when
/// that cannot be told, it does. An index entry marked assume-unchanged
/// or skip-worktree hides its file from the scan, so such a submodule's
/// files are archived whole.
fn submodule_is_dirty(sub: &Repository, precious: &GlobSet) -> bool {
    let hides = match sub.index() {
        Ok(index) => index
            .iter()
            .any(|e| e.flags & ASSUME_VALID != 0 || e.flags_extended & SKIP_WORKTREE != 0),
        Err(_) => true,
    };
    hides
        || scan(sub, precious, false)
            .map(|s| !s.is_clean())
            .unwrap_or(true)
}

/// A nested repository's or submodule's path, and whether its working
/// files are left out of U.
type Nested = (Vec<u8>, bool);

/// U's index, and the nested repositories and initialized submodules (in
/// path order) whose commits [`nested::keep_nested_commits`] looks at,
/// each with whether its working files are left out of U (a clean
/// submodule: they are its HEAD's).
fn untracked_part(
    b: &Builder<'_>,
    index: &Index,
    precious: &GlobSet,
) -> Result<(Index, Vec<Nested>), GitError> {
    let s = scan(b.repo, precious, false)
        .map_err(|e| invalid(b.worktree, format!("cannot archive: {e}")))?;
    let mut idx = Index::new().map_err(b.git("index"))?;
    for rel in s.untracked.iter().chain(s.precious.iter()) {
        b.add_file(&mut idx, &b.workdir, b"", rel)?;
    }
    let mut nested: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for rel in &s.nested {
        let dir = join_rel(&b.workdir, rel);
        b.add_repo_files(&mut idx, &dir, rel, precious, 1)?;
        nested.insert(rel.clone(), false);
    }
    for e in index.iter() {
        if e.mode != GITLINK || e.flags & STAGE_MASK != 0 {
            continue;
        }
        let dir = join_rel(&b.workdir, &e.path);
        if !has_dot_git(&dir) {
            continue;
        }
        let Ok(sub) = open_exact(&dir) else { continue };
        let dirty = submodule_is_dirty(&sub, precious);
        if dirty {
            b.add_repo_files(&mut idx, &dir, &e.path, precious, 1)?;
        }
        let in_u = nested.get(&e.path).is_some_and(|clean| !clean);
        nested.insert(e.path.clone(), !dirty && !in_u);
    }
    let top: Vec<Nested> = nested.iter().map(|(p, c)| (p.clone(), *c)).collect();
    for (rel, clean) in top {
        inner_repos(&b.workdir, &rel, clean, precious, 1, &mut nested);
    }
    Ok((idx, nested.into_iter().collect()))
}

/// The nested repositories and initialized submodules inside the one at
/// `rel` (below `workdir`), recursively, each with whether its working
/// files are left out of U: a clean submodule inside one whose files are
/// (their files are their HEADs'); the files of every other one are in U
/// with those of the repository holding it.
fn inner_repos(
    workdir: &Path,
    rel: &[u8],
    clean: bool,
    precious: &GlobSet,
    depth: usize,
    out: &mut BTreeMap<Vec<u8>, bool>,
) {
    if depth >= tree::MAX_NESTING {
        return;
    }
    let Ok(repo) = open_exact(&join_rel(workdir, rel)) else {
        return;
    };
    let mut found: Vec<Nested> = match scan(&repo, precious, false) {
        Ok(s) => s
            .nested
            .iter()
            .map(|r| (tree::prefixed(rel, r), false))
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(index) = repo.index() {
        for e in index.iter() {
            if e.mode != GITLINK || e.flags & STAGE_MASK != 0 {
                continue;
            }
            let path = tree::prefixed(rel, &e.path);
            let dir = join_rel(workdir, &path);
            if !has_dot_git(&dir) {
                continue;
            }
            let sub_clean =
                clean && open_exact(&dir).is_ok_and(|sub| !submodule_is_dirty(&sub, precious));
            found.push((path, sub_clean));
        }
    }
    for (path, c) in found {
        if out.contains_key(&path) {
            continue;
        }
        out.insert(path.clone(), c);
        inner_repos(workdir, &path, c, precious, depth + 1, out);
    }
}

/// U (only when something is untracked), I on H, and W on H, I and U: the
/// commits `git stash apply --index` reads, named as `git stash` names
/// them. Returns W, which `w_msg` describes.
fn stash_commits(
    b: &Builder<'_>,
    (head, on): (&Commit<'_>, &str),
    i_tree: Oid,
    w_tree: Oid,
    mut u_idx: Index,
    w_msg: &str,
) -> Result<Oid, GitError> {
    let u_commit = if u_idx.is_empty() {
        None
    } else {
        let tree = b.write_tree(&mut u_idx, "write untracked tree")?;
        let msg = format!("untracked files on {on}");
        Some(b.commit(tree, "write untracked tree", &msg, &[])?)
    };
    let i_msg = format!("index on {on}");
    let i_commit = b.commit(i_tree, "write index tree", &i_msg, &[head])?;
    let mut parents = vec![head, &i_commit];
    parents.extend(&u_commit);
    Ok(b.commit(w_tree, "write worktree tree", w_msg, &parents)?
        .id())
}

/// The tracked files of each clean submodule the archive keeps (neither W
/// nor U holds them: the restore checks them out from its HEAD), as paths
/// below `workdir` with their index modes: what [`modes::odd_modes`] looks
/// at for them.
fn clean_submodule_files(workdir: &Path, kept: &[records::NestedRecord]) -> Vec<(Vec<u8>, u32)> {
    let mut out = Vec::new();
    for k in kept.iter().filter(|k| k.clean) {
        let Ok(index) = open_exact(&join_rel(workdir, &k.path)).and_then(|r| r.index()) else {
            continue;
        };
        out.extend(
            index
                .iter()
                .filter(|e| e.mode != GITLINK)
                .map(|e| (tree::prefixed(&k.path, &e.path), e.mode)),
        );
    }
    out
}

/// Every blob of `tree` (recursively; names are any bytes), with the
/// mode it is stored with.
fn tree_files(repo: &Repository, tree: Oid) -> Result<Vec<(Vec<u8>, u32)>, git2::Error> {
    fn walk(
        repo: &Repository,
        tree: Oid,
        prefix: &[u8],
        out: &mut Vec<(Vec<u8>, u32)>,
    ) -> Result<(), git2::Error> {
        for e in repo.find_tree(tree)?.iter() {
            let path = tree::prefixed(prefix, e.name_bytes());
            match e.kind() {
                Some(git2::ObjectType::Tree) => walk(repo, e.id(), &path, out)?,
                Some(git2::ObjectType::Blob) => out.push((path, e.filemode() as u32)),
                _ => {}
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(repo, tree, b"", &mut out)?;
    Ok(out)
}

/// Commits the full state of `worktree` (index, working tree, untracked and
/// precious ignored files, HEAD) to an archive ref in its main repository.
///
/// Read and written with the filesystem credentials of the worktree's
/// owner ([`crate::creds`]): whatever the owner planted in the worktree or
/// the repository (a symlinked `logs`, `refs/boo` or `objects/ab`) leads
/// only where the owner could write anyway, and what is written is the
/// owner's, as if the owner had run `git stash` there.
pub fn archive(
    worktree: &Path,
    worktree_id: &str,
    now: SystemTime,
    precious: &GlobSet,
) -> Result<Archived, GitError> {
    let who = crate::creds::owner_of(worktree)
        .map_err(|e| invalid(worktree, format!("cannot act as its owner: {e}")))?;
    crate::creds::with_fs_creds(who.as_ref(), || {
        archive_as_caller(worktree, worktree_id, now, precious)
    })
    .map_err(|e| invalid(worktree, format!("cannot act as its owner: {e}")))?
}

fn archive_as_caller(
    worktree: &Path,
    worktree_id: &str,
    now: SystemTime,
    precious: &GlobSet,
) -> Result<Archived, GitError> {
    let Opened { repo, main } = open(worktree)?;
    let secs = unix_secs(now);
    let b = Builder::new(&repo, worktree, secs)?;
    let (head, on, unborn) = head_commit(&b, worktree_id)?;
    let index = repo.index().map_err(b.git("read index"))?;
    let staged = index_part(&b, &index)?;
    let w_tree = worktree_tree(&b, &staged)?;
    let (u_idx, nested_repos) = untracked_part(&b, &index, precious)?;
    let kept = nested::to_keep(&b.workdir, &nested_repos)?;
    let files = tree_files(&repo, w_tree)
        .map_err(b.git("read worktree tree"))?
        .into_iter()
        .chain(u_idx.iter().map(|e| (e.path.clone(), e.mode)))
        .chain(clean_submodule_files(&b.workdir, &kept));
    let recorded = records::lines(&records::Records {
        unborn,
        nested: kept.clone(),
        modes: modes::odd_modes(&b.workdir, files),
    });
    // Quoted, so that neither can add a line that reads as a record.
    let msg = format!(
        "WIP on {on}\n\nboo-reconciler archive of worktree {} ({}) at {secs}\n{}{recorded}",
        records::quote_if_needed(worktree_id.as_bytes()),
        records::quote_if_needed(worktree.as_os_str().as_bytes()),
        if recorded.is_empty() { "" } else { "\n" },
    );
    let w_commit = stash_commits(&b, (&head, &on), staged.tree, w_tree, u_idx, &msg)?;

    // Objects written, no ref yet: a crash here leaves unreachable objects
    // (git gc's) and the worktree untouched.
    crate::crash_point!("archive.midway");
    let reference = create_archive_ref(
        &main,
        &archive_ref_base(worktree_id, now),
        w_commit,
        &format!("boo-reconciler: archive of worktree {worktree_id}"),
    )
    .map_err(b.git("create archive ref"))?;
    nested::keep_nested_commits(&main, &b.workdir, &kept, &reference)?;
    Ok(Archived {
        reference,
        commit: w_commit.to_string(),
    })
}

#[cfg(test)]
mod tests;
