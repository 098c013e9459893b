//! An independent safety oracle for worktree removal.
//!
//! It shares nothing with the controller's model: what counts as work is
//! asked of the git CLI and read from the disk, and recoverability is proved
//! by restoring archives with the README's recipe and comparing bytes. The
//! controller is driven only through its binary (see `world`).
//!
//! What it counts as held (each proved able to fail in tests/oracle.rs):
//!
//! - a file in place, in an archive the recipe restores, or in a commit a
//!   ref reaches whose blob the repository has (what `git gc --prune=now`
//!   keeps with every reflog expired):
//!   `oracle_reports_an_untracked_file_deleted_by_hand`,
//!   `oracle_reports_a_committed_file_whose_blob_is_missing`;
//! - a commit of a worktree, of a nested repository or submodule (every
//!   ref, HEAD reflog, every stash entry), of an admin entry (HEAD, HEAD
//!   reflog, per-worktree refs) or of a submodule git directory under its
//!   `modules/`, reachable afterwards from a ref of a main repository (its
//!   objects there) or still where it was; staged content likewise:
//!   `oracle_reports_a_worktree_deleted_by_hand`,
//!   `oracle_reports_what_only_a_stale_admin_entry_held_pruned_by_hand`;
//! - a worktree still there is byte-identical and still linked to its
//!   admin entry: `oracle_reports_a_worktree_unlinked_from_its_admin_entry`.
//!
//! Two test targets include this module and each uses a different part.
#![allow(dead_code)]

pub mod world;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha1::{Digest, Sha1};

/// The trash the controller retires directories into; not a worktree.
pub const TRASH: &str = ".boo-trash";

/// A git command isolated from the machine's configuration, hooks and
/// fsmonitor, and taking no optional locks so that looking changes nothing.
pub fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_AUTHOR_NAME", "Oracle")
        .env("GIT_AUTHOR_EMAIL", "oracle@example.com")
        .env("GIT_COMMITTER_NAME", "Oracle")
        .env("GIT_COMMITTER_EMAIL", "oracle@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_EDITOR", "true")
        .env("GIT_SEQUENCE_EDITOR", "true")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_COMMON_DIR")
        .stdin(Stdio::null());
    if let Some(parent) = dir.parent() {
        // A directory that is not a repository must not be read as part of
        // one further up.
        c.env("GIT_CEILING_DIRECTORIES", parent);
    }
    c
}

pub fn git_out(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("git runs")
}

/// stdout of a git command that succeeded, else `None`.
pub fn git_ok(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = git_out(dir, args);
    out.status.success().then_some(out.stdout)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What git would store for a file: its mode and blob id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// `100644`, `100755` or `120000`.
    pub mode: &'static str,
    pub blob: String,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.mode, &self.blob[..12])
    }
}

pub fn blob_id(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The file or symlink at `path`, as git would store it; `None` for
/// directories, special files and what is not there.
pub fn entry_of(path: &Path) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        Some(Entry {
            mode: "120000",
            blob: blob_id(target.as_os_str().as_bytes()),
        })
    } else if meta.is_file() {
        let bytes = std::fs::read(path).ok()?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            "100755"
        } else {
            "100644"
        };
        Some(Entry {
            mode,
            blob: blob_id(&bytes),
        })
    } else {
        None
    }
}

/// Every file and symlink below `dir`, by path relative to it; symlinks are
/// not followed.
pub fn walk(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk_into(dir, Path::new(""), &mut out);
    out
}

fn walk_into(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(rd) = std::fs::read_dir(dir.join(rel)) else {
        return;
    };
    for de in rd.flatten() {
        let r = rel.join(de.file_name());
        let Ok(ft) = de.file_type() else { continue };
        if ft.is_dir() {
            walk_into(dir, &r, out);
        } else if let Some(e) = entry_of(&dir.join(&r)) {
            out.insert(r, e);
        }
    }
}

fn has_component(p: &Path, name: &str) -> bool {
    p.components().any(|c| c.as_os_str() == OsStr::new(name))
}

/// `.env` / `.env.*` by file name, at any depth (the README's default).
pub fn is_precious(p: &Path) -> bool {
    p.file_name().is_some_and(|n| {
        let n = n.as_bytes();
        n == b".env" || n.starts_with(b".env.")
    })
}

/// One directory directly under the root, as it was.
#[derive(Clone, Debug)]
pub struct DirSnap {
    pub name: String,
    pub path: PathBuf,
    /// A linked worktree of one of the main repositories, linked both ways,
    /// with git answering for exactly this directory.
    pub proper: bool,
    /// The admin entry its `.git` file names (also for copies and moves).
    pub admin_name: Option<String>,
    /// Work: what git does not ignore, plus precious ignored files; every
    /// file when the directory is not a proper worktree.
    pub work: BTreeMap<PathBuf, Entry>,
    /// Index entries at stage 0 (the staged content).
    pub index: BTreeSet<(PathBuf, Entry)>,
    /// Every file and symlink, ignored ones and `.git` internals included.
    pub all: BTreeMap<PathBuf, Entry>,
    /// Relative roots of repositories inside (nested repos, submodules).
    pub nested: Vec<PathBuf>,
    /// What git says of each of `nested` that is a repository of its own.
    pub nested_repos: BTreeMap<PathBuf, NestedState>,
    /// Stage-0 index entries of each of `nested_repos` (submodules
    /// included), by path below this directory: their staged content.
    pub nested_index: BTreeSet<(PathBuf, Entry)>,
    /// Commits of HEAD, its branch, the HEAD reflog, `refs/worktree/*`, and
    /// of every nested repository (HEAD, refs, reflog).
    pub commits: BTreeSet<String>,
    pub branch: Option<String>,
    pub locked: bool,
    pub operations: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub root: PathBuf,
    pub main_repos: Vec<PathBuf>,
    pub dirs: Vec<DirSnap>,
    /// Every admin entry (`.git/worktrees/<name>`) of the main
    /// repositories, whether or not its directory is under the root.
    pub admins: Vec<AdminSnap>,
}

impl Snapshot {
    pub fn dir(&self, name: &str) -> Option<&DirSnap> {
        self.dirs.iter().find(|d| d.name == name)
    }

    pub fn admin(&self, main: &Path, name: &str) -> Option<&AdminSnap> {
        self.admins
            .iter()
            .find(|a| a.main == main && a.name == name)
    }
}

/// One admin entry, as git keeps it: what only it holds must survive its
/// worktree (in place, or reachable in the main repository afterwards).
#[derive(Clone, Debug)]
pub struct AdminSnap {
    /// The main repository's working directory.
    pub main: PathBuf,
    pub name: String,
    pub path: PathBuf,
    /// Commits of HEAD, the HEAD reflog and the per-worktree refs
    /// (`refs/worktree/*`, `refs/bisect/*`, `refs/rewritten/*`).
    pub commits: BTreeSet<String>,
    /// Commits of each submodule git directory under `modules/` (every
    /// ref, HEAD, the HEAD reflog and every stash entry), by its path
    /// relative to the entry.
    pub modules: BTreeMap<PathBuf, BTreeSet<String>>,
    /// Stage-0 entries of those submodules' indexes: (git directory, path
    /// in the submodule, entry).
    pub module_index: BTreeSet<(PathBuf, PathBuf, Entry)>,
    /// The index's staged entries at stage 0, intent-to-add markers (the
    /// empty blob) aside.
    pub index: BTreeSet<(PathBuf, Entry)>,
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The admin directory a `.git` file names, resolved against `dir`.
fn gitfile_target(dir: &Path) -> Option<PathBuf> {
    let dotgit = dir.join(".git");
    let meta = std::fs::symlink_metadata(&dotgit).ok()?;
    if !meta.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(&dotgit).ok()?;
    let target = text.strip_prefix("gitdir: ")?.trim_end_matches('\n');
    let t = Path::new(target);
    Some(if t.is_absolute() {
        t.to_path_buf()
    } else {
        dir.join(t)
    })
}

fn is_proper_worktree(dir: &Path, main_repos: &[PathBuf]) -> bool {
    let Some(admin) = gitfile_target(dir) else {
        return false;
    };
    let Ok(common) = std::fs::read_to_string(admin.join("commondir")) else {
        return false;
    };
    let common = canon(&admin.join(common.trim_end_matches('\n')));
    if !main_repos.iter().any(|m| canon(&m.join(".git")) == common) {
        return false;
    }
    let Ok(back) = std::fs::read_to_string(admin.join("gitdir")) else {
        return false;
    };
    if canon(Path::new(back.trim_end_matches('\n'))) != canon(&dir.join(".git")) {
        return false;
    }
    match git_ok(dir, &["rev-parse", "--show-toplevel"]) {
        Some(top) => canon(Path::new(String::from_utf8_lossy(&top).trim_end())) == canon(dir),
        None => false,
    }
}

/// What `git status` says: paths it reports as ignored (directories end
/// with `/`), and intent-to-add entries (`git add -N`), whose index entry
/// is only a marker: their content is the file's.
fn status_of(dir: &Path) -> Option<(Vec<Vec<u8>>, BTreeSet<PathBuf>)> {
    let out = git_ok(
        dir,
        &[
            "status",
            "--porcelain=v2",
            "-z",
            "--untracked-files=all",
            "--ignored=matching",
            "--ignore-submodules=none",
        ],
    )?;
    let mut ignored = Vec::new();
    let mut intent = BTreeSet::new();
    let mut recs = out.split(|b| *b == 0);
    while let Some(rec) = recs.next() {
        if let Some(p) = rec.strip_prefix(b"! ") {
            ignored.push(p.to_vec());
        } else if rec.starts_with(b"1 .A ") {
            // `1 XY sub mH mI mW hH hI path`
            if let Some(p) = rec.splitn(9, |b| *b == b' ').nth(8) {
                intent.insert(PathBuf::from(OsStr::from_bytes(p)));
            }
        } else if rec.starts_with(b"2 ") {
            // A rename carries its original path as the next record.
            recs.next();
        }
    }
    Some((ignored, intent))
}

fn is_ignored(rel: &Path, ignored: &[Vec<u8>]) -> bool {
    let r = rel.as_os_str().as_bytes();
    ignored.iter().any(|ig| {
        if ig.ends_with(b"/") {
            r.starts_with(ig)
        } else {
            r == ig.as_slice()
        }
    })
}

fn index_entries(dir: &Path) -> BTreeSet<(PathBuf, Entry)> {
    git_ok(dir, &["ls-files", "-s", "-z"])
        .map(|b| parse_index(&b))
        .unwrap_or_default()
}

/// `git ls-files -s -z` output: stage-0 files and symlinks.
fn parse_index(bytes: &[u8]) -> BTreeSet<(PathBuf, Entry)> {
    let mut out = BTreeSet::new();
    for rec in bytes.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        // `<mode> <blob> <stage>\t<path>`
        let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let head = String::from_utf8_lossy(&rec[..tab]).to_string();
        let f: Vec<&str> = head.split(' ').collect();
        if f.len() != 3 || f[2] != "0" {
            continue;
        }
        let mode = match f[0] {
            "100644" => "100644",
            "100755" => "100755",
            "120000" => "120000",
            _ => continue, // gitlinks: the submodule's commits are checked instead
        };
        out.insert((
            PathBuf::from(OsStr::from_bytes(&rec[tab + 1..])),
            Entry {
                mode,
                blob: f[1].to_string(),
            },
        ));
    }
    out
}

/// Every commit reachable from the given starting points in `repo`.
fn rev_list(repo: &Path, starts: &[String]) -> BTreeSet<String> {
    if starts.is_empty() {
        return BTreeSet::new();
    }
    let mut args = vec!["rev-list"];
    args.extend(starts.iter().map(String::as_str));
    match git_ok(repo, &args) {
        Some(out) => lines(&out).into_iter().collect(),
        // One bad start must not hide the others.
        None => starts
            .iter()
            .flat_map(|s| {
                git_ok(repo, &["rev-list", s])
                    .map(|o| lines(&o))
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn head_commit(dir: &Path) -> Option<String> {
    git_ok(dir, &["rev-parse", "-q", "--verify", "HEAD^{commit}"])
        .and_then(|o| lines(&o).into_iter().next())
}

/// Commits of a linked worktree: HEAD, the HEAD reflog, `refs/worktree/*`.
fn worktree_commits(dir: &Path) -> BTreeSet<String> {
    let mut starts: Vec<String> = head_commit(dir).into_iter().collect();
    starts.extend(
        git_ok(dir, &["reflog", "show", "--format=%H", "HEAD"])
            .map(|o| lines(&o))
            .unwrap_or_default(),
    );
    starts.extend(
        git_ok(
            dir,
            &["for-each-ref", "--format=%(objectname)", "refs/worktree/"],
        )
        .map(|o| lines(&o))
        .unwrap_or_default(),
    );
    rev_list(dir, &starts)
}

/// Commits of a repository of its own: HEAD, every ref, the HEAD reflog.
fn repo_commits(dir: &Path) -> BTreeSet<String> {
    let mut starts: Vec<String> = head_commit(dir).into_iter().collect();
    starts.extend(
        git_ok(dir, &["for-each-ref", "--format=%(objectname)"])
            .map(|o| lines(&o))
            .unwrap_or_default(),
    );
    starts.extend(
        git_ok(dir, &["reflog", "show", "--format=%H", "HEAD"])
            .map(|o| lines(&o))
            .unwrap_or_default(),
    );
    // Every stash entry, not only the newest the ref names.
    if let Some(gd) = git_dir(dir) {
        starts.extend(reflog_by_hand(&gd, "refs/stash"));
    }
    rev_list(dir, &starts)
}

/// The commits a reflog file names; read by hand because git refuses to
/// show the reflog of a HEAD whose branch is gone.
fn reflog_by_hand(git_dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(git_dir.join("logs").join(name))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|id| id.len() >= 40 && id.bytes().any(|b| b != b'0'))
        .map(str::to_string)
        .collect()
}

/// A git command on the git directory `gd` itself (an admin entry or a
/// submodule's git directory), whatever working tree it has or had: a
/// submodule's `core.worktree` may name a directory that is gone.
fn gitdir_ok(gd: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = git_cmd(gd)
        .arg("--git-dir=.")
        .env("GIT_WORK_TREE", gd)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("git runs");
    out.status.success().then_some(out.stdout)
}

fn gitdir_rev_list(gd: &Path, starts: &[String]) -> BTreeSet<String> {
    let one = |s: &[&str]| {
        let mut args = vec!["rev-list"];
        args.extend_from_slice(s);
        gitdir_ok(gd, &args).map(|o| lines(&o))
    };
    if starts.is_empty() {
        return BTreeSet::new();
    }
    let all: Vec<&str> = starts.iter().map(String::as_str).collect();
    match one(&all) {
        Some(l) => l.into_iter().collect(),
        None => starts
            .iter()
            .flat_map(|s| one(&[s.as_str()]).unwrap_or_default())
            .collect(),
    }
}

/// HEAD's commit as the git directory's `HEAD` file names it: a branch
/// (when it still exists) or a commit id.
fn gitdir_head(gd: &Path) -> Option<String> {
    gitdir_ok(gd, &["rev-parse", "-q", "--verify", "HEAD^{commit}"])
        .and_then(|o| lines(&o).into_iter().next())
        .or_else(|| {
            let text = std::fs::read_to_string(gd.join("HEAD")).ok()?;
            let t = text.trim();
            (t.len() >= 40 && !t.starts_with("ref:")).then(|| t.to_string())
        })
}

/// Commits only an admin entry holds: HEAD, its reflog, per-worktree refs.
fn admin_commits(gd: &Path) -> BTreeSet<String> {
    let mut starts: Vec<String> = gitdir_head(gd).into_iter().collect();
    starts.extend(reflog_by_hand(gd, "HEAD"));
    starts.extend(
        gitdir_ok(
            gd,
            &[
                "for-each-ref",
                "--format=%(objectname)",
                "refs/worktree/",
                "refs/bisect/",
                "refs/rewritten/",
            ],
        )
        .map(|o| lines(&o))
        .unwrap_or_default(),
    );
    gitdir_rev_list(gd, &starts)
}

/// Commits of a submodule's git directory: HEAD, every ref (branches,
/// tags, remote-tracking refs, the stash), the HEAD reflog, every stash
/// entry.
fn module_commits(gd: &Path) -> BTreeSet<String> {
    let mut starts: Vec<String> = gitdir_head(gd).into_iter().collect();
    starts.extend(
        gitdir_ok(gd, &["for-each-ref", "--format=%(objectname)"])
            .map(|o| lines(&o))
            .unwrap_or_default(),
    );
    starts.extend(reflog_by_hand(gd, "HEAD"));
    starts.extend(reflog_by_hand(gd, "refs/stash"));
    gitdir_rev_list(gd, &starts)
}

/// Git directories below `<gd>/modules`, submodules of submodules too, by
/// path relative to `gd`.
fn module_dirs(gd: &Path) -> Vec<PathBuf> {
    fn into(gd: &Path, rel: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        if depth > 8 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(gd.join(rel)) else {
            return;
        };
        for de in rd.flatten() {
            if !de.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let r = rel.join(de.file_name());
            let d = gd.join(&r);
            if d.join("HEAD").is_file() && d.join("objects").is_dir() {
                out.push(r.clone());
                into(gd, &r.join("modules"), out, depth + 1);
            } else {
                into(gd, &r, out, depth + 1);
            }
        }
    }
    let mut out = Vec::new();
    into(gd, Path::new("modules"), &mut out, 0);
    out
}

/// Every admin entry of `main`'s repository.
/// The empty blob: what an intent-to-add entry stages.
const EMPTY_BLOB: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";

pub fn snapshot_admins(main: &Path) -> Vec<AdminSnap> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(main.join(".git/worktrees")) else {
        return out;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|d| d.file_name());
    for de in entries {
        let gd = de.path();
        if !gd.is_dir() {
            continue;
        }
        let index = gitdir_ok(&gd, &["ls-files", "-s", "-z"])
            .map(|b| parse_index(&b))
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, e)| e.blob != EMPTY_BLOB)
            .collect();
        let modules = module_dirs(&gd);
        let module_index = modules
            .iter()
            .flat_map(|m| {
                gitdir_ok(&gd.join(m), &["ls-files", "-s", "-z"])
                    .map(|b| parse_index(&b))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, e)| e.blob != EMPTY_BLOB)
                    .map(move |(p, e)| (m.clone(), p, e))
            })
            .collect();
        out.push(AdminSnap {
            main: main.to_path_buf(),
            name: de.file_name().to_string_lossy().to_string(),
            commits: admin_commits(&gd),
            modules: modules
                .into_iter()
                .map(|m| {
                    let c = module_commits(&gd.join(&m));
                    (m, c)
                })
                .collect(),
            module_index,
            index,
            path: gd,
        });
    }
    out
}

fn git_dir(dir: &Path) -> Option<PathBuf> {
    git_ok(dir, &["rev-parse", "--absolute-git-dir"])
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o).trim_end()))
}

const OPERATIONS: &[&str] = &[
    "MERGE_HEAD",
    "rebase-merge",
    "rebase-apply",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
];

pub fn snapshot_dir(path: &Path, main_repos: &[PathBuf]) -> DirSnap {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let all = walk(path);
    let proper = is_proper_worktree(path, main_repos);
    let admin_name =
        gitfile_target(path).and_then(|a| a.file_name().map(|n| n.to_string_lossy().to_string()));
    let nested: Vec<PathBuf> = all
        .keys()
        .filter(|p| p.file_name() == Some(OsStr::new(".git")))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        // A `.git` directory is not in `all`: look for those too.
        .chain(find_git_dirs(path))
        // A proper worktree's own `.git` file is not a nested repository.
        .filter(|p| !p.as_os_str().is_empty() || !proper)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let status = if proper { status_of(path) } else { None };
    let work: BTreeMap<PathBuf, Entry> = match &status {
        Some((ignored, _)) => all
            .iter()
            .filter(|(p, _)| !has_component(p, ".git"))
            .filter(|(p, _)| is_precious(p) || !is_ignored(p, ignored))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect(),
        // Doubt: git cannot say what is work here, so everything is.
        None => all.clone(),
    };

    let mut commits = BTreeSet::new();
    let mut branch = None;
    let mut locked = false;
    let mut operations = Vec::new();
    if proper {
        commits.extend(worktree_commits(path));
        branch = git_ok(path, &["symbolic-ref", "-q", "HEAD"])
            .and_then(|o| lines(&o).into_iter().next());
        if let Some(gd) = git_dir(path) {
            locked = gd.join("locked").exists();
            operations = OPERATIONS
                .iter()
                .filter(|o| gd.join(o).exists())
                .map(|o| o.to_string())
                .collect();
        }
    }
    let mut nested_repos = BTreeMap::new();
    let mut nested_index = BTreeSet::new();
    for n in &nested {
        let nd = path.join(n);
        let top = git_ok(&nd, &["rev-parse", "--show-toplevel"])
            .map(|o| canon(Path::new(String::from_utf8_lossy(&o).trim_end())));
        if top.as_deref() == Some(canon(&nd).as_path()) {
            commits.extend(repo_commits(&nd));
            nested_repos.insert(n.clone(), nested_state(&nd));
            if !n.as_os_str().is_empty() {
                nested_index.extend(
                    index_entries(&nd)
                        .into_iter()
                        .filter(|(_, e)| e.blob != EMPTY_BLOB)
                        .map(|(p, e)| (n.join(p), e)),
                );
            }
        }
    }
    let index = match &status {
        Some((_, intent)) => index_entries(path)
            .into_iter()
            .filter(|(p, _)| !intent.contains(p))
            .collect(),
        None => BTreeSet::new(),
    };
    DirSnap {
        name,
        path: path.to_path_buf(),
        proper,
        admin_name,
        work,
        index,
        all,
        nested,
        nested_repos,
        nested_index,
        commits,
        branch,
        locked,
        operations,
    }
}

/// A nested repository, as git tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedState {
    /// HEAD's commit.
    pub head: Option<String>,
    /// The branch HEAD names.
    pub on: Option<String>,
    /// `refs/heads/*` → commit.
    pub branches: BTreeMap<String, String>,
    /// HEAD or a branch holds a commit no remote-tracking ref reaches: the
    /// commits a forced removal must keep and a restore bring back.
    pub local_only: bool,
}

impl NestedState {
    /// Where a restore puts HEAD (README, "Getting work back"): on the one
    /// branch at HEAD's commit, detached when none or several are there.
    pub fn expected_on(&self) -> Option<String> {
        let at: Vec<&String> = self
            .branches
            .iter()
            .filter(|(_, c)| Some(*c) == self.head.as_ref())
            .map(|(b, _)| b)
            .collect();
        match at.as_slice() {
            [b] => Some(b.to_string()),
            _ => None,
        }
    }
}

pub fn nested_state(dir: &Path) -> NestedState {
    let branches = git_ok(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads/",
        ],
    )
    .map(|o| lines(&o))
    .unwrap_or_default()
    .into_iter()
    .filter_map(|l| {
        l.split_once(' ')
            .map(|(r, c)| (r.to_string(), c.to_string()))
    })
    .collect();
    let local_only = git_ok(
        dir,
        &[
            "rev-list",
            "-n1",
            "HEAD",
            "--branches",
            "--not",
            "--remotes",
        ],
    )
    .or_else(|| {
        git_ok(
            dir,
            &["rev-list", "-n1", "--branches", "--not", "--remotes"],
        )
    })
    .is_some_and(|o| !lines(&o).is_empty());
    NestedState {
        head: head_commit(dir),
        on: git_ok(dir, &["symbolic-ref", "-q", "HEAD"]).and_then(|o| lines(&o).into_iter().next()),
        branches,
        local_only,
    }
}

/// Relative paths of directories below `dir` holding a `.git` directory
/// (nested repositories; `""` for the directory itself).
fn find_git_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    find_git_dirs_into(dir, Path::new(""), &mut out);
    out
}

fn find_git_dirs_into(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir.join(rel)) else {
        return;
    };
    for de in rd.flatten() {
        let Ok(ft) = de.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        if de.file_name() == OsStr::new(".git") {
            out.push(rel.to_path_buf());
        } else {
            find_git_dirs_into(dir, &rel.join(de.file_name()), out);
        }
    }
}

/// Every directory directly under `root` (the trash aside).
pub fn snapshot(root: &Path, main_repos: &[PathBuf]) -> Snapshot {
    let mut dirs = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(root)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_else(|_| Vec::new());
    names.sort_by_key(|d| d.file_name());
    for de in names {
        if de.file_name() == OsStr::new(TRASH) {
            continue;
        }
        if de.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(snapshot_dir(&de.path(), main_repos));
        }
    }
    Snapshot {
        root: root.to_path_buf(),
        main_repos: main_repos.to_vec(),
        dirs,
        admins: main_repos.iter().flat_map(|m| snapshot_admins(m)).collect(),
    }
}

#[derive(Clone, Debug)]
pub enum Violation {
    /// A file of work is neither in place, nor committed in a reachable
    /// commit, nor in a restored archive.
    WorkLost {
        dir: String,
        path: PathBuf,
        entry: Entry,
        now: Option<Entry>,
    },
    /// Staged content that nothing holds any more.
    StagedLost {
        dir: String,
        path: PathBuf,
        entry: Entry,
    },
    /// A commit no ref of any repository reaches any more.
    CommitLost { dir: String, commit: String },
    /// A directory that is still there is not byte-identical.
    KeptChanged {
        dir: String,
        path: PathBuf,
        before: Option<Entry>,
        after: Option<Entry>,
    },
    /// A file outside the root changed.
    OutsideChanged {
        path: PathBuf,
        before: Option<Entry>,
        after: Option<Entry>,
    },
    /// A live session's row names it, and it was removed.
    LiveRemoved { dir: String },
    /// A linked worktree still there is no longer one: its admin entry
    /// (HEAD, index, per-worktree refs) was pruned from under it.
    Unlinked { dir: String },
    /// Locked or mid-operation, and removed without `--force`.
    RemovedUnforced { dir: String, why: String },
    /// An archive ref that the recipe cannot restore.
    ArchiveUnrestorable { reference: String, error: String },
    /// `boo-reconciler restore` of an archive failed, or brought back
    /// something other than git's own recipe does.
    RestoreDiffers { reference: String, detail: String },
}

/// What the repositories hold after a pass: the commits refs reach, the
/// files of those commits, and the restored archives.
struct Holdings {
    reachable: BTreeSet<String>,
    /// (path, entry) of every file in every reachable commit.
    committed: BTreeSet<(PathBuf, Entry)>,
    /// Archive name (`refs/boo/archive/<name>/…`) -> restored files, index.
    archives: HashMap<String, Vec<Restored>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    pub files: BTreeMap<PathBuf, Entry>,
    pub index: BTreeSet<(PathBuf, Entry)>,
}

/// `got` with each intent-to-add entry (the empty blob in the index, the
/// file on disk) read as the recipe's staged file: `git stash apply
/// --index` stages a file added with intent to add in full (or, beside a
/// staged file, leaves it untracked), a faithful restore adds it with
/// intent again; the bytes are the same.
pub fn staged_as_recipe(mut got: Restored, recipe: &Restored) -> Restored {
    const EMPTY: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
    let intended: Vec<(PathBuf, Entry)> = got
        .index
        .iter()
        .filter(|(p, e)| {
            e.blob == EMPTY
                && got.files.get(p).is_some_and(|f| f.blob != EMPTY)
                && recipe.index.contains(&(p.clone(), got.files[p].clone()))
        })
        .cloned()
        .collect();
    for (p, e) in intended {
        got.index.remove(&(p.clone(), e));
        got.index.insert((p.clone(), got.files[&p].clone()));
    }
    // Beside a staged file, the recipe leaves an intent-to-add file
    // untracked instead; the bytes on disk are the same.
    let untracked: Vec<(PathBuf, Entry)> = got
        .index
        .iter()
        .filter(|(p, e)| {
            e.blob == EMPTY
                && !recipe.index.iter().any(|(q, _)| q == p)
                && got.files.get(p) == recipe.files.get(p)
        })
        .cloned()
        .collect();
    for item in untracked {
        got.index.remove(&item);
    }
    got
}

/// What a restored worktree at `dir` holds: its files but `.git` (its own,
/// and the git directories of nested repositories it has again), and its
/// index.
pub fn restored_at(dir: &Path) -> Restored {
    Restored {
        files: walk(dir)
            .into_iter()
            .filter(|(p, _)| !has_component(p, ".git"))
            .collect(),
        index: index_entries(dir),
    }
}

/// A nested repository a restore made again: what git says of it, its
/// files but `.git`, and the files of its HEAD's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedBack {
    pub state: NestedState,
    pub files: BTreeMap<PathBuf, Entry>,
    pub head_files: BTreeMap<PathBuf, Entry>,
}

/// The nested repositories below a restored worktree at `dir`, by path.
pub fn nested_back(dir: &Path) -> BTreeMap<PathBuf, NestedBack> {
    let mut out = BTreeMap::new();
    for rel in find_git_dirs(dir) {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let nd = dir.join(&rel);
        let mut head_files = BTreeSet::new();
        if let Some(h) = head_commit(&nd) {
            tree_files(&nd, &BTreeSet::from([h]), &mut head_files);
        }
        out.insert(
            rel,
            NestedBack {
                state: nested_state(&nd),
                files: walk(&nd)
                    .into_iter()
                    .filter(|(p, _)| !has_component(p, ".git"))
                    .collect(),
                head_files: head_files.into_iter().collect(),
            },
        );
    }
    out
}

/// Commits reachable from HEAD and the refs of `repo`. With `archives`
/// false, an archive's own stash-shaped commit (its index and untracked
/// parts) is left out and only its HEAD parent counts: those parts hold a
/// file only when the README's recipe brings it back. The `-nested` refs
/// beside it are ordinary commits of nested repositories and count.
fn repo_reachable(repo: &Path, archives: bool) -> BTreeSet<String> {
    let mut starts: Vec<String> = head_commit(repo).into_iter().collect();
    for line in git_ok(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])
        .map(|o| lines(&o))
        .unwrap_or_default()
    {
        if let Some((object, name)) = line.split_once(' ') {
            if archives || archive_name(name).is_none() {
                starts.push(object.to_string());
            } else if let Some(head) = git_ok(
                repo,
                &["rev-parse", "-q", "--verify", &format!("{object}^1")],
            ) {
                starts.extend(lines(&head));
            }
        }
    }
    rev_list(repo, &starts)
}

fn tree_files(repo: &Path, commits: &BTreeSet<String>, out: &mut BTreeSet<(PathBuf, Entry)>) {
    let mut trees = BTreeSet::new();
    for c in commits {
        if let Some(t) = git_ok(repo, &["rev-parse", &format!("{c}^{{tree}}")]) {
            trees.extend(lines(&t));
        }
    }
    for t in trees {
        let Some(bytes) = git_ok(repo, &["ls-tree", "-r", "-z", "--full-tree", &t]) else {
            continue;
        };
        for rec in bytes.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            // `<mode> <type> <object>\t<path>`
            let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
                continue;
            };
            let head = String::from_utf8_lossy(&rec[..tab]).to_string();
            let f: Vec<&str> = head.split(' ').collect();
            let mode = match f.first().copied() {
                Some("100644") => "100644",
                Some("100755") => "100755",
                Some("120000") => "120000",
                _ => continue,
            };
            out.insert((
                PathBuf::from(OsStr::from_bytes(&rec[tab + 1..])),
                Entry {
                    mode,
                    blob: f[2].to_string(),
                },
            ));
        }
    }
}

/// Of `ids`, the objects `repo` has (one `git cat-file --batch-check`).
fn present_objects<'a>(repo: &Path, ids: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    use std::io::Write;
    let ids: BTreeSet<&str> = ids.collect();
    if ids.is_empty() {
        return BTreeSet::new();
    }
    let Ok(mut child) = git_cmd(repo)
        .args(["cat-file", "--batch-check=%(objectname)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return BTreeSet::new();
    };
    let mut input = String::new();
    for id in &ids {
        input.push_str(id);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped");
    // Written from another thread: git answers while it reads.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child
        .wait_with_output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let _ = writer.join();
    // A missing object is answered `<id> missing`.
    lines(&out)
        .into_iter()
        .filter(|l| !l.ends_with(" missing") && ids.contains(l.as_str()))
        .collect()
}

/// The archive's name component: `refs/boo/archive/<name>/<secs>`; the
/// `-nested` refs beside it are not archives of their own.
pub fn archive_name(reference: &str) -> Option<String> {
    let rest = reference.strip_prefix("refs/boo/archive/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    (parts.len() == 2 && !parts[1].contains("-nested")).then(|| parts[0].to_string())
}

/// Restores an archive with the README's recipe into a scratch directory
/// outside the root, reads it, and removes the scratch worktree again.
pub fn restore(main: &Path, reference: &str) -> Result<Restored, String> {
    let scratch = tempfile::Builder::new()
        .prefix("oracle-restore-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dest = scratch.path().join("restored");
    let add = git_out(
        main,
        &[
            "worktree",
            "add",
            "--detach",
            dest.to_str().unwrap(),
            &format!("{reference}^1"),
        ],
    );
    let result = if !add.status.success() {
        Err(format!(
            "worktree add: {}",
            String::from_utf8_lossy(&add.stderr)
        ))
    } else {
        let apply = git_out(&dest, &["stash", "apply", "--index", reference]);
        if apply.status.success() {
            Ok(restored_at(&dest))
        } else {
            Err(format!(
                "stash apply --index: {}{}",
                String::from_utf8_lossy(&apply.stdout),
                String::from_utf8_lossy(&apply.stderr)
            ))
        }
    };
    let _ = git_out(
        main,
        &["worktree", "remove", "--force", dest.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dest);
    let _ = git_out(main, &["worktree", "prune"]);
    result
}

/// Every `refs/boo/archive/*` ref of the main repositories.
pub fn archive_refs(main_repos: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for m in main_repos {
        for r in git_ok(
            m,
            &["for-each-ref", "--format=%(refname)", "refs/boo/archive/"],
        )
        .map(|o| lines(&o))
        .unwrap_or_default()
        {
            out.push((m.clone(), r));
        }
    }
    out
}

/// Checks a pass: `before` and `after` are snapshots of the same root,
/// `archives` the refs the controller reported (each checked against every
/// main repository), `stores` other repositories whose refs count as a
/// place work is kept (a submodule's upstream).
pub fn check(
    before: &Snapshot,
    after: &Snapshot,
    archives: &[String],
    stores: &[PathBuf],
) -> Result<(), Vec<Violation>> {
    let mut violations = Vec::new();

    let mut refs: BTreeSet<(PathBuf, String)> =
        archive_refs(&before.main_repos).into_iter().collect();
    for a in archives {
        for m in &before.main_repos {
            if git_ok(m, &["rev-parse", "-q", "--verify", a]).is_some() {
                refs.insert((m.clone(), a.clone()));
            }
        }
    }

    let mut hold = Holdings {
        reachable: BTreeSet::new(),
        committed: BTreeSet::new(),
        archives: HashMap::new(),
    };
    for repo in before.main_repos.iter().chain(stores) {
        let mut files = BTreeSet::new();
        tree_files(repo, &repo_reachable(repo, false), &mut files);
        // A tree naming a blob the repository lacks holds nothing: what
        // `git gc` keeps is what is reachable and there.
        let present = present_objects(repo, files.iter().map(|(_, e)| e.blob.as_str()));
        hold.committed
            .extend(files.into_iter().filter(|(_, e)| present.contains(&e.blob)));
        hold.reachable.extend(repo_reachable(repo, true));
    }
    // What still stands keeps its own commits: directories, admin entries
    // and the submodule git directories inside them.
    for d in &after.dirs {
        hold.reachable.extend(d.commits.iter().cloned());
    }
    for a in &after.admins {
        hold.reachable.extend(a.commits.iter().cloned());
        for c in a.modules.values() {
            hold.reachable.extend(c.iter().cloned());
        }
    }
    for (main, reference) in &refs {
        let Some(name) = archive_name(reference) else {
            continue;
        };
        // A stale admin entry's HEAD is kept under the same namespace as a
        // plain commit (README, "stale admin entry"): history, not a state
        // to restore; rule (b) judges its commits.
        let parents = git_ok(main, &["rev-list", "--parents", "-n1", reference])
            .map(|o| String::from_utf8_lossy(&o).split_whitespace().count())
            .unwrap_or(0);
        if parents < 3 {
            continue;
        }
        match restore(main, reference) {
            Ok(r) => hold.archives.entry(name).or_default().push(r),
            Err(error) => violations.push(Violation::ArchiveUnrestorable {
                reference: reference.clone(),
                error,
            }),
        }
    }

    for d in &before.dirs {
        let kept = after.dir(&d.name);
        let mut names = vec![d.name.clone()];
        names.extend(d.admin_name.clone());
        let restored: Vec<&Restored> = names
            .iter()
            .filter_map(|n| hold.archives.get(n))
            .flatten()
            .collect();

        // (a) every byte of work is recoverable.
        for (p, e) in &d.work {
            let now = entry_of(&d.path.join(p));
            if now.as_ref() == Some(e) {
                continue;
            }
            let committed = std::iter::once(p.clone())
                .chain(
                    d.nested
                        .iter()
                        .filter_map(|n| p.strip_prefix(n).ok().map(Path::to_path_buf)),
                )
                .any(|rel| hold.committed.contains(&(rel, e.clone())));
            if committed {
                continue;
            }
            if restored.iter().any(|r| r.files.get(p) == Some(e)) {
                continue;
            }
            violations.push(Violation::WorkLost {
                dir: d.name.clone(),
                path: p.clone(),
                entry: e.clone(),
                now,
            });
        }
        for (p, e) in &d.index {
            let item = (p.clone(), e.clone());
            if kept.is_some_and(|k| k.index.contains(&item))
                || hold.committed.contains(&item)
                || restored.iter().any(|r| r.index.contains(&item))
            {
                continue;
            }
            violations.push(Violation::StagedLost {
                dir: d.name.clone(),
                path: p.clone(),
                entry: e.clone(),
            });
        }

        // Staged content of nested repositories and submodules: in place,
        // committed (below the repository's path), or archived as a file.
        for (p, e) in &d.nested_index {
            let item = (p.clone(), e.clone());
            let committed = d
                .nested
                .iter()
                .filter_map(|n| p.strip_prefix(n).ok())
                .any(|rel| hold.committed.contains(&(rel.to_path_buf(), e.clone())));
            if kept.is_some_and(|k| k.nested_index.contains(&item))
                || committed
                || restored.iter().any(|r| r.files.get(p) == Some(e))
            {
                continue;
            }
            violations.push(Violation::StagedLost {
                dir: d.name.clone(),
                path: p.clone(),
                entry: e.clone(),
            });
        }

        // (b) every commit is still reachable.
        for c in &d.commits {
            if !hold.reachable.contains(c) {
                violations.push(Violation::CommitLost {
                    dir: d.name.clone(),
                    commit: c.clone(),
                });
            }
        }

        // (c) kept means byte-identical, and still a worktree.
        if kept.is_some_and(|k| d.proper && !k.proper) {
            violations.push(Violation::Unlinked {
                dir: d.name.clone(),
            });
        }
        if let Some(k) = kept {
            let paths: BTreeSet<&PathBuf> = d.all.keys().chain(k.all.keys()).collect();
            for p in paths {
                let (b, a) = (d.all.get(p), k.all.get(p));
                if b != a {
                    violations.push(Violation::KeptChanged {
                        dir: d.name.clone(),
                        path: p.clone(),
                        before: b.cloned(),
                        after: a.cloned(),
                    });
                }
            }
        }
    }

    // (d) what only an admin entry held: its commits, its submodules'
    // commits (whose objects must now be in a main repository when the
    // git directory is gone), and its staged content.
    for a in &before.admins {
        let label = format!("admin entry {}", a.name);
        let all = a.commits.iter().chain(a.modules.values().flatten());
        for c in all.collect::<BTreeSet<_>>() {
            if !hold.reachable.contains(c) {
                violations.push(Violation::CommitLost {
                    dir: label.clone(),
                    commit: c.clone(),
                });
            }
        }
        let kept = after.admin(&a.main, &a.name);
        // The archives of the directories this entry was the admin of.
        let mut names = vec![a.name.clone()];
        names.extend(
            before
                .dirs
                .iter()
                .filter(|d| d.admin_name.as_deref() == Some(a.name.as_str()))
                .map(|d| d.name.clone()),
        );
        let restored: Vec<&Restored> = names
            .iter()
            .filter_map(|n| hold.archives.get(n))
            .flatten()
            .collect();
        // A submodule's staged content in a worktree under the root is
        // judged with the directory; here, that of an entry whose
        // directory is gone or elsewhere.
        let judged_with_dir = before
            .dirs
            .iter()
            .any(|d| d.proper && d.admin_name.as_deref() == Some(a.name.as_str()));
        for item in a.module_index.iter().filter(|_| !judged_with_dir) {
            let (_, p, e) = item;
            if kept.is_some_and(|k| k.module_index.contains(item))
                || hold.committed.contains(&(p.clone(), e.clone()))
            {
                continue;
            }
            violations.push(Violation::StagedLost {
                dir: format!("{label} {}", item.0.display()),
                path: p.clone(),
                entry: e.clone(),
            });
        }
        for item in &a.index {
            if kept.is_some_and(|k| k.index.contains(item))
                || hold.committed.contains(item)
                || restored.iter().any(|r| r.index.contains(item))
            {
                continue;
            }
            violations.push(Violation::StagedLost {
                dir: label.clone(),
                path: item.0.clone(),
                entry: item.1.clone(),
            });
        }
    }

    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Without `--force`, a locked worktree or one in the middle of an
/// operation must still be there: its lock and its operation's state are
/// not in any archive.
pub fn check_unforced(before: &Snapshot, after: &Snapshot) -> Result<(), Vec<Violation>> {
    let v: Vec<Violation> = before
        .dirs
        .iter()
        .filter(|d| after.dir(&d.name).is_none())
        .filter_map(|d| {
            let mut why = Vec::new();
            if d.locked {
                why.push("locked".to_string());
            }
            why.extend(d.operations.iter().cloned());
            (!why.is_empty()).then(|| Violation::RemovedUnforced {
                dir: d.name.clone(),
                why: why.join(", "),
            })
        })
        .collect();
    if v.is_empty() {
        Ok(())
    } else {
        Err(v)
    }
}
