//! The preflight: every reason removing a worktree would lose work.
//!
//! What counts as work, and the choices made where git leaves room:
//!
//! * **Files**: staged, unstaged, untracked (not ignored; untracked
//!   directories are recursed), conflicted, and ignored files matching a
//!   `precious` glob (by relative path or by file name, so `.env` matches
//!   `sub/.env`). Other ignored files (`target/`, `node_modules/`) are build
//!   output, not work. Status never writes the index.
//! * **Hidden changes**: index entries marked assume-unchanged or
//!   skip-worktree are compared by hand (mode and content hash of the file
//!   against the index blob, no clean filters applied, so a filter can only
//!   cause a false alarm). A skip-worktree entry whose file is absent is
//!   sparse checkout, not a change; an absent assume-unchanged file loses
//!   nothing either (its content is in the index, which the staged check
//!   covers).
//! * **Commits**: the tips are HEAD and the worktree's own branch (HEAD's
//!   symbolic target, or the row's `branch` when HEAD is detached). A commit
//!   is lost when no other ref reaches it: every branch, tag, remote ref,
//!   `refs/stash`, `refs/boo/archive/*`, notes… and `base_ref` are hidden,
//!   except the own branch and the per-worktree refs (`refs/bisect/*`,
//!   `refs/worktree/*`, `refs/rewritten/*`) that vanish with the worktree.
//!   **Other worktrees' HEADs are not counted**: a detached HEAD is
//!   transient, and two worktrees detached on the same commit and removed
//!   in one pass would each rely on the other. (Their symbolic HEADs name
//!   branches, which count anyway.)
//! * **Merged elsewhere**: with a `base_ref`, a lost commit is not at risk
//!   when `base_ref` holds it in another shape, by `git cherry`'s rule (a
//!   non-merge commit whose patch id equals that of a commit of `base_ref`
//!   not reachable from the tips: rebase-merge, cherry-pick), or by the
//!   squash rule (the whole `merge-base..tip` diff has the patch id of one
//!   commit of `base_ref`: squash-merge). Lost merge commits are skipped as
//!   `git cherry` skips them only when they are clean merges of their
//!   parents; an "evil" merge (conflict resolution, extra edits) is work.
//!   See [`super::reach::not_in_base`].
//! * **Branch deleted**: HEAD names a branch that does not exist. Reported
//!   when there is evidence the branch had commits (a HEAD reflog entry, or
//!   the row's `branch` is that branch); the newest commit of the HEAD
//!   reflog then stands for HEAD in the commit check. An orphan branch that
//!   never had a commit is not a deleted branch.
//! * **Operations**: merge, rebase (also stopped on a clean tree), am,
//!   cherry-pick, revert (also a stopped sequence) and bisect, read from
//!   the worktree's own git directory, plus anything else
//!   `Repository::state` reports.
//! * **Submodules** (gitlinks in the index): each initialized one is
//!   checked for its own staged, unstaged, untracked, conflicted and
//!   precious files, nested repositories, operations, and — when its git
//!   directory lives inside the worktree or the worktree's admin directory,
//!   so that it goes away with them — commits of its HEAD and local
//!   branches that none of its remote-tracking refs reaches. A submodule
//!   checked out at a commit other than the recorded one is not by itself
//!   work (the commit check covers commits that exist nowhere else).
//! * **Nested repositories**: a directory (untracked or ignored, at any
//!   depth) holding its own `.git` that is not a submodule.
//! * **Not a worktree**: a non-empty directory that is not a linked
//!   worktree (no `.git`, a `.git` directory of a standalone repository, a
//!   gitfile whose admin directory is gone, or that libgit2 cannot open).
//!   A directory that does not exist, or is empty, has nothing to lose.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, RepositoryState};
use globset::GlobSet;

use super::paths::{
    common_dir_of_admin, dot_git, has_dot_git, is_inside, join_rel, open_exact, rel_str, DotGit,
};
use super::reach::{is_per_worktree_ref, not_in_base, ref_tips, unreachable};
use super::scan::{scan, Scan};
use crate::risk::{sample, AtRisk, SAMPLE};

/// What the preflight needs to know about one worktree.
pub struct Preflight<'a> {
    /// The worktree directory (already confined to the root by the caller).
    pub worktree: &'a Path,
    /// The branch recorded in the `worktrees` row, if any.
    pub branch: Option<&'a str>,
    /// The ref the worktree was created from (`worktrees.base_ref`), if any.
    pub base_ref: Option<&'a str>,
    /// Ignored files matching these globs are work (`.env`).
    pub precious: &'a GlobSet,
}

/// Every reason removing the worktree would lose work; empty means safe.
/// Never returns an error: a check that cannot finish is itself a reason
/// ([`AtRisk::PreflightFailed`]), so that doubt always keeps the worktree.
pub fn preflight(p: &Preflight<'_>) -> Vec<AtRisk> {
    let mut out = Vec::new();
    inspect(p, &mut out);
    out
}

const GITLINK: u32 = 0o160000;
const SYMLINK: u32 = 0o120000;
const ENTRY_VALID: u16 = 0x8000; // assume-unchanged
const ENTRY_SKIP_WORKTREE: u16 = 1 << 14;
const ENTRY_INTENT_TO_ADD: u16 = 1 << 13;
const STAGE_MASK: u16 = 0x3000;

fn failed(out: &mut Vec<AtRisk>, check: &str, e: impl std::fmt::Display) {
    out.push(AtRisk::PreflightFailed {
        error: format!("{check}: {e}"),
    });
}

fn not_a_worktree(out: &mut Vec<AtRisk>, detail: String) {
    out.push(AtRisk::NotAWorktree { detail });
}

fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

fn inspect(p: &Preflight<'_>, out: &mut Vec<AtRisk>) {
    let dir = p.worktree;
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return failed(out, "stat", e),
        Ok(m) if m.file_type().is_symlink() => {
            return not_a_worktree(out, "a symbolic link, not a directory".into())
        }
        Ok(m) if !m.is_dir() => return not_a_worktree(out, "not a directory".into()),
        Ok(_) => {}
    }
    let admin = match dot_git(dir) {
        DotGit::Missing => {
            match is_empty_dir(dir) {
                Ok(true) => {}
                Ok(false) => {
                    not_a_worktree(out, "no .git file, but the directory is not empty".into())
                }
                Err(e) => failed(out, "read directory", e),
            }
            return;
        }
        DotGit::Directory => {
            return not_a_worktree(
                out,
                "a standalone repository (.git is a directory), not a linked worktree".into(),
            )
        }
        DotGit::Broken { detail } => return not_a_worktree(out, detail),
        DotGit::File { gitdir } => gitdir,
    };
    if !admin.is_dir() {
        return not_a_worktree(
            out,
            format!(
                "its git directory {} is gone (worktree pruned?)",
                admin.display()
            ),
        );
    }
    if common_dir_of_admin(&admin).is_none() {
        return not_a_worktree(
            out,
            format!(
                ".git points at {}, which is not a linked worktree's git directory",
                admin.display()
            ),
        );
    }
    let repo = match open_exact(dir) {
        Ok(r) => r,
        Err(e) => return not_a_worktree(out, format!("cannot open it as a repository: {e}")),
    };
    // libgit2's own idea of the per-worktree git directory wins.
    let gitdir = repo.path().to_path_buf();

    locked(&gitdir, out);
    for op in operations(&repo, &gitdir) {
        out.push(AtRisk::OperationInProgress { operation: op });
    }
    let head_stand_in = match commits(p, &repo, out) {
        Ok(h) => h,
        Err(e) => {
            failed(out, "commits", e);
            None
        }
    };
    let index = match repo.index() {
        Ok(i) => Some(i),
        Err(e) => {
            failed(out, "index", e);
            None
        }
    };
    match scan(&repo, p.precious, false) {
        Ok(s) => {
            let mut s = s;
            if let (Some(index), Some(c)) = (&index, head_stand_in) {
                // HEAD is unborn because its branch was deleted: what is
                // staged is what the index adds to the branch's last commit
                // (gitlinks included), not the whole index.
                match staged_against(&repo, index, c) {
                    Ok(staged) => s.staged = staged,
                    Err(e) => failed(out, "staged against reflog HEAD", e),
                }
            } else if let Some(index) = &index {
                match staged_gitlinks(&repo, index) {
                    Ok(g) => s.staged.extend(g),
                    Err(e) => failed(out, "submodule index", e),
                }
            }
            push_scan(&s, out);
        }
        Err(e) => failed(out, "status", e),
    }
    if let Some(index) = &index {
        match hidden_changes(&repo, index) {
            Ok(h) if !h.is_empty() => {
                let (count, paths) = sample(h);
                out.push(AtRisk::HiddenChanges { count, paths });
            }
            Ok(_) => {}
            Err(e) => failed(out, "assume-unchanged/skip-worktree", e),
        }
        let workdir = repo.workdir().unwrap_or(dir).to_path_buf();
        for e in index.iter() {
            if e.mode != GITLINK || e.flags & STAGE_MASK != 0 {
                continue;
            }
            let path = rel_str(&e.path);
            let sub = join_rel(&workdir, &e.path);
            let mut problems = Vec::new();
            submodule_problems(&sub, dir, &gitdir, p.precious, 0, &mut problems);
            if !problems.is_empty() {
                out.push(AtRisk::Submodule {
                    path,
                    detail: problems.join("; "),
                });
            }
        }
    }
}

fn locked(gitdir: &Path, out: &mut Vec<AtRisk>) {
    let lock = gitdir.join("locked");
    match fs::read_to_string(&lock) {
        Ok(s) => {
            let r = s.trim();
            out.push(AtRisk::Locked {
                reason: (!r.is_empty()).then(|| r.to_string()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => out.push(AtRisk::Locked { reason: None }),
    }
}

/// The operations in progress in the worktree whose git directory is
/// `gitdir` (each worktree keeps its own `MERGE_HEAD`, `rebase-merge/`, …).
pub(crate) fn operations(repo: &Repository, gitdir: &Path) -> Vec<String> {
    let has = |n: &str| fs::symlink_metadata(gitdir.join(n)).is_ok();
    let mut ops = Vec::new();
    if has("MERGE_HEAD") {
        ops.push("merge");
    }
    if has("rebase-merge") {
        ops.push("rebase");
    }
    if has("rebase-apply") {
        ops.push(if has("rebase-apply/applying") {
            "am"
        } else {
            "rebase"
        });
    }
    if has("CHERRY_PICK_HEAD") {
        ops.push("cherry-pick");
    }
    if has("REVERT_HEAD") {
        ops.push("revert");
    }
    if has("sequencer") && !has("CHERRY_PICK_HEAD") && !has("REVERT_HEAD") {
        ops.push("cherry-pick/revert sequence");
    }
    if has("BISECT_LOG") || has("BISECT_START") {
        ops.push("bisect");
    }
    let mut ops: Vec<String> = ops.into_iter().map(String::from).collect();
    ops.dedup();
    if ops.is_empty() {
        let st = repo.state();
        if st != RepositoryState::Clean {
            ops.push(format!("{st:?}").to_lowercase());
        }
    }
    ops
}

fn branch_ref(b: &str) -> String {
    if b.starts_with("refs/") {
        b.to_string()
    } else {
        format!("refs/heads/{b}")
    }
}

fn short_branch(r: &str) -> &str {
    r.strip_prefix("refs/heads/").unwrap_or(r)
}

/// The newest commit HEAD's reflog recorded, if the reflog has one that
/// still exists.
pub(crate) fn reflog_head(repo: &Repository) -> Option<Oid> {
    let log = repo.reflog("HEAD").ok()?;
    log.iter()
        .map(|e| e.id_new())
        .find(|id| !id.is_zero())
        .filter(|id| repo.find_commit(*id).is_ok())
}

/// Paths where `index` differs from the tree of commit `c`.
fn staged_against(
    repo: &Repository,
    index: &git2::Index,
    c: Oid,
) -> Result<Vec<Vec<u8>>, git2::Error> {
    let tree = repo.find_commit(c)?.tree()?;
    let diff = repo.diff_tree_to_index(Some(&tree), Some(index), None)?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path_bytes()
                .or(d.old_file().path_bytes())
                .map(<[u8]>::to_vec)
        })
        .collect())
}

/// Checks HEAD and the own branch for lost commits. Returns the commit
/// that stands in for an unborn HEAD whose branch was deleted, if any.
fn commits(
    p: &Preflight<'_>,
    repo: &Repository,
    out: &mut Vec<AtRisk>,
) -> Result<Option<Oid>, git2::Error> {
    let head = repo.find_reference("HEAD")?;
    let mut tips: Vec<Oid> = Vec::new();
    let mut own: Option<String> = None;
    let mut head_id: Option<Oid> = None;
    let mut stand_in: Option<Oid> = None;
    match head.symbolic_target()? {
        Some(target) => {
            let target = target.to_string();
            match repo.refname_to_id(&target) {
                Ok(id) => {
                    tips.push(id);
                    head_id = Some(id);
                }
                Err(_) => {
                    let from_reflog = reflog_head(repo);
                    let row_says = p.branch.map(branch_ref).as_deref() == Some(target.as_str());
                    if from_reflog.is_some() || row_says {
                        out.push(AtRisk::BranchDeleted {
                            branch: short_branch(&target).to_string(),
                        });
                    }
                    if let Some(id) = from_reflog {
                        tips.push(id);
                        head_id = Some(id);
                        stand_in = Some(id);
                    }
                }
            }
            own = Some(target);
        }
        None => {
            let id = head.peel_to_commit()?.id();
            tips.push(id);
            head_id = Some(id);
            if let Some(b) = p.branch.map(branch_ref) {
                if let Ok(bid) = repo.refname_to_id(&b) {
                    tips.push(bid);
                    own = Some(b);
                }
            }
        }
    }
    tips.sort();
    tips.dedup();
    if tips.is_empty() {
        return Ok(stand_in);
    }
    let mut hide = ref_tips(repo, &|name| {
        Some(name) == own.as_deref() || is_per_worktree_ref(name)
    })?;
    let base = match p.base_ref {
        Some(b) => repo
            .revparse_single(b)
            .and_then(|o| o.peel_to_commit())
            .ok()
            .map(|c| c.id()),
        None => None,
    };
    hide.extend(base);
    let mut lost = unreachable(repo, &tips, &hide)?;
    if let Some(base) = base {
        lost = not_in_base(repo, &lost, &tips, base)?;
    }
    if !lost.is_empty() {
        out.push(AtRisk::UnmergedCommits {
            count: lost.len(),
            head: head_id
                .or(tips.first().copied())
                .map(|o| o.to_string())
                .unwrap_or_default(),
            commits: lost.iter().take(SAMPLE).map(|o| o.to_string()).collect(),
        });
    }
    Ok(stand_in)
}

fn push_scan(s: &Scan, out: &mut Vec<AtRisk>) {
    let strs = |v: &[Vec<u8>]| v.iter().map(|p| rel_str(p)).collect::<Vec<_>>();
    if !s.staged.is_empty() {
        let (count, paths) = sample(strs(&s.staged));
        out.push(AtRisk::Staged { count, paths });
    }
    if !s.unstaged.is_empty() {
        let (count, paths) = sample(strs(&s.unstaged));
        out.push(AtRisk::Unstaged { count, paths });
    }
    if !s.untracked.is_empty() {
        let (count, paths) = sample(strs(&s.untracked));
        out.push(AtRisk::Untracked { count, paths });
    }
    if !s.conflicts.is_empty() {
        let (count, paths) = sample(strs(&s.conflicts));
        out.push(AtRisk::Conflicts { count, paths });
    }
    if !s.precious.is_empty() {
        let (count, paths) = sample(strs(&s.precious));
        out.push(AtRisk::PreciousIgnored { count, paths });
    }
    let mut nested = strs(&s.nested);
    nested.sort();
    nested.dedup();
    for path in nested {
        out.push(AtRisk::NestedRepository { path });
    }
}

/// Gitlinks whose index entry differs from HEAD's: status excludes
/// submodules, and with them their staged pointer moves.
fn staged_gitlinks(repo: &Repository, index: &git2::Index) -> Result<Vec<Vec<u8>>, git2::Error> {
    let mut in_head: Vec<(Vec<u8>, Oid)> = Vec::new();
    if let Ok(tree) = repo.head().and_then(|h| h.peel_to_tree()) {
        tree.walk(git2::TreeWalkMode::PreOrder, |root, e| {
            if e.filemode() as u32 == GITLINK {
                let mut p = root.as_bytes().to_vec();
                p.extend_from_slice(e.name_bytes());
                in_head.push((p, e.id()));
            }
            git2::TreeWalkResult::Ok
        })?;
    }
    let in_index: Vec<(Vec<u8>, Oid)> = index
        .iter()
        .filter(|e| e.mode == GITLINK && e.flags & STAGE_MASK == 0)
        .map(|e| (e.path.clone(), e.id))
        .collect();
    let mut out = Vec::new();
    for (p, id) in &in_head {
        if !in_index.iter().any(|(q, jd)| q == p && jd == id) {
            out.push(p.clone());
        }
    }
    for (p, id) in &in_index {
        if !in_head.iter().any(|(q, jd)| q == p && jd == id) {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Index entries marked assume-unchanged or skip-worktree whose file is
/// present and differs from the index (mode or content).
fn hidden_changes(repo: &Repository, index: &git2::Index) -> Result<Vec<String>, io::Error> {
    let Some(workdir) = repo.workdir() else {
        return Ok(Vec::new());
    };
    let filemode = repo
        .config()
        .and_then(|c| c.get_bool("core.filemode"))
        .unwrap_or(true);
    let mut out = Vec::new();
    for e in index.iter() {
        let hidden = e.flags & ENTRY_VALID != 0 || e.flags_extended & ENTRY_SKIP_WORKTREE != 0;
        if !hidden || e.flags & STAGE_MASK != 0 || e.mode == GITLINK {
            continue;
        }
        if e.flags_extended & ENTRY_INTENT_TO_ADD != 0 {
            continue;
        }
        let path = join_rel(workdir, &e.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let differs = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            e.mode != SYMLINK || blob_id(target.as_os_str().as_bytes())? != e.id
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o100 != 0;
            let mode_differs = e.mode == SYMLINK || (filemode && exec != (e.mode == 0o100755));
            mode_differs || file_blob_id(&path)? != e.id
        } else {
            true
        };
        if differs {
            out.push(rel_str(&e.path));
        }
    }
    Ok(out)
}

fn blob_id(bytes: &[u8]) -> io::Result<Oid> {
    Oid::hash_object(ObjectType::Blob, bytes).map_err(io::Error::other)
}

fn file_blob_id(path: &Path) -> io::Result<Oid> {
    Oid::hash_file(ObjectType::Blob, path).map_err(io::Error::other)
}

/// What a submodule checked out at `sub` would lose, as short phrases.
/// `worktree` and `admin` are the superproject worktree and its git
/// directory: a submodule git directory inside either goes away with the
/// worktree, and only then do its local-only commits count.
fn submodule_problems(
    sub: &Path,
    worktree: &Path,
    admin: &Path,
    precious: &GlobSet,
    depth: usize,
    problems: &mut Vec<String>,
) {
    match fs::symlink_metadata(sub) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return problems.push(format!("cannot stat: {e}")),
        // A typechange (file or symlink where the submodule was); the
        // superproject's status reports it.
        Ok(m) if !m.is_dir() => return,
        Ok(_) => {}
    }
    match is_empty_dir(sub) {
        Err(e) => return problems.push(format!("cannot read directory: {e}")),
        Ok(true) => return, // not initialized
        Ok(false) => {}
    }
    if !has_dot_git(sub) {
        return problems.push("not initialized, but its directory holds files".into());
    }
    let repo = match open_exact(sub) {
        Ok(r) => r,
        Err(e) => return problems.push(format!("cannot open: {e}")),
    };
    match scan(&repo, precious, false) {
        Ok(s) => {
            let mut parts = Vec::new();
            for (n, what) in [
                (s.staged.len(), "staged"),
                (s.unstaged.len(), "unstaged"),
                (s.untracked.len(), "untracked"),
                (s.conflicts.len(), "conflicted"),
                (s.precious.len(), "precious ignored"),
                (s.nested.len(), "nested repositories"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {what}"));
                }
            }
            if !parts.is_empty() {
                problems.push(parts.join(", "));
            }
        }
        Err(e) => problems.push(format!("status failed: {e}")),
    }
    let ops = operations(&repo, repo.path());
    if !ops.is_empty() {
        problems.push(format!("{} in progress", ops.join(", ")));
    }
    let goes_away = is_inside(repo.path(), worktree) || is_inside(repo.path(), admin);
    if goes_away {
        match local_only_commits(&repo) {
            Ok(0) => {}
            Ok(n) => problems.push(format!("{n} commit(s) on no remote-tracking ref")),
            Err(e) => problems.push(format!("commit check failed: {e}")),
        }
    }
    if depth < 4 {
        if let (Ok(index), Some(wd)) = (repo.index(), repo.workdir()) {
            for e in index.iter() {
                if e.mode != GITLINK || e.flags & STAGE_MASK != 0 {
                    continue;
                }
                let mut inner = Vec::new();
                submodule_problems(
                    &join_rel(wd, &e.path),
                    worktree,
                    admin,
                    precious,
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
    }
}

/// Commits of HEAD and the local branches of `repo` that no
/// remote-tracking ref reaches.
pub(crate) fn local_only_commits(repo: &Repository) -> Result<usize, git2::Error> {
    let mut tips = Vec::new();
    if let Ok(c) = repo.head().and_then(|h| h.peel_to_commit()) {
        tips.push(c.id());
    }
    tips.extend(ref_tips(repo, &|n| !n.starts_with("refs/heads/"))?);
    let hide = ref_tips(repo, &|n| !n.starts_with("refs/remotes/"))?;
    Ok(unreachable(repo, &tips, &hide)?.len())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::git::testutil::{precious, set_exec, write, Fixture};

    fn run(wt: &Path, branch: Option<&str>, base: Option<&str>) -> Vec<AtRisk> {
        let globs = precious();
        preflight(&Preflight {
            worktree: wt,
            branch,
            base_ref: base,
            precious: &globs,
        })
    }

    /// The preflight of a worktree made by [`Fixture::worktree`] with
    /// branch `b` based on `main`.
    fn check(wt: &Path) -> Vec<AtRisk> {
        run(wt, Some("b"), Some("main"))
    }

    fn kinds(r: &[AtRisk]) -> Vec<&'static str> {
        r.iter().map(AtRisk::kind).collect()
    }

    fn only(r: Vec<AtRisk>) -> AtRisk {
        assert_eq!(r.len(), 1, "expected exactly one reason, got {r:?}");
        r.into_iter().next().unwrap()
    }

    #[test]
    fn clean_worktree_has_no_reasons() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        assert_eq!(check(&wt), vec![]);
        // Without a base ref too: the branch tip is main's tip.
        assert_eq!(run(&wt, None, None), vec![]);
        // A merged branch is reachable from main.
        write(&wt.join("new.txt"), "x\n");
        f.commit_all(&wt, "add new");
        f.git(&f.repo, &["merge", "-q", "--no-ff", "-m", "merge b", "b"]);
        assert_eq!(check(&wt), vec![]);
    }

    #[test]
    fn staged_change() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        write(&wt.join("added.txt"), "new\n");
        f.git(&wt, &["add", "README", "added.txt"]);
        assert_eq!(
            only(check(&wt)),
            AtRisk::Staged {
                count: 2,
                paths: vec!["README".into(), "added.txt".into()]
            }
        );
    }

    #[test]
    fn unstaged_change() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        fs::remove_file(wt.join("lib.txt")).unwrap();
        assert_eq!(
            only(check(&wt)),
            AtRisk::Unstaged {
                count: 2,
                paths: vec!["README".into(), "lib.txt".into()]
            }
        );
    }

    #[test]
    fn exec_bit_change_is_unstaged() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        set_exec(&wt.join("README"));
        assert_eq!(
            only(check(&wt)),
            AtRisk::Unstaged {
                count: 1,
                paths: vec!["README".into()]
            }
        );
    }

    #[test]
    fn untracked_files_are_listed_inside_untracked_directories() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("notes.md"), "x\n");
        write(&wt.join("new/deep/file.txt"), "x\n");
        symlink("README", wt.join("link")).unwrap();
        assert_eq!(
            only(check(&wt)),
            AtRisk::Untracked {
                count: 3,
                paths: vec!["link".into(), "new/deep/file.txt".into(), "notes.md".into()]
            }
        );
    }

    #[test]
    fn untracked_paths_are_sampled() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        for i in 0..25 {
            write(&wt.join(format!("gen/f{i:02}.txt")), "x\n");
        }
        match only(check(&wt)) {
            AtRisk::Untracked { count, paths } => {
                assert_eq!(count, 25);
                assert_eq!(paths.len(), SAMPLE);
                assert_eq!(paths[0], "gen/f00.txt");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conflicts_and_merge_in_progress() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "ours\n");
        f.commit_all(&wt, "ours");
        write(&f.repo.join("README"), "theirs\n");
        f.commit_all(&f.repo, "theirs");
        let out = f.try_git(&wt, &["merge", "main"]);
        assert!(!out.status.success());
        let r = check(&wt);
        assert!(
            r.contains(&AtRisk::Conflicts {
                count: 1,
                paths: vec!["README".into()]
            }),
            "{r:?}"
        );
        assert!(r.contains(&AtRisk::OperationInProgress {
            operation: "merge".into()
        }));
        // Commit "ours" is on branch b only.
        assert!(kinds(&r).contains(&"unmerged_commits"), "{r:?}");
    }

    #[test]
    fn branch_commits_reachable_from_nothing_else() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("feature.txt"), "feature\n");
        let c1 = f.commit_all(&wt, "feature 1");
        write(&wt.join("feature.txt"), "feature 2\n");
        let c2 = f.commit_all(&wt, "feature 2");
        assert_eq!(
            only(check(&wt)),
            AtRisk::UnmergedCommits {
                count: 2,
                head: c2.clone(),
                commits: vec![c2.clone(), c1.clone()],
            }
        );
        // Another branch keeps them: not at risk.
        f.git(&f.repo, &["branch", "keep", "b"]);
        assert_eq!(check(&wt), vec![]);
        f.git(&f.repo, &["branch", "-D", "keep"]);
        // So does a tag, a remote ref, an archive ref.
        for r in [
            "refs/tags/t",
            "refs/remotes/origin/b",
            "refs/boo/archive/x/1",
        ] {
            f.git(&f.repo, &["update-ref", r, &c2]);
            assert_eq!(check(&wt), vec![], "{r}");
            f.git(&f.repo, &["update-ref", "-d", r]);
        }
        assert_eq!(kinds(&check(&wt)), vec!["unmerged_commits"]);
    }

    #[test]
    fn detached_head_commits_are_unmerged() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["checkout", "-q", "--detach"]);
        write(&wt.join("detached.txt"), "x\n");
        let c = f.commit_all(&wt, "on detached head");
        let expected = AtRisk::UnmergedCommits {
            count: 1,
            head: c.clone(),
            commits: vec![c.clone()],
        };
        assert_eq!(only(check(&wt)), expected);
        assert_eq!(only(run(&wt, None, None)), expected);
        // Another worktree detached at the same commit does not count.
        let other = f.root.join("other");
        f.git(
            &f.repo,
            &[
                "worktree",
                "add",
                "-q",
                "--detach",
                other.to_str().unwrap(),
                &c,
            ],
        );
        assert_eq!(only(check(&wt)), expected);
    }

    #[test]
    fn rebase_merged_branch_is_not_at_risk() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        write(&wt.join("b.txt"), "b\n");
        f.commit_all(&wt, "b");
        // main moves on, then takes the branch's commits rebased on top.
        write(&f.repo.join("other.txt"), "o\n");
        f.commit_all(&f.repo, "other");
        f.git(&f.repo, &["cherry-pick", "main..b"]);
        assert_ne!(f.rev(&f.repo, "main^"), f.rev(&wt, "HEAD"));
        assert_eq!(check(&wt), vec![]);
        // Without the base ref, nothing says they were merged.
        assert_eq!(kinds(&run(&wt, Some("b"), None)), vec!["unmerged_commits"]);
    }

    #[test]
    fn squash_merged_branch_is_not_at_risk() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        write(&wt.join("lib.txt"), "one\ntwo\nTHREE\nfour\nfive\n");
        f.commit_all(&wt, "b");
        write(&f.repo.join("other.txt"), "o\n");
        f.commit_all(&f.repo, "other");
        f.git(&f.repo, &["merge", "-q", "--squash", "b"]);
        f.git(&f.repo, &["commit", "-q", "-m", "squashed b"]);
        assert_eq!(check(&wt), vec![]);
        // A commit after the squash is work again.
        write(&wt.join("c.txt"), "c\n");
        let c = f.commit_all(&wt, "c");
        match only(check(&wt)) {
            AtRisk::UnmergedCommits { commits, .. } => assert_eq!(commits[0], c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partly_merged_branch_lists_only_the_rest() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        write(&wt.join("b.txt"), "b\n");
        let b = f.commit_all(&wt, "b");
        f.git(&f.repo, &["cherry-pick", "b~1"]);
        assert_eq!(
            only(check(&wt)),
            AtRisk::UnmergedCommits {
                count: 1,
                head: b.clone(),
                commits: vec![b]
            }
        );
    }

    #[test]
    fn rebase_stopped_on_a_clean_tree() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        f.git(&f.repo, &["branch", "keep", "b"]); // the commit is safe; only the rebase counts
        let out = f
            .cmd(&wt)
            .env("GIT_SEQUENCE_EDITOR", "sed -i -e 1s/^pick/edit/")
            .args(["rebase", "-q", "-i", "main"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(
            only(check(&wt)),
            AtRisk::OperationInProgress {
                operation: "rebase".into()
            }
        );
    }

    #[test]
    fn bisect_in_progress() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["bisect", "start"]);
        assert_eq!(
            only(check(&wt)),
            AtRisk::OperationInProgress {
                operation: "bisect".into()
            }
        );
    }

    #[test]
    fn cherry_pick_and_revert_in_progress() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&f.repo.join("README"), "theirs\n");
        f.commit_all(&f.repo, "theirs");
        write(&wt.join("README"), "ours\n");
        f.commit_all(&wt, "ours");
        f.git(&f.repo, &["branch", "keep", "b"]);
        assert!(!f.try_git(&wt, &["cherry-pick", "main"]).status.success());
        let r = check(&wt);
        assert!(
            r.contains(&AtRisk::OperationInProgress {
                operation: "cherry-pick".into()
            }),
            "{r:?}"
        );
        f.git(&wt, &["cherry-pick", "--abort"]);
        assert_eq!(check(&wt), vec![]);
    }

    #[test]
    fn revert_in_progress() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "v2\n");
        f.commit_all(&wt, "v2");
        write(&wt.join("README"), "v3\n");
        f.commit_all(&wt, "v3");
        f.git(&f.repo, &["branch", "keep", "b"]);
        // Reverting v2 conflicts with v3.
        assert!(!f
            .try_git(&wt, &["revert", "--no-edit", "HEAD~1"])
            .status
            .success());
        let r = check(&wt);
        assert!(
            r.contains(&AtRisk::OperationInProgress {
                operation: "revert".into()
            }),
            "{r:?}"
        );
    }

    #[test]
    fn locked_worktree_with_reason() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(
            &f.repo,
            &[
                "worktree",
                "lock",
                "--reason",
                "on a USB stick",
                wt.to_str().unwrap(),
            ],
        );
        assert_eq!(
            only(check(&wt)),
            AtRisk::Locked {
                reason: Some("on a USB stick".into())
            }
        );
        f.git(&f.repo, &["worktree", "unlock", wt.to_str().unwrap()]);
        f.git(&f.repo, &["worktree", "lock", wt.to_str().unwrap()]);
        assert_eq!(only(check(&wt)), AtRisk::Locked { reason: None });
    }

    /// A repository to use as a submodule, and a worktree of the fixture
    /// whose branch `b` records it at `sub`.
    fn with_submodule(f: &Fixture) -> std::path::PathBuf {
        let upstream = f.tmp.path().join("subrepo");
        fs::create_dir_all(&upstream).unwrap();
        f.git(&upstream, &["init", "-q"]);
        write(&upstream.join("s.txt"), "s\n");
        f.commit_all(&upstream, "sub initial");
        f.git(
            &f.repo,
            &["submodule", "add", "-q", upstream.to_str().unwrap(), "sub"],
        );
        f.commit_all(&f.repo, "add submodule");
        let wt = f.worktree("w", "b");
        f.git(&wt, &["submodule", "update", "-q", "--init"]);
        wt
    }

    #[test]
    fn submodule_with_uncommitted_changes() {
        let f = Fixture::new();
        let wt = with_submodule(&f);
        assert_eq!(check(&wt), vec![]);
        write(&wt.join("sub/s.txt"), "changed\n");
        write(&wt.join("sub/new.txt"), "new\n");
        match only(check(&wt)) {
            AtRisk::Submodule { path, detail } => {
                assert_eq!(path, "sub");
                assert!(detail.contains("1 unstaged"), "{detail}");
                assert!(detail.contains("1 untracked"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submodule_with_unpushed_commits() {
        let f = Fixture::new();
        let wt = with_submodule(&f);
        let sub = wt.join("sub");
        f.git(&sub, &["checkout", "-q", "-b", "work"]);
        write(&sub.join("s.txt"), "local\n");
        f.commit_all(&sub, "local only");
        let r = check(&wt);
        let sub_reason = r
            .iter()
            .find(|r| matches!(r, AtRisk::Submodule { .. }))
            .unwrap_or_else(|| panic!("{r:?}"));
        match sub_reason {
            AtRisk::Submodule { path, detail } => {
                assert_eq!(path, "sub");
                assert!(
                    detail.contains("1 commit(s) on no remote-tracking ref"),
                    "{detail}"
                );
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn staged_submodule_pointer_is_staged() {
        let f = Fixture::new();
        let wt = with_submodule(&f);
        let upstream = f.tmp.path().join("subrepo");
        write(&upstream.join("s.txt"), "upstream 2\n");
        f.commit_all(&upstream, "sub 2");
        let sub = wt.join("sub");
        f.git(&sub, &["fetch", "-q", "origin"]);
        f.git(&sub, &["checkout", "-q", "--detach", "origin/main"]);
        f.git(&wt, &["add", "sub"]);
        assert_eq!(
            only(check(&wt)),
            AtRisk::Staged {
                count: 1,
                paths: vec!["sub".into()]
            }
        );
    }

    #[test]
    fn nested_repository() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let nested = wt.join("vendor/lib");
        fs::create_dir_all(&nested).unwrap();
        f.git(&nested, &["init", "-q"]);
        write(&nested.join("x.txt"), "x\n");
        f.commit_all(&nested, "nested");
        assert_eq!(
            only(check(&wt)),
            AtRisk::NestedRepository {
                path: "vendor/lib".into()
            }
        );
        // Also inside an ignored directory.
        fs::rename(wt.join("vendor"), wt.join("node_modules")).unwrap();
        assert_eq!(
            only(check(&wt)),
            AtRisk::NestedRepository {
                path: "node_modules/lib".into()
            }
        );
    }

    #[test]
    fn assume_unchanged_change_is_hidden_change() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["update-index", "--assume-unchanged", "README"]);
        assert_eq!(check(&wt), vec![]);
        write(&wt.join("README"), "secretly changed\n");
        assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(
            only(check(&wt)),
            AtRisk::HiddenChanges {
                count: 1,
                paths: vec!["README".into()]
            }
        );
    }

    #[test]
    fn skip_worktree_absent_is_not_a_change_but_present_and_different_is() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["update-index", "--skip-worktree", "lib.txt"]);
        fs::remove_file(wt.join("lib.txt")).unwrap();
        assert_eq!(check(&wt), vec![]);
        write(&wt.join("lib.txt"), "one\ntwo\nthree\nfour\nfive\n");
        assert_eq!(check(&wt), vec![]);
        write(&wt.join("lib.txt"), "different\n");
        assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(
            only(check(&wt)),
            AtRisk::HiddenChanges {
                count: 1,
                paths: vec!["lib.txt".into()]
            }
        );
    }

    #[test]
    fn deleted_branch() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        let c = f.commit_all(&wt, "a");
        f.git(&f.repo, &["update-ref", "-d", "refs/heads/b"]);
        let r = check(&wt);
        assert_eq!(
            r,
            vec![
                AtRisk::BranchDeleted { branch: "b".into() },
                AtRisk::UnmergedCommits {
                    count: 1,
                    head: c.clone(),
                    commits: vec![c]
                },
            ]
        );
        // Staged changes are measured against the branch's last commit.
        write(&wt.join("a.txt"), "a2\n");
        f.git(&wt, &["add", "a.txt"]);
        assert_eq!(
            check(&wt)[2],
            AtRisk::Staged {
                count: 1,
                paths: vec!["a.txt".into()]
            }
        );
    }

    #[test]
    fn clean_merge_commits_are_skipped_but_evil_merges_are_work() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        write(&f.repo.join("m.txt"), "m\n");
        f.commit_all(&f.repo, "m");
        f.git(&wt, &["merge", "-q", "--no-edit", "main"]);
        // main takes commit a by cherry-pick (a rebase-merge).
        f.git(&f.repo, &["cherry-pick", "b~1"]);
        assert_eq!(check(&wt), vec![]);

        // An "evil" merge: the merge commit carries an extra edit.
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        f.commit_all(&wt, "a");
        write(&f.repo.join("m.txt"), "m\n");
        f.commit_all(&f.repo, "m");
        f.git(&wt, &["merge", "-q", "--no-commit", "main"]);
        write(&wt.join("evil.txt"), "only in the merge\n");
        f.git(&wt, &["add", "evil.txt"]);
        f.git(&wt, &["commit", "-q", "--no-edit"]);
        let merge = f.rev(&wt, "HEAD");
        f.git(&f.repo, &["cherry-pick", "b^1"]);
        assert_eq!(
            only(check(&wt)),
            AtRisk::UnmergedCommits {
                count: 1,
                head: merge.clone(),
                commits: vec![merge]
            }
        );
    }

    #[test]
    fn ignored_build_output_is_not_work_but_precious_files_are() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("target/debug/app"), "binary\n");
        write(&wt.join("node_modules/x/index.js"), "x\n");
        assert_eq!(check(&wt), vec![]);
        write(&wt.join(".env"), "SECRET=1\n");
        write(&wt.join("sub/.env.local"), "SECRET=2\n");
        write(&wt.join("target/.env"), "SECRET=3\n");
        // An ignored directory matching a glob is precious as a whole.
        write(&wt.join(".env.d/db"), "SECRET=4\n");
        assert_eq!(
            only(check(&wt)),
            AtRisk::PreciousIgnored {
                count: 4,
                paths: vec![
                    ".env".into(),
                    ".env.d/db".into(),
                    "sub/.env.local".into(),
                    "target/.env".into()
                ]
            }
        );
    }

    #[test]
    fn not_a_worktree_unless_empty_or_absent() {
        let f = Fixture::new();
        let dir = f.root.join("plain");
        assert_eq!(check(&dir), vec![]); // absent
        fs::create_dir(&dir).unwrap();
        assert_eq!(check(&dir), vec![]); // empty
        write(&dir.join("file"), "x\n");
        assert_eq!(kinds(&check(&dir)), vec!["not_a_worktree"]);

        // A standalone repository is not a linked worktree.
        let repo = f.root.join("standalone");
        fs::create_dir(&repo).unwrap();
        f.git(&repo, &["init", "-q"]);
        assert_eq!(kinds(&check(&repo)), vec!["not_a_worktree"]);

        // A worktree whose admin entry is gone.
        let wt = f.worktree("w", "b");
        fs::remove_dir_all(f.repo.join(".git/worktrees/w")).unwrap();
        assert_eq!(kinds(&check(&wt)), vec!["not_a_worktree"]);
    }

    #[test]
    fn preflight_does_not_write_the_index() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        write(&wt.join("u.txt"), "u\n");
        let index = f.repo.join(".git/worktrees/w/index");
        let before = fs::read(&index).unwrap();
        let mtime = fs::metadata(&index).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = check(&wt);
        assert_eq!(kinds(&r), vec!["unstaged", "untracked"]);
        assert_eq!(fs::read(&index).unwrap(), before);
        assert_eq!(fs::metadata(&index).unwrap().modified().unwrap(), mtime);
    }
}
