//! Reading archives back with the git CLI: what one archive ref is made
//! of ([`parts`]: the commits its parents name, the branch its subject
//! names, what its message body records), every archive of a main
//! repository as `boo-reconciler archives` lists it ([`archives`]), and
//! what the names of the refs an archive is stored under say.
//!
//! The restore ([`crate::git::restore`]) reads an archive's parts, and
//! the names of its nested repositories' kept refs, with what is here;
//! the check of a removal ([`crate::git::verify`]) reads its records. The
//! reading sits below both so that they build on it, and nothing here
//! depends on the restore.

use super::super::cli::{Git, GitCliError};
use super::super::scan::is_precious;
use super::records::{self, Records};

/// Why an archive could not be read back: the reading the restore, the
/// check of a removal and the listing share. Typed so that a caller can
/// tell a ref that is no archive from git failing, and git's failure
/// keeps its command, exit status and stderr as its source.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveReadError {
    #[error(transparent)]
    Git(#[from] GitCliError),
    #[error("{reference} is not an archive: a commit with two or three parents is")]
    NotAnArchive { reference: String },
}

/// The parts of an archive commit, as its parents name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parts {
    pub worktree: String,
    pub head: String,
    pub index: String,
    pub untracked: Option<String>,
    /// The branch HEAD was on when archived (`None`: detached, or the
    /// branch had been deleted).
    pub branch: Option<String>,
    /// What the archive recorded for its restore (none for an archive
    /// made before records were written).
    pub records: Records,
}

/// Reads the parts of the archive `reference` in the main repository
/// `git` runs in.
pub fn parts(git: &Git, reference: &str) -> Result<Parts, ArchiveReadError> {
    let line = git
        .run(&[
            "rev-list",
            "--parents",
            "-n1",
            &format!("{reference}^{{commit}}"),
            "--",
        ])?
        .stdout_str();
    let ids: Vec<&str> = line.split_whitespace().collect();
    if !(3..=4).contains(&ids.len()) {
        return Err(ArchiveReadError::NotAnArchive {
            reference: reference.to_string(),
        });
    }
    // Raw, as written: no re-encoding of the message on the way.
    let raw = git.run(&["cat-file", "commit", ids[0]])?.stdout;
    let message = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| &raw[i + 2..])
        .unwrap_or_default();
    let subject =
        String::from_utf8_lossy(message.split(|b| *b == b'\n').next().unwrap_or_default())
            .into_owned();
    Ok(Parts {
        worktree: ids[0].to_string(),
        head: ids[1].to_string(),
        index: ids[2].to_string(),
        untracked: ids.get(3).map(|s| s.to_string()),
        branch: branch_of(subject.trim()),
        records: records::parse(message),
    })
}

/// The branch an archive's subject (`WIP on <label>: <id> <summary>`)
/// names; a ref name cannot hold `:`, so the label ends at the first.
fn branch_of(subject: &str) -> Option<String> {
    let label = subject.strip_prefix("WIP on ")?.split(": ").next()?;
    (!label.starts_with('(') && !label.ends_with(" (deleted)") && !label.is_empty())
        .then(|| label.to_string())
}

/// One archive as `boo-reconciler archives` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archive {
    pub reference: String,
    pub worktree_id: String,
    /// When it was taken (the ref's last component).
    pub unix_secs: u64,
    /// Which of the archives taken in that second (`<secs>-<n>`: the
    /// name is never reused, so a second archive in the same second gets
    /// the next number).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u32,
    /// HEAD's commit when archived.
    pub head: String,
    pub branch: Option<String>,
    pub staged: usize,
    pub unstaged: usize,
    pub untracked: usize,
    pub precious: usize,
    /// The nested repositories' and submodules' kept refs.
    pub nested: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Archive {
    /// How many nested repositories and submodules it keeps (each has
    /// several refs in [`Archive::nested`]).
    pub fn nested_repositories(&self) -> usize {
        let prefix = format!("{}-nested/", self.reference);
        let ns: std::collections::BTreeSet<usize> = self
            .nested
            .iter()
            .filter_map(|r| r.strip_prefix(&prefix).and_then(kept_kind))
            .map(|(n, _)| n)
            .collect();
        ns.len()
    }

    /// Newest first; ties (never expected) by name.
    pub fn newest_first(a: &Archive, b: &Archive) -> std::cmp::Ordering {
        (b.unix_secs, b.seq)
            .cmp(&(a.unix_secs, a.seq))
            .then(a.reference.cmp(&b.reference))
    }
}

/// Every archive in the main repository `git` runs in, newest first.
pub fn archives(git: &Git, precious: &globset::GlobSet) -> Result<Vec<Archive>, ArchiveReadError> {
    let refs = git
        .run(&["for-each-ref", "--format=%(refname)", "refs/boo/archive/"])?
        .stdout_str();
    let names: Vec<&str> = refs.lines().collect();
    let mut out = Vec::new();
    for name in &names {
        let Some((id, secs, seq)) = archive_name(name) else {
            continue;
        };
        // A stale admin entry's HEAD is kept here too, as a plain commit:
        // history, nothing to restore.
        let Ok(p) = parts(git, name) else {
            tracing::debug!(reference = %name, "not a stash-shaped archive: not listed");
            continue;
        };
        let changed = |a: &str, b: &str| -> Result<usize, GitCliError> {
            Ok(git
                .run(&["diff-tree", "-r", "--name-only", "-z", "--no-renames", a, b])?
                .stdout
                .split(|b| *b == 0)
                .filter(|f| !f.is_empty())
                .count())
        };
        let (mut untracked, mut kept) = (0, 0);
        if let Some(u) = &p.untracked {
            let files = git.run(&["ls-tree", "-r", "-z", "--name-only", u])?.stdout;
            for f in files.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                if is_precious(precious, f) {
                    kept += 1;
                } else {
                    untracked += 1;
                }
            }
        }
        let prefix = format!("{name}-nested/");
        out.push(Archive {
            reference: name.to_string(),
            worktree_id: id,
            unix_secs: secs,
            seq,
            staged: changed(&p.head, &p.index)?,
            unstaged: changed(&p.index, &p.worktree)?,
            untracked,
            precious: kept,
            nested: names
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .map(|n| n.to_string())
                .collect(),
            head: p.head,
            // An unborn HEAD's branch is the one it was taken from too.
            branch: p.branch.or_else(|| {
                p.records
                    .unborn
                    .as_deref()
                    .map(|b| b.strip_prefix("refs/heads/").unwrap_or(b).to_string())
            }),
        });
    }
    out.sort_by(Archive::newest_first);
    Ok(out)
}

/// `refs/boo/archive/<id>/<secs>` → `(id, secs, 0)`, and
/// `…/<secs>-<n>` (a later archive of the same second) → `(id, secs, n)`;
/// the nested repositories' refs below them are not archives of their own.
fn archive_name(name: &str) -> Option<(String, u64, u32)> {
    let rest = name.strip_prefix("refs/boo/archive/")?;
    let (id, last) = rest.split_once('/')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (secs, seq) = match last.split_once('-') {
        None => (last, "0"),
        Some((secs, seq)) if digits(seq) && seq != "0" && !seq.starts_with('0') => (secs, seq),
        Some(_) => return None,
    };
    if !digits(secs) || id.is_empty() {
        return None;
    }
    Some((id.to_string(), secs.parse().ok()?, seq.parse().ok()?))
}

/// One kept ref's name after `<ref>-nested/`: `n`, and what it keeps.
pub(crate) fn kept_kind(rest: &str) -> Option<(usize, KeptKind<'_>)> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let n = rest[..digits].parse::<usize>().ok()?;
    let tail = &rest[digits..];
    let index = |s: &str| s.parse::<usize>().ok();
    Some((
        n,
        if tail.is_empty() {
            KeptKind::Head
        } else if let Some(b) = tail.strip_prefix("-heads/") {
            KeptKind::Branch(b)
        } else if let Some(r) = tail.strip_prefix("-refs/") {
            KeptKind::Ref(r)
        } else if let Some(k) = tail.strip_prefix("-stash/") {
            KeptKind::Stash(index(k)?)
        } else if let Some(k) = tail.strip_prefix("-logs/") {
            KeptKind::Log(index(k)?)
        } else {
            return None;
        },
    ))
}

pub(crate) enum KeptKind<'a> {
    Head,
    Branch(&'a str),
    Ref(&'a str),
    Stash(usize),
    Log(usize),
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::testutil::{precious, set_exec, write, Fixture};

    pub(crate) fn dirty(f: &Fixture, name: &str) -> PathBuf {
        let wt = f.worktree(name, &format!("b-{name}"));
        write(&wt.join("README"), "staged\n");
        f.git(&wt, &["add", "README"]);
        write(&wt.join("README"), "staged, then edited\n");
        write(&wt.join("notes/todo.md"), "untracked\n");
        write(&wt.join(".env"), "SECRET=1\n");
        write(&wt.join("run.sh"), "#!/bin/sh\n");
        set_exec(&wt.join("run.sh"));
        symlink("README", wt.join("link")).unwrap();
        fs::remove_file(wt.join("lib.txt")).unwrap();
        wt
    }

    /// The main repository's archives, as `boo-reconciler archives` reads
    /// them.
    pub(crate) fn listed(f: &Fixture) -> Vec<Archive> {
        let git = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        archives(&git, &precious()).unwrap()
    }

    #[test]
    fn archives_are_listed_newest_first_with_what_they_hold() {
        let f = Fixture::new();
        let wt = dirty(&f, "w");
        let older = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = crate::git::archive::archive(&wt, "w", older, &precious()).unwrap();
        let b = crate::git::archive::archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        let list = listed(&f);
        assert_eq!(
            list.iter()
                .map(|x| x.reference.as_str())
                .collect::<Vec<_>>(),
            [b.reference.as_str(), a.reference.as_str()]
        );
        let x = &list[1];
        assert_eq!((x.worktree_id.as_str(), x.unix_secs), ("w", 1_700_000_000));
        assert_eq!(x.branch.as_deref(), Some("b-w"));
        assert_eq!(x.head, f.rev(&wt, "HEAD"));
        // README staged; README edited and lib.txt deleted after; notes,
        // run.sh and link untracked; .env precious.
        assert_eq!(
            (x.staged, x.unstaged, x.untracked, x.precious),
            (1, 2, 3, 1)
        );
        assert!(x.nested.is_empty());
    }

    #[test]
    fn a_plain_commit_under_the_archive_namespace_is_not_listed() {
        // A stale admin entry's HEAD is kept there as a plain commit.
        let f = Fixture::new();
        f.git(
            &f.repo,
            &["update-ref", "refs/boo/archive/gone/1700000000", "HEAD"],
        );
        assert_eq!(listed(&f), vec![]);
    }

    #[test]
    fn only_archive_refs_are_archives() {
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000"),
            Some(("w-1".into(), 1_700_000_000, 0))
        );
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000-2"),
            Some(("w-1".into(), 1_700_000_000, 2))
        );
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000-2-nested/0"),
            None
        );
        for odd in [
            "1700000000-",
            "1700000000-0",
            "1700000000-02",
            "-1",
            "x",
            "17x",
        ] {
            assert_eq!(
                archive_name(&format!("refs/boo/archive/w/{odd}")),
                None,
                "{odd}"
            );
        }
        assert_eq!(
            archive_name("refs/boo/archive/w-1/1700000000-nested/0"),
            None
        );
        assert_eq!(archive_name("refs/boo/history/w-1/1700000000"), None);
        assert_eq!(archive_name("refs/boo/archive/1700000000"), None);
    }

    #[test]
    fn kept_refs_are_told_apart_by_their_names() {
        let kind = |s: &str| {
            kept_kind(s).map(|(n, k)| {
                let k = match k {
                    KeptKind::Head => "head".to_string(),
                    KeptKind::Branch(b) => format!("branch {b}"),
                    KeptKind::Ref(r) => format!("ref {r}"),
                    KeptKind::Stash(i) => format!("stash {i}"),
                    KeptKind::Log(i) => format!("log {i}"),
                };
                (n, k)
            })
        };
        assert_eq!(kind("0"), Some((0, "head".into())));
        assert_eq!(
            kind("12-heads/a-refs/b"),
            Some((12, "branch a-refs/b".into()))
        );
        assert_eq!(kind("1-refs/tags/v1"), Some((1, "ref tags/v1".into())));
        assert_eq!(kind("1-stash/3"), Some((1, "stash 3".into())));
        assert_eq!(kind("2-logs/0"), Some((2, "log 0".into())));
        for odd in ["", "x", "1-stash/x", "1-logs/", "1-other/x", "-heads/a"] {
            assert!(kind(odd).is_none(), "{odd}");
        }
    }

    #[test]
    fn the_branch_is_read_from_the_archive_subject() {
        assert_eq!(
            branch_of("WIP on boo/x: abc1234 fix: it"),
            Some("boo/x".into())
        );
        assert_eq!(branch_of("WIP on (no branch): abc1234 x"), None);
        assert_eq!(branch_of("WIP on boo/x (deleted): abc1234 x"), None);
        assert_eq!(branch_of("something else"), None);
    }
}
