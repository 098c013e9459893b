//! The operator's side of `--force`: list the archives a host's forced
//! removals left (`boo-reconciler archives`) and bring one back
//! (`boo-reconciler restore`). Listing reads only; a restore writes a new
//! worktree and, for a live session, its row — never a ref, never over
//! anything.
//!
//! # Guarantees of a restore
//!
//! Each refusal names the target and what to do, and comes before
//! anything is written (no directory, no row):
//!
//! 1. **Not into the trash** (however spelled): the reclaimer deletes
//!    what is there. Test (`tests/archives.rs`):
//!    `refused_targets_are_named_and_nothing_is_written`.
//! 2. **Not inside a git directory** (a `.git`, a bare repository, an
//!    admin entry, `.git/modules`; [`crate::git::restore`]). Test: as 1.
//! 3. **Not a path a worktree row names**, live or not, compared where
//!    the kernel resolves both: the controller would take the restored
//!    worktree for that row's. Test: as 1.
//! 4. **A row never makes a later pass fail.** The row written for a live
//!    session names a directory directly under the root (spelled with
//!    the canonical root); a target elsewhere is refused for a live
//!    session, naming `worktrees.root` and the fix, since the controller
//!    refuses (exit 1, every pass) a row naming anything else. Test:
//!    `a_live_sessions_restore_outside_the_root_is_refused_and_later_passes_pass`.
//! 5. **Two restores of one worktree in one second get two rows.** The
//!    new row's id `<worktree id>-restored-<secs>` takes the first free
//!    `-<n>` suffix (no row of any host has it, and, restoring to the
//!    default `<root>/<id>`, no directory is there). Test:
//!    `two_restores_in_one_second_get_a_row_each`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::Config;
use crate::git::archive::list::{archives, Archive};
use crate::git::cli::{Git, DEFAULT_TIMEOUT};
use crate::git::restore::{self, Restored};
use crate::store::archived::{ArchiveAudit, WorktreeRow};
use crate::store::Store;

/// One archive, with the row it was taken from and what recorded it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub archive: Archive,
    pub repository: String,
    pub session_id: Option<String>,
    pub audit: Vec<ArchiveAudit>,
}

/// Which archives to list.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub worktree: Option<String>,
    pub session: Option<String>,
}

/// Every archive in every main repository a worktree row of this host
/// names (removed rows too), newest first.
pub async fn list(store: &Store, config: &Config, filter: &Filter) -> anyhow::Result<Vec<Listed>> {
    Ok(list_with_rows(store, config, filter).await?.0)
}

/// [`list`], and the host's worktree rows it was read with.
async fn list_with_rows(
    store: &Store,
    config: &Config,
    filter: &Filter,
) -> anyhow::Result<(Vec<Listed>, Vec<WorktreeRow>)> {
    let host = &config.host.id;
    let rows = store.host_worktree_history(host).await?;
    let mut repos: Vec<String> = rows.iter().map(|r| r.repo_path.clone()).collect();
    repos.sort();
    repos.dedup();
    let precious = config.precious_globs();
    let mut out = Vec::new();
    for repo in repos {
        let found = {
            let (repo, precious) = (repo.clone(), precious.clone());
            tokio::task::spawn_blocking(move || {
                let git = Git::for_dir(Path::new(&repo), DEFAULT_TIMEOUT)?;
                archives(&git, &precious)
            })
            .await?
        };
        let archives = match found {
            Ok(a) => a,
            // A repository that is gone, or not readable, has no archive to
            // list; say so and go on with the others.
            Err(e) => {
                tracing::warn!(repository = %repo, "archives not listed: {e}");
                continue;
            }
        };
        for a in archives {
            let session_id = rows
                .iter()
                .find(|r| r.repo_path == repo && names(r, &a.worktree_id))
                .map(|r| r.session_id.clone());
            if filter
                .worktree
                .as_ref()
                .is_some_and(|w| *w != a.worktree_id)
                || filter.session.is_some() && filter.session != session_id
            {
                continue;
            }
            let audit = store.audit_naming(host, &a.reference).await?;
            out.push(Listed {
                archive: a,
                repository: repo.clone(),
                session_id,
                audit,
            });
        }
    }
    out.sort_by(|a, b| Archive::newest_first(&a.archive, &b.archive));
    Ok((out, rows))
}

/// Whether `row` is the worktree an archive names `id`: archives are named
/// after the worktree's directory under the root, which the layout makes
/// its row's id (`<root>/<worktree id>`); a row whose directory is named
/// otherwise is matched by that name.
fn names(row: &WorktreeRow, id: &str) -> bool {
    row.id == id || Path::new(&row.path).file_name().is_some_and(|n| n == id)
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub reference: String,
    pub repository: String,
    #[serde(flatten)]
    pub restored: Restored,
    /// The new row's id, when the session is live; `None` otherwise.
    pub row: Option<String>,
    pub note: String,
}

/// Restores `what` (an archive ref, or a worktree id: its newest archive)
/// to `to`, by default a new directory under the root named after the
/// worktree id.
pub async fn restore(
    store: &Store,
    config: &Config,
    what: &str,
    to: Option<&Path>,
) -> anyhow::Result<RestoreReport> {
    restore_at(store, config, what, to, SystemTime::now()).await
}

/// [`restore`] at `now`, which names the new row (`<id>-restored-<secs>`).
/// Every refusal comes before anything is written.
pub async fn restore_at(
    store: &Store,
    config: &Config,
    what: &str,
    to: Option<&Path>,
    now: SystemTime,
) -> anyhow::Result<RestoreReport> {
    // Absolute: it is what a row records and what the root is compared with.
    let target = to
        .map(|p| {
            std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
        })
        .transpose()?;
    if let Some(target) = &target {
        refuse_trash(config, target)?;
    }
    let (all, rows) = list_with_rows(store, config, &Filter::default()).await?;
    let chosen = chosen(all, what, &config.host.id)?;
    let live = live_session(store, &chosen).await?;
    let base = format!(
        "{}-restored-{}",
        chosen.archive.worktree_id,
        crate::git::archive::unix_secs(now)
    );
    let root = &config.worktrees.root;
    let new_id = free_id(store, &base, target.is_none().then_some(root.as_path())).await?;
    let to = target.unwrap_or_else(|| root.join(&new_id));
    refuse_claimed(&to, &rows, root)?;
    let row_path = match &live {
        Some(session) => Some(row_path(config, &to, session, &chosen.archive.worktree_id)?),
        None => None,
    };
    let restored = {
        let (repo, reference, to) = (
            chosen.repository.clone(),
            chosen.archive.reference.clone(),
            to.clone(),
        );
        tokio::task::spawn_blocking(move || {
            restore::restore(Path::new(&repo), &reference, &to, DEFAULT_TIMEOUT)
        })
        .await?
        // Its text only: it already holds its sources' text, which `{:#}`
        // would print again as a chain.
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("restoring {}", chosen.archive.reference))?
    };
    let (row, note) = match (live, row_path) {
        (Some(session), Some(path)) => {
            let note = format!("session {session} is live: row {new_id} added for it");
            let id = write_row(
                store, config, &chosen, rows, new_id, session, path, &restored,
            )
            .await?;
            (Some(id), note)
        }
        _ => (None, no_row_note(config, &chosen, &to)),
    };
    Ok(RestoreReport {
        reference: chosen.archive.reference,
        repository: chosen.repository,
        restored,
        row,
        note,
    })
}

/// The reclaimer deletes what is retired in the trash: a worktree restored
/// there would be work put where nothing is kept.
fn refuse_trash(config: &Config, target: &Path) -> anyhow::Result<()> {
    let trash = config.worktrees.root.join(crate::root::TRASH_DIR);
    if crate::root::in_trash(&config.worktrees.root, target) {
        anyhow::bail!(
            "the target {} is inside the controller's trash {}, whose entries are \
             deleted; restore elsewhere (--to a path outside {})",
            target.display(),
            trash.display(),
            trash.display()
        );
    }
    Ok(())
}

/// The archived worktree's session, when it is live (then the restored
/// worktree gets a row of it).
async fn live_session(store: &Store, chosen: &Listed) -> anyhow::Result<Option<String>> {
    let Some(s) = &chosen.session_id else {
        return Ok(None);
    };
    let live = store
        .session_liveness(s, SystemTime::now(), Duration::ZERO)
        .await?
        .live;
    Ok(live.then(|| s.clone()))
}

/// `base`, or `base-1`, `base-2`, … : the first id no worktree row has
/// (of any host), and, when the restore goes to `<root>/<id>`, whose
/// directory does not exist. Two restores of one worktree in one second
/// get two ids.
async fn free_id(store: &Store, base: &str, root: Option<&Path>) -> anyhow::Result<String> {
    for n in 0..1000u32 {
        let id = if n == 0 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        if store.worktree_row_exists(&id).await? {
            continue;
        }
        if root.is_some_and(|r| std::fs::symlink_metadata(r.join(&id)).is_ok()) {
            continue;
        }
        return Ok(id);
    }
    anyhow::bail!("no free worktree id of the form {base}-<n>")
}

/// A row's path as a path: relative ones are taken from the root, as
/// the controller takes them.
fn row_dir(row: &WorktreeRow, root: &Path) -> PathBuf {
    let p = Path::new(&row.path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Refuses a target that a worktree row of this host names (any row,
/// removed ones too), compared where the kernel resolves both: the
/// controller would take the restored directory for that row's worktree.
fn refuse_claimed(to: &Path, rows: &[WorktreeRow], root: &Path) -> anyhow::Result<()> {
    let spellings = |p: &Path| {
        [
            crate::root::normalize_lexically(p),
            crate::root::resolve_existing(p),
        ]
    };
    let target = spellings(to);
    for row in rows {
        let named = spellings(&row_dir(row, root));
        if named.iter().any(|n| target.contains(n)) {
            anyhow::bail!(
                "the target {} is the directory worktree row {} (session {}, {}) names \
                 (path = {}): the controller would take the restored worktree for that \
                 row's; restore elsewhere (another --to)",
                to.display(),
                row.id,
                row.session_id,
                row.state,
                row.path
            );
        }
    }
    Ok(())
}

/// The path the row of a live session's restored worktree records: the
/// controller manages only directories directly under the root, and
/// refuses (an error, every pass) a row naming anything else; so a
/// target elsewhere is refused here, before anything is written.
fn row_path(config: &Config, to: &Path, session: &str, id: &str) -> anyhow::Result<String> {
    let root = &config.worktrees.root;
    let checked = crate::root::WorktreeRoot::open(root)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("checking the worktree root {}", root.display()))?
        // Where the kernel puts it: a row names that place, however the
        // operator spelled it.
        .check(&crate::root::resolve_existing(to));
    match checked {
        crate::model::PathCheck::Inside { path, .. } => Ok(path.display().to_string()),
        crate::model::PathCheck::Refused { why } => anyhow::bail!(
            "session {session} is live, so the restored worktree would get a row of it, and \
             the controller manages only a directory directly under the worktree root \
             (worktrees.root = {}); the target {} is not one ({why}). Restore without --to \
             (to {}/{id}-restored-<unix seconds>), or with --to {}/<name>",
            root.display(),
            to.display(),
            root.display(),
            root.display()
        ),
    }
}

/// Why a restore added no row, and what becomes of the directory.
fn no_row_note(config: &Config, chosen: &Listed, to: &Path) -> String {
    let why = match &chosen.session_id {
        Some(s) => format!("session {s} is not live"),
        None => "no row names the archived worktree".into(),
    };
    let orphan = if to.starts_with(&config.worktrees.root) {
        "; under the root, the controller treats the directory as an orphan and \
         removes it once clean and older than worktrees.orphan_min_age — restore with \
         --to outside the root to keep it out of reach"
    } else {
        ""
    };
    format!("no row added: {why}{orphan}")
}

/// The archive `what` names: a ref by its name, a worktree id by its
/// newest archive (`all` is newest first).
fn chosen(all: Vec<Listed>, what: &str, host: &str) -> anyhow::Result<Listed> {
    let by_ref = what.starts_with("refs/");
    all.into_iter()
        .find(|l| {
            if by_ref {
                l.archive.reference == what
            } else {
                l.archive.worktree_id == what
            }
        })
        .with_context(|| {
            format!(
                "no archive {what} in any repository of host {host} (list them with \
                 `boo-reconciler archives`)"
            )
        })
}

/// Writes the row of the worktree restored at `path` for the live
/// `session`; returns its id.
#[allow(clippy::too_many_arguments)]
async fn write_row(
    store: &Store,
    config: &Config,
    chosen: &Listed,
    rows: Vec<WorktreeRow>,
    id: String,
    session: String,
    path: String,
    restored: &Restored,
) -> anyhow::Result<String> {
    let old = rows
        .into_iter()
        .find(|r| r.repo_path == chosen.repository && names(r, &chosen.archive.worktree_id));
    let row = WorktreeRow {
        id,
        session_id: session,
        repo_path: chosen.repository.clone(),
        path,
        branch: restored
            .head
            .strip_prefix("refs/heads/")
            .map(str::to_string),
        base_ref: old.and_then(|o| o.base_ref),
        state: "active".into(),
    };
    store
        .insert_worktree_row(&config.host.id, &row)
        .await
        .with_context(|| {
            format!(
                "{} is restored, but its row {} could not be written: the controller takes \
                 it for an orphan; add the row by hand, or move the directory out of the root",
                restored.path.display(),
                row.id
            )
        })?;
    Ok(row.id)
}

/// What a restore did, for a person: where, HEAD, each nested repository,
/// and the row.
pub fn render_restore(r: &RestoreReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restored {} to {}",
        r.reference,
        r.restored.path.display()
    );
    let _ = writeln!(
        s,
        "HEAD: {}{}",
        r.restored.head,
        if r.restored.unborn {
            " (unborn, as archived)"
        } else {
            ""
        }
    );
    for n in &r.restored.nested {
        let _ = writeln!(s, "{}", n.describe());
    }
    for m in &r.restored.modes_not_set {
        let _ = writeln!(
            s,
            "permission bits not set again (as git wrote them; set them by hand): {m}"
        );
    }
    let _ = writeln!(s, "{}", r.note);
    s
}

/// The archives as a table.
pub fn render(list: &[Listed]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if list.is_empty() {
        return "no archives\n".into();
    }
    let _ = writeln!(
        s,
        "{:<24} {:<12} {:<20} {:<24} {:>6} {:>8} {:>9} {:>8}  REFERENCE",
        "WORKTREE", "SESSION", "TAKEN", "BRANCH", "STAGED", "UNSTAGED", "UNTRACKED", "PRECIOUS"
    );
    for l in list {
        let a = &l.archive;
        let taken = humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(a.unix_secs),
        );
        let _ = writeln!(
            s,
            "{:<24} {:<12} {:<20} {:<24} {:>6} {:>8} {:>9} {:>8}  {}{}",
            a.worktree_id,
            l.session_id.as_deref().unwrap_or("-"),
            taken.to_string(),
            a.branch.as_deref().unwrap_or("(detached)"),
            a.staged,
            a.unstaged,
            a.untracked,
            a.precious,
            a.reference,
            match a.nested_repositories() {
                0 => String::new(),
                n => format!(" (+{n} nested)"),
            }
        );
    }
    s
}
