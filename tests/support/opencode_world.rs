//! A [`World`] whose `opencode.url` is a real `opencode serve`, for the
//! test files that `mod` both `common` and `opencode_server`: include it
//! with `#[path = "support/opencode_world.rs"] mod opencode_world;`.
#![allow(dead_code)]

use crate::common::{Db, World};
use crate::opencode_server::OpencodeServer;

/// The real server, started off the async threads (it blocks while it
/// installs and boots).
pub async fn server() -> OpencodeServer {
    tokio::task::spawn_blocking(OpencodeServer::start)
        .await
        .expect("start opencode")
}

/// The real server, and a world of `db` whose `opencode.url` it is.
pub async fn world_with_server(db: Db) -> (OpencodeServer, World) {
    let oc = server().await;
    let mut w = World::new(db).await;
    w.opencode_url = Some(oc.url.clone());
    (oc, w)
}
