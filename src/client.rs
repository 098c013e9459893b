//! Talking to a running controller over its HTTP API: `status` reads
//! `/status`; `once` beside a live daemon nudges it instead of acting.
//! [`crate::status`] renders what comes back for people. Each request's
//! method and path are those of its route in [`crate::http::routes::ROUTES`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::http::routes::{self, Handler, Route, Verb};
use crate::model::Scope;
use crate::report::{exit, PassResult};

/// A running controller's HTTP API at `base` (with the bearer token, if
/// any).
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why a request did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered: no daemon there, or not reachable.
    #[error("cannot reach the controller at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// Something answered, but not with a success.
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{url} answered non-JSON: {source}")]
    NotJson {
        url: String,
        source: serde_json::Error,
    },
}

impl Client {
    /// `timeout` bounds each request as a whole, so it must exceed the
    /// daemon's own bound on a run for a nudge to see the answer.
    pub fn new(base: &str, token: Option<&str>, timeout: Duration) -> anyhow::Result<Client> {
        // reqwest is built without a default TLS provider (the opencode
        // client brings its own): install one for this process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: reqwest::Client::builder().timeout(timeout).build()?,
        })
    }

    /// The base address for a listen address: an unspecified address
    /// (`0.0.0.0`, `[::]`) is reached over loopback.
    pub fn base_for(listen: std::net::SocketAddr) -> String {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.send(self.status_request()).await
    }

    /// The request of the status, on its route.
    fn status_request(&self) -> reqwest::RequestBuilder {
        let route = routes::route_of(Handler::Status);
        self.request(route, route.pattern)
    }

    /// Asks the controller to reconcile `scope` now and returns its answer.
    /// A pass that could not read its state answers 500 or 503 with the
    /// pass's body, and a forced one whose target another run held answers
    /// 409 with it: that is an answer (the pass failed, or was busy), where
    /// a 503 with only `{"error": …}` is the controller not running the
    /// pass at all (stopping, standing by, timed out).
    pub async fn nudge(&self, scope: &Scope, force: bool) -> Result<Value, ClientError> {
        match self.send(self.nudge_request(scope, force)).await {
            Err(ClientError::Refused { url, status, body }) => {
                pass_answer(&body).ok_or(ClientError::Refused { url, status, body })
            }
            r => r,
        }
    }

    /// The nudge of `scope`, on the scope's own route.
    fn nudge_request(&self, scope: &Scope, force: bool) -> reqwest::RequestBuilder {
        let route = routes::nudge_route(scope.kind());
        let path = route.with_id(scope.id().unwrap_or_default());
        self.request(route, &format!("{path}?force={force}"))
    }

    /// A request to `route` at `path` (with its id, and any query), with
    /// the route's method.
    fn request(&self, route: &Route, path: &str) -> reqwest::RequestBuilder {
        let method = match route.verb {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
        };
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let req = req.build().map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let url = req.url().to_string();
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(ClientError::Refused { url, status, body });
        }
        serde_json::from_str(&body).map_err(|source| ClientError::NotJson { url, source })
    }
}

/// What an answer says its pass came to: every answer of a pass names a
/// result ([`crate::http::answer::NudgeAnswer::result`]), and one this
/// version does not know is still an answer.
#[derive(Deserialize)]
struct Verdict {
    result: Said,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Said {
    Known(PassResult),
    Other(#[allow(dead_code)] String),
}

impl Verdict {
    fn of(answer: &Value) -> Option<Verdict> {
        Verdict::deserialize(answer).ok()
    }
}

/// `body` if it is the answer of a pass.
fn pass_answer(body: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(body).ok()?;
    Verdict::of(&v).map(|_| v)
}

/// The targets an answer names as busy: forced actions that did not
/// happen because another run was acting on them (a 409).
pub fn busy_in(answer: &Value) -> Vec<String> {
    answer["busy"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The exit code a nudge's answer stands for, as `once` would have
/// returned had it acted itself.
pub fn exit_code_of(answer: &Value) -> u8 {
    if !busy_in(answer).is_empty() {
        return exit::BUSY;
    }
    match Verdict::of(answer).map(|v| v.result) {
        Some(Said::Known(result)) => result.exit_code(),
        _ => exit::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_over_loopback() {
        assert_eq!(
            Client::base_for("0.0.0.0:7878".parse().unwrap()),
            "http://127.0.0.1:7878"
        );
        assert_eq!(
            Client::base_for("[::]:7878".parse().unwrap()),
            "http://[::1]:7878"
        );
        assert_eq!(
            Client::base_for("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }

    /// The route of the table a request of `method` on `path` reaches, as
    /// the router matches it (`{id}` stands for one non-empty segment),
    /// with the id it names.
    fn routed(method: &reqwest::Method, path: &str) -> Option<(&'static Route, Option<String>)> {
        routes::ROUTES
            .iter()
            .filter(|r| r.verb.as_str() == method.as_str())
            .find_map(|r| {
                let (want, got): (Vec<_>, Vec<_>) =
                    (r.pattern.split('/').collect(), path.split('/').collect());
                if want.len() != got.len() {
                    return None;
                }
                let mut id = None;
                for (w, g) in want.iter().zip(&got) {
                    if *w == "{id}" && !g.is_empty() {
                        id = Some(g.to_string());
                    } else if w != g {
                        return None;
                    }
                }
                Some((r, id))
            })
    }

    #[test]
    fn every_request_of_the_client_is_a_route_of_the_table_with_its_method() {
        let client = Client::new("http://127.0.0.1:7878/", None, Duration::from_secs(1)).unwrap();
        for scope in [
            Scope::Host,
            Scope::Chat("c1".into()),
            Scope::Session("s1".into()),
        ] {
            for force in [false, true] {
                let req = client.nudge_request(&scope, force).build().unwrap();
                let line = format!("{} {}", req.method(), req.url());
                let (route, id) = routed(req.method(), req.url().path())
                    .unwrap_or_else(|| panic!("{line} is no route"));
                let nudged = match route.handler {
                    Handler::NudgeId { of, legacy, .. } => {
                        assert!(!legacy, "{line}: the close hook's alias");
                        of
                    }
                    Handler::NudgeHost => crate::model::ScopeKind::Host,
                    _ => panic!("{line} is not a nudge"),
                };
                assert_eq!(nudged, scope.kind(), "{line}");
                assert_eq!(id.as_deref(), scope.id(), "{line}");
                assert_eq!(req.url().query(), Some(format!("force={force}").as_str()));
            }
        }
        let req = client.status_request().build().unwrap();
        let (route, _) = routed(req.method(), req.url().path()).expect("/status is a route");
        assert_eq!(route.handler, Handler::Status);
    }

    #[test]
    fn a_pass_body_is_an_answer_whatever_the_status_and_an_error_body_is_not() {
        let pass = r#"{"scope":"host","ok":false,"result":"error","errors":["database down"]}"#;
        assert_eq!(pass_answer(pass).unwrap()["result"], "error");
        assert!(pass_answer(r#"{"error":"shutting down"}"#).is_none());
        assert!(pass_answer("Service Unavailable").is_none());
        assert!(pass_answer(r#"{"result":null}"#).is_none());
    }

    #[test]
    fn the_answer_maps_to_the_exit_code_once_would_give() {
        use serde_json::json;
        assert_eq!(exit_code_of(&json!({"result": "converged"})), 0);
        assert_eq!(exit_code_of(&json!({"result": "at_risk"})), 3);
        assert_eq!(exit_code_of(&json!({"result": "error"})), 1);
        assert_eq!(exit_code_of(&json!({})), 1);
        let busy = json!({"result": "error", "busy": ["worktree:/tmp/booworktrees/w1"]});
        assert_eq!(exit_code_of(&busy), 4);
        assert_eq!(busy_in(&busy), vec!["worktree:/tmp/booworktrees/w1"]);
        assert_eq!(exit_code_of(&json!({"result": "converged", "busy": []})), 0);
    }
}
