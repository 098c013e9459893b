//! Turning a value as written (a string from the environment, the command
//! line or a default; a TOML value of the file) into its field, with the
//! constraints of its [`Kind`]. Each parser is chosen by the row's field
//! type and refined by its kind, so that an error says what the kind
//! expects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::Field;
use super::precious::precious_glob;
use super::redact::in_error;
use super::{Config, ConfigError, Key, Kind, Origin};

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

impl Key {
    /// Parses a value given as a string (environment, command line,
    /// built-in default, a string of the file) into this row's field.
    pub(super) fn set_text(
        &self,
        config: &mut Config,
        text: &str,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let bad = |expected: &str| invalid(self, text, origin, expected);
        match self.field {
            Field::Bool(_, set) => {
                *set(config) = boolean(text).ok_or_else(|| bad(self.kind.expected()))?
            }
            Field::Duration(_, set) => *set(config) = duration(self.kind, text).map_err(bad)?,
            Field::Int(_, set) => {
                *set(config) = positive(text).ok_or_else(|| bad(self.kind.expected()))?
            }
            Field::Text(_, set) => *set(config) = string(self.kind, text).map_err(bad)?,
            Field::Path(_, set) => {
                *set(config) = path(self.kind, text).ok_or_else(|| bad(self.kind.expected()))?
            }
            Field::Url(_, set) => {
                *set(config) = http_url(text).ok_or_else(|| bad(self.kind.expected()))?
            }
            Field::Addr(_, set) => {
                *set(config) = address(text).ok_or_else(|| bad(self.kind.expected()))?
            }
            Field::List(_, set) => *set(config) = self.list(split(text), origin)?,
        }
        Ok(())
    }

    /// Parses a value of the file into this row's field.
    pub(super) fn set_toml(
        &self,
        config: &mut Config,
        value: &toml::Value,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        // A string is shown as it was written; anything else in TOML syntax.
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        let wrong = |expected: &str| invalid(self, &shown, origin, expected);
        const ARRAY: &str = "an array of strings like [\".env\", \".env.*\"]";
        match (self.field, value) {
            (Field::Bool(_, set), toml::Value::Boolean(b)) => *set(config) = *b,
            (Field::Bool(..), _) => {
                return Err(wrong("true or false (a TOML boolean, without quotes)"))
            }
            (Field::Int(_, set), toml::Value::Integer(n)) => match usize::try_from(*n) {
                Ok(n) if n >= 1 => *set(config) = n,
                _ => return Err(wrong(Kind::PositiveInt.expected())),
            },
            (Field::Int(..), _) => {
                return Err(wrong(
                    "a positive integer (1 or more, a TOML integer without quotes)",
                ))
            }
            (Field::List(_, set), toml::Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect();
                *set(config) = self.list(strings.ok_or_else(|| wrong(ARRAY))?, origin)?;
            }
            (Field::List(..), _) => return Err(wrong(ARRAY)),
            // `lineage = true` as well as `lineage = "auto"`.
            (Field::Text(_, set), toml::Value::Boolean(b)) if self.kind == Kind::AutoBool => {
                *set(config) = b.to_string()
            }
            (_, toml::Value::String(s)) => return self.set_text(config, s, origin),
            _ => {
                return Err(wrong(&format!(
                    "{} (a quoted TOML string)",
                    self.kind.expected()
                )))
            }
        }
        Ok(())
    }

    /// Writes the items of a list default into this row's field.
    pub(super) fn set_items(
        &self,
        config: &mut Config,
        items: Vec<String>,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        match self.field {
            Field::List(_, set) => *set(config) = self.list(items, origin)?,
            // Not reached: only a list row may have a list default, checked
            // at compile time beside KEYS.
            _ => self.set_text(config, &items.join(","), origin)?,
        }
        Ok(())
    }

    /// Checks the items of a list.
    fn list(&self, items: Vec<String>, origin: &Origin) -> Result<Vec<String>, ConfigError> {
        if self.kind == Kind::GlobList {
            for item in &items {
                precious_glob(item).map_err(|reason| ConfigError::InvalidGlob {
                    key: self.name(),
                    glob: item.clone(),
                    origin: origin.clone(),
                    reason,
                })?;
            }
        }
        Ok(items)
    }
}

pub(super) fn invalid(key: &Key, value: &str, origin: &Origin, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.name(),
        value: in_error(key.kind, value),
        origin: origin.clone(),
        expected: expected.to_owned(),
    }
}

/// A list from a string: comma-separated, items trimmed, empty ones
/// dropped (so that an empty string is an empty list).
fn split(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A [`Kind::Duration`] or [`Kind::NonZeroDuration`]; the error is what
/// was expected.
fn duration(kind: Kind, text: &str) -> Result<Duration, &'static str> {
    // humantime accepts up to u64::MAX seconds; such a value would make the
    // first deadline computed from it panic.
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > MAX_DURATION => Err("a duration of at most 365d"),
        Ok(d) if d.is_zero() && kind == Kind::NonZeroDuration => {
            Err("a duration greater than zero, like 30s or 10m")
        }
        Ok(d) => Ok(d),
        Err(_) => Err(kind.expected()),
    }
}

fn positive(text: &str) -> Option<usize> {
    text.trim().parse::<usize>().ok().filter(|n| *n >= 1)
}

fn address(text: &str) -> Option<SocketAddr> {
    text.trim().parse().ok()
}

/// A string of a text kind; the error is what was expected.
fn string(kind: Kind, text: &str) -> Result<String, &'static str> {
    let ok = match kind {
        Kind::Name => !text.is_empty() && !text.chars().any(char::is_whitespace),
        Kind::OptionalName => !text.chars().any(char::is_whitespace),
        Kind::Label => return label(text).map(str::to_owned),
        Kind::User => return user(text).map(|_| text.to_owned()),
        Kind::CgroupParent => matches!(text, "auto" | "off") || Path::new(text).is_absolute(),
        Kind::AutoBool => {
            return match text {
                "auto" => Ok("auto".to_owned()),
                _ => boolean(text).map(|b| b.to_string()).ok_or(kind.expected()),
            };
        }
        Kind::DatabaseUrl => ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme)),
        _ => true,
    };
    if ok {
        Ok(text.to_owned())
    } else {
        Err(kind.expected())
    }
}

/// A [`Kind::User`]: its uid, `None` for an empty string; the error is
/// what was expected.
pub(super) fn user(text: &str) -> Result<Option<u32>, &'static str> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(Some(uid));
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(u)) => Ok(Some(u.uid.as_raw())),
        _ => Err("a user name this host knows (not found in its user database) or a numeric uid, or an empty string for none"),
    }
}

/// A [`Kind::Label`]; the error is what was expected.
fn label(text: &str) -> Result<&str, &'static str> {
    let mut chars = text.chars();
    let shaped = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !shaped {
        Err(Kind::Label.expected())
    } else if ordinary_variable(text).is_some() {
        Err("a name that ordinary processes do not carry (not PATH, HOME, USER, SHELL, PWD, LANG, LC_*, TERM, LOGNAME, XDG_*, SSH_*, SUDO_*, LD_*, ...): every process carrying the label would be taken for an agent")
    } else {
        Ok(text)
    }
}

fn path(kind: Kind, text: &str) -> Option<PathBuf> {
    let ok = match kind {
        Kind::AbsolutePath => Path::new(text).is_absolute(),
        _ => !text.is_empty(),
    };
    ok.then(|| PathBuf::from(text))
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
