//! `worktrees.precious`: which ignored files are work, with the semantics
//! of `.gitignore` rather than globset's defaults.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::Config;

impl Config {
    /// The `worktrees.precious` globs, compiled.
    ///
    /// Match it against a path relative to the worktree root, with `/`
    /// separators and no leading `./` (`sub/dir/.env`); an absolute path
    /// also works for globs without a `/`. The semantics follow
    /// `.gitignore`:
    ///
    /// - globs are compiled with `literal_separator(true)`, so `*`, `?` and
    ///   `[...]` never match `/` (globset's default lets `*` cross
    ///   directories, which would make `*.key` match `a/b.key` while `.env`
    ///   matched only the top level);
    /// - a glob without `/` is a file-name glob: it is also added as
    ///   `**/<glob>`, so `.env` matches `.env` and `a/b/.env`, and `.env.*`
    ///   matches `.env.local` at any depth (never `.envrc`);
    /// - a glob with `/` is anchored at the worktree root (`config/*.key`);
    ///   use `**/` explicitly to match it at any depth.
    ///
    /// # Panics
    ///
    /// If a glob does not compile. [`Config::load`] has already rejected
    /// such a glob, naming it; only a hand-built `Config` can panic here.
    pub fn precious_globs(&self) -> GlobSet {
        let mut builder = GlobSetBuilder::new();
        for pattern in &self.worktrees.precious {
            for glob in precious_glob(pattern)
                .unwrap_or_else(|e| panic!("invalid worktrees.precious glob {pattern:?}: {e}"))
            {
                builder.add(glob);
            }
        }
        builder
            .build()
            .unwrap_or_else(|e| panic!("cannot build the worktrees.precious glob set: {e}"))
    }
}

/// The globs one `worktrees.precious` pattern stands for (see
/// [`Config::precious_globs`]).
pub(super) fn precious_glob(pattern: &str) -> Result<Vec<Glob>, String> {
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    let build = |p: &str| {
        GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| e.kind().to_string())
    };
    let mut globs = vec![build(pattern)?];
    if !pattern.contains('/') {
        globs.push(build(&format!("**/{pattern}"))?);
    }
    Ok(globs)
}
