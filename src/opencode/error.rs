//! What a failed call is ([`Error`], and the two kinds a caller acts on
//! apart), and how an answer is judged before it is believed: its status,
//! its content type, then strict JSON (see the parent module's Failures).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The most of an unexpected answer's body quoted in an error.
const SNIPPET: usize = 200;

/// The two kinds of [`Error`] a caller treats differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Nothing listens at the URL (connection refused): no opencode server
    /// runs there, so none of its sessions can be running either.
    NotRunning,
    /// The server could not be asked or did not answer usably: a timeout, a
    /// 5xx, an unexpected 4xx, HTML or other non-JSON, malformed JSON, TLS
    /// or another transport failure, or a request refused before sending.
    /// Nothing can be concluded about its sessions; try again later.
    Failing,
}

/// Why a call to opencode failed. `url` is the server's base URL; `op` the
/// request, as `METHOD /path` (without the query).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection was refused.
    #[error(
        "nothing listens at {url} (connection refused) for {op}: opencode is not running there"
    )]
    NotRunning { url: String, op: String },

    /// No complete answer within the timeout.
    #[error("opencode at {url} did not answer {op} within {timeout}: it hangs or is overloaded")]
    Timeout {
        url: String,
        op: String,
        /// The limit, in humantime form.
        timeout: String,
    },

    /// Connecting or talking failed otherwise: name resolution, TLS, a reset
    /// connection, an answer that is not HTTP.
    #[error("cannot talk to opencode at {url} for {op}: {reason}")]
    Transport {
        url: String,
        op: String,
        reason: String,
    },

    /// 401: the server wants credentials, or other ones.
    #[error("opencode at {url} answered 401 Unauthorized to {op}: {hint}")]
    Unauthorized {
        url: String,
        op: String,
        /// What to check, depending on whether a password was sent.
        hint: String,
    },

    /// A status the request does not expect.
    #[error("opencode at {url} answered {status}{reason} to {op}{detail}",
        reason = reason_phrase(*status))]
    Status {
        url: String,
        op: String,
        status: u16,
        /// The server's own error name and message when it sent JSON, else
        /// the content type and the start of the body; starts with `: ` or
        /// ` (` when not empty.
        detail: String,
    },

    /// An answer that should be JSON is not (the web app's HTML, for one).
    #[error("opencode at {url} answered {shown} to {op} (expected JSON): is opencode.url pointing at the web app?",
        shown = shown_status_and_type(*status, content_type))]
    NotJson {
        url: String,
        op: String,
        status: u16,
        /// The `content-type` header, `None` when there is none.
        content_type: Option<String>,
    },

    /// JSON that does not parse into what the request answers.
    #[error("opencode at {url} answered malformed JSON to {op}: {reason}")]
    MalformedJson {
        url: String,
        op: String,
        reason: String,
    },

    /// Well-formed, but not a possible answer (`false` to a delete, a
    /// listing that does not end, …).
    #[error("opencode at {url} answered {op} with {what}")]
    Unexpected {
        url: String,
        op: String,
        what: String,
    },

    /// An id that is not a session id was not sent (see
    /// [`is_wellformed_session_id`](super::is_wellformed_session_id)).
    #[error("{id:?} is not a well-formed opencode session id (ses followed by letters, digits, _ or -): not sent to opencode at {url}")]
    MalformedId { url: String, id: String },

    /// A directory that the server would resolve against its own working
    /// directory (relative), or that is not UTF-8, was not sent.
    #[error("directory {} is not an absolute UTF-8 path: not sent to opencode at {url}", directory.display())]
    BadDirectory { url: String, directory: PathBuf },
}

impl Error {
    /// Which of the two cases this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            Error::NotRunning { .. } => FailureKind::NotRunning,
            _ => FailureKind::Failing,
        }
    }
}

/// ` Internal Server Error` for 500, empty for a status without one.
fn reason_phrase(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

fn shown_status_and_type(status: u16, content_type: &Option<String>) -> String {
    let ct = content_type
        .as_deref()
        .unwrap_or("a body without content type");
    if status == 200 {
        ct.to_owned()
    } else {
        format!("{status} {ct}")
    }
}

/// The request an answer belongs to, for errors.
#[derive(Clone, Debug)]
pub(super) struct Ctx {
    pub(super) url: String,
    pub(super) op: String,
    pub(super) timeout: Duration,
}

impl Ctx {
    pub(super) fn unexpected(&self, what: &str) -> Error {
        Error::Unexpected {
            url: self.url.clone(),
            op: self.op.clone(),
            what: what.to_owned(),
        }
    }

    /// Classifies a reqwest error: connection refused anywhere in its
    /// chain is [`Error::NotRunning`]; a timeout is [`Error::Timeout`];
    /// anything else [`Error::Transport`].
    pub(super) fn transport(&self, error: &reqwest::Error) -> Error {
        let refused = chain(error).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if refused {
            Error::NotRunning {
                url: self.url.clone(),
                op: self.op.clone(),
            }
        } else if error.is_timeout() {
            Error::Timeout {
                url: self.url.clone(),
                op: self.op.clone(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            }
        } else {
            Error::Transport {
                url: self.url.clone(),
                op: self.op.clone(),
                reason: describe(error),
            }
        }
    }
}

/// An error and its sources.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// An error with its sources, each once (reqwest and hyper repeat their
/// sources' text in their own).
pub(super) fn describe(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(error) {
        // Without the URL reqwest puts in its own message: the error names
        // the server already.
        let text = e.to_string();
        let text = match text.split_once(" for url (") {
            Some((before, _)) => before.to_owned(),
            None => text,
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// A whole answer.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: Option<String>,
    pub(super) body: Vec<u8>,
}

impl Answer {
    fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The body as `T`: JSON content type required, then strict parsing.
    pub(super) fn json<T: DeserializeOwned>(&self, ctx: &Ctx) -> Result<T, Error> {
        if !self.is_json() {
            return Err(Error::NotJson {
                url: ctx.url.clone(),
                op: ctx.op.clone(),
                status: self.status,
                content_type: self.content_type.clone(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| Error::MalformedJson {
            url: ctx.url.clone(),
            op: ctx.op.clone(),
            reason: e.to_string(),
        })
    }

    /// The error for a status the request does not expect.
    pub(super) fn unexpected_status(&self, ctx: &Ctx, sent_password: bool) -> Error {
        if self.status == StatusCode::UNAUTHORIZED.as_u16() {
            let hint = if sent_password {
                "the server refused opencode.username and opencode.password (see OPENCODE_SERVER_USERNAME and OPENCODE_SERVER_PASSWORD of opencode serve)"
            } else {
                "the server wants a password: set opencode.password (or OPENCODE_SERVER_PASSWORD) to the one opencode serve was started with"
            };
            return Error::Unauthorized {
                url: ctx.url.clone(),
                op: ctx.op.clone(),
                hint: hint.to_owned(),
            };
        }
        Error::Status {
            url: ctx.url.clone(),
            op: ctx.op.clone(),
            status: self.status,
            detail: self.detail(),
        }
    }

    /// What the body says about an error: the server's error name and
    /// message, or the content type and the start of the text.
    fn detail(&self) -> String {
        if self.is_json() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
                return match server_error(&v) {
                    Some(said) => format!(": {said}"),
                    None => format!(": {}", snippet(&v.to_string())),
                };
            }
        }
        let ct = self.content_type.as_deref().unwrap_or("no content type");
        let text = String::from_utf8_lossy(&self.body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || ct.starts_with("text/html") {
            format!(" ({ct})")
        } else {
            format!(" ({ct}): {}", snippet(&text))
        }
    }
}

/// The name and message of opencode's error shapes:
/// `{"name":…,"data":{"message":…,"ref":…}}` and `{"_tag":…,"message":…}`.
fn server_error(v: &serde_json::Value) -> Option<String> {
    let (name, message, reference) = if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
        let data = v.get("data");
        (
            name,
            data.and_then(|d| d.get("message")).and_then(|m| m.as_str()),
            data.and_then(|d| d.get("ref")).and_then(|r| r.as_str()),
        )
    } else {
        (
            v.get("_tag")?.as_str()?,
            v.get("message").and_then(|m| m.as_str()),
            None,
        )
    };
    let mut out = name.to_owned();
    if let Some(m) = message {
        out.push_str(": ");
        out.push_str(&snippet(m));
    }
    if let Some(r) = reference {
        out.push_str(&format!(" (ref {r})"));
    }
    Some(out)
}

/// At most [`SNIPPET`] characters of `text`.
fn snippet(text: &str) -> String {
    match text.char_indices().nth(SNIPPET) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn ctx() -> Ctx {
        Ctx {
            url: "http://127.0.0.1:4096".into(),
            op: "GET /api/session".into(),
            timeout: Duration::from_secs(3),
        }
    }

    pub(crate) fn answer(status: u16, content_type: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            content_type: content_type.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_connection_refused_is_not_running() {
        let not_running = Error::NotRunning {
            url: "u".into(),
            op: "o".into(),
        };
        assert_eq!(not_running.kind(), FailureKind::NotRunning);
        let c = ctx();
        for failing in [
            c.unexpected("x"),
            Error::Timeout {
                url: "u".into(),
                op: "o".into(),
                timeout: "3s".into(),
            },
            answer(500, Some("application/json"), "{}").unexpected_status(&c, false),
            answer(401, None, "").unexpected_status(&c, false),
            answer(200, Some("text/html"), "<html>")
                .json::<bool>(&c)
                .unwrap_err(),
            answer(200, Some("application/json"), "{")
                .json::<bool>(&c)
                .unwrap_err(),
            Error::MalformedId {
                url: "u".into(),
                id: "x".into(),
            },
        ] {
            assert_eq!(failing.kind(), FailureKind::Failing, "{failing}");
        }
    }

    #[test]
    fn html_with_200_is_not_json() {
        let err = answer(200, Some("text/html"), "<!doctype html><html></html>")
            .json::<bool>(&ctx())
            .unwrap_err();
        assert!(matches!(err, Error::NotJson { status: 200, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "opencode at http://127.0.0.1:4096 answered text/html to GET /api/session (expected JSON): is opencode.url pointing at the web app?"
        );
        let err = answer(404, None, "nope").json::<bool>(&ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "opencode at http://127.0.0.1:4096 answered 404 a body without content type to GET /api/session (expected JSON): is opencode.url pointing at the web app?"
        );
    }

    #[test]
    fn json_content_type_may_carry_parameters() {
        let a = answer(200, Some("Application/JSON; charset=utf-8"), "true");
        assert!(a.json::<bool>(&ctx()).unwrap());
        let a = answer(200, Some("application/jsonp"), "true");
        assert!(matches!(a.json::<bool>(&ctx()), Err(Error::NotJson { .. })));
    }

    #[test]
    fn malformed_json_is_named() {
        for body in ["{", "true false", "\"true\"", "[]"] {
            let err = answer(200, Some("application/json"), body)
                .json::<bool>(&ctx())
                .unwrap_err();
            assert!(
                matches!(err, Error::MalformedJson { .. }),
                "{body}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("opencode at http://127.0.0.1:4096 answered malformed JSON to GET /api/session: "),
                "{err}"
            );
        }
    }

    #[test]
    fn status_errors_quote_the_server() {
        let err = answer(
            500,
            Some("application/json"),
            r#"{"name":"UnknownError","data":{"message":"Unexpected server error. Check server logs for details.","ref":"err_1181bf4e"}}"#,
        )
        .unexpected_status(&ctx(), false);
        assert_eq!(
            err.to_string(),
            "opencode at http://127.0.0.1:4096 answered 500 Internal Server Error to GET /api/session: UnknownError: Unexpected server error. Check server logs for details. (ref err_1181bf4e)"
        );
        let err = answer(
            502,
            Some("text/html"),
            "<html><body>Bad gateway</body></html>",
        )
        .unexpected_status(&ctx(), false);
        assert_eq!(
            err.to_string(),
            "opencode at http://127.0.0.1:4096 answered 502 Bad Gateway to GET /api/session (text/html)"
        );
        let err = answer(503, Some("text/plain"), "  busy,\n try later ")
            .unexpected_status(&ctx(), false);
        assert_eq!(
            err.to_string(),
            "opencode at http://127.0.0.1:4096 answered 503 Service Unavailable to GET /api/session (text/plain): busy, try later"
        );
        let err = answer(401, None, "").unexpected_status(&ctx(), false);
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
        assert!(err.to_string().contains("set opencode.password"), "{err}");
        let err = answer(401, None, "").unexpected_status(&ctx(), true);
        assert!(
            err.to_string()
                .contains("refused opencode.username and opencode.password"),
            "{err}"
        );
    }
}
