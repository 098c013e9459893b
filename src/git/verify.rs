//! Checking a force archive against git's own view before anything is
//! deleted: the archive is built through libgit2 ([`super::archive`]),
//! and where libgit2 and git disagree about what is there, git wins.
//!
//! # Guarantees
//!
//! 1. **Every file git shows is in the archive, byte for byte.** Each
//!    untracked file `git status` lists and each precious ignored file is
//!    in the archive's untracked tree, and each tracked file present on
//!    disk is in its working-tree tree, with the blob of its raw bytes (a
//!    symlink: of its target). Otherwise the force is refused and nothing
//!    is removed. Test: `an_archive_missing_a_file_git_shows_is_refused`.
//! 2. **A path git refuses to store refuses the force.** `.git` in any
//!    letter case (and the names git's NTFS protection treats as it,
//!    `git~1`, `.git.`, `.git `) cannot be restored by git from any
//!    archive, so a worktree holding one is kept with the reason.
//!    Test: `paths_git_refuses_are_named`.
//! 3. **Every ref of a nested repository or submodule is kept.** For
//!    each nested repository and initialised submodule whose commits git
//!    finds unreached by any remote-tracking ref (`git rev-list --all
//!    --reflog --not --remotes`: branches, tags, notes, every stash
//!    entry, commits only a reflog reaches), the archive must record it,
//!    keep each of its refs (remote-tracking ones aside) with the same
//!    object, and git must find each of those commits in the main
//!    repository, reachable from the archive's refs. Repositories inside
//!    nested repositories and submodules are looked at too, as deep as
//!    the archive looks. Otherwise nothing is removed.
//!    Tests: `a_nested_commit_the_archive_lacks_is_refused`,
//!    `restore.rs` `a_repository_inside_a_nested_one_or_a_submodule_is_kept_and_comes_back`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use globset::GlobSet;

use super::archive::nested::kept_name;
use super::archive::MAX_NESTING;
use super::cli::Git;
use super::mode::octal::GITLINK;
use super::paths::{has_dot_git, join_rel, rel_str};
use super::preflight::{git_status, index_entries, walk};

/// Whether git refuses `path` (a `/`-separated path relative to the
/// worktree) as an index or tree entry.
pub fn refused_by_git(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|c| {
        let lower = c.to_ascii_lowercase();
        let trimmed = {
            let mut t: &[u8] = &lower;
            while let Some(r) = t.strip_suffix(b".").or_else(|| t.strip_suffix(b" ")) {
                t = r;
            }
            t
        };
        trimmed == b".git" || trimmed == b"git~1"
    })
}

/// `path -> object id` of every blob (and symlink) in `tree`.
fn tree_blobs(git: &Git, tree: &str) -> Result<HashMap<Vec<u8>, String>, String> {
    let o = git
        .run(&["ls-tree", "-r", "-z", "--end-of-options", tree])
        .map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for f in o.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let Some(tab) = f.iter().position(|b| *b == b'\t') else {
            return Err(format!("unexpected ls-tree line {:?}", rel_str(f)));
        };
        let head = String::from_utf8_lossy(&f[..tab]);
        let mut it = head.split(' ');
        let (_mode, kind, id) = (it.next(), it.next(), it.next());
        if kind == Some("blob") {
            out.insert(f[tab + 1..].to_vec(), id.unwrap_or("").to_string());
        }
    }
    Ok(out)
}

/// The blob id of a file's raw bytes, or of a symlink's target.
fn raw_blob(git: &Git, dir: &Path, rel: &[u8]) -> Result<String, String> {
    let path = join_rel(dir, rel);
    let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", rel_str(rel)))?;
    let bytes = if meta.file_type().is_symlink() {
        fs::read_link(&path)
            .map_err(|e| format!("{}: {e}", rel_str(rel)))?
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        fs::read(&path).map_err(|e| format!("{}: {e}", rel_str(rel)))?
    };
    Ok(git
        .run_with_input(&["hash-object", "--no-filters", "--stdin"], &bytes)
        .map_err(|e| e.to_string())?
        .stdout_str()
        .trim()
        .to_string())
}

/// The raw blob ids of `paths`, in order: regular files in one
/// `git hash-object --stdin-paths` (one process, not one per file), the
/// rest (symlinks, names with a newline, names git would unquote for
/// starting with `"`) one by one.
fn raw_blobs(git: &Git, dir: &Path, paths: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let batchable = |p: &Vec<u8>| {
        !p.contains(&b'\n')
            && p.first() != Some(&b'"')
            && fs::symlink_metadata(join_rel(dir, p)).is_ok_and(|m| m.file_type().is_file())
    };
    let mut input = Vec::new();
    for p in paths.iter().filter(|p| batchable(p)) {
        input.extend_from_slice(p);
        input.push(b'\n');
    }
    let mut ids = if input.is_empty() {
        Vec::new().into_iter()
    } else {
        git.run_with_input(&["hash-object", "--no-filters", "--stdin-paths"], &input)
            .map_err(|e| e.to_string())?
            .stdout_str()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
    };
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if batchable(p) {
            out.push(
                ids.next()
                    .ok_or("git hash-object gave fewer ids than paths")?,
            );
        } else {
            out.push(raw_blob(git, dir, p)?);
        }
    }
    Ok(out)
}

/// Confirms that archive `reference` (made by [`super::archive::archive`]
/// for `worktree`) holds everything git shows there (guarantees 1 and 2).
pub fn check_archive(
    worktree: &Path,
    reference: &str,
    precious: &GlobSet,
    timeout: Duration,
) -> Result<(), String> {
    let git = Git::for_dir(worktree, timeout).map_err(|e| e.to_string())?;
    let (status, unreadable) = git_status(&git)?;
    if !unreadable.is_empty() {
        return Err(format!("git cannot read {}", unreadable.join(", ")));
    }
    let index = index_entries(&git)?;
    let gitlinks: HashSet<Vec<u8>> = index
        .iter()
        .filter(|e| e.mode == GITLINK)
        .map(|e| e.path.clone())
        .collect();
    let walked = walk(worktree, &status, &gitlinks, precious);
    let mut untracked: Vec<Vec<u8>> = status
        .untracked
        .iter()
        .filter(|p| !p.ends_with(b"/"))
        .cloned()
        .collect();
    untracked.extend(walked.precious.iter().map(|p| p.as_bytes().to_vec()));
    let tracked: Vec<Vec<u8>> = index
        .iter()
        .filter(|e| e.mode != GITLINK && e.stage == 0)
        .map(|e| e.path.clone())
        .filter(|p| fs::symlink_metadata(join_rel(worktree, p)).is_ok_and(|m| !m.is_dir()))
        .collect();
    if let Some(p) = untracked
        .iter()
        .chain(tracked.iter())
        .find(|p| refused_by_git(p))
    {
        return Err(format!(
            "{} is a path git refuses to store, so no archive could bring it back",
            rel_str(p)
        ));
    }
    let parents = git
        .run(&[
            "rev-list",
            "--parents",
            "-n1",
            "--end-of-options",
            reference,
        ])
        .map_err(|e| e.to_string())?
        .stdout_str();
    let has_untracked_part = parents.split_whitespace().count() >= 4;
    let u = if has_untracked_part {
        tree_blobs(&git, &format!("{reference}^3^{{tree}}"))?
    } else {
        HashMap::new()
    };
    let mut nested: Vec<Vec<u8>> = walked
        .nested
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    nested.extend(
        gitlinks
            .iter()
            .filter(|p| has_dot_git(&join_rel(worktree, p)))
            .cloned(),
    );
    nested.sort();
    nested.dedup();
    check_nested(&git, worktree, reference, nested, precious)?;
    let w = tree_blobs(&git, &format!("{reference}^{{tree}}"))?;
    for (list, tree, what) in [
        (&untracked, &u, "untracked"),
        (&tracked, &w, "working tree"),
    ] {
        let hashed = raw_blobs(&git, worktree, list)?;
        for (p, want) in list.iter().zip(hashed) {
            match tree.get(p) {
                Some(id) if *id == want => {}
                Some(_) => {
                    return Err(format!(
                        "the archive's {what} part holds other content for {}",
                        rel_str(p)
                    ))
                }
                None => {
                    return Err(format!(
                        "the archive's {what} part lacks {}, which git shows",
                        rel_str(p)
                    ))
                }
            }
        }
    }
    Ok(())
}

/// `objectname refname` lines as pairs.
fn ref_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// Guarantee 3, for the nested repositories and submodules at `nested`
/// (relative to `worktree`); `git` runs in the worktree, whose refs are
/// the main repository's.
/// The nested repositories and initialised submodules git shows inside
/// the repository `n_git` runs in (at `rel` in the worktree), as paths
/// relative to the worktree.
fn inner_repos(
    n_git: &Git,
    worktree: &Path,
    rel: &[u8],
    precious: &GlobSet,
) -> Result<Vec<Vec<u8>>, String> {
    let dir = join_rel(worktree, rel);
    let (status, _) = git_status(n_git)?;
    let gitlinks: HashSet<Vec<u8>> = index_entries(n_git)?
        .into_iter()
        .filter(|e| e.mode == GITLINK)
        .map(|e| e.path)
        .collect();
    let walked = walk(&dir, &status, &gitlinks, precious);
    let mut out: Vec<Vec<u8>> = walked
        .nested
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .chain(
            gitlinks
                .into_iter()
                .filter(|p| has_dot_git(&join_rel(&dir, p))),
        )
        .map(|p| {
            let mut full = rel.to_vec();
            full.push(b'/');
            full.extend_from_slice(&p);
            full
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_nested(
    git: &Git,
    worktree: &Path,
    reference: &str,
    mut nested: Vec<Vec<u8>>,
    precious: &GlobSet,
) -> Result<(), String> {
    let mut records = None;
    let mut depth = 0;
    // Nested repositories inside nested repositories and submodules too,
    // level by level, as deep as the archive looks.
    while !nested.is_empty() && depth < MAX_NESTING {
        let mut inner = Vec::new();
        for rel in &nested {
            let n_git = git.at(&join_rel(worktree, rel));
            inner.extend(inner_repos(&n_git, worktree, rel, precious)?);
            check_nested_one(git, &n_git, reference, rel, &mut records)?;
        }
        nested = inner;
        depth += 1;
    }
    Ok(())
}

/// Guarantee 3 for the repository `n_git` runs in, at `rel`; `records`
/// are the archive's, read once when first needed.
fn check_nested_one(
    git: &Git,
    n_git: &Git,
    reference: &str,
    rel: &[u8],
    records: &mut Option<super::archive::records::Records>,
) -> Result<(), String> {
    let local = n_git
        .run(&["rev-list", "--all", "--reflog", "--not", "--remotes"])
        .map_err(|e| format!("nested repository {}: {e}", rel_str(rel)))?
        .stdout_str();
    if local.trim().is_empty() {
        return Ok(());
    }
    let records = match records {
        Some(r) => r,
        None => records.insert(
            super::archive::list::parts(git, reference)
                .map_err(|e| e.to_string())?
                .records,
        ),
    };
    let Some(record) = records.nested.iter().find(|r| r.path == *rel) else {
        return Err(format!(
            "nested repository {} holds commits no remote-tracking ref reaches, and the \
             archive does not keep it",
            rel_str(rel)
        ));
    };
    let base = format!("{reference}-nested/{}", record.n);
    let kept = ref_lines(
        &git.run(&[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            &format!("{reference}-nested/"),
        ])
        .map_err(|e| e.to_string())?
        .stdout_str(),
    );
    let kept: Vec<(String, String)> = kept
        .into_iter()
        .filter(|(_, name)| *name == base || name.starts_with(&format!("{base}-")))
        .collect();
    let theirs = ref_lines(
        &n_git
            .run(&["for-each-ref", "--format=%(objectname) %(refname)", "refs/"])
            .map_err(|e| e.to_string())?
            .stdout_str(),
    );
    for (id, name) in theirs
        .iter()
        .filter(|(_, n)| !n.starts_with("refs/remotes/"))
    {
        let want = kept_name(&base, name);
        if !kept.iter().any(|(i, n)| *n == want && i == id) {
            return Err(format!(
                "the archive does not keep {name} of nested repository {} as {want}",
                rel_str(rel)
            ));
        }
    }
    // Each commit, reachable from the kept refs in the main repository
    // (a missing one is an error of git's own).
    let mut input = local;
    for (_, name) in &kept {
        input.push_str(&format!("^{name}\n"));
    }
    let unkept = git
        .run_with_input(&["rev-list", "--stdin"], input.as_bytes())
        .map_err(|e| {
            format!(
                "the main repository lacks commits of nested repository {}: {e}",
                rel_str(rel)
            )
        })?
        .stdout_str();
    if let Some(c) = unkept.lines().next() {
        return Err(format!(
            "commit {c} of nested repository {} is not reachable from the archive's refs",
            rel_str(rel)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::archive::archive;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::testutil::{precious, write, Fixture};
    use std::time::SystemTime;

    #[test]
    fn paths_git_refuses_are_named() {
        for p in [
            ".git",
            ".GIT/notes",
            "a/.Git/x",
            "git~1/x",
            "a/.git./b",
            "a/.git /b",
        ] {
            assert!(refused_by_git(p.as_bytes()), "{p}");
        }
        for p in [".gitignore", "a/.github/x", "git", "x.git", ".gitx/y"] {
            assert!(!refused_by_git(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn a_complete_archive_passes() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        write(&wt.join("new dir/untracked.txt"), "u\n");
        write(&wt.join(".env"), "SECRET=1\n");
        let a = archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap();
    }

    #[test]
    fn a_nested_commit_the_archive_lacks_is_refused() {
        use crate::git::scenes::{commit_file, init_repo};
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let lib = wt.join("vendor/lib");
        init_repo(&f, &lib);
        commit_file(&f, &lib, "x.txt", "x\n", "x");
        f.git(&lib, &["tag", "-a", "-m", "t", "v1"]);
        write(&lib.join("x.txt"), "stashed\n");
        f.git(&lib, &["stash", "-q"]);
        // A clean clone of it: every commit reached by a remote-tracking
        // ref, nothing to keep.
        f.git(&wt, &["clone", "-q", lib.to_str().unwrap(), "vendor/clone"]);
        let a = archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap();

        // A ref made after the archive.
        f.git(&lib, &["tag", "v2"]);
        let e = check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("does not keep refs/tags/v2"), "{e}");
        f.git(&lib, &["tag", "-d", "v2"]);
        // A commit only the reflog reaches, made after the archive.
        commit_file(&f, &lib, "y.txt", "y\n", "late");
        f.git(&lib, &["reset", "-q", "--hard", "HEAD~1"]);
        let e = check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(
            e.contains("lacks commits of nested repository vendor/lib"),
            "{e}"
        );
        let a = archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap();
        // The kept refs gone: nothing keeps the commits.
        let kept = f.git(
            &f.repo,
            &[
                "for-each-ref",
                "--format=%(refname)",
                &format!("{}-nested/", a.reference),
            ],
        );
        for r in kept.lines().filter(|r| r.contains("-logs/")) {
            f.git(&f.repo, &["update-ref", "-d", r]);
        }
        let e = check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("not reachable from the archive's refs"), "{e}");
        // A nested repository the archive does not record at all.
        let old = "refs/boo/archive/w/1";
        let subject = f.git(&f.repo, &["log", "-1", "--format=%s", &a.reference]);
        let parents = f.git(&f.repo, &["rev-list", "--parents", "-n1", &a.reference]);
        let mut args = vec![
            "commit-tree".to_string(),
            format!("{}^{{tree}}", a.reference),
        ];
        for p in parents.split(' ').skip(1) {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        args.extend(["-m".to_string(), subject]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let commit = f.git(&f.repo, &args);
        f.git(&f.repo, &["update-ref", old, &commit]);
        let e = check_archive(&wt, old, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("the archive does not keep it"), "{e}");
    }

    #[test]
    fn an_archive_missing_a_file_git_shows_is_refused() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("README"), "changed\n");
        let a = archive(&wt, "w", SystemTime::now(), &precious()).unwrap();
        // Written after the archive: exactly what a divergent archive
        // would have missed.
        write(&wt.join("late.txt"), "late\n");
        let e = check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("lacks late.txt"), "{e}");
        write(&wt.join("late.txt"), "");
        std::fs::remove_file(wt.join("late.txt")).unwrap();
        write(&wt.join("README"), "changed again\n");
        let e = check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.contains("other content for README"), "{e}");
    }

    #[test]
    fn an_untracked_dot_git_in_other_letter_case_refuses_the_archive() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join(".GIT/notes.txt"), "n\n");
        let e = match archive(&wt, "w", SystemTime::now(), &precious()) {
            Ok(a) => check_archive(&wt, &a.reference, &precious(), DEFAULT_TIMEOUT).unwrap_err(),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(".GIT"), "{e}");
    }
}
