//! Why a configuration does not load, and where each value came from.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from, as shown in errors: `(from <origin>)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default in [`KEYS`](super::KEYS).
    Default,
    /// The machine's hostname (default of `host.id`).
    Hostname,
    /// The config file, as its path was given or found.
    File(PathBuf),
    /// The named environment variable.
    Env(String),
    /// [`Sources::overrides`](super::Sources::overrides).
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
/// (exit code 2). Values of [`Kind::DatabaseUrl`](super::Kind::DatabaseUrl)
/// and [`Kind::HttpUrl`](super::Kind::HttpUrl) keys are stored already
/// redacted and those of [`Kind::Secret`](super::Kind::Secret) keys as
/// `***`, so displaying an error never shows a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file given explicitly ([`Sources::file`](super::Sources::file))
    /// does not exist.
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
    /// one of [`ENV_NOT_SETTINGS`](super::ENV_NOT_SETTINGS) (a typo would
    /// otherwise leave the setting it meant at its default).
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

/// ". Did you mean `x`?" for the valid name nearest to `name`, when it
/// is near enough to be a typo of it.
pub(super) fn did_you_mean(name: &str, valid: &[String]) -> String {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(v, name), v))
        .min()
        .filter(|(d, v)| *d <= 3.max(v.len() / 4))
        .map(|(_, v)| format!(". Did you mean `{v}`?"))
        .unwrap_or_default()
}
