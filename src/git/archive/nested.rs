//! Commits of nested repositories and submodules that nothing else keeps:
//! their `.git` goes with the worktree, so what only they hold is fetched
//! into the main repository beside the archive ref.

use std::path::Path;

use git2::{AutotagOption, FetchOptions, Repository};

use super::super::paths::{join_rel, open_exact, rel_str};
use super::super::reach::{ref_tips, unreachable};
use super::super::GitError;
use super::records::NestedRecord;

/// Commits of HEAD and the local branches of `repo` that no
/// remote-tracking ref reaches.
fn local_only_commits(repo: &Repository) -> Result<usize, git2::Error> {
    let mut tips = Vec::new();
    if let Ok(c) = repo.head().and_then(|h| h.peel_to_commit()) {
        tips.push(c.id());
    }
    tips.extend(ref_tips(repo, &|n| !n.starts_with("refs/heads/"))?);
    let hide = ref_tips(repo, &|n| !n.starts_with("refs/remotes/"))?;
    Ok(unreachable(repo, &tips, &hide)?.len())
}

/// Fetches the HEAD and local branches of the repository at `dir` into
/// `main` below `refname`.
fn fetch_nested(main: &Repository, dir: &Path, refname: &str) -> Result<(), git2::Error> {
    let nested = open_exact(dir)?;
    let url = dir
        .to_str()
        .ok_or_else(|| git2::Error::from_str("nested repository path is not UTF-8"))?;
    let mut specs = vec![format!("+refs/heads/*:{refname}-heads/*")];
    if nested.head().and_then(|h| h.peel_to_commit()).is_ok() {
        specs.push(format!("+HEAD:{refname}"));
    }
    let mut remote = main.remote_anonymous(url)?;
    let mut fo = FetchOptions::new();
    fo.update_fetchhead(false)
        .download_tags(AutotagOption::None);
    remote.fetch(
        &specs,
        Some(&mut fo),
        Some("boo-reconciler: archive nested repository"),
    )?;
    Ok(())
}

/// Those of `nested` (paths below `workdir`, in path order, each with
/// whether it is a clean submodule) whose HEAD or local branches hold
/// commits that no remote-tracking ref reaches, as the archive records
/// them: `n` is the index in `nested`, which names its refs.
pub(super) fn to_keep(
    workdir: &Path,
    nested: &[(Vec<u8>, bool)],
) -> Result<Vec<NestedRecord>, GitError> {
    let mut out = Vec::new();
    for (n, (rel, clean)) in nested.iter().enumerate() {
        let dir = join_rel(workdir, rel);
        let Ok(repo) = open_exact(&dir) else {
            continue;
        };
        let unpushed = local_only_commits(&repo).map_err(|source| GitError::Op {
            op: "nested commits",
            path: dir.clone(),
            source,
        })?;
        if unpushed > 0 {
            out.push(NestedRecord {
                n,
                path: rel.clone(),
                clean: *clean,
            });
        }
    }
    Ok(out)
}

/// Fetches the HEAD and local branches of each of `kept` (see [`to_keep`])
/// to `<reference>-nested/<n>` and `<reference>-nested/<n>-heads/*`.
pub(super) fn keep_nested_commits(
    main: &Repository,
    workdir: &Path,
    kept: &[NestedRecord],
    reference: &str,
) -> Result<(), GitError> {
    for k in kept {
        let dir = join_rel(workdir, &k.path);
        let refname = format!("{reference}-nested/{}", k.n);
        fetch_nested(main, &dir, &refname).map_err(|source| GitError::Op {
            op: "fetch nested repository",
            path: dir.clone(),
            source,
        })?;
        tracing::info!(
            nested = %rel_str(&k.path),
            reference = %refname,
            "archived nested repository commits"
        );
    }
    Ok(())
}
