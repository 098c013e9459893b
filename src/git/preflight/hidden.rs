//! Index changes git's status hides.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::{fs, io};

use crate::git::cli::{Git, GitCliError};
use crate::git::mode::octal::{EXEC, GITLINK, SYMLINK};
use crate::git::paths::{parent_beneath, rel_str};
use nix::fcntl::{readlinkat, AtFlags};
use nix::sys::stat::{fstatat, SFlag};

use super::{IndexEntry, PreflightError};

/// Index entries marked assume-unchanged or skip-worktree whose file is
/// present and differs from the index (mode or content).
pub(super) fn hidden_changes(
    git: &Git,
    dir: &Path,
    index: &[IndexEntry],
) -> Result<Vec<String>, PreflightError> {
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
        .map(|(st, o)| !st.success() || o.stdout_str().trim() != "false")?;
    let mut out = Vec::new();
    for e in hidden {
        // Read through the handle of its directory: a symlink the owner
        // put on the way is not followed out of the worktree.
        let stat = parent_beneath(dir, &e.path).and_then(|(parent, name)| {
            let st = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            let target = match kind {
                SFlag::S_IFLNK => Some(readlinkat(&parent, name.as_os_str())?),
                _ => None,
            };
            Ok((st.st_mode, kind, target))
        });
        let (mode, kind, target) = match stat {
            Ok(s) => s,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(PreflightError::HiddenFile {
                    path: rel_str(&e.path),
                    source,
                })
            }
        };
        let differs = if let Some(target) = target {
            e.mode != SYMLINK || hash(git, &["--stdin"], target.as_bytes())? != e.object
        } else if kind == SFlag::S_IFREG {
            let exec = mode & 0o100 != 0;
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

pub(super) fn hash(git: &Git, args: &[&str], input: &[u8]) -> Result<String, GitCliError> {
    let mut a = vec!["hash-object"];
    a.extend_from_slice(args);
    Ok(git
        .run_with_input(&a, input)?
        .stdout_str()
        .trim()
        .to_string())
}

/// Whether `path` lies inside `dir`, compared after resolving both (they
/// exist: they come from git and from the caller).
pub(super) fn inside(path: &Path, dir: &Path) -> bool {
    match (fs::canonicalize(path), fs::canonicalize(dir)) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}
