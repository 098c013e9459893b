//! Two controllers on one host never scan the same agents for different
//! databases.
//!
//! A controller stops every labelled process whose chat its database does
//! not know: a second controller of another database, reading the same
//! `/proc` for the same labels, would stop the first one's agents, and the
//! first the second's. The database's host lock ([`crate::store::lock`])
//! cannot see this: each controller holds the lock of its own database.
//!
//! # The lock
//!
//! `run` and `once` announce themselves at start with a listening Unix
//! socket in the abstract namespace, named from the label names they scan
//! (`boo-reconciler/scan/v1/<hash of the chat and agent labels>/<pid>.<n>`),
//! then look for the others of that name (`/proc/net/unix`), connect to
//! each and ask who it is: the peer answers with its database (redacted),
//! its database's identity ([`crate::store::Store::identity`]), its host id
//! and its instance. A peer with which this controller would fight makes it
//! refuse to start (exit 2), naming the peer's pid as the kernel reports it
//! (`SO_PEERCRED`, not what the peer says), its database and the setting
//! that lets both share the host (`processes.instance`).
//!
//! Two controllers fight unless either
//! - both have an instance (`processes.instance`), and not the same one
//!   (instance label and value): each sees only its own agents; or
//! - both reach the same database with the same `host.id`: the database's
//!   host lock already lets one act at a time (a standby beside the
//!   daemon, `once` beside `run`).
//!
//! Only the chat and agent labels name the lock: together they decide which
//! processes are candidates (the session label is informative). Controllers
//! on label names of their own (as the test suite runs them, many at once)
//! never meet.
//!
//! # Why an abstract socket
//!
//! - The kernel removes the name when its last descriptor closes: a
//!   controller killed with SIGKILL leaves nothing behind to clean up, and
//!   the socket is close-on-exec, so no child (git, an agent) keeps it.
//! - It lives in no directory: nothing to create in a world-writable one
//!   (no file another user could create first, replace by a symlink or
//!   chmod), and nothing to share between a controller running as root
//!   and one running as the orchestrator's user.
//! - A newcomer can ask the holder who it is, and the kernel vouches for
//!   the holder's pid and uid.
//! - Announcing first and then looking for the others means that of two
//!   controllers starting at once, at least one sees the other (both may
//!   refuse; a restart settles it).
//!
//! A `flock` on a file would also be released by the kernel, but needs a
//! directory both a root controller and a controller of the orchestrator's
//! user can write and no other user can: there is none to rely on, and
//! the holder could not be asked who it is.
//!
//! Limits: the abstract namespace belongs to the network namespace, so a
//! controller in a private one (systemd `PrivateNetwork=`) is not seen;
//! the shipped units do not use one. Any local user can bind a name of
//! this shape: a controller not running as root considers only peers of
//! root or of its own user (no other user's process can signal its agents),
//! while one running as root considers every peer and names the pid and
//! user of any that stops it. Any local user can also read a holder's
//! answer: its database URL without password, its host id and instance.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::config::{redact_url, Config};
use crate::store::Store;

/// The prefix of every name, with the version of the answer's shape.
const PREFIX: &str = "boo-reconciler/scan/v1/";

/// How long a peer has to answer; one that does not is taken for a
/// controller (a stopped one still holds its agents' fate).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The longest answer read from a peer.
const MAX_ANSWER: u64 = 16 * 1024;

/// Who a controller is, as it answers the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The chat and agent label names it scans for.
    pub labels: [String; 2],
    /// `processes.instance_label` and `processes.instance`, when an
    /// instance is set.
    pub instance: Option<[String; 2]>,
    /// Its database's URL, without password: for people.
    pub database: String,
    /// [`Store::identity`]: for comparing.
    pub database_id: String,
    /// `host.id`.
    pub host: String,
    /// Its pid as it says it (the kernel's is the one shown).
    pub pid: u32,
}

impl Claim {
    /// This process's claim.
    pub async fn of(config: &Config, store: &Store) -> Result<Claim, crate::store::StoreError> {
        let p = &config.processes;
        let database_id = store.identity().await?;
        // A SQLite URL is often relative to a working directory: the file
        // itself says which one it is.
        let database = match database_id.strip_prefix("sqlite:") {
            Some(file) => format!("sqlite://{file}"),
            None => store.url().to_owned(),
        };
        Ok(Claim {
            labels: [p.chat_label.clone(), p.agent_label.clone()],
            instance: p
                .instance()
                .map(|i| [p.instance_label.clone(), i.to_owned()]),
            database,
            database_id,
            host: config.host.id.clone(),
            pid: std::process::id(),
        })
    }

    /// The common part of the names of every controller scanning the same
    /// labels.
    fn prefix(&self) -> String {
        // FNV-1a, as the advisory lock's key: stable across versions and
        // platforms, and a collision costs only one needless question.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = self.labels[0]
            .bytes()
            .chain([0])
            .chain(self.labels[1].bytes());
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{PREFIX}{h:016x}/")
    }

    /// Whether this controller and `other` would stop each other's agents
    /// (see the module docs).
    pub fn fights(&self, other: &Claim) -> bool {
        if self.labels != other.labels {
            return false;
        }
        if let (Some(mine), Some(theirs)) = (&self.instance, &other.instance) {
            if mine != theirs {
                return false;
            }
        }
        !(self.database_id == other.database_id && self.host == other.host)
    }
}

/// The announcement of this controller, for as long as it is held: dropping
/// it closes the socket, which frees the name.
#[derive(Debug)]
pub struct ScanLock {
    name: String,
    server: tokio::task::JoinHandle<()>,
}

impl ScanLock {
    /// The abstract name this controller announces itself under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScanLock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ScanLockError {
    /// Another controller would fight this one: a configuration error.
    #[error("{0}")]
    Refused(String),
    /// The lock could not be taken or checked.
    #[error("cannot check for other controllers on this host: {0}")]
    Io(#[from] std::io::Error),
}

/// Announces `me` and checks every other controller on the same labels;
/// the lock is held while the returned value lives.
pub async fn take(me: &Claim) -> Result<ScanLock, ScanLockError> {
    let prefix = me.prefix();
    let (name, listener) = bind(&prefix)?;
    let answer = serde_json::to_vec(me).map_err(std::io::Error::other)?;
    let server = tokio::spawn(serve(listener, answer));
    let lock = ScanLock { name, server };
    for other in names_under(&prefix)? {
        if other == lock.name {
            continue;
        }
        if let Some(refusal) = check(me, &other).await {
            return Err(ScanLockError::Refused(refusal));
        }
    }
    Ok(lock)
}

/// Binds a fresh name under `prefix`.
fn bind(prefix: &str) -> std::io::Result<(String, UnixListener)> {
    let mut last = None;
    // A name taken already (by a process that guessed it) is tried again
    // under another suffix.
    for _ in 0..8 {
        let name = format!("{prefix}{}.{}", std::process::id(), fastrand::u32(..));
        match UnixListener::bind(format!("\0{name}")) {
            Ok(listener) => return Ok((name, listener)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// Answers every connection with `answer`, until dropped.
async fn serve(listener: UnixListener, answer: Vec<u8>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of descriptors, say: the next connection may do better.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ANSWER_WITHIN, conn.write_all(&answer)).await;
        });
    }
}

/// The abstract names bound under `prefix` in this network namespace, each
/// once.
fn names_under(prefix: &str) -> std::io::Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/unix")?;
    Ok(parse_names(&table, prefix))
}

/// The names under `prefix` in the text of `/proc/net/unix`, whose last
/// column is the address, `@` standing for the abstract namespace's NUL.
fn parse_names(table: &str, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter_map(|path| path.strip_prefix('@'))
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    // Accepted connections show their listener's name too.
    names.sort();
    names.dedup();
    names
}

/// Asks the controller at `name` who it is; why `me` must not start beside
/// it, if so.
async fn check(me: &Claim, name: &str) -> Option<String> {
    let conn = match UnixStream::connect(format!("\0{name}")).await {
        Ok(c) => c,
        // Gone since the listing, or closing its socket as it exits: it no
        // longer scans anything.
        Err(e) if gone(&e) => return None,
        Err(e) => {
            return Some(format!(
                "a process holds {name:?} in the abstract socket namespace, the name of a controller scanning the agents labelled {} and {} on this host, and cannot be asked who it is ({e}); {}",
                me.labels[0], me.labels[1], REMEDY
            ))
        }
    };
    let cred = conn.peer_cred().ok();
    let uid = cred.map(|c| c.uid());
    let pid = cred.and_then(|c| c.pid());
    let me_uid = nix::unistd::geteuid().as_raw();
    // Only root and this user can signal what this controller would.
    if me_uid != 0 && uid.is_some_and(|u| u != 0 && u != me_uid) {
        return None;
    }
    let who = format!(
        "pid {}, user {}",
        pid.map_or("unknown".to_owned(), |p| p.to_string()),
        uid.map_or("unknown".to_owned(), user_name)
    );
    let mut text = Vec::new();
    let read =
        tokio::time::timeout(ANSWER_WITHIN, conn.take(MAX_ANSWER).read_to_end(&mut text)).await;
    let other = match read {
        Ok(Ok(_)) => serde_json::from_slice::<Claim>(&text).ok(),
        // Its socket closed with this connection still waiting: it exits.
        Ok(Err(e)) if gone(&e) => return None,
        _ => None,
    };
    let Some(other) = other else {
        return Some(format!(
            "another process ({who}) announces itself as a controller scanning the agents labelled {} and {} on this host, and did not say who it is within {}s; {}",
            me.labels[0],
            me.labels[1],
            ANSWER_WITHIN.as_secs(),
            REMEDY
        ));
    };
    me.fights(&other).then(|| refusal(me, &other, &who))
}

/// Whether an error on a connection to a peer means that the peer's
/// socket is closed (refused, or reset while the connection waited to be
/// accepted): the process has ended or is ending.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

/// What to do about a controller in the way.
const REMEDY: &str = "stop it, or, to run both, set processes.instance to a different value for each controller and start each one's agents with that value in processes.instance_label (BOO_INSTANCE by default)";

/// The refusal to start beside `other`, found at `who`.
fn refusal(me: &Claim, other: &Claim, who: &str) -> String {
    let instance = |claim: &Claim| match &claim.instance {
        // A peer's words are shown escaped: they reach a terminal.
        Some([label, value]) => format!("processes.instance {value:?} ({})", label.escape_debug()),
        None => "no processes.instance".to_owned(),
    };
    format!(
        "another controller ({who}, database {:?}, host.id {:?}, {}) scans the agents labelled {} and {} on this host, and this one (database {:?}, host.id {:?}, {}) would too: two controllers that do not share their database and host.id stop each other's agents; {REMEDY}",
        redact_url(&other.database),
        other.host,
        instance(other),
        me.labels[0],
        me.labels[1],
        me.database,
        me.host,
        instance(me),
    )
}

/// The name of user `uid`, with the number.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} ({uid})", user.name),
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(labels: [&str; 2], instance: Option<&str>, db: &str, host: &str) -> Claim {
        Claim {
            labels: labels.map(str::to_owned),
            instance: instance.map(|i| ["BOO_INSTANCE".to_owned(), i.to_owned()]),
            database: format!("postgres://u:***@h/{db}"),
            database_id: format!("postgres:1/{db}"),
            host: host.into(),
            pid: 1,
        }
    }

    const L: [&str; 2] = ["BOO_CHAT_ID", "BOO_AGENT"];

    #[test]
    fn who_fights_whom() {
        let a = claim(L, None, "a", "h");
        // Another database on the same labels: they fight, both ways.
        assert!(a.fights(&claim(L, None, "b", "h")));
        assert!(claim(L, None, "b", "h").fights(&a));
        // The same database and host: the database's lock arbitrates.
        assert!(!a.fights(&claim(L, None, "a", "h")));
        // The same database for another host id: both act.
        assert!(a.fights(&claim(L, None, "a", "h2")));
        // Other labels: other processes.
        assert!(!a.fights(&claim(["MY_CHAT", "BOO_AGENT"], None, "b", "h")));
        assert!(!a.fights(&claim(["BOO_CHAT_ID", "MY_AGENT"], None, "b", "h")));
        // Distinct instances share the host; the same one does not, and a
        // controller without one sees every instance's agents.
        let blue = claim(L, Some("blue"), "a", "h");
        let green = claim(L, Some("green"), "b", "h");
        assert!(!blue.fights(&green) && !green.fights(&blue));
        assert!(blue.fights(&claim(L, Some("blue"), "b", "h")));
        assert!(!blue.fights(&claim(L, Some("blue"), "a", "h")));
        assert!(blue.fights(&claim(L, None, "b", "h")));
        assert!(claim(L, None, "b", "h").fights(&blue));
        // The same value under another label is another instance.
        let mut other_label = claim(L, Some("blue"), "b", "h");
        other_label.instance = Some(["OTHER_INSTANCE".into(), "blue".into()]);
        assert!(!blue.fights(&other_label));
    }

    #[test]
    fn the_name_depends_on_the_chat_and_agent_labels_only() {
        let a = claim(L, None, "a", "h");
        assert_eq!(a.prefix(), claim(L, Some("x"), "b", "h2").prefix());
        assert_ne!(
            a.prefix(),
            claim(["BOO_CHAT_ID", "X"], None, "a", "h").prefix()
        );
        assert_ne!(
            a.prefix(),
            claim(["X", "BOO_AGENT"], None, "a", "h").prefix()
        );
        // Not a concatenation: the boundary counts.
        assert_ne!(
            claim(["AB", "C"], None, "a", "h").prefix(),
            claim(["A", "BC"], None, "a", "h").prefix()
        );
        assert!(a.prefix().starts_with(PREFIX));
    }

    #[test]
    fn names_are_read_from_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1001 @boo-reconciler/scan/v1/ab/1.2\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1002 @boo-reconciler/scan/v1/ab/1.2\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1003 @boo-reconciler/scan/v1/cd/3.4\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1004 /run/boo-reconciler/scan/v1/ab/5.6\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1005\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1006 @boo-reconciler/scan/v1/ab/7.8\n";
        assert_eq!(
            parse_names(table, "boo-reconciler/scan/v1/ab/"),
            vec![
                "boo-reconciler/scan/v1/ab/1.2".to_owned(),
                "boo-reconciler/scan/v1/ab/7.8".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn a_second_controller_of_another_database_is_refused_naming_the_first() {
        let labels = [
            format!("BOO_TEST_CHAT_{}", fastrand::u64(..)),
            "BOO_AGENT".to_owned(),
        ];
        let of = |db: &str, instance: Option<&str>| Claim {
            labels: labels.clone(),
            ..claim(L, instance, db, "h")
        };
        let first = take(&of("a", None)).await.unwrap();
        assert!(names_under(&of("a", None).prefix())
            .unwrap()
            .contains(&first.name().to_owned()));
        let err = take(&of("b", None)).await.unwrap_err().to_string();
        let me = std::process::id();
        for needle in [
            format!("pid {me}"),
            "database \"postgres://u:***@h/a\"".to_owned(),
            "processes.instance".to_owned(),
            labels[0].clone(),
        ] {
            assert!(err.contains(&needle), "{needle}: {err}");
        }
        // The same database and host: the database's lock decides.
        let standby = take(&of("a", None)).await.unwrap();
        drop(standby);
        // Released on drop: another database may start now.
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = take(&of("b", None)).await.unwrap();
        // With instances, distinct ones share the host.
        drop(second);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let blue = take(&of("a", Some("blue"))).await.unwrap();
        let green = take(&of("b", Some("green"))).await.unwrap();
        let err = take(&of("c", None)).await.unwrap_err().to_string();
        assert!(err.contains("processes.instance"), "{err}");
        drop((blue, green));
    }

    #[tokio::test]
    async fn a_peer_that_does_not_answer_is_refused_with_its_pid() {
        let me = Claim {
            labels: [format!("BOO_TEST_CHAT_{}", fastrand::u64(..)), "A".into()],
            ..claim(L, None, "a", "h")
        };
        // Bound under the name, never answering.
        let (_name, _silent) = bind(&me.prefix()).unwrap();
        let err = take(&me).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains("did not say who it is"),
            "{err}"
        );
    }
}
