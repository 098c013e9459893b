//! The JSON the server answers with, in exactly the shapes read from it
//! (unknown fields ignored, missing or mistyped ones refused), and how a
//! listed session becomes a [`Session`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::Session;

/// `GET /global/health`'s answer.
#[derive(Deserialize)]
pub(super) struct WireHealth {
    pub(super) healthy: bool,
    pub(super) version: String,
}

/// opencode's 404 body.
#[derive(Deserialize)]
pub(super) struct NotFound {
    #[allow(dead_code)]
    name: NotFoundName,
}

#[derive(Deserialize)]
enum NotFoundName {
    NotFoundError,
}

#[derive(Deserialize)]
pub(super) struct WirePage {
    pub(super) data: Vec<WireSession>,
    pub(super) cursor: WireCursor,
}

#[derive(Deserialize)]
pub(super) struct WireCursor {
    #[serde(default)]
    pub(super) next: Option<String>,
}

/// `SessionV2Info` of the OpenAPI document, the fields used.
#[derive(Deserialize)]
pub(super) struct WireSession {
    pub(super) id: String,
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
    pub(super) fn into_session(self) -> Session {
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
    use super::super::error::tests::{answer, ctx};
    use super::super::Error;
    use super::*;

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
}
