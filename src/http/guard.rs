//! What every request passes before its route: the body read (and
//! bounded), then the token.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use subtle::ConstantTimeEq;

use super::input::{bad_request, error};
use super::routes::{route_of, Handler};
use super::{App, ServeOptions, DRAIN_BYTES, MAX_BODY_BYTES};

/// How long a body may take; set by [`serve_with`].
#[derive(Clone, Copy)]
pub(super) struct BodyReadTimeout(pub(super) Duration);

/// Reads (and drops) the request body before the route runs, so that a
/// keep-alive connection stays in step and a client that sent a body gets
/// its answer: at most [`MAX_BODY_BYTES`] within
/// [`ServeOptions::body_read_timeout`].
pub(super) async fn limit_body(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let timeout = parts
        .extensions
        .get::<BodyReadTimeout>()
        .map_or(ServeOptions::default().body_read_timeout, |t| t.0);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = |n: u64| {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is {n} bytes or more: at most {MAX_BODY_BYTES} are accepted, and \
                 bodies are ignored"
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if let Some(n) = declared.filter(|n| *n > DRAIN_BYTES as u64) {
        // Not worth reading: answer, and the connection closes.
        return too_large(n);
    }
    let read = tokio::time::timeout(timeout, async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                // Past the limit, drain a while more so the client reads the
                // answer rather than a reset.
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        }
        Ok::<usize, String>(seen)
    })
    .await;
    match read {
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(timeout)
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        Ok(Err(e)) => bad_request(format!("cannot read the request body: {e}")),
        Ok(Ok(n)) if n > MAX_BODY_BYTES => too_large(n as u64),
        Ok(Ok(_)) => {
            next.run(Request::from_parts(parts, axum::body::Body::empty()))
                .await
        }
    }
}

pub(super) async fn authorize(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(req).await;
    };
    if req.uri().path() == route_of(Handler::Healthz).pattern {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| bearer(v.as_bytes()));
    let (message, challenge) = match presented {
        None => (
            "missing bearer token: send `Authorization: Bearer <token>`",
            r#"Bearer realm="boo-reconciler""#,
        ),
        Some(None) => (
            "the Authorization header is not `Bearer <token>`",
            r#"Bearer realm="boo-reconciler", error="invalid_request""#,
        ),
        Some(Some(given)) => {
            let expected = token.as_bytes();
            if !expected.is_empty() && bool::from(given.ct_eq(expected)) {
                return next.run(req).await;
            }
            (
                "invalid bearer token",
                r#"Bearer realm="boo-reconciler", error="invalid_token""#,
            )
        }
    };
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
pub(super) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    let start = rest.iter().position(|b| *b != b' ')?;
    let end = rest.iter().rposition(|b| *b != b' ')? + 1;
    Some(&rest[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_parsed() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
    }
}
