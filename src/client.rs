//! Talking to a running controller over its HTTP API: `status` reads
//! `/status`; `once` beside a live daemon nudges it instead of acting.
//! [`crate::status`] renders what comes back for people.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

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
        self.send(self.http.get(format!("{}/status", self.base)))
            .await
    }

    /// Asks the controller to reconcile `scope` now and returns its answer.
    /// A pass that could not read its state answers 500 or 503 with the
    /// pass's body, and a forced one whose target another run held answers
    /// 409 with it: that is an answer (the pass failed, or was busy), where
    /// a 503 with only `{"error": …}` is the controller not running the
    /// pass at all (stopping, standing by, timed out).
    pub async fn nudge(&self, scope: &Scope, force: bool) -> Result<Value, ClientError> {
        let path = match scope {
            Scope::Host => "/reconcile".to_string(),
            Scope::Chat(id) => format!("/reconcile/{id}"),
            Scope::Session(id) => format!("/sessions/{id}/reconcile"),
        };
        let url = format!("{}{path}?force={force}", self.base);
        match self.send(self.http.post(url)).await {
            Err(ClientError::Refused { url, status, body }) => {
                pass_answer(&body).ok_or(ClientError::Refused { url, status, body })
            }
            r => r,
        }
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
