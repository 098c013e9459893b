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
//!
//! The failures, and how an answer is judged, are in `error`; the JSON
//! shapes the server answers with, in `wire`.

mod error;
mod wire;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde::Serialize;
use url::Url;

use crate::config::{display_url, Opencode};
use error::{describe, Answer, Ctx};
pub use error::{Error, FailureKind};
use wire::{NotFound, WireHealth, WirePage};

/// Sessions asked for per page of `/api/session`.
const PAGE_SIZE: usize = 100;
/// A listing that has not ended after this many pages is an error (a
/// server whose cursor never runs out must not keep a pass busy forever).
const MAX_PAGES: usize = 10_000;
/// The most of one answer that is read.
const MAX_BODY: usize = 32 * 1024 * 1024;

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
        let (ctx, answer) = self.send(Method::GET, "global/health", &[]).await?;
        match answer.status {
            200 => {
                let wire: WireHealth = answer.json(&ctx)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
