//! The opencode client against the real `opencode serve` (the version
//! `tests/opencode` pins, installed on demand) and against fault-injecting
//! stubs for what a healthy server never does.

#[path = "support/opencode_server.rs"]
mod opencode_server;
#[path = "support/stub.rs"]
mod stub;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use boo_reconciler::config::Opencode;
use boo_reconciler::opencode::{
    is_wellformed_session_id, Client, Deleted, Error, FailureKind, Session,
};
use opencode_server::{free_port, OpencodeServer, OPENCODE_VERSION};
use stub::{http, stub};

fn config(url: &str) -> Opencode {
    Opencode {
        enabled: true,
        url: Some(url.parse().expect("test URL")),
        username: "opencode".into(),
        password: String::new(),
        timeout: Duration::from_secs(3),
        orphan_min_age: Duration::from_secs(600),
    }
}

fn client(url: &str) -> Client {
    Client::new(&config(url)).expect("a client for a URL")
}

fn ids(sessions: &[Session]) -> BTreeSet<String> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

// -- the real server ---------------------------------------------------------

#[tokio::test]
async fn health_and_the_web_app_answering_unknown_paths() {
    let server = OpencodeServer::start();
    let c = client(&server.url);
    assert_eq!(c.health().await.unwrap().version, OPENCODE_VERSION);

    // Any unknown path: 200 and the web app's HTML.
    let (status, body) = server.request("GET", "/no/such/path", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");

    // So a URL with a wrong path gets 200s that are not JSON: a failure.
    let wrong = client(&format!("{}/app/", server.url));
    let err = wrong.health().await.unwrap_err();
    assert!(
        matches!(&err, Error::NotJson { status: 200, content_type: Some(ct), .. } if ct.starts_with("text/html")),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::Failing);
    assert_eq!(
        err.to_string(),
        format!(
            "opencode at {}/app/ answered text/html to GET /app/global/health (expected JSON): is opencode.url pointing at the web app?",
            server.url
        )
    );
    let err = wrong.list_all_sessions().await.unwrap_err();
    assert!(matches!(err, Error::NotJson { .. }), "{err:?}");
    let err = wrong
        .delete("ses_df4003625ffecleddWGg81mkxB")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotJson { .. }), "{err:?}");
}

#[tokio::test]
async fn list_sessions_returns_exactly_that_directory() {
    let server = OpencodeServer::start();
    let a = server.directory("a");
    let b = server.directory("b");
    let a_sub = server.directory("a/sub");
    let before = SystemTime::now() - Duration::from_secs(2);
    let parent = server.create_session(&a);
    let child = server.create_child_session(&a, &parent);
    let in_b = server.create_session(&b);
    let in_sub = server.create_session(&a_sub);
    let after = SystemTime::now() + Duration::from_secs(2);

    let c = client(&server.url);
    let listed = c.list_sessions(&a).await.unwrap();
    assert_eq!(ids(&listed), set(&[&parent, &child]), "{listed:#?}");
    for s in &listed {
        assert!(is_wellformed_session_id(&s.id), "{}", s.id);
        assert_eq!(s.directory, a);
        assert_eq!(s.project_id, "global", "not a git repository");
        assert!(before <= s.created && s.created <= s.updated && s.updated <= after);
        let expected_parent = (s.id == child).then(|| parent.clone());
        assert_eq!(s.parent_id, expected_parent, "{}", s.id);
    }

    // A trailing slash or a `.` names the same directory.
    let slash = format!("{}/", a.display());
    assert_eq!(
        ids(&c.list_sessions(Path::new(&slash)).await.unwrap()),
        set(&[&parent, &child])
    );
    assert_eq!(
        ids(&c.list_sessions(&a.join(".")).await.unwrap()),
        set(&[&parent, &child])
    );
    assert_eq!(ids(&c.list_sessions(&b).await.unwrap()), set(&[&in_b]));
    assert_eq!(
        ids(&c.list_sessions(&a_sub).await.unwrap()),
        set(&[&in_sub])
    );
    let nowhere = server.directory("nowhere");
    assert!(c.list_sessions(&nowhere).await.unwrap().is_empty());
    let missing = a.join("does-not-exist");
    assert!(c.list_sessions(&missing).await.unwrap().is_empty());

    // A relative directory would be resolved against the server's own
    // working directory: never sent.
    let err = c.list_sessions(Path::new("a")).await.unwrap_err();
    assert!(matches!(err, Error::BadDirectory { .. }), "{err:?}");
    assert_eq!(err.kind(), FailureKind::Failing);

    let all = c.list_all_sessions().await.unwrap();
    assert_eq!(ids(&all), set(&[&parent, &child, &in_b, &in_sub]));
}

#[tokio::test]
async fn listings_read_every_page() {
    // More than one page (100) in one directory: `GET /session` would stop
    // at 100 without a word.
    let server = OpencodeServer::start();
    let many = server.directory("many");
    let other = server.directory("other");
    let in_many: BTreeSet<String> = (0..105).map(|_| server.create_session(&many)).collect();
    let in_other = server.create_session(&other);

    let c = client(&server.url);
    let listed = c.list_sessions(&many).await.unwrap();
    assert_eq!(listed.len(), 105, "no session twice");
    assert_eq!(ids(&listed), in_many);

    let all = c.list_all_sessions().await.unwrap();
    assert_eq!(all.len(), 106, "no session twice");
    let mut expected = in_many.clone();
    expected.insert(in_other);
    assert_eq!(ids(&all), expected);
}

#[tokio::test]
async fn abort_and_delete() {
    let server = OpencodeServer::start();
    let dir = server.directory("w1");
    let parent = server.create_session(&dir);
    let child = server.create_child_session(&dir, &parent);
    let other = server.create_session(&dir);
    let c = client(&server.url);

    // Abort answers for a session, idle or unknown.
    c.abort(&parent).await.unwrap();
    c.abort("ses_0000000000000000000000unknown").await.unwrap();
    assert!(server.session_exists(&parent), "abort deletes nothing");

    // Deleting the parent takes the child along.
    assert_eq!(c.delete(&parent).await.unwrap(), Deleted::Deleted);
    assert!(!server.session_exists(&parent));
    assert!(!server.session_exists(&child));
    assert_eq!(ids(&c.list_sessions(&dir).await.unwrap()), set(&[&other]));

    // Again: already gone, for the parent and the child.
    assert_eq!(c.delete(&parent).await.unwrap(), Deleted::AlreadyGone);
    assert_eq!(c.delete(&child).await.unwrap(), Deleted::AlreadyGone);
    assert_eq!(
        c.delete("ses_0000000000000000000000unknown").await.unwrap(),
        Deleted::AlreadyGone
    );
    c.abort(&parent).await.unwrap();

    assert_eq!(c.delete(&other).await.unwrap(), Deleted::Deleted);
    assert!(c.list_sessions(&dir).await.unwrap().is_empty());
}

#[tokio::test]
async fn dispose_instance_with_or_without_an_instance() {
    let server = OpencodeServer::start();
    let dir = server.directory("w1");
    let id = server.create_session(&dir);
    let events = server.events();
    let c = client(&server.url);
    let disposed = |d: &Path| {
        let d = d.to_str().unwrap().to_owned();
        move |e: &serde_json::Value| {
            e["payload"]["type"] == "server.instance.disposed"
                && e["payload"]["properties"]["directory"] == d.as_str()
        }
    };

    // The session's instance goes; the session stays, and can still be
    // deleted.
    c.dispose_instance(&dir).await.unwrap();
    assert!(
        events
            .wait_for(Duration::from_secs(10), disposed(&dir))
            .is_some(),
        "{:#?}",
        events.all()
    );
    assert!(server.session_exists(&id));
    assert_eq!(ids(&c.list_sessions(&dir).await.unwrap()), set(&[&id]));
    assert_eq!(c.delete(&id).await.unwrap(), Deleted::Deleted);

    // Again, with a trailing slash: the same directory, no instance now.
    c.dispose_instance(&dir.join("")).await.unwrap();
    // A directory that does not exist: answered alike, and not created.
    let missing = dir.with_file_name("never-there");
    c.dispose_instance(&missing).await.unwrap();
    assert!(!missing.exists());
    let settled = events.wait_for(Duration::from_secs(10), disposed(&missing));
    assert!(settled.is_some(), "{:#?}", events.all());
    let twice = events.all().into_iter().filter(disposed(&dir)).count();
    assert_eq!(twice, 2, "{:#?}", events.all());

    // A relative directory would be the server's own working directory's:
    // never sent.
    let err = c.dispose_instance(Path::new("w1")).await.unwrap_err();
    assert!(matches!(err, Error::BadDirectory { .. }), "{err:?}");
    assert_eq!(err.kind(), FailureKind::Failing);
}

#[tokio::test]
async fn malformed_ids_are_never_sent() {
    let server = OpencodeServer::start();
    // What the server does with an id without the `ses` prefix: a 500.
    let (status, body) = server.request("DELETE", "/session/xyz", None).unwrap();
    assert_eq!(status, 500, "{body}");

    let c = client(&server.url);
    for bad in [
        "xyz",
        "",
        "ses",
        "ses_a/../../global/dispose",
        "ses_a?b",
        "msg_x",
    ] {
        assert!(!is_wellformed_session_id(bad), "{bad}");
        let err = c.delete(bad).await.unwrap_err();
        assert!(
            matches!(&err, Error::MalformedId { id, .. } if id == bad),
            "{err:?}"
        );
        assert_eq!(err.kind(), FailureKind::Failing);
        let err = c.abort(bad).await.unwrap_err();
        assert!(matches!(&err, Error::MalformedId { .. }), "{err:?}");
    }
    assert_eq!(
        c.delete("xyz").await.unwrap_err().to_string(),
        format!(
            "\"xyz\" is not a well-formed opencode session id (ses followed by letters, digits, _ or -): not sent to opencode at {}",
            server.url
        )
    );
    // Every id the server makes is well-formed.
    let id = server.create_session(&server.directory("d"));
    assert!(is_wellformed_session_id(&id), "{id}");
    c.health().await.unwrap();
}

#[tokio::test]
async fn basic_auth_user_is_opencode() {
    let server = OpencodeServer::start_with_password("s3cret");
    let with = |username: &str, password: &str| {
        let mut cfg = config(&server.url);
        cfg.username = username.into();
        cfg.password = password.into();
        Client::new(&cfg).unwrap()
    };

    let good = with("opencode", "s3cret");
    assert_eq!(good.health().await.unwrap().version, OPENCODE_VERSION);
    let dir = server.directory("w");
    let id = server.create_session(&dir);
    assert_eq!(ids(&good.list_sessions(&dir).await.unwrap()), set(&[&id]));
    assert_eq!(good.delete(&id).await.unwrap(), Deleted::Deleted);

    let none = with("opencode", "");
    let err = none.health().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.kind(), FailureKind::Failing);
    assert!(err.to_string().contains("set opencode.password"), "{err}");
    for bad in [with("opencode", "wrong"), with("boo", "s3cret")] {
        let err = bad.list_all_sessions().await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    assert!(!format!("{good:?}").contains("s3cret"));
}

// -- fault-injecting stubs -----------------------------------------------------

/// Every call of the client, each giving an error.
async fn every_call_fails(c: &Client) -> Vec<Error> {
    let dir = Path::new("/tmp/booworktrees/w1");
    vec![
        c.health().await.unwrap_err(),
        c.list_sessions(dir).await.unwrap_err(),
        c.list_all_sessions().await.unwrap_err(),
        c.abort("ses_df4003625ffecleddWGg81mkxB").await.unwrap_err(),
        c.delete("ses_df4003625ffecleddWGg81mkxB")
            .await
            .unwrap_err(),
        c.dispose_instance(dir).await.unwrap_err(),
    ]
}

#[tokio::test]
async fn nothing_listening_is_not_running() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let c = client(&url);
    for err in every_call_fails(&c).await {
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::NotRunning);
    }
    assert_eq!(
        c.health().await.unwrap_err().to_string(),
        format!("nothing listens at {url} (connection refused) for GET /global/health: opencode is not running there")
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let url = stub(None).await;
    let mut cfg = config(&url);
    cfg.timeout = Duration::from_secs(1);
    let c = Client::new(&cfg).unwrap();
    let started = Instant::now();
    let err = c.list_all_sessions().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), FailureKind::Failing);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("opencode at {url} did not answer GET /api/session within 1s: it hangs or is overloaded")
    );
    let started = Instant::now();
    let err = c
        .delete("ses_df4003625ffecleddWGg81mkxB")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_500_is_failing() {
    let url = stub(Some(http(
        "500 Internal Server Error",
        "application/json",
        r#"{"name":"UnknownError","data":{"message":"Unexpected server error. Check server logs for details.","ref":"err_43674608"}}"#,
    )))
    .await;
    let c = client(&url);
    for err in every_call_fails(&c).await {
        assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Failing);
    }
    assert_eq!(
        c.delete("ses_df4003625ffecleddWGg81mkxB").await.unwrap_err().to_string(),
        format!("opencode at {url} answered 500 Internal Server Error to DELETE /session/ses_df4003625ffecleddWGg81mkxB: UnknownError: Unexpected server error. Check server logs for details. (ref err_43674608)")
    );
}

#[tokio::test]
async fn html_with_200_is_failing() {
    let url = stub(Some(http(
        "200 OK",
        "text/html",
        "<!doctype html><html><body>opencode</body></html>",
    )))
    .await;
    let c = client(&url);
    for err in every_call_fails(&c).await {
        assert!(matches!(err, Error::NotJson { status: 200, .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Failing);
    }
    assert_eq!(
        c.list_all_sessions().await.unwrap_err().to_string(),
        format!("opencode at {url} answered text/html to GET /api/session (expected JSON): is opencode.url pointing at the web app?")
    );
}

#[tokio::test]
async fn json_text_without_a_json_content_type_is_failing() {
    let url = stub(Some(http("200 OK", "text/plain", "true"))).await;
    for err in every_call_fails(&client(&url)).await {
        assert!(matches!(err, Error::NotJson { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn malformed_json_is_failing() {
    let url = stub(Some(http("200 OK", "application/json", "{\"data\":[{"))).await;
    let c = client(&url);
    for err in every_call_fails(&c).await {
        assert!(matches!(err, Error::MalformedJson { .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Failing);
    }
    // Well-formed JSON of the wrong shape is malformed too.
    let url = stub(Some(http(
        "200 OK",
        "application/json",
        "{\"healthy\":\"yes\"}",
    )))
    .await;
    let err = client(&url).health().await.unwrap_err();
    assert!(matches!(err, Error::MalformedJson { .. }), "{err:?}");
}

#[tokio::test]
async fn a_404_that_is_not_opencodes_is_failing() {
    // A proxy's 404 is not "the session is gone".
    let url = stub(Some(http(
        "404 Not Found",
        "text/html",
        "<html>Not Found</html>",
    )))
    .await;
    let err = client(&url)
        .delete("ses_df4003625ffecleddWGg81mkxB")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotJson { status: 404, .. }), "{err:?}");
    let url = stub(Some(http(
        "404 Not Found",
        "application/json",
        "{\"error\":\"no route\"}",
    )))
    .await;
    let err = client(&url)
        .delete("ses_df4003625ffecleddWGg81mkxB")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MalformedJson { .. }), "{err:?}");
}

#[tokio::test]
async fn a_listing_whose_cursor_loops_is_failing() {
    let url = stub(Some(http(
        "200 OK",
        "application/json",
        r#"{"data":[{"id":"ses_1","projectID":"global","time":{"created":1,"updated":2},"location":{"directory":"/tmp/booworktrees/w1"}}],"cursor":{"next":"same"}}"#,
    )))
    .await;
    let err = client(&url).list_all_sessions().await.unwrap_err();
    assert!(matches!(err, Error::Unexpected { .. }), "{err:?}");
    assert!(err.to_string().contains("a loop"), "{err}");
}

#[test]
fn an_empty_url_turns_the_client_off() {
    let mut cfg = config("http://127.0.0.1:4096");
    cfg.url = None;
    assert!(Client::new(&cfg).is_none());
}
