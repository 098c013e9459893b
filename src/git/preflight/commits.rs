//! Commits only this worktree reaches.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::git::cli::{Git, GitCliError};
use crate::git::paths::{dot_git, DotGit};
use crate::git::refs::RefsCache;
use crate::git::status::GitStatus;
use crate::risk::{AtRisk, SAMPLE};

use super::{Preflight, PreflightError};

pub(super) fn branch_ref(b: &str) -> String {
    if b.starts_with("refs/") {
        b.to_string()
    } else {
        format!("refs/heads/{b}")
    }
}

/// The commit `rev` names, if it names one.
pub(super) fn commit_of(git: &Git, rev: &str) -> Result<Option<String>, GitCliError> {
    git.commit_of(rev)
}

/// The commits HEAD's reflog names, newest first. Read by git when HEAD
/// resolves; when it does not (its branch was deleted), git refuses to
/// show the reflog, and the file it keeps is read instead.
pub(super) fn head_reflog(git: &Git, admin: &Path) -> Result<Vec<String>, PreflightError> {
    let (st, o) = git.run_status(&["reflog", "show", "--format=%H", "HEAD", "--"], &[])?;
    if st.success() {
        return Ok(o.stdout_str().lines().map(str::to_string).collect());
    }
    let (exists, _) = git.run_status(&["reflog", "exists", "HEAD"], &[])?;
    if !exists.success() {
        return Ok(Vec::new());
    }
    let path = admin.join("logs/HEAD");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .rev()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|id| id.bytes().any(|b| b != b'0'))
            .map(str::to_string)
            .collect()),
        Err(source) => Err(PreflightError::HeadReflog { path, source }),
    }
}

/// The refs that keep commits after the worktree is gone, as `rev-list`
/// arguments: every ref but the per-worktree ones and `except`.
pub(super) fn keeper_args(except: Option<&str>) -> Vec<String> {
    let mut v = vec!["--not".to_string()];
    if let Some(e) = except {
        v.push(format!("--exclude={e}"));
    }
    for per in ["refs/worktree/*", "refs/bisect/*", "refs/rewritten/*"] {
        v.push(format!("--exclude={per}"));
    }
    v.push("--glob=refs/*".into());
    v
}

pub(super) fn rev_list(
    git: &Git,
    tips: &[String],
    rest: &[String],
) -> Result<Vec<String>, GitCliError> {
    let mut args: Vec<String> = vec!["rev-list".into()];
    args.extend(tips.iter().cloned());
    args.extend(rest.iter().cloned());
    let o = git.run(&args)?;
    Ok(o.stdout_str().lines().map(str::to_string).collect())
}

/// The bases a lost commit may have been merged into: the row's
/// `base_ref`, else the main repository's own HEAD branch and each
/// remote's default branch.
pub(super) fn bases(p: &Preflight<'_>, git: &Git) -> Result<Vec<String>, GitCliError> {
    let mut names: Vec<String> = Vec::new();
    match p.base_ref {
        Some(b) => names.push(b.to_string()),
        None => {
            // The main worktree's HEAD, seen from a linked worktree.
            let (st, o) = git.run_status(&["symbolic-ref", "-q", "main-worktree/HEAD"], &[])?;
            if st.success() {
                names.push(o.stdout_str().trim().to_string());
            }
            let o = git.run(&["for-each-ref", "--format=%(symref)", "refs/remotes/*/HEAD"])?;
            names.extend(
                o.stdout_str()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let mut out = Vec::new();
    for n in names {
        if let Some(c) = commit_of(git, &n)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Of `lost`, the commits of `tip` that `base` does not hold in another
/// shape (see the module's "Merged elsewhere").
pub(super) fn not_in_base(
    git: &Git,
    lost: &[String],
    tip: &str,
    base: &str,
) -> Result<Vec<String>, GitCliError> {
    let merges: HashSet<String> = rev_list(
        git,
        &[tip.to_string()],
        &["--merges".into(), format!("^{base}")],
    )?
    .into_iter()
    .collect();
    let cherry = git.run(&["cherry", base, tip])?;
    let equivalent: HashSet<String> = cherry
        .stdout_str()
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(str::to_string)
        .collect();
    let mut rest: Vec<String> = Vec::new();
    for c in lost {
        if equivalent.contains(c) {
            continue;
        }
        if merges.contains(c) {
            if !clean_merge(git, c)? {
                rest.push(c.clone());
            }
            continue;
        }
        rest.push(c.clone());
    }
    let singles: Vec<&String> = rest.iter().filter(|c| !merges.contains(*c)).collect();
    if !singles.is_empty() && squashed(git, tip, base)? {
        rest.retain(|c| merges.contains(c));
    }
    Ok(rest)
}

/// Whether merge commit `c` is exactly what merging its two parents gives.
pub(super) fn clean_merge(git: &Git, c: &str) -> Result<bool, GitCliError> {
    let parents = rev_list(git, &[c.to_string()], &["--parents".into(), "-n1".into()])?;
    let ids: Vec<&str> = parents
        .first()
        .map(|l| l.split(' ').collect())
        .unwrap_or_default();
    if ids.len() != 3 {
        return Ok(false);
    }
    let (st, o) = git.run_status(
        &[
            "merge-tree",
            "--write-tree",
            "--no-messages",
            ids[1],
            ids[2],
        ],
        &[],
    )?;
    if !st.success() {
        return Ok(false);
    }
    let merged = o.stdout_str().lines().next().unwrap_or("").to_string();
    Ok(commit_tree(git, c)? == merged)
}

pub(super) fn commit_tree(git: &Git, c: &str) -> Result<String, GitCliError> {
    Ok(git
        .run(&["rev-parse", "--verify", &format!("{c}^{{tree}}")])?
        .stdout_str()
        .trim()
        .to_string())
}

/// Whether the whole `merge-base..tip` diff is one commit of `base`.
pub(super) fn squashed(git: &Git, tip: &str, base: &str) -> Result<bool, GitCliError> {
    let mb = git.run(&["merge-base", base, tip])?;
    let mb = mb.stdout_str().trim().to_string();
    if mb.is_empty() {
        return Ok(false);
    }
    let diff = git.run(&["diff-tree", "-p", "--no-color", "--no-ext-diff", &mb, tip])?;
    let id = git.run_with_input(&["patch-id", "--stable"], &diff.stdout)?;
    let Some(want) = id.stdout_str().split(' ').next().map(str::to_string) else {
        return Ok(false);
    };
    if want.trim().is_empty() {
        return Ok(false);
    }
    let log = git.run(&[
        "log",
        "--no-merges",
        "-p",
        "--no-color",
        "--no-ext-diff",
        "--format=commit %H",
        &format!("{mb}..{base}"),
    ])?;
    let ids = git.run_with_input(&["patch-id", "--stable"], &log.stdout)?;
    Ok(ids
        .stdout_str()
        .lines()
        .any(|l| l.split(' ').next() == Some(want.trim())))
}

/// Checks HEAD and the own branch for lost commits. Returns the commit
/// that stands in for an unborn HEAD whose branch was deleted, if any.
pub(super) fn commits(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    common: &Path,
    s: &GitStatus,
    out: &mut Vec<AtRisk>,
) -> Result<Option<String>, PreflightError> {
    let Tips {
        mut tips,
        own,
        stand_in,
    } = tips_of(p, git, admin, s, out)?;
    tips.sort();
    tips.dedup();
    if tips.is_empty() {
        return Ok(stand_in);
    }
    let keepers = keeper_args(own.as_deref());
    let named = match p.refs {
        Some(cache) => all_named(cache, git, common, &tips, own.as_ref())?,
        None => false,
    };
    let mut lost = if named {
        Vec::new()
    } else {
        rev_list(git, &tips, &keepers)?
    };
    // The bases cost several git calls; a worktree with nothing lost (the
    // common case, on every pass) needs none of them.
    let bases = if lost.is_empty() {
        Vec::new()
    } else {
        bases(p, git)?
    };
    if !bases.is_empty() {
        let mut rest = keepers.clone();
        rest.extend(bases.iter().cloned());
        lost = rev_list(git, &tips, &rest)?;
    }
    drop_merged_elsewhere(git, &tips, &keepers, &bases, &mut lost)?;
    if !lost.is_empty() {
        out.push(AtRisk::UnmergedCommits {
            count: lost.len(),
            head: s
                .head_oid
                .clone()
                .or_else(|| tips.first().cloned())
                .unwrap_or_default(),
            commits: lost.iter().take(SAMPLE).cloned().collect(),
        });
    }
    Ok(stand_in)
}

/// Where the commit check starts.
pub(super) struct Tips {
    /// The commits whose history the worktree may alone hold.
    tips: Vec<String>,
    /// The worktree's own branch: it keeps nothing once the worktree goes.
    own: Option<String>,
    /// The commit that stands in for an unborn HEAD whose branch was
    /// deleted.
    stand_in: Option<String>,
}

/// The tips: HEAD and the worktree's own branch (HEAD's, or the row's when
/// HEAD is detached).
pub(super) fn tips_of(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    s: &GitStatus,
    out: &mut Vec<AtRisk>,
) -> Result<Tips, PreflightError> {
    let mut tips: Vec<String> = Vec::new();
    let mut stand_in = None;
    let own: Option<String>;
    match (&s.head_branch, &s.head_oid) {
        (Some(b), Some(id)) => {
            tips.push(id.clone());
            own = Some(branch_ref(b));
        }
        (Some(b), None) => {
            if let Some(id) = deleted_branch(p, git, admin, b, out)? {
                tips.push(id.clone());
                stand_in = Some(id);
            }
            own = Some(branch_ref(b));
        }
        (None, head) => {
            let head = match head {
                Some(h) => h.clone(),
                None => return Err(PreflightError::DetachedWithoutCommit),
            };
            tips.push(head);
            own = match p.branch.map(branch_ref) {
                Some(b) => match commit_of(git, &b)? {
                    Some(id) => {
                        tips.push(id);
                        Some(b)
                    }
                    None => None,
                },
                None => None,
            };
        }
    }
    Ok(Tips {
        tips,
        own,
        stand_in,
    })
}

/// HEAD names branch `b`, which does not exist: a reason when there is
/// evidence it had commits that no other ref reaches. Returns the newest
/// commit of the HEAD reflog, which then stands for HEAD.
pub(super) fn deleted_branch(
    p: &Preflight<'_>,
    git: &Git,
    admin: &Path,
    b: &str,
    out: &mut Vec<AtRisk>,
) -> Result<Option<String>, PreflightError> {
    let reflog = head_reflog(git, admin)?;
    let newest = reflog.first().cloned();
    let from_reflog = match newest {
        Some(id) => commit_of(git, &id)?,
        None => None,
    };
    let row_says = p.branch.map(branch_ref) == Some(branch_ref(b));
    // A branch fast-forwarded into main and then deleted lost nothing:
    // every commit it had, another ref reaches.
    let reached_elsewhere = match &from_reflog {
        Some(c) => rev_list(git, std::slice::from_ref(c), &keeper_args(None))?.is_empty(),
        None => false,
    };
    if (from_reflog.is_some() || row_says) && !reached_elsewhere {
        out.push(AtRisk::BranchDeleted {
            branch: b.to_string(),
        });
    }
    Ok(from_reflog)
}

/// Whether another surviving ref names every tip. Such a tip is reachable,
/// whatever else holds: when every tip is one, nothing is lost, and no
/// rev-list runs.
pub(super) fn all_named(
    cache: &RefsCache,
    git: &Git,
    common: &Path,
    tips: &[String],
    own: Option<&String>,
) -> Result<bool, PreflightError> {
    let refs = cache.survivors(git, common).map_err(PreflightError::Refs)?;
    let ids: HashSet<&str> = refs
        .iter()
        .filter(|(name, _)| Some(name) != own)
        .map(|(_, id)| id.as_str())
        .collect();
    Ok(tips.iter().all(|t| ids.contains(t.as_str())))
}

/// Drops from `lost` the commits one of `bases` holds in another shape
/// (see the module's "Merged elsewhere"), tip by tip.
pub(super) fn drop_merged_elsewhere(
    git: &Git,
    tips: &[String],
    keepers: &[String],
    bases: &[String],
    lost: &mut Vec<String>,
) -> Result<(), GitCliError> {
    // Which lost commits each tip reaches: the same for every base.
    let mut of_tips: Vec<(&String, HashSet<String>)> = Vec::new();
    if !lost.is_empty() && !bases.is_empty() {
        for tip in tips {
            let reach = rev_list(git, std::slice::from_ref(tip), keepers)?;
            of_tips.push((tip, reach.into_iter().collect()));
        }
    }
    for base in bases {
        if lost.is_empty() {
            break;
        }
        for (tip, of_tip) in &of_tips {
            let mine: Vec<String> = lost
                .iter()
                .filter(|c| of_tip.contains(*c))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let kept = not_in_base(git, &mine, tip, base)?;
            lost.retain(|c| !mine.contains(c) || kept.contains(c));
        }
    }
    Ok(())
}

/// The commits that only the worktree's HEAD, its HEAD reflog and its
/// `refs/worktree/*` reach: once the worktree goes, nothing would keep
/// them from `git gc`. The removal keeps them under a history ref first.
/// These are not reasons to keep the worktree (every amended commit would
/// be one). HEAD's own commit counts whatever the preflight made of it: a
/// detached commit whose patch the base has (with other whitespace, say,
/// which patch ids ignore) is no reason to keep the worktree, and never a
/// reason to drop the commit.
pub fn unreferenced_history(
    worktree: &Path,
    timeout: Duration,
) -> Result<Vec<String>, PreflightError> {
    let DotGit::File { gitdir: admin } = dot_git(worktree) else {
        return Ok(Vec::new());
    };
    let git = Git::for_dir(worktree, timeout)?;
    // HEAD first: with no reflog (`core.logAllRefUpdates=false`, or one
    // expired), nothing else names a detached HEAD's commit.
    let mut tips = vec!["HEAD".to_string()];
    tips.extend(head_reflog(&git, &admin)?);
    let per = git.run(&[
        "for-each-ref",
        "--format=%(objectname)",
        "refs/worktree/",
        "refs/bisect/",
        "refs/rewritten/",
    ])?;
    tips.extend(per.stdout_str().lines().map(str::to_string));
    let mut commits = Vec::new();
    for t in tips {
        if let Some(c) = commit_of(&git, &t)? {
            if !commits.contains(&c) {
                commits.push(c);
            }
        }
    }
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    // The tips themselves, of those not reachable from a keeper: keeping
    // them keeps everything they reach.
    let lost: HashSet<String> = rev_list(&git, &commits, &keeper_args(None))?
        .into_iter()
        .collect();
    Ok(commits.into_iter().filter(|c| lost.contains(c)).collect())
}
