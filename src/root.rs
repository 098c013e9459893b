//! The worktree root: the one directory the controller may delete in.
//! Paths from the database are untrusted; this module decides whether one
//! names an entry of the root.
//!
//! Two rules of DESIGN.md live here and in [`crate::act::trash::delete`]: "never act
//! outside the root" and "symlinks are never followed when deleting".
//!
//! - [`WorktreeRoot::prepare`] refuses a root whose entries must never be
//!   deleted (`/`, a home directory or an ancestor of one, a system
//!   directory such as `/tmp` or `/etc` or anything inside `/usr`, `/etc`,
//!   `/var` and the other trees of `SYSTEM_TREES`), a root that is itself a
//!   symlink, and anything that is not a directory;
//!   [`WorktreeRoot::prepare_apart_from`] also refuses a root that contains
//!   one of the controller's own files (its database, its configuration),
//!   and [`WorktreeRoot::refuse_containing`] one that contains a main
//!   repository.
//! - **Checked, not trusted** (DESIGN rule 11). The root is judged on an
//!   open handle (`O_NOFOLLOW | O_DIRECTORY`, then `fstat`): writable by
//!   no one but its owner (no group or other write bit: a sticky `1777`
//!   directory made by anyone in `/tmp` is refused), and, for the
//!   controller's own start-up ([`WorktreeRoot::prepare_apart_from`],
//!   [`WorktreeRoot::open_apart_from`]), owned by root, by the controller's
//!   effective user or by `worktrees.owner`. Whoever can write in the root
//!   can plant or swap the directories the controller retires. Every
//!   destructive step opens the root again with [`WorktreeRoot::open_handle`],
//!   which checks the same on the new handle (tests
//!   `a_root_writable_by_others_is_refused`,
//!   `a_root_owned_by_another_user_is_refused_unless_it_is_the_configured_owner`,
//!   and `tests/trash_safety.rs` for the binary's exit 2).
//! - [`WorktreeRoot::check`] accepts an untrusted path only when, after
//!   *lexical* normalization, it names a direct child of the root
//!   (`<root>/<worktree id>`) that is not a symlink.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{Gid, Group, Uid, User};

use crate::model::PathCheck;

/// Why the configured root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("worktree root {path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("worktree root {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The controller's trash under the root ([`crate::act::trash`]): never a
/// worktree, never an orphan.
pub const TRASH_DIR: &str = ".boo-trash";

/// A validated worktree root.
#[derive(Clone, Debug)]
pub struct WorktreeRoot {
    /// The canonical path (no symlink, no `.` or `..` anywhere).
    path: PathBuf,
    /// The path as configured, made absolute and lexically normalized. It
    /// names the same directory as `path` (checked by `prepare`), and is
    /// accepted as an alias of it by `check`.
    configured: PathBuf,
    /// `st_dev` of the root directory.
    dev: u64,
    /// `st_ino` of the root directory: with `dev`, detects a root that was
    /// replaced after `prepare`.
    ino: u64,
    /// Who may own the root: `None` for anyone ([`WorktreeRoot::prepare`],
    /// for embedding and tests), else these uids (root, the controller's
    /// effective user, `worktrees.owner`).
    owners: Option<Vec<u32>>,
}

/// Directories that are never a worktree root: every entry of a root is a
/// deletion candidate, so a shared directory such as `/tmp` would offer
/// other users' files. A dedicated directory below them (`/tmp/booworktrees`)
/// is fine.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/dev/shm",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/run/user",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

/// Trees that belong to the system as a whole, refused as a root and
/// anywhere inside (`/usr/lib`, `/etc/ssh`, `/var/lib/postgresql/15`): what
/// lies there is nobody's worktree, and a root there offers it for
/// deletion. Every top-level `/lib*` directory counts too (see
/// [`in_system_tree`]).
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/opt", "/proc", "/run", "/sbin", "/srv", "/sys", "/usr",
    "/var",
];

/// Directories inside [`SYSTEM_TREES`] made for anyone's files, below
/// which a dedicated root is fine (`/var/tmp/booworktrees`). The directory
/// itself stays refused (it is in `SYSTEM_DIRS`).
const SYSTEM_TREE_EXCEPTIONS: &[&str] = &["/var/tmp"];

/// Something of the controller's own that a root must not contain: every
/// entry of a root is a deletion candidate.
#[derive(Clone, Copy, Debug)]
pub struct Kept<'a> {
    /// What it is, for the message: "the database file".
    pub what: &'a str,
    /// Where it is, as configured (relative to the working directory or
    /// absolute; it need not exist).
    pub path: &'a Path,
}

impl WorktreeRoot {
    /// [`WorktreeRoot::prepare`], refusing also a root that is, or contains,
    /// any of `kept` (compared where the kernel resolves them: symlinks of
    /// their existing ancestors followed). Checked before the root is
    /// created.
    ///
    /// The root must also be owned by root, by the controller's effective
    /// user or by `owner` (`worktrees.owner`, the orchestrator's user), and
    /// writable by no one else: the controller's start-up.
    pub fn prepare_apart_from(
        path: &Path,
        kept: &[Kept],
        owner: Option<u32>,
    ) -> Result<WorktreeRoot, RootError> {
        WorktreeRoot::validate(path, true, kept, Some(allowed_owners(owner)))
    }

    /// [`WorktreeRoot::open`] with the checks of
    /// [`WorktreeRoot::prepare_apart_from`].
    pub fn open_apart_from(
        path: &Path,
        kept: &[Kept],
        owner: Option<u32>,
    ) -> Result<WorktreeRoot, RootError> {
        WorktreeRoot::validate(path, false, kept, Some(allowed_owners(owner)))
    }

    /// Refuses this root if it is, or contains, any of `kept` (main
    /// repositories named by rows, known only once the database is open).
    pub fn refuse_containing(&self, kept: &[Kept]) -> Result<(), RootError> {
        match contained(&[&self.path, &self.configured], kept) {
            Some(why) => Err(RootError::Refused {
                path: self.configured.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Creates the root if missing and refuses `/`, a home directory, a
    /// symlink, or anything that is not a directory.
    ///
    /// In detail, the root is refused when it
    /// - is empty, or is `/`;
    /// - is a system directory (`/tmp`, `/etc`, `/var`, … see `SYSTEM_DIRS`),
    ///   or lies inside one of `SYSTEM_TREES` (`/usr`, `/etc`, `/var` but
    ///   `/var/tmp`, `/boot`, `/opt`, `/srv`, `/proc`, `/sys`, `/dev`,
    ///   `/run`, `/bin`, `/sbin`, `/lib*`);
    /// - is a home directory — the current `$HOME`, `/root`, `/home`, or any
    ///   home directory listed in `/etc/passwd` — or an ancestor of one;
    /// - is itself a symlink (checked with `symlink_metadata` before anything
    ///   is canonicalized). Symlinks among its *ancestors* are accepted
    ///   (`/tmp` may be a symlink on some systems); the canonical path is kept;
    /// - exists and is not a directory;
    /// - contains a `..` whose lexical reading (drop the previous component)
    ///   differs from the kernel's (`x/..` where `x` is a symlink), because
    ///   then the configured form and the canonical form would name two
    ///   different directories.
    ///
    /// A relative path is accepted and resolved against the current
    /// directory. The checks run on the configured form and on where the
    /// kernel would put it (its existing ancestors resolved: a symlink
    /// `/tmp/x -> /etc` makes `/tmp/x/wt` a root inside `/etc`) before
    /// anything is created, and again on the canonical form afterwards. A
    /// missing root is created with its parents (`create_dir_all`, default
    /// mode `0755`);
    /// - is writable by anyone but its owner (a group or other write bit),
    ///   judged on an open handle. Any owner is accepted here; the
    ///   controller's start-up ([`WorktreeRoot::prepare_apart_from`]) also
    ///   restricts who owns it.
    pub fn prepare(path: &Path) -> Result<WorktreeRoot, RootError> {
        WorktreeRoot::validate(path, true, &[], None)
    }

    /// The same checks as [`WorktreeRoot::prepare`], but a missing root is
    /// an error instead of being created: for commands that write nothing.
    pub fn open(path: &Path) -> Result<WorktreeRoot, RootError> {
        WorktreeRoot::validate(path, false, &[], None)
    }

    fn validate(
        path: &Path,
        create: bool,
        kept: &[Kept],
        owners: Option<Vec<u32>>,
    ) -> Result<WorktreeRoot, RootError> {
        let refuse = |why: String| RootError::Refused {
            path: path.to_path_buf(),
            why,
        };
        let io_err = |source: io::Error| RootError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.as_os_str().is_empty() {
            return Err(refuse("the path is empty".into()));
        }
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err)?.join(path)
        };
        let configured = normalize_lexically(&absolute);
        let homes = home_dirs();
        if let Some(why) =
            protected_because(&configured, &homes).or_else(|| in_system_tree(&configured))
        {
            return Err(refuse(why));
        }
        let resolved = resolve_existing(&configured);
        if let Some(why) =
            protected_because(&resolved, &homes).or_else(|| in_system_tree(&resolved))
        {
            return Err(refuse(format!(
                "resolves to {}, which {why}",
                resolved.display()
            )));
        }
        if let Some(why) = contained(&[&configured, &resolved], kept) {
            return Err(refuse(why));
        }
        if !lexical_matches_physical(&absolute).map_err(io_err)? {
            return Err(refuse(format!(
                "a `..` in it follows a symlink, so the kernel resolves it elsewhere \
                 than {}; configure the path without `..`",
                configured.display()
            )));
        }
        let meta = match fs::symlink_metadata(&configured) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => {
                return Err(refuse(
                    "does not exist (this command creates nothing; `once` or `run` creates it)"
                        .into(),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&configured)
                    .map_err(io_err)?;
                fs::symlink_metadata(&configured).map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        };
        if let Some(why) = not_a_plain_dir(&configured, &meta) {
            return Err(refuse(why));
        }
        let canonical = fs::canonicalize(&configured).map_err(io_err)?;
        if let Some(why) =
            protected_because(&canonical, &homes).or_else(|| in_system_tree(&canonical))
        {
            return Err(refuse(format!(
                "resolves to {}, which {why}",
                canonical.display()
            )));
        }
        if let Some(why) = contained(&[&canonical], kept) {
            return Err(refuse(why));
        }
        // `canonical` has no symlink left in it: this is the directory itself.
        let meta = fs::symlink_metadata(&canonical).map_err(io_err)?;
        if let Some(why) = not_a_plain_dir(&canonical, &meta) {
            return Err(refuse(why));
        }
        let root = WorktreeRoot {
            path: canonical,
            configured,
            dev: meta.dev(),
            ino: meta.ino(),
            owners,
        };
        root.open_handle()?;
        Ok(root)
    }

    /// The root opened afresh without following a symlink, and checked on
    /// that handle: still the directory prepared (same device and inode),
    /// writable by no one but its owner, and owned by one of the allowed
    /// users. What every destructive step works from.
    pub fn open_handle(&self) -> Result<OwnedFd, RootError> {
        let refuse = |why: String| RootError::Refused {
            path: self.configured.clone(),
            why,
        };
        let io_err = |e: nix::errno::Errno| RootError::Io {
            path: self.configured.clone(),
            source: io::Error::from(e),
        };
        let fd = openat(
            AT_FDCWD,
            &self.path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        let st = fstat(&fd).map_err(io_err)?;
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) {
            return Err(refuse(format!(
                "{} was replaced since it was prepared (another directory is there now); \
                 restart the controller once the root is what it should be",
                self.path.display()
            )));
        }
        if let Some(why) = unsafe_owner_or_mode(&self.path, st.st_uid, st.st_mode, &self.owners) {
            return Err(refuse(why));
        }
        Ok(fd)
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root as configured, made absolute and lexically normalized; the
    /// same directory as [`WorktreeRoot::path`], possibly spelled through a
    /// symlinked ancestor.
    pub fn configured_path(&self) -> &Path {
        &self.configured
    }

    /// `st_dev` of the root directory.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `st_ino` of the root directory when it was prepared.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Whether `untrusted` spells a direct entry of the root plainly: an
    /// absolute path whose lexically normalized parent is the root (as
    /// prepared or as configured). Any other spelling (relative, through a
    /// link outside, with `..` leading elsewhere) is one a text match
    /// cannot see. Reads nothing.
    pub fn spelled_plainly(&self, untrusted: &Path) -> bool {
        if !untrusted.is_absolute() {
            return false;
        }
        let p = normalize_lexically(untrusted);
        p.parent()
            .is_some_and(|parent| parent == self.path() || parent == self.configured_path())
    }

    /// The directory `untrusted` (a row's path) leads to, as `(device,
    /// inode)`, following symlinks, a relative path taken from the root:
    /// `None` when it leads to no directory. Only ever used to keep a
    /// directory (a row claims what its path resolves to, under any
    /// spelling), never to act on one, so following a link here leads
    /// nothing astray.
    pub fn resolve_claim(&self, untrusted: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        if untrusted.as_os_str().is_empty() {
            return None;
        }
        let meta = fs::metadata(self.path().join(untrusted)).ok()?;
        meta.is_dir().then(|| (meta.dev(), meta.ino()))
    }

    /// Whether an untrusted path names a direct entry of the root.
    ///
    /// The path is normalized *lexically* (`.` and `..` are resolved without
    /// touching the file system; `..` at `/` stays at `/`). It is `Inside`
    /// only if the result is `<root>/<name>`, where `<root>` is the canonical
    /// root or the configured one (both name the same directory), and the
    /// entry, if it exists, is not a symlink (checked with
    /// `symlink_metadata`, never followed). The returned path is always
    /// spelled with the canonical root. Refused: an empty or relative path,
    /// the root itself, anything outside the root or nested below an entry,
    /// a symlink entry ("symlink to <target>"), an entry that cannot be
    /// inspected, the controller's trash ([`TRASH_DIR`]).
    ///
    /// A regular file entry is `Inside` (it is not a symlink);
    /// [`crate::act::trash::delete::delete_dir`] refuses to delete it as a
    /// directory.
    pub fn check(&self, untrusted: &Path) -> PathCheck {
        let refused = |why: String| PathCheck::Refused { why };
        if untrusted.as_os_str().is_empty() {
            return refused("empty path".into());
        }
        if !untrusted.is_absolute() {
            return refused(format!(
                "relative path {}: only absolute paths are accepted",
                untrusted.display()
            ));
        }
        let normalized = normalize_lexically(untrusted);
        let name = match (normalized.parent(), normalized.file_name()) {
            (Some(parent), Some(name)) if self.is_root(parent) => name,
            _ => return refused(self.why_not_a_child(untrusted, &normalized)),
        };
        if name == TRASH_DIR {
            return refused(format!(
                "{} is the controller's trash, never a worktree",
                normalized.display()
            ));
        }
        let path = self.path.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => refused(format!(
                "symlink to {}",
                fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|e| format!("<unreadable: {e}>"))
            )),
            Ok(_) => PathCheck::Inside { path, exists: true },
            Err(e) if e.kind() == io::ErrorKind::NotFound => PathCheck::Inside {
                path,
                exists: false,
            },
            Err(e) => refused(format!("cannot inspect {}: {e}", path.display())),
        }
    }

    fn is_root(&self, p: &Path) -> bool {
        p == self.path || p == self.configured
    }

    fn why_not_a_child(&self, untrusted: &Path, normalized: &Path) -> String {
        let shown = if untrusted == normalized {
            untrusted.display().to_string()
        } else {
            format!(
                "{} (normalized: {})",
                untrusted.display(),
                normalized.display()
            )
        };
        if self.is_root(normalized) {
            format!("{shown} is the worktree root itself")
        } else if normalized.starts_with(&self.path) || normalized.starts_with(&self.configured) {
            format!(
                "{shown} is nested below an entry of the worktree root {}, \
                 not a direct child (layout: <root>/<worktree id>)",
                self.path.display()
            )
        } else {
            format!(
                "{shown} is outside the worktree root {}",
                self.path.display()
            )
        }
    }
}

/// Resolves `.` and `..` without touching the file system (the crate's one
/// lexical normalizer; [`crate::git::paths`] uses it too). `..` at the root
/// stays at the root. Every `..` that climbs above a relative path's start
/// is kept, so such a path never comes out empty or as a place below its
/// start; a relative path that comes back exactly to its start is empty.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

/// Whether the kernel resolves the absolute path `path` to the same place as
/// its lexical normalization. Only a `..` can make them differ (after a
/// symlink, `..` is the parent of the symlink's target): compare the prefix
/// up to the last `..` both ways; the rest is plain names, resolved alike.
fn lexical_matches_physical(path: &Path) -> io::Result<bool> {
    let components: Vec<Component> = path.components().collect();
    let Some(last_dotdot) = components.iter().rposition(|c| *c == Component::ParentDir) else {
        return Ok(true);
    };
    let prefix: PathBuf = components[..=last_dotdot].iter().collect();
    let physical = fs::metadata(&prefix)?;
    let lexical = fs::metadata(normalize_lexically(&prefix))?;
    Ok((physical.dev(), physical.ino()) == (lexical.dev(), lexical.ino()))
}

fn not_a_plain_dir(path: &Path, meta: &Metadata) -> Option<String> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("<unreadable: {e}>"));
        Some(format!(
            "is a symlink (to {target}); configure the real directory"
        ))
    } else if !meta.is_dir() {
        Some("exists and is not a directory".into())
    } else {
        None
    }
}

/// A home directory and whose it is.
struct Home {
    path: PathBuf,
    owner: String,
}

/// `$HOME`, `/root`, `/home` and every home directory of `/etc/passwd`, each
/// lexically normalized and, when it exists, canonicalized too.
fn home_dirs() -> Vec<Home> {
    let mut raw: Vec<(PathBuf, String)> = vec![
        (PathBuf::from("/root"), "root".into()),
        (PathBuf::from("/home"), "all users".into()),
    ];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        raw.push((PathBuf::from(home), "the current user ($HOME)".into()));
    }
    match fs::read("/etc/passwd") {
        Ok(passwd) => {
            for line in passwd.split(|&b| b == b'\n') {
                let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
                if let (Some(user), Some(home)) = (fields.first(), fields.get(5)) {
                    if home.starts_with(b"/") {
                        use std::os::unix::ffi::OsStrExt;
                        raw.push((
                            PathBuf::from(OsStr::from_bytes(home)),
                            format!("user {}", String::from_utf8_lossy(user)),
                        ));
                    }
                }
            }
        }
        Err(e) => tracing::warn!("cannot read /etc/passwd to protect home directories: {e}"),
    }
    let mut homes = Vec::new();
    for (path, owner) in raw {
        if let Ok(canonical) = fs::canonicalize(&path) {
            homes.push(Home {
                path: canonical,
                owner: owner.clone(),
            });
        }
        homes.push(Home {
            path: normalize_lexically(&path),
            owner,
        });
    }
    homes
}

/// `path` (absolute) as the kernel would resolve it if it were created
/// now: its longest existing ancestor canonicalized, the missing rest
/// appended as written. A path whose ancestors cannot be resolved at all
/// comes back lexically normalized.
pub fn resolve_existing(path: &Path) -> PathBuf {
    let path = normalize_lexically(path);
    let mut missing = Vec::new();
    let mut existing = path.as_path();
    loop {
        if let Ok(mut out) = fs::canonicalize(existing) {
            out.extend(missing.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return path,
        }
    }
}

/// Why a root spelled as any of `roots` must not be used because it is, or
/// contains, one of `kept`; each compared where the kernel resolves it.
fn contained(roots: &[&Path], kept: &[Kept]) -> Option<String> {
    let cwd = std::env::current_dir().ok();
    for k in kept {
        let absolute = match (&cwd, k.path.is_absolute()) {
            (_, true) => k.path.to_path_buf(),
            (Some(cwd), false) => cwd.join(k.path),
            (None, false) => continue,
        };
        let spellings = [normalize_lexically(&absolute), resolve_existing(&absolute)];
        for root in roots {
            if spellings.iter().any(|p| p.starts_with(root)) {
                return Some(format!(
                    "contains {} {}: every entry of the root may be deleted; \
                     keep the root a directory of its own",
                    k.what,
                    k.path.display()
                ));
            }
        }
    }
    None
}

/// Why `path` (absolute, normalized) lies inside a system tree, if it does.
fn in_system_tree(path: &Path) -> Option<String> {
    if SYSTEM_TREE_EXCEPTIONS
        .iter()
        .any(|e| path.starts_with(e) && path != Path::new(e))
    {
        return None;
    }
    let top = path.components().nth(1).map(|c| c.as_os_str());
    let lib = top.and_then(OsStr::to_str).filter(|t| t.starts_with("lib"));
    let tree = SYSTEM_TREES
        .iter()
        .map(PathBuf::from)
        .find(|t| path.starts_with(t))
        .or_else(|| lib.map(|l| Path::new("/").join(l)))?;
    Some(format!(
        "lies inside the system directory {}, whose files belong to the system; \
         use a dedicated directory such as /tmp/booworktrees or /var/tmp/booworktrees",
        tree.display()
    ))
}

/// Why `path` (absolute, normalized) must not be a worktree root, if it
/// must not.
fn protected_because(path: &Path, homes: &[Home]) -> Option<String> {
    if path.parent().is_none() {
        return Some("is the file system root `/`".into());
    }
    for home in homes {
        if home.path == path {
            return Some(format!("is the home directory of {}", home.owner));
        }
        if home.path.starts_with(path) {
            return Some(format!(
                "contains the home directory {} of {}",
                home.path.display(),
                home.owner
            ));
        }
    }
    if SYSTEM_DIRS.iter().any(|d| path == Path::new(d)) {
        return Some(format!(
            "is the system directory {}; use a dedicated directory below it",
            path.display()
        ));
    }
    None
}

/// Whether `path` (absolute) is the trash of the root configured as
/// `root` ([`TRASH_DIR`]) or lies inside it, spelled as written or where
/// the kernel resolves it (a symlinked ancestor followed). What is there is
/// the reclaimer's to delete: nothing is ever put there but by a retire.
pub fn in_trash(root: &Path, path: &Path) -> bool {
    let trash = root.join(TRASH_DIR);
    let trashes = [normalize_lexically(&trash), resolve_existing(&trash)];
    let spellings = [normalize_lexically(path), resolve_existing(path)];
    spellings
        .iter()
        .any(|p| trashes.iter().any(|t| p.starts_with(t)))
}

/// Root, the controller's effective user and `owner`.
fn allowed_owners(owner: Option<u32>) -> Vec<u32> {
    let mut v = vec![0, Uid::effective().as_raw()];
    v.extend(owner);
    v.sort_unstable();
    v.dedup();
    v
}

/// A user as people name it: `boo (uid 998)`, or the bare uid.
pub fn user_label(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Why a root with this owner and mode must not be used, with the command
/// that makes a safe one; `None` when it is safe. `owners`: who may own
/// it (`None`: anyone).
fn unsafe_owner_or_mode(
    path: &Path,
    uid: u32,
    mode: u32,
    owners: &Option<Vec<u32>>,
) -> Option<String> {
    let writable_by_others = mode & 0o022 != 0;
    let owner_refused = owners.as_ref().is_some_and(|o| !o.contains(&uid));
    if !writable_by_others && !owner_refused {
        return None;
    }
    let mut why = format!(
        "is owned by {} with mode {:04o}: ",
        user_label(uid),
        mode & 0o7777
    );
    if writable_by_others {
        why.push_str(
            "others may write in it (a group or other write bit), so anyone could plant or \
             swap the directories the controller removes",
        );
    } else {
        let me = Uid::effective();
        why.push_str(&if me.is_root() {
            "it must be owned by root or by the user worktrees.owner names".to_string()
        } else {
            format!(
                "it must be owned by root, by the controller's user {} or by the user \
                 worktrees.owner names",
                user_label(me.as_raw())
            )
        });
    }
    // The user a fresh root should belong to: the configured owner, else
    // the controller's own.
    let fix_uid = owners
        .as_ref()
        .and_then(|o| {
            o.iter()
                .copied()
                .find(|u| *u != 0 && *u != Uid::effective().as_raw())
        })
        .unwrap_or_else(|| Uid::effective().as_raw());
    let user = User::from_uid(Uid::from_raw(fix_uid)).ok().flatten();
    let (u, g) = match &user {
        Some(u) => (
            u.name.clone(),
            Group::from_gid(u.gid)
                .ok()
                .flatten()
                .map_or_else(|| u.gid.to_string(), |g| g.name),
        ),
        None => (fix_uid.to_string(), Gid::effective().to_string()),
    };
    why.push_str(&format!(
        ". Move it away (it may hold anything its owner put there) and create it with \
         `install -d -m 0755 -o {u} -g {g} {}`, or choose another worktrees.root",
        path.display()
    ));
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn refused_why(r: Result<WorktreeRoot, RootError>) -> String {
        match r {
            Err(RootError::Refused { why, .. }) => why,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    fn check_why(c: PathCheck) -> String {
        match c {
            PathCheck::Refused { why } => why,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    /// A prepared root `<tmp>/root` with a worktree `wt1` holding a file.
    fn root_with_wt1() -> (tempfile::TempDir, WorktreeRoot) {
        let t = temp();
        let root = WorktreeRoot::prepare(&t.path().join("root")).unwrap();
        fs::create_dir(root.path().join("wt1")).unwrap();
        fs::write(root.path().join("wt1/f"), "x").unwrap();
        (t, root)
    }

    #[test]
    fn normalize_lexically_resolves_dot_and_dotdot_without_the_file_system() {
        let n = |s: &str| normalize_lexically(Path::new(s));
        assert_eq!(n("/a/./b/../c"), PathBuf::from("/a/c"));
        assert_eq!(n("/../../etc"), PathBuf::from("/etc"));
        assert_eq!(n("/a/b/"), PathBuf::from("/a/b"));
        assert_eq!(n("//a//b"), PathBuf::from("/a/b"));
        assert_eq!(n("../../etc"), PathBuf::from("../../etc"));
        assert_eq!(n("a/../.."), PathBuf::from(".."));
        assert_eq!(n("/"), PathBuf::from("/"));
    }

    #[test]
    fn normalize_lexically_never_hides_a_climb_above_the_start() {
        let n = |s: &str| normalize_lexically(Path::new(s));
        assert_eq!(n(".."), PathBuf::from(".."));
        assert_eq!(n("../.."), PathBuf::from("../.."));
        assert_eq!(n("a/../.."), PathBuf::from(".."));
        assert_eq!(n("a/b/../../.."), PathBuf::from(".."));
        assert_eq!(n("../a/.."), PathBuf::from(".."));
        assert_eq!(n("../../a/../b"), PathBuf::from("../../b"));
        assert_eq!(n("./../."), PathBuf::from(".."));
    }

    #[test]
    fn normalize_lexically_stops_at_the_file_system_root() {
        let n = |s: &str| normalize_lexically(Path::new(s));
        assert_eq!(n("/.."), PathBuf::from("/"));
        assert_eq!(n("/../.."), PathBuf::from("/"));
        assert_eq!(n("/a/../../b"), PathBuf::from("/b"));
        assert_eq!(n("/./.."), PathBuf::from("/"));
    }

    #[test]
    fn normalize_lexically_drops_trailing_slashes_and_dot_components() {
        let n = |s: &str| normalize_lexically(Path::new(s));
        assert_eq!(n("a/b/"), PathBuf::from("a/b"));
        assert_eq!(n("a/b//"), PathBuf::from("a/b"));
        assert_eq!(n("../"), PathBuf::from(".."));
        assert_eq!(n("/a/../"), PathBuf::from("/"));
        assert_eq!(n("./a/./b/."), PathBuf::from("a/b"));
        assert_eq!(n("/a/."), PathBuf::from("/a"));
        assert_eq!(n("."), PathBuf::new());
        assert_eq!(n("a/.."), PathBuf::new());
        assert_eq!(n(""), PathBuf::new());
    }

    #[test]
    fn prepare_refuses_filesystem_root() {
        let why = refused_why(WorktreeRoot::prepare(Path::new("/")));
        assert!(why.contains("file system root"), "{why}");
        let why = refused_why(WorktreeRoot::prepare(Path::new("/tmp/../..")));
        assert!(why.contains("file system root"), "{why}");
    }

    #[test]
    fn prepare_refuses_home_directory() {
        let home = std::env::var_os("HOME").expect("HOME is set for tests");
        let why = refused_why(WorktreeRoot::prepare(Path::new(&home)));
        assert!(why.contains("home directory"), "{why}");
        for p in ["/root", "/home", "/home/../root"] {
            let why = refused_why(WorktreeRoot::prepare(Path::new(p)));
            assert!(
                why.contains("home") || why.contains("system directory"),
                "{p}: {why}"
            );
        }
    }

    #[test]
    fn prepare_refuses_home_directory_from_passwd_and_its_ancestors() {
        let homes = home_dirs();
        assert!(homes.iter().any(|h| h.path == Path::new("/root")));
        // A home directory of /etc/passwd other than $HOME and /root, if any.
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let other = passwd
            .lines()
            .filter_map(|l| l.split(':').nth(5))
            .find(|h| h.len() > 1 && !["/root", "/home"].contains(h));
        if let Some(h) = other {
            let why = refused_why(WorktreeRoot::prepare(Path::new(h)));
            assert!(why.contains("home") || why.contains("system"), "{h}: {why}");
        }
        let fake = [Home {
            path: PathBuf::from("/srv/users/alice"),
            owner: "user alice".into(),
        }];
        assert!(protected_because(Path::new("/srv/users/alice"), &fake)
            .unwrap()
            .contains("home directory of user alice"));
        assert!(protected_because(Path::new("/srv/users"), &fake)
            .unwrap()
            .contains("contains the home directory"));
        assert_eq!(
            protected_because(Path::new("/srv/users/alice/wt"), &fake),
            None
        );
    }

    #[test]
    fn prepare_refuses_shared_system_directories() {
        for p in ["/tmp", "/etc", "/var/tmp", "/dev/shm"] {
            let why = refused_why(WorktreeRoot::prepare(Path::new(p)));
            assert!(why.contains("system directory"), "{p}: {why}");
        }
    }

    #[test]
    fn a_root_inside_a_system_directory_is_refused() {
        for p in [
            "/usr/lib",
            "/usr/local/share/wt",
            "/etc/ssh",
            "/var/lib/postgresql/15",
            "/var/www/wt",
            "/boot/wt",
            "/opt/wt",
            "/srv/wt",
            "/proc/1",
            "/sys/kernel",
            "/dev/shm/wt",
            "/run/user/1000/wt",
            "/bin/wt",
            "/sbin/wt",
            "/lib/x86_64-linux-gnu",
            "/lib64/wt",
            "/libx32/wt",
            "/var/tmpfoo/wt",
        ] {
            // `open`, not `prepare`: nothing may be created there even if
            // the check regressed.
            let why = refused_why(WorktreeRoot::open(Path::new(p)));
            assert!(
                why.contains("lies inside the system directory"),
                "{p}: {why}"
            );
        }
        assert!(in_system_tree(Path::new("/var/tmp/booworktrees")).is_none());
        assert!(in_system_tree(Path::new("/tmp/booworktrees")).is_none());
        assert!(in_system_tree(Path::new("/data/booworktrees")).is_none());
    }

    #[test]
    fn a_root_reaching_a_system_directory_through_a_symlinked_ancestor_is_refused_before_it_is_created(
    ) {
        let t = temp();
        let link = t.path().join("etc");
        symlink("/etc", &link).unwrap();
        let name = format!("boo-never-created-{}", fastrand::u64(..));
        let why = refused_why(WorktreeRoot::prepare(&link.join(&name).join("wt")));
        assert!(why.contains("resolves to /etc/"), "{why}");
        assert!(
            why.contains("lies inside the system directory /etc"),
            "{why}"
        );
        assert!(!Path::new("/etc").join(&name).exists());
    }

    #[test]
    fn a_root_that_contains_the_database_or_the_configuration_file_is_refused() {
        let t = temp();
        let root = t.path().join("root");
        let db = root.join("state/boo.db");
        let why = refused_why(WorktreeRoot::prepare_apart_from(
            &root,
            &[Kept {
                what: "the database file (database.url)",
                path: &db,
            }],
            None,
        ));
        assert!(
            why.contains(&format!(
                "contains the database file (database.url) {}",
                db.display()
            )),
            "{why}"
        );
        assert!(!root.exists(), "refused before it is created");

        // The root itself as the file, and a file reached through a symlink.
        fs::create_dir(&root).unwrap();
        let alias = t.path().join("alias");
        symlink(&root, &alias).unwrap();
        for path in [root.clone(), alias.join("boo-reconciler.toml")] {
            let kept = [Kept {
                what: "the configuration file",
                path: &path,
            }];
            let why = refused_why(WorktreeRoot::open_apart_from(&root, &kept, None));
            assert!(why.contains("contains the configuration file"), "{why}");
        }

        // Beside the root is where they belong.
        let beside = t.path().join("boo.db");
        let kept = [Kept {
            what: "the database file (database.url)",
            path: &beside,
        }];
        WorktreeRoot::prepare_apart_from(&root, &kept, None).unwrap();
        let sibling = t.path().join("root-other/x.db");
        let kept = [Kept {
            what: "the database file (database.url)",
            path: &sibling,
        }];
        WorktreeRoot::prepare_apart_from(&root, &kept, None).unwrap();
    }

    #[test]
    fn a_root_that_contains_a_main_repository_is_refused() {
        let (t, root) = root_with_wt1();
        let inside = root.path().join("wt1");
        let through_configured = root.configured_path().join("repo");
        for path in [&inside, &through_configured] {
            let kept = [Kept {
                what: "the main repository",
                path,
            }];
            let err = root.refuse_containing(&kept).unwrap_err();
            assert!(
                err.to_string().contains("contains the main repository"),
                "{err}"
            );
        }
        let outside = t.path().join("repo");
        let kept = [Kept {
            what: "the main repository",
            path: &outside,
        }];
        root.refuse_containing(&kept).unwrap();
    }

    #[test]
    fn prepare_refuses_symlink_root() {
        let t = temp();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("keep"), "x").unwrap();
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        let why = refused_why(WorktreeRoot::prepare(&link));
        assert!(why.contains("symlink"), "{why}");
        // A dangling symlink is not replaced by a fresh directory either.
        let dangling = t.path().join("dangling");
        symlink(t.path().join("nowhere"), &dangling).unwrap();
        let why = refused_why(WorktreeRoot::prepare(&dangling));
        assert!(why.contains("symlink"), "{why}");
        assert!(!t.path().join("nowhere").exists());
        assert_eq!(fs::read_to_string(real.join("keep")).unwrap(), "x");
    }

    #[test]
    fn prepare_refuses_a_file() {
        let t = temp();
        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        let why = refused_why(WorktreeRoot::prepare(&file));
        assert!(why.contains("not a directory"), "{why}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn prepare_refuses_dotdot_after_a_symlink() {
        let t = temp();
        fs::create_dir_all(t.path().join("elsewhere/deep")).unwrap();
        symlink(t.path().join("elsewhere/deep"), t.path().join("x")).unwrap();
        // Lexically <t>/booworktrees, physically <t>/elsewhere/booworktrees.
        let why = refused_why(WorktreeRoot::prepare(&t.path().join("x/../booworktrees")));
        assert!(why.contains("`..`"), "{why}");
        assert!(!t.path().join("booworktrees").exists());
        assert!(!t.path().join("elsewhere/booworktrees").exists());
    }

    #[test]
    fn a_root_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        for mode in [0o1777, 0o777, 0o775, 0o757] {
            let t = temp();
            let p = t.path().join("root");
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            for r in [
                WorktreeRoot::prepare(&p),
                WorktreeRoot::open(&p),
                WorktreeRoot::prepare_apart_from(&p, &[], None),
            ] {
                let why = refused_why(r);
                assert!(why.contains(&format!("mode {mode:04o}")), "{why}");
                assert!(why.contains("is owned by"), "{why}");
                assert!(why.contains("install -d -m 0755 -o "), "{why}");
                assert!(why.contains(&p.display().to_string()), "{why}");
            }
        }
        // Its owner alone may write: 0755 and 0700 are fine.
        for mode in [0o755, 0o700, 0o1755] {
            let t = temp();
            let p = t.path().join("root");
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            WorktreeRoot::prepare_apart_from(&p, &[], None).unwrap();
        }
    }

    #[test]
    fn a_root_owned_by_another_user_is_refused_unless_it_is_the_configured_owner() {
        let mallory = crate::testing::local_user(crate::testing::MALLORY);
        let t = temp();
        let p = t.path().join("root");
        fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(mallory.uid), Some(mallory.gid)).unwrap();
        let why = refused_why(WorktreeRoot::prepare_apart_from(&p, &[], None));
        assert!(
            why.contains(&format!(
                "owned by {} (uid {})",
                crate::testing::MALLORY,
                mallory.uid
            )),
            "{why}"
        );
        assert!(why.contains("worktrees.owner"), "{why}");
        let why = refused_why(WorktreeRoot::open_apart_from(&p, &[], Some(12345)));
        assert!(why.contains("mode 0755"), "{why}");
        // The orchestrator's user named in the configuration may own it.
        let root = WorktreeRoot::prepare_apart_from(&p, &[], Some(mallory.uid)).unwrap();
        root.open_handle().unwrap();
        // Handed to another user later: every destructive step opens the
        // root again and refuses it.
        std::os::unix::fs::chown(&p, Some(12345), None).unwrap();
        let why = match root.open_handle() {
            Err(RootError::Refused { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why.contains("uid 12345"), "{why}");
    }

    #[test]
    fn in_trash_sees_the_trash_however_it_is_spelled() {
        let t = temp();
        let root = t.path().join("root");
        fs::create_dir_all(root.join(TRASH_DIR)).unwrap();
        symlink(root.join(TRASH_DIR), t.path().join("alias")).unwrap();
        for inside in [
            root.join(TRASH_DIR),
            root.join(TRASH_DIR).join("w1.1"),
            root.join("x/..").join(TRASH_DIR).join("new"),
            t.path().join("alias/new"),
        ] {
            assert!(in_trash(&root, &inside), "{}", inside.display());
        }
        for outside in [
            root.join("w1"),
            root.join(".boo-trash2"),
            t.path().join("x"),
        ] {
            assert!(!in_trash(&root, &outside), "{}", outside.display());
        }
    }

    #[test]
    fn prepare_creates_missing_root() {
        let t = temp();
        let p = t.path().join("a/b/booworktrees");
        let root = WorktreeRoot::prepare(&p).unwrap();
        assert!(p.is_dir());
        // Made so that it passes its own check whatever the umask allows.
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o022, 0);
        assert_eq!(root.path(), fs::canonicalize(&p).unwrap());
        assert_eq!(root.dev(), fs::metadata(&p).unwrap().dev());
        assert_eq!(root.ino(), fs::metadata(&p).unwrap().ino());
        // Preparing again is fine.
        WorktreeRoot::prepare(&p).unwrap();
    }

    #[test]
    fn prepare_keeps_canonical_path_behind_symlinked_ancestor() {
        let t = temp();
        fs::create_dir_all(t.path().join("real/x")).unwrap();
        symlink(t.path().join("real"), t.path().join("alias")).unwrap();
        let root = WorktreeRoot::prepare(&t.path().join("alias/./x/../root")).unwrap();
        let canonical = fs::canonicalize(t.path()).unwrap().join("real/root");
        assert_eq!(root.path(), canonical);
        assert_eq!(root.configured_path(), t.path().join("alias/root"));
    }

    #[test]
    fn prepare_accepts_relative_path_and_canonicalizes_it() {
        let t = temp();
        let cwd = std::env::current_dir().unwrap();
        let ups = cwd.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..ups {
            rel.push("..");
        }
        rel.push(t.path().strip_prefix("/").unwrap());
        rel.push("rel-root");
        assert!(rel.is_relative());
        let root = WorktreeRoot::prepare(&rel).unwrap();
        assert_eq!(
            root.path(),
            fs::canonicalize(t.path()).unwrap().join("rel-root")
        );
    }

    #[test]
    fn check_refuses_parent_traversal() {
        let (_t, root) = root_with_wt1();
        let why = check_why(root.check(&root.path().join("../../etc")));
        assert!(why.contains("outside the worktree root"), "{why}");
        let why = check_why(root.check(&root.path().join("wt1/../../root/wt1/../../etc")));
        assert!(why.contains("outside"), "{why}");
        let why = check_why(root.check(Path::new("../../etc")));
        assert!(why.contains("relative"), "{why}");
    }

    #[test]
    fn check_refuses_absolute_path_outside_root() {
        let (_t, root) = root_with_wt1();
        let why = check_why(root.check(Path::new("/etc")));
        assert!(why.contains("outside the worktree root"), "{why}");
        // A sibling of the root sharing its name as a string prefix.
        let mut evil = root.path().as_os_str().to_owned();
        evil.push("-evil/wt1");
        let why = check_why(root.check(Path::new(&evil)));
        assert!(why.contains("outside"), "{why}");
    }

    #[test]
    fn check_refuses_relative_path() {
        let (_t, root) = root_with_wt1();
        for p in ["wt1", "./wt1", "root/wt1"] {
            let why = check_why(root.check(Path::new(p)));
            assert!(why.contains("relative path"), "{p}: {why}");
        }
    }

    #[test]
    fn check_refuses_empty_path() {
        let (_t, root) = root_with_wt1();
        assert_eq!(check_why(root.check(Path::new(""))), "empty path");
    }

    #[test]
    fn check_refuses_root_itself() {
        let (_t, root) = root_with_wt1();
        for p in [
            root.path().to_path_buf(),
            root.path().join("."),
            root.path().join("wt1/.."),
        ] {
            let why = check_why(root.check(&p));
            assert!(why.contains("the worktree root itself"), "{why}");
        }
    }

    #[test]
    fn check_refuses_grandchild() {
        let (_t, root) = root_with_wt1();
        let why = check_why(root.check(&root.path().join("wt1/f")));
        assert!(why.contains("not a direct child"), "{why}");
        let why = check_why(root.check(&root.path().join("wt1/sub/../f")));
        assert!(why.contains("not a direct child"), "{why}");
    }

    #[test]
    fn check_refuses_symlink_under_root_pointing_outside() {
        let (t, root) = root_with_wt1();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        symlink(&outside, root.path().join("evil")).unwrap();
        let why = check_why(root.check(&root.path().join("evil")));
        assert_eq!(why, format!("symlink to {}", outside.display()));
        // A symlink is refused wherever it points, even inside the root.
        symlink(root.path().join("wt1"), root.path().join("alias")).unwrap();
        let why = check_why(root.check(&root.path().join("alias")));
        assert!(why.starts_with("symlink to "), "{why}");
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
        assert!(root.path().join("wt1/f").exists());
    }

    #[test]
    fn check_accepts_direct_child_and_normalizations() {
        let (_t, root) = root_with_wt1();
        let want = PathCheck::Inside {
            path: root.path().join("wt1"),
            exists: true,
        };
        for p in [
            root.path().join("wt1"),
            root.path().join("./wt1"),
            root.path().join("wt1/"),
            root.path().join("x/../wt1"),
            root.path().join("wt1/./sub/.."),
        ] {
            assert_eq!(root.check(&p), want, "{}", p.display());
        }
        assert_eq!(
            root.check(&root.path().join("wt2")),
            PathCheck::Inside {
                path: root.path().join("wt2"),
                exists: false
            }
        );
    }

    #[test]
    fn check_accepts_child_written_through_configured_form() {
        let t = temp();
        fs::create_dir(t.path().join("real")).unwrap();
        fs::create_dir(t.path().join("x")).unwrap();
        symlink(t.path().join("real"), t.path().join("alias")).unwrap();
        let root = WorktreeRoot::prepare(&t.path().join("x/../alias/root")).unwrap();
        fs::create_dir(root.path().join("wt1")).unwrap();
        let want = PathCheck::Inside {
            path: root.path().join("wt1"),
            exists: true,
        };
        assert_ne!(root.path(), root.configured_path());
        assert_eq!(root.check(&t.path().join("alias/root/wt1")), want);
        assert_eq!(root.check(&t.path().join("x/../alias/root/wt1")), want);
        assert_eq!(root.check(&root.path().join("wt1")), want);
    }

    #[test]
    fn a_plain_spelling_is_an_absolute_direct_entry() {
        let t = tempfile::tempdir().unwrap();
        let root = WorktreeRoot::prepare(&t.path().join("root")).unwrap();
        let r = root.path().to_path_buf();
        assert!(root.spelled_plainly(&r.join("w1")));
        assert!(root.spelled_plainly(&r.join("x/../w1")));
        assert!(!root.spelled_plainly(Path::new("w1")));
        assert!(!root.spelled_plainly(Path::new("./w1/")));
        assert!(!root.spelled_plainly(&t.path().join("link-to-w1")));
        assert!(!root.spelled_plainly(&r.join("w1/deeper")));
    }
}
