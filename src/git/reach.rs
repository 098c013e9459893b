//! Which commits would become unreachable, and which of those a base ref
//! already holds in another shape (rebased or squashed).

use std::collections::HashSet;

use git2::{Commit, Diff, Oid, Repository, Sort};

/// Refs that live in a worktree's own git directory and go away with it:
/// they keep nothing alive once the worktree is removed.
pub fn is_per_worktree_ref(name: &str) -> bool {
    name.starts_with("refs/bisect/")
        || name.starts_with("refs/worktree/")
        || name.starts_with("refs/rewritten/")
}

/// The commits that every ref of `repo` except those `skip` names points
/// at (tags peeled; refs that do not lead to a commit are ignored).
pub fn ref_tips(repo: &Repository, skip: &dyn Fn(&str) -> bool) -> Result<Vec<Oid>, git2::Error> {
    let mut out = Vec::new();
    for r in repo.references()? {
        let Ok(r) = r else { continue };
        let Ok(name) = r.name() else { continue };
        if skip(name) {
            continue;
        }
        if let Ok(c) = r.peel_to_commit() {
            out.push(c.id());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

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

/// The diff a non-merge commit introduces: against its parent, or against
/// the empty tree for a root commit. `None` for merges.
fn commit_diff<'r>(repo: &'r Repository, c: &Commit<'_>) -> Result<Option<Diff<'r>>, git2::Error> {
    if c.parent_count() > 1 {
        return Ok(None);
    }
    let new = c.tree()?;
    let old = if c.parent_count() == 1 {
        Some(c.parent(0)?.tree()?)
    } else {
        None
    };
    Ok(Some(repo.diff_tree_to_tree(
        old.as_ref(),
        Some(&new),
        None,
    )?))
}

/// The paths a diff touches, sorted: patch-equivalent changes touch the
/// same paths, and listing them only compares trees, while a patch id
/// needs the content diff.
fn touched(diff: &Diff<'_>) -> Vec<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path_bytes()
                .or(d.old_file().path_bytes())
                .map(<[u8]>::to_vec)
        })
        .collect();
    paths.sort();
    paths
}

/// Patch ids of the non-merge commits of `base` that none of `tips` reaches
/// (the "upstream" side of `git cherry <base> <tip>`), computed only for
/// commits touching one of the `wanted` path sets.
fn upstream_patch_ids(
    repo: &Repository,
    base: Oid,
    tips: &[Oid],
    wanted: &HashSet<Vec<Vec<u8>>>,
) -> Result<HashSet<Oid>, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(base)?;
    for t in tips {
        walk.hide(*t)?;
    }
    let mut ids = HashSet::new();
    for oid in walk {
        let c = repo.find_commit(oid?)?;
        if let Some(diff) = commit_diff(repo, &c)? {
            if wanted.contains(&touched(&diff)) {
                ids.insert(diff.patchid(None)?);
            }
        }
    }
    Ok(ids)
}

/// Whether the merge commit `c` is exactly the conflict-free merge of its
/// parents (read-only: the merge result stays in memory). Octopus merges
/// cannot carry a manual resolution (git refuses conflicted octopus
/// merges), so they count as clean.
fn is_clean_merge(repo: &Repository, c: &Commit<'_>) -> Result<bool, git2::Error> {
    if c.parent_count() != 2 {
        return Ok(c.parent_count() > 2);
    }
    let (p1, p2) = (c.parent(0)?, c.parent(1)?);
    let merged = repo.merge_commits(&p1, &p2, None)?;
    if merged.has_conflicts() {
        return Ok(false);
    }
    let tree = c.tree()?;
    let diff = repo.diff_tree_to_index(Some(&tree), Some(&merged), None)?;
    Ok(diff.deltas().len() == 0)
}

/// Of `lost` (commits reachable only from `tips`), those that `base` does
/// not already hold in another shape, newest first:
///
/// * `git cherry` rule: a non-merge commit whose patch id equals the patch
///   id of a non-merge commit of `base` not reachable from the tips is
///   merged (rebase-merge, cherry-pick). Merge commits are skipped, as
///   `git cherry` skips them, as long as they are clean: a two-parent
///   merge whose tree is exactly what merging its parents gives without
///   conflicts holds no work of its own. A merge with a conflict resolution
///   or other edits ("evil merge") is work and stays listed (stricter than
///   `git cherry`).
/// * squash rule: when the whole change of a tip since its merge base with
///   `base` (`diff merge-base..tip`) has the patch id of one commit of
///   `base`, every lost commit behind that tip is merged (squash-merge,
///   where no single branch commit matches).
pub fn not_in_base(
    repo: &Repository,
    lost: &[Oid],
    tips: &[Oid],
    base: Oid,
) -> Result<Vec<Oid>, git2::Error> {
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    let lost_set: HashSet<Oid> = lost.iter().copied().collect();

    // What each lost commit changes (None for merges) and what each tip
    // changes since its merge base with `base` (the squash candidates).
    let mut commits: Vec<(Oid, Option<Diff<'_>>)> = Vec::new();
    for &oid in lost {
        let c = repo.find_commit(oid)?;
        commits.push((oid, commit_diff(repo, &c)?));
    }
    let mut squashes: Vec<(Oid, Oid, Diff<'_>)> = Vec::new();
    for &tip in tips {
        let Ok(mb) = repo.merge_base(base, tip) else {
            continue;
        };
        if mb == tip {
            continue;
        }
        let old = repo.find_commit(mb)?.tree()?;
        let new = repo.find_commit(tip)?.tree()?;
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
        if diff.deltas().len() > 0 {
            squashes.push((tip, mb, diff));
        }
    }
    let wanted: HashSet<Vec<Vec<u8>>> = commits
        .iter()
        .filter_map(|(_, d)| d.as_ref().map(touched))
        .chain(squashes.iter().map(|(_, _, d)| touched(d)))
        .collect();
    let upstream = upstream_patch_ids(repo, base, tips, &wanted)?;

    // Squash rule, per tip.
    let mut covered: HashSet<Oid> = HashSet::new();
    if !upstream.is_empty() {
        for (tip, mb, diff) in &squashes {
            if upstream.contains(&diff.patchid(None)?) {
                for c in unreachable(repo, &[*tip], &[*mb])? {
                    if lost_set.contains(&c) {
                        covered.insert(c);
                    }
                }
            }
        }
    }

    // git cherry rule, per commit.
    let mut out = Vec::new();
    for (oid, diff) in &commits {
        if covered.contains(oid) {
            continue;
        }
        match diff {
            None if is_clean_merge(repo, &repo.find_commit(*oid)?)? => {}
            None => out.push(*oid),
            Some(d) if !upstream.is_empty() && upstream.contains(&d.patchid(None)?) => {}
            Some(_) => out.push(*oid),
        }
    }
    Ok(out)
}
