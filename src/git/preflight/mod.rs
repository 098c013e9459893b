//! The preflight: every reason removing a worktree would lose work.
//!
//! **Git's own view is the authority** (DESIGN rule 8). What `git status`
//! shows the worktree's owner is what counts as work; the preflight asks
//! the git CLI itself ([`super::cli`]: as the owner, hooks and fsmonitor
//! off, bounded) and adds checks of its own for what git does not report.
//! An added check can only keep a worktree, never clear one that git says
//! holds work. libgit2 decides nothing here: where it diverges from git
//! (whitespace in ignore rules, a `.GIT` directory, a symlinked
//! `.gitignore`, sha256 or reftable repositories, split or sparse indexes,
//! clean filters) it would decide wrongly.
//!
//! What counts as work, and the choices made where git leaves room:
//!
//! * **Identity first.** The directory judged is exactly the directory that
//!   would be deleted: its `.git` file names an admin entry whose `gitdir`
//!   names this very `.git` file back (same inode), git agrees on the top
//!   level and both git directories, and the main repository is the row's
//!   `repo_path`. A copy (`cp -a`) of a worktree, a moved worktree whose
//!   admin entry still names its old place, or a worktree of another
//!   repository is `not_a_worktree`: kept, and `--force` does not override.
//! * **Files**, from `git status --porcelain=v2 -z --untracked-files=all
//!   --ignored=matching --ignore-submodules=none` (the command line
//!   overrides `status.showUntrackedFiles=no` and a submodule's `ignore`
//!   setting): staged, unstaged, untracked, conflicted; and ignored files
//!   matching a `precious` glob (by relative path or by file name, so
//!   `.env` matches `sub/.env`; everything inside an ignored directory that
//!   itself matches). Other ignored files (`target/`, `node_modules/`) are
//!   build output, not work. A directory git says it could not open is
//!   `unreadable`.
//! * **The controller's own walk** of the whole directory (no symlink
//!   followed) finds what git does not report: nested repositories
//!   anywhere — in tracked directories too — that are not submodules, and
//!   entries that cannot be read (`unreadable`; never chmod'ed to get at
//!   them).
//! * **Hidden changes**: index entries marked assume-unchanged or
//!   skip-worktree (`git ls-files -v`) are compared by hand: mode, and the
//!   file's `git hash-object` against the index's object. A skip-worktree
//!   entry whose file is absent is sparse checkout, not a change; an absent
//!   assume-unchanged file loses nothing (its content is in the index).
//! * **Commits**: the tips are HEAD and the worktree's own branch (HEAD's
//!   branch, or the row's `branch` when HEAD is detached). A commit is lost
//!   when no other ref reaches it (`git rev-list <tips> --not --glob=refs/*`
//!   less the own branch and the per-worktree refs `refs/worktree/*`,
//!   `refs/bisect/*`, `refs/rewritten/*`, which vanish with the worktree).
//!   **Other worktrees' HEADs are not counted**: a detached HEAD is
//!   transient, and two worktrees detached on the same commit and removed
//!   in one pass would each rely on the other.
//! * **Merged elsewhere**: with a base (the row's `base_ref`, else the main
//!   repository's HEAD branch and each remote's default branch), a lost
//!   commit is not at risk when the base holds it in another shape: by
//!   `git cherry` (rebase-merge, cherry-pick), or when the whole
//!   `merge-base..tip` diff has the patch id of one commit of the base
//!   (squash-merge). A lost merge commit is work unless it is a clean merge
//!   of its two parents (`git merge-tree` gives its tree): an "evil" merge
//!   holds a resolution.
//! * **Commits only the HEAD reflog or `refs/worktree/*` reach** are not a
//!   reason to keep a worktree (an amended commit would be a false alarm
//!   on every worktree), but they are not dropped either: the removal keeps
//!   them under an archive ref ([`unreferenced_history`]).
//! * **Branch deleted**: HEAD names a branch that does not exist, and there
//!   is evidence it had commits (a HEAD reflog entry, or the row's `branch`
//!   is that branch); the newest commit of the HEAD reflog then stands for
//!   HEAD in the commit check, and staged means "differs from it".
//! * **Operations**: merge, rebase (also stopped on a clean tree), am,
//!   cherry-pick, revert (also a stopped sequence) and bisect, read from the
//!   worktree's own git directory; `git worktree lock`.
//! * **Submodules**: git's status says which have new commits, modified or
//!   untracked content; the controller adds operations in progress and —
//!   when the submodule's git directory goes away with the worktree —
//!   commits of its HEAD and local branches that none of its remote-tracking
//!   refs reaches.
//! * **Not a worktree**: a non-empty directory with no `.git`, a standalone
//!   repository, a `.git` file whose admin entry is gone. A directory that
//!   does not exist, or is empty, has nothing to lose.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;

use super::cli::{Git, GitCliError};
use super::mode::octal::{EXEC, GITLINK, SYMLINK};
use super::paths::{common_dir_of_admin, dot_git, join_rel, read_line_file, rel_str, DotGit};
use super::refs::RefsCache;
use super::scan::is_precious;
use super::status::{self, Status};
use crate::risk::{sample, AtRisk, SAMPLE};

/// What the preflight needs to know about one worktree.
pub struct Preflight<'a> {
    /// The worktree directory (already confined to the root by the caller).
    pub worktree: &'a Path,
    /// The branch recorded in the `worktrees` row, if any.
    pub branch: Option<&'a str>,
    /// The ref the worktree was created from (`worktrees.base_ref`), if any.
    pub base_ref: Option<&'a str>,
    /// The main repository the row names (`worktrees.repo_path`); `None`
    /// for a directory no row names.
    pub repo_path: Option<&'a Path>,
    /// Ignored files matching these globs are work (`.env`).
    pub precious: &'a GlobSet,
    /// The bound on each git command.
    pub timeout: Duration,
    /// Every reason, or only whether there is one.
    pub depth: Depth,
    /// The repository's surviving refs, listed once and shared by the
    /// preflights of its worktrees; `None` asks `git rev-list` every time.
    pub refs: Option<&'a RefsCache>,
}

/// How much of the preflight a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every reason: what a report shows, and what `--force` must weigh
    /// (some reasons it does not override).
    All,
    /// Whether anything is at risk: the checks stop after the first that
    /// finds a reason, cheapest first. An empty answer is exactly as
    /// thorough as [`Depth::All`]'s; a non-empty one may name fewer
    /// reasons.
    First,
}

/// Where one preflight's time went.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub total: Duration,
    /// Each git command it ran: the subcommand and how long it took.
    pub git: Vec<(String, Duration)>,
}

impl Cost {
    /// The time in git commands named `name`.
    pub fn in_git(&self, name: &str) -> Duration {
        self.git
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .sum()
    }

    /// The time in every git command.
    pub fn all_git(&self) -> Duration {
        self.git.iter().map(|(_, d)| *d).sum()
    }
}

/// Every reason removing the worktree would lose work; empty means safe.
/// Never returns an error: a check that cannot finish is itself a reason
/// ([`AtRisk::PreflightFailed`]), so that doubt always keeps the worktree.
pub fn preflight(p: &Preflight<'_>) -> Vec<AtRisk> {
    let (reasons, cost) = preflight_costed(p);
    tracing::debug!(
        worktree = %p.worktree.display(),
        total_ms = cost.total.as_secs_f64() * 1e3,
        git_ms = cost.all_git().as_secs_f64() * 1e3,
        git_commands = cost.git.len(),
        reasons = reasons.len(),
        "preflight"
    );
    reasons
}

/// [`preflight`], and where its time went.
pub fn preflight_costed(p: &Preflight<'_>) -> (Vec<AtRisk>, Cost) {
    let t = std::time::Instant::now();
    let (out, git) = super::cli::spent::measured(|| {
        let mut out = Vec::new();
        inspect(p, &mut out);
        out
    });
    let cost = Cost {
        total: t.elapsed(),
        git,
    };
    (out, cost)
}

const MAX_SUBMODULE_DEPTH: usize = 4;

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

/// `(device, inode)`: what makes two spellings one file.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((file_id(a), file_id(b)), (Some(x), Some(y)) if x == y)
}

/// The git directory of a main repository named by a row: `<path>/.git`
/// for a repository with a working tree, the path itself when bare.
fn git_dir_of_main(repo_path: &Path) -> PathBuf {
    let dot = repo_path.join(".git");
    if fs::symlink_metadata(&dot).is_ok_and(|m| m.is_dir()) {
        dot
    } else {
        repo_path.to_path_buf()
    }
}

/// A linked worktree whose identity has been confirmed both ways.
struct Linked {
    /// The worktree's own git directory (`<common>/worktrees/<name>`).
    admin: PathBuf,
    /// The main repository's git directory.
    common: PathBuf,
    git: Git,
}

/// Confirms that `dir` is exactly the linked worktree its admin entry
/// describes, of the repository the row names. `None` when it is not (the
/// reason is pushed) or when there is nothing to judge.
fn identify(p: &Preflight<'_>, out: &mut Vec<AtRisk>) -> Option<Linked> {
    let dir = p.worktree;
    a_directory(dir, out)?;
    let admin = admin_named(dir, out)?;
    let common = common_of(&admin, out)?;
    links_back(dir, &admin, out)?;
    if let Some(repo) = p.repo_path {
        of_the_row(repo, &common, out)?;
    }
    let git = match Git::for_dir(dir, p.timeout) {
        Ok(g) => g,
        Err(e) => {
            failed(out, "git", e);
            return None;
        }
    };
    git_agrees(&git, dir, &admin, &common, out)?;
    Some(Linked { admin, common, git })
}

/// Only a directory itself is judged: a missing one has nothing to lose,
/// and what a symbolic link points at is not what removal would delete.
fn a_directory(dir: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            failed(out, "stat", e);
            None
        }
        Ok(m) if m.file_type().is_symlink() => {
            not_a_worktree(out, "a symbolic link, not a directory".into());
            None
        }
        Ok(m) if !m.is_dir() => {
            not_a_worktree(out, "not a directory".into());
            None
        }
        Ok(_) => Some(()),
    }
}

/// The admin entry `dir`'s `.git` file names: only a `.git` file makes a
/// linked worktree, and an empty directory without one holds nothing.
fn admin_named(dir: &Path, out: &mut Vec<AtRisk>) -> Option<PathBuf> {
    match dot_git(dir) {
        DotGit::Missing => {
            match is_empty_dir(dir) {
                Ok(true) => {}
                Ok(false) => {
                    not_a_worktree(out, "no .git file, but the directory is not empty".into())
                }
                Err(e) => out.push(AtRisk::Unreadable {
                    count: 1,
                    paths: vec![format!(". ({e})")],
                }),
            }
            None
        }
        DotGit::Directory => {
            not_a_worktree(
                out,
                "a standalone repository (.git is a directory), not a linked worktree".into(),
            );
            None
        }
        DotGit::Broken { detail } => {
            not_a_worktree(out, detail);
            None
        }
        DotGit::File { gitdir } => Some(gitdir),
    }
}

/// The main repository's git directory, from the admin entry: the entry
/// must still exist and sit where a linked worktree's does.
fn common_of(admin: &Path, out: &mut Vec<AtRisk>) -> Option<PathBuf> {
    if !admin.is_dir() {
        not_a_worktree(
            out,
            format!(
                "its git directory {} is gone (worktree pruned?)",
                admin.display()
            ),
        );
        return None;
    }
    let Some(common) = common_dir_of_admin(admin) else {
        not_a_worktree(
            out,
            format!(
                ".git points at {}, which is not a linked worktree's git directory",
                admin.display()
            ),
        );
        return None;
    };
    Some(common)
}

/// The link back: the admin entry must name this directory's `.git`, not
/// the original a copy was made from, nor the old place of a worktree that
/// was moved.
fn links_back(dir: &Path, admin: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    let dot = dir.join(".git");
    match read_line_file(&admin.join("gitdir")) {
        Ok(back) if same_file(Path::new(&back), &dot) => Some(()),
        Ok(back) => {
            not_a_worktree(
                out,
                format!(
                    "its admin entry {} belongs to {back}, not to this directory: a copy, or a \
                     worktree moved without `git worktree repair`",
                    admin.display()
                ),
            );
            None
        }
        Err(e) => {
            not_a_worktree(
                out,
                format!("cannot read {}: {e}", admin.join("gitdir").display()),
            );
            None
        }
    }
}

/// A worktree of another repository than the row's is not the row's
/// worktree, whatever its links say.
fn of_the_row(repo: &Path, common: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    if !same_file(&git_dir_of_main(repo), common) {
        not_a_worktree(
            out,
            format!(
                "a worktree of {}, not of the repository its row names ({})",
                common.display(),
                repo.display()
            ),
        );
        return None;
    }
    Some(())
}

/// Git's own reading of the same links must agree: every check after this
/// one asks git, and must ask it about this very directory.
fn git_agrees(
    git: &Git,
    dir: &Path,
    admin: &Path,
    common: &Path,
    out: &mut Vec<AtRisk>,
) -> Option<()> {
    let text = match git.run(&[
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--absolute-git-dir",
        "--git-common-dir",
    ]) {
        Ok(o) => o.stdout_str(),
        Err(e) => {
            not_a_worktree(out, format!("git cannot use it as a worktree: {e}"));
            return None;
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let agrees = lines.len() == 3
        && same_file(Path::new(lines[0]), dir)
        && same_file(Path::new(lines[1]), admin)
        && same_file(Path::new(lines[2]), common);
    if !agrees {
        not_a_worktree(
            out,
            format!(
                "git reads its links differently (top level, git directory, common \
                 directory: {})",
                lines.join(", ")
            ),
        );
        return None;
    }
    Some(())
}

fn inspect(p: &Preflight<'_>, out: &mut Vec<AtRisk>) {
    let Some(Linked { admin, common, git }) = identify(p, out) else {
        return;
    };
    // Under `Depth::First`, whether to stop: something was found.
    let done = |out: &Vec<AtRisk>| p.depth == Depth::First && !out.is_empty();
    let dir = p.worktree;
    locked(&admin, out);
    for op in operations(&admin) {
        out.push(AtRisk::OperationInProgress { operation: op });
    }
    if done(out) {
        return;
    }
    let status = status_of(&git, out);
    let mut subs = submodules_in_status(status.as_ref());
    if p.depth == Depth::First {
        if let Some(s) = &status {
            what_status_says(s, out);
        }
        push_submodules(std::mem::take(&mut subs), out);
        if done(out) {
            return;
        }
    }
    let stand_in = match &status {
        Some(s) => match commits(p, &git, &admin, &common, s, out) {
            Ok(h) => h,
            Err(e) => {
                failed(out, "commits", e);
                None
            }
        },
        None => None,
    };
    if done(out) {
        return;
    }
    let index = index_of(&git, out);
    let gitlinks = gitlinks_of(index.as_deref());
    if let Some(s) = &status {
        let staged = staged_of(&git, s, stand_in.as_deref(), out);
        let walked = walk(dir, s, &gitlinks, p.precious);
        push_files(s, staged, &walked, out);
    }
    if done(out) {
        return;
    }
    if let Some(index) = &index {
        push_hidden_changes(&git, dir, index, out);
        if done(out) {
            return;
        }
        check_submodules(&git, dir, &admin, &gitlinks, &mut subs);
    }
    push_submodules(subs, out);
}

/// Per submodule, what git's status says of it and what the controller's
/// own checks add, so that each submodule is one reason.
type PerSubmodule = std::collections::BTreeMap<Vec<u8>, Vec<String>>;

/// Git's status of the worktree; `None` when git cannot give it (a reason
/// then), so that the checks that do not need it still run.
fn status_of(git: &Git, out: &mut Vec<AtRisk>) -> Option<Status> {
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
fn submodules_in_status(status: Option<&Status>) -> PerSubmodule {
    let mut subs = PerSubmodule::default();
    for (path, state) in status.iter().flat_map(|s| s.submodules.iter()) {
        subs.entry(path.clone()).or_default().push(state.describe());
    }
    subs
}

/// What git's status alone says, pushed before any costlier check so that
/// `Depth::First` can stop at it. Staged is final unless HEAD is unborn
/// (its branch deleted: the commit check decides).
fn what_status_says(s: &Status, out: &mut Vec<AtRisk>) {
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
fn index_of(git: &Git, out: &mut Vec<AtRisk>) -> Option<Vec<IndexEntry>> {
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
fn gitlinks_of(index: Option<&[IndexEntry]>) -> HashSet<Vec<u8>> {
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
fn staged_of(git: &Git, s: &Status, stand_in: Option<&str>, out: &mut Vec<AtRisk>) -> Vec<Vec<u8>> {
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
fn push_hidden_changes(git: &Git, dir: &Path, index: &[IndexEntry], out: &mut Vec<AtRisk>) {
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
/// beyond git's status.
fn check_submodules(
    git: &Git,
    dir: &Path,
    admin: &Path,
    gitlinks: &HashSet<Vec<u8>>,
    subs: &mut PerSubmodule,
) {
    for path in gitlinks {
        let mut problems = Vec::new();
        submodule_problems(git, &join_rel(dir, path), dir, admin, 0, &mut problems);
        if !problems.is_empty() {
            subs.entry(path.clone()).or_default().extend(problems);
        }
    }
}

fn push_submodules(subs: PerSubmodule, out: &mut Vec<AtRisk>) {
    for (path, details) in subs {
        out.push(AtRisk::Submodule {
            path: rel_str(&path),
            detail: details.join("; "),
        });
    }
}

/// `git status` as the owner sees it, and the directories it could not
/// read.
pub(crate) fn git_status(git: &Git) -> Result<(Status, Vec<String>), String> {
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

fn nul_fields(out: &[u8]) -> Vec<Vec<u8>> {
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
struct Frame {
    path: PathBuf,
    /// Relative to the worktree; empty for the worktree itself.
    rel: Vec<u8>,
    /// Inside an ignored directory whose name is precious: Some(precious?).
    ignored_dir: Option<bool>,
}

/// What git's status says is ignored, and the submodules, indexed once so
/// that each entry of the walk is a lookup.
struct Lookups<'a> {
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
fn listing(path: &Path, rel: &[u8], w: &mut Walked) -> Option<Vec<fs::DirEntry>> {
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
fn visit(
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
fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        rel_str(rel)
    }
}

fn push_files(s: &Status, staged: Vec<Vec<u8>>, w: &Walked, out: &mut Vec<AtRisk>) {
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

fn locked(admin: &Path, out: &mut Vec<AtRisk>) {
    let lock = admin.join("locked");
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
/// `gitdir` (each worktree keeps its own `MERGE_HEAD`, `rebase-merge/`, …),
/// read from the files git itself keeps for them.
pub(crate) fn operations(gitdir: &Path) -> Vec<String> {
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
    ops
}

fn branch_ref(b: &str) -> String {
    if b.starts_with("refs/") {
        b.to_string()
    } else {
        format!("refs/heads/{b}")
    }
}

/// The commit `rev` names, if it names one.
fn commit_of(git: &Git, rev: &str) -> Result<Option<String>, GitCliError> {
    let (st, o) = git.run_status(
        &[
            "rev-parse",
            "--verify",
            "-q",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
        &[],
    )?;
    Ok(st
        .success()
        .then(|| o.stdout_str().trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// The commits HEAD's reflog names, newest first. Read by git when HEAD
/// resolves; when it does not (its branch was deleted), git refuses to
/// show the reflog, and the file it keeps is read instead.
fn head_reflog(git: &Git, admin: &Path) -> Result<Vec<String>, String> {
    let (st, o) = git
        .run_status(&["reflog", "show", "--format=%H", "HEAD", "--"], &[])
        .map_err(|e| e.to_string())?;
    if st.success() {
        return Ok(o.stdout_str().lines().map(str::to_string).collect());
    }
    let (exists, _) = git
        .run_status(&["reflog", "exists", "HEAD"], &[])
        .map_err(|e| e.to_string())?;
    if !exists.success() {
        return Ok(Vec::new());
    }
    match fs::read_to_string(admin.join("logs/HEAD")) {
        Ok(text) => Ok(text
            .lines()
            .rev()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|id| id.bytes().any(|b| b != b'0'))
            .map(str::to_string)
            .collect()),
        Err(e) => Err(format!("HEAD has a reflog git will not show, and: {e}")),
    }
}

/// The refs that keep commits after the worktree is gone, as `rev-list`
/// arguments: every ref but the per-worktree ones and `except`.
fn keeper_args(except: Option<&str>) -> Vec<String> {
    let mut v = vec!["--not".to_string()];
    if let Some(e) = except {
        v.push(format!("--exclude={e}"));
    }
    for per in ["refs/worktree/*", "refs/bisect/*", "refs/rewritten/*"] {
        v.push(format!("--exclude={per}"));
    }
    v.push("--glob=refs/*".into());
    v
}

fn rev_list(git: &Git, tips: &[String], rest: &[String]) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = vec!["rev-list".into()];
    args.extend(tips.iter().cloned());
    args.extend(rest.iter().cloned());
    let o = git.run(&args).map_err(|e| e.to_string())?;
    Ok(o.stdout_str().lines().map(str::to_string).collect())
}

/// The bases a lost commit may have been merged into: the row's
/// `base_ref`, else the main repository's own HEAD branch and each
/// remote's default branch.
fn bases(p: &Preflight<'_>, git: &Git) -> Result<Vec<String>, GitCliError> {
    let mut names: Vec<String> = Vec::new();
    match p.base_ref {
        Some(b) => names.push(b.to_string()),
        None => {
            // The main worktree's HEAD, seen from a linked worktree.
            let (st, o) = git.run_status(&["symbolic-ref", "-q", "main-worktree/HEAD"], &[])?;
            if st.success() {
                names.push(o.stdout_str().trim().to_string());
            }
            let o = git.run(&["for-each-ref", "--format=%(symref)", "refs/remotes/*/HEAD"])?;
            names.extend(
                o.stdout_str()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let mut out = Vec::new();
    for n in names {
        if let Some(c) = commit_of(git, &n)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Of `lost`, the commits of `tip` that `base` does not hold in another
/// shape (see the module's "Merged elsewhere").
fn not_in_base(git: &Git, lost: &[String], tip: &str, base: &str) -> Result<Vec<String>, String> {
    let err = |e: GitCliError| e.to_string();
    let merges: HashSet<String> = rev_list(
        git,
        &[tip.to_string()],
        &["--merges".into(), format!("^{base}")],
    )?
    .into_iter()
    .collect();
    let cherry = git.run(&["cherry", base, tip]).map_err(err)?;
    let equivalent: HashSet<String> = cherry
        .stdout_str()
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(str::to_string)
        .collect();
    let mut rest: Vec<String> = Vec::new();
    for c in lost {
        if equivalent.contains(c) {
            continue;
        }
        if merges.contains(c) {
            if !clean_merge(git, c)? {
                rest.push(c.clone());
            }
            continue;
        }
        rest.push(c.clone());
    }
    let singles: Vec<&String> = rest.iter().filter(|c| !merges.contains(*c)).collect();
    if !singles.is_empty() && squashed(git, tip, base)? {
        rest.retain(|c| merges.contains(c));
    }
    Ok(rest)
}

/// Whether merge commit `c` is exactly what merging its two parents gives.
fn clean_merge(git: &Git, c: &str) -> Result<bool, String> {
    let parents = rev_list(git, &[c.to_string()], &["--parents".into(), "-n1".into()])?;
    let ids: Vec<&str> = parents
        .first()
        .map(|l| l.split(' ').collect())
        .unwrap_or_default();
    if ids.len() != 3 {
        return Ok(false);
    }
    let (st, o) = git
        .run_status(
            &[
                "merge-tree",
                "--write-tree",
                "--no-messages",
                ids[1],
                ids[2],
            ],
            &[],
        )
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Ok(false);
    }
    let merged = o.stdout_str().lines().next().unwrap_or("").to_string();
    Ok(commit_tree(git, c)? == merged)
}

fn commit_tree(git: &Git, c: &str) -> Result<String, String> {
    Ok(git
        .run(&["rev-parse", "--verify", &format!("{c}^{{tree}}")])
        .map_err(|e| e.to_string())?
        .stdout_str()
        .trim()
        .to_string())
}

/// Whether the whole `merge-base..tip` diff is one commit of `base`.
fn squashed(git: &Git, tip: &str, base: &str) -> Result<bool, String> {
    let err = |e: GitCliError| e.to_string();
    let mb = git.run(&["merge-base", base, tip]).map_err(err)?;
    let mb = mb.stdout_str().trim().to_string();
    if mb.is_empty() {
        return Ok(false);
    }
    let diff = git
        .run(&["diff-tree", "-p", "--no-color", "--no-ext-diff", &mb, tip])
        .map_err(err)?;
    let id = git
        .run_with_input(&["patch-id", "--stable"], &diff.stdout)
        .map_err(err)?;
    let Some(want) = id.stdout_str().split(' ').next().map(str::to_string) else {
        return Ok(false);
    };
    if want.trim().is_empty() {
        return Ok(false);
    }
    let log = git
        .run(&[
            "log",
            "--no-merges",
            "-p",
            "--no-color",
            "--no-ext-diff",
            "--format=commit %H",
            &format!("{mb}..{base}"),
        ])
        .map_err(err)?;
    let ids = git
        .run_with_input(&["patch-id", "--stable"], &log.stdout)
        .map_err(err)?;
    Ok(ids
        .stdout_str()
        .lines()
        .any(|l| l.split(' ').next() == Some(want.trim())))
}

/// Checks HEAD and the own branch for lost commits. Returns the commit
/// that stands in for an unborn HEAD whose branch was deleted, if any.
fn commits(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    common: &Path,
    s: &Status,
    out: &mut Vec<AtRisk>,
) -> Result<Option<String>, String> {
    let Tips {
        mut tips,
        own,
        stand_in,
    } = tips_of(p, git, admin, s, out)?;
    tips.sort();
    tips.dedup();
    if tips.is_empty() {
        return Ok(stand_in);
    }
    let keepers = keeper_args(own.as_deref());
    let named = match p.refs {
        Some(cache) => all_named(cache, git, common, &tips, own.as_ref())?,
        None => false,
    };
    let mut lost = if named {
        Vec::new()
    } else {
        rev_list(git, &tips, &keepers)?
    };
    // The bases cost several git calls; a worktree with nothing lost (the
    // common case, on every pass) needs none of them.
    let bases = if lost.is_empty() {
        Vec::new()
    } else {
        bases(p, git).map_err(|e| e.to_string())?
    };
    if !bases.is_empty() {
        let mut rest = keepers.clone();
        rest.extend(bases.iter().cloned());
        lost = rev_list(git, &tips, &rest)?;
    }
    drop_merged_elsewhere(git, &tips, &keepers, &bases, &mut lost)?;
    if !lost.is_empty() {
        out.push(AtRisk::UnmergedCommits {
            count: lost.len(),
            head: s
                .head_oid
                .clone()
                .or_else(|| tips.first().cloned())
                .unwrap_or_default(),
            commits: lost.iter().take(SAMPLE).cloned().collect(),
        });
    }
    Ok(stand_in)
}

/// Where the commit check starts.
struct Tips {
    /// The commits whose history the worktree may alone hold.
    tips: Vec<String>,
    /// The worktree's own branch: it keeps nothing once the worktree goes.
    own: Option<String>,
    /// The commit that stands in for an unborn HEAD whose branch was
    /// deleted.
    stand_in: Option<String>,
}

/// The tips: HEAD and the worktree's own branch (HEAD's, or the row's when
/// HEAD is detached).
fn tips_of(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    s: &Status,
    out: &mut Vec<AtRisk>,
) -> Result<Tips, String> {
    let mut tips: Vec<String> = Vec::new();
    let mut stand_in = None;
    let own: Option<String>;
    match (&s.head_branch, &s.head_oid) {
        (Some(b), Some(id)) => {
            tips.push(id.clone());
            own = Some(branch_ref(b));
        }
        (Some(b), None) => {
            if let Some(id) = deleted_branch(p, git, admin, b, out)? {
                tips.push(id.clone());
                stand_in = Some(id);
            }
            own = Some(branch_ref(b));
        }
        (None, head) => {
            let head = match head {
                Some(h) => h.clone(),
                None => return Err("detached HEAD without a commit".into()),
            };
            tips.push(head);
            own = match p.branch.map(branch_ref) {
                Some(b) => match commit_of(git, &b).map_err(|e| e.to_string())? {
                    Some(id) => {
                        tips.push(id);
                        Some(b)
                    }
                    None => None,
                },
                None => None,
            };
        }
    }
    Ok(Tips {
        tips,
        own,
        stand_in,
    })
}

/// HEAD names branch `b`, which does not exist: a reason when there is
/// evidence it had commits. Returns the newest commit of the HEAD reflog,
/// which then stands for HEAD.
fn deleted_branch(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    b: &str,
    out: &mut Vec<AtRisk>,
) -> Result<Option<String>, String> {
    let reflog = head_reflog(git, admin)?;
    let newest = reflog.first().cloned();
    let from_reflog = match newest {
        Some(id) => commit_of(git, &id).map_err(|e| e.to_string())?,
        None => None,
    };
    let row_says = p.branch.map(branch_ref) == Some(branch_ref(b));
    if from_reflog.is_some() || row_says {
        out.push(AtRisk::BranchDeleted {
            branch: b.to_string(),
        });
    }
    Ok(from_reflog)
}

/// Whether another surviving ref names every tip. Such a tip is reachable,
/// whatever else holds: when every tip is one, nothing is lost, and no
/// rev-list runs.
fn all_named(
    cache: &RefsCache,
    git: &Git,
    common: &Path,
    tips: &[String],
    own: Option<&String>,
) -> Result<bool, String> {
    let refs = cache.survivors(git, common)?;
    let ids: HashSet<&str> = refs
        .iter()
        .filter(|(name, _)| Some(name) != own)
        .map(|(_, id)| id.as_str())
        .collect();
    Ok(tips.iter().all(|t| ids.contains(t.as_str())))
}

/// Drops from `lost` the commits one of `bases` holds in another shape
/// (see the module's "Merged elsewhere"), tip by tip.
fn drop_merged_elsewhere(
    git: &Git,
    tips: &[String],
    keepers: &[String],
    bases: &[String],
    lost: &mut Vec<String>,
) -> Result<(), String> {
    // Which lost commits each tip reaches: the same for every base.
    let mut of_tips: Vec<(&String, HashSet<String>)> = Vec::new();
    if !lost.is_empty() && !bases.is_empty() {
        for tip in tips {
            let reach = rev_list(git, std::slice::from_ref(tip), keepers)?;
            of_tips.push((tip, reach.into_iter().collect()));
        }
    }
    for base in bases {
        if lost.is_empty() {
            break;
        }
        for (tip, of_tip) in &of_tips {
            let mine: Vec<String> = lost
                .iter()
                .filter(|c| of_tip.contains(*c))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let kept = not_in_base(git, &mine, tip, base)?;
            lost.retain(|c| !mine.contains(c) || kept.contains(c));
        }
    }
    Ok(())
}

/// The commits that only the worktree's HEAD reflog and its
/// `refs/worktree/*` reach: once the worktree goes, nothing would keep
/// them from `git gc`. The removal keeps them under an archive ref first.
/// These are not reasons to keep the worktree (every amended commit would
/// be one).
pub fn unreferenced_history(worktree: &Path, timeout: Duration) -> Result<Vec<String>, String> {
    let DotGit::File { gitdir: admin } = dot_git(worktree) else {
        return Ok(Vec::new());
    };
    let git = Git::for_dir(worktree, timeout).map_err(|e| e.to_string())?;
    let mut tips = head_reflog(&git, &admin)?;
    let per = git
        .run(&[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/worktree/",
            "refs/bisect/",
            "refs/rewritten/",
        ])
        .map_err(|e| e.to_string())?;
    tips.extend(per.stdout_str().lines().map(str::to_string));
    let mut commits = Vec::new();
    for t in tips {
        if let Some(c) = commit_of(&git, &t).map_err(|e| e.to_string())? {
            if !commits.contains(&c) {
                commits.push(c);
            }
        }
    }
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    // The tips themselves, of those not reachable from a keeper: keeping
    // them keeps everything they reach.
    let lost: HashSet<String> = rev_list(&git, &commits, &keeper_args(None))?
        .into_iter()
        .collect();
    Ok(commits.into_iter().filter(|c| lost.contains(c)).collect())
}

/// Index entries marked assume-unchanged or skip-worktree whose file is
/// present and differs from the index (mode or content).
fn hidden_changes(git: &Git, dir: &Path, index: &[IndexEntry]) -> Result<Vec<String>, String> {
    let hidden: Vec<&IndexEntry> = index
        .iter()
        .filter(|e| e.tag.is_ascii_lowercase() || e.tag == b'S')
        .filter(|e| e.stage == 0 && e.mode != GITLINK)
        .collect();
    if hidden.is_empty() {
        // No git call at all for the common index without such flags.
        return Ok(Vec::new());
    }
    let filemode = git
        .run_status(&["config", "--type=bool", "core.filemode"], &[])
        .map(|(st, o)| !st.success() || o.stdout_str().trim() != "false")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in hidden {
        let path = join_rel(dir, &e.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(format!("{}: {err}", rel_str(&e.path))),
        };
        let differs = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|err| err.to_string())?;
            e.mode != SYMLINK || hash(git, &["--stdin"], target.as_os_str().as_bytes())? != e.object
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o100 != 0;
            let mode_differs = e.mode == SYMLINK || (filemode && exec != (e.mode == EXEC));
            let rel = std::ffi::OsStr::from_bytes(&e.path)
                .to_string_lossy()
                .into_owned();
            mode_differs || hash(git, &["--", &rel], &[])? != e.object
        } else {
            true
        };
        if differs {
            out.push(rel_str(&e.path));
        }
    }
    Ok(out)
}

fn hash(git: &Git, args: &[&str], input: &[u8]) -> Result<String, String> {
    let mut a = vec!["hash-object"];
    a.extend_from_slice(args);
    Ok(git
        .run_with_input(&a, input)
        .map_err(|e| e.to_string())?
        .stdout_str()
        .trim()
        .to_string())
}

/// Whether `path` lies inside `dir`, compared after resolving both (they
/// exist: they come from git and from the caller).
fn inside(path: &Path, dir: &Path) -> bool {
    match (fs::canonicalize(path), fs::canonicalize(dir)) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

/// What a submodule checked out at `sub` would lose beyond what the
/// superproject's status reports, as short phrases. `worktree` and `admin`
/// are the superproject worktree and its git directory: a submodule git
/// directory inside either goes away with the worktree, and only then do
/// its local-only commits count.
fn submodule_problems(
    git: &Git,
    sub: &Path,
    worktree: &Path,
    admin: &Path,
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
    if inside(&gitdir, worktree) || inside(&gitdir, admin) {
        match rev_list(
            &g,
            &["HEAD".into(), "--branches".into()],
            &["--not".into(), "--remotes".into()],
        ) {
            Ok(v) if v.is_empty() => {}
            Ok(v) => problems.push(format!("{} commit(s) on no remote-tracking ref", v.len())),
            Err(e) => problems.push(format!("commit check failed: {e}")),
        }
    }
    if depth < MAX_SUBMODULE_DEPTH {
        nested_submodule_problems(&g, sub, worktree, admin, depth, problems);
    }
}

/// What the submodules of the submodule at `sub` (at `depth`, opened as
/// `g`) would lose, each as one phrase: a submodule's own submodules go
/// with it.
fn nested_submodule_problems(
    g: &Git,
    sub: &Path,
    worktree: &Path,
    admin: &Path,
    depth: usize,
    problems: &mut Vec<String>,
) {
    match index_entries(g) {
        Ok(entries) => {
            for e in entries.iter().filter(|e| e.mode == GITLINK && e.stage == 0) {
                let mut inner = Vec::new();
                submodule_problems(
                    g,
                    &join_rel(sub, &e.path),
                    worktree,
                    admin,
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
        Err(e) => problems.push(format!("index: {e}")),
    }
}

#[cfg(test)]
mod tests;
