//! Configuration: built-in defaults < file < environment < command line.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    pub database: Database,
    pub host: Host,
    pub r#loop: Loop,
    pub worktrees: Worktrees,
}

#[derive(Clone, Debug)]
pub struct Database {
    pub url: String,
    pub auto_migrate: bool,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub id: String,
}

#[derive(Clone, Debug)]
pub struct Loop {
    pub interval: Duration,
    pub jitter: Duration,
    pub pass_timeout: Duration,
    pub max_parallel_actions: usize,
}

#[derive(Clone, Debug)]
pub struct Worktrees {
    pub root: PathBuf,
    pub orphan_min_age: Duration,
    pub precious: Vec<String>,
}

/// Where settings come from besides the built-in defaults.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config FILE`; `None` means `./config/boo-reconciler.toml` if present.
    pub file: Option<PathBuf>,
    /// The process environment (only `BOO_RECONCILER_*` is read).
    pub env: Vec<(String, String)>,
    /// Command-line settings as `section.key` = value.
    pub overrides: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Todo(String),
}

impl Config {
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let _ = sources;
        todo!()
    }

    /// The `worktrees.precious` globs, compiled.
    pub fn precious_globs(&self) -> globset::GlobSet {
        todo!()
    }
}

/// The URL with its password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    url.to_string()
}
