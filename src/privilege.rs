//! The privileges the controller needs, in one place, kept true of the
//! shipped systemd units by the tests below.
//!
//! Run as the orchestrator's user (`config/boo-reconciler.service`, the
//! default deployment), it needs none: signalling that user's agents,
//! reading their environment and working directory, and writing in that
//! user's worktrees and repositories is what the user may do anyway.
//!
//! Run as root (`config/boo-reconciler-root.service`, for hosts whose
//! agents run as several users), it needs exactly [`ROOT_CAPABILITIES`].

/// The capabilities a controller running as root uses, each with why; the
/// root unit's `CapabilityBoundingSet=` is exactly this list.
///
/// Not on it, and why (checked with a grep of the code for `chown`,
/// `chmod`/`fchmod`, `set_permissions`, `rename`, `unlink` and `mkdir`):
///
/// - `CAP_CHOWN`: the only `lchown` is the hand-back of what libgit2
///   wrote as root into an owner's repository (`git::owner`), which goes
///   away now that those writes are made as the owner.
/// - `CAP_FOWNER`: the one permission fix, `fchmod`/`fchmodat` giving
///   `u+rwx` to a directory that refuses an unlink (`act::trash::delete`), is made
///   on the owner's own directories with the owner's credentials, which
///   needs no capability. Where it still runs as root on another user's
///   directory, the kernel refuses it (`EPERM`): that entry is kept and
///   reported, never deleted by other means.
pub const ROOT_CAPABILITIES: &[(&str, &str)] = &[
    (
        "CAP_KILL",
        "signal the agents of other users (and their descendants) when their chat is not live",
    ),
    (
        "CAP_SYS_PTRACE",
        "read other users' /proc/<pid>/environ (the labels) and cwd (which worktree a process is in)",
    ),
    (
        "CAP_SETUID",
        "run git, archive writes, admin-entry pruning and the reclaimer as the owner of the tree",
    ),
    (
        "CAP_SETGID",
        "switch to that owner's primary and supplementary groups (setgroups) along with its uid",
    ),
    (
        // Retiring `<root>/<id>` into `<root>/.boo-trash/` moves a directory
        // to another parent, and the kernel then asks for write permission
        // on the directory moved itself (its `..` changes): as root without
        // this capability, the rename of another user's 0755 worktree fails
        // with EACCES (tried). Made as the owner instead, the owner would
        // need write permission on the controller's 0700 trash. The rename is
        // the only step that uses it: it touches the entry's name in the
        // root and its `..`, nothing inside the tree (every write and unlink
        // there is the owner's, `crate::creds`).
        "CAP_DAC_OVERRIDE",
        "retire another user's worktree into the trash with one rename (write permission on the directory moved)",
    ),
    (
        "CAP_DAC_READ_SEARCH",
        "walk other users' trees for the verdict (fingerprints, identity checks) without being able to write them",
    ),
    (
        // The kernel's process connector (`crate::observe::lineage`) takes
        // a listener only from a holder of CAP_NET_ADMIN in the initial
        // user namespace: without it, an agent not started through
        // `launch` that forks a child into a session of its own with an
        // empty environment is invisible to the label scan. The socket is
        // the only use: nothing configures the network.
        "CAP_NET_ADMIN",
        "listen to the kernel's process connector (every fork, exec and exit) for the fork lineage, processes.lineage",
    ),
];

/// The address families the root unit allows beyond the own-user unit's,
/// each with why.
pub const ROOT_ADDRESS_FAMILIES: &[(&str, &str)] = &[(
    "AF_NETLINK",
    "the kernel's process connector (NETLINK_CONNECTOR) for the fork lineage, with CAP_NET_ADMIN",
)];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::{ROOT_ADDRESS_FAMILIES, ROOT_CAPABILITIES};
    use crate::config::Config;

    const OWN_USER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/boo-reconciler.service");
    const ROOT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/boo-reconciler-root.service"
    );
    const TMPFILES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/boo-reconciler.tmpfiles"
    );

    /// The settings of a unit file, in order, without comments.
    fn settings(path: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{path}: {l}"));
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect()
    }

    /// The values of `key` (each given value; empty ones included).
    fn values(settings: &[(String, String)], key: &str) -> Vec<String> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A capability set as systemd reads it: assignments add up, an empty
    /// one resets, `~` would invert (refused here: the list is explicit).
    /// `None` when the unit does not set it at all.
    fn capabilities(settings: &[(String, String)], key: &str) -> Option<BTreeSet<String>> {
        let given = values(settings, key);
        if given.is_empty() {
            return None;
        }
        let mut set = BTreeSet::new();
        for v in given {
            assert!(!v.starts_with('~'), "{key}={v}: an inverted set");
            if v.is_empty() {
                set.clear();
            }
            set.extend(v.split_whitespace().map(str::to_owned));
        }
        Some(set)
    }

    fn one(settings: &[(String, String)], key: &str) -> Option<String> {
        values(settings, key).pop()
    }

    #[test]
    fn the_root_unit_holds_exactly_the_capabilities_the_code_uses() {
        let root = settings(ROOT);
        let want: BTreeSet<String> = ROOT_CAPABILITIES
            .iter()
            .map(|(cap, _)| (*cap).to_owned())
            .collect();
        assert_eq!(want.len(), ROOT_CAPABILITIES.len(), "a capability twice");
        assert_eq!(capabilities(&root, "CapabilityBoundingSet"), Some(want));
        for never in ["CAP_CHOWN", "CAP_FOWNER", "CAP_SYS_ADMIN", "CAP_NET_RAW"] {
            assert!(
                !ROOT_CAPABILITIES.iter().any(|(c, _)| *c == never),
                "{never}"
            );
        }
        // It runs as root: no user to switch to at start.
        assert_eq!(one(&root, "User"), None);
        for (cap, why) in ROOT_CAPABILITIES {
            assert!(cap.starts_with("CAP_") && !why.is_empty());
        }
    }

    #[test]
    fn the_own_user_unit_runs_as_the_orchestrators_user_without_capabilities() {
        let own = settings(OWN_USER);
        assert_eq!(one(&own, "User").as_deref(), Some("boo"));
        assert_eq!(one(&own, "Group").as_deref(), Some("boo"));
        assert_eq!(
            capabilities(&own, "CapabilityBoundingSet"),
            Some(BTreeSet::new())
        );
        assert_eq!(
            capabilities(&own, "AmbientCapabilities"),
            Some(BTreeSet::new())
        );
    }

    #[test]
    fn the_two_units_differ_only_in_who_runs_and_with_what() {
        let differ = [
            "User",
            "Group",
            "CapabilityBoundingSet",
            "AmbientCapabilities",
            "RestrictAddressFamilies",
        ];
        let common = |path| {
            settings(path)
                .into_iter()
                .filter(|(k, _)| !differ.contains(&k.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(common(OWN_USER), common(ROOT));
        // The root unit allows exactly the own-user unit's families and
        // those the lineage needs.
        let families = |path| -> BTreeSet<String> {
            values(&settings(path), "RestrictAddressFamilies")
                .iter()
                .flat_map(|v| v.split_whitespace().map(str::to_owned))
                .collect()
        };
        let mut want = families(OWN_USER);
        assert_eq!(
            want,
            ["AF_INET", "AF_INET6", "AF_UNIX"].map(str::to_owned).into()
        );
        want.extend(ROOT_ADDRESS_FAMILIES.iter().map(|(f, _)| (*f).to_owned()));
        assert_eq!(families(ROOT), want);
    }

    #[test]
    fn read_write_paths_that_may_not_exist_yet_do_not_stop_the_start() {
        for path in [OWN_USER, ROOT] {
            let given = values(&settings(path), "ReadWritePaths");
            assert!(!given.is_empty(), "{path}");
            for entry in given.iter().flat_map(|v| v.split_whitespace()) {
                assert!(entry.starts_with('-'), "{path}: ReadWritePaths={entry}");
            }
        }
    }

    /// systemd's time span as the units write it: seconds or minutes.
    fn span(v: &str) -> Duration {
        humantime::parse_duration(v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    #[test]
    fn the_watchdog_outlasts_the_longest_pass_and_the_start_its_first_pass() {
        let c = Config::defaults().unwrap();
        // The loop pets the watchdog between passes, not during one: after
        // the last pet come the lock's confirmation (a database call) and
        // a pass, which may last twice loop.pass_timeout (the actions in
        // flight at its timeout finish).
        let longest_pass = 2 * c.r#loop.pass_timeout + c.database.query_timeout;
        // READY=1 follows the migrations (store::bound::MIGRATION_TIMEOUT,
        // 15 min) and the first pass.
        let first_start = Duration::from_secs(15 * 60) + longest_pass;
        for path in [OWN_USER, ROOT] {
            let s = settings(path);
            let watchdog = span(&one(&s, "WatchdogSec").expect("WatchdogSec"));
            assert!(watchdog > longest_pass, "{path}: {watchdog:?}");
            let start = span(&one(&s, "TimeoutStartSec").expect("TimeoutStartSec"));
            assert!(start > first_start, "{path}: {start:?}");
        }
    }

    #[test]
    fn the_tmpfiles_line_creates_the_default_root_for_the_units_user() {
        let c = Config::defaults().unwrap();
        let text = std::fs::read_to_string(TMPFILES).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let root = c.worktrees.root.to_str().unwrap();
        let user = one(&settings(OWN_USER), "User").unwrap();
        let group = one(&settings(OWN_USER), "Group").unwrap();
        assert!(
            lines.contains(&vec!["d", root, "0755", &user, &group, "-"]),
            "{text}"
        );
        // Never aged out with the rest of /tmp: worktrees hold work.
        assert!(lines.contains(&vec!["x", root]), "{text}");
    }
}
