//! Worlds to judge: a main repository, a root of linked worktrees put into
//! awkward states by a list of operations, a database saying whose session
//! is live, and one pass of the real controller binary.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::collections::{BTreeMap, BTreeSet};

use super::{check, check_unforced, git_out, snapshot, walk, Entry, Snapshot, Violation};

pub const HOST: &str = "oracle-host";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Plain,
    Space,
    Unicode,
    LeadingDash,
    Newline,
    Tab,
    Deep,
    /// Not UTF-8.
    Bytes,
    QuoteBackslash,
    /// A file named like the ignored directory `target/`: git's rule
    /// matches directories only.
    TargetFile,
}

impl Name {
    pub const ALL: [Name; 10] = [
        Name::Plain,
        Name::Space,
        Name::Unicode,
        Name::LeadingDash,
        Name::Newline,
        Name::Tab,
        Name::Deep,
        Name::Bytes,
        Name::QuoteBackslash,
        Name::TargetFile,
    ];

    fn path(self, n: u32) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(match self {
            Name::Plain => format!("notes-{n}.txt"),
            Name::Space => format!("with space {n}.txt"),
            Name::Unicode => format!("ünïcødé-{n}-日本.txt"),
            Name::LeadingDash => format!("-{n}-dash"),
            Name::Newline => format!("new\nline-{n}"),
            Name::Tab => format!("tab\there-{n}"),
            Name::Deep => format!("deep/a/b/c/d/e/f-{n}.txt"),
            Name::Bytes => {
                let mut b = format!("bytes-{n}-").into_bytes();
                b.extend_from_slice(b"\xff\xfe.txt");
                return PathBuf::from(std::ffi::OsStr::from_bytes(&b));
            }
            Name::QuoteBackslash => format!("quote\"back\\slash-{n}"),
            Name::TargetFile => format!("lib/{n}/target"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrate {
    Merge,
    RebaseMerge,
    Squash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    UntrackedSymlink,
    FileToSymlink,
    FileToDir,
}

/// A step applied inside worktree `wt`'s submodule `sub`, initialised in
/// the linked worktree first when it is not (its git directory then lives
/// in the admin entry, under `modules/sub`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubStep {
    /// A tracked file edited.
    Edit,
    /// An untracked file.
    Untracked,
    /// A `.env` the submodule's `info/exclude` ignores: precious.
    DotEnv,
    /// A commit on the submodule's branch.
    Commit,
    /// Tracked changes stashed: a commit only the stash holds.
    Stash,
    /// A commit only a tag reaches.
    TagOnly,
    /// A commit only the submodule's HEAD reflog reaches.
    ReflogOnly,
    /// An edit under `--assume-unchanged`.
    HiddenEdit,
    /// Staged content whose file is then deleted: only the index has it.
    StagedOnly,
}

impl SubStep {
    pub const ALL: [SubStep; 9] = [
        SubStep::Edit,
        SubStep::Untracked,
        SubStep::DotEnv,
        SubStep::Commit,
        SubStep::Stash,
        SubStep::TagOnly,
        SubStep::ReflogOnly,
        SubStep::HiddenEdit,
        SubStep::StagedOnly,
    ];
}

/// One step that changes the world; `wt` picks a worktree (modulo their
/// number). A step that does not apply (its worktree is gone, git refuses)
/// changes nothing or what git left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    EditTracked {
        wt: u8,
        file: u8,
    },
    AddStaged {
        wt: u8,
    },
    DeleteTracked {
        wt: u8,
        file: u8,
    },
    Untracked {
        wt: u8,
        name: Name,
    },
    ShowUntrackedNo,
    BuildOutput {
        wt: u8,
    },
    DotEnv {
        wt: u8,
        deep: bool,
    },
    CommitOnBranch {
        wt: u8,
    },
    CommitDetached {
        wt: u8,
    },
    IntoMain {
        wt: u8,
        how: Integrate,
    },
    DeleteBranch {
        wt: u8,
    },
    Stash {
        wt: u8,
        untracked: bool,
    },
    ChmodX {
        wt: u8,
    },
    Symlink {
        wt: u8,
        how: Link,
    },
    NestedRepo {
        wt: u8,
        in_tracked_dir: bool,
    },
    Submodule {
        wt: u8,
        commit: bool,
    },
    SubmoduleCommit {
        wt: u8,
    },
    Lock {
        wt: u8,
    },
    HiddenEdit {
        wt: u8,
        skip_worktree: bool,
    },
    StoppedRebase {
        wt: u8,
    },
    ConflictedMerge {
        wt: u8,
    },
    BisectStart {
        wt: u8,
    },
    CopyWorktree {
        wt: u8,
    },
    MoveWorktree {
        wt: u8,
    },
    DeleteDotGit {
        wt: u8,
    },
    GitignoreTab {
        wt: u8,
    },
    DotGitUpper {
        wt: u8,
    },
    GitignoreSymlink {
        wt: u8,
    },
    Chmod000 {
        wt: u8,
    },
    ReflogOnly {
        wt: u8,
    },
    WorktreeRefOnly {
        wt: u8,
    },
    /// A precious file inside an ignored directory.
    EnvInIgnoredDir {
        wt: u8,
    },
    /// `*.log` ignored, `!keep.log` not: an untracked `keep.log`.
    NegatedIgnore {
        wt: u8,
    },
    /// Untracked symlinks to a file and a directory outside the root.
    SymlinkOutside {
        wt: u8,
    },
    /// Staged content whose file is then deleted: only the index has it.
    StagedOnly {
        wt: u8,
    },
    /// `git add -N`: an intent-to-add entry, the content in the file only.
    IntentToAdd {
        wt: u8,
    },
    /// A symlink directly under the root, to a directory outside it.
    RootSymlink,
    /// The next worktree checks out this one's HEAD, detached: two
    /// worktrees whose HEADs could vouch for each other.
    ShareHead {
        wt: u8,
    },
    /// A step inside the worktree's submodule (initialised first).
    InSubmodule {
        wt: u8,
        step: SubStep,
    },
    /// Someone else deletes the worktree's directory, or moves it out of
    /// the root (into `outside/`): its admin entry is left stale.
    WorktreeGone {
        wt: u8,
        moved_out: bool,
    },
    /// Every reflog expired and `git gc --prune=now` in the main
    /// repository (and in the worktree's submodule): what only a reflog
    /// held before is gone before the pass, as on a host that runs gc.
    GcExpire {
        wt: u8,
    },
    /// A commit in the worktree (on its branch, or detached) whose change
    /// `main` then gets with other whitespace: the same patch to a
    /// whitespace-blind eye, other bytes.
    WhitespaceMerged {
        wt: u8,
        detached: bool,
    },
    /// The root is unmounted for one pass (its mount point an empty
    /// directory) and mounted again before the judged pass.
    Remount,
    /// A process that is not an agent writes new files into the worktree
    /// all through the pass, from inside it (its working directory) or
    /// from outside the root (by absolute path, as a sync daemon would).
    Writer {
        wt: u8,
        inside: bool,
        /// Its first write this many 10 ms after the pass starts (0: one
        /// before it starts).
        delay: u8,
    },
}

impl Op {
    pub const KINDS: u8 = 44;

    /// The variant's name, as `Debug` prints it.
    pub fn kind(&self) -> String {
        let d = format!("{self:?}");
        d.split([' ', '{']).next().unwrap_or_default().to_string()
    }

    /// The names `BOO_ORACLE_WITHOUT` knows the step by: its kind, and for
    /// a step inside a submodule also `InSubmodule.<step>`.
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![self.kind()];
        if let Op::InSubmodule { step, .. } = self {
            v.push(format!("InSubmodule.{step:?}"));
        }
        v
    }

    /// Op number `kind` with its parameters drawn from `wt` and `x`; low
    /// numbers are the simple ones, so shrinking heads towards them.
    pub fn from_parts(kind: u8, wt: u8, x: u8) -> Op {
        let b = x % 2 == 1;
        match kind % Self::KINDS {
            0 => Op::EditTracked { wt, file: x % 3 },
            1 => Op::AddStaged { wt },
            2 => Op::DeleteTracked { wt, file: x % 3 },
            3 => Op::Untracked {
                wt,
                name: Name::ALL[x as usize % Name::ALL.len()],
            },
            4 => Op::ShowUntrackedNo,
            5 => Op::BuildOutput { wt },
            6 => Op::DotEnv { wt, deep: b },
            7 => Op::CommitOnBranch { wt },
            8 => Op::CommitDetached { wt },
            9 => Op::IntoMain {
                wt,
                how: [Integrate::Merge, Integrate::RebaseMerge, Integrate::Squash][x as usize % 3],
            },
            10 => Op::DeleteBranch { wt },
            11 => Op::Stash { wt, untracked: b },
            12 => Op::ChmodX { wt },
            13 => Op::Symlink {
                wt,
                how: [Link::UntrackedSymlink, Link::FileToSymlink, Link::FileToDir][x as usize % 3],
            },
            14 => Op::NestedRepo {
                wt,
                in_tracked_dir: b,
            },
            15 => Op::Submodule { wt, commit: b },
            16 => Op::SubmoduleCommit { wt },
            17 => Op::Lock { wt },
            18 => Op::HiddenEdit {
                wt,
                skip_worktree: b,
            },
            19 => Op::StoppedRebase { wt },
            20 => Op::ConflictedMerge { wt },
            21 => Op::BisectStart { wt },
            22 => Op::CopyWorktree { wt },
            23 => Op::MoveWorktree { wt },
            24 => Op::DeleteDotGit { wt },
            25 => Op::GitignoreTab { wt },
            26 => Op::DotGitUpper { wt },
            27 => Op::GitignoreSymlink { wt },
            28 => Op::Chmod000 { wt },
            29 => Op::ReflogOnly { wt },
            30 => Op::WorktreeRefOnly { wt },
            31 => Op::ShareHead { wt },
            32 => Op::EnvInIgnoredDir { wt },
            33 => Op::NegatedIgnore { wt },
            34 => Op::SymlinkOutside { wt },
            35 => Op::StagedOnly { wt },
            36 => Op::IntentToAdd { wt },
            37 => Op::RootSymlink,
            38 => Op::InSubmodule {
                wt,
                step: SubStep::ALL[x as usize % SubStep::ALL.len()],
            },
            39 => Op::WorktreeGone { wt, moved_out: b },
            40 => Op::GcExpire { wt },
            41 => Op::WhitespaceMerged { wt, detached: b },
            42 => Op::Remount,
            _ => Op::Writer {
                wt,
                inside: b,
                delay: (x / 2) % 16,
            },
        }
    }
}

/// What the database says about one directory under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// No `worktrees` row: an orphan.
    NoRow,
    /// Session open with an open chat: live, must be left alone.
    Live,
    SessionArchived,
    SessionDeleted,
    /// The row names a session that has no row.
    SessionMissing,
    /// Session open, never had a chat.
    OpenNoChat,
    /// Session open, its only chat archived.
    ChatArchived,
}

impl Owner {
    pub const ALL: [Owner; 7] = [
        Owner::NoRow,
        Owner::Live,
        Owner::SessionArchived,
        Owner::SessionDeleted,
        Owner::SessionMissing,
        Owner::OpenNoChat,
        Owner::ChatArchived,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpec {
    pub owner: Owner,
    pub base_ref: bool,
    /// A second row naming the same path: one live, one archived.
    pub duplicate: bool,
}

impl RowSpec {
    pub fn gone(owner: Owner) -> RowSpec {
        RowSpec {
            owner,
            base_ref: true,
            duplicate: false,
        }
    }
}

pub struct World {
    _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub main: PathBuf,
    pub root: PathBuf,
    pub upstream: Option<PathBuf>,
    pub ids: Vec<String>,
    pub db: PathBuf,
    /// Directories a live session's row names.
    pub live: Vec<String>,
    label: String,
    counter: u32,
    /// Unmount the root for one pass before the judged one.
    remount: bool,
    /// The worktree a non-agent writer writes into during the pass,
    /// whether it runs inside it, and its first write's delay.
    writer: Option<(u8, bool, u8)>,
    /// Where the root's contents live while it is a bind mount.
    mounted: Option<PathBuf>,
    /// Worktrees someone else deleted or moved out: their rows stay.
    gone: Vec<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        // Nothing may stay mounted inside a directory about to be deleted.
        if self.mounted.is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.root).output();
        }
    }
}

/// Runs git for a step; a refusal is part of the world, not an error.
pub fn g(dir: &Path, args: &[&str]) -> bool {
    git_out(dir, args).status.success()
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let _ = std::fs::write(path, text);
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Every reflog expired, then `git gc --prune=now`: what only a reflog
/// held is gone.
fn gc_expire(dir: &Path) {
    g(dir, &["reflog", "expire", "--expire=now", "--all"]);
    g(dir, &["gc", "-q", "--prune=now"]);
}

fn commit_all(dir: &Path, msg: &str) -> bool {
    g(dir, &["add", "-A"]) && g(dir, &["commit", "-q", "--no-verify", "-m", msg])
}

impl World {
    /// A main repository with a few commits on `main` and `n` worktrees
    /// `<root>/w<i>` on branches `boo/w<i>`.
    pub fn new(n: usize) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("oracle-")
            .tempdir()
            .expect("tempdir");
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let main = base.join("main");
        let root = base.join("root");
        std::fs::create_dir_all(&main).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        assert!(g(&main, &["init", "-q", "-b", "main"]));
        write(&main.join(".gitignore"), "target/\n.env\n.env.*\n");
        write(&main.join("f0.txt"), "zero\n");
        write(&main.join("f1.txt"), "one\n");
        write(&main.join("f2.txt"), "two\n");
        assert!(commit_all(&main, "first"));
        write(&main.join("src/main.txt"), "fn main\n");
        write(&main.join("run.sh"), "#!/bin/sh\necho hi\n");
        assert!(commit_all(&main, "second"));
        append(&main.join("f0.txt"), "zero again\n");
        assert!(commit_all(&main, "third"));
        write(&base.join("outside/keep.txt"), "outside the root\n");
        write(&base.join("outside/sub/deep.txt"), "outside, deeper\n");
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("w{i}");
            let p = root.join(&id);
            assert!(g(
                &main,
                &[
                    "worktree",
                    "add",
                    "-q",
                    p.to_str().unwrap(),
                    "-b",
                    &format!("boo/{id}"),
                    "main"
                ]
            ));
            ids.push(id);
        }
        World {
            _tmp: tmp,
            db: base.join("db.sqlite"),
            base,
            main,
            root,
            upstream: None,
            ids,
            live: Vec::new(),
            label: format!("BOO_ORACLE_CHAT_{:016X}", fastrand::u64(..)),
            counter: 0,
            remount: false,
            writer: None,
            mounted: None,
            gone: Vec::new(),
        }
    }

    fn n(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    fn id(&self, wt: u8) -> String {
        self.ids[wt as usize % self.ids.len()].clone()
    }

    /// The worktree's directory, when it is still there.
    fn wt(&self, wt: u8) -> Option<PathBuf> {
        let p = self.root.join(self.id(wt));
        p.is_dir().then_some(p)
    }

    /// Files outside the root that symlinks under it point at.
    pub fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    fn upstream(&mut self) -> PathBuf {
        if let Some(u) = &self.upstream {
            return u.clone();
        }
        let u = self.base.join("upstream");
        std::fs::create_dir_all(&u).unwrap();
        g(&u, &["init", "-q", "-b", "main"]);
        write(&u.join("lib.txt"), "library\n");
        commit_all(&u, "lib");
        self.upstream = Some(u.clone());
        u
    }

    /// Two commits that touch `f0.txt` differently: one on the worktree's
    /// HEAD, one on `main`.
    fn diverge(&mut self, w: &Path) {
        let n = self.n();
        write(&w.join("f0.txt"), &format!("worktree side {n}\n"));
        commit_all(w, "worktree side");
        write(&self.main.join("f0.txt"), &format!("main side {n}\n"));
        commit_all(&self.main.clone(), "main side");
    }

    pub fn apply(&mut self, op: &Op) {
        let main = self.main.clone();
        match *op {
            Op::ShowUntrackedNo => {
                g(&main, &["config", "status.showUntrackedFiles", "no"]);
            }
            Op::RootSymlink => {
                let n = self.n();
                let _ =
                    std::os::unix::fs::symlink(self.outside(), self.root.join(format!("link-{n}")));
            }
            Op::IntoMain { wt, how } => {
                let branch = format!("boo/{}", self.id(wt));
                match how {
                    Integrate::Merge => {
                        if !g(&main, &["merge", "-q", "--no-ff", "-m", "merge", &branch]) {
                            g(&main, &["merge", "--abort"]);
                        }
                    }
                    Integrate::RebaseMerge => {
                        if !g(&main, &["cherry-pick", &format!("main..{branch}")]) {
                            g(&main, &["cherry-pick", "--abort"]);
                        }
                    }
                    Integrate::Squash => {
                        if !(g(&main, &["merge", "-q", "--squash", &branch])
                            && g(&main, &["commit", "-q", "--no-verify", "-m", "squash"]))
                        {
                            g(&main, &["reset", "-q", "--hard", "HEAD"]);
                        }
                    }
                }
            }
            Op::ShareHead { wt } => {
                let next = wt.wrapping_add(1);
                if let (Some(a), Some(b)) = (self.wt(wt), self.wt(next)) {
                    if a != b {
                        let head = git_out(&a, &["rev-parse", "HEAD"]);
                        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
                        g(&b, &["checkout", "-q", "--detach", &head]);
                    }
                }
            }
            Op::DeleteBranch { wt } => {
                let branch = format!("boo/{}", self.id(wt));
                if let Some(w) = self.wt(wt) {
                    g(&w, &["checkout", "-q", "--detach"]);
                }
                g(&main, &["branch", "-q", "-D", &branch]);
            }
            Op::Remount => self.remount = true,
            Op::Writer { wt, inside, delay } => {
                if self.wt(wt).is_some() {
                    self.writer = Some((wt, inside, delay));
                }
            }
            Op::GcExpire { wt } => {
                if let Some(s) = self.wt(wt).map(|w| w.join("sub")) {
                    if s.join(".git").exists() {
                        gc_expire(&s);
                    }
                }
                gc_expire(&main);
            }
            _ => {
                let wt = match *op {
                    Op::EditTracked { wt, .. }
                    | Op::AddStaged { wt }
                    | Op::DeleteTracked { wt, .. }
                    | Op::Untracked { wt, .. }
                    | Op::BuildOutput { wt }
                    | Op::DotEnv { wt, .. }
                    | Op::CommitOnBranch { wt }
                    | Op::CommitDetached { wt }
                    | Op::Stash { wt, .. }
                    | Op::ChmodX { wt }
                    | Op::Symlink { wt, .. }
                    | Op::NestedRepo { wt, .. }
                    | Op::Submodule { wt, .. }
                    | Op::SubmoduleCommit { wt }
                    | Op::Lock { wt }
                    | Op::HiddenEdit { wt, .. }
                    | Op::StoppedRebase { wt }
                    | Op::ConflictedMerge { wt }
                    | Op::BisectStart { wt }
                    | Op::CopyWorktree { wt }
                    | Op::MoveWorktree { wt }
                    | Op::DeleteDotGit { wt }
                    | Op::GitignoreTab { wt }
                    | Op::DotGitUpper { wt }
                    | Op::GitignoreSymlink { wt }
                    | Op::Chmod000 { wt }
                    | Op::ReflogOnly { wt }
                    | Op::WorktreeRefOnly { wt }
                    | Op::EnvInIgnoredDir { wt }
                    | Op::NegatedIgnore { wt }
                    | Op::SymlinkOutside { wt }
                    | Op::StagedOnly { wt }
                    | Op::IntentToAdd { wt }
                    | Op::InSubmodule { wt, .. }
                    | Op::WorktreeGone { wt, .. }
                    | Op::WhitespaceMerged { wt, .. } => wt,
                    Op::ShowUntrackedNo
                    | Op::RootSymlink
                    | Op::IntoMain { .. }
                    | Op::DeleteBranch { .. }
                    | Op::ShareHead { .. }
                    | Op::Remount
                    | Op::Writer { .. }
                    | Op::GcExpire { .. } => unreachable!(),
                };
                if let Some(w) = self.wt(wt) {
                    self.apply_in(op, &w);
                }
            }
        }
    }

    fn apply_in(&mut self, op: &Op, w: &Path) {
        let n = self.n();
        match *op {
            Op::EditTracked { file, .. } => append(&w.join(format!("f{file}.txt")), "edit\n"),
            Op::AddStaged { .. } => {
                let f = format!("added-{n}.txt");
                write(&w.join(&f), &format!("staged {n}\n"));
                g(w, &["add", "--", &f]);
            }
            Op::DeleteTracked { file, .. } => {
                let _ = std::fs::remove_file(w.join(format!("f{file}.txt")));
            }
            Op::Untracked { name, .. } => write(&w.join(name.path(n)), &format!("untracked {n}\n")),
            Op::BuildOutput { .. } => {
                write(&w.join(format!("target/debug/out-{n}.bin")), "build\n");
            }
            Op::DotEnv { deep, .. } => {
                let p = if deep {
                    format!("conf/.env.local-{n}")
                } else {
                    ".env".to_string()
                };
                write(&w.join(p), &format!("SECRET={n}\n"));
            }
            Op::CommitOnBranch { .. } => {
                write(&w.join(format!("c-{n}.txt")), &format!("commit {n}\n"));
                g(w, &["add", "--", &format!("c-{n}.txt")]);
                g(w, &["commit", "-q", "--no-verify", "-m", &format!("c{n}")]);
            }
            Op::CommitDetached { .. } => {
                g(w, &["checkout", "-q", "--detach"]);
                write(&w.join(format!("d-{n}.txt")), &format!("detached {n}\n"));
                g(w, &["add", "--", &format!("d-{n}.txt")]);
                g(w, &["commit", "-q", "--no-verify", "-m", &format!("d{n}")]);
            }
            Op::Stash { untracked, .. } => {
                append(&w.join("f0.txt"), &format!("stashed {n}\n"));
                if untracked {
                    write(&w.join(format!("stash-u-{n}.txt")), "u\n");
                    g(w, &["stash", "-q", "-u"]);
                } else {
                    g(w, &["stash", "-q"]);
                }
            }
            Op::ChmodX { .. } => {
                let _ = std::fs::set_permissions(
                    w.join("f0.txt"),
                    std::fs::Permissions::from_mode(0o755),
                );
            }
            Op::Symlink { how, .. } => match how {
                Link::UntrackedSymlink => {
                    let _ = std::os::unix::fs::symlink("f0.txt", w.join(format!("link-{n}")));
                }
                Link::FileToSymlink => {
                    let _ = std::fs::remove_file(w.join("f1.txt"));
                    let _ = std::os::unix::fs::symlink("f0.txt", w.join("f1.txt"));
                }
                Link::FileToDir => {
                    let _ = std::fs::remove_file(w.join("f2.txt"));
                    write(&w.join("f2.txt/inner.txt"), &format!("now a dir {n}\n"));
                }
            },
            Op::NestedRepo { in_tracked_dir, .. } => {
                let d = if in_tracked_dir {
                    w.join(format!("src/inner-{n}"))
                } else {
                    w.join(format!("vendor/lib-{n}"))
                };
                let _ = std::fs::create_dir_all(&d);
                g(&d, &["init", "-q", "-b", "main"]);
                write(&d.join("nested.txt"), &format!("nested {n}\n"));
                commit_all(&d, "nested");
            }
            Op::Submodule { commit, .. } => {
                let up = self.upstream();
                if g(
                    w,
                    &[
                        "-c",
                        "protocol.file.allow=always",
                        "submodule",
                        "add",
                        "-q",
                        up.to_str().unwrap(),
                        "sub",
                    ],
                ) && commit
                {
                    g(w, &["commit", "-q", "--no-verify", "-m", "submodule"]);
                }
            }
            Op::SubmoduleCommit { .. } => {
                let s = w.join("sub");
                if s.join(".git").exists() {
                    append(&s.join("lib.txt"), &format!("sub change {n}\n"));
                    g(&s, &["commit", "-q", "--no-verify", "-am", "sub"]);
                }
            }
            Op::Lock { .. } => {
                g(w, &["worktree", "lock", "--reason", "oracle"]);
            }
            Op::HiddenEdit { skip_worktree, .. } => {
                let (flag, f) = if skip_worktree {
                    ("--skip-worktree", "f2.txt")
                } else {
                    ("--assume-unchanged", "f1.txt")
                };
                g(w, &["update-index", flag, f]);
                append(&w.join(f), &format!("hidden {n}\n"));
            }
            Op::StoppedRebase { .. } => {
                self.diverge(w);
                g(w, &["rebase", "main"]);
            }
            Op::ConflictedMerge { .. } => {
                self.diverge(w);
                g(w, &["merge", "-q", "-m", "m", "main"]);
            }
            Op::BisectStart { .. } => {
                g(w, &["bisect", "start"]);
            }
            Op::CopyWorktree { .. } => {
                let copy = PathBuf::from(format!("{}-copy{n}", w.display()));
                let ok = Command::new("cp")
                    .arg("-a")
                    .arg(w)
                    .arg(&copy)
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    append(&copy.join("f0.txt"), "edited in the copy\n");
                }
            }
            Op::MoveWorktree { .. } => {
                let _ = std::fs::rename(w, format!("{}-moved{n}", w.display()));
            }
            Op::DeleteDotGit { .. } => {
                let _ = std::fs::remove_file(w.join(".git"));
            }
            Op::GitignoreTab { .. } => {
                append(&w.join(".gitignore"), "tabbed\t\n");
                g(w, &["add", ".gitignore"]);
                g(w, &["commit", "-q", "--no-verify", "-m", "tab rule"]);
                write(&w.join("tabbed"), &format!("not ignored by git {n}\n"));
            }
            Op::DotGitUpper { .. } => write(&w.join(".GIT/notes.txt"), &format!("upper {n}\n")),
            Op::GitignoreSymlink { .. } => {
                let rules = std::fs::read_to_string(w.join(".gitignore")).unwrap_or_default();
                write(&w.join("ignore-rules"), &format!("{rules}*.dat\n"));
                let _ = std::fs::remove_file(w.join(".gitignore"));
                let _ = std::os::unix::fs::symlink("ignore-rules", w.join(".gitignore"));
                g(w, &["add", "--", ".gitignore", "ignore-rules"]);
                g(w, &["commit", "-q", "--no-verify", "-m", "symlinked rules"]);
                write(&w.join(format!("data-{n}.dat")), "data\n");
            }
            Op::Chmod000 { .. } => {
                let d = w.join(format!("sealed-{n}"));
                write(&d.join("secret.txt"), &format!("sealed {n}\n"));
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o000));
            }
            Op::ReflogOnly { .. } => {
                g(w, &["checkout", "-q", "--detach"]);
                write(&w.join(format!("r-{n}.txt")), &format!("reflog {n}\n"));
                g(w, &["add", "--", &format!("r-{n}.txt")]);
                if g(w, &["commit", "-q", "--no-verify", "-m", &format!("r{n}")]) {
                    g(w, &["reset", "-q", "--hard", "HEAD~1"]);
                }
            }
            Op::WorktreeRefOnly { .. } => {
                let out = git_out(
                    w,
                    &[
                        "commit-tree",
                        "HEAD^{tree}",
                        "-p",
                        "HEAD",
                        "-m",
                        "kept aside",
                    ],
                );
                let c = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() {
                    g(w, &["update-ref", "refs/worktree/keep", &c]);
                }
            }
            Op::EnvInIgnoredDir { .. } => {
                write(
                    &w.join(format!("target/conf-{n}/.env")),
                    &format!("SECRET={n}\n"),
                );
            }
            Op::NegatedIgnore { .. } => {
                append(&w.join(".gitignore"), "*.log\n!keep.log\n");
                g(w, &["add", ".gitignore"]);
                g(w, &["commit", "-q", "--no-verify", "-m", "log rules"]);
                write(&w.join("keep.log"), &format!("kept {n}\n"));
                write(&w.join("noise.log"), "noise\n");
            }
            Op::SymlinkOutside { .. } => {
                let out = self.outside();
                let _ = std::os::unix::fs::symlink(
                    out.join("keep.txt"),
                    w.join(format!("out-file-{n}")),
                );
                let _ = std::os::unix::fs::symlink(&out, w.join(format!("out-dir-{n}")));
            }
            Op::StagedOnly { .. } => {
                let f = format!("staged-only-{n}.txt");
                write(&w.join(&f), &format!("only in the index {n}\n"));
                g(w, &["add", "--", &f]);
                let _ = std::fs::remove_file(w.join(&f));
            }
            Op::IntentToAdd { .. } => {
                let f = format!("intent-{n}.txt");
                write(&w.join(&f), &format!("intent to add {n}\n"));
                g(w, &["add", "-N", "--", &f]);
            }
            Op::InSubmodule { step, .. } => {
                if let Some(s) = self.submodule(w) {
                    self.sub_step(&s, step, n);
                }
            }
            Op::WorktreeGone { moved_out, .. } => {
                if let Some(name) = w.file_name() {
                    self.gone.push(name.to_string_lossy().to_string());
                }
                if moved_out {
                    let to = self.outside().join(format!("moved-out-{n}"));
                    // `mv`: the root may be another mount than `outside/`.
                    let _ = Command::new("mv").arg(w).arg(&to).status();
                } else {
                    let _ = std::fs::remove_dir_all(w);
                }
            }
            Op::WhitespaceMerged { detached, .. } => {
                if detached {
                    g(w, &["checkout", "-q", "--detach"]);
                }
                let f = format!("ws-{n}.txt");
                write(&w.join(&f), &format!("fn f() {{\n\tlet x = {n};\n}}\n"));
                g(w, &["add", "--", &f]);
                if g(w, &["commit", "-q", "--no-verify", "-m", &format!("ws{n}")]) {
                    let m = self.main.clone();
                    write(&m.join(&f), &format!("fn f() {{\n    let  x = {n}; \n}}\n"));
                    g(&m, &["add", "--", &f]);
                    g(
                        &m,
                        &["commit", "-q", "--no-verify", "-m", &format!("ws{n}")],
                    );
                }
            }
            Op::ShowUntrackedNo
            | Op::RootSymlink
            | Op::IntoMain { .. }
            | Op::DeleteBranch { .. }
            | Op::ShareHead { .. }
            | Op::Remount
            | Op::Writer { .. }
            | Op::GcExpire { .. } => {}
        }
    }

    /// The worktree's submodule `sub`, added (and committed) first when it
    /// is not there: `None` when git refuses.
    fn submodule(&mut self, w: &Path) -> Option<PathBuf> {
        let s = w.join("sub");
        if !s.join(".git").exists() {
            self.apply_in(
                &Op::Submodule {
                    wt: 0,
                    commit: true,
                },
                w,
            );
        }
        s.join(".git").exists().then_some(s)
    }

    fn sub_step(&mut self, s: &Path, step: SubStep, n: u32) {
        match step {
            SubStep::Edit => append(&s.join("lib.txt"), &format!("sub edit {n}\n")),
            SubStep::Untracked => write(
                &s.join(format!("sub-untracked-{n}.txt")),
                &format!("u {n}\n"),
            ),
            SubStep::DotEnv => {
                let out = git_out(s, &["rev-parse", "--git-path", "info/exclude"]);
                let exclude = s.join(String::from_utf8_lossy(&out.stdout).trim());
                write(&exclude, ".env\n");
                write(&s.join(".env"), &format!("SUB_SECRET={n}\n"));
            }
            SubStep::Commit => {
                append(&s.join("lib.txt"), &format!("sub change {n}\n"));
                g(s, &["commit", "-q", "--no-verify", "-am", "sub"]);
            }
            SubStep::Stash => {
                append(&s.join("lib.txt"), &format!("sub stashed {n}\n"));
                g(s, &["stash", "-q"]);
            }
            SubStep::TagOnly => {
                append(&s.join("lib.txt"), &format!("sub tagged {n}\n"));
                if g(s, &["commit", "-q", "--no-verify", "-am", "tagged"]) {
                    g(s, &["tag", &format!("t{n}")]);
                    g(s, &["reset", "-q", "--hard", "HEAD~1"]);
                }
            }
            SubStep::ReflogOnly => {
                g(s, &["checkout", "-q", "--detach"]);
                append(&s.join("lib.txt"), &format!("sub reflog {n}\n"));
                if g(s, &["commit", "-q", "--no-verify", "-am", "reflog"]) {
                    g(s, &["reset", "-q", "--hard", "HEAD~1"]);
                }
            }
            SubStep::HiddenEdit => {
                g(s, &["update-index", "--assume-unchanged", "lib.txt"]);
                append(&s.join("lib.txt"), &format!("sub hidden {n}\n"));
            }
            SubStep::StagedOnly => {
                let f = format!("sub-staged-{n}.txt");
                write(&s.join(&f), &format!("only in the sub's index {n}\n"));
                g(s, &["add", "--", &f]);
                let _ = std::fs::remove_file(s.join(&f));
            }
        }
    }

    /// Directory names under the root, sorted (the trash aside).
    pub fn dir_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|d| d.file_name().to_string_lossy().to_string())
                    .filter(|n| n != super::TRASH)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn symlink_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|d| d.file_type().is_ok_and(|t| t.is_symlink()))
                    .map(|d| d.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn bin(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_boo-reconciler"));
        // No configuration file or environment of the machine's may reach it.
        c.current_dir(&self.base);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BOO_RECONCILER_") {
                c.env_remove(k);
            }
        }
        c.env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for s in [
            format!("database.url=sqlite://{}", self.db.display()),
            format!("host.id={HOST}"),
            format!("worktrees.root={}", self.root.display()),
            "worktrees.orphan_min_age=0s".to_string(),
            // Stale admin entries pruned on the pass that finds them: the
            // prune, and what it keeps, is what the oracle judges.
            "worktrees.stale_entry_grace=0s".to_string(),
            "opencode.url=".to_string(),
            format!("processes.chat_label={}", self.label),
            // No other test's agent cgroups.
            "processes.cgroup_parent=off".to_string(),
            "http.listen=127.0.0.1:1".to_string(),
        ] {
            c.arg("--set").arg(s);
        }
        c
    }

    /// Migrates a fresh database and writes the rows: `rows[i]` for the
    /// `i`-th directory under the root (cycling).
    pub fn write_rows(&mut self, rows: &[RowSpec]) {
        let out = self.bin().arg("migrate").output().expect("migrate runs");
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if rows.is_empty() {
            return;
        }
        let mut sql = String::from("BEGIN;\n");
        // Symlinks under the root get rows too: paths are untrusted input.
        let mut names = self.dir_names();
        names.extend(self.symlink_names());
        // A worktree someone else took away still has its row.
        names.extend(
            self.gone
                .iter()
                .filter(|g| !names.contains(g))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for (i, name) in names.iter().enumerate() {
            let spec = rows[i % rows.len()];
            let path = self.root.join(name);
            self.row_sql(&mut sql, name, name, &path, spec.owner, spec.base_ref);
            let mut live = spec.owner == Owner::Live;
            if spec.duplicate {
                let dup = format!("{name}-dup");
                let other = if spec.owner == Owner::Live {
                    Owner::SessionArchived
                } else {
                    Owner::Live
                };
                self.row_sql(&mut sql, &dup, name, &path, other, spec.base_ref);
                live = true;
            }
            if live {
                self.live.push(name.clone());
            }
        }
        sql.push_str("COMMIT;\n");
        let mut child = Command::new("sqlite3")
            .arg(&self.db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sqlite3 runs (apt-get install sqlite3)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sqlite3: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn row_sql(
        &self,
        sql: &mut String,
        id: &str,
        branch_of: &str,
        path: &Path,
        owner: Owner,
        base_ref: bool,
    ) {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let session = format!("s-{id}");
        let base = if base_ref { q("main") } else { "NULL".into() };
        let (session_status, chat_status) = match owner {
            Owner::NoRow => return,
            Owner::Live => (Some("open"), Some("open")),
            Owner::SessionArchived => (Some("archived"), Some("archived")),
            Owner::SessionDeleted => (Some("deleted"), Some("deleted")),
            Owner::SessionMissing => (None, None),
            Owner::OpenNoChat => (Some("open"), None),
            Owner::ChatArchived => (Some("open"), Some("archived")),
        };
        let _ = writeln!(
            sql,
            "INSERT INTO worktrees(id, session_id, repo_path, path, branch, base_ref, host) \
             VALUES ({}, {}, {}, {}, {}, {base}, {});",
            q(id),
            q(&session),
            q(self.main.to_str().unwrap()),
            q(path.to_str().unwrap()),
            q(&format!("boo/{branch_of}")),
            q(HOST)
        );
        if let Some(s) = session_status {
            let _ = writeln!(
                sql,
                "INSERT INTO sessions(id, status) VALUES ({}, {});",
                q(&session),
                q(s)
            );
        }
        if let Some(c) = chat_status {
            let _ = writeln!(
                sql,
                "INSERT INTO chats(id, session_id, status) VALUES ({}, {}, {});",
                q(&format!("c-{id}")),
                q(&session),
                q(c)
            );
        }
    }

    fn once(&self, force: bool) -> std::process::Output {
        let mut c = self.bin();
        c.args(["once", "--json"]);
        if force {
            c.arg("--force");
        }
        c.output().expect("controller runs")
    }

    /// One `once --json` pass; the archive refs it reported and its output.
    pub fn pass(&self, force: bool) -> (Vec<String>, String) {
        let out = self.once(force);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let mut refs = Vec::new();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout) {
            for r in v["results"].as_array().into_iter().flatten() {
                if let Some(s) = r["detail"]["archive"]["reference"].as_str() {
                    refs.push(s.to_string());
                }
            }
        }
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 3)),
            "controller exit {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (refs, stdout)
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.root, std::slice::from_ref(&self.main))
    }

    pub fn stores(&self) -> Vec<PathBuf> {
        self.upstream.iter().cloned().collect()
    }

    /// Every file outside the root a pass could reach by mistake: the
    /// symlinks' targets and the main repository's working tree.
    fn outside_files(&self) -> BTreeMap<PathBuf, Entry> {
        let mut all: BTreeMap<PathBuf, Entry> = walk(&self.outside())
            .into_iter()
            .map(|(p, e)| (Path::new("outside").join(p), e))
            .collect();
        all.extend(
            walk(&self.main)
                .into_iter()
                .filter(|(p, _)| !p.starts_with(".git"))
                .map(|(p, e)| (Path::new("main").join(p), e)),
        );
        all
    }

    /// Restores `reference` with `boo-reconciler restore` and with git's
    /// recipe, each into a scratch directory outside the root; what differs,
    /// if anything. An archive the recipe cannot restore is judged by
    /// `check` already. The recipe makes no nested repository again; the
    /// binary must, for each one of the archived directory in `before`
    /// whose commits only it had: HEAD's commit, its branches, HEAD on the
    /// one branch at that commit, and its files (a clean one's are its
    /// HEAD's, which the recipe leaves out).
    pub fn restore_differs(&self, reference: &str, before: &Snapshot) -> Option<String> {
        let Ok(recipe) = super::restore(&self.main, reference) else {
            return None;
        };
        let (mut got, nested) = match self.restored_by_binary(reference) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => return Some(e),
        };
        let mut differs = Vec::new();
        for (p, back) in &nested {
            if recipe.files.keys().any(|f| f.starts_with(p)) {
                continue;
            }
            got.files.retain(|f, _| !f.starts_with(p));
            if back.files != back.head_files {
                differs.push(format!(
                    "nested {p:?}: its files {:?} are not its HEAD's {:?}",
                    back.files, back.head_files
                ));
            }
        }
        let got = super::staged_as_recipe(got, &recipe);
        if got != recipe {
            differs.push(format!("restored {got:?}\nrecipe {recipe:?}"));
        }
        let archived = super::archive_name(reference).and_then(|name| {
            before
                .dirs
                .iter()
                .find(|d| d.name == name || d.admin_name.as_deref() == Some(name.as_str()))
        });
        for (p, was) in archived.iter().flat_map(|d| &d.nested_repos) {
            if p.as_os_str().is_empty() || !was.local_only {
                continue;
            }
            let Some(back) = nested.get(p) else {
                differs.push(format!("nested {p:?} ({was:?}) was not made again"));
                continue;
            };
            let now = &back.state;
            if now.head != was.head || now.branches != was.branches || now.on != was.expected_on() {
                differs.push(format!("nested {p:?}: was {was:?}, restored {now:?}"));
            }
        }
        (!differs.is_empty()).then(|| differs.join("\n"))
    }

    /// What `boo-reconciler restore <reference>` brings back, read from a
    /// scratch directory outside the root, with the nested repositories it
    /// made again; `None` when the world has no worktree row, so the
    /// command knows no repository to look in.
    #[allow(clippy::type_complexity)]
    pub fn restored_by_binary(
        &self,
        reference: &str,
    ) -> Result<Option<(super::Restored, BTreeMap<PathBuf, super::NestedBack>)>, String> {
        let scratch = tempfile::Builder::new()
            .prefix("oracle-bin-restore-")
            .tempdir()
            .unwrap();
        let dest = scratch.path().join("restored");
        let out = self
            .bin()
            .args(["restore", reference, "--to", dest.to_str().unwrap()])
            .output()
            .expect("controller runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let verdict = if stderr.contains("no archive") && !self.has_rows() {
            Ok(None)
        } else if !out.status.success() {
            Err(format!(
                "restore failed ({:?}): {stderr}",
                out.status.code()
            ))
        } else {
            Ok(Some((super::restored_at(&dest), super::nested_back(&dest))))
        };
        // git refuses to remove a worktree holding a submodule's git
        // directory: the directory goes first, then its admin entry.
        g(
            &self.main,
            &["worktree", "remove", "--force", dest.to_str().unwrap()],
        );
        let _ = std::fs::remove_dir_all(&dest);
        g(&self.main, &["worktree", "prune"]);
        verdict
    }

    fn has_rows(&self) -> bool {
        let out = Command::new("sqlite3")
            .arg(&self.db)
            .arg("SELECT count(*) FROM worktrees")
            .output()
            .expect("sqlite3 runs");
        String::from_utf8_lossy(&out.stdout).trim() != "0"
    }

    fn mount_root(&self, dev: &Path) -> bool {
        Command::new("mount")
            .arg("--bind")
            .arg(dev)
            .arg(&self.root)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The root made a bind mount of its contents, a pass, the root
    /// unmounted (its mount point an empty directory), a pass, and the
    /// root mounted again; the archive refs those passes reported. Without
    /// the privilege to mount, nothing.
    fn remount_passes(&mut self, force: bool) -> Vec<String> {
        let dev = self.base.join("root-dev");
        if std::fs::rename(&self.root, &dev).is_err() {
            return Vec::new();
        }
        std::fs::create_dir(&self.root).expect("a mount point");
        if !self.mount_root(&dev) {
            let _ = std::fs::remove_dir(&self.root);
            std::fs::rename(&dev, &self.root).expect("the root's contents move back");
            return Vec::new();
        }
        self.mounted = Some(dev.clone());
        let (refs, _) = self.pass(force);
        let unmounted = Command::new("umount")
            .arg(&self.root)
            .output()
            .is_ok_and(|o| o.status.success());
        if unmounted {
            // Whatever it exits with, the judged pass and the snapshots
            // say what it did.
            let _ = self.once(force);
            assert!(self.mount_root(&dev), "the root mounts again");
        }
        refs
    }

    /// Snapshot, one pass (with `Op::Remount`, after a pass over the root
    /// mounted and one over it unmounted; with `Op::Writer`, a writer
    /// running), and the oracle's verdict.
    pub fn judge(&mut self, force: bool) -> Result<(), Failure> {
        let mut before = self.snapshot();
        let outside = self.outside_files();
        let writer = self
            .writer
            .and_then(|(wt, inside, delay)| self.wt(wt).map(|p| (self.id(wt), p, inside, delay)))
            .map(|(name, p, inside, delay)| Writer::start(&self.base, &p, name, inside, delay));
        let mut refs = Vec::new();
        if self.remount {
            refs = self.remount_passes(force);
        }
        let (last, output) = self.pass(force);
        refs.extend(last);
        if let Some(w) = writer {
            // What the writer wrote is work as the files before the pass
            // are: in place, or recoverable.
            let (name, written) = w.stop();
            if let Some(d) = before.dirs.iter_mut().find(|d| d.name == name) {
                for (p, e) in written {
                    d.work.insert(p.clone(), e.clone());
                    d.all.insert(p, e);
                }
            }
        }
        let after = self.snapshot();
        let outside_after = self.outside_files();
        let mut violations = check(&before, &after, &refs, &self.stores())
            .err()
            .unwrap_or_default();
        if !force {
            violations.extend(check_unforced(&before, &after).err().unwrap_or_default());
        }
        let paths: BTreeSet<&PathBuf> = outside.keys().chain(outside_after.keys()).collect();
        for p in paths {
            if outside.get(p) != outside_after.get(p) {
                violations.push(Violation::OutsideChanged {
                    path: p.clone(),
                    before: outside.get(p).cloned(),
                    after: outside_after.get(p).cloned(),
                });
            }
        }
        // The binary's own restore brings back what git's recipe does, for
        // each archive; a history ref (what a stale entry alone held) is
        // commits kept, not a state to restore, whatever its shape.
        for reference in refs.iter().filter(|r| super::archive_name(r).is_some()) {
            if let Some(detail) = self.restore_differs(reference, &before) {
                violations.push(Violation::RestoreDiffers {
                    reference: reference.clone(),
                    detail,
                });
            }
        }
        // Whatever else a row says, a live session's worktree stays.
        for name in &self.live {
            if before.dir(name).is_some() && after.dir(name).is_none() {
                violations.push(Violation::LiveRemoved { dir: name.clone() });
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Failure { violations, output })
        }
    }
}

/// A process that is not an agent (no chat label) writing new files into a
/// worktree, its working directory, until told to stop: each file is
/// logged, outside the root, only once it is written.
struct Writer {
    child: std::process::Child,
    name: String,
    log: PathBuf,
    stop: PathBuf,
}

impl Writer {
    /// Where to write is read from a file: neither its arguments, its
    /// environment nor (from outside) its working directory name the
    /// worktree, as with a sync daemon or an editor's background save. It
    /// writes into `src/`, a directory below the worktree's top.
    const SCRIPT: &'static str = r#"DIR=$(cat "$CONF")
sleep "$DELAY"
i=0
while [ ! -e "$STOP" ]; do
  i=$((i+1))
  printf 'writer %s\n' "$i" > "$DIR/src/writer-$i.txt" && echo "src/writer-$i.txt" >> "$LOG"
  sleep 0.02
done"#;

    fn start(base: &Path, dir: &Path, name: String, inside: bool, delay: u8) -> Writer {
        let log = base.join("writer.log");
        let stop = base.join("writer.stop");
        let conf = base.join("writer.conf");
        let (cwd, target) = if inside {
            (dir, Path::new("."))
        } else {
            (base, dir)
        };
        write(&conf, &target.to_string_lossy());
        let child = Command::new("sh")
            .arg("-c")
            .arg(Self::SCRIPT)
            .current_dir(cwd)
            .env("CONF", &conf)
            .env("DELAY", format!("{}.{:02}", delay / 100, delay % 100))
            .env("LOG", &log)
            .env("STOP", &stop)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        // Without a delay, its first file is written before the pass.
        for _ in 0..200 {
            if delay > 0 || log.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Writer {
            child,
            name,
            log,
            stop,
        }
    }

    /// Stops the writer (its last write finished); the directory's name
    /// and every file it wrote, as git would store it.
    fn stop(mut self) -> (String, Vec<(PathBuf, Entry)>) {
        write(&self.stop, "");
        let mut done = false;
        for _ in 0..500 {
            if self.child.try_wait().ok().flatten().is_some() {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let written = log
            .lines()
            .filter_map(|f| {
                let i = f.strip_prefix("src/writer-")?.strip_suffix(".txt")?;
                Some((
                    PathBuf::from(f),
                    Entry {
                        mode: "100644",
                        blob: super::blob_id(format!("writer {i}\n").as_bytes()),
                    },
                ))
            })
            .collect();
        (self.name.clone(), written)
    }
}

pub struct Failure {
    pub violations: Vec<Violation>,
    pub output: String,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} violation(s):", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "  {v:?}")?;
        }
        // The pass's own account, trimmed to what was decided.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.output) {
            for r in v["results"].as_array().into_iter().flatten() {
                writeln!(f, "  pass: {} {} {}", r["target"], r["outcome"], r["note"])?;
            }
            for a in v["at_risk"].as_array().into_iter().flatten() {
                writeln!(f, "  at risk: {} {}", a["target"], a["reasons"])?;
            }
        } else {
            writeln!(f, "  output: {}", self.output)?;
        }
        Ok(())
    }
}

/// Builds a world, applies `ops`, writes `rows`, runs one pass and judges it.
pub fn run_case(n: usize, ops: &[Op], rows: &[RowSpec], force: bool) -> Result<(), Failure> {
    let mut w = World::new(n);
    for op in ops {
        w.apply(op);
    }
    w.write_rows(rows);
    w.judge(force)
}
