//! What a request brings: its ids and query, checked; and the errors
//! that answer a bad one.

use std::collections::BTreeSet;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::answer::{json, ErrorAnswer};
use super::routes::{self, empty_id_route};
use super::{MAX_ID_BYTES, PARAMS};
use crate::model::ScopeKind;

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(
        status,
        &ErrorAnswer {
            error: message.into(),
        },
    )
}

pub(super) fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// 1 to [`MAX_ID_BYTES`] bytes of `[A-Za-z0-9_.:-]`.
pub(super) fn validate_id(of: ScopeKind, id: &str) -> Result<(), String> {
    let what = of.as_str();
    if id.is_empty() {
        return Err(format!("{what} id is empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "{what} id is {} bytes long: at most {MAX_ID_BYTES} are allowed",
            id.len()
        ));
    }
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "{what} id has {c:?} at byte {at}: only letters A-Z a-z, digits 0-9 and _ . : - \
             are allowed (after percent-decoding)"
        ));
    }
    Ok(())
}

/// The id of a path, decoded and validated; else the message of the 400.
pub(super) fn path_id(
    of: ScopeKind,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, String> {
    let id = match path {
        Ok(Path(id)) => id,
        Err(PathRejection::FailedToDeserializePathParams(e))
            if matches!(
                e.kind(),
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { .. }
            ) =>
        {
            return Err(format!(
                "{} id is not valid UTF-8 after percent-decoding",
                of.as_str()
            ))
        }
        Err(e) => return Err(format!("{} id: {}", of.as_str(), e.body_text())),
    };
    validate_id(of, &id)?;
    Ok(id)
}

/// `?force=` and `?dry_run=`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Flags {
    pub(super) force: bool,
    pub(super) dry_run: bool,
}

pub(super) fn parse_flags(query: Option<&str>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut seen = BTreeSet::new();
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(flags);
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "force" => &mut flags.force,
            "dry_run" => &mut flags.dry_run,
            other => {
                return Err(format!(
                    "unknown query parameter {:?}: accepted are {}",
                    truncate(other, 64),
                    PARAMS.join(", ")
                ))
            }
        };
        if !seen.insert(name.to_string()) {
            return Err(format!("query parameter {name} is given more than once"));
        }
        *slot = match value.as_ref() {
            "true" | "1" => true,
            "false" | "0" => false,
            v => {
                return Err(format!(
                    "query parameter {name}={:?}: accepted values are true, false, 1 and 0",
                    truncate(v, 64)
                ))
            }
        };
    }
    Ok(flags)
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(super) async fn not_found(method: Method, uri: Uri) -> Response {
    if let Some(of) = empty_id_route(uri.path()) {
        if method == Method::POST {
            return bad_request(format!("{} id is empty", of.as_str()));
        }
        return method_not_allowed(method, uri).await;
    }
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: the routes are {}",
            truncate(uri.path(), 200),
            routes::listing()
        ),
    )
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let allowed = routes::verb_of(path).allow();
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}: use {allowed}",
            truncate(path, 200)
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_by_each_rule() {
        assert!(validate_id(ScopeKind::Chat, "c1").is_ok());
        assert!(validate_id(ScopeKind::Chat, "A-z_0.9:x").is_ok());
        assert!(validate_id(ScopeKind::Chat, &"a".repeat(128)).is_ok());
        assert!(validate_id(ScopeKind::Chat, "")
            .unwrap_err()
            .contains("chat id is empty"));
        assert!(validate_id(ScopeKind::Session, &"a".repeat(129))
            .unwrap_err()
            .contains("129 bytes long: at most 128"));
        let e = validate_id(ScopeKind::Chat, "a/b").unwrap_err();
        assert!(e.contains("'/' at byte 1"), "{e}");
        assert!(validate_id(ScopeKind::Chat, "é").is_err());
        assert!(validate_id(ScopeKind::Chat, "a b").is_err());
        assert!(validate_id(ScopeKind::Chat, "a\0").is_err());
    }

    #[test]
    fn flags_accept_only_known_parameters_and_values() {
        let f = parse_flags(Some("force=true&dry_run=0")).unwrap();
        assert!(f.force && !f.dry_run);
        let f = parse_flags(Some("force=1")).unwrap();
        assert!(f.force);
        assert!(!parse_flags(None).unwrap().force);
        assert!(!parse_flags(Some("")).unwrap().force);
        let e = parse_flags(Some("force=maybe")).unwrap_err();
        assert!(
            e.contains("force=\"maybe\"") && e.contains("true, false, 1 and 0"),
            "{e}"
        );
        let e = parse_flags(Some("forse=true")).unwrap_err();
        assert!(e.contains("unknown query parameter \"forse\""), "{e}");
        let e = parse_flags(Some("force=true&force=false")).unwrap_err();
        assert!(e.contains("more than once"), "{e}");
        assert!(parse_flags(Some("force")).is_err());
        assert!(parse_flags(Some("force=TRUE")).is_err());
    }

    #[test]
    fn empty_ids_of_known_routes_are_recognised() {
        assert!(matches!(
            empty_id_route("/reconcile/"),
            Some(ScopeKind::Chat)
        ));
        assert!(matches!(
            empty_id_route("/sessions//reconcile"),
            Some(ScopeKind::Session)
        ));
        assert!(empty_id_route("/nope").is_none());
    }
}
