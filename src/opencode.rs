//! The client of the shared `opencode serve`: list, abort and delete its
//! sessions, and dispose of its instance for a directory, over its HTTP API.
//!
//! Written against opencode 1.18.33 (the version `tests/opencode` pins and
//! the integration tests run against), whose OpenAPI document is served at
//! `GET /doc`. What it relies on, each checked against that server:
//!
//! | call | request | answer |
//! | --- | --- | --- |
//! | [`Client::health`] | `GET /global/health` | `{"healthy":true,"version":"1.18.33"}` |
//! | [`Client::list_sessions`] | `GET /api/session?directory=D&limit=N`, then `?cursor=…` | `{"data":[…],"cursor":{"next":…}}` |
//! | [`Client::list_all_sessions`] | `GET /api/session?limit=N`, then `?cursor=…` | the same, every directory |
//! | [`Client::abort`] | `POST /session/{id}/abort` | `true`, even for an unknown id |
//! | [`Client::delete`] | `DELETE /session/{id}` | `true` (children go too); 404 `NotFoundError` when unknown |
//! | [`Client::dispose_instance`] | `POST /instance/dispose?directory=D` | `true`, whether or not D had an instance |
//!
//! Both listings use the paged `/api/session` rather than the older
//! `GET /session?directory=D`: that one answers at most 100 sessions unless
//! given a `limit`, with no cursor, so a directory with more would be cut
//! short without a word; and it bootstraps a server-side instance for every
//! directory it is asked about, even one that does not exist. `/api/session`
//! filters on the exact directory string (no normalisation: `/a/` is not
//! `/a`), pages with an opaque cursor, and includes child and archived
//! sessions. (The `x-opencode-directory` header does *not* filter
//! `GET /session`: it selects the project, and a linked git worktree shares
//! its project with the main repository.)
//!
//! # Failures
//!
//! Every request has a limit (`opencode.timeout`, from connecting to the
//! last byte of the answer: a request that reaches the server while its
//! listener is still opening can hang without an answer). Every answer is
//! checked for its status *and* its content type: the server answers any
//! unknown path with its web app's HTML and a 200, so a 200 alone proves
//! nothing. JSON is parsed into exactly the expected shape (unknown fields
//! are ignored; missing or mistyped ones are errors).
//!
//! All failures are one [`Error`]; [`Error::kind`] tells the two cases a
//! caller acts on apart: [`FailureKind::NotRunning`] (connection refused:
//! nothing listens, so no session can be running) and
//! [`FailureKind::Failing`] (everything else: the server is there but cannot
//! be trusted with an answer). Messages name the server's URL (which never
//! carries a password: the configuration refuses one) and the request.
//!
//! The client uses no proxy (`HTTP_PROXY` and the like are ignored: the
//! server is this host's) and follows no redirect (credentials would follow
//! it).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{display_url, Opencode};

/// Sessions asked for per page of `/api/session`.
const PAGE_SIZE: usize = 100;
/// A listing that has not ended after this many pages is an error (a
/// server whose cursor never runs out must not keep a pass busy forever).
const MAX_PAGES: usize = 10_000;
/// The most of one answer that is read.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The most of an unexpected answer's body quoted in an error.
const SNIPPET: usize = 200;

/// A session on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// `ses_…`.
    pub id: String,
    /// The directory the session works in, as the server recorded it.
    pub directory: PathBuf,
    /// The session this one was started from (a subagent's session); a
    /// child goes when its parent is deleted.
    pub parent_id: Option<String>,
    /// The server's project: the git root commit, or `global`.
    pub project_id: String,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// What [`Client::health`] learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The server's version, e.g. `1.18.33`.
    pub version: String,
}

/// What became of a [`Client::delete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deleted {
    /// The server deleted it now (with its child sessions).
    Deleted,
    /// The server does not know it (any more).
    AlreadyGone,
}

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
    /// [`is_wellformed_session_id`]).
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

/// Whether `id` can be sent to the server as a session id; see
/// [`crate::model::is_wellformed_opencode_id`].
pub fn is_wellformed_session_id(id: &str) -> bool {
    crate::model::is_wellformed_opencode_id(id)
}

/// A client of one opencode server. Cheap to clone (the connection pool is
/// shared).
#[derive(Clone)]
pub struct Client {
    /// `Err` (why) when no client could be built: every call then fails
    /// with that reason.
    http: Result<reqwest::Client, String>,
    /// The base URL, its path ending in `/` so that relative paths join.
    base: Url,
    /// The base URL as shown in messages.
    shown: String,
    username: String,
    /// Empty: no authentication.
    password: String,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shown)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// The client for `config`, or `None` when the opencode part is off (an
    /// empty `opencode.url`).
    ///
    /// Installs *ring* as the process's rustls crypto provider if none is
    /// installed yet (reqwest is built without one, to keep aws-lc out of
    /// the build).
    ///
    /// Building the HTTP client loads the system's CA certificates, and
    /// fails on a host that has none (a slim container). An `http://` URL
    /// never makes a TLS connection (paths are joined onto it and redirects
    /// are not followed), so its client is then built without a
    /// certificate verifier; for an `https://` URL every call fails with
    /// the reason, as a [`FailureKind::Failing`] [`Error::Transport`].
    pub fn new(config: &Opencode) -> Option<Client> {
        let url = config.url.as_ref()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("boo-reconciler/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().build().or_else(|e| {
            let why = format!("cannot set up TLS: {}", describe(&e));
            if url.scheme() == "http" {
                // Unreachable TLS: see above.
                builder()
                    .tls_danger_accept_invalid_certs(true)
                    .build()
                    .map_err(|_| why)
            } else {
                Err(why)
            }
        });
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Some(Client {
            http,
            shown: display_url(url),
            base,
            username: config.username.clone(),
            password: config.password.clone(),
            timeout: config.timeout,
        })
    }

    /// The server's URL as shown in messages (never with a password).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// `GET /global/health`: the server answers and says it is healthy.
    pub async fn health(&self) -> Result<Health, Error> {
        #[derive(Deserialize)]
        struct Wire {
            healthy: bool,
            version: String,
        }
        let (ctx, answer) = self.send(Method::GET, "global/health", &[]).await?;
        match answer.status {
            200 => {
                let wire: Wire = answer.json(&ctx)?;
                if wire.healthy {
                    Ok(Health {
                        version: wire.version,
                    })
                } else {
                    Err(ctx.unexpected("healthy: false"))
                }
            }
            _ => Err(answer.unexpected_status(&ctx, !self.password.is_empty())),
        }
    }

    /// The sessions whose directory is exactly `directory` (children and
    /// archived ones included), in no particular order.
    ///
    /// `directory` must be absolute; `.` components, repeated and trailing
    /// slashes are dropped before it is sent (as the server does when it
    /// creates a session), `..` is kept as is. Only sessions whose recorded
    /// directory equals it come back, whatever the server answers.
    pub async fn list_sessions(&self, directory: &Path) -> Result<Vec<Session>, Error> {
        let normal = normalize(directory).ok_or_else(|| Error::BadDirectory {
            url: self.shown.clone(),
            directory: directory.to_path_buf(),
        })?;
        let mut sessions = self.list_pages(Some(&normal)).await?;
        sessions.retain(|s| s.directory == Path::new(&normal));
        Ok(sessions)
    }

    /// Every session on the server, of every directory (children and
    /// archived ones included), newest first as the server pages them. A
    /// session updated while the pages are read may move between pages: it
    /// is listed once, or (rarely) missed until the next listing.
    pub async fn list_all_sessions(&self) -> Result<Vec<Session>, Error> {
        self.list_pages(None).await
    }

    /// `POST /session/{id}/abort`: stops whatever the session is running.
    /// The server answers `true` even for an id it does not know, so this
    /// succeeds for a session already gone (and so does a 404, should a
    /// later version send one).
    pub async fn abort(&self, id: &str) -> Result<(), Error> {
        self.check_id(id)?;
        let path = format!("session/{id}/abort");
        let (ctx, answer) = self.send(Method::POST, &path, &[]).await?;
        match answer.status {
            200 => answer.json::<bool>(&ctx).map(drop),
            404 => answer.json::<NotFound>(&ctx).map(drop),
            _ => Err(answer.unexpected_status(&ctx, !self.password.is_empty())),
        }
    }

    /// `DELETE /session/{id}`: deletes the session, its messages and its
    /// child sessions. An id the server does not know (404 `NotFoundError`)
    /// is [`Deleted::AlreadyGone`].
    pub async fn delete(&self, id: &str) -> Result<Deleted, Error> {
        self.check_id(id)?;
        let path = format!("session/{id}");
        let (ctx, answer) = self.send(Method::DELETE, &path, &[]).await?;
        match answer.status {
            200 => match answer.json::<bool>(&ctx)? {
                true => Ok(Deleted::Deleted),
                false => Err(ctx.unexpected("false (not deleted)")),
            },
            404 => answer.json::<NotFound>(&ctx).map(|_| Deleted::AlreadyGone),
            _ => Err(answer.unexpected_status(&ctx, !self.password.is_empty())),
        }
    }

    /// `POST /instance/dispose?directory=D`: the server drops its instance
    /// for `directory` (the file watcher, language servers and the like it
    /// keeps, for as long as it runs, for every directory it has served).
    ///
    /// What opencode 1.18.33 does, checked against it:
    /// - The directory is the `directory` query parameter; without one the
    ///   server falls back to the `x-opencode-directory` header and then to
    ///   its own working directory, so it is always sent, as a query
    ///   parameter. A relative one would be resolved against that working
    ///   directory: it is refused here ([`Error::BadDirectory`]), and the
    ///   path is normalised as for [`Client::list_sessions`] (the server
    ///   strips a trailing `/` itself: `D/` disposes of `D`).
    /// - The answer is `200` with `true`, whether or not the directory had
    ///   an instance, and even when it does not exist: the server first
    ///   boots an instance for it (a few tens of milliseconds; it creates
    ///   no directory), then disposes of it. Calling it again is harmless.
    /// - Disposal happens as the answer goes out; it shows as the event
    ///   `server.instance.disposed` (`properties.directory` = D) on
    ///   `GET /global/event`, and as `disposing instance directory=D` in
    ///   the server's log (after `creating instance` when there was none).
    ///   No route lists the instances themselves.
    /// - Sessions in D stay listed and deletable; the next request for D
    ///   boots a new instance. A session still working in D would have its
    ///   file watcher and language servers stopped under it, so callers
    ///   check that none remains first.
    pub async fn dispose_instance(&self, directory: &Path) -> Result<(), Error> {
        let normal = normalize(directory).ok_or_else(|| Error::BadDirectory {
            url: self.shown.clone(),
            directory: directory.to_path_buf(),
        })?;
        let (ctx, answer) = self
            .send(Method::POST, "instance/dispose", &[("directory", &normal)])
            .await?;
        match answer.status {
            200 => match answer.json::<bool>(&ctx)? {
                true => Ok(()),
                false => Err(ctx.unexpected("false (not disposed)")),
            },
            _ => Err(answer.unexpected_status(&ctx, !self.password.is_empty())),
        }
    }

    fn check_id(&self, id: &str) -> Result<(), Error> {
        if is_wellformed_session_id(id) {
            Ok(())
        } else {
            Err(Error::MalformedId {
                url: self.shown.clone(),
                id: id.to_owned(),
            })
        }
    }

    /// Reads `/api/session` page by page until a page comes back empty or
    /// without a next cursor. (A short page does not mean the end: the
    /// server may cap the page size below what was asked.)
    async fn list_pages(&self, directory: Option<&str>) -> Result<Vec<Session>, Error> {
        let limit = PAGE_SIZE.to_string();
        let mut cursor: Option<String> = None;
        let mut cursors_seen = HashSet::new();
        let mut ids = HashSet::new();
        let mut sessions = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", limit.as_str())];
            match &cursor {
                // The cursor carries the directory filter.
                Some(c) => query.push(("cursor", c.as_str())),
                None => query.extend(directory.map(|d| ("directory", d))),
            }
            let (ctx, answer) = self.send(Method::GET, "api/session", &query).await?;
            if answer.status != 200 {
                return Err(answer.unexpected_status(&ctx, !self.password.is_empty()));
            }
            let page: WirePage = answer.json(&ctx)?;
            if page.data.is_empty() {
                return Ok(sessions);
            }
            for wire in page.data {
                if ids.insert(wire.id.clone()) {
                    sessions.push(wire.into_session());
                }
            }
            match page.cursor.next {
                None => return Ok(sessions),
                Some(next) => {
                    if !cursors_seen.insert(next.clone()) {
                        return Err(ctx.unexpected("a cursor it had already given (a loop)"));
                    }
                    cursor = Some(next);
                }
            }
        }
        let (ctx, _) = self.request_ctx(Method::GET, "api/session", &[]);
        Err(ctx.unexpected(&format!("more than {MAX_PAGES} pages of sessions")))
    }

    fn request_ctx(&self, method: Method, path: &str, query: &[(&str, &str)]) -> (Ctx, Url) {
        let mut url = self
            .base
            .join(path)
            .expect("relative API paths join onto an http(s) base URL");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let ctx = Ctx {
            url: self.shown.clone(),
            op: format!("{method} {}", url.path()),
            timeout: self.timeout,
        };
        (ctx, url)
    }

    /// Sends one request and reads the whole answer (at most [`MAX_BODY`]).
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(Ctx, Answer), Error> {
        let (ctx, url) = self.request_ctx(method.clone(), path, query);
        let http = self.http.as_ref().map_err(|why| Error::Transport {
            url: ctx.url.clone(),
            op: ctx.op.clone(),
            reason: why.clone(),
        })?;
        let mut request = http.request(method, url);
        if !self.password.is_empty() {
            request = request.basic_auth(&self.username, Some(&self.password));
        }
        let mut response = request.send().await.map_err(|e| ctx.transport(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ctx.transport(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ctx.unexpected(&format!(
                    "an answer larger than {} MiB",
                    MAX_BODY / 1024 / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((
            ctx,
            Answer {
                status,
                content_type,
                body,
            },
        ))
    }
}

/// An absolute UTF-8 path without `.` components, repeated or trailing
/// slashes; `None` for a relative or non-UTF-8 one.
fn normalize(directory: &Path) -> Option<String> {
    if !directory.is_absolute() {
        return None;
    }
    let clean: PathBuf = directory
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    clean.to_str().map(str::to_owned)
}

/// The request an answer belongs to, for errors.
#[derive(Clone, Debug)]
struct Ctx {
    url: String,
    op: String,
    timeout: Duration,
}

impl Ctx {
    fn unexpected(&self, what: &str) -> Error {
        Error::Unexpected {
            url: self.url.clone(),
            op: self.op.clone(),
            what: what.to_owned(),
        }
    }

    /// Classifies a reqwest error: connection refused anywhere in its
    /// chain is [`Error::NotRunning`]; a timeout is [`Error::Timeout`];
    /// anything else [`Error::Transport`].
    fn transport(&self, error: &reqwest::Error) -> Error {
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
fn describe(error: &reqwest::Error) -> String {
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
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
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
    fn json<T: DeserializeOwned>(&self, ctx: &Ctx) -> Result<T, Error> {
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
    fn unexpected_status(&self, ctx: &Ctx, sent_password: bool) -> Error {
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

/// opencode's 404 body.
#[derive(Deserialize)]
struct NotFound {
    #[allow(dead_code)]
    name: NotFoundName,
}

#[derive(Deserialize)]
enum NotFoundName {
    NotFoundError,
}

#[derive(Deserialize)]
struct WirePage {
    data: Vec<WireSession>,
    cursor: WireCursor,
}

#[derive(Deserialize)]
struct WireCursor {
    #[serde(default)]
    next: Option<String>,
}

/// `SessionV2Info` of the OpenAPI document, the fields used.
#[derive(Deserialize)]
struct WireSession {
    id: String,
    #[serde(rename = "parentID", default)]
    parent_id: Option<String>,
    #[serde(rename = "projectID")]
    project_id: String,
    time: WireTime,
    location: WireLocation,
}

#[derive(Deserialize)]
struct WireTime {
    created: Millis,
    updated: Millis,
}

#[derive(Deserialize)]
struct WireLocation {
    directory: PathBuf,
}

impl WireSession {
    fn into_session(self) -> Session {
        Session {
            id: self.id,
            directory: self.location.directory,
            parent_id: self.parent_id,
            project_id: self.project_id,
            created: self.time.created.0,
            updated: self.time.updated.0,
        }
    }
}

/// Milliseconds since the Unix epoch, a JSON number (integer, or a
/// non-negative finite float: the v2 schema says `number`).
struct Millis(SystemTime);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let ms = match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(f)) if (0.0..1e15).contains(&f) => {
                // Whole milliseconds: the server counts in them.
                Duration::from_millis(f.round() as u64)
            }
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "invalid timestamp {n}: expected milliseconds since 1970"
                )))
            }
        };
        UNIX_EPOCH
            .checked_add(ms)
            .map(Millis)
            .ok_or_else(|| serde::de::Error::custom(format!("timestamp {n} out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            url: "http://127.0.0.1:4096".into(),
            op: "GET /api/session".into(),
            timeout: Duration::from_secs(3),
        }
    }

    fn answer(status: u16, content_type: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            content_type: content_type.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn session_ids() {
        for good in [
            "ses_df4003625ffecleddWGg81mkxB",
            "ses_df40034ffffenDPqgijD3Ju4X6",
            "ses_custom",
            "sesXYZ",
            "ses_a-b",
        ] {
            assert!(is_wellformed_session_id(good), "{good}");
        }
        let long = format!("ses_{}", "a".repeat(125));
        for bad in [
            "",
            "ses",
            "xyz",
            "SES_abc",
            "msg_df4003625ffecleddWGg81mkxB",
            "ses_../../global/dispose",
            "ses_a/b",
            "ses_a?x=1",
            "ses_a#b",
            "ses_a b",
            "ses_a%2Fb",
            "ses_é",
            long.as_str(),
        ] {
            assert!(!is_wellformed_session_id(bad), "{bad}");
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

    #[test]
    fn page_parses_strictly() {
        let page: WirePage = serde_json::from_str(
            r#"{"data":[{"id":"ses_1","projectID":"global","cost":0,"time":{"created":1795497642458,"updated":1795497642752.0},"title":"t","location":{"directory":"/tmp/a"},"parentID":"ses_0","extra":1}],"cursor":{"previous":null,"next":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(page.cursor.next.as_deref(), Some("abc"));
        let s = page.data.into_iter().next().unwrap().into_session();
        assert_eq!(s.id, "ses_1");
        assert_eq!(s.directory, PathBuf::from("/tmp/a"));
        assert_eq!(s.parent_id.as_deref(), Some("ses_0"));
        assert_eq!(s.project_id, "global");
        assert_eq!(
            s.created,
            UNIX_EPOCH + Duration::from_millis(1_795_497_642_458)
        );
        assert_eq!(
            s.updated,
            UNIX_EPOCH + Duration::from_millis(1_795_497_642_752)
        );
        for bad in [
            // no location
            r#"{"data":[{"id":"ses_1","projectID":"g","time":{"created":1,"updated":1}}],"cursor":{}}"#,
            // negative time
            r#"{"data":[{"id":"ses_1","projectID":"g","time":{"created":-1,"updated":1},"location":{"directory":"/a"}}],"cursor":{}}"#,
            // time as a string
            r#"{"data":[{"id":"ses_1","projectID":"g","time":{"created":"1","updated":1},"location":{"directory":"/a"}}],"cursor":{}}"#,
            // no cursor
            r#"{"data":[]}"#,
        ] {
            assert!(serde_json::from_str::<WirePage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn not_found_body_must_be_opencodes() {
        let ok = answer(
            404,
            Some("application/json"),
            r#"{"name":"NotFoundError","data":{"message":"Session not found: ses_x"}}"#,
        );
        assert!(ok.json::<NotFound>(&ctx()).is_ok());
        let other = answer(404, Some("application/json"), r#"{"error":"no route"}"#);
        assert!(matches!(
            other.json::<NotFound>(&ctx()),
            Err(Error::MalformedJson { .. })
        ));
    }

    /// Run in a child process (the environment is process-wide): a host
    /// without CA certificates.
    #[tokio::test]
    #[ignore = "run by without_ca_certificates_http_works_and_https_fails in a child process"]
    async fn child_without_ca_certificates() {
        if std::env::var("BOO_TEST_CHILD").as_deref() != Ok("no-ca") {
            return;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(
            reqwest::Client::builder().build().is_err(),
            "without CA certificates a default client cannot be built"
        );
        let config = |url: &str| Opencode {
            enabled: true,
            url: Some(url.parse().unwrap()),
            username: "opencode".into(),
            password: String::new(),
            timeout: Duration::from_secs(2),
            orphan_min_age: Duration::from_secs(600),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // http: the request goes out (and finds nothing listening).
        let c = Client::new(&config(&format!("http://127.0.0.1:{port}"))).unwrap();
        let err = c.health().await.unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
        // https: never sent, the reason is given.
        let c = Client::new(&config(&format!("https://127.0.0.1:{port}"))).unwrap();
        let err = c.health().await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.to_string().contains("cannot set up TLS"), "{err}");
        assert_eq!(err.kind(), FailureKind::Failing);
    }

    #[test]
    fn without_ca_certificates_http_works_and_https_fails() {
        let empty = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "opencode::tests::child_without_ca_certificates",
                "--ignored",
                "--nocapture",
            ])
            .env("BOO_TEST_CHILD", "no-ca")
            .env("SSL_CERT_FILE", empty.path().join("none.pem"))
            .env("SSL_CERT_DIR", empty.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn directories_are_absolute_and_normalized() {
        assert_eq!(normalize(Path::new("/tmp/a/")).as_deref(), Some("/tmp/a"));
        assert_eq!(
            normalize(Path::new("/tmp//a/./b")).as_deref(),
            Some("/tmp/a/b")
        );
        assert_eq!(normalize(Path::new("tmp/a")), None);
        assert_eq!(normalize(Path::new("")), None);
    }
}
