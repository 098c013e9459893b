//! Symlinks where git keeps its own state: a repository laid out so that
//! its writes land elsewhere.
//!
//! git never makes a symlink of `objects`, `refs`, `logs`, `packed-refs`,
//! the `worktrees` directory or an admin entry, nor of the directories
//! below `refs`, `logs` and `objects`. A user who puts one there makes
//! every writer of the repository write through it: with a root
//! controller's credentials, into `/etc`. Writes are made with the owner's
//! credentials anyway ([`crate::creds`]), so such a link can only lead to
//! what the owner could write; it is still refused outright, since nothing
//! about such a repository can be trusted to be where it seems: its
//! worktrees are kept with [`crate::risk::AtRisk::UnsafeRepository`], which
//! `--force` does not override, and its stale admin entries are neither
//! archived into nor pruned.
//!
//! Test: `every_symlink_where_git_keeps_its_state_is_found`.

use std::fs;
use std::io;
use std::path::Path;

/// The first symlink found where git keeps the state of the repository
/// whose common directory is `common` (and of the admin entry `admin`,
/// when given), as a sentence naming it and where it leads; `None` when
/// there is none.
pub fn unsafe_links(common: &Path, admin: Option<&Path>) -> Option<String> {
    find(common, admin).unwrap_or_else(|e| Some(format!("{}: {e}", common.display())))
}

fn find(common: &Path, admin: Option<&Path>) -> io::Result<Option<String>> {
    for top in ["objects", "refs", "logs", "packed-refs", "worktrees"] {
        if let Some(link) = symlink_at(&common.join(top))? {
            return Ok(Some(link));
        }
    }
    for (dir, depth) in [("objects", 1), ("refs", usize::MAX), ("logs", usize::MAX)] {
        if let Some(link) = symlink_below(&common.join(dir), depth)? {
            return Ok(Some(link));
        }
    }
    if let Some(admin) = admin {
        if let Some(link) = symlink_at(admin)? {
            return Ok(Some(link));
        }
        // Everything an admin entry holds is git's: HEAD, index, logs,
        // refs, modules (submodules' git directories) and the rest.
        if let Some(link) = symlink_below(admin, usize::MAX)? {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

fn describe(path: &Path) -> String {
    match fs::read_link(path) {
        Ok(to) => format!("{} is a symlink to {}", path.display(), to.display()),
        Err(_) => format!("{} is a symlink", path.display()),
    }
}

fn symlink_at(path: &Path) -> io::Result<Option<String>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Ok(Some(describe(path))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A symlink among the entries of `dir` down to `depth` levels; only
/// directories are descended into, never a link.
fn symlink_below(dir: &Path, depth: usize) -> io::Result<Option<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENOENT | nix::libc::ENOTDIR)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            return Ok(Some(describe(&entry.path())));
        }
        if kind.is_dir() && depth > 1 {
            if let Some(link) = symlink_below(&entry.path(), depth - 1)? {
                return Ok(Some(link));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testutil::Fixture;
    use std::os::unix::fs::symlink;

    #[test]
    fn every_symlink_where_git_keeps_its_state_is_found() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let common = f.repo.join(".git");
        let admin = common.join("worktrees/w");
        assert_eq!(unsafe_links(&common, Some(&admin)), None);
        let elsewhere = f.tmp.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        // Each planted link is found, then taken back out.
        let spots = [
            "logs",
            "refs",
            "refs/boo",
            "refs/heads/deep",
            "logs/refs/heads",
            "objects/zz",
            "packed-refs",
            "worktrees",
            "worktrees/w",
            "worktrees/w/logs",
            "worktrees/w/modules",
            "worktrees/w/index",
        ];
        for spot in spots {
            let at = common.join(spot);
            let moved = at.with_extension("moved-aside");
            let existed = fs::symlink_metadata(&at).is_ok();
            if existed {
                fs::rename(&at, &moved).unwrap();
            } else {
                fs::create_dir_all(at.parent().unwrap()).unwrap();
            }
            symlink(&elsewhere, &at).unwrap();
            let found = unsafe_links(&common, Some(&admin))
                .unwrap_or_else(|| panic!("a symlink at {spot} was not found"));
            assert!(found.contains("is a symlink to"), "{spot}: {found}");
            fs::remove_file(&at).unwrap();
            if existed {
                fs::rename(&moved, &at).unwrap();
            }
            assert_eq!(unsafe_links(&common, Some(&admin)), None, "after {spot}");
        }
        // A link the worktree itself holds is its content, not git's state.
        symlink(&elsewhere, wt.join("link")).unwrap();
        assert_eq!(unsafe_links(&common, Some(&admin)), None);
    }
}
