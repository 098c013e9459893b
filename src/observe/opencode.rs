//! The sessions the shared opencode server has under the worktree root.
//!
//! A server that is not running is a warning (nothing waits on it); one
//! that fails is an error of the pass, and is not asked again until its
//! backoff has passed: a pass does not wait on a server that has just
//! failed, and the server is not hammered by every nudge. The backoff is
//! the observation's own, apart from the executor's per-target backoff of
//! the deletions.

use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::Mutex;

use crate::backoff::Backoff;
use crate::model::{OpencodeSession, OpencodeView};
use crate::opencode::{Client, FailureKind};
use crate::root::WorktreeRoot;

/// The opencode server's key in its backoff: one server per host.
const OPENCODE: &str = "opencode";

/// Lists the server's sessions, backing off while it fails.
#[derive(Default)]
pub struct SessionLister {
    backoff: Mutex<Backoff<&'static str>>,
}

/// What one listing found, and what the pass says of it.
pub struct Listing {
    pub view: OpencodeView,
    /// An error of the pass: the server failed, or is backed off.
    pub error: Option<String>,
    /// A warning of the pass: the server is not running.
    pub warning: Option<String>,
}

impl Listing {
    fn quiet(view: OpencodeView) -> Listing {
        Listing {
            view,
            error: None,
            warning: None,
        }
    }
}

impl SessionLister {
    /// The sessions of `client`'s server whose directory is under `root`,
    /// each with the root entry it belongs to; `OpencodeView::Off` without
    /// a client.
    pub async fn list(&self, client: Option<&Client>, root: &WorktreeRoot) -> Listing {
        let Some(client) = client else {
            return Listing::quiet(OpencodeView::Off);
        };
        let held_back = self
            .backoff
            .lock()
            .blocking(&OPENCODE, Instant::now())
            .map(|e| e.why(Instant::now()));
        if let Some(why) = held_back {
            return Listing {
                error: Some(format!("opencode: {why}")),
                ..Listing::quiet(OpencodeView::Failing { why })
            };
        }
        let listed = client.list_all_sessions().await;
        let mut backoff = self.backoff.lock();
        match listed {
            Ok(all) => {
                backoff.succeeded(&OPENCODE);
                Listing::quiet(OpencodeView::Listed {
                    sessions: all
                        .into_iter()
                        .filter_map(|s| {
                            let worktree_dir = root_entry_of(root, &s.directory)?;
                            Some(OpencodeSession {
                                id: s.id,
                                directory: s.directory,
                                parent_id: s.parent_id,
                                created: s.created,
                                worktree_dir,
                            })
                        })
                        .collect(),
                })
            }
            Err(e) if e.kind() == FailureKind::NotRunning => {
                backoff.succeeded(&OPENCODE);
                Listing {
                    warning: Some(e.to_string()),
                    ..Listing::quiet(OpencodeView::NotRunning { why: e.to_string() })
                }
            }
            Err(e) => {
                backoff.failed(&OPENCODE, Instant::now(), &e.to_string());
                Listing {
                    error: Some(format!("opencode: {e}")),
                    ..Listing::quiet(OpencodeView::Failing { why: e.to_string() })
                }
            }
        }
    }
}

/// `<root>/<entry>` when `dir` is that entry or below it (as the root is
/// configured or canonically); `None` for anything outside the root.
fn root_entry_of(root: &WorktreeRoot, dir: &Path) -> Option<PathBuf> {
    let dir = crate::root::normalize_lexically(dir);
    [root.configured_path(), root.path()]
        .into_iter()
        .find_map(|r| {
            let rel = dir.strip_prefix(r).ok()?;
            let first = rel.components().next()?;
            Some(root.path().join(first))
        })
}
