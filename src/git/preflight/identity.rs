//! Identity before verdict (rule 8): the directory judged is exactly the
//! linked worktree its admin entry describes, of the row's repository.

use std::path::{Path, PathBuf};
use std::{fs, io};

use crate::git::cli::{Git, GitCliError};
use crate::git::paths::{common_dir_of_admin, dot_git, read_line_file, DotGit};
use crate::risk::AtRisk;

use super::{failed, is_empty_dir, not_a_worktree, same_file, Preflight};

/// The git directory of a main repository named by a row: `<path>/.git`
/// for a repository with a working tree, the path itself when bare.
pub(super) fn git_dir_of_main(repo_path: &Path) -> PathBuf {
    let dot = repo_path.join(".git");
    if fs::symlink_metadata(&dot).is_ok_and(|m| m.is_dir()) {
        dot
    } else {
        repo_path.to_path_buf()
    }
}

/// A linked worktree whose identity has been confirmed both ways.
pub(super) struct Linked {
    /// The worktree's own git directory (`<common>/worktrees/<name>`).
    pub(super) admin: PathBuf,
    /// The main repository's git directory.
    pub(super) common: PathBuf,
    pub(super) git: Git,
}

/// Confirms that `dir` is exactly the linked worktree its admin entry
/// describes, of the repository the row names. `None` when it is not (the
/// reason is pushed) or when there is nothing to judge.
pub(super) fn identify(p: &Preflight<'_>, out: &mut Vec<AtRisk>) -> Option<Linked> {
    let dir = p.worktree;
    a_directory(dir, out)?;
    let admin = admin_named(dir, out)?;
    let common = common_of(&admin, out)?;
    links_back(dir, &admin, out)?;
    if let Some(repo) = p.repo_path {
        of_the_row(repo, &common, out)?;
    }
    let git = match Git::for_dir(dir, p.timeout) {
        Ok(g) => g,
        Err(e) => {
            failed(out, "git", e);
            return None;
        }
    };
    git_agrees(&git, dir, &admin, &common, out)?;
    Some(Linked { admin, common, git })
}

/// Only a directory itself is judged: a missing one has nothing to lose,
/// and what a symbolic link points at is not what removal would delete.
pub(super) fn a_directory(dir: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            failed(out, "stat", e);
            None
        }
        Ok(m) if m.file_type().is_symlink() => {
            not_a_worktree(out, "a symbolic link, not a directory".into());
            None
        }
        Ok(m) if !m.is_dir() => {
            not_a_worktree(out, "not a directory".into());
            None
        }
        Ok(_) => Some(()),
    }
}

/// The admin entry `dir`'s `.git` file names: only a `.git` file makes a
/// linked worktree, and an empty directory without one holds nothing.
pub(super) fn admin_named(dir: &Path, out: &mut Vec<AtRisk>) -> Option<PathBuf> {
    match dot_git(dir) {
        DotGit::Missing => {
            match is_empty_dir(dir) {
                Ok(true) => {}
                Ok(false) => {
                    not_a_worktree(out, "no .git file, but the directory is not empty".into())
                }
                Err(e) => out.push(AtRisk::Unreadable {
                    count: 1,
                    paths: vec![format!(". ({e})")],
                }),
            }
            None
        }
        DotGit::Directory => {
            not_a_worktree(
                out,
                "a standalone repository (.git is a directory), not a linked worktree".into(),
            );
            None
        }
        DotGit::Broken { detail } => {
            not_a_worktree(out, detail);
            None
        }
        DotGit::File { gitdir } => Some(gitdir),
    }
}

/// The main repository's git directory, from the admin entry: the entry
/// must still exist and sit where a linked worktree's does.
pub(super) fn common_of(admin: &Path, out: &mut Vec<AtRisk>) -> Option<PathBuf> {
    if !admin.is_dir() {
        not_a_worktree(
            out,
            format!(
                "its git directory {} is gone (worktree pruned?)",
                admin.display()
            ),
        );
        return None;
    }
    let Some(common) = common_dir_of_admin(admin) else {
        not_a_worktree(
            out,
            format!(
                ".git points at {}, which is not a linked worktree's git directory",
                admin.display()
            ),
        );
        return None;
    };
    Some(common)
}

/// The link back: the admin entry must name this directory's `.git`, not
/// the original a copy was made from, nor the old place of a worktree that
/// was moved.
pub(super) fn links_back(dir: &Path, admin: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    let dot = dir.join(".git");
    match read_line_file(&admin.join("gitdir")) {
        Ok(back) if same_file(Path::new(&back), &dot) => Some(()),
        Ok(back) => {
            not_a_worktree(
                out,
                format!(
                    "its admin entry {} belongs to {back}, not to this directory: a copy, or a \
                     worktree moved without `git worktree repair`",
                    admin.display()
                ),
            );
            None
        }
        Err(e) => {
            not_a_worktree(
                out,
                format!("cannot read {}: {e}", admin.join("gitdir").display()),
            );
            None
        }
    }
}

/// A worktree of another repository than the row's is not the row's
/// worktree, whatever its links say.
pub(super) fn of_the_row(repo: &Path, common: &Path, out: &mut Vec<AtRisk>) -> Option<()> {
    if !same_file(&git_dir_of_main(repo), common) {
        not_a_worktree(
            out,
            format!(
                "a worktree of {}, not of the repository its row names ({})",
                common.display(),
                repo.display()
            ),
        );
        return None;
    }
    Some(())
}

/// Git's own reading of the same links must agree: every check after this
/// one asks git, and must ask it about this very directory.
pub(super) fn git_agrees(
    git: &Git,
    dir: &Path,
    admin: &Path,
    common: &Path,
    out: &mut Vec<AtRisk>,
) -> Option<()> {
    let text = match git.run(&[
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--absolute-git-dir",
        "--git-common-dir",
    ]) {
        Ok(o) => o.stdout_str(),
        // Git's own answer is a verdict on the directory; not getting one
        // (git not started as the owner, or hung) says nothing about it.
        Err(e @ GitCliError::Failed { .. }) => {
            not_a_worktree(out, format!("git cannot use it as a worktree: {e}"));
            return None;
        }
        Err(e) => {
            failed(out, "git", e);
            return None;
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let agrees = lines.len() == 3
        && same_file(Path::new(lines[0]), dir)
        && same_file(Path::new(lines[1]), admin)
        && same_file(Path::new(lines[2]), common);
    if !agrees {
        not_a_worktree(
            out,
            format!(
                "git reads its links differently (top level, git directory, common \
                 directory: {})",
                lines.join(", ")
            ),
        );
        return None;
    }
    Some(())
}
