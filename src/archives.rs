//! The operator's side of `--force`: list the archives a host's forced
//! removals left (`boo-reconciler archives`) and bring one back
//! (`boo-reconciler restore`). Listing reads only; a restore writes a new
//! worktree and, for a live session, its row — never a ref, never over
//! anything.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::Config;
use crate::git::cli::{Git, DEFAULT_TIMEOUT};
use crate::git::restore::{self, Archive, Restored};
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
                let git =
                    Git::for_dir(Path::new(&repo), DEFAULT_TIMEOUT).map_err(|e| e.to_string())?;
                restore::archives(&git, &precious)
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
    if let Some(p) = to {
        let target = std::path::absolute(p)
            .with_context(|| format!("cannot make {} absolute", p.display()))?;
        // The reclaimer deletes what is retired there: a worktree restored
        // into the trash would be work put where nothing is kept.
        if crate::root::in_trash(&config.worktrees.root, &target) {
            anyhow::bail!(
                "the target {} is inside the controller's trash {}, whose entries are \
                 deleted; restore elsewhere (--to a path outside {})",
                target.display(),
                config.worktrees.root.join(crate::root::TRASH_DIR).display(),
                config.worktrees.root.join(crate::root::TRASH_DIR).display()
            );
        }
    }
    let (all, rows) = list_with_rows(store, config, &Filter::default()).await?;
    let chosen = chosen(all, what, &config.host.id)?;
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let new_id = format!("{}-restored-{secs}", chosen.archive.worktree_id);
    // Absolute: it is what a row records and what the root is compared with.
    let to: PathBuf = match to {
        Some(p) => std::path::absolute(p)
            .with_context(|| format!("cannot make {} absolute", p.display()))?,
        None => config.worktrees.root.join(&new_id),
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
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("restoring {}", chosen.archive.reference))?
    };
    let (row, note) = row_for(store, config, &chosen, rows, new_id, &to, &restored).await?;
    Ok(RestoreReport {
        reference: chosen.archive.reference,
        repository: chosen.repository,
        restored,
        row,
        note,
    })
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

/// The row of the restored worktree, when its session is live (then the
/// controller keeps it as that session's); otherwise none, and why.
async fn row_for(
    store: &Store,
    config: &Config,
    chosen: &Listed,
    rows: Vec<WorktreeRow>,
    new_id: String,
    to: &Path,
    restored: &Restored,
) -> anyhow::Result<(Option<String>, String)> {
    let live = match &chosen.session_id {
        Some(s) => {
            store
                .session_liveness(s, SystemTime::now(), Duration::ZERO)
                .await?
                .live
        }
        None => false,
    };
    let session = match (&chosen.session_id, live) {
        (Some(session), true) => session,
        (session, _) => {
            let why = match session {
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
            return Ok((None, format!("no row added: {why}{orphan}")));
        }
    };
    let old = rows
        .into_iter()
        .find(|r| r.repo_path == chosen.repository && names(r, &chosen.archive.worktree_id));
    let row = WorktreeRow {
        id: new_id,
        session_id: session.clone(),
        repo_path: chosen.repository.clone(),
        path: to.display().to_string(),
        branch: restored
            .head
            .strip_prefix("refs/heads/")
            .map(str::to_string),
        base_ref: old.and_then(|o| o.base_ref),
        state: "active".into(),
    };
    store.insert_worktree_row(&config.host.id, &row).await?;
    let note = format!("session {session} is live: row {} added for it", row.id);
    Ok((Some(row.id), note))
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
            if a.nested.is_empty() {
                String::new()
            } else {
                format!(" (+{} nested)", a.nested.len())
            }
        );
    }
    s
}
