//! The nested repositories and submodules of a restore: each one whose
//! commits the archive kept is made again at the path it recorded, with
//! its branches, other refs, stash and reflog-only commits (the module
//! guarantees of [`super`] hold here too).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{step, RestoreError};
use crate::git::archive::list::{kept_kind, KeptKind};
use crate::git::archive::records::{NestedRecord, Records};
use crate::git::cli::{Git, GitCliError};
use crate::git::paths::{join_rel, rel_str};

/// One nested repository or submodule of a restore.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NestedRestored {
    /// Its path in the worktree; `None` when the archive does not record
    /// it (made before paths were recorded).
    pub path: Option<String>,
    /// `<ref>-nested/<n>`, where its kept commits are.
    pub kept: String,
    /// Its repository was made again, with its branches.
    pub placed: bool,
    /// The branches it has again.
    pub branches: Vec<String>,
    /// Its other refs it has again (`refs/tags/v1`, `refs/notes/commits`,
    /// …), `refs/stash` aside.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    /// How many stash entries it has again, in their order.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub stash: usize,
    /// How many commits only a reflog reached it has again, in HEAD's
    /// reflog.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub reflog_only: usize,
    /// `refs/heads/<branch>` or `detached at <commit>` when placed; else
    /// why not.
    pub head: String,
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

impl NestedRestored {
    /// One line for a person.
    pub fn describe(&self) -> String {
        let name = self.path.as_deref().unwrap_or(&self.kept);
        if self.placed {
            let plural = |n: usize, one: &str, many: &str| {
                format!("{n} {}", if n == 1 { one } else { many })
            };
            let mut more = String::new();
            for (n, one, many) in [
                (self.refs.len(), "other ref", "other refs"),
                (self.stash, "stash entry", "stash entries"),
                (
                    self.reflog_only,
                    "reflog-only commit",
                    "reflog-only commits",
                ),
            ] {
                if n > 0 {
                    more.push_str(&format!(", {}", plural(n, one, many)));
                }
            }
            format!(
                "nested {name}: restored with {}{more}, HEAD {}",
                plural(self.branches.len(), "branch", "branches"),
                match self.head.strip_prefix("refs/heads/") {
                    Some(b) => format!("on {b}"),
                    None => self.head.clone(),
                }
            )
        } else {
            format!(
                "nested {name}: not placed ({}); its commits stay under {}",
                self.head, self.kept
            )
        }
    }
}

/// The kept refs of one nested repository in the main repository
/// ([`super::archive`]'s `nested` layout).
#[derive(Default)]
pub(super) struct KeptRefs {
    /// `<ref>-nested/<n>`'s commit: the nested repository's HEAD.
    pub(super) head: Option<String>,
    /// Branch name → commit, from `<ref>-nested/<n>-heads/<branch>`.
    pub(super) branches: Vec<(String, String)>,
    /// `refs/<rest>` → object, from `<ref>-nested/<n>-refs/<rest>`
    /// (`refs/stash` aside: its entries are `stash`).
    pub(super) refs: Vec<(String, String)>,
    /// stash@{k} by `k`, from `<ref>-nested/<n>-stash/<k>`.
    pub(super) stash: std::collections::BTreeMap<usize, String>,
    /// Reflog-only commits by `k` (0 the newest), from
    /// `<ref>-nested/<n>-logs/<k>`.
    pub(super) logs: std::collections::BTreeMap<usize, String>,
}

/// Every `<reference>-nested/<n>…` ref of the main repository `git` runs
/// in, by `n`.
fn kept_refs(
    git: &Git,
    reference: &str,
) -> Result<std::collections::BTreeMap<usize, KeptRefs>, GitCliError> {
    let prefix = format!("{reference}-nested/");
    let out = git
        .run(&["for-each-ref", "--format=%(objectname) %(refname)", &prefix])?
        .stdout_str();
    let mut kept: std::collections::BTreeMap<usize, KeptRefs> = Default::default();
    for line in out.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let Some((n, kind)) = name.strip_prefix(&prefix).and_then(kept_kind) else {
            continue;
        };
        let k = kept.entry(n).or_default();
        let id = id.to_string();
        match kind {
            KeptKind::Head => k.head = Some(id),
            KeptKind::Branch(b) => k.branches.push((b.to_string(), id)),
            KeptKind::Ref("stash") => {}
            KeptKind::Ref(r) => k.refs.push((format!("refs/{r}"), id)),
            KeptKind::Stash(i) => {
                k.stash.insert(i, id);
            }
            KeptKind::Log(i) => {
                k.logs.insert(i, id);
            }
        }
    }
    Ok(kept)
}

/// Makes each nested repository the archive recorded again, from its kept
/// refs (see [`restore_nested_one`]); reports those kept refs whose path
/// is not recorded, and records whose refs are gone, as not placed.
pub(super) fn restore_nested(
    main: &Git,
    wt: &Git,
    to: &Path,
    reference: &str,
    records: &Records,
) -> Result<Vec<NestedRestored>, RestoreError> {
    let mut kept = kept_refs(main, reference)?;
    let mut recorded = records.nested.clone();
    recorded.sort_by(|a, b| a.path.cmp(&b.path));
    let url = main
        .run(&["rev-parse", "--path-format=absolute", "--git-common-dir"])?
        .stdout_str()
        .trim()
        .to_string();
    let format = main
        .run(&["rev-parse", "--show-object-format"])?
        .stdout_str()
        .trim()
        .to_string();
    let mut out = Vec::new();
    for r in &recorded {
        let refname = format!("{reference}-nested/{}", r.n);
        let mut done = NestedRestored {
            path: Some(rel_str(&r.path)),
            kept: refname.clone(),
            placed: false,
            branches: Vec::new(),
            refs: Vec::new(),
            stash: 0,
            reflog_only: 0,
            head: String::new(),
        };
        match kept.remove(&r.n) {
            None => done.head = "its kept refs are gone from the main repository".into(),
            Some(k) => match restore_nested_one(wt, to, &url, &format, &refname, r, &k) {
                Ok((branches, head)) => {
                    done.placed = true;
                    done.branches = branches;
                    done.refs = k.refs.iter().map(|(n, _)| n.clone()).collect();
                    done.refs.sort();
                    done.stash = k.stash.len();
                    done.reflog_only = k.logs.len();
                    done.head = head;
                }
                Err(why) => done.head = why.to_string(),
            },
        }
        tracing::info!("{}", done.describe());
        out.push(done);
    }
    for n in kept.into_keys() {
        let done = NestedRestored {
            path: None,
            kept: format!("{reference}-nested/{n}"),
            placed: false,
            branches: Vec::new(),
            refs: Vec::new(),
            stash: 0,
            reflog_only: 0,
            head: "its path is not recorded: the archive was made before paths were".into(),
        };
        tracing::warn!("{}", done.describe());
        out.push(done);
    }
    Ok(out)
}

/// The directory a recorded nested path names below `to`, when it is a
/// plain directory reached through plain directories only: a symlink on
/// the way could lead out of the worktree.
fn nested_dir(to: &Path, rel: &[u8]) -> Result<PathBuf, RestoreError> {
    let path = Path::new(OsStr::from_bytes(rel));
    let mut at = to.to_path_buf();
    let mut any = false;
    for c in path.components() {
        let std::path::Component::Normal(c) = c else {
            return Err(RestoreError::NestedNotPlain);
        };
        at.push(c);
        any = true;
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(RestoreError::NestedNotADirectory { path: at }),
            Err(source) => return Err(RestoreError::NestedMissing { path: at, source }),
        }
    }
    if !any {
        return Err(RestoreError::NestedEmpty);
    }
    Ok(join_rel(to, rel))
}

/// Makes the repository of one nested repository again at its path: `git
/// init` there, its kept branches fetched from the main repository at
/// `url`, HEAD on the one branch at the kept HEAD (detached at it when
/// none or several are), and its index set to HEAD's tree. Its working
/// files are the ones the restore put back and are not touched; a clean
/// submodule's, which the archive did not hold, are checked out from
/// HEAD into its empty directory. Returns its branches and HEAD.
pub(super) fn restore_nested_one(
    wt: &Git,
    to: &Path,
    url: &str,
    format: &str,
    refname: &str,
    r: &NestedRecord,
    k: &KeptRefs,
) -> Result<(Vec<String>, String), RestoreError> {
    let dir = nested_dir(to, &r.path)?;
    if fs::symlink_metadata(dir.join(".git")).is_ok() {
        return Err(RestoreError::NestedHasGit { path: dir });
    }
    let empty = fs::read_dir(&dir)
        .map_err(|source| RestoreError::ReadDir {
            path: dir.clone(),
            source,
        })?
        .next()
        .is_none();
    let dir_s = dir.to_str().ok_or_else(|| RestoreError::NotUtf8 {
        what: "nested",
        path: dir.clone(),
    })?;
    wt.at(to)
        .run(&[
            "init",
            "-q",
            &format!("--object-format={format}"),
            "--",
            dir_s,
        ])
        .map_err(step("git init"))?;
    let g = wt.at(&dir);
    let made = fill_nested(&g, url, refname, r, k, empty);
    match made {
        Ok(head) => {
            let mut branches: Vec<String> = k.branches.iter().map(|(b, _)| b.clone()).collect();
            branches.sort();
            Ok((branches, head))
        }
        Err(e) => {
            // Only what `git init` just made goes: a half-made repository
            // would pass for a restored one.
            // It is removed as the user git made it as ([`Git::run_as`]),
            // so nothing planted under it can lead the removal further.
            let dot_git = dir.join(".git");
            let _ = crate::creds::with_fs_creds(g.run_as(), || fs::remove_dir_all(&dot_git));
            Err(e)
        }
    }
}

/// Fills the repository just made at a nested path: its kept branches
/// and HEAD from the main repository at `url`, then its index; a clean
/// submodule's files, which the archive did not hold, into its empty
/// directory. Returns what HEAD is.
fn fill_nested(
    g: &Git,
    url: &str,
    refname: &str,
    r: &NestedRecord,
    k: &KeptRefs,
    empty: bool,
) -> Result<String, RestoreError> {
    // Every kept ref to its place, and the commits no ref of its own
    // will name (HEAD, stash entries, reflog-only commits) for their
    // objects only; on stdin, as there may be many.
    let mut specs: Vec<String> = Vec::new();
    for (b, _) in &k.branches {
        specs.push(format!("+{refname}-heads/{b}:refs/heads/{b}"));
    }
    for (r, _) in &k.refs {
        let rest = r.strip_prefix("refs/").unwrap_or(r);
        specs.push(format!("+{refname}-refs/{rest}:{r}"));
    }
    if k.head.is_some() {
        specs.push(refname.to_string());
    }
    specs.extend(k.stash.keys().map(|i| format!("{refname}-stash/{i}")));
    specs.extend(k.logs.keys().map(|i| format!("{refname}-logs/{i}")));
    let mut input = specs.join("\n");
    input.push('\n');
    g.run_with_input(
        &[
            "fetch",
            "-q",
            "--no-tags",
            "--update-head-ok",
            "--no-write-fetch-head",
            "--stdin",
            url,
        ],
        input.as_bytes(),
    )
    .map_err(step("fetching its kept commits"))?;
    put_back_logs(g, k)?;
    let head = match &k.head {
        None => "unborn (the kept repository had no HEAD commit)".to_string(),
        Some(h) => {
            let on: Vec<&(String, String)> = k.branches.iter().filter(|(_, id)| id == h).collect();
            if let [(b, _)] = on.as_slice() {
                let full = format!("refs/heads/{b}");
                g.run(&["symbolic-ref", "HEAD", &full])?;
                full
            } else {
                g.run(&["update-ref", "--no-deref", "HEAD", h])?;
                format!(
                    "detached at {h} ({} branches point there)",
                    if on.is_empty() { "no" } else { "several" }
                )
            }
        }
    };
    if k.head.is_some() {
        g.run(&["read-tree", "HEAD"])
            .map_err(step("setting its index"))?;
        if r.clean && empty {
            g.run(&["checkout-index", "--all"])
                .map_err(step("checking out its files"))?;
        }
        let _ = g.run_status(&["update-index", "-q", "--refresh"], &[]);
    }
    Ok(head)
}

/// The stash entries, oldest first so that stash@{k} is what it was, and
/// the reflog-only commits into HEAD's reflog, oldest first, each with a
/// message saying where it came from (HEAD is set after).
fn put_back_logs(g: &Git, k: &KeptRefs) -> Result<(), RestoreError> {
    for id in k.logs.values().rev() {
        g.run(&[
            "update-ref",
            "--no-deref",
            "-m",
            "boo-reconciler: a commit only a reflog reached, restored",
            "HEAD",
            id,
        ])
        .map_err(step("restoring its reflog"))?;
    }
    for id in k.stash.values().rev() {
        let subject = g
            .run(&["log", "-1", "--format=%s", id])
            .map_err(step("reading a stash entry"))?
            .stdout_str();
        g.run(&[
            "update-ref",
            "--create-reflog",
            "-m",
            subject.trim(),
            "refs/stash",
            id,
        ])
        .map_err(step("restoring its stash"))?;
    }
    Ok(())
}
