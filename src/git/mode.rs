//! The numbers git stores in an index entry: the entry's mode, and the bits
//! of its flags that say whether the entry is staged content at all.
//!
//! libgit2 hands them over as integers ([`git2::IndexEntry`]); `git
//! ls-files -s` prints the mode as octal text ([`octal`]). Both spellings
//! live here so that the archive (which builds trees) and the preflight
//! (which reads git's own listing) cannot disagree on what a submodule or a
//! symlink is.

/// A submodule's commit (a gitlink): no file of the worktree's own.
pub const GITLINK: u32 = 0o160000;
/// A symlink: the blob holds the link's target.
pub const SYMLINK: u32 = 0o120000;
/// A regular file with its executable bit.
pub const EXEC: u32 = 0o100755;
/// A regular file.
pub const REGULAR: u32 = 0o100644;

/// The modes as `git ls-files -s` and `git ls-tree` print them.
pub mod octal {
    pub const GITLINK: &str = "160000";
    pub const SYMLINK: &str = "120000";
    pub const EXEC: &str = "100755";
    pub const REGULAR: &str = "100644";
}

/// The merge stage (`flags`): non-zero on an unmerged entry, which git
/// refuses to stash.
pub const STAGE_MASK: u16 = 0x3000;
/// Skip-worktree (`flags_extended`): sparse checkout leaves the file
/// absent, which is not a deletion.
pub const SKIP_WORKTREE: u16 = 1 << 14;
/// Intent-to-add (`flags_extended`): the path is announced, its content is
/// not staged.
pub const INTENT_TO_ADD: u16 = 1 << 13;
/// Assume-unchanged (`flags`): git's status does not look at the file.
pub const ASSUME_VALID: u16 = 0x8000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_octal_spelling_is_the_number() {
        for (number, text) in [
            (GITLINK, octal::GITLINK),
            (SYMLINK, octal::SYMLINK),
            (EXEC, octal::EXEC),
            (REGULAR, octal::REGULAR),
        ] {
            assert_eq!(format!("{number:o}"), text);
        }
    }
}
