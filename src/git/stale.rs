//! What an admin entry (`.git/worktrees/<name>`) holds that nothing else
//! does, kept in the main repository before the entry goes.
//!
//! An admin entry is more than a pointer: it holds the worktree's HEAD and
//! its reflog, the per-worktree refs (`refs/worktree/*`, `refs/bisect/*`,
//! `refs/rewritten/*`), the index (whatever was staged), and, when
//! submodules were initialised in the worktree, their whole git directories
//! (`modules/<name>`, each with its own branches, tags, stash and reflogs).
//! Pruning the entry, or removing the worktree with it, deletes all of
//! that.
//!
//! # Guarantees
//!
//! 1. **Nothing only the entry holds is dropped.** Before a stale entry is
//!    pruned, [`keep_entry_work`] puts under one new
//!    `refs/boo/history/<name>/<unix seconds>[-<n>]` (a commit of the empty
//!    tree whose parents are what it keeps) every commit that only the
//!    entry reaches: HEAD, the HEAD reflog, the per-worktree refs, the
//!    index's staged tree as a commit (parent HEAD), and every commit of a
//!    submodule git directory inside the entry that none of that
//!    submodule's remote-tracking refs reaches (its HEAD, reflog, branches,
//!    tags, notes, stash and stash entries, its index's staged tree as a
//!    commit), fetched into the main repository as a pack of their own.
//!    Tests: `everything_a_stale_entry_holds_survives_its_prune_and_gc`,
//!    `a_submodules_staged_content_survives_its_entrys_prune_and_gc`.
//! 2. **No guess.** An index git cannot write as a tree (unmerged entries,
//!    a missing object), a submodule git directory git cannot read or
//!    fetch from: an error naming it, and the entry is not pruned. Test:
//!    `an_entry_whose_index_cannot_be_kept_is_not_pruned`.
//! 3. **As the owner, through git.** Every read, fetch and write runs the
//!    git CLI as the owner of the repository ([`super::cli`]); a repository
//!    whose state is reached through a symlink is refused
//!    ([`super::links`]).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::archive::Archived;
use super::cli::Git;
use super::paths::common_dir_of_repo;

/// What [`keep_entry_work`] kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptWork {
    /// The history ref and its commit.
    pub archived: Archived,
    /// The commits kept (the history commit's parents).
    pub commits: Vec<String>,
}

/// The per-worktree refs: they live in the admin entry and go with it.
const PER_WORKTREE: [&str; 3] = ["refs/worktree/", "refs/bisect/", "refs/rewritten/"];

/// Bounded depth of submodules inside submodules, like the preflight's.
const MAX_MODULE_DEPTH: usize = 4;

fn run(git: &Git, args: &[&str]) -> Result<String, String> {
    git.run(args)
        .map(|o| o.stdout_str())
        .map_err(|e| e.to_string())
}

fn commit_of(git: &Git, rev: &str) -> Result<Option<String>, String> {
    git.commit_of(rev).map_err(|e| e.to_string())
}

/// The commits a reflog names, newest first; empty without one. The file
/// is read by hand: git refuses to show the reflog of a HEAD whose branch
/// is gone.
pub(crate) fn reflog(git_dir: &Path, name: &str) -> Result<Vec<String>, String> {
    match fs::read_to_string(git_dir.join("logs").join(name)) {
        Ok(text) => Ok(text
            .lines()
            .rev()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|id| id.len() >= 40 && id.bytes().any(|b| b != b'0'))
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!(
            "reading the reflog {}: {e}",
            git_dir.join("logs").join(name).display()
        )),
    }
}

/// Of `tips`, the commits git can find, each once, in order.
fn commits(git: &Git, tips: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for t in tips {
        if let Some(c) = commit_of(git, t)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Of `tips`, those `rev-list <tips> <hide>` lists: the tips no keeper
/// reaches (keeping them keeps what they reach).
fn unreached(git: &Git, tips: Vec<String>, hide: &[&str]) -> Result<Vec<String>, String> {
    if tips.is_empty() {
        return Ok(tips);
    }
    let mut args: Vec<&str> = vec!["rev-list"];
    args.extend(tips.iter().map(String::as_str));
    args.extend(hide);
    let lost: HashSet<String> = run(git, &args)?.lines().map(str::to_string).collect();
    Ok(tips.into_iter().filter(|c| lost.contains(c)).collect())
}

fn ref_tips(git: &Git, patterns: &[&str]) -> Result<Vec<String>, String> {
    let mut args = vec!["for-each-ref", "--format=%(objectname)"];
    args.extend(patterns);
    Ok(run(git, &args)?.lines().map(str::to_string).collect())
}

/// The commit of what the entry's index has staged, when it differs from
/// HEAD's tree (parent HEAD); `None` when nothing is staged or there is no
/// index. An index git cannot write as a tree is an error: its content
/// would be lost.
fn staged_commit(git: &Git, admin: &Path, head: Option<&str>) -> Result<Option<String>, String> {
    if !admin.join("index").exists() {
        return Ok(None);
    }
    let tree = run(git, &["write-tree"])
        .map_err(|e| format!("its index cannot be kept as a tree: {e}"))?
        .trim()
        .to_string();
    let head_tree = match head {
        Some(h) => Some(run(git, &["rev-parse", &format!("{h}^{{tree}}")])?),
        None => None,
    };
    if head_tree.as_deref().map(str::trim) == Some(tree.as_str()) {
        return Ok(None);
    }
    let message = "boo-reconciler: what the worktree's index had staged";
    let mut args = vec![
        "-c",
        "user.name=boo-reconciler",
        "-c",
        "user.email=boo-reconciler@localhost",
        "commit-tree",
        &tree,
        "-m",
        message,
    ];
    if let Some(h) = head {
        args.extend(["-p", h]);
    }
    Ok(Some(run(git, &args)?.trim().to_string()))
}

/// The commits only the admin entry `admin` reaches, in the main
/// repository: HEAD, its reflog, the per-worktree refs, the staged tree.
fn entry_commits(main: &Git, admin: &Path) -> Result<Vec<String>, String> {
    let git = main.with_git_dir(admin);
    let head = commit_of(&git, "HEAD")?;
    let mut tips: Vec<String> = head.iter().cloned().collect();
    tips.extend(reflog(admin, "HEAD")?);
    tips.extend(ref_tips(&git, &PER_WORKTREE)?);
    let mut tips = commits(&git, &tips)?;
    tips.extend(staged_commit(&git, admin, head.as_deref())?);
    let mut hide = vec!["--not"];
    let excludes: Vec<String> = PER_WORKTREE
        .iter()
        .map(|p| format!("--exclude={p}*"))
        .collect();
    hide.extend(excludes.iter().map(String::as_str));
    hide.push("--glob=refs/*");
    unreached(&git, tips, &hide)
}

/// The submodule git directories under `modules` (a git directory's
/// `modules/`), their own submodules' included: `(name, git directory)`.
pub fn module_git_dirs(modules: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    collect_modules(modules, "", 0, &mut out);
    out
}

fn is_git_dir(dir: &Path) -> bool {
    let is = |p: &Path, dir: bool| {
        fs::symlink_metadata(p)
            .map(|m| if dir { m.is_dir() } else { m.is_file() })
            .unwrap_or(false)
    };
    is(&dir.join("HEAD"), false) && is(&dir.join("objects"), true)
}

fn collect_modules(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        // Never through a symlink: what it leads to is not this entry's.
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if is_git_dir(&path) {
            out.push((name.clone(), path.clone()));
            if depth < MAX_MODULE_DEPTH {
                collect_modules(&path.join("modules"), &format!("{name}/"), depth + 1, out);
            }
        } else {
            // A submodule named `a/b` lives at `modules/a/b`.
            collect_modules(&path, &format!("{name}/"), depth, out);
        }
    }
}

/// The commits of the submodule git directory `module` that none of its
/// remote-tracking refs reaches: its HEAD and HEAD reflog, branches, tags,
/// notes, the stash and its entries, and what its index has staged (as a
/// commit, parent HEAD: the index goes with the git directory).
pub fn module_commits(main: &Git, module: &Path) -> Result<Vec<String>, String> {
    let git = main.with_git_dir(module);
    let mut tips = vec!["HEAD".to_string()];
    tips.extend(reflog(module, "HEAD")?);
    tips.extend(ref_tips(
        &git,
        &["refs/heads/", "refs/tags/", "refs/notes/", "refs/stash"],
    )?);
    tips.extend(reflog(module, "refs/stash")?);
    let mut tips = commits(&git, &tips)?;
    let head = commit_of(&git, "HEAD")?;
    tips.extend(staged_commit(&git, module, head.as_deref())?);
    unreached(&git, tips, &["--not", "--remotes"])
}

/// Copies `commits` of the git directory `from`, with everything they
/// reach (a commit whose parent is missing would break every later `git
/// gc` of the main repository), into the main repository whose common git
/// directory is `common`, as one new pack written by git as the owner; the
/// objects are unreferenced until the caller's history ref names them.
///
/// Not `git fetch`: the upload-pack it starts drops the environment that
/// tells git to ignore the submodule's `core.worktree`, which names the
/// directory that is gone, and refuses to run.
fn copy_commits(main: &Git, from: &Path, common: &Path, commits: &[String]) -> Result<(), String> {
    if commits.is_empty() {
        return Ok(());
    }
    let git = main.with_git_dir(from);
    let mut input = String::new();
    for c in commits {
        input.push_str(c);
        input.push('\n');
    }
    let base = common.join("objects/pack/pack");
    let base = base.to_string_lossy();
    git.run_with_input(
        &[
            "pack-objects",
            "--revs",
            "--quiet",
            "--delta-base-offset",
            &base,
        ],
        input.as_bytes(),
    )
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Every submodule git directory inside `git_dir/modules` whose commits
/// no remote-tracking ref of its own reaches: fetched into the main
/// repository; the commits, to be named by a history ref.
pub fn keep_modules(main: &Git, git_dir: &Path, common: &Path) -> Result<Vec<String>, String> {
    let mut kept = Vec::new();
    for (name, dir) in module_git_dirs(&git_dir.join("modules")) {
        let commits = module_commits(main, &dir).map_err(|e| format!("submodule {name}: {e}"))?;
        copy_commits(main, &dir, common, &commits)
            .map_err(|e| format!("submodule {name}: copying its commits: {e}"))?;
        kept.extend(commits);
    }
    Ok(kept)
}

/// Keeps everything only the admin entry `name` of the repository `repo`
/// holds (guarantee 1) under one history ref; `Ok(None)` when nothing
/// needs keeping or the entry is gone already.
pub fn keep_entry_work(
    repo: &Path,
    name: &str,
    now: SystemTime,
    timeout: Duration,
) -> Result<Option<KeptWork>, String> {
    let common = common_dir_of_repo(repo)
        .ok_or_else(|| format!("{} is not a git repository", repo.display()))?;
    let admin = common.join("worktrees").join(name);
    if fs::symlink_metadata(&admin).is_err() {
        return Ok(None);
    }
    if let Some(detail) = super::links::unsafe_links(&common, Some(&admin)) {
        return Err(format!("unsafe repository, left alone: {detail}"));
    }
    let main = Git::for_dir(&common, timeout)
        .map_err(|e| e.to_string())?
        .with_git_dir(&common);
    let mut commits = entry_commits(&main, &admin)?;
    let modules = keep_modules(&main, &admin, &common)?;
    let own = commits.len();
    for c in modules {
        if !commits.contains(&c) {
            commits.push(c);
        }
    }
    if commits.is_empty() {
        return Ok(None);
    }
    let message = format!(
        "boo-reconciler: what admin entry {name} alone held, kept before it was pruned\n\n\
         {own} commit(s) of the worktree (HEAD, its reflog, per-worktree refs, the staged \
         index), {} of its submodules' git directories",
        commits.len() - own
    );
    let archived = super::keep::keep_commits(&main, name, &commits, &message, now)?;
    Ok(Some(KeptWork { archived, commits }))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::testutil::{write, Fixture};

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn has(f: &Fixture, oid: &str) -> bool {
        f.has_object(oid)
    }

    #[test]
    fn everything_a_stale_entry_holds_survives_its_prune_and_gc() {
        let f = Fixture::new();
        let (wt, sub) = f.worktree_with_submodule("det");
        // The worktree: a commit only HEAD reaches, one only the reflog
        // reaches, one only a per-worktree ref reaches, and a staged file.
        write(&wt.join("d.txt"), "d1\n");
        let d1 = f.commit_all(&wt, "d1");
        write(&wt.join("d.txt"), "d2\n");
        let d2 = f.commit_all(&wt, "d2");
        f.git(&wt, &["reset", "-q", "--hard", &d1]);
        write(&wt.join("d.txt"), "d3\n");
        let d3 = f.commit_all(&wt, "d3");
        f.git(&wt, &["update-ref", "refs/worktree/mine", &d3]);
        f.git(&wt, &["reset", "-q", "--hard", &d1]);
        write(&wt.join("staged.txt"), "staged only\n");
        f.git(&wt, &["add", "staged.txt"]);
        let blob = f.git(&wt, &["rev-parse", ":staged.txt"]);
        // The submodule: a local branch, a tag-only commit, a stash.
        f.git(&sub, &["checkout", "-q", "-b", "local"]);
        write(&sub.join("b.txt"), "branch\n");
        let s_branch = f.commit_all(&sub, "on a local branch");
        f.git(&sub, &["checkout", "-q", "--detach"]);
        write(&sub.join("t.txt"), "tagged\n");
        let s_tag = f.commit_all(&sub, "tagged only");
        f.git(&sub, &["tag", "-a", "-m", "t", "kept-tag"]);
        f.git(&sub, &["checkout", "-q", "local"]);
        write(&sub.join("s.txt"), "stashed\n");
        f.git(&sub, &["stash", "-q"]);
        let stash = f.rev(&sub, "refs/stash");
        write(&sub.join("s.txt"), "stashed earlier\n");
        f.git(&sub, &["stash", "-q"]);
        let older_stash = stash.clone();
        let newer_stash = f.rev(&sub, "refs/stash");

        fs::remove_dir_all(&wt).unwrap();
        let kept = keep_entry_work(&f.repo, "det", now(), DEFAULT_TIMEOUT)
            .unwrap()
            .expect("the entry holds work");
        assert!(
            kept.archived
                .reference
                .starts_with("refs/boo/history/det/1700000000"),
            "{kept:?}"
        );
        assert_eq!(crate::git::admin::prune_for(&f.repo, &wt).unwrap(), 1);
        f.expire_and_gc();
        for (what, oid) in [
            ("HEAD", &d1),
            ("reflog-only", &d2),
            ("refs/worktree", &d3),
            ("staged blob", &blob),
            ("submodule branch", &s_branch),
            ("submodule tag", &s_tag),
            ("submodule stash", &older_stash),
            ("submodule newer stash", &newer_stash),
        ] {
            assert!(has(&f, oid), "{what} {oid} lost");
        }
        // Kept again, nothing new: nothing only the entry held is left.
        assert_eq!(
            keep_entry_work(&f.repo, "det", now(), DEFAULT_TIMEOUT).unwrap(),
            None
        );
    }

    #[test]
    fn a_submodules_staged_content_survives_its_entrys_prune_and_gc() {
        let f = Fixture::new();
        let (wt, sub) = f.worktree_with_submodule("st");
        // Staged in the submodule, then deleted from the disk: only the
        // submodule's index (inside the admin entry) has it.
        write(&sub.join("only-staged.txt"), "staged in the submodule\n");
        f.git(&sub, &["add", "only-staged.txt"]);
        let blob = f.git(&sub, &["rev-parse", ":only-staged.txt"]);
        fs::remove_file(sub.join("only-staged.txt")).unwrap();
        fs::remove_dir_all(&wt).unwrap();
        keep_entry_work(&f.repo, "st", now(), DEFAULT_TIMEOUT)
            .unwrap()
            .expect("the submodule's index holds work");
        assert_eq!(crate::git::admin::prune_for(&f.repo, &wt).unwrap(), 1);
        f.expire_and_gc();
        assert!(has(&f, &blob), "the submodule's staged blob {blob} lost");
    }

    #[test]
    fn an_entry_holding_nothing_of_its_own_keeps_nothing() {
        let f = Fixture::new();
        let wt = f.worktree("b", "b");
        write(&wt.join("x.txt"), "x\n");
        f.commit_all(&wt, "on the branch");
        fs::remove_dir_all(&wt).unwrap();
        assert_eq!(
            keep_entry_work(&f.repo, "b", now(), DEFAULT_TIMEOUT).unwrap(),
            None
        );
        let refs = f.git(&f.repo, &["for-each-ref", "refs/boo/"]);
        assert_eq!(refs, "");
    }

    #[test]
    fn an_entry_whose_index_cannot_be_kept_is_an_error() {
        let f = Fixture::new();
        let wt = f.worktree("c", "c");
        write(&wt.join("lib.txt"), "theirs\n");
        f.commit_all(&wt, "theirs");
        f.git(&f.repo, &["checkout", "-q", "-b", "other"]);
        write(&f.repo.join("lib.txt"), "ours\n");
        f.commit_all(&f.repo, "ours");
        let merge = f.try_git(&wt, &["merge", "-q", "other"]);
        assert!(!merge.status.success(), "a conflict was wanted");
        fs::remove_dir_all(&wt).unwrap();
        let e = keep_entry_work(&f.repo, "c", now(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("index cannot be kept"), "{e}");
        let refs = f.git(&f.repo, &["for-each-ref", "refs/boo/"]);
        assert_eq!(refs, "");
    }

    #[test]
    fn module_git_dirs_are_found_under_nested_names_and_never_through_a_link() {
        let f = Fixture::new();
        let modules = f.tmp.path().join("modules");
        for dir in ["a", "x/y", "a/modules/inner"] {
            let d = modules.join(dir);
            fs::create_dir_all(&d).unwrap();
            f.git(&d, &["init", "-q", "--bare"]);
        }
        std::os::unix::fs::symlink(modules.join("a"), modules.join("link")).unwrap();
        let found: Vec<String> = module_git_dirs(&modules)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, ["a", "a/inner", "x/y"]);
        let _ = Path::new("");
    }
}
