//! Giving back to a repository's owner what a root controller wrote into
//! it through libgit2 (a force archive's objects and ref, a stale admin
//! entry's archive ref). libgit2 writes as the process, and a root-owned
//! `objects/ab/` directory or `refs/boo/…` file in another user's
//! repository would make that user's own next `git commit` or `git gc`
//! fail with "insufficient permission". (What the git CLI writes is
//! already the owner's: [`super::cli`] runs it as the owner.)
//!
//! # Guarantees
//!
//! 1. **Only what this process owns, only inside the git directory.** The
//!    walk covers `objects/` (two levels: the fan-out directories and
//!    packs), `refs/`, `logs/` and `packed-refs` of the common directory,
//!    never follows a symlink (`lchown`), and changes only entries owned by
//!    this process's uid to the owner of the common directory itself.
//! 2. **Nothing to do unless root over another user's repository.**
//!    Test: `what_root_wrote_goes_back_to_the_owner`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Hands back to the owner of `common` (a repository's common git
/// directory) every entry this process created there; returns how many.
pub fn hand_back(common: &Path) -> io::Result<usize> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(common)?;
    if me != 0 || meta.uid() == me {
        return Ok(0);
    }
    let (uid, gid) = (meta.uid(), meta.gid());
    let mut n = 0;
    let spots = [
        (common.join("objects"), 2),
        (common.join("refs"), usize::MAX),
        (common.join("logs"), usize::MAX),
        (common.join("packed-refs"), 0),
    ];
    for (top, depth) in spots {
        if std::fs::symlink_metadata(&top).is_err() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&top)
            .follow_links(false)
            .max_depth(depth)
        {
            let entry = entry.map_err(io::Error::other)?;
            let m = entry.path().symlink_metadata()?;
            if m.uid() == me {
                std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::archive::archive;
    use crate::git::testutil::{precious, write, Fixture};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn what_root_wrote_goes_back_to_the_owner() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root to own files as another user (CI runs as root)"
        );
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        write(&wt.join("new.txt"), "new\n");
        std::fs::set_permissions(f.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in walkdir::WalkDir::new(f.tmp.path()) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        let common = f.repo.join(".git");
        let root_owned = |dir: &Path| {
            walkdir::WalkDir::new(dir)
                .into_iter()
                .filter(|e| e.as_ref().unwrap().metadata().unwrap().uid() == 0)
                .count()
        };
        // What root writes by hand is handed back…
        write(&common.join("refs/boo/by-hand"), "x\n");
        std::fs::create_dir_all(common.join("objects/zz")).unwrap();
        assert_eq!(root_owned(&common), 3);
        assert_eq!(hand_back(&common).unwrap(), 3);
        assert_eq!(root_owned(&common), 0);
        // …and so is everything a force archive writes through libgit2.
        archive(&wt, "w", std::time::SystemTime::now(), &precious()).unwrap();
        assert_eq!(root_owned(&common), 0);
        assert_eq!(hand_back(&common).unwrap(), 0);
    }
}
