//! Configuration: built-in defaults < file < environment < command line.
//!
//! # Sources and precedence
//!
//! Every setting is identified as `section.key` (e.g. `loop.interval`) and
//! is taken from the first of these that sets it:
//!
//! 1. the command line: [`Sources::overrides`], keys written `section.key`;
//! 2. the environment: `BOO_RECONCILER_<SECTION>_<KEY>` in upper case, e.g.
//!    `BOO_RECONCILER_DATABASE_URL`, `BOO_RECONCILER_LOOP_MAX_PARALLEL_ACTIONS`
//!    (see [`Key::env_var`]);
//!    A few settings also read a variable of the program they talk to when
//!    their own is not set ([`ENV_FALLBACKS`]: `OPENCODE_SERVER_PASSWORD`,
//!    `OPENCODE_SERVER_USERNAME`, the variables `opencode serve` reads);
//! 3. the config file: [`Sources::file`] if given (it must exist), otherwise
//!    [`DEFAULT_FILE`] relative to the working directory if it exists,
//!    otherwise no file;
//! 4. the built-in default, from [`KEYS`], the one place defaults live.
//!
//! Every value that is given is checked, even one that a higher source
//! shadows: a bad value anywhere stops start-up ([`ConfigError`], which the
//! binary maps to exit code 2).
//!
//! # Value syntax
//!
//! In the file, values are TOML: booleans and integers unquoted, durations,
//! paths, URLs and names as strings, lists as arrays of strings. On the
//! command line and in the environment every value is a string, parsed per
//! [`Kind`]:
//!
//! - boolean: `true/false`, `1/0`, `yes/no`, `on/off` (any case);
//! - duration: humantime form, `30s`, `10m`, `1h 30m`, `0s`;
//! - positive integer: `1` or more;
//! - list: comma-separated, items trimmed, empty items dropped (so an empty
//!   string is an empty list). A comma cannot be escaped: a glob with a
//!   `{a,b}` alternation must be set in the file.
//!
//! # Unknown names
//!
//! An unknown section or key in the file is an error that names it, the
//! file, and the valid names (operators mistype). An unknown `section.key`
//! on the command line is an error too, and so is an unknown
//! `BOO_RECONCILER_*` environment variable ([`ConfigError::UnknownEnv`],
//! naming the closest real variable): a mistyped
//! `BOO_RECONCILER_WORKTREE_ROOT` that was only warned about let a pass run
//! on the default root, a worse outcome than a daemon that does not start.
//! The variables of the prefix that are not settings of this table are
//! listed in [`ENV_NOT_SETTINGS`]; [`Sources::unrecognized_env`] lists
//! those present, for a caller that wants to log them at debug level.
//!
//! # Bounds
//!
//! Every duration is at most [`MAX_DURATION`] (365 days): nothing here
//! needs longer, and the bound keeps every deadline the controller computes
//! from a setting (`now + interval`, `pass_timeout * 2`, `now + term_grace`,
//! …) far from the range where adding it to an `Instant` or a `SystemTime`
//! would overflow and panic. Label names ([`Kind::Label`]) look like the
//! orchestrator's, are distinct, and are never a variable that ordinary
//! processes carry ([`ORDINARY_VARIABLES`]): a label such as `PATH` would
//! make every process on the host an agent.
//!
//! # Adding a setting
//!
//! Add the field to its struct (and to the struct's `Debug` in `redact.rs`
//! if it has one, and to `keys::unset`; the compiler asks for both), a row
//! to [`KEYS`] (name, kind, default, one-line doc, and `field!` naming the
//! field), and the setting with its default and the same doc as a comment
//! to `config/boo-reconciler.toml`. Parsing from every source, the
//! summary and redaction follow from the row. A row naming a field that
//! does not exist, of another type, or that its kind cannot fill does not
//! compile; the tests fail for a field without a row, a row filling a field
//! of another name, and an example file that does not mention the key or
//! whose values differ from the defaults.
//!
//! # Fixed settings
//!
//! These limits are constants of the code, not keys: each bounds what a
//! slow or hostile peer can cost, at a figure far from what a working
//! deployment needs, or follows from another setting.
//!
//! - HTTP (`http::ServeOptions`, `http::MAX_BODY_BYTES`): a request's
//!   headers within 5 s, which is also how long an idle keep-alive
//!   connection is kept; its body within 10 s and at most 64 KiB; ids of at
//!   most 128 bytes; at most 8,192 connections served at once (the
//!   open-file limit is raised to match where the hard limit allows);
//!   30 s for requests in flight to finish after shutdown. The clients are
//!   the orchestrator and probes on a near network, whose requests are a
//!   few hundred bytes in one packet.
//! - Database (`store`): a pool of 4 connections for SQLite, which writes
//!   one at a time anyway, and 8 for PostgreSQL; every call is short and
//!   bounded by `database.query_timeout`, and one that finds the pool busy
//!   waits at most `database.connect_timeout` for one (a
//!   `loop.max_parallel_actions` above 8 makes the extra actions wait for
//!   a connection). The host lock and the notification listener each hold a
//!   connection of their own outside the pool. SQLite waits up to 5 s for
//!   a writer that holds the file; applying migrations is bounded by
//!   15 min. The listener reconnects after 1 s, doubling to 30 s, and
//!   checks a silent connection every 3 × `database.query_timeout` (at
//!   least 5 s).
//! - Daemon (`service`): a standby tries the host lock every 2 s; `/readyz`
//!   waits at most 2 s (or `database.query_timeout` when shorter) for the
//!   database, so that a probe's own timeout is not reached first;
//!   `/status` lists the last 20 passes.
//! - opencode (`opencode`): 100 sessions asked for per page, at most
//!   10,000 pages per listing, at most 32 MiB read of one answer; each
//!   request is bounded by `opencode.timeout`.

mod error;
mod keys;
mod parse;
mod precious;
mod redact;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Origin};
pub use keys::{DefaultValue, Key, Kind, ENV_FALLBACKS, KEYS};
pub use parse::{MAX_DURATION, ORDINARY_VARIABLES};
pub use redact::{display_url, redact_url};

/// The setting that bounds a pass, as deferred actions and reports name
/// it.
pub const PASS_TIMEOUT: &str = "loop.pass_timeout";

/// The config file read when [`Sources::file`] is `None`, relative to the
/// working directory; not finding it there is not an error.
pub const DEFAULT_FILE: &str = "config/boo-reconciler.toml";

/// The prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "BOO_RECONCILER_";

/// The variables of [`ENV_PREFIX`] that are not rows of [`KEYS`] and are
/// therefore not refused as unknown: the token (an alias of `http.token`
/// kept apart so that it can live in a secrets file) and the log filter.
pub const ENV_NOT_SETTINGS: &[&str] = &["BOO_RECONCILER_TOKEN", "BOO_RECONCILER_LOG"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub database: Database,
    pub host: Host,
    pub r#loop: Loop,
    pub worktrees: Worktrees,
    pub processes: Processes,
    pub opencode: Opencode,
    pub http: Http,
}

/// `[database]`. `Debug` hides a password in the URL (see [`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    pub url: String,
    pub auto_migrate: bool,
    /// The PostgreSQL channel listened on for `chat:<id>` / `session:<id>`.
    pub notify_channel: String,
    /// Bound on opening a connection, and on waiting for one from the pool.
    pub connect_timeout: Duration,
    /// Bound on each call to the database (a query, an update, a pass's
    /// reading of its rows).
    pub query_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loop {
    pub interval: Duration,
    pub jitter: Duration,
    pub pass_timeout: Duration,
    pub max_parallel_actions: usize,
    /// Observe only: every pass plans and reports, nothing is acted on.
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worktrees {
    /// Whether worktrees are removed and their rows updated.
    pub enabled: bool,
    pub root: PathBuf,
    /// The orchestrator's user who may own the root (a name or a uid);
    /// empty for none. Checked at load: see [`Worktrees::owner_uid`].
    pub owner: String,
    pub orphan_min_age: Duration,
    pub precious: Vec<String>,
    pub reclaim_parallel: usize,
    /// The brake on one pass: removals and prunes beyond it wait.
    pub max_removals_per_pass: usize,
    /// A stale admin entry is pruned only once its directory has been
    /// missing this long.
    pub stale_entry_grace: Duration,
    /// The longest a kept worktree's verdict is reused without a full
    /// preflight, however unchanged its fingerprint.
    pub recheck_interval: Duration,
}

impl Worktrees {
    /// The uid `owner` names, `None` when empty. A name that no longer
    /// resolves (the user was deleted since the load) is an error naming
    /// the setting.
    pub fn owner_uid(&self) -> Result<Option<u32>, String> {
        parse::user(&self.owner)
            .map_err(|expected| format!("worktrees.owner = {:?}: expected {expected}", self.owner))
    }
}

/// `[processes]`: how agent processes are recognised and stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Processes {
    /// Whether agent processes are terminated and their `acp` rows closed.
    pub enabled: bool,
    /// The environment variable naming an agent's chat (`BOO_CHAT_ID`).
    pub chat_label: String,
    /// The environment variable naming an agent's session (`BOO_SESSION_ID`).
    pub session_label: String,
    /// The environment variable naming the agent (`BOO_AGENT`).
    pub agent_label: String,
    /// This controller's instance; empty for none. See
    /// [`Processes::instance`].
    pub instance: String,
    /// The environment variable naming an agent's instance
    /// (`BOO_INSTANCE`), read only when `instance` is set.
    pub instance_label: String,
    /// A labelled process whose chat has no row is left alone while younger
    /// than this.
    pub orphan_min_age: Duration,
    /// Time between SIGTERM and SIGKILL.
    /// The brake on one pass: terminations beyond it wait.
    pub max_terminations_per_pass: usize,
    /// Most terminations waiting out their grace at once; apart from
    /// `loop.max_parallel_actions`.
    pub max_parallel_terminations: usize,
    pub term_grace: Duration,
    /// `auto`, `off` or a path: see [`crate::cgroup::Parent`].
    pub cgroup_parent: String,
    /// Whether the fork lineage is followed ([`crate::observe::lineage`]):
    /// `auto`, `true` or `false` (see [`Processes::lineage`]).
    pub lineage: String,
}

/// Whether the fork lineage is followed (`processes.lineage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lineage {
    /// Wherever the connector opens; where it does not, said once.
    Auto,
    /// Always: a connector that cannot be opened is an error of every pass.
    On,
    Off,
}

impl Processes {
    /// The instance whose agents alone this controller may stop, if one is
    /// configured: an agent without the instance label, or with another
    /// value, is not this controller's.
    pub fn instance(&self) -> Option<&str> {
        (!self.instance.is_empty()).then_some(self.instance.as_str())
    }

    /// `processes.lineage`, as parsed (`auto`, `true` or `false`).
    pub fn lineage(&self) -> Lineage {
        match self.lineage.as_str() {
            "true" => Lineage::On,
            "false" => Lineage::Off,
            _ => Lineage::Auto,
        }
    }
}

/// `[http]`: the nudge, status and metrics endpoint. `Debug` hides the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct Http {
    pub listen: std::net::SocketAddr,
    /// The bearer token every route but `/healthz` requires; empty for
    /// none. A secret.
    pub token: String,
    /// Allow a non-loopback `listen` without a token.
    pub allow_insecure_remote: bool,
}

/// `[opencode]`: the shared `opencode serve` whose sessions are reaped.
/// `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Opencode {
    /// Whether opencode sessions are deleted and their rows closed.
    pub enabled: bool,
    /// The server's base URL; `None` (an empty `opencode.url`) turns the
    /// opencode part off. Never carries credentials (rejected at load).
    pub url: Option<url::Url>,
    /// The basic-auth user name; sent only when a password is set.
    pub username: String,
    /// The basic-auth password; empty means no authentication. A secret:
    /// shown as `***` by [`Config::summary`] and `Debug`.
    pub password: String,
    /// The limit on each request, from connecting to the last byte.
    pub timeout: Duration,
    /// A server session with no agent row is deleted only once this old.
    pub orphan_min_age: Duration,
}

/// Where settings come from besides the built-in defaults.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config FILE`; `None` means `./config/boo-reconciler.toml` if present.
    pub file: Option<PathBuf>,
    /// The process environment (only `BOO_RECONCILER_*` is read). When a
    /// name occurs twice, the last occurrence wins.
    pub env: Vec<(String, String)>,
    /// Command-line settings as `section.key` = value. When a key occurs
    /// twice, the last occurrence wins.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The `BOO_RECONCILER_*` variables of this process, and those of
    /// [`ENV_FALLBACKS`], for [`Sources::env`].
    /// A value that is not UTF-8 is converted lossily (and then most likely
    /// rejected by validation, naming the variable).
    pub fn process_env() -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                let wanted = name.starts_with(ENV_PREFIX)
                    || ENV_FALLBACKS.iter().any(|(_, var)| *var == name);
                wanted.then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// The configuration file [`Config::load`] reads: [`Sources::file`],
    /// else [`DEFAULT_FILE`] when it exists.
    pub fn file_in_use(&self) -> Option<PathBuf> {
        self.file.clone().or_else(|| {
            let default = Path::new(DEFAULT_FILE);
            default.exists().then(|| default.to_path_buf())
        })
    }

    /// The `BOO_RECONCILER_*` names in [`Sources::env`] that are not
    /// settings. [`Config::load`] refuses them all but those of
    /// [`ENV_NOT_SETTINGS`], which are expected: log these at debug level
    /// at most.
    pub fn unrecognized_env(&self) -> Vec<&str> {
        let known: BTreeSet<String> = KEYS.iter().map(Key::env_var).collect();
        self.env
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| name.starts_with(ENV_PREFIX) && !known.contains(*name))
            .collect()
    }
}

impl Config {
    /// Resolves every setting from `sources` (see the module docs for the
    /// precedence) and validates it.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Self::load_with_default_file(sources, Path::new(DEFAULT_FILE))
    }

    /// The built-in defaults alone: no file, no environment, no overrides.
    /// Fails only if the hostname (default of `host.id`) cannot be read.
    pub fn defaults() -> Result<Config, ConfigError> {
        Self::resolve(None, &[], &[])
    }

    /// The effective settings without secrets (the database password and
    /// `opencode.password` are redacted: `***` when set, empty when not),
    /// shaped like the config file: `{section: {key: value}}`,
    /// durations in humantime form. Serialize it with `toml::to_string` for
    /// a file-like dump or with `serde_json` for a status endpoint.
    pub fn summary(&self) -> toml::Table {
        let mut table = toml::Table::new();
        for key in KEYS {
            let section = table
                .entry(key.section)
                .or_insert_with(|| toml::Table::new().into());
            if let toml::Value::Table(section) = section {
                section.insert(key.key.to_owned(), key.shown(self));
            }
        }
        table
    }
}
