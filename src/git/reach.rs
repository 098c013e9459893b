//! Which commits would become unreachable, through libgit2: what the
//! archive and the stale admin entries use to decide what to keep under a
//! ref. (The preflight's verdict asks the git CLI instead.)

use git2::{Oid, Repository, Sort};

/// Commits reachable from `tips` and from none of `hide`, newest first.
pub fn unreachable(repo: &Repository, tips: &[Oid], hide: &[Oid]) -> Result<Vec<Oid>, git2::Error> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
    for t in tips {
        walk.push(*t)?;
    }
    for h in hide {
        // A hidden tip that is missing from the object database cannot
        // hide anything; ignore it rather than fail.
        if repo.find_commit(*h).is_ok() {
            walk.hide(*h)?;
        }
    }
    walk.collect()
}
