//! The key table: every setting as one row that owns its name, kind,
//! default, doc and the field of [`Config`] it fills.
//!
//! A row's [`Field`] is a getter and a setter of one field, written once by
//! `field!`, so the two cannot name different fields, and a row naming a
//! field that does not exist, or one of another type, does not compile.
//! A compile-time assertion holds each row's [`Kind`] and default to its
//! field's type. Which field each row fills, and that every field has a row, is
//! checked by the tests that iterate every row (`config::tests`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, Database, Host, Http, Loop, Opencode, Processes, Worktrees, ENV_PREFIX};

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
    /// A non-empty string without whitespace (an identifier such as a host name).
    Name,
    /// A [`Kind::Name`], or an empty string for none.
    OptionalName,
    /// The name of an environment variable labelling agent processes:
    /// `^[A-Z][A-Z0-9_]*$`, not one of
    /// [`ORDINARY_VARIABLES`](super::ORDINARY_VARIABLES), and different from
    /// the other labels (checked across keys).
    Label,
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
    /// A list of glob patterns, each of which must compile.
    GlobList,
    /// A local user: a name the user database knows, or a numeric uid; an
    /// empty string for none.
    User,
    /// Where agent cgroups are made: `auto`, `off`, or an absolute path in
    /// the cgroup v2 hierarchy.
    CgroupParent,
    /// `auto`, or a [`Kind::Bool`] word: on wherever it can be, or always
    /// (its absence then an error), or never.
    AutoBool,
}

impl Kind {
    /// What the kind accepts, as shown after "expected" in errors.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean: true/false, 1/0, yes/no or on/off",
            Kind::Duration => "a duration like 30s or 10m",
            Kind::NonZeroDuration => "a duration like 30s or 10m",
            Kind::PositiveInt => "a positive integer (1 or more)",
            Kind::Name => "a non-empty name without whitespace",
            Kind::OptionalName => "a name without whitespace, or an empty string for none",
            Kind::Label => {
                "an environment variable name like BOO_CHAT_ID (an upper-case letter, then upper-case letters, digits or _)"
            }
            Kind::AbsolutePath => "an absolute path like /tmp/booworktrees",
            Kind::DatabaseUrl => {
                "a database URL starting with sqlite://, postgres:// or postgresql://"
            }
            Kind::HttpUrl => {
                "an http:// or https:// URL without user or password, like http://127.0.0.1:4096, or an empty string for none"
            }
            Kind::Secret => "a string",
            Kind::SocketAddr => "an address and port like 127.0.0.1:7878",
            Kind::GlobList => "a list of glob patterns",
            Kind::User => {
                "a user name of this host (as in /etc/passwd) or a numeric uid, or an empty string for none"
            }
            Kind::CgroupParent => {
                "auto, off, or an absolute path of a directory in the cgroup v2 hierarchy like /sys/fs/cgroup/boo-agents"
            }
            Kind::AutoBool => "auto, or a boolean: true/false, 1/0, yes/no or on/off",
        }
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
    /// The field of [`Config`] the value is read into and shown from.
    pub(super) field: Field,
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
        row(section, key).map(|(_, key)| key)
    }
}

/// A getter and a setter of one field of [`Config`], by its Rust type.
#[derive(Clone, Copy, Debug)]
pub(super) enum Field {
    Bool(Get<bool>, Set<bool>),
    Duration(Get<Duration>, Set<Duration>),
    Int(Get<usize>, Set<usize>),
    Text(Get<String>, Set<String>),
    Path(Get<PathBuf>, Set<PathBuf>),
    Url(Get<Option<url::Url>>, Set<Option<url::Url>>),
    Addr(Get<SocketAddr>, Set<SocketAddr>),
    List(Get<Vec<String>>, Set<Vec<String>>),
}

pub(super) type Get<T> = fn(&Config) -> &T;
pub(super) type Set<T> = fn(&mut Config) -> &mut T;

/// `field!(Duration, r#loop.interval)`: the getter and the setter of one
/// field from one path, so that they cannot drift apart.
macro_rules! field {
    ($variant:ident, $($path:ident).+) => {
        Field::$variant(|c| &c.$($path).+, |c| &mut c.$($path).+)
    };
}

/// Whether the row's kind and default fit its field: the parsers choose by
/// field and refine by kind, so the two must agree.
const fn agrees(key: &Key) -> bool {
    let list_default = matches!(key.default, DefaultValue::List(_));
    if list_default && !matches!(key.field, Field::List(..)) {
        return false;
    }
    let kind = key.kind;
    match key.field {
        Field::Bool(..) => matches!(kind, Kind::Bool),
        Field::Duration(..) => matches!(kind, Kind::Duration | Kind::NonZeroDuration),
        Field::Int(..) => matches!(kind, Kind::PositiveInt),
        Field::Text(..) => matches!(
            kind,
            Kind::Name
                | Kind::OptionalName
                | Kind::Label
                | Kind::Secret
                | Kind::DatabaseUrl
                | Kind::User
                | Kind::CgroupParent
                | Kind::AutoBool
        ),
        Field::Path(..) => matches!(kind, Kind::AbsolutePath),
        Field::Url(..) => matches!(kind, Kind::HttpUrl),
        Field::Addr(..) => matches!(kind, Kind::SocketAddr),
        Field::List(..) => matches!(kind, Kind::GlobList),
    }
}

// A row whose kind or default its field cannot hold stops the build.
const _: () = {
    let mut i = 0;
    while i < ROWS.len() {
        assert!(
            agrees(&ROWS[i]),
            "a row of KEYS has a kind or a default its field cannot hold"
        );
        i += 1;
    }
};

/// Every setting, with its built-in default: the one place defaults live.
pub static KEYS: &[Key] = ROWS;

/// The row for `section` and `key`, with its index in [`KEYS`].
pub(super) fn row(section: &str, key: &str) -> Option<(usize, &'static Key)> {
    KEYS.iter()
        .enumerate()
        .find(|(_, k)| k.section == section && k.key == key)
}

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

/// The [`Config`] the rows write into: every value here is overwritten by
/// its row before [`Config::load`] returns. A setter needs a whole `Config`
/// to write to; this is the one place that builds one field by field.
pub(super) fn unset() -> Config {
    Config {
        database: Database {
            url: String::new(),
            auto_migrate: false,
            notify_channel: String::new(),
            connect_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
        },
        host: Host { id: String::new() },
        r#loop: Loop {
            interval: Duration::ZERO,
            jitter: Duration::ZERO,
            pass_timeout: Duration::ZERO,
            max_parallel_actions: 0,
            dry_run: false,
        },
        worktrees: Worktrees {
            enabled: false,
            root: PathBuf::new(),
            owner: String::new(),
            orphan_min_age: Duration::ZERO,
            precious: Vec::new(),
            reclaim_parallel: 0,
            max_removals_per_pass: 0,
            stale_entry_grace: Duration::ZERO,
            recheck_interval: Duration::ZERO,
        },
        processes: Processes {
            enabled: false,
            chat_label: String::new(),
            session_label: String::new(),
            agent_label: String::new(),
            instance: String::new(),
            instance_label: String::new(),
            orphan_min_age: Duration::ZERO,
            max_terminations_per_pass: 0,
            max_parallel_terminations: 0,
            term_grace: Duration::ZERO,
            cgroup_parent: String::new(),
            lineage: String::new(),
        },
        opencode: Opencode {
            enabled: false,
            url: None,
            username: String::new(),
            password: String::new(),
            timeout: Duration::ZERO,
            orphan_min_age: Duration::ZERO,
        },
        http: Http {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            token: String::new(),
            allow_insecure_remote: false,
        },
    }
}

/// The rows of [`KEYS`], a constant so that the check of kinds against
/// fields can read them at compile time.
const ROWS: &[Key] = &[
    Key {
        section: "database",
        key: "url",
        kind: Kind::DatabaseUrl,
        // Embedded SQLite file, relative to the working directory; the store
        // creates it if missing. PostgreSQL in production.
        default: DefaultValue::Text("sqlite://boo-reconciler.db"),
        doc: "Database: sqlite://FILE (embedded, relative to the working directory, created if missing) or postgres://USER:PASSWORD@HOST/DB.",
        field: field!(Text, database.url),
    },
    Key {
        section: "database",
        key: "auto_migrate",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Apply pending schema migrations at start-up.",
        field: field!(Bool, database.auto_migrate),
    },
    Key {
        section: "database",
        key: "notify_channel",
        kind: Kind::Name,
        default: DefaultValue::Text("boo_reconcile"),
        doc: "PostgreSQL channel listened on for chat:<id> / session:<id> notifications (unused with SQLite).",
        field: field!(Text, database.notify_channel),
    },
    Key {
        section: "database",
        key: "connect_timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("5s"),
        doc: "Limit on opening a database connection or waiting for a free one (more than 0s, at most 365d).",
        field: field!(Duration, database.connect_timeout),
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
        field: field!(Duration, database.query_timeout),
    },
    Key {
        section: "host",
        key: "id",
        kind: Kind::Name,
        default: DefaultValue::Hostname,
        doc: "This host's name in the shared database (host columns); defaults to the machine's hostname.",
        field: field!(Text, host.id),
    },
    Key {
        section: "loop",
        key: "interval",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("30s"),
        doc: "Time between two reconciliation passes (more than 0s, at most 365d).",
        field: field!(Duration, r#loop.interval),
    },
    Key {
        section: "loop",
        key: "jitter",
        kind: Kind::Duration,
        default: DefaultValue::Text("3s"),
        doc: "A random extra delay in [0, jitter) added to each pass; 0s for none (at most 365d).",
        field: field!(Duration, r#loop.jitter),
    },
    Key {
        section: "loop",
        key: "pass_timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("2m"),
        doc: "A pass still running after this long is abandoned (more than 0s, at most 365d).",
        field: field!(Duration, r#loop.pass_timeout),
    },
    Key {
        section: "loop",
        key: "max_parallel_actions",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("4"),
        doc: "Most actions carried out at the same time within a pass (1 or more).",
        field: field!(Int, r#loop.max_parallel_actions),
    },
    Key {
        section: "loop",
        key: "dry_run",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        doc: "Observe only: every pass plans and reports (logs, /status, nudge answers) and acts on nothing; also run --dry-run.",
        field: field!(Bool, r#loop.dry_run),
    },
    Key {
        section: "worktrees",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Remove worktrees and update their rows; false plans and reports them as pending, touching none.",
        field: field!(Bool, worktrees.enabled),
    },
    Key {
        section: "worktrees",
        key: "root",
        kind: Kind::AbsolutePath,
        default: DefaultValue::Text("/tmp/booworktrees"),
        doc: "Absolute directory holding the worktrees, <root>/<worktree id>; nothing outside it is ever removed.",
        field: field!(Path, worktrees.root),
    },
    Key {
        section: "worktrees",
        key: "owner",
        kind: Kind::User,
        default: DefaultValue::Text(""),
        doc: "The orchestrator's user (a name or a uid) who may own worktrees.root besides root and the controller's own user; empty for none. The root must be writable by its owner only.",
        field: field!(Text, worktrees.owner),
    },
    Key {
        section: "worktrees",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "A resource younger than this is never reaped as an orphan (absorbs creation races; at most 365d).",
        field: field!(Duration, worktrees.orphan_min_age),
    },
    Key {
        section: "worktrees",
        key: "precious",
        kind: Kind::GlobList,
        default: DefaultValue::List(&[".env", ".env.*"]),
        doc: "Ignored files matching these globs are work: a worktree holding one is kept. A glob without / matches at any depth.",
        field: field!(List, worktrees.precious),
    },
    Key {
        section: "worktrees",
        key: "reclaim_parallel",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("2"),
        doc: "Most retired worktrees in <root>/.boo-trash deleted at the same time by the background reclaimer (1 or more).",
        field: field!(Int, worktrees.reclaim_parallel),
    },
    Key {
        section: "worktrees",
        key: "max_removals_per_pass",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("20"),
        doc: "Most worktrees removed, or admin entries pruned, in one pass (1 or more); the rest wait for the next pass, pending with the reason: a wrong database or root cannot empty a host at once.",
        field: field!(Int, worktrees.max_removals_per_pass),
    },
    Key {
        section: "worktrees",
        key: "stale_entry_grace",
        kind: Kind::Duration,
        default: DefaultValue::Text("1h"),
        doc: "An admin entry (.git/worktrees/<id>) whose directory is gone is pruned only once the directory has been missing this long (at most 365d); what only the entry holds is kept under refs/boo/history first.",
        field: field!(Duration, worktrees.stale_entry_grace),
    },
    Key {
        section: "worktrees",
        key: "recheck_interval",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "A worktree kept at risk is checked again in full when its fingerprint changes, when a nudge or notification names its chat or session, with --force, or at the latest after this long (at most 365d).",
        field: field!(Duration, worktrees.recheck_interval),
    },
    Key {
        section: "processes",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Terminate agent processes and close their acp rows; false signals none (an agent inside a worktree then keeps it).",
        field: field!(Bool, processes.enabled),
    },
    Key {
        section: "processes",
        key: "chat_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_CHAT_ID"),
        doc: "Environment variable naming an agent's chat; a process is an agent only if it carries this and processes.agent_label, both non-empty. Labels are upper-case names ([A-Z][A-Z0-9_]*), distinct, never one that ordinary processes carry (PATH, HOME, LC_*, ...).",
        field: field!(Text, processes.chat_label),
    },
    Key {
        section: "processes",
        key: "session_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_SESSION_ID"),
        doc: "Environment variable naming the agent's session (informative).",
        field: field!(Text, processes.session_label),
    },
    Key {
        section: "processes",
        key: "agent_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_AGENT"),
        doc: "Environment variable naming the agent, e.g. goose or qwen; with processes.chat_label it marks an agent process.",
        field: field!(Text, processes.agent_label),
    },
    Key {
        section: "processes",
        key: "instance",
        kind: Kind::OptionalName,
        // Unset, this controller is the only one scanning its labels on the
        // host, which the scan lock enforces at start (see `scan_lock`).
        default: DefaultValue::Text(""),
        doc: "This controller's instance: when set, only agents whose processes.instance_label equals it are candidates, so that controllers of several databases can share a host; empty: a controller of another database on the same labels refuses to start.",
        field: field!(Text, processes.instance),
    },
    Key {
        section: "processes",
        key: "instance_label",
        kind: Kind::Label,
        default: DefaultValue::Text("BOO_INSTANCE"),
        doc: "Environment variable naming the controller instance an agent belongs to; read only when processes.instance is set.",
        field: field!(Text, processes.instance_label),
    },
    Key {
        section: "processes",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("2m"),
        doc: "A labelled process whose chat has no row is left alone while younger than this (the launcher may start it before the row is committed; at most 365d).",
        field: field!(Duration, processes.orphan_min_age),
    },
    Key {
        section: "processes",
        key: "max_terminations_per_pass",
        kind: Kind::PositiveInt,
        default: DefaultValue::Text("100"),
        doc: "Most agent processes terminated in one pass (1 or more); the rest wait for the next pass, pending with the reason: a wrong database cannot stop every agent of a host at once.",
        field: field!(Int, processes.max_terminations_per_pass),
    },
    Key {
        section: "processes",
        key: "max_parallel_terminations",
        kind: Kind::PositiveInt,
        // As many as the brake lets through in one pass: the pass's
        // terminations then take one grace in all.
        default: DefaultValue::Text("100"),
        doc: "Most agent terminations waiting out processes.term_grace at the same time (1 or more), apart from loop.max_parallel_actions: every termination of a pass gets SIGTERM at once and they share one grace; beyond it they wait for a slot.",
        field: field!(Int, processes.max_parallel_terminations),
    },
    Key {
        section: "processes",
        key: "term_grace",
        kind: Kind::Duration,
        default: DefaultValue::Text("5s"),
        doc: "Time an agent and its descendants get to exit after SIGTERM before whatever survives gets SIGKILL (at most 365d).",
        field: field!(Duration, processes.term_grace),
    },
    Key {
        section: "processes",
        key: "lineage",
        kind: Kind::AutoBool,
        // It needs CAP_NET_ADMIN: root has it (the root unit grants it);
        // any other user does not, and `auto` then says so once and goes
        // on with labels alone, as `true` would not.
        default: DefaultValue::Text("auto"),
        doc: "Follow every fork and exec on the host (the kernel's process connector; needs CAP_NET_ADMIN and AF_NETLINK): a process forked by a labelled agent stays that agent's after it clears its environment or leaves the tree, for agents not started through launch. auto: on wherever the connector opens (as root), otherwise said once at start and in /status; true: a connector that cannot be opened is an error of every pass; false: labels alone.",
        field: field!(Text, processes.lineage),
    },
    Key {
        section: "processes",
        key: "cgroup_parent",
        kind: Kind::CgroupParent,
        // Root can make a subtree of its own; any other user needs one
        // delegated to it, which only the operator can name.
        default: DefaultValue::Text("auto"),
        doc: "Where `launch` makes a cgroup per agent and where the controller looks for them: auto (as root, boo-agents at the top of the cgroup v2 hierarchy; otherwise none), off, or the absolute path of a directory in the v2 hierarchy (for a non-root user, a subtree delegated to it).",
        field: field!(Text, processes.cgroup_parent),
    },
    Key {
        section: "opencode",
        key: "enabled",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        doc: "Delete opencode sessions and close their rows; false deletes none (the server is still listed and reported).",
        field: field!(Bool, opencode.enabled),
    },
    Key {
        section: "opencode",
        key: "url",
        kind: Kind::HttpUrl,
        default: DefaultValue::Text("http://127.0.0.1:4096"),
        doc: "Base URL of the shared opencode serve whose sessions are reaped; empty turns the opencode part off.",
        field: field!(Url, opencode.url),
    },
    Key {
        section: "opencode",
        key: "username",
        kind: Kind::Name,
        default: DefaultValue::Text("opencode"),
        doc: "Basic-auth user name, sent only with a password (opencode serve's OPENCODE_SERVER_USERNAME, default opencode).",
        field: field!(Text, opencode.username),
    },
    Key {
        section: "opencode",
        key: "password",
        kind: Kind::Secret,
        default: DefaultValue::Text(""),
        doc: "Basic-auth password (opencode serve's OPENCODE_SERVER_PASSWORD, also read from that variable); empty for none.",
        field: field!(Text, opencode.password),
    },
    Key {
        section: "opencode",
        key: "timeout",
        kind: Kind::NonZeroDuration,
        default: DefaultValue::Text("3s"),
        doc: "Limit on each request to opencode, from connecting to the last byte (more than 0s, at most 365d).",
        field: field!(Duration, opencode.timeout),
    },
    Key {
        section: "opencode",
        key: "orphan_min_age",
        kind: Kind::Duration,
        default: DefaultValue::Text("10m"),
        doc: "An opencode session that no agent row names is deleted only once this old (absorbs creation races; at most 365d).",
        field: field!(Duration, opencode.orphan_min_age),
    },
    Key {
        section: "http",
        key: "listen",
        kind: Kind::SocketAddr,
        default: DefaultValue::Text("127.0.0.1:7878"),
        doc: "Address of the HTTP API (nudges, /status, /metrics) served by run.",
        field: field!(Addr, http.listen),
    },
    Key {
        section: "http",
        key: "token",
        kind: Kind::Secret,
        default: DefaultValue::Text(""),
        doc: "Bearer token every route but /healthz requires (also read from BOO_RECONCILER_TOKEN); empty for none. Without it, plain nudges still work and ?force= is refused (403): force needs a token.",
        field: field!(Text, http.token),
    },
    Key {
        section: "http",
        key: "allow_insecure_remote",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        doc: "Allow a non-loopback listen address without a token (anyone who can reach it could tear down chats).",
        field: field!(Bool, http.allow_insecure_remote),
    },
];
