//! Reading git's on-disk worktree bookkeeping by hand (`.git` files,
//! `gitdir`, `commondir`, `HEAD`), without repository discovery: a
//! worktree root must never be mistaken for (or resolve into) a repository
//! that merely encloses it.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{Repository, RepositoryOpenFlags};

/// `path` with `.` and `..` resolved lexically (no file system access, no
/// symlinks followed): the root's normalizer, so that git's paths and the
/// root's checks agree on every spelling.
pub use crate::root::normalize_lexically as normalize;

/// `path` made absolute against the current directory, then normalized.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        match std::env::current_dir() {
            Ok(cwd) => normalize(&cwd.join(path)),
            Err(_) => normalize(path),
        }
    }
}

/// The ways a location may be spelled: lexically normalized, and with the
/// longest existing ancestor canonicalized (so `/tmp/x` and a symlinked
/// spelling of it compare equal even when `x` itself no longer exists).
pub fn spellings(path: &Path) -> Vec<PathBuf> {
    let lexical = absolute(path);
    let mut out = vec![lexical.clone()];
    let mut base = lexical.as_path();
    let mut rest: Vec<&OsStr> = Vec::new();
    loop {
        if let Ok(canon) = fs::canonicalize(base) {
            let mut p = canon;
            for r in rest.iter().rev() {
                p.push(r);
            }
            if !out.contains(&p) {
                out.push(p);
            }
            break;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                base = parent;
            }
            _ => break,
        }
    }
    out
}

/// Whether `a` and `b` name the same location (see [`spellings`]).
pub fn same_location(a: &Path, b: &Path) -> bool {
    let sa = spellings(a);
    spellings(b).iter().any(|p| sa.contains(p))
}

/// Whether `path` lies inside (or is) `dir`, by any spelling.
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    let sd = spellings(dir);
    spellings(path)
        .iter()
        .any(|p| sd.iter().any(|d| p.starts_with(d)))
}

/// Reads a file of git's `key: value` or single-line kind, trimmed of the
/// trailing newline.
pub fn read_line_file(path: &Path) -> io::Result<String> {
    let s = fs::read_to_string(path)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// Resolves `value` (a path git wrote in file `in_dir/<file>`) relative to
/// `in_dir` when it is relative.
fn resolve(in_dir: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        normalize(p)
    } else {
        normalize(&in_dir.join(p))
    }
}

/// What a `.git` entry of a directory is.
#[derive(Debug)]
pub enum DotGit {
    /// No `.git` entry.
    Missing,
    /// A `.git` directory: a standalone (main) repository.
    Directory,
    /// A `.git` file naming a git directory elsewhere.
    File { gitdir: PathBuf },
    /// A `.git` entry that is something else or cannot be read.
    Broken { detail: String },
}

/// Reads `dir/.git` without following anything beyond the gitfile itself.
pub fn dot_git(dir: &Path) -> DotGit {
    let dot = dir.join(".git");
    let meta = match fs::symlink_metadata(&dot) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return DotGit::Missing,
        Err(e) => {
            return DotGit::Broken {
                detail: format!("cannot stat {}: {e}", dot.display()),
            }
        }
    };
    if meta.is_dir() {
        return DotGit::Directory;
    }
    if !meta.is_file() {
        return DotGit::Broken {
            detail: format!("{} is neither a file nor a directory", dot.display()),
        };
    }
    match read_line_file(&dot) {
        Ok(line) => match line.strip_prefix("gitdir:") {
            Some(v) if !v.trim().is_empty() => DotGit::File {
                gitdir: resolve(dir, v.trim()),
            },
            _ => DotGit::Broken {
                detail: format!("{} is not a gitfile (no `gitdir:` line)", dot.display()),
            },
        },
        Err(e) => DotGit::Broken {
            detail: format!("cannot read {}: {e}", dot.display()),
        },
    }
}

/// Whether `dir` holds a `.git` entry of any kind (a repository or worktree
/// of its own).
pub fn has_dot_git(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(".git")).is_ok()
}

/// The common git directory that the per-worktree git directory `admin`
/// (`<repo>/.git/worktrees/<name>`) belongs to: its `commondir` file, or
/// failing that the layout `<common>/worktrees/<name>`. `None` when `admin`
/// is not a linked worktree's git directory (a submodule's gitfile points
/// at `.git/modules/<name>`, which has no `commondir`).
pub fn common_dir_of_admin(admin: &Path) -> Option<PathBuf> {
    match read_line_file(&admin.join("commondir")) {
        Ok(c) if !c.trim().is_empty() => Some(resolve(admin, c.trim())),
        _ => {
            let parent = admin.parent()?;
            if parent.file_name() == Some(OsStr::new("worktrees")) && admin.file_name().is_some() {
                parent.parent().map(Path::to_path_buf)
            } else {
                None
            }
        }
    }
}

/// The working directory of the main repository whose common git directory
/// is `common` (`<repo>/.git` → `<repo>`); a bare repository is its own.
pub fn workdir_of_common(common: &Path) -> PathBuf {
    if common.file_name() == Some(OsStr::new(".git")) {
        if let Some(p) = common.parent() {
            return p.to_path_buf();
        }
    }
    common.to_path_buf()
}

/// The common git directory of the repository at `repo`: `repo/.git` when
/// it is a directory, the common dir of the worktree when `repo/.git` is a
/// linked worktree's gitfile, or `repo` itself when it is a git directory.
pub fn common_dir_of_repo(repo: &Path) -> Option<PathBuf> {
    match dot_git(repo) {
        DotGit::Directory => Some(absolute(&repo.join(".git"))),
        DotGit::File { gitdir } => common_dir_of_admin(&gitdir),
        DotGit::Missing => {
            if repo.join("HEAD").is_file() && repo.join("objects").is_dir() {
                Some(absolute(repo))
            } else {
                None
            }
        }
        DotGit::Broken { .. } => None,
    }
}

/// What a `HEAD` file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadFile {
    /// `ref: refs/heads/x`
    Symbolic(String),
    /// A raw object id (detached HEAD).
    Detached(git2::Oid),
}

pub fn read_head_file(path: &Path) -> io::Result<HeadFile> {
    let line = read_line_file(path)?;
    let line = line.trim();
    if let Some(r) = line.strip_prefix("ref:") {
        return Ok(HeadFile::Symbolic(r.trim().to_string()));
    }
    git2::Oid::from_str(line)
        .map(HeadFile::Detached)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))
}

/// One `<common>/worktrees/<name>` admin entry.
#[derive(Clone, Debug)]
pub struct AdminEntry {
    pub name: String,
    pub dir: PathBuf,
    /// Where the entry's `gitdir` file says the worktree's `.git` file is.
    pub gitdir_target: Option<PathBuf>,
}

impl AdminEntry {
    /// The worktree directory the entry belongs to (the parent of its
    /// `.git` file).
    pub fn worktree_path(&self) -> Option<PathBuf> {
        let t = self.gitdir_target.as_ref()?;
        if t.file_name() == Some(OsStr::new(".git")) {
            t.parent().map(Path::to_path_buf)
        } else {
            Some(t.clone())
        }
    }

    /// Whether the worktree directory the entry names still exists.
    pub fn worktree_exists(&self) -> bool {
        self.worktree_path()
            .is_some_and(|p| fs::symlink_metadata(p).is_ok())
    }
}

/// The admin entries of the repository whose common git dir is `common`.
pub fn admin_entries(common: &Path) -> io::Result<Vec<AdminEntry>> {
    let dir = common.join("worktrees");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        if !ent.file_type()?.is_dir() {
            continue;
        }
        let path = ent.path();
        let gitdir_target = read_line_file(&path.join("gitdir"))
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| resolve(&path, s.trim()));
        out.push(AdminEntry {
            name: ent.file_name().to_string_lossy().into_owned(),
            dir: path,
            gitdir_target,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens exactly the repository at `path` (a worktree directory or a git
/// directory): no search upward, no `$GIT_DIR`.
///
/// Without libgit2's owner check: a root controller reads repositories that
/// belong to the orchestrator's user, which the configuration makes it
/// responsible for. The check exists to stop git from running a
/// repository's configured programs (hooks, fsmonitor, filters, pagers) as
/// the wrong user; libgit2 runs none of those, so reading through it runs
/// no code of the repository's. (The git CLI, which would, is run as the
/// owner instead: see [`super::cli`].)
///
/// Only the repository's own configuration is read: no global, XDG or
/// system file. The controller's own `~/.gitconfig` says nothing about
/// another user's repository, and a force archive opens the repository
/// with the owner's credentials ([`crate::creds`]), to whom the
/// controller's home is closed.
pub fn open_exact(path: &Path) -> Result<Repository, git2::Error> {
    static PROCESS_OPTIONS: std::sync::Once = std::sync::Once::new();
    PROCESS_OPTIONS.call_once(|| {
        use git2::ConfigLevel::{Global, ProgramData, System, XDG};
        // SAFETY: process-wide libgit2 options, set once before the first
        // repository is opened through this function (the only way this
        // crate opens one).
        unsafe {
            let _ = git2::opts::set_verify_owner_validation(false);
            for level in [ProgramData, System, XDG, Global] {
                let _ = git2::opts::set_search_path(level, "");
            }
        }
    });
    Repository::open_ext(
        path,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&OsStr>(),
    )
}

/// A path relative to a worktree as git stores it (bytes, `/`-separated)
/// turned into a file system path below `base`.
pub fn join_rel(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(rel))
}

/// A git path for humans.
pub fn rel_str(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

/// Turns `s` into something valid as one component of a ref name.
pub fn ref_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '=' | ',') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("..") {
        out = out.replace("..", "_.");
    }
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    if out.ends_with('.') || out.ends_with(".lock") {
        out.push('_');
    }
    out
}

/// The directory that holds `rel` (a `/`-separated path below `base`, as
/// git stores it), opened as a handle without following any symlink on
/// the way (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; where
/// the kernel lacks it, one `openat(O_NOFOLLOW)` per component), with
/// the last component's name: what a verdict reads of `rel` is then read
/// relative to that handle. A symlink on the way is an error (`ELOOP`, or
/// `ENOTDIR` for the last directory), never followed out of `base`.
pub fn parent_beneath(base: &Path, rel: &[u8]) -> io::Result<(OwnedFd, OsString)> {
    use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let (dir, name) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let base_fd = openat(AT_FDCWD, base, flags, Mode::empty())?;
    let name = OsStr::from_bytes(name).to_os_string();
    if dir.is_empty() {
        return Ok((base_fd, name));
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(&base_fd, OsStr::from_bytes(dir), how) {
        Ok(fd) => Ok((fd, name)),
        Err(nix::errno::Errno::ENOSYS) => {
            let mut fd = base_fd;
            for part in dir.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
                if part == b".." {
                    return Err(io::Error::from(nix::errno::Errno::EXDEV));
                }
                fd = openat(&fd, OsStr::from_bytes(part), flags, Mode::empty())?;
            }
            Ok((fd, name))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/.git/worktrees/x/../..")),
            PathBuf::from("/a/b/.git")
        );
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }

    #[test]
    fn normalize_keeps_a_climb_above_the_start_visible() {
        assert_eq!(normalize(Path::new("../..")), PathBuf::from("../.."));
        assert_eq!(normalize(Path::new("a/../..")), PathBuf::from(".."));
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
    }

    #[test]
    fn ref_component_is_valid() {
        for s in ["abc", "a b", "..x", "x.lock", ".hidden", "a~b^c:d", "", "ü"] {
            let c = ref_component(s);
            let name = format!("refs/boo/archive/{c}/1");
            assert!(git2::Reference::is_valid_name(&name), "{s:?} -> {name}");
        }
        assert_eq!(ref_component("wt-123_a.b"), "wt-123_a.b");
    }

    #[test]
    fn head_file_parses_both_forms() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("HEAD");
        fs::write(&p, "ref: refs/heads/x\n").unwrap();
        assert_eq!(
            read_head_file(&p).unwrap(),
            HeadFile::Symbolic("refs/heads/x".into())
        );
        let oid = "0123456789abcdef0123456789abcdef01234567";
        fs::write(&p, format!("{oid}\n")).unwrap();
        assert_eq!(
            read_head_file(&p).unwrap(),
            HeadFile::Detached(git2::Oid::from_str(oid).unwrap())
        );
    }

    #[test]
    fn a_path_is_read_beneath_its_base_never_through_a_symlink() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("wt");
        fs::create_dir_all(base.join("a/b")).unwrap();
        fs::write(base.join("a/b/f"), "x").unwrap();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("f"), "not the worktree's").unwrap();
        let (parent, name) = parent_beneath(&base, b"a/b/f").unwrap();
        assert_eq!(name, "f");
        let st = nix::sys::stat::fstatat(
            &parent,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(st.st_size, 1);
        let (_, top) = parent_beneath(&base, b"f").unwrap();
        assert_eq!(top, "f");
        // A directory on the way replaced by a symlink: refused, not followed.
        fs::rename(base.join("a/b"), d.path().join("b-moved")).unwrap();
        symlink(&elsewhere, base.join("a/b")).unwrap();
        let e = parent_beneath(&base, b"a/b/f").unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
            ),
            "{e}"
        );
        assert!(parent_beneath(&base, b"../wt/a/b/f").is_err());
    }
}
