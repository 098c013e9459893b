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
//! Add the field to its struct, a row to [`KEYS`] (kind, default, one-line
//! doc), a line in `Config::build` and in [`Config::summary`], and the
//! setting with its default and the same doc as a comment to
//! `config/boo-reconciler.toml`. File, environment and command-line parsing
//! follow from the row. The tests fail if any of these is forgotten: a row
//! without a field, a summary without the key, an example file that does
//! not mention the key or whose values differ from the defaults.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The config file read when [`Sources::file`] is `None`, relative to the
/// working directory; not finding it there is not an error.
pub const DEFAULT_FILE: &str = "config/boo-reconciler.toml";

/// The prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "BOO_RECONCILER_";

/// The variables of [`ENV_PREFIX`] that are not rows of [`KEYS`] and are
/// therefore not refused as unknown: the token (an alias of `http.token`
/// kept apart so that it can live in a secrets file) and the log filter.
pub const ENV_NOT_SETTINGS: &[&str] = &["BOO_RECONCILER_TOKEN", "BOO_RECONCILER_LOG"];

/// The longest duration any setting accepts (see the module docs, *Bounds*).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Environment variables that ordinary processes carry, refused as label
/// names: whole names, and prefixes ending in `_` that stand for a family
/// (`LC_ALL`, `XDG_RUNTIME_DIR`, `SSH_AUTH_SOCK`, `SUDO_USER`,
/// `LD_PRELOAD`, …). A label is only as safe as it is rare: every process
/// that carries it is a candidate for termination.
pub const ORDINARY_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "USERNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "LANG",
    "LANGUAGE",
    "LC_",
    "TERM",
    "COLORTERM",
    "TERM_PROGRAM",
    "LOGNAME",
    "MAIL",
    "HOSTNAME",
    "HOSTTYPE",
    "OSTYPE",
    "MACHTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_",
    "SSH_",
    "SUDO_",
    "LD_",
    "DBUS_",
    "SYSTEMD_",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LESS",
    "SHLVL",
    "PS1",
    "PS2",
    "PS4",
    "IFS",
    "COLUMNS",
    "LINES",
    "LS_COLORS",
    "MANPATH",
    "INFOPATH",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "MOTD_SHOWN",
    "HISTFILE",
    "HISTSIZE",
    "HISTCONTROL",
];

/// The entry of [`ORDINARY_VARIABLES`] that `name` is or belongs to.
fn ordinary_variable(name: &str) -> Option<&'static str> {
    ORDINARY_VARIABLES.iter().copied().find(|v| {
        if v.ends_with('_') {
            name.starts_with(v)
        } else {
            name == *v
        }
    })
}

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

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &redact_url(&self.url))
            .field("auto_migrate", &self.auto_migrate)
            .field("notify_channel", &self.notify_channel)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
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
    pub orphan_min_age: Duration,
    pub precious: Vec<String>,
    pub reclaim_parallel: usize,
    /// The longest a kept worktree's verdict is reused without a full
    /// preflight, however unchanged its fingerprint.
    pub recheck_interval: Duration,
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
    /// A labelled process whose chat has no row is left alone while younger
    /// than this.
    pub orphan_min_age: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub term_grace: Duration,
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

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("listen", &self.listen)
            .field("token", &redact_secret(&self.token))
            .field("allow_insecure_remote", &self.allow_insecure_remote)
            .finish()
    }
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

impl fmt::Debug for Opencode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opencode")
            .field("enabled", &self.enabled)
            .field("url", &self.url.as_ref().map(display_url))
            .field("username", &self.username)
            .field("password", &redact_secret(&self.password))
            .field("timeout", &self.timeout)
            .field("orphan_min_age", &self.orphan_min_age)
            .finish()
    }
}

/// A URL as operators write it: `http://127.0.0.1:4096`, without the `/`
/// that parsing adds to an empty path.
pub fn display_url(url: &url::Url) -> String {
    let s = url.as_str();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        s.strip_suffix('/').unwrap_or(s).to_owned()
    } else {
        s.to_owned()
    }
}

/// `***` for a secret that is set, empty for one that is not.
fn redact_secret(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "***"
    }
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

/// What values a setting accepts; drives parsing from the file, the
/// environment and the command line, and the "expected …" part of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `true/false` (file); also `1/0`, `yes/no`, `on/off` (env, command line).
    Bool,
    /// A humantime duration, `0s` allowed.
    Duration,
    /// A humantime duration greater than zero.
    NonZeroDuration,
    /// An integer, 1 or more.
    PositiveInt,
    /// Any string.
    String,
    /// A non-empty string without whitespace (an identifier such as a host name).
    Name,
    /// The name of an environment variable labelling agent processes:
    /// `^[A-Z][A-Z0-9_]*$`, not one of [`ORDINARY_VARIABLES`], and
    /// different from the other labels (checked across keys).
    Label,
    /// A non-empty path.
    Path,
    /// An absolute path.
    AbsolutePath,
    /// A URL starting with `sqlite://`, `postgres://` or `postgresql://`;
    /// shown redacted in errors.
    DatabaseUrl,
    /// An `http://` or `https://` URL without credentials, or an empty
    /// string for none.
    HttpUrl,
    /// Any string, a secret: never shown, not even in errors.
    Secret,
    /// An IP address and port.
    SocketAddr,
    /// A list of strings.
    StringList,
    /// A list of glob patterns, each of which must compile.
    GlobList,
}

impl Kind {
    /// What the kind accepts, as shown after "expected" in errors.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean: true/false, 1/0, yes/no or on/off",
            Kind::Duration => "a duration like 30s or 10m",
            Kind::NonZeroDuration => "a duration like 30s or 10m",
            Kind::PositiveInt => "a positive integer (1 or more)",
            Kind::String => "a string",
            Kind::Name => "a non-empty name without whitespace",
            Kind::Label => {
                "an environment variable name like BOO_CHAT_ID (an upper-case letter, then upper-case letters, digits or _)"
            }
            Kind::Path => "a non-empty path",
            Kind::AbsolutePath => "an absolute path like /tmp/booworktrees",
            Kind::DatabaseUrl => {
                "a database URL starting with sqlite://, postgres:// or postgresql://"
            }
            Kind::HttpUrl => {
                "an http:// or https:// URL without user or password, like http://127.0.0.1:4096, or an empty string for none"
            }
            Kind::Secret => "a string",
            Kind::SocketAddr => "an address and port like 127.0.0.1:7878",
            Kind::StringList => "a list of strings",
            Kind::GlobList => "a list of glob patterns",
        }
    }

    fn is_list(self) -> bool {
        matches!(self, Kind::StringList | Kind::GlobList)
    }
}

/// A built-in default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DefaultValue {
    /// Parsed like an environment value of the key's kind.
    Text(&'static str),
    /// The items of a list.
    List(&'static [&'static str]),
    /// The machine's hostname, computed only when nothing else sets the key.
    Hostname,
}

/// One setting: the table row that drives its parsing from every source.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    /// One line, repeated as the comment above the setting in
    /// `config/boo-reconciler.toml`.
    pub doc: &'static str,
}

impl Key {
    /// `section.key`, as used on the command line and in errors.
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// `BOO_RECONCILER_<SECTION>_<KEY>`.
    pub fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}_{}",
            self.section.to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }

    /// The variable read when [`Key::env_var`] is not set, if any (see
    /// [`ENV_FALLBACKS`]).
    pub fn fallback_env(&self) -> Option<&'static str> {
        ENV_FALLBACKS
            .iter()
            .find(|(name, _)| *name == self.name())
            .map(|(_, var)| *var)
    }

    /// The row for `section.key`.
    pub fn find(name: &str) -> Option<&'static Key> {
        let (section, key) = name.split_once('.')?;
        KEYS.iter().find(|k| k.section == section && k.key == key)
    }
}

/// Every setting, with its built-in default: the one place defaults live.
pub static KEYS: &[Key] = &[
    Key {
        section: "database",
        key: "url",
        kind: Kind::DatabaseUrl,
        // Embedded SQLite file, relative to the working directory; the store
        // creates it if missing. PostgreSQL in production.
        default: DefaultValue::Text("sqlite://boo-reconciler.db"),
        doc: "Database: sqlite://FILE (embedded, relative to the working directory, created if missing) or postgres://USER:PASSWORD@HOST/DB.",
    },
    Key {
        section: "database",
        key: "auto_migrate",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Apply pending schema migrations at start-up.",
    },
    Key {
        section: "database",
        key: "notify_channel",
        kind: Kind::Name,
        default: DefaultValue::Text("boo_reconcile"),
        doc: "PostgreSQL channel listened on for chat:<id> / session:<id> notifications (unused with SQLite).",
    },
    Key {
        section: "database",
        key: "connect_timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("5s"),
        doc: "Limit on opening a database connection or waiting for a free one (more than 0s, at most 365d).",
    },
    Key {
        section: "database",
        key: "query_timeout",
        kind: Kind::NonZeroDuration,
        // A stalled server (a network partition, a frozen proxy) keeps
        // connections open and answers nothing: without this bound a pass
        // would wait for ever.
        default: DefaultValue::Text("10s"),
        doc: "Limit on each database call; a call still unanswered after this long fails the pass (more than 0s, at most 365d).",
    },
    Key {
        section: "host",
        key: "id",
        kind: Kind::Name,
        default: DefaultValue::Hostname,
        doc: "This host's name in the shared database (host columns); defaults to the machine's hostname.",
    },
    Key {
        section: "loop",
        key: "interval",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("30s"),
        doc: "Time between two reconciliation passes (more than 0s, at most 365d).",
    },
    Key {
        section: "loop",
        key: "jitter",
        kind: Kind::Duration,
        default: DefaultValue::Text("3s"),
        doc: "A random extra delay in [0, jitter) added to each pass; 0s for none (at most 365d).",
    },
    Key {
        section: "loop",
        key: "pass_timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("2m"),
        doc: "A pass still running after this long is abandoned (more than 0s, at most 365d).",
    },
    Key {
        section: "loop",
        key: "max_parallel_actions",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("4"),
        doc: "Most actions carried out at the same time within a pass (1 or more).",
    },
    Key {
        section: "loop",
        key: "dry_run",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        doc: "Observe only: every pass plans and reports (logs, /status, nudge answers) and acts on nothing; also run --dry-run.",
    },
    Key {
        section: "worktrees",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Remove worktrees and update their rows; false plans and reports them as pending, touching none.",
    },
    Key {
        section: "worktrees",
        key: "root",
        kind: Kind::AbsolutePath,
        default: DefaultValue::Text("/tmp/booworktrees"),
        doc: "Absolute directory holding the worktrees, <root>/<worktree id>; nothing outside it is ever removed.",
    },
    Key {
        section: "worktrees",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "A resource younger than this is never reaped as an orphan (absorbs creation races; at most 365d).",
    },
    Key {
        section: "worktrees",
        key: "precious",
        kind: Kind::GlobList,
        default: DefaultValue::List(&[".env", ".env.*"]),
        doc: "Ignored files matching these globs are work: a worktree holding one is kept. A glob without / matches at any depth.",
    },
    Key {
        section: "worktrees",
        key: "reclaim_parallel",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("2"),
        doc: "Most retired worktrees in <root>/.boo-trash deleted at the same time by the background reclaimer (1 or more).",
    },
    Key {
        section: "worktrees",
        key: "recheck_interval",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "A worktree kept at risk is checked again in full when its fingerprint changes, when a nudge or notification names its chat or session, with --force, or at the latest after this long (at most 365d).",
    },
    Key {
        section: "processes",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Terminate agent processes and close their acp rows; false signals none (an agent inside a worktree then keeps it).",
    },
    Key {
        section: "processes",
        key: "chat_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_CHAT_ID"),
        doc: "Environment variable naming an agent's chat; a process is an agent only if it carries this and processes.agent_label, both non-empty. Labels are upper-case names ([A-Z][A-Z0-9_]*), distinct, never one that ordinary processes carry (PATH, HOME, LC_*, ...).",
    },
    Key {
        section: "processes",
        key: "session_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_SESSION_ID"),
        doc: "Environment variable naming the agent's session (informative).",
    },
    Key {
        section: "processes",
        key: "agent_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_AGENT"),
        doc: "Environment variable naming the agent, e.g. goose or qwen; with processes.chat_label it marks an agent process.",
    },
    Key {
        section: "processes",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("2m"),
        doc: "A labelled process whose chat has no row is left alone while younger than this (the launcher may start it before the row is committed; at most 365d).",
    },
    Key {
        section: "processes",
        key: "term_grace",
        kind: Kind::Duration,
        default: DefaultValue::Text("5s"),
        doc: "Time an agent and its descendants get to exit after SIGTERM before whatever survives gets SIGKILL (at most 365d).",
    },
    Key {
        section: "opencode",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Delete opencode sessions and close their rows; false deletes none (the server is still listed and reported).",
    },
    Key {
        section: "opencode",
        key: "url",
        kind: Kind::HttpUrl,
        default: DefaultValue::Text("http://127.0.0.1:4096"),
        doc: "Base URL of the shared opencode serve whose sessions are reaped; empty turns the opencode part off.",
    },
    Key {
        section: "opencode",
        key: "username",
        kind: Kind::Name,
        default: DefaultValue::Text("opencode"),
        doc: "Basic-auth user name, sent only with a password (opencode serve's OPENCODE_SERVER_USERNAME, default opencode).",
    },
    Key {
        section: "opencode",
        key: "password",
        kind: Kind::Secret,
        default: DefaultValue::Text(""),
        doc: "Basic-auth password (opencode serve's OPENCODE_SERVER_PASSWORD, also read from that variable); empty for none.",
    },
    Key {
        section: "opencode",
        key: "timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("3s"),
        doc: "Limit on each request to opencode, from connecting to the last byte (more than 0s, at most 365d).",
    },
    Key {
        section: "opencode",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "An opencode session that no agent row names is deleted only once this old (absorbs creation races; at most 365d).",
    },
    Key {
        section: "http",
        key: "listen",
        kind: Kind::SocketAddr,
        default: DefaultValue::Text("127.0.0.1:7878"),
        doc: "Address of the HTTP API (nudges, /status, /metrics) served by run.",
    },
    Key {
        section: "http",
        key: "token",
        kind: Kind::Secret,
        default: DefaultValue::Text(""),
        doc: "Bearer token every route but /healthz requires (also read from BOO_RECONCILER_TOKEN); empty for none.",
    },
    Key {
        section: "http",
        key: "allow_insecure_remote",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        doc: "Allow a non-loopback listen address without a token (anyone who can reach it could tear down chats).",
    },
];

/// Environment variables read for a setting when its own
/// `BOO_RECONCILER_*` variable is not set: `(section.key, variable)`. They
/// rank with the environment (above the file); `BOO_RECONCILER_*` wins over
/// them. These are the variables `opencode serve` itself reads, so one
/// service environment can configure both.
pub static ENV_FALLBACKS: &[(&str, &str)] = &[
    ("opencode.username", "OPENCODE_SERVER_USERNAME"),
    ("opencode.password", "OPENCODE_SERVER_PASSWORD"),
    ("http.token", "BOO_RECONCILER_TOKEN"),
];

/// Where a value came from, as shown in errors: `(from <origin>)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default in [`KEYS`].
    Default,
    /// The machine's hostname (default of `host.id`).
    Hostname,
    /// The config file, as its path was given or found.
    File(PathBuf),
    /// The named environment variable.
    Env(String),
    /// [`Sources::overrides`].
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::Hostname => f.write_str("the machine's hostname"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => f.write_str(name),
            Origin::CommandLine => f.write_str("the command line"),
        }
    }
}

/// Why the configuration could not be loaded. Every variant stops start-up
/// (exit code 2). Values of [`Kind::DatabaseUrl`] and [`Kind::HttpUrl`]
/// keys are stored already redacted and those of [`Kind::Secret`] keys as
/// `***`, so displaying an error never shows a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file given explicitly ([`Sources::file`]) does not exist.
    #[error("config file {} not found", path.display())]
    FileNotFound { path: PathBuf },

    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The config file is not valid TOML (the message has line and column).
    #[error("config file {} is not valid TOML: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },

    /// A `[section]` of the file is not one of the known sections.
    #[error(
        "unknown section [{section}] in config file {}; valid sections are {}",
        path.display(),
        fmt_sections(valid)
    )]
    UnknownSection {
        path: PathBuf,
        section: String,
        valid: Vec<String>,
    },

    /// A top-level entry of the file is a value, not a section (a setting
    /// written before any `[section]` header, or `loop = 3`).
    #[error(
        "`{name}` at the top level of config file {} is not a section; settings belong in one of the sections {}",
        path.display(),
        fmt_sections(valid)
    )]
    NotASection {
        path: PathBuf,
        name: String,
        valid: Vec<String>,
    },

    /// A key of a known section of the file is not one of its keys.
    #[error(
        "unknown key `{key}` in section [{section}] of config file {}; valid keys in [{section}] are {}{}",
        path.display(),
        valid.join(", "),
        did_you_mean(key, valid)
    )]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
        valid: Vec<String>,
    },

    /// A command-line override names no setting.
    #[error(
        "unknown setting `{key}` (from the command line); expected section.key, one of {}{}",
        valid.join(", "),
        did_you_mean(key, valid)
    )]
    UnknownOverride { key: String, valid: Vec<String> },

    /// A `BOO_RECONCILER_*` environment variable is neither a setting nor
    /// one of [`ENV_NOT_SETTINGS`] (a typo would otherwise leave the
    /// setting it meant at its default).
    #[error(
        "unknown environment variable {name}: it is not a setting; did you mean {closest} ({key})? \
         Settings are read from BOO_RECONCILER_<SECTION>_<KEY>; rename or unset it"
    )]
    UnknownEnv {
        /// The variable as found.
        name: String,
        /// The variable of the setting nearest to it by edit distance.
        closest: String,
        /// That setting, `section.key`.
        key: String,
    },

    /// A value does not parse as its key's kind or breaks its constraint.
    #[error("invalid value {value:?} for {key} (from {origin}): expected {expected}")]
    InvalidValue {
        /// `section.key`.
        key: String,
        /// The value as given (TOML syntax for a non-string file value);
        /// redacted for URLs, `***` for secrets.
        value: String,
        origin: Origin,
        expected: String,
    },

    /// A pattern of a glob list does not compile.
    #[error("invalid glob {glob:?} in {key} (from {origin}): {reason}")]
    InvalidGlob {
        /// `section.key`.
        key: String,
        glob: String,
        origin: Origin,
        reason: String,
    },

    /// `host.id` is set nowhere and the hostname cannot be read.
    #[error(
        "cannot determine host.id from the machine's hostname: {reason}; set host.id in the config file, BOO_RECONCILER_HOST_ID or on the command line"
    )]
    Hostname { reason: String },
}

fn fmt_sections(valid: &[String]) -> String {
    valid
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ")
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

    fn load_with_default_file(
        sources: &Sources,
        default_file: &Path,
    ) -> Result<Config, ConfigError> {
        let file = match &sources.file {
            Some(path) => Some((path.clone(), read_file(path)?)),
            None => match std::fs::read_to_string(default_file) {
                Ok(text) => Some((default_file.to_path_buf(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(ConfigError::ReadFile {
                        path: default_file.to_path_buf(),
                        error,
                    })
                }
            },
        };
        let file = file.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
        Self::resolve(file, &sources.env, &sources.overrides)
    }

    fn resolve(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut slots = Slots(vec![None; KEYS.len()]);

        if let Some((path, text)) = file {
            read_toml(path, text, &mut slots)?;
        }

        refuse_unknown_env(env)?;
        for (i, key) in KEYS.iter().enumerate() {
            let own = key.env_var();
            let find = |var: &str| env.iter().rev().find(|(name, _)| name == var);
            let found = find(&own).map(|(_, v)| (own.clone(), v)).or_else(|| {
                let var = key.fallback_env()?;
                find(var).map(|(_, v)| (var.to_owned(), v))
            });
            if let Some((var, value)) = found {
                let origin = Origin::Env(var);
                slots.0[i] = Some((parse_text(key, value, &origin)?, origin));
            }
        }

        for (name, value) in overrides {
            let key = Key::find(name).ok_or_else(|| ConfigError::UnknownOverride {
                key: name.clone(),
                valid: KEYS.iter().map(Key::name).collect(),
            })?;
            let origin = Origin::CommandLine;
            slots.0[index(key)] = Some((parse_text(key, value, &origin)?, origin));
        }

        for (i, key) in KEYS.iter().enumerate() {
            if slots.0[i].is_none() {
                slots.0[i] = Some(default_value(key)?);
            }
        }
        distinct_labels(&slots)?;

        Ok(Self::build(slots))
    }

    /// Maps the resolved values to the structs. Listing every field here
    /// makes a field without a row a compile error; a row without a field
    /// trips the assertion at the end.
    fn build(mut s: Slots) -> Config {
        let config = Config {
            database: Database {
                url: s.string("database", "url"),
                auto_migrate: s.bool("database", "auto_migrate"),
                notify_channel: s.string("database", "notify_channel"),
                connect_timeout: s.duration("database", "connect_timeout"),
                query_timeout: s.duration("database", "query_timeout"),
            },
            host: Host {
                id: s.string("host", "id"),
            },
            r#loop: Loop {
                interval: s.duration("loop", "interval"),
                jitter: s.duration("loop", "jitter"),
                pass_timeout: s.duration("loop", "pass_timeout"),
                max_parallel_actions: s.int("loop", "max_parallel_actions"),
                dry_run: s.bool("loop", "dry_run"),
            },
            worktrees: Worktrees {
                enabled: s.bool("worktrees", "enabled"),
                root: s.path("worktrees", "root"),
                orphan_min_age: s.duration("worktrees", "orphan_min_age"),
                precious: s.list("worktrees", "precious"),
                reclaim_parallel: s.int("worktrees", "reclaim_parallel"),
                recheck_interval: s.duration("worktrees", "recheck_interval"),
            },
            processes: Processes {
                enabled: s.bool("processes", "enabled"),
                chat_label: s.string("processes", "chat_label"),
                session_label: s.string("processes", "session_label"),
                agent_label: s.string("processes", "agent_label"),
                orphan_min_age: s.duration("processes", "orphan_min_age"),
                term_grace: s.duration("processes", "term_grace"),
            },
            opencode: Opencode {
                enabled: s.bool("opencode", "enabled"),
                url: s.url("opencode", "url"),
                username: s.string("opencode", "username"),
                password: s.string("opencode", "password"),
                timeout: s.duration("opencode", "timeout"),
                orphan_min_age: s.duration("opencode", "orphan_min_age"),
            },
            http: Http {
                listen: s
                    .string("http", "listen")
                    .parse()
                    .expect("validated as an address when parsed"),
                token: s.string("http", "token"),
                allow_insecure_remote: s.bool("http", "allow_insecure_remote"),
            },
        };
        if let Some(i) = s.0.iter().position(Option::is_some) {
            panic!("config key {} is in KEYS but not in Config", KEYS[i].name());
        }
        config
    }

    /// The effective settings without secrets (the database password and
    /// `opencode.password` are redacted: `***` when set, empty when not),
    /// shaped like the config file: `{section: {key: value}}`,
    /// durations in humantime form. Serialize it with `toml::to_string` for
    /// a file-like dump or with `serde_json` for a status endpoint.
    pub fn summary(&self) -> toml::Table {
        fn dur(d: Duration) -> toml::Value {
            humantime::format_duration(d).to_string().into()
        }
        let mut t = toml::Table::new();
        let mut put = |section: &str, key: &str, value: toml::Value| {
            t.entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("summary sections are tables")
                .insert(key.to_owned(), value);
        };
        put("database", "url", redact_url(&self.database.url).into());
        put(
            "database",
            "auto_migrate",
            self.database.auto_migrate.into(),
        );
        put(
            "database",
            "notify_channel",
            self.database.notify_channel.clone().into(),
        );
        put(
            "database",
            "connect_timeout",
            dur(self.database.connect_timeout),
        );
        put(
            "database",
            "query_timeout",
            dur(self.database.query_timeout),
        );
        put("host", "id", self.host.id.clone().into());
        put("loop", "interval", dur(self.r#loop.interval));
        put("loop", "jitter", dur(self.r#loop.jitter));
        put("loop", "pass_timeout", dur(self.r#loop.pass_timeout));
        let parallel = i64::try_from(self.r#loop.max_parallel_actions).unwrap_or(i64::MAX);
        put("loop", "max_parallel_actions", parallel.into());
        put("loop", "dry_run", self.r#loop.dry_run.into());
        put("worktrees", "enabled", self.worktrees.enabled.into());
        let root = self.worktrees.root.to_string_lossy().into_owned();
        put("worktrees", "root", root.into());
        put(
            "worktrees",
            "orphan_min_age",
            dur(self.worktrees.orphan_min_age),
        );
        let precious: Vec<toml::Value> = self
            .worktrees
            .precious
            .iter()
            .map(|g| g.clone().into())
            .collect();
        put("worktrees", "precious", precious.into());
        let reclaim = i64::try_from(self.worktrees.reclaim_parallel).unwrap_or(i64::MAX);
        put("worktrees", "reclaim_parallel", reclaim.into());
        put(
            "worktrees",
            "recheck_interval",
            dur(self.worktrees.recheck_interval),
        );
        let p = &self.processes;
        put("processes", "enabled", p.enabled.into());
        put("processes", "chat_label", p.chat_label.clone().into());
        put("processes", "session_label", p.session_label.clone().into());
        put("processes", "agent_label", p.agent_label.clone().into());
        put("processes", "orphan_min_age", dur(p.orphan_min_age));
        put("processes", "term_grace", dur(p.term_grace));
        let oc = &self.opencode;
        put("opencode", "enabled", oc.enabled.into());
        let url = oc.url.as_ref().map(display_url).unwrap_or_default();
        put("opencode", "url", url.into());
        put("opencode", "username", oc.username.clone().into());
        put("opencode", "password", redact_secret(&oc.password).into());
        put("opencode", "timeout", dur(oc.timeout));
        put("opencode", "orphan_min_age", dur(oc.orphan_min_age));
        put("http", "listen", self.http.listen.to_string().into());
        put("http", "token", redact_secret(&self.http.token).into());
        put(
            "http",
            "allow_insecure_remote",
            self.http.allow_insecure_remote.into(),
        );
        t
    }

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
fn precious_glob(pattern: &str) -> Result<Vec<Glob>, String> {
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

/// Hides the password of a database URL, for logs and error messages:
/// `postgres://u:secret@h/db` → `postgres://u:***@h/db`; a `password=`
/// query parameter is hidden too. A URL without a password comes back
/// unchanged. When the URL is ambiguous (an unencoded `@`, `/` or `?` in the
/// password), it errs on the side of hiding too much: everything between
/// the first `:` after the scheme and the last `@` is hidden.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    let tail = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str("***");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    match tail.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

// ---------------------------------------------------------------------------
// Resolution internals

/// A parsed value of some [`Kind`].
#[derive(Clone, Debug)]
enum Value {
    Bool(bool),
    Duration(Duration),
    Int(usize),
    Str(String),
    Path(PathBuf),
    Url(Option<url::Url>),
    List(Vec<String>),
}

/// One resolved value per row of [`KEYS`], same order.
struct Slots(Vec<Option<(Value, Origin)>>);

impl Slots {
    fn take(&mut self, section: &str, key: &str) -> Value {
        let i = KEYS
            .iter()
            .position(|k| k.section == section && k.key == key)
            .unwrap_or_else(|| panic!("config key {section}.{key} is not in KEYS"));
        let (value, _) = self.0[i]
            .take()
            .unwrap_or_else(|| panic!("config key {section}.{key} taken twice"));
        value
    }

    fn mismatch(section: &str, key: &str, value: &Value) -> ! {
        panic!("config key {section}.{key} has a value of the wrong kind: {value:?}")
    }

    fn bool(&mut self, section: &str, key: &str) -> bool {
        match self.take(section, key) {
            Value::Bool(b) => b,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn duration(&mut self, section: &str, key: &str) -> Duration {
        match self.take(section, key) {
            Value::Duration(d) => d,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn int(&mut self, section: &str, key: &str) -> usize {
        match self.take(section, key) {
            Value::Int(n) => n,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn string(&mut self, section: &str, key: &str) -> String {
        match self.take(section, key) {
            Value::Str(s) => s,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn path(&mut self, section: &str, key: &str) -> PathBuf {
        match self.take(section, key) {
            Value::Path(p) => p,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn url(&mut self, section: &str, key: &str) -> Option<url::Url> {
        match self.take(section, key) {
            Value::Url(u) => u,
            other => Self::mismatch(section, key, &other),
        }
    }

    fn list(&mut self, section: &str, key: &str) -> Vec<String> {
        match self.take(section, key) {
            Value::List(l) => l,
            other => Self::mismatch(section, key, &other),
        }
    }
}

fn index(key: &Key) -> usize {
    KEYS.iter()
        .position(|k| std::ptr::eq(k, key))
        .expect("keys come from KEYS")
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::FileNotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::ReadFile {
                path: path.to_path_buf(),
                error,
            }
        }
    })
}

fn sections() -> Vec<String> {
    let mut seen = Vec::new();
    for key in KEYS {
        if !seen.iter().any(|s| s == key.section) {
            seen.push(key.section.to_owned());
        }
    }
    seen
}

fn read_toml(path: &Path, text: &str, slots: &mut Slots) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let origin = Origin::File(path.to_path_buf());
    for (section, entries) in &table {
        let Some(entries) = entries.as_table() else {
            return Err(ConfigError::NotASection {
                path: path.to_path_buf(),
                name: section.clone(),
                valid: sections(),
            });
        };
        if !KEYS.iter().any(|k| k.section == section) {
            return Err(ConfigError::UnknownSection {
                path: path.to_path_buf(),
                section: section.clone(),
                valid: sections(),
            });
        }
        for (name, value) in entries {
            let key = KEYS
                .iter()
                .find(|k| k.section == section && k.key == name)
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    section: section.clone(),
                    key: name.clone(),
                    valid: KEYS
                        .iter()
                        .filter(|k| k.section == section)
                        .map(|k| k.key.to_owned())
                        .collect(),
                })?;
            slots.0[index(key)] = Some((parse_toml(key, value, &origin)?, origin.clone()));
        }
    }
    Ok(())
}

/// Refuses the first `BOO_RECONCILER_*` variable of `env` that is no
/// setting, naming the setting it most likely meant.
fn refuse_unknown_env(env: &[(String, String)]) -> Result<(), ConfigError> {
    let vars: Vec<(String, &Key)> = KEYS.iter().map(|k| (k.env_var(), k)).collect();
    let unknown = env.iter().map(|(name, _)| name).find(|name| {
        name.starts_with(ENV_PREFIX)
            && !ENV_NOT_SETTINGS.contains(&name.as_str())
            && !vars.iter().any(|(var, _)| var == *name)
    });
    let Some(name) = unknown else {
        return Ok(());
    };
    let (closest, key) = vars
        .iter()
        .min_by_key(|(var, _)| strsim::levenshtein(var, name))
        .expect("KEYS is not empty");
    Err(ConfigError::UnknownEnv {
        name: name.clone(),
        closest: closest.clone(),
        key: key.name(),
    })
}

/// ". Did you mean `x`?" for the valid name nearest to `name`, when it
/// is near enough to be a typo of it.
fn did_you_mean(name: &str, valid: &[String]) -> String {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(v, name), v))
        .min()
        .filter(|(d, v)| *d <= 3.max(v.len() / 4))
        .map(|(_, v)| format!(". Did you mean `{v}`?"))
        .unwrap_or_default()
}

/// Refuses two label keys with the same name: one variable cannot tell a
/// chat and an agent apart, and "carries the chat label and the agent
/// label" would shrink to one condition.
fn distinct_labels(slots: &Slots) -> Result<(), ConfigError> {
    let labels: Vec<(&Key, &str, &Origin)> = KEYS
        .iter()
        .zip(&slots.0)
        .filter(|(key, _)| key.kind == Kind::Label)
        .filter_map(|(key, slot)| match slot {
            Some((Value::Str(value), origin)) => Some((key, value.as_str(), origin)),
            _ => None,
        })
        .collect();
    for (i, (key, value, origin)) in labels.iter().enumerate() {
        if let Some((other, _, other_origin)) = labels[..i].iter().find(|(_, v, _)| v == value) {
            return Err(invalid(
                key,
                value,
                origin,
                &format!(
                    "a name different from {} (also {value}, from {other_origin}): each label names a different thing",
                    other.name()
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(key: &Key, value: &str, origin: &Origin, expected: &str) -> ConfigError {
    let value = match key.kind {
        Kind::DatabaseUrl | Kind::HttpUrl => redact_url(value),
        Kind::Secret => "***".to_owned(),
        _ => value.to_owned(),
    };
    ConfigError::InvalidValue {
        key: key.name(),
        value,
        origin: origin.clone(),
        expected: expected.to_owned(),
    }
}

/// Parses a value given as a string: environment, command line, built-in
/// default, and string values of the file.
fn parse_text(key: &Key, text: &str, origin: &Origin) -> Result<Value, ConfigError> {
    if key.kind.is_list() {
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        return list(key, items, origin);
    }
    scalar(key.kind, text).map_err(|expected| invalid(key, text, origin, expected))
}

/// Parses a value of the file.
fn parse_toml(key: &Key, value: &toml::Value, origin: &Origin) -> Result<Value, ConfigError> {
    // A string is shown as it was written; anything else in TOML syntax.
    let shown = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned);
    let wrong = |expected: &str| invalid(key, &shown, origin, expected);
    match (key.kind, value) {
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
        (Kind::Bool, _) => Err(wrong("true or false (a TOML boolean, without quotes)")),
        (Kind::PositiveInt, toml::Value::Integer(n)) => match usize::try_from(*n) {
            Ok(n) if n >= 1 => Ok(Value::Int(n)),
            _ => Err(wrong(Kind::PositiveInt.expected())),
        },
        (Kind::PositiveInt, _) => Err(wrong(
            "a positive integer (1 or more, a TOML integer without quotes)",
        )),
        (kind, toml::Value::Array(items)) if kind.is_list() => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect();
            match strings {
                Some(strings) => list(key, strings, origin),
                None => Err(wrong("an array of strings like [\".env\", \".env.*\"]")),
            }
        }
        (kind, _) if kind.is_list() => {
            Err(wrong("an array of strings like [\".env\", \".env.*\"]"))
        }
        (kind, toml::Value::String(s)) => {
            scalar(kind, s).map_err(|expected| invalid(key, s, origin, expected))
        }
        (kind, _) => Err(wrong(&format!(
            "{} (a quoted TOML string)",
            kind.expected()
        ))),
    }
}

/// Checks the items of a list kind.
fn list(key: &Key, items: Vec<String>, origin: &Origin) -> Result<Value, ConfigError> {
    if key.kind == Kind::GlobList {
        for item in &items {
            precious_glob(item).map_err(|reason| ConfigError::InvalidGlob {
                key: key.name(),
                glob: item.clone(),
                origin: origin.clone(),
                reason,
            })?;
        }
    }
    Ok(Value::List(items))
}

/// Parses a scalar from a string; the error is what was expected.
fn scalar(kind: Kind, text: &str) -> Result<Value, &'static str> {
    let expected = kind.expected();
    match kind {
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(expected),
        },
        // humantime accepts up to u64::MAX seconds; such a value would
        // make the first deadline computed from it panic.
        Kind::Duration | Kind::NonZeroDuration => match humantime::parse_duration(text.trim()) {
            Ok(d) if d > MAX_DURATION => Err("a duration of at most 365d"),
            Ok(d) if d.is_zero() && kind == Kind::NonZeroDuration => {
                Err("a duration greater than zero, like 30s or 10m")
            }
            Ok(d) => Ok(Value::Duration(d)),
            Err(_) => Err(expected),
        },
        Kind::PositiveInt => match text.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Value::Int(n)),
            _ => Err(expected),
        },
        Kind::String | Kind::Secret => Ok(Value::Str(text.to_owned())),
        Kind::SocketAddr => text
            .trim()
            .parse::<std::net::SocketAddr>()
            .map(|a| Value::Str(a.to_string()))
            .map_err(|_| expected),
        Kind::HttpUrl => http_url(text).map(Value::Url).ok_or(expected),
        Kind::Name => {
            if text.is_empty() || text.chars().any(char::is_whitespace) {
                Err(expected)
            } else {
                Ok(Value::Str(text.to_owned()))
            }
        }
        Kind::Label => {
            let mut chars = text.chars();
            let shaped = chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !shaped {
                Err(expected)
            } else if ordinary_variable(text).is_some() {
                Err("a name that ordinary processes do not carry (not PATH, HOME, USER, SHELL, PWD, LANG, LC_*, TERM, LOGNAME, XDG_*, SSH_*, SUDO_*, LD_*, ...): every process carrying the label would be taken for an agent")
            } else {
                Ok(Value::Str(text.to_owned()))
            }
        }
        Kind::Path => {
            if text.is_empty() {
                Err(expected)
            } else {
                Ok(Value::Path(PathBuf::from(text)))
            }
        }
        Kind::AbsolutePath => {
            let path = Path::new(text);
            if path.is_absolute() {
                Ok(Value::Path(path.to_path_buf()))
            } else {
                Err(expected)
            }
        }
        Kind::DatabaseUrl => {
            let ok = ["sqlite://", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme));
            if ok {
                Ok(Value::Str(text.to_owned()))
            } else {
                Err(expected)
            }
        }
        Kind::StringList | Kind::GlobList => unreachable!("lists are parsed by list()"),
    }
}

/// An [`Kind::HttpUrl`]: `Some(None)` for an empty string, `None` when
/// invalid (not http(s), no host, credentials, a query or a fragment).
fn http_url(text: &str) -> Option<Option<url::Url>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(None);
    }
    let url = url::Url::parse(text).ok()?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    ok.then_some(Some(url))
}

fn default_value(key: &Key) -> Result<(Value, Origin), ConfigError> {
    match key.default {
        DefaultValue::Text(text) => {
            let origin = Origin::Default;
            Ok((parse_text(key, text, &origin)?, origin))
        }
        DefaultValue::List(items) => {
            let origin = Origin::Default;
            let items = items.iter().map(|s| (*s).to_owned()).collect();
            Ok((list(key, items, &origin)?, origin))
        }
        DefaultValue::Hostname => {
            let name = nix::unistd::gethostname()
                .map_err(|e| ConfigError::Hostname {
                    reason: e.to_string(),
                })?
                .into_string()
                .map_err(|_| ConfigError::Hostname {
                    reason: "the hostname is not valid UTF-8".to_owned(),
                })?;
            let origin = Origin::Hostname;
            Ok((parse_text(key, &name, &origin)?, origin))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/boo-reconciler.toml");

    fn s(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    /// Sets `host.id` on the command line, so tests don't depend on the
    /// machine's hostname.
    fn with_host(mut overrides: Vec<(String, String)>) -> Vec<(String, String)> {
        overrides.insert(0, s("host.id", "test-host"));
        overrides
    }

    fn defaults() -> Config {
        Config::resolve(None, &[], &with_host(vec![])).unwrap()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let tmp = file.map(write);
        let sources = Sources {
            file: tmp.as_ref().map(|f| f.path().to_path_buf()),
            env: env.iter().map(|(a, b)| s(a, b)).collect(),
            overrides: with_host(overrides.iter().map(|(a, b)| s(a, b)).collect()),
        };
        Config::load(&sources)
    }

    fn load_err(
        file: Option<&str>,
        env: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> ConfigError {
        load(file, env, overrides).expect_err("expected a config error")
    }

    fn setting(config: &Config, name: &str) -> toml::Value {
        let (section, key) = name.split_once('.').unwrap();
        config.summary()[section][key].clone()
    }

    // -- defaults, example file, table ------------------------------------

    #[test]
    fn defaults_are_the_documented_values() {
        let c = defaults();
        assert_eq!(c.database.url, "sqlite://boo-reconciler.db");
        assert!(c.database.auto_migrate);
        assert_eq!(c.host.id, "test-host");
        assert_eq!(c.r#loop.interval, Duration::from_secs(30));
        assert_eq!(c.r#loop.jitter, Duration::from_secs(3));
        assert_eq!(c.r#loop.pass_timeout, Duration::from_secs(120));
        assert_eq!(c.r#loop.max_parallel_actions, 4);
        assert!(!c.r#loop.dry_run);
        assert!(c.worktrees.enabled && c.processes.enabled && c.opencode.enabled);
        assert_eq!(c.worktrees.root, PathBuf::from("/tmp/booworktrees"));
        assert_eq!(c.worktrees.orphan_min_age, Duration::from_secs(600));
        assert_eq!(c.worktrees.precious, vec![".env", ".env.*"]);
        assert_eq!(c.processes.chat_label, "BOO_CHAT_ID");
        assert_eq!(c.processes.session_label, "BOO_SESSION_ID");
        assert_eq!(c.processes.agent_label, "BOO_AGENT");
        assert_eq!(c.processes.orphan_min_age, Duration::from_secs(120));
        assert_eq!(c.processes.term_grace, Duration::from_secs(5));
        assert_eq!(
            Key::find("processes.term_grace").unwrap().env_var(),
            "BOO_RECONCILER_PROCESSES_TERM_GRACE"
        );
        assert_eq!(
            c.opencode.url.as_ref().map(|u| u.as_str()),
            Some("http://127.0.0.1:4096/")
        );
        assert_eq!(c.opencode.username, "opencode");
        assert_eq!(c.opencode.password, "");
        assert_eq!(c.opencode.timeout, Duration::from_secs(3));
        assert_eq!(c.opencode.orphan_min_age, Duration::from_secs(600));
    }

    #[test]
    fn host_id_defaults_to_the_hostname() {
        let c = Config::defaults().unwrap();
        let hostname = nix::unistd::gethostname().unwrap();
        assert_eq!(c.host.id, hostname.to_string_lossy());
    }

    #[test]
    fn example_file_equals_defaults() {
        let sources = Sources {
            file: Some(PathBuf::from(EXAMPLE)),
            env: vec![],
            overrides: with_host(vec![]),
        };
        assert_eq!(Config::load(&sources).unwrap(), defaults());
    }

    #[test]
    fn example_file_shows_every_key_with_its_doc() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for key in KEYS {
            let header = format!("[{}]", key.section);
            let start = lines
                .iter()
                .position(|l| l.trim() == header)
                .unwrap_or_else(|| panic!("example file lacks {header}"));
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |p| start + 1 + p);
            let assignment = format!("{} =", key.key);
            let at = (start + 1..end)
                .find(|&i| {
                    let l = lines[i].trim();
                    l.strip_prefix("# ").unwrap_or(l).starts_with(&assignment)
                })
                .unwrap_or_else(|| panic!("example file lacks {} in {header}", key.key));
            // host.id is the one commented-out setting: its default is computed.
            let commented = lines[at].trim_start().starts_with('#');
            assert_eq!(
                commented,
                key.default == DefaultValue::Hostname,
                "{}",
                key.name()
            );
            assert_eq!(
                lines[at - 1].trim(),
                format!("# {}", key.doc),
                "comment above {} differs from its doc in KEYS",
                key.name()
            );
        }
    }

    #[test]
    fn key_table_is_consistent() {
        let names: BTreeSet<String> = KEYS.iter().map(Key::name).collect();
        assert_eq!(names.len(), KEYS.len(), "duplicate key");
        let vars: BTreeSet<String> = KEYS.iter().map(Key::env_var).collect();
        assert_eq!(
            vars.len(),
            KEYS.len(),
            "two keys share an environment variable"
        );
        assert_eq!(
            Key::find("worktrees.orphan_min_age").unwrap().env_var(),
            "BOO_RECONCILER_WORKTREES_ORPHAN_MIN_AGE"
        );
        assert_eq!(
            Key::find("loop.max_parallel_actions").unwrap().env_var(),
            "BOO_RECONCILER_LOOP_MAX_PARALLEL_ACTIONS"
        );
        for key in KEYS {
            assert!(
                !key.doc.contains('\n'),
                "{}: doc must be one line",
                key.name()
            );
        }
    }

    #[test]
    fn summary_covers_every_key_and_round_trips() {
        let c = defaults();
        let summary = c.summary();
        let mut names = BTreeSet::new();
        for (section, keys) in &summary {
            for key in keys.as_table().unwrap().keys() {
                names.insert(format!("{section}.{key}"));
            }
        }
        let expected: BTreeSet<String> = KEYS.iter().map(Key::name).collect();
        assert_eq!(names, expected);

        let dumped = toml::to_string(&summary).unwrap();
        let reloaded = load(Some(&dumped), &[], &[]).unwrap();
        assert_eq!(reloaded, c);
    }

    #[test]
    fn summary_and_debug_hide_the_database_password() {
        let c = load(None, &[], &[("database.url", "postgres://u:secret@h/db")]).unwrap();
        assert_eq!(c.database.url, "postgres://u:secret@h/db");
        assert_eq!(
            setting(&c, "database.url").as_str(),
            Some("postgres://u:***@h/db")
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
    }

    // -- precedence -------------------------------------------------------

    /// Three values for each kind, each different from the one before and
    /// from the default: (file as TOML, environment, command line), and
    /// what the summary shows for each.
    fn samples(kind: Kind) -> [(&'static str, &'static str, toml::Value); 3] {
        use toml::Value as V;
        let strs = |v: &[&str]| V::Array(v.iter().map(|s| V::from(*s)).collect());
        match kind {
            Kind::Bool => [
                ("false", "", V::Boolean(false)),
                ("", "yes", V::Boolean(true)),
                ("", "off", V::Boolean(false)),
            ],
            Kind::Duration | Kind::NonZeroDuration => [
                ("\"1h 30m\"", "", V::from("1h 30m")),
                ("", "7s", V::from("7s")),
                ("", "11m", V::from("11m")),
            ],
            Kind::PositiveInt => [
                ("7", "", V::Integer(7)),
                ("", "8", V::Integer(8)),
                ("", "9", V::Integer(9)),
            ],
            Kind::Label => [
                ("\"FILE_LABEL\"", "", V::from("FILE_LABEL")),
                ("", "ENV_LABEL", V::from("ENV_LABEL")),
                ("", "CLI_LABEL_2", V::from("CLI_LABEL_2")),
            ],
            Kind::Name => [
                ("\"file-host\"", "", V::from("file-host")),
                ("", "env-host", V::from("env-host")),
                ("", "cli-host", V::from("cli-host")),
            ],
            Kind::AbsolutePath => [
                ("\"/srv/file\"", "", V::from("/srv/file")),
                ("", "/srv/env", V::from("/srv/env")),
                ("", "/srv/cli", V::from("/srv/cli")),
            ],
            Kind::DatabaseUrl => [
                ("\"sqlite://file.db\"", "", V::from("sqlite://file.db")),
                ("", "postgres://h/env", V::from("postgres://h/env")),
                ("", "postgresql://h/cli", V::from("postgresql://h/cli")),
            ],
            Kind::HttpUrl => [
                ("\"http://file:1\"", "", V::from("http://file:1")),
                (
                    "",
                    "https://env.example/oc/",
                    V::from("https://env.example/oc/"),
                ),
                ("", "", V::from("")),
            ],
            // A secret shows as *** whatever its value.
            Kind::Secret => [
                ("\"file-secret\"", "", V::from("***")),
                ("", "env-secret", V::from("***")),
                ("", "cli-secret", V::from("***")),
            ],
            Kind::GlobList | Kind::StringList => [
                ("[\"*.file\"]", "", strs(&["*.file"])),
                ("", " *.env1 , *.env2 ,", strs(&["*.env1", "*.env2"])),
                ("", "*.cli", strs(&["*.cli"])),
            ],
            Kind::SocketAddr => [
                ("\"127.0.0.1:1\"", "", V::from("127.0.0.1:1")),
                ("", "0.0.0.0:2", V::from("0.0.0.0:2")),
                ("", "[::1]:3", V::from("[::1]:3")),
            ],
            other => panic!("add samples for {other:?}"),
        }
    }

    #[test]
    fn precedence_override_env_file_default_for_every_key() {
        for key in KEYS {
            let name = key.name();
            let var = key.env_var();
            let [(file_toml, _, file_v), (_, env_s, env_v), (_, cli_s, cli_v)] =
                match (key.kind, key.default) {
                    // The samples must differ from the default at each step.
                    (Kind::Bool, DefaultValue::Text("false")) => [
                        ("true", "", toml::Value::Boolean(true)),
                        ("", "no", toml::Value::Boolean(false)),
                        ("", "on", toml::Value::Boolean(true)),
                    ],
                    _ => samples(key.kind),
                };
            let file = format!("[{}]\n{} = {}\n", key.section, key.key, file_toml);
            // host.id is set on the command line by `load`; drop that for it.
            let run = |file: Option<&str>, env: &[(&str, &str)], cli: &[(&str, &str)]| {
                let tmp = file.map(write);
                let mut overrides: Vec<_> = with_host(vec![]);
                if key.name() == "host.id" {
                    overrides.clear();
                }
                overrides.extend(cli.iter().map(|(a, b)| s(a, b)));
                let c = Config::load(&Sources {
                    file: tmp.as_ref().map(|f| f.path().to_path_buf()),
                    env: env.iter().map(|(a, b)| s(a, b)).collect(),
                    overrides,
                })
                .unwrap();
                setting(&c, &name)
            };
            let default = setting(&Config::defaults().unwrap(), &name);
            assert_eq!(run(None, &[], &[]), default, "{name}: default");
            assert_ne!(file_v, default, "{name}: sample equals default");
            assert_eq!(
                run(Some(&file), &[], &[]),
                file_v,
                "{name}: file beats default"
            );
            assert_eq!(
                run(Some(&file), &[(&var, env_s)], &[]),
                env_v,
                "{name}: env beats file"
            );
            assert_eq!(
                run(Some(&file), &[(&var, env_s)], &[(&name, cli_s)]),
                cli_v,
                "{name}: override beats env"
            );
            assert_eq!(
                run(None, &[], &[(&name, cli_s)]),
                cli_v,
                "{name}: override alone"
            );
        }
    }

    #[test]
    fn last_occurrence_wins_within_a_source() {
        let c = load(
            None,
            &[
                ("BOO_RECONCILER_LOOP_JITTER", "1s"),
                ("BOO_RECONCILER_LOOP_JITTER", "2s"),
            ],
            &[("loop.interval", "5s"), ("loop.interval", "6s")],
        )
        .unwrap();
        assert_eq!(c.r#loop.jitter, Duration::from_secs(2));
        assert_eq!(c.r#loop.interval, Duration::from_secs(6));
    }

    #[test]
    fn value_syntax() {
        for (text, expected) in [
            ("1", true),
            ("ON", true),
            ("Yes", true),
            ("0", false),
            ("no", false),
            ("off", false),
            ("FALSE", false),
        ] {
            let c = load(None, &[("BOO_RECONCILER_DATABASE_AUTO_MIGRATE", text)], &[]).unwrap();
            assert_eq!(c.database.auto_migrate, expected, "{text}");
        }
        let c = load(
            None,
            &[("BOO_RECONCILER_WORKTREES_PRECIOUS", "")],
            &[
                ("loop.jitter", "0s"),
                ("worktrees.orphan_min_age", "1h 30m"),
            ],
        )
        .unwrap();
        assert!(
            c.worktrees.precious.is_empty(),
            "empty env list is an empty list"
        );
        assert_eq!(c.r#loop.jitter, Duration::ZERO, "jitter may be 0");
        assert_eq!(c.worktrees.orphan_min_age, Duration::from_secs(5400));
    }

    #[test]
    fn an_unknown_boo_reconciler_variable_is_refused_naming_the_closest_setting() {
        let err = load_err(None, &[("BOO_RECONCILER_WORKTREE_ROOT", "/srv/wt")], &[]);
        assert!(
            matches!(&err, ConfigError::UnknownEnv { name, closest, key }
                if name == "BOO_RECONCILER_WORKTREE_ROOT"
                    && closest == "BOO_RECONCILER_WORKTREES_ROOT"
                    && key == "worktrees.root"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unknown environment variable BOO_RECONCILER_WORKTREE_ROOT: it is not a setting; \
             did you mean BOO_RECONCILER_WORKTREES_ROOT (worktrees.root)? Settings are read \
             from BOO_RECONCILER_<SECTION>_<KEY>; rename or unset it"
        );
        // Refused even beside the variable it meant to set.
        let err = load_err(
            None,
            &[
                ("BOO_RECONCILER_LOOP_INTERVAL", "9s"),
                ("BOO_RECONCILER_LOOP_INTERVALL", "soon"),
            ],
            &[],
        );
        assert!(
            matches!(&err, ConfigError::UnknownEnv { name, closest, .. }
                if name == "BOO_RECONCILER_LOOP_INTERVALL"
                    && closest == "BOO_RECONCILER_LOOP_INTERVAL"),
            "{err:?}"
        );
        let err = load_err(None, &[("BOO_RECONCILER_", "x")], &[]);
        assert!(matches!(err, ConfigError::UnknownEnv { .. }), "{err:?}");
    }

    #[test]
    fn the_token_and_log_variables_are_not_settings_and_not_refused() {
        let sources = Sources {
            file: None,
            env: vec![
                s("BOO_RECONCILER_TOKEN", "t0ken"),
                s("BOO_RECONCILER_LOG", "debug"),
                s("BOO_RECONCILER_LOOP_INTERVAL", "9s"),
                s("PATH", "/bin"),
            ],
            overrides: with_host(vec![]),
        };
        let c = Config::resolve(None, &sources.env, &sources.overrides).unwrap();
        assert_eq!(c.r#loop.interval, Duration::from_secs(9));
        assert_eq!(c.http.token, "t0ken");
        assert_eq!(
            sources.unrecognized_env(),
            vec!["BOO_RECONCILER_TOKEN", "BOO_RECONCILER_LOG"]
        );
    }

    #[test]
    fn a_typo_of_a_key_is_answered_with_the_key_it_most_likely_meant() {
        let keys: Vec<String> = KEYS.iter().map(Key::name).collect();
        assert_eq!(
            did_you_mean("loop.intervl", &keys),
            ". Did you mean `loop.interval`?"
        );
        assert_eq!(
            did_you_mean("worktree.root", &keys),
            ". Did you mean `worktrees.root`?"
        );
        assert_eq!(did_you_mean("completely.different", &keys), "");
        let err = load_err(None, &[], &[("loop.intervall", "30s")]);
        assert!(
            err.to_string().ends_with("Did you mean `loop.interval`?"),
            "{err}"
        );
    }

    // -- bounds -----------------------------------------------------------

    #[test]
    fn a_duration_beyond_the_bound_is_refused_never_a_panic() {
        for key in KEYS
            .iter()
            .filter(|k| matches!(k.kind, Kind::Duration | Kind::NonZeroDuration))
        {
            assert!(
                key.doc.contains("at most 365d"),
                "{}: doc must state the bound",
                key.name()
            );
            let name = key.name();
            let err = load_err(None, &[], &[(&name, "4000000000000000h")]);
            assert_invalid(
                err,
                &name,
                "4000000000000000h",
                Origin::CommandLine,
                "a duration of at most 365d",
            );
            let var = key.env_var();
            let err = load_err(None, &[(&var, "366d")], &[]);
            assert!(
                matches!(err, ConfigError::InvalidValue { .. }),
                "{name}: {err:?}"
            );
            let c = load(None, &[], &[(&name, "365d")]).unwrap();
            let shown = setting(&c, &name);
            // The summary is loadable again, even at the bound.
            assert_eq!(
                humantime::parse_duration(shown.as_str().unwrap()).unwrap(),
                MAX_DURATION,
                "{name}"
            );
        }
    }

    #[test]
    fn deadlines_computed_from_durations_at_the_bound_do_not_overflow() {
        // The largest sums the controller forms from settings: the next
        // pass (interval + jitter), the nudge client's limit and the
        // queue's bound (pass_timeout + 30s, pass_timeout * 2), readiness
        // (interval * 3), and each grace or timeout from now.
        let worst = MAX_DURATION * 3 + Duration::from_secs(60);
        assert!(std::time::Instant::now().checked_add(worst).is_some());
        assert!(tokio::time::Instant::now().checked_add(worst).is_some());
        assert!(std::time::SystemTime::now().checked_add(worst).is_some());
    }

    // -- files ------------------------------------------------------------

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = Config::load(&Sources {
            file: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(matches!(&err, ConfigError::FileNotFound { path: p } if *p == path));
        assert_eq!(
            err.to_string(),
            format!("config file {} not found", path.display())
        );
    }

    #[test]
    fn default_file_is_optional_and_read_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boo-reconciler.toml");
        let sources = Sources {
            overrides: with_host(vec![]),
            ..Sources::default()
        };
        let c = Config::load_with_default_file(&sources, &path).unwrap();
        assert_eq!(c, defaults());
        std::fs::write(&path, "[loop]\ninterval = \"1m\"\n").unwrap();
        let c = Config::load_with_default_file(&sources, &path).unwrap();
        assert_eq!(c.r#loop.interval, Duration::from_secs(60));
        // A bad value in it names it.
        std::fs::write(&path, "[loop]\ninterval = \"soon\"\n").unwrap();
        let err = Config::load_with_default_file(&sources, &path).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("(from {})", path.display())),
            "{err}"
        );
    }

    #[test]
    fn invalid_toml_names_the_file() {
        let f = write("[loop\ninterval = 30s\n");
        let err = Config::load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "config file {} is not valid TOML: ",
                f.path().display()
            )),
            "{msg}"
        );
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn unknown_file_key_is_named_with_the_valid_keys() {
        let f = write("[loop]\nintervall = \"30s\"\n");
        let err = Config::load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Sources::default()
        })
        .unwrap_err();
        match &err {
            ConfigError::UnknownKey {
                path,
                section,
                key,
                valid,
            } => {
                assert_eq!(path, f.path());
                assert_eq!(section, "loop");
                assert_eq!(key, "intervall");
                assert_eq!(
                    valid,
                    &[
                        "interval",
                        "jitter",
                        "pass_timeout",
                        "max_parallel_actions",
                        "dry_run"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "unknown key `intervall` in section [loop] of config file {}; valid keys in [loop] are interval, jitter, pass_timeout, max_parallel_actions, dry_run. Did you mean `interval`?",
                f.path().display()
            )
        );
    }

    #[test]
    fn unknown_file_section_is_named_with_the_valid_sections() {
        let f = write("[worktree]\nroot = \"/x\"\n");
        let err = Config::load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownSection { section, .. } if section == "worktree")
        );
        assert_eq!(
            err.to_string(),
            format!(
                "unknown section [worktree] in config file {}; valid sections are [database], [host], [loop], [worktrees], [processes], [opencode], [http]",
                f.path().display()
            )
        );
    }

    #[test]
    fn top_level_value_in_file_is_rejected() {
        for text in ["interval = \"30s\"\n", "loop = 3\n"] {
            let err = load_err(Some(text), &[], &[]);
            assert!(matches!(err, ConfigError::NotASection { .. }), "{err:?}");
            assert!(err.to_string().contains("is not a section"), "{err}");
        }
    }

    #[test]
    fn unknown_override_is_an_error() {
        let err = load_err(None, &[], &[("loop.intervall", "30s")]);
        assert!(
            matches!(&err, ConfigError::UnknownOverride { key, .. } if key == "loop.intervall")
        );
        assert!(err.to_string().starts_with(
            "unknown setting `loop.intervall` (from the command line); expected section.key, one of database.url, "
        ), "{err}");
        let err = load_err(None, &[], &[("interval", "30s")]);
        assert!(matches!(err, ConfigError::UnknownOverride { .. }));
    }

    // -- bad values -------------------------------------------------------

    fn assert_invalid(err: ConfigError, key: &str, value: &str, origin: Origin, expected: &str) {
        let msg = err.to_string();
        match err {
            ConfigError::InvalidValue {
                key: k,
                value: v,
                origin: o,
                expected: e,
            } => {
                assert_eq!(
                    (k.as_str(), v.as_str(), &o, e.as_str()),
                    (key, value, &origin, expected),
                    "{msg}"
                );
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
        assert_eq!(
            msg,
            format!("invalid value {value:?} for {key} (from {origin}): expected {expected}")
        );
    }

    #[test]
    fn bad_duration_from_env_names_key_value_and_variable() {
        let err = load_err(None, &[("BOO_RECONCILER_LOOP_INTERVAL", "soon")], &[]);
        assert_eq!(
            err.to_string(),
            "invalid value \"soon\" for loop.interval (from BOO_RECONCILER_LOOP_INTERVAL): expected a duration like 30s or 10m"
        );
    }

    #[test]
    fn bad_values_name_key_value_and_source() {
        let file = |text: &str| {
            let f = write(text);
            let path = f.path().to_path_buf();
            let err = Config::load(&Sources {
                file: Some(path.clone()),
                ..Sources::default()
            })
            .unwrap_err();
            (err, Origin::File(path))
        };
        let env = |var: &str, value: &str| {
            (
                load_err(None, &[(var, value)], &[]),
                Origin::Env(var.to_owned()),
            )
        };
        let cli =
            |key: &str, value: &str| (load_err(None, &[], &[(key, value)]), Origin::CommandLine);

        let (e, o) = cli("database.auto_migrate", "maybe");
        assert_invalid(
            e,
            "database.auto_migrate",
            "maybe",
            o,
            "a boolean: true/false, 1/0, yes/no or on/off",
        );
        let (e, o) = file("[database]\nauto_migrate = \"yes\"\n");
        assert_invalid(
            e,
            "database.auto_migrate",
            "yes",
            o,
            "true or false (a TOML boolean, without quotes)",
        );

        let (e, o) = cli("loop.interval", "0s");
        assert_invalid(
            e,
            "loop.interval",
            "0s",
            o,
            "a duration greater than zero, like 30s or 10m",
        );
        let (e, o) = env("BOO_RECONCILER_LOOP_PASS_TIMEOUT", "0");
        assert_invalid(
            e,
            "loop.pass_timeout",
            "0",
            o,
            "a duration greater than zero, like 30s or 10m",
        );
        let (e, o) = env("BOO_RECONCILER_WORKTREES_ORPHAN_MIN_AGE", "-5m");
        assert_invalid(
            e,
            "worktrees.orphan_min_age",
            "-5m",
            o,
            "a duration like 30s or 10m",
        );
        let (e, o) = file("[loop]\njitter = 3\n");
        assert_invalid(
            e,
            "loop.jitter",
            "3",
            o,
            "a duration like 30s or 10m (a quoted TOML string)",
        );

        let (e, o) = env("BOO_RECONCILER_LOOP_MAX_PARALLEL_ACTIONS", "0");
        assert_invalid(
            e,
            "loop.max_parallel_actions",
            "0",
            o,
            "a positive integer (1 or more)",
        );
        let (e, o) = cli("loop.max_parallel_actions", "lots");
        assert_invalid(
            e,
            "loop.max_parallel_actions",
            "lots",
            o,
            "a positive integer (1 or more)",
        );
        let (e, o) = file("[loop]\nmax_parallel_actions = 0\n");
        assert_invalid(
            e,
            "loop.max_parallel_actions",
            "0",
            o,
            "a positive integer (1 or more)",
        );
        let (e, o) = file("[loop]\nmax_parallel_actions = \"4\"\n");
        assert_invalid(
            e,
            "loop.max_parallel_actions",
            "4",
            o,
            "a positive integer (1 or more, a TOML integer without quotes)",
        );

        let (e, o) = env("BOO_RECONCILER_HOST_ID", "my host");
        assert_invalid(
            e,
            "host.id",
            "my host",
            o,
            "a non-empty name without whitespace",
        );
        let (e, o) = cli("host.id", "");
        assert_invalid(e, "host.id", "", o, "a non-empty name without whitespace");

        let (e, o) = file("[worktrees]\nroot = \"booworktrees\"\n");
        assert_invalid(
            e,
            "worktrees.root",
            "booworktrees",
            o,
            "an absolute path like /tmp/booworktrees",
        );
        let (e, o) = file("[worktrees]\nprecious = \".env\"\n");
        assert_invalid(
            e,
            "worktrees.precious",
            ".env",
            o,
            "an array of strings like [\".env\", \".env.*\"]",
        );
    }

    #[test]
    fn bad_database_url_is_named_and_redacted() {
        let err = load_err(
            None,
            &[("BOO_RECONCILER_DATABASE_URL", "mysql://u:secret@h/db")],
            &[],
        );
        assert_invalid(
            err,
            "database.url",
            "mysql://u:***@h/db",
            Origin::Env("BOO_RECONCILER_DATABASE_URL".to_owned()),
            "a database URL starting with sqlite://, postgres:// or postgresql://",
        );
        for bad in ["boo.db", "sqlite://", "sqlite:boo.db", "http://h/db"] {
            let err = load_err(None, &[], &[("database.url", bad)]);
            assert!(
                matches!(err, ConfigError::InvalidValue { .. }),
                "{bad}: {err:?}"
            );
        }
        for good in [
            "sqlite://boo.db",
            "sqlite:///var/lib/boo.db",
            "postgres://h/db",
            "postgresql://u:p@h:5432/db",
        ] {
            load(None, &[], &[("database.url", good)]).unwrap();
        }
    }

    // -- labels -----------------------------------------------------------

    const LABEL_KEYS: [&str; 3] = [
        "processes.chat_label",
        "processes.session_label",
        "processes.agent_label",
    ];

    #[test]
    fn a_label_that_ordinary_processes_carry_is_refused() {
        for key in LABEL_KEYS {
            for name in [
                "PATH",
                "HOME",
                "USER",
                "SHELL",
                "PWD",
                "LANG",
                "LC_ALL",
                "TERM",
                "LOGNAME",
                "XDG_RUNTIME_DIR",
                "SSH_AUTH_SOCK",
                "SUDO_USER",
                "LD_PRELOAD",
                "SHLVL",
                "TZ",
            ] {
                let err = load_err(None, &[], &[(key, name)]);
                let msg = err.to_string();
                assert!(
                    matches!(&err, ConfigError::InvalidValue { key: k, value, origin: Origin::CommandLine, expected }
                        if k == key && value == name && expected.contains("ordinary processes do not carry")),
                    "{key}={name}: {msg}"
                );
            }
        }
        let var = "BOO_RECONCILER_PROCESSES_CHAT_LABEL";
        let err = load_err(None, &[(var, "HOME")], &[]);
        assert!(err.to_string().starts_with(
            "invalid value \"HOME\" for processes.chat_label (from BOO_RECONCILER_PROCESSES_CHAT_LABEL): expected a name that ordinary processes do not carry"
        ), "{err}");
        // A longer name that merely starts like one is not ordinary.
        let c = load(None, &[], &[("processes.chat_label", "PATHFINDER_CHAT")]).unwrap();
        assert_eq!(c.processes.chat_label, "PATHFINDER_CHAT");
    }

    #[test]
    fn a_label_that_does_not_look_like_the_orchestrators_is_refused() {
        for key in LABEL_KEYS {
            for name in [
                "boo_chat_id",
                "Boo_Chat",
                "1CHAT",
                "_CHAT",
                "BOO-CHAT",
                "BOO CHAT",
                "BOO.CHAT",
                "BOO_CHAT=x",
                "",
                "BOO_ÇHAT",
            ] {
                let err = load_err(None, &[], &[(key, name)]);
                assert_invalid(err, key, name, Origin::CommandLine, Kind::Label.expected());
            }
        }
        let f = write("[processes]\nagent_label = \"path\"\n");
        let err = Config::load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Sources::default()
        })
        .unwrap_err();
        assert_invalid(
            err,
            "processes.agent_label",
            "path",
            Origin::File(f.path().to_path_buf()),
            Kind::Label.expected(),
        );
    }

    #[test]
    fn two_labels_with_the_same_name_are_refused() {
        // No file: the example file would be the origin of the chat label.
        let err = Config::resolve(
            None,
            &[],
            &with_host(vec![s("processes.agent_label", "BOO_CHAT_ID")]),
        )
        .unwrap_err();
        assert_invalid(
            err,
            "processes.agent_label",
            "BOO_CHAT_ID",
            Origin::CommandLine,
            "a name different from processes.chat_label (also BOO_CHAT_ID, from the built-in default): each label names a different thing",
        );
        let err = load_err(
            None,
            &[("BOO_RECONCILER_PROCESSES_CHAT_LABEL", "MY_LABEL")],
            &[("processes.session_label", "MY_LABEL")],
        );
        assert_invalid(
            err,
            "processes.session_label",
            "MY_LABEL",
            Origin::CommandLine,
            "a name different from processes.chat_label (also MY_LABEL, from BOO_RECONCILER_PROCESSES_CHAT_LABEL): each label names a different thing",
        );
        let c = load(
            None,
            &[],
            &[
                ("processes.chat_label", "MY_CHAT"),
                ("processes.agent_label", "MY_AGENT"),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                c.processes.chat_label.as_str(),
                c.processes.agent_label.as_str()
            ),
            ("MY_CHAT", "MY_AGENT")
        );
    }

    #[test]
    fn bad_glob_is_named() {
        let err = load_err(
            None,
            &[("BOO_RECONCILER_WORKTREES_PRECIOUS", ".env,[oops")],
            &[],
        );
        match &err {
            ConfigError::InvalidGlob {
                key, glob, origin, ..
            } => {
                assert_eq!(key, "worktrees.precious");
                assert_eq!(glob, "[oops");
                assert_eq!(
                    origin,
                    &Origin::Env("BOO_RECONCILER_WORKTREES_PRECIOUS".to_owned())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("invalid glob \"[oops\" in worktrees.precious (from BOO_RECONCILER_WORKTREES_PRECIOUS): "),
            "{err}"
        );
        let err = load_err(Some("[worktrees]\nprecious = [\".env\", \"\"]\n"), &[], &[]);
        assert!(
            matches!(&err, ConfigError::InvalidGlob { glob, .. } if glob.is_empty()),
            "{err:?}"
        );
    }

    #[test]
    fn a_shadowed_bad_value_still_fails() {
        let err = load_err(
            Some("[loop]\ninterval = \"soon\"\n"),
            &[],
            &[("loop.interval", "30s")],
        );
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
    }

    // -- redact_url -------------------------------------------------------

    #[test]
    fn redact_url_cases() {
        for (url, redacted) in [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:secret@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            ("postgres://u:p@ss/w?rd@h/db", "postgres://u:***@h/db"),
            ("postgres://:secret@h/db", "postgres://:***@h/db"),
            (
                "postgres://h/db?user=u&password=secret&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h:5432/db", "postgres://h:5432/db"),
            ("sqlite://boo-reconciler.db", "sqlite://boo-reconciler.db"),
            ("soon", "soon"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    // -- opencode -----------------------------------------------------------

    #[test]
    fn empty_opencode_url_turns_it_off() {
        let c = load(Some("[opencode]\nurl = \"\"\n"), &[], &[]).unwrap();
        assert_eq!(c.opencode.url, None);
        assert_eq!(setting(&c, "opencode.url").as_str(), Some(""));
        let c = load(None, &[("BOO_RECONCILER_OPENCODE_URL", "")], &[]).unwrap();
        assert_eq!(c.opencode.url, None);
        let c = load(None, &[], &[("opencode.url", "http://127.0.0.1:4097")]).unwrap();
        assert_eq!(
            setting(&c, "opencode.url").as_str(),
            Some("http://127.0.0.1:4097")
        );
    }

    #[test]
    fn bad_opencode_url_is_named_and_redacted() {
        let expected = Kind::HttpUrl.expected();
        for (bad, shown) in [
            ("127.0.0.1:4096", "127.0.0.1:4096"),
            ("ftp://h/", "ftp://h/"),
            ("http://", "http://"),
            ("http://h/?x=1", "http://h/?x=1"),
            (
                "http://opencode:secret@h:4096",
                "http://opencode:***@h:4096",
            ),
        ] {
            let err = load_err(None, &[], &[("opencode.url", bad)]);
            assert_invalid(err, "opencode.url", shown, Origin::CommandLine, expected);
        }
    }

    #[test]
    fn http_token_is_read_from_boo_reconciler_token() {
        let c = load(None, &[("BOO_RECONCILER_TOKEN", "t0k")], &[]).unwrap();
        assert_eq!(c.http.token, "t0k");
        assert_eq!(setting(&c, "http.token").as_str(), Some("***"));
        assert!(!format!("{:?}", c.http).contains("t0k"));
        let c = load(
            None,
            &[
                ("BOO_RECONCILER_TOKEN", "t0k"),
                ("BOO_RECONCILER_HTTP_TOKEN", "ours"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.http.token, "ours");
        let err = load_err(None, &[("BOO_RECONCILER_HTTP_LISTEN", "localhost")], &[]);
        assert!(err.to_string().contains("http.listen"), "{err}");
    }

    #[test]
    fn opencode_password_falls_back_to_opencode_server_password() {
        let c = load(None, &[("OPENCODE_SERVER_PASSWORD", "from-opencode")], &[]).unwrap();
        assert_eq!(c.opencode.password, "from-opencode");
        let c = load(
            Some("[opencode]\npassword = \"from-file\"\n"),
            &[("OPENCODE_SERVER_PASSWORD", "from-opencode")],
            &[],
        )
        .unwrap();
        assert_eq!(c.opencode.password, "from-opencode", "env beats file");
        let c = load(
            None,
            &[
                ("BOO_RECONCILER_OPENCODE_PASSWORD", "ours"),
                ("OPENCODE_SERVER_PASSWORD", "from-opencode"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.opencode.password, "ours", "our own variable wins");
        let c = load(None, &[("OPENCODE_SERVER_USERNAME", "boo")], &[]).unwrap();
        assert_eq!(c.opencode.username, "boo");
        let sources = Sources {
            env: vec![s("OPENCODE_SERVER_PASSWORD", "x")],
            ..Sources::default()
        };
        assert!(sources.unrecognized_env().is_empty());
    }

    #[test]
    fn summary_debug_and_errors_hide_the_opencode_password() {
        let c = load(None, &[], &[("opencode.password", "hunter2")]).unwrap();
        assert_eq!(c.opencode.password, "hunter2");
        assert_eq!(setting(&c, "opencode.password").as_str(), Some("***"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!toml::to_string(&c.summary()).unwrap().contains("hunter2"));
        let err = load_err(Some("[opencode]\npassword = 12345\n"), &[], &[]);
        assert!(!err.to_string().contains("12345"), "{err}");
    }

    // -- precious globs ---------------------------------------------------

    #[test]
    fn precious_globs_match_env_files_at_any_depth() {
        let set = defaults().precious_globs();
        for path in [
            ".env",
            "a/.env",
            "a/b/c/.env",
            ".env.local",
            "sub/.env.local",
            ".env.production",
            "/tmp/booworktrees/w1/.env",
        ] {
            assert!(set.is_match(path), "{path} should be precious");
        }
        for path in [
            ".envrc",
            "a/.envrc",
            "env",
            "x.env",
            ".env/file",
            "a/.env.d/file",
            "README.md",
        ] {
            assert!(!set.is_match(path), "{path} should not be precious");
        }
    }

    #[test]
    fn precious_globs_with_a_slash_are_anchored_and_star_stays_in_one_directory() {
        let mut c = defaults();
        c.worktrees.precious = vec!["config/*.key".into(), "*.pem".into()];
        let set = c.precious_globs();
        assert!(set.is_match("config/a.key"));
        assert!(!set.is_match("config/sub/a.key"), "* must not cross /");
        assert!(!set.is_match("x/config/a.key"), "a glob with / is anchored");
        assert!(set.is_match("a.pem"));
        assert!(set.is_match("deep/dir/a.pem"));
    }
}
