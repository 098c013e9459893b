//! Reading `git status --porcelain=v2 -z --branch` output: what git itself
//! shows a user about a working tree. Pure parsing, no I/O.
//!
//! The format is git's documented machine interface (git-status(1),
//! "Porcelain Format Version 2"): headers `# branch.oid`, `# branch.head`,
//! then one NUL-terminated entry per path — `1` changed, `2` renamed or
//! copied (followed by the original path as its own NUL-terminated field),
//! `u` unmerged, `?` untracked, `!` ignored. Paths are relative to the
//! top of the working tree, raw bytes (no quoting with `-z`).

/// One working tree as git's status reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitStatus {
    /// `# branch.oid`: the commit HEAD names, `None` when unborn.
    pub head_oid: Option<String>,
    /// `# branch.head`: the branch HEAD names, `None` when detached.
    pub head_branch: Option<String>,
    /// The index differs from HEAD (X is not `.`).
    pub staged: Vec<Vec<u8>>,
    /// The working tree differs from the index (Y is not `.`), for tracked
    /// paths that are not submodules.
    pub unstaged: Vec<Vec<u8>>,
    /// Submodules with new commits, modified or untracked content, with
    /// what git said of each (`S<c><m><u>`).
    pub submodules: Vec<(Vec<u8>, SubmoduleState)>,
    /// Unmerged paths.
    pub conflicts: Vec<Vec<u8>>,
    /// Untracked paths; a directory (a nested repository git does not
    /// descend into) ends with `/`.
    pub untracked: Vec<Vec<u8>>,
    /// Ignored paths; a wholly ignored directory ends with `/`.
    pub ignored: Vec<Vec<u8>>,
}

/// A submodule's `S<c><m><u>` field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmoduleState {
    pub new_commits: bool,
    pub modified: bool,
    pub untracked: bool,
}

impl SubmoduleState {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.new_commits {
            parts.push("checked out at another commit than recorded");
        }
        if self.modified {
            parts.push("modified content");
        }
        if self.untracked {
            parts.push("untracked content");
        }
        parts.join(", ")
    }
}

/// An entry git printed that this parser does not understand: doubt, so
/// the caller keeps the worktree.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unexpected git status entry: {0:?}")]
pub struct ParseError(pub String);

fn bad(field: &[u8]) -> ParseError {
    ParseError(String::from_utf8_lossy(field).into_owned())
}

/// Splits `line` into `n` space-separated fields, the last taking the rest
/// (a path may contain spaces).
fn fields(line: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let v: Vec<&[u8]> = line.splitn(n, |b| *b == b' ').collect();
    (v.len() == n).then_some(v)
}

fn submodule_field(f: &[u8]) -> Result<Option<SubmoduleState>, ParseError> {
    match f {
        [b'N', b'.', b'.', b'.'] => Ok(None),
        [b'S', c, m, u] => Ok(Some(SubmoduleState {
            new_commits: *c == b'C',
            modified: *m == b'M',
            untracked: *u == b'U',
        })),
        _ => Err(bad(f)),
    }
}

impl GitStatus {
    fn changed(&mut self, xy: &[u8], sub: &[u8], path: &[u8]) -> Result<(), ParseError> {
        let [x, y] = xy else { return Err(bad(xy)) };
        if *x != b'.' {
            self.staged.push(path.to_vec());
        }
        match submodule_field(sub)? {
            Some(s) if s.new_commits || s.modified || s.untracked => {
                self.submodules.push((path.to_vec(), s))
            }
            Some(_) => {}
            None if *y != b'.' => self.unstaged.push(path.to_vec()),
            None => {}
        }
        // A submodule whose gitlink was deleted or replaced shows in Y
        // without any S flags.
        if *y != b'.'
            && sub.first() == Some(&b'S')
            && !self.submodules.iter().any(|(p, _)| p == path)
        {
            self.unstaged.push(path.to_vec());
        }
        Ok(())
    }
}

/// Parses the whole output of
/// `git status --porcelain=v2 -z --branch [--ignored=…] [-u…]`.
pub fn parse(out: &[u8]) -> Result<GitStatus, ParseError> {
    let mut s = GitStatus::default();
    let mut it = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(entry) = it.next() {
        match entry.first() {
            Some(b'#') => {
                if let Some(v) = entry.strip_prefix(b"# branch.oid ") {
                    s.head_oid = (v != b"(initial)").then(|| String::from_utf8_lossy(v).into());
                } else if let Some(v) = entry.strip_prefix(b"# branch.head ") {
                    s.head_branch = (v != b"(detached)").then(|| String::from_utf8_lossy(v).into());
                }
                // branch.upstream, branch.ab, stash: informative.
            }
            Some(b'1') => {
                let f = fields(entry, 9).ok_or_else(|| bad(entry))?;
                s.changed(f[1], f[2], f[8])?;
            }
            Some(b'2') => {
                let f = fields(entry, 10).ok_or_else(|| bad(entry))?;
                s.changed(f[1], f[2], f[9])?;
                // The original path: its deletion is part of the rename.
                let orig = it.next().ok_or_else(|| bad(entry))?;
                s.staged.push(orig.to_vec());
            }
            Some(b'u') => {
                let f = fields(entry, 11).ok_or_else(|| bad(entry))?;
                s.conflicts.push(f[10].to_vec());
            }
            Some(b'?') => {
                let p = entry.strip_prefix(b"? ").ok_or_else(|| bad(entry))?;
                s.untracked.push(p.to_vec());
            }
            Some(b'!') => {
                let p = entry.strip_prefix(b"! ").ok_or_else(|| bad(entry))?;
                s.ignored.push(p.to_vec());
            }
            _ => return Err(bad(entry)),
        }
    }
    Ok(s)
}

/// Directories git could not read, from what `git status` printed on its
/// standard error (`warning: could not open directory 'd/': Permission
/// denied`). Git goes on and exits 0, so this is the only sign that its
/// answer left something out.
pub fn unreadable(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("could not open directory '")?.1;
            Some(rest.rsplit_once("':").map_or(rest, |(p, _)| p).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(entries: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for e in entries {
            v.extend_from_slice(e.as_bytes());
            v.push(0);
        }
        v
    }

    const M: &str = "100644 100644 100644 0123 4567";

    #[test]
    fn every_kind_of_entry_lands_in_its_list() {
        let s = parse(&z(&[
            "# branch.oid 52066d19d260dc8b59930a2807cdc4c132f95786",
            "# branch.head boo/w1",
            "# branch.upstream origin/boo/w1",
            &format!("1 M. N... {M} staged only.txt"),
            &format!("1 .M N... {M} dir/with space.txt"),
            &format!("1 MM N... {M} both"),
            &format!("2 R. N... {M} R100 new name\told"),
            "old name",
            "u UU N... 100644 100644 100644 100644 a b c conflicted",
            "? notes.md\t",
            "? .GIT/notes.txt",
            "! target/",
            "! .env",
        ]))
        .unwrap();
        assert_eq!(
            s.head_oid.as_deref(),
            Some("52066d19d260dc8b59930a2807cdc4c132f95786")
        );
        assert_eq!(s.head_branch.as_deref(), Some("boo/w1"));
        let strs = |v: &[Vec<u8>]| {
            v.iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strs(&s.staged),
            ["staged only.txt", "both", "new name\told", "old name"]
        );
        assert_eq!(strs(&s.unstaged), ["dir/with space.txt", "both"]);
        assert_eq!(strs(&s.conflicts), ["conflicted"]);
        assert_eq!(strs(&s.untracked), ["notes.md\t", ".GIT/notes.txt"]);
        assert_eq!(strs(&s.ignored), ["target/", ".env"]);
        assert!(s.submodules.is_empty());
    }

    #[test]
    fn unborn_and_detached_heads() {
        let s = parse(&z(&["# branch.oid (initial)", "# branch.head main"])).unwrap();
        assert_eq!((s.head_oid, s.head_branch.as_deref()), (None, Some("main")));
        let s = parse(&z(&["# branch.oid abc", "# branch.head (detached)"])).unwrap();
        assert_eq!(s.head_branch, None);
    }

    #[test]
    fn submodule_states_are_reported_not_taken_for_files() {
        let s = parse(&z(&[
            &format!("1 .M SC.. {M} sub/a"),
            &format!("1 .M S.MU {M} sub/b"),
            &format!("1 .D S... {M} sub/gone"),
        ]))
        .unwrap();
        assert_eq!(s.submodules.len(), 2);
        assert!(s.submodules[0].1.new_commits && !s.submodules[0].1.modified);
        assert!(s.submodules[1].1.modified && s.submodules[1].1.untracked);
        assert_eq!(s.unstaged, vec![b"sub/gone".to_vec()]);
    }

    #[test]
    fn anything_unknown_is_an_error_not_a_clean_tree() {
        assert!(parse(&z(&["x what"])).is_err());
        assert!(parse(&z(&["1 M. N... short"])).is_err());
        assert!(parse(&z(&[&format!("1 M. X... {M} p")])).is_err());
        // A rename without its original path.
        assert!(parse(&z(&[&format!("2 R. N... {M} R100 new")])).is_err());
    }

    #[test]
    fn unreadable_directories_are_read_from_the_warnings() {
        let err = "warning: could not open directory 'd/': Permission denied\n\
                   warning: could not open directory 'a b/c/': Permission denied\n\
                   something else\n";
        assert_eq!(unreadable(err), ["d/", "a b/c/"]);
        assert!(unreadable("").is_empty());
    }
}
