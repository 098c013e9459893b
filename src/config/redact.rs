//! What a setting looks like outside the process: in [`Config::summary`],
//! in `Debug` and in errors. A password or token is never shown, only
//! whether it is set; a URL is shown without its password.

use std::fmt;

use super::keys::Field;
use super::{Config, Database, Http, Key, Kind, Opencode};

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

/// A value as an error quotes it: URLs redacted, secrets not at all.
pub(super) fn in_error(kind: Kind, value: &str) -> String {
    match kind {
        Kind::DatabaseUrl | Kind::HttpUrl => redact_url(value),
        Kind::Secret => "***".to_owned(),
        _ => value.to_owned(),
    }
}

impl Key {
    /// The value of this row in `config` as [`Config::summary`] shows it:
    /// in the file's syntax, so that the summary loads back, and redacted.
    pub(super) fn shown(&self, config: &Config) -> toml::Value {
        match self.field {
            Field::Bool(get, _) => (*get(config)).into(),
            Field::Duration(get, _) => humantime::format_duration(*get(config)).to_string().into(),
            Field::Int(get, _) => i64::try_from(*get(config)).unwrap_or(i64::MAX).into(),
            Field::Text(get, _) => match self.kind {
                Kind::DatabaseUrl => redact_url(get(config)).into(),
                Kind::Secret => redact_secret(get(config)).into(),
                _ => get(config).clone().into(),
            },
            Field::Path(get, _) => get(config).to_string_lossy().into_owned().into(),
            Field::Url(get, _) => get(config)
                .as_ref()
                .map(display_url)
                .unwrap_or_default()
                .into(),
            Field::Addr(get, _) => get(config).to_string().into(),
            Field::List(get, _) => get(config)
                .iter()
                .map(|item| toml::Value::from(item.clone()))
                .collect::<Vec<_>>()
                .into(),
        }
    }
}

// The sections that hold a secret list their fields by destructuring, so
// that a field added to one of them cannot be left out of its `Debug`.

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Database {
            url,
            auto_migrate,
            notify_channel,
            connect_timeout,
            query_timeout,
        } = self;
        f.debug_struct("Database")
            .field("url", &redact_url(url))
            .field("auto_migrate", auto_migrate)
            .field("notify_channel", notify_channel)
            .field("connect_timeout", connect_timeout)
            .field("query_timeout", query_timeout)
            .finish()
    }
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Http {
            listen,
            token,
            allow_insecure_remote,
        } = self;
        f.debug_struct("Http")
            .field("listen", listen)
            .field("token", &redact_secret(token))
            .field("allow_insecure_remote", allow_insecure_remote)
            .finish()
    }
}

impl fmt::Debug for Opencode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Opencode {
            enabled,
            url,
            username,
            password,
            timeout,
            orphan_min_age,
        } = self;
        f.debug_struct("Opencode")
            .field("enabled", enabled)
            .field("url", &url.as_ref().map(display_url))
            .field("username", username)
            .field("password", &redact_secret(password))
            .field("timeout", timeout)
            .field("orphan_min_age", orphan_min_age)
            .finish()
    }
}
