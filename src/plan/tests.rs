//! Every drift case of the planner, without I/O.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::*;
use crate::model::{
    ChatRow, ChatState, EntryKind, PathCheck, RowStatus, SessionRow, SessionState, StaleAdminEntry,
    WorktreeDir, WorktreeRow, WorktreeState,
};

const ROOT: &str = "/tmp/booworktrees";

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn now() -> SystemTime {
    t(3600)
}

fn policy() -> Policy {
    Policy {
        worktree_orphan_min_age: Duration::from_secs(600),
        process_orphan_min_age: Duration::from_secs(120),
        opencode_orphan_min_age: Duration::from_secs(600),
        instance: None,
        max_removals: 20,
        max_terminations: 100,
        stale_entry_grace: Duration::from_secs(3600),
    }
}

fn wt_path(id: &str) -> PathBuf {
    PathBuf::from(ROOT).join(id)
}

struct Fixture {
    desired: DesiredState,
    actual: ActualState,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            desired: DesiredState::default(),
            actual: ActualState::default(),
        }
    }

    /// A session with `open` open chats out of `total`, in `status`,
    /// updated at t(3360) (4m before now).
    fn session(&mut self, id: &str, status: RowStatus, open: u64, total: u64) -> &mut Self {
        self.desired.sessions.insert(
            id.into(),
            SessionState {
                session_id: id.into(),
                session: Some(SessionRow {
                    id: id.into(),
                    status,
                    created_at: t(0),
                    updated_at: t(3360),
                }),
                open_chats: open,
                total_chats: total,
                last_chat_change: (total > 0).then(|| t(3360)),
            },
        );
        self
    }

    fn chat(&mut self, id: &str, session: &str, status: RowStatus) -> &mut Self {
        let s = self.desired.sessions[session].session.clone();
        self.desired.chats.insert(
            id.into(),
            ChatState {
                chat_id: id.into(),
                chat: Some(ChatRow {
                    id: id.into(),
                    session_id: session.into(),
                    status,
                    created_at: t(0),
                    updated_at: t(3360),
                }),
                session: s,
            },
        );
        self
    }

    /// An open chat of the open session s1, counted in its chats.
    fn live_chat(&mut self, id: &str) -> &mut Self {
        self.chat_of_s1(id, RowStatus::Open)
    }

    /// An archived chat of the open session s1, counted in its chats:
    /// the chat alone is dead, not its session.
    fn archived_chat(&mut self, id: &str) -> &mut Self {
        self.chat_of_s1(id, RowStatus::Archived)
    }

    fn chat_of_s1(&mut self, id: &str, status: RowStatus) -> &mut Self {
        let (open, total) = match self.desired.sessions.get("s1") {
            Some(s) => (s.open_chats, s.total_chats),
            None => (0, 0),
        };
        let open = open + u64::from(status == RowStatus::Open);
        self.session("s1", RowStatus::Open, open, total + 1)
            .chat(id, "s1", status)
    }

    /// An archived session whose only chat closed, with its worktree.
    fn archived_with_worktree(&mut self, session: &str, worktree: &str) -> &mut Self {
        self.session(session, RowStatus::Archived, 0, 1)
            .worktree(worktree, session)
    }

    /// A worktree row whose directory exists under the root.
    fn worktree(&mut self, id: &str, session: &str) -> &mut Self {
        self.row(id, session, wt_path(id), WorktreeState::Active);
        self.dir(id, 0)
    }

    fn row(&mut self, id: &str, session: &str, path: PathBuf, state: WorktreeState) -> &mut Self {
        self.desired.worktrees.push(WorktreeRow {
            id: id.into(),
            session_id: session.into(),
            repo_path: "/srv/repo".into(),
            path: path.clone(),
            branch: Some(format!("boo/{id}")),
            base_ref: Some("main".into()),
            state,
            created_at: t(0),
        });
        let exists = self.actual.dirs.iter().any(|d| d.path == path);
        self.actual.row_paths.insert(
            id.into(),
            if path.parent() == Some(PathBuf::from(ROOT).as_path()) {
                PathCheck::Inside { path, exists }
            } else {
                PathCheck::Refused {
                    why: "outside the root".into(),
                }
            },
        );
        self
    }

    fn dir(&mut self, name: &str, created: u64) -> &mut Self {
        self.entry(name, created, EntryKind::Directory)
    }

    fn entry(&mut self, name: &str, created: u64, kind: EntryKind) -> &mut Self {
        self.actual.dirs.push(WorktreeDir {
            name: name.into(),
            path: wt_path(name),
            kind,
            created: t(created),
            repo_path: Some("/srv/repo".into()),
            gitdir: None,
            file_id: Some((1, self.actual.dirs.len() as u64 + 1)),
        });
        // Rows planned earlier for this path now see it exist.
        for check in self.actual.row_paths.values_mut() {
            if let PathCheck::Inside { path, exists } = check {
                if *path == wt_path(name) {
                    *exists = true;
                }
            }
        }
        self
    }

    /// An admin entry of /srv/repo whose worktree `name` is gone.
    fn stale_admin(&mut self, name: &str, head: Option<&str>) -> &mut Self {
        self.actual.stale_admin_entries.push(StaleAdminEntry {
            repo_path: "/srv/repo".into(),
            name: name.into(),
            worktree_path: wt_path(name),
            head: head.map(Into::into),
            branch: None,
            locked: None,
            // Missing for exactly the grace at `now()`.
            missing_since: Some(t(0)),
        });
        self
    }

    fn plan(&self) -> Plan {
        self.plan_scoped(&Scope::Host)
    }

    fn plan_scoped(&self, scope: &Scope) -> Plan {
        plan(&self.desired, &self.actual, &policy(), now(), scope)
    }
}

fn names(p: &Plan) -> Vec<(&'static str, String)> {
    p.actions
        .iter()
        .map(|a| (a.name(), a.key().to_string()))
        .collect()
}

/// The plan takes exactly these actions, by name and target, in this order.
#[track_caller]
fn assert_actions<const N: usize>(p: &Plan, want: [(&str, &str); N]) {
    let want: Vec<(&str, String)> = want.iter().map(|&(n, k)| (n, k.to_string())).collect();
    assert_eq!(names(p), want, "{p:#?}");
}

/// The first pending item says `why` in its reason.
#[track_caller]
fn assert_first_pending(p: &Plan, why: &str) {
    let first = p
        .pending
        .first()
        .unwrap_or_else(|| panic!("nothing pending: {p:#?}"));
    assert!(first.why.contains(why), "{:?}", p.pending);
}

/// Some pending item names `target` and says `why` in its reason.
fn has_pending(p: &Plan, target: &str, why: &str) -> bool {
    p.pending
        .iter()
        .any(|x| x.target.to_string() == target && x.why.contains(why))
}

#[test]
fn live_session_keeps_its_worktree() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Open, 1, 1).worktree("w1", "s1");
    assert_eq!(f.plan(), Plan::default());
}

#[test]
fn archived_session_worktree_is_removed_with_reason() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 1, 1)
        .worktree("w1", "s1");
    let p = f.plan();
    assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w1")]);
    assert_eq!(p.actions[0].reason, "session s1 archived 4m ago");
    assert_eq!(p.actions[0].owner.session_id.as_deref(), Some("s1"));
    let ActionKind::RemoveWorktree { worktree } = &p.actions[0].kind else {
        panic!()
    };
    assert_eq!(worktree.row_id.as_deref(), Some("w1"));
    assert_eq!(worktree.branch.as_deref(), Some("boo/w1"));
    assert_eq!(worktree.base_ref.as_deref(), Some("main"));
}

#[test]
fn deleted_session_worktree_is_removed() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Deleted, 0, 1)
        .worktree("w1", "s1");
    assert_eq!(f.plan().actions[0].reason, "session s1 deleted 4m ago");
}

#[test]
fn worktree_of_session_without_row_is_removed() {
    let mut f = Fixture::new();
    f.worktree("w1", "gone");
    let p = f.plan();
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].reason, "session gone has no row");
}

#[test]
fn worktree_of_session_without_row_waits_while_the_row_is_young() {
    let mut f = Fixture::new();
    f.worktree("w1", "not-yet");
    f.desired.worktrees[0].created_at = t(3500); // 100s old, minimum 10m
    let p = f.plan();
    assert!(p.actions.is_empty());
    assert!(p.pending[0]
        .why
        .starts_with("session not-yet has no row, but the worktree row is 1m 40s old"));
}

#[test]
fn open_session_whose_chats_are_all_closed_releases_worktree() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Open, 0, 2).worktree("w1", "s1");
    let p = f.plan();
    assert_eq!(
        p.actions[0].reason,
        "session s1 has no open chat (last of 2 closed 4m ago)"
    );
}

#[test]
fn open_session_without_any_chat_keeps_worktree_while_young() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Open, 0, 0).worktree("w1", "s1");
    // Created at t(0), now is t(3600): older than 10m, so released.
    assert_eq!(f.plan().actions.len(), 1);
    f.desired
        .sessions
        .get_mut("s1")
        .unwrap()
        .session
        .as_mut()
        .unwrap()
        .created_at = t(3500);
    assert!(f.plan().actions.is_empty());
}

#[test]
fn row_whose_directory_is_gone_is_marked_removed() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 0, 1).row(
        "w1",
        "s1",
        wt_path("w1"),
        WorktreeState::Active,
    );
    let p = f.plan();
    assert_actions(&p, [("mark_worktree_removed", "worktree-row:w1")]);
    assert_eq!(
        p.actions[0].reason,
        "session s1 archived 4m ago; directory already gone"
    );
}

#[test]
fn row_path_outside_root_is_only_refused() {
    for path in [
        "/etc",
        "/tmp/booworktrees/../../etc",
        "/tmp/booworktrees/a/b",
    ] {
        let mut f = Fixture::new();
        f.session("s1", RowStatus::Archived, 0, 1).row(
            "w1",
            "s1",
            PathBuf::from(path),
            WorktreeState::Active,
        );
        let p = f.plan();
        assert_eq!(
            names(&p),
            [("refuse_path", "worktree-row:w1".into())],
            "{path}"
        );
        assert!(!p.actions[0].is_destructive());
    }
}

#[test]
fn directory_named_by_a_refused_row_is_not_reaped_as_orphan() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 0, 1)
        .row("w1", "s1", "/etc".into(), WorktreeState::Active)
        .dir("w1", 0);
    assert_actions(&f.plan(), [("refuse_path", "worktree-row:w1")]);
}

#[test]
fn a_path_claimed_by_a_live_row_is_never_removed() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1")
        .session("s2", RowStatus::Open, 1, 1)
        .row("w2", "s2", wt_path("w1"), WorktreeState::Active);
    let p = f.plan();
    assert_actions(&p, []);
    assert_eq!(p.pending.len(), 1, "{:?}", p.pending);
    assert_eq!(p.pending[0].target, Target::Worktree(wt_path("w1")));
    assert_eq!(
        p.pending[0].why,
        "session s1 archived 4m ago; but row w2 of live session s2 names this directory too: kept"
    );

    // Once the other session lets go too, the directory goes.
    f.session("s2", RowStatus::Archived, 0, 1);
    assert_actions(
        &f.plan(),
        [
            ("remove_worktree", "worktree:/tmp/booworktrees/w1"),
            ("remove_worktree", "worktree:/tmp/booworktrees/w1"),
        ],
    );
}

/// A live row that spells the directory otherwise (a symlink elsewhere, a
/// relative path: refused as a path) still claims what it leads to, by
/// device and inode: the archived row naming it plainly does not remove it.
#[test]
fn a_live_row_claims_the_directory_its_path_leads_to_under_any_spelling() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1")
        .session("s2", RowStatus::Open, 1, 1)
        .row(
            "w2",
            "s2",
            "/home/boo/link-to-w1".into(),
            WorktreeState::Active,
        );
    let w1 = f
        .actual
        .dirs
        .iter()
        .find(|d| d.name == "w1")
        .unwrap()
        .file_id
        .unwrap();
    f.actual.row_targets.insert("w2".into(), w1);
    let p = f.plan();
    assert_actions(&p, []);
    assert_first_pending(&p, "row w2 of live session s2");
    // What the path leads to decides: another directory claims nothing here.
    f.actual.row_targets.insert("w2".into(), (1, 999));
    assert_actions(
        &f.plan(),
        [("remove_worktree", "worktree:/tmp/booworktrees/w1")],
    );
}

/// A root that is not itself (unmounted, replaced) was not observed: a
/// row whose directory seems gone is neither marked removed nor is a
/// stale-looking admin entry pruned; every row is pending with why.
#[test]
fn nothing_under_a_held_root_is_planned() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 0, 1)
        .row("w1", "s1", wt_path("w1"), WorktreeState::AtRisk)
        .stale_admin("w1", Some("abc"));
    f.actual.root_held = Some("the worktree root is not itself".into());
    let p = f.plan();
    assert_actions(&p, []);
    assert_first_pending(&p, "the worktree root is not itself");
    f.actual.root_held = None;
    assert_ne!(f.plan().actions.len(), 0);
}

/// The brake: a pass that would remove more than
/// `worktrees.max_removals_per_pass` removes that many, whole sessions at a
/// time, and leaves the rest pending with the reason; within the limit
/// nothing is held.
#[test]
fn a_pass_removes_at_most_the_brakes_limit_and_holds_the_rest() {
    let mut f = Fixture::new();
    for n in 0..25 {
        f.archived_with_worktree(&format!("s{n:02}"), &format!("w{n:02}"));
    }
    let p = f.plan();
    let removals = p
        .actions
        .iter()
        .filter(|a| a.name() == "remove_worktree")
        .count();
    assert_eq!(removals, 20, "{:?}", p.actions);
    let held: Vec<_> = p
        .pending
        .iter()
        .filter(|x| x.why.contains("held by the brake"))
        .collect();
    assert_eq!(held.len(), 5, "{:?}", p.pending);
    assert!(
        held[0].why.contains("worktrees.max_removals_per_pass = 20"),
        "{}",
        held[0].why
    );
    let mut roomy = policy();
    roomy.max_removals = 25;
    let p = plan(&f.desired, &f.actual, &roomy, now(), &Scope::Host);
    assert_eq!(p.actions.len(), 25);
    assert!(p.pending.iter().all(|x| !x.why.contains("brake")));
}

/// One group is never split and the first is always let through: one
/// session's teardown over the limit is not a mass removal.
#[test]
fn the_brake_lets_the_first_group_through_whole() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1");
    let mut tight = policy();
    tight.max_removals = 0;
    let p = plan(&f.desired, &f.actual, &tight, now(), &Scope::Host);
    assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w1")]);
}

#[test]
fn a_directory_named_after_a_live_row_is_claimed_whatever_its_path_says() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 0, 1)
        .session("s2", RowStatus::Open, 1, 1)
        .row("w1", "s1", wt_path("w2"), WorktreeState::Active)
        .dir("w2", 0)
        .row("w2", "s2", "/elsewhere/w2".into(), WorktreeState::Active);
    let p = f.plan();
    assert_actions(&p, []);
    assert_first_pending(&p, "row w2 of live session s2");
}

#[test]
fn at_risk_worktree_of_live_session_is_marked_active_again() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Open, 1, 1)
        .row("w1", "s1", wt_path("w1"), WorktreeState::AtRisk)
        .dir("w1", 0);
    let p = f.plan();
    assert_actions(&p, [("mark_worktree_active", "worktree-row:w1")]);
    assert!(!p.actions[0].is_destructive());
}

#[test]
fn at_risk_worktree_of_dead_session_is_planned_again_every_pass() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Archived, 0, 1)
        .row("w1", "s1", wt_path("w1"), WorktreeState::AtRisk)
        .dir("w1", 0);
    assert_eq!(names(&f.plan())[0].0, "remove_worktree");
}

#[test]
fn young_orphan_directory_is_pending_not_removed() {
    let mut f = Fixture::new();
    f.dir("stray", 3300); // 5m old, minimum 10m
    let p = f.plan();
    assert!(p.actions.is_empty());
    assert_eq!(p.pending.len(), 1);
    assert_eq!(
        p.pending[0].why,
        "no row for this directory, 5m old: reaped once 10m old"
    );
}

#[test]
fn old_orphan_directory_is_removed_with_its_age() {
    let mut f = Fixture::new();
    f.dir("stray", 0);
    let p = f.plan();
    assert_actions(
        &p,
        [("remove_worktree", "worktree:/tmp/booworktrees/stray")],
    );
    assert_eq!(p.actions[0].reason, "no row for this directory, 1h old");
    assert_eq!(p.actions[0].owner, Owner::default());
}

#[test]
fn symlink_or_file_under_root_is_never_planned() {
    let mut f = Fixture::new();
    f.entry("link", 0, EntryKind::Symlink)
        .entry("file", 0, EntryKind::File);
    let p = f.plan();
    assert!(p.actions.is_empty());
    assert_eq!(p.pending.len(), 2);
}

#[test]
fn stale_admin_entry_is_pruned() {
    let mut f = Fixture::new();
    f.stale_admin("w9", Some("abc"));
    let p = f.plan();
    assert_actions(
        &p,
        [(
            "prune_admin_entry",
            "admin-entry:/srv/repo/.git/worktrees/w9",
        )],
    );
    assert!(p.actions[0].is_destructive());
}

/// `worktrees.stale_entry_grace`: an entry whose directory went missing
/// less than the grace ago, or whose first sighting could not be recorded,
/// waits, pending with the reason; once the grace has passed it is pruned.
#[test]
fn a_stale_admin_entry_waits_out_its_grace() {
    let pending_why = |p: &Plan| {
        p.pending
            .iter()
            .find(|x| x.target.to_string() == "admin-entry:/srv/repo/.git/worktrees/w9")
            .map(|x| x.why.clone())
    };
    let mut f = Fixture::new();
    f.stale_admin("w9", Some("abc"));
    f.actual.stale_admin_entries[0].missing_since = Some(t(1));
    let p = f.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let why = pending_why(&p).expect("pending");
    assert!(why.contains("missing for 59m 59s"), "{why}");
    assert!(why.contains("worktrees.stale_entry_grace"), "{why}");

    f.actual.stale_admin_entries[0].missing_since = None;
    let p = f.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(pending_why(&p)
        .expect("pending")
        .contains("could not be recorded"));

    f.actual.stale_admin_entries[0].missing_since = Some(t(0));
    let p = f.plan();
    assert_actions(
        &p,
        [(
            "prune_admin_entry",
            "admin-entry:/srv/repo/.git/worktrees/w9",
        )],
    );
}

#[test]
fn admin_entry_of_a_moved_worktree_is_not_pruned() {
    let mut f = Fixture::new();
    f.dir("b", 0);
    f.actual
        .moved_admin_entries
        .push(crate::model::MovedAdminEntry {
            repo_path: "/srv/repo".into(),
            name: "a".into(),
            worktree_path: wt_path("a"),
            now_at: wt_path("b"),
        });
    let p = f.plan();
    assert!(
        p.actions.iter().all(|a| a.name() != "prune_admin_entry"),
        "{:?}",
        p.actions
    );
    let pending = p
        .pending
        .iter()
        .find(|x| x.target.to_string() == "admin-entry:/srv/repo/.git/worktrees/a")
        .expect("listed as pending");
    assert!(
        pending
            .why
            .contains("/tmp/booworktrees/b points at this entry"),
        "{}",
        pending.why
    );
}

#[test]
fn stale_admin_entry_of_live_session_is_left_pending() {
    let mut f = Fixture::new();
    f.session("s1", RowStatus::Open, 1, 1)
        .row("w9", "s1", wt_path("w9"), WorktreeState::Active)
        .stale_admin("w9", None);
    let p = f.plan();
    assert!(p.actions.is_empty());
    assert_eq!(p.pending.len(), 1);
}

#[test]
fn chat_scope_takes_its_sessions_worktree_only() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1")
        .chat("c1", "s1", RowStatus::Archived)
        .archived_with_worktree("s2", "w2")
        .dir("stray", 0);
    let p = f.plan_scoped(&Scope::Chat("c1".into()));
    assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w1")]);
    assert!(p.pending.is_empty());
    // An unknown chat scopes to nothing of the worktrees.
    assert!(f
        .plan_scoped(&Scope::Chat("nope".into()))
        .actions
        .is_empty());
}

#[test]
fn session_scope_takes_that_session_only() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1")
        .archived_with_worktree("s2", "w2");
    let p = f.plan_scoped(&Scope::Session("s2".into()));
    assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w2")]);
}

#[test]
fn actions_are_grouped_by_session_and_ordered_by_stage() {
    let mut f = Fixture::new();
    f.archived_with_worktree("s1", "w1")
        .row("w2", "s1", wt_path("w2"), WorktreeState::Active)
        .stale_admin("w2", None);
    let p = f.plan();
    let stages: Vec<Stage> = p.actions.iter().map(|a| a.stage()).collect();
    assert_eq!(stages, [Stage::Rows, Stage::Worktree, Stage::Admin]);
    assert!(p.actions.iter().all(|a| a.group() == "session:s1"));
}

#[test]
fn plan_is_empty_when_nothing_drifted() {
    let f = Fixture::new();
    assert_eq!(f.plan(), Plan::default());
}

mod processes {
    use super::*;
    use crate::model::{AgentProcess, AgentSessionRow, Backend, PidIdentity};

    fn process(pid: i32, chat: &str, started: u64) -> AgentProcess {
        AgentProcess {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            start_time: 5000 + pid as u64,
            started_at: t(started),
            state: 'S',
            chat_id: chat.into(),
            session_id: Some("s1".into()),
            agent: Some("goose".into()),
            instance: None,
            command: "goose acp".into(),
            cwd: None,
        }
    }

    fn acp_row(id: &str, chat: &str, pid: Option<i32>, start: Option<u64>) -> AgentSessionRow {
        AgentSessionRow {
            id: id.into(),
            chat_id: chat.into(),
            session_id: "s1".into(),
            agent: "goose".into(),
            backend: Backend::Acp,
            agent_session_id: None,
            worktree_id: None,
            pid,
            pid_start_time: start,
            created_at: t(0),
        }
    }

    impl Fixture {
        /// A labelled agent process of `chat`, started at t(`started`).
        fn process(&mut self, pid: i32, chat: &str, started: u64) -> &mut Self {
            self.actual.processes.push(process(pid, chat, started));
            self
        }

        /// An acp row of `chat` recording `pid` started at `start`.
        fn acp(&mut self, id: &str, chat: &str, pid: Option<i32>, start: Option<u64>) -> &mut Self {
            self.desired
                .agent_sessions
                .push(acp_row(id, chat, pid, start));
            self
        }

        /// A recorded pid looked up and found running a process started at
        /// `start`, with `label` as its chat label.
        fn recorded_pid(&mut self, pid: i32, start: u64, label: Option<&str>) -> &mut Self {
            let identity = PidIdentity {
                start_time: start,
                chat_label: label.map(Into::into),
                unlabelled: false,
            };
            self.actual.recorded_pids.insert(pid, Some(identity));
            self
        }

        /// A recorded pid looked up and found running a process started at
        /// `start` whose environment was read and carries no chat label.
        fn recorded_unlabelled(&mut self, pid: i32, start: u64) -> &mut Self {
            let identity = PidIdentity {
                start_time: start,
                chat_label: None,
                unlabelled: true,
            };
            self.actual.recorded_pids.insert(pid, Some(identity));
            self
        }

        /// A recorded pid looked up and found running nothing.
        fn pid_gone(&mut self, pid: i32) -> &mut Self {
            self.actual.recorded_pids.insert(pid, None);
            self
        }
    }

    #[test]
    fn process_of_archived_chat_is_terminated_with_reason() {
        let mut f = Fixture::new();
        f.archived_chat("c1").process(100, "c1", 0);
        let p = f.plan();
        assert_actions(&p, [("terminate_process", "process:100@5100")]);
        assert_eq!(
            p.actions[0].reason,
            "chat c1 archived 4m ago; goose pid 100 up 1h"
        );
        assert_eq!(p.actions[0].stage(), Stage::Processes);
        assert_eq!(p.actions[0].group(), "session:s1");
    }

    #[test]
    fn only_the_top_of_a_chats_labelled_tree_is_targeted() {
        let mut f = Fixture::new();
        f.archived_chat("c1");
        let mut child = process(101, "c1", 0);
        child.ppid = 100;
        let mut orphaned = process(300, "c1", 0); // its leader died: ppid 1
        orphaned.ppid = 1;
        f.actual.processes = vec![process(100, "c1", 0), child, orphaned];
        assert_actions(
            &f.plan(),
            [
                ("terminate_process", "process:100@5100"),
                ("terminate_process", "process:300@5300"),
            ],
        );
    }

    #[test]
    fn with_an_instance_only_its_own_processes_are_candidates() {
        let mut f = Fixture::new();
        f.archived_chat("c1");
        let of = |pid: i32, instance: Option<&str>| AgentProcess {
            instance: instance.map(Into::into),
            ..process(pid, "c1", 0)
        };
        f.actual.processes = vec![
            of(100, Some("blue")),
            of(200, Some("green")),
            of(300, None),
            of(400, Some("")),
        ];
        let mine = Policy {
            instance: Some("blue".into()),
            ..policy()
        };
        let p = plan(&f.desired, &f.actual, &mine, now(), &Scope::Host);
        assert_actions(&p, [("terminate_process", "process:100@5100")]);
        // Not even held back: another controller's process is no business
        // of this one.
        assert_eq!(p.pending, vec![]);
        // Without an instance, every labelled process is a candidate.
        assert_eq!(f.plan().actions.len(), 4);
    }

    #[test]
    fn process_of_live_chat_is_left_alone() {
        let mut f = Fixture::new();
        f.live_chat("c1").process(100, "c1", 0);
        assert_eq!(f.plan(), Plan::default());
    }

    #[test]
    fn process_of_open_chat_in_archived_session_is_terminated() {
        let mut f = Fixture::new();
        f.session("s1", RowStatus::Archived, 1, 1)
            .chat("c1", "s1", RowStatus::Open)
            .process(100, "c1", 0);
        let p = f.plan();
        assert_eq!(p.actions.len(), 1);
        assert!(p.actions[0]
            .reason
            .starts_with("session s1 of chat c1 archived"));
    }

    #[test]
    fn process_whose_chat_has_no_row_waits_for_the_minimum_age() {
        let mut f = Fixture::new();
        f.process(100, "ghost", 3590) // 10s old
            .process(200, "ghost", 0); // 1h old
        let p = f.plan();
        assert_actions(&p, [("terminate_process", "process:200@5200")]);
        assert_eq!(
            p.actions[0].reason,
            "chat ghost has no row; goose pid 200 up 1h"
        );
        // No chat row: grouped by the session label.
        assert_eq!(p.actions[0].group(), "session:s1");
        assert_eq!(p.pending.len(), 1);
        assert_first_pending(&p, "10s old");
    }

    #[test]
    fn row_of_archived_chat_with_its_agent_running_closes_after_the_kill() {
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .process(100, "c1", 0)
            .acp("a1", "c1", Some(100), Some(5100))
            .recorded_pid(100, 5100, Some("c1"));
        let p = f.plan();
        assert_actions(
            &p,
            [
                ("terminate_process", "process:100@5100"),
                ("close_agent_row", "agent-row:a1"),
            ],
        );
        assert_eq!(p.actions[0].group(), p.actions[1].group());
        assert!(p.actions[0].stage() < p.actions[1].stage());
    }

    /// Chat c1, live or archived, whose acp row a1 records pid 7, now gone:
    /// the row is closed for `reason`, and nothing else is done.
    #[track_caller]
    fn gone_pid_closes_the_row(chat: RowStatus, start: u64, reason: &str) -> Plan {
        let mut f = Fixture::new();
        f.chat_of_s1("c1", chat)
            .acp("a1", "c1", Some(7), Some(start))
            .pid_gone(7);
        let p = f.plan();
        assert_actions(&p, [("close_agent_row", "agent-row:a1")]);
        assert_eq!(p.actions[0].reason, reason);
        p
    }

    /// Chat c1, live or archived, whose acp row a1 records `pid` started at
    /// `recorded`, which now runs a process started at `running`: the row
    /// is closed, and nothing else is done.
    #[track_caller]
    fn reused_pid_closes_the_row(chat: RowStatus, pid: i32, recorded: u64, running: u64) -> Plan {
        let mut f = Fixture::new();
        f.chat_of_s1("c1", chat)
            .acp("a1", "c1", Some(pid), Some(recorded))
            .recorded_pid(pid, running, None);
        let p = f.plan();
        assert_actions(&p, [("close_agent_row", "agent-row:a1")]);
        p
    }

    #[test]
    fn row_whose_pid_is_gone_is_closed_with_that_reason() {
        gone_pid_closes_the_row(
            RowStatus::Archived,
            1,
            "chat c1 archived 4m ago; recorded pid 7 is gone",
        );
    }

    #[test]
    fn reused_pid_is_never_signalled_and_its_row_is_closed() {
        let p = reused_pid_closes_the_row(RowStatus::Archived, 7, 1, 999);
        assert!(p.actions[0].reason.contains("recorded pid 7 was reused"));
        assert!(p.actions.iter().all(|a| a.name() != "terminate_process"));
    }

    #[test]
    fn recorded_process_without_the_label_is_never_signalled_and_keeps_its_row() {
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(1))
            .recorded_pid(7, 1, None);
        let p = f.plan();
        assert!(p.actions.is_empty());
        assert_first_pending(&p, "never signalled");
    }

    #[test]
    fn an_agent_a_row_records_that_dropped_its_labels_is_stopped_then_its_row_closed() {
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .recorded_unlabelled(7, 70);
        let p = f.plan();
        assert_actions(
            &p,
            [
                ("terminate_process", "process:7@70"),
                ("close_agent_row", "agent-row:a1"),
            ],
        );
        let ActionKind::TerminateProcess { process } = &p.actions[0].kind else {
            panic!("{:?}", p.actions[0])
        };
        assert_eq!(process.recorded_by_row.as_deref(), Some("a1"));
        assert_eq!(process.chat_id, "c1");
        assert_eq!(process.agent.as_deref(), Some("goose"));
        assert!(
            p.actions[0].reason.starts_with("chat c1 archived 4m ago; ")
                && p.actions[0].reason.contains("runs without its labels"),
            "{}",
            p.actions[0].reason
        );
        assert_eq!(p.actions[0].group(), p.actions[1].group());
        assert!(p.actions[0].stage() < p.actions[1].stage());
        assert!(p.pending.is_empty(), "{:?}", p.pending);
    }

    #[test]
    fn an_unlabelled_process_is_never_stopped_on_a_rows_word_alone_otherwise() {
        // Without a recorded start time: the row alone.
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), None)
            .recorded_unlabelled(7, 70);
        let p = f.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_first_pending(&p, "never signalled");

        // Another start time: another process; the row is closed.
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(71))
            .recorded_unlabelled(7, 70);
        assert_actions(&f.plan(), [("close_agent_row", "agent-row:a1")]);

        // An environment that could not be read says nothing of labels.
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .recorded_pid(7, 70, None);
        assert!(f.plan().actions.is_empty());

        // The chat is live: its agent runs on, labels or not.
        let mut f = Fixture::new();
        f.live_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .recorded_unlabelled(7, 70);
        let p = f.plan();
        assert!(p.actions.is_empty() && p.pending.is_empty(), "{p:?}");

        // With an instance, a process without labels cannot be told to be
        // this controller's.
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .recorded_unlabelled(7, 70);
        let mine = Policy {
            instance: Some("blue".into()),
            ..policy()
        };
        let p = plan(&f.desired, &f.actual, &mine, now(), &Scope::Host);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_first_pending(&p, "instance blue");
    }

    #[test]
    fn an_unlabelled_agent_of_a_chat_without_a_row_waits_for_the_minimum_age() {
        let mut f = Fixture::new();
        let mut young = acp_row("a1", "ghost", Some(7), Some(70));
        young.created_at = t(3590);
        let old = acp_row("a2", "ghost", Some(8), Some(80));
        f.desired.agent_sessions.extend([young, old]);
        f.recorded_unlabelled(7, 70).recorded_unlabelled(8, 80);
        let p = f.plan();
        assert_actions(
            &p,
            [
                ("terminate_process", "process:8@80"),
                ("close_agent_row", "agent-row:a2"),
            ],
        );
        assert_first_pending(&p, "10s old");
    }

    #[test]
    fn two_rows_recording_one_unlabelled_agent_stop_it_once() {
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .acp("a2", "c1", Some(7), Some(70))
            .recorded_unlabelled(7, 70);
        assert_actions(
            &f.plan(),
            [
                ("terminate_process", "process:7@70"),
                ("close_agent_row", "agent-row:a1"),
                ("close_agent_row", "agent-row:a2"),
            ],
        );
    }

    #[test]
    fn row_of_live_chat_whose_process_is_gone_is_closed_with_a_reason() {
        let p = gone_pid_closes_the_row(
            RowStatus::Open,
            70,
            "chat c1 is live; recorded pid 7 is gone",
        );
        let ActionKind::CloseAgentRow {
            recorded_process, ..
        } = &p.actions[0].kind
        else {
            panic!()
        };
        assert_eq!(
            *recorded_process,
            Some(RecordedProcess {
                pid: 7,
                start_time: Some(70)
            })
        );
        assert!(p.pending.is_empty(), "{:?}", p.pending);
    }

    #[test]
    fn row_of_live_chat_whose_pid_runs_another_process_is_closed_and_never_signalled() {
        // pid 1 is always running, with a start time the row did not record.
        let p = reused_pid_closes_the_row(RowStatus::Open, 1, 123_456, 1);
        assert!(
            p.actions[0].reason.contains("recorded pid 1 was reused"),
            "{}",
            p.actions[0].reason
        );
        assert!(p.actions.iter().all(|a| a.name() != "terminate_process"));
    }

    #[test]
    fn row_of_archived_chat_whose_pid_runs_another_process_is_closed_not_pending() {
        let p = reused_pid_closes_the_row(RowStatus::Archived, 1, 123_456, 1);
        assert!(p.pending.is_empty(), "{:?}", p.pending);
    }

    #[test]
    fn row_of_live_chat_whose_process_runs_as_recorded_stays_open() {
        let mut f = Fixture::new();
        f.live_chat("c1")
            .acp("a1", "c1", Some(7), Some(70))
            .acp("a2", "c1", Some(8), None)
            .recorded_pid(7, 70, None)
            .recorded_pid(8, 70, None);
        let p = f.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    #[test]
    fn row_whose_pid_was_not_looked_up_is_never_closed_for_it() {
        let mut f = Fixture::new();
        f.live_chat("c1")
            .archived_chat("c2")
            .acp("a1", "c1", Some(7), Some(70))
            .acp("a2", "c2", Some(8), Some(80));
        let p = f.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_first_pending(&p, "not looked up");
    }

    #[test]
    fn what_an_unreadable_row_may_own_is_kept() {
        use crate::model::{Table, UnreadableRow};
        let mut f = Fixture::new();
        // Chat "bad" and session "sbad" have rows the store could not
        // read; so does worktree row "w2". Nothing they may own is touched.
        f.process(100, "bad", 0)
            .acp("a1", "bad", None, None)
            .worktree("w1", "sbad")
            .dir("w2", 0);
        for (table, id) in [
            (Table::Chats, "bad"),
            (Table::Sessions, "sbad"),
            (Table::Worktrees, "w2"),
        ] {
            f.desired.unreadable.push(UnreadableRow {
                table,
                id: Some(id.into()),
                why: "status: unknown status \"zombie\"".into(),
            });
        }
        let p = f.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let pending: Vec<String> = p.pending.iter().map(|p| p.target.to_string()).collect();
        assert_eq!(
            pending,
            [
                "process:100@5100",
                "agent-row:a1",
                "worktree-row:w1",
                "worktree:/tmp/booworktrees/w2"
            ]
        );
        assert_first_pending(&p, "chats row bad cannot be read");
    }

    #[test]
    fn row_of_live_chat_is_not_closed() {
        let mut f = Fixture::new();
        f.live_chat("c1").acp("a1", "c1", None, None);
        assert!(f.plan().actions.is_empty());
    }

    #[test]
    fn chat_scope_takes_that_chats_processes_only() {
        let mut f = Fixture::new();
        f.archived_chat("c1")
            .archived_chat("c2")
            .process(100, "c1", 0)
            .process(200, "c2", 0);
        let p = f.plan_scoped(&Scope::Chat("c1".into()));
        assert_actions(&p, [("terminate_process", "process:100@5100")]);
    }
}

mod opencode {
    use super::*;
    use crate::model::{AgentSessionRow, Backend, OpencodeSession, OpencodeView};

    fn oc_row(id: &str, chat: &str, session: &str, ses: Option<&str>) -> AgentSessionRow {
        AgentSessionRow {
            id: id.into(),
            chat_id: chat.into(),
            session_id: session.into(),
            agent: "opencode".into(),
            backend: Backend::OpencodeServer,
            agent_session_id: ses.map(Into::into),
            worktree_id: None,
            pid: None,
            pid_start_time: None,
            created_at: t(0),
        }
    }

    fn listed(id: &str, wt: &str, created: u64, parent: Option<&str>) -> OpencodeSession {
        OpencodeSession {
            id: id.into(),
            directory: wt_path(wt).join("sub"),
            parent_id: parent.map(Into::into),
            created: t(created),
            worktree_dir: wt_path(wt),
        }
    }

    impl Fixture {
        /// Archived session s1 with worktree w1, whose archived chat c1 has
        /// row r1 naming opencode session ses_abc.
        fn archived_chat_with_session() -> Fixture {
            let mut f = Fixture::new();
            f.session("s1", RowStatus::Archived, 0, 1)
                .chat("c1", "s1", RowStatus::Archived)
                .worktree("w1", "s1");
            f.desired
                .agent_sessions
                .push(oc_row("r1", "c1", "s1", Some("ses_abc")));
            f
        }

        /// The server answers with these sessions under the root.
        fn listing<const N: usize>(&mut self, sessions: [OpencodeSession; N]) -> &mut Self {
            self.actual.opencode = OpencodeView::Listed {
                sessions: sessions.into(),
            };
            self
        }
    }

    #[test]
    fn session_of_archived_chat_is_deleted_then_its_row_closed_then_the_worktree_removed() {
        let mut f = Fixture::archived_chat_with_session();
        f.listing([
            listed("ses_abc", "w1", 0, None),
            listed("ses_kid", "w1", 0, Some("ses_abc")),
        ]);
        let p = f.plan();
        assert_eq!(
            names(&p),
            [
                ("delete_opencode_session", "opencode:ses_abc".into()),
                ("close_agent_row", "agent-row:r1".into()),
                ("remove_worktree", "worktree:/tmp/booworktrees/w1".into()),
            ],
            "the child goes with its parent: {p:#?}"
        );
        assert!(p.actions.iter().all(|a| a.group() == "session:s1"));
        let stages: Vec<_> = p.actions.iter().map(|a| a.stage()).collect();
        assert_eq!(stages, [Stage::Opencode, Stage::Rows, Stage::Worktree]);
        assert_eq!(p.actions[0].reason, "chat c1 archived 4m ago");
    }

    #[test]
    fn a_session_already_gone_from_the_listing_is_still_deleted_to_be_confirmed() {
        let mut f = Fixture::archived_chat_with_session();
        f.listing([]);
        let p = f.plan();
        assert_eq!(p.actions[0].name(), "delete_opencode_session");
        assert_eq!(p.actions[1].name(), "close_agent_row");
    }

    #[test]
    fn malformed_session_id_closes_the_row_and_sends_nothing() {
        let mut f = Fixture::archived_chat_with_session();
        f.desired.agent_sessions[0].agent_session_id = Some("../../etc".into());
        f.listing([]);
        let p = f.plan();
        assert_eq!(names(&p)[0], ("close_agent_row", "agent-row:r1".into()));
        assert!(p.actions[0]
            .reason
            .contains("malformed opencode session id"));
        assert!(p
            .actions
            .iter()
            .all(|a| a.name() != "delete_opencode_session"));
    }

    #[test]
    fn opencode_not_running_keeps_rows_open_but_nothing_waits() {
        let mut f = Fixture::archived_chat_with_session();
        f.actual.opencode = OpencodeView::NotRunning {
            why: "connection refused".into(),
        };
        let p = f.plan();
        assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w1")]);
        assert_first_pending(&p, "deleted once it is back");
    }

    #[test]
    fn opencode_failing_holds_the_worktree_of_chats_with_opencode_rows_only() {
        let mut f = Fixture::archived_chat_with_session();
        // Another archived session without opencode rows proceeds.
        f.archived_with_worktree("s2", "w2");
        f.actual.opencode = OpencodeView::Failing {
            why: "answered 500".into(),
        };
        let p = f.plan();
        assert_actions(&p, [("remove_worktree", "worktree:/tmp/booworktrees/w2")]);
        assert!(has_pending(
            &p,
            "worktree:/tmp/booworktrees/w1",
            "waiting for opencode"
        ));
    }

    #[test]
    fn orphan_session_under_the_root_is_deleted_once_old_and_holds_its_directory_until_then() {
        let mut f = Fixture::new();
        f.dir("stray", 0)
            .listing([listed("ses_young", "stray", 3500, None)]);
        let p = f.plan();
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(has_pending(&p, "opencode:ses_young", ""));
        assert!(has_pending(&p, "worktree:/tmp/booworktrees/stray", ""));

        f.listing([listed("ses_old", "stray", 0, None)]);
        let p = f.plan();
        assert_actions(
            &p,
            [
                ("delete_opencode_session", "opencode:ses_old"),
                ("remove_worktree", "worktree:/tmp/booworktrees/stray"),
            ],
        );
        assert_eq!(p.actions[0].group(), p.actions[1].group());
        assert!(p.actions[0]
            .reason
            .starts_with("no open row names this session"));
    }

    #[test]
    fn session_named_by_a_live_chats_row_is_kept_and_keeps_its_directory() {
        let mut f = Fixture::new();
        f.archived_with_worktree("s1", "w1")
            .session("s2", RowStatus::Open, 1, 1)
            .chat("c2", "s2", RowStatus::Open)
            .listing([listed("ses_live", "w1", 0, None)]);
        f.desired
            .agent_sessions
            .push(oc_row("r2", "c2", "s2", Some("ses_live")));
        let p = f.plan();
        assert!(p.actions.is_empty(), "{p:#?}");
        assert_first_pending(&p, "opencode session ses_live still works in it");
    }

    #[test]
    fn with_opencode_off_rows_are_closed() {
        let f = Fixture::archived_chat_with_session();
        let p = f.plan();
        assert_eq!(names(&p)[0], ("close_agent_row", "agent-row:r1".into()));
        assert!(p.actions[0].reason.contains("opencode is off"));
    }
}

mod cgroups {
    use super::*;
    use crate::cgroup::Record;
    use crate::model::{AgentCgroup, AgentProcess};

    fn cg(chat: &str, members: &[i32], created: u64) -> AgentCgroup {
        let record = Record {
            chat: chat.into(),
            session: Some("s1".into()),
            agent: "qwen".into(),
            instance: None,
            pid: members.first().copied().unwrap_or(42),
        };
        AgentCgroup {
            path: PathBuf::from("/sys/fs/cgroup/boo-agents").join(record.name().unwrap()),
            record: Ok(record),
            members: members.to_vec(),
            created: t(created),
        }
    }

    fn labelled(pid: i32, chat: &str) -> AgentProcess {
        AgentProcess {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            start_time: 7000,
            started_at: t(0),
            state: 'S',
            chat_id: chat.into(),
            session_id: Some("s1".into()),
            agent: Some("qwen".into()),
            instance: None,
            command: "qwen --acp".into(),
            cwd: None,
        }
    }

    #[test]
    fn a_cgroup_of_a_chat_that_is_not_live_is_stopped_once_not_also_its_labelled_members() {
        let mut f = Fixture::new();
        f.archived_chat("gone").live_chat("live");
        f.actual.cgroups = vec![cg("gone", &[10, 11], 0), cg("live", &[20], 0)];
        f.actual.processes = vec![labelled(10, "gone"), labelled(20, "live")];
        let p = f.plan();
        let kinds: Vec<&str> = p.actions.iter().map(|a| a.name()).collect();
        assert_eq!(kinds, ["stop_cgroup"], "{p:#?}");
        assert!(p.actions[0].key().to_string().contains("chat=gone,"));
        assert_eq!(p.actions[0].owner.chat_id.as_deref(), Some("gone"));
    }

    #[test]
    fn a_labelled_process_of_another_chat_inside_a_cgroup_is_judged_by_its_label() {
        let mut f = Fixture::new();
        f.live_chat("live").archived_chat("gone");
        // In the live chat's cgroup, but labelled for a chat that is gone.
        f.actual.cgroups = vec![cg("live", &[20, 21], 0)];
        f.actual.processes = vec![labelled(21, "gone")];
        let p = f.plan();
        let kinds: Vec<&str> = p.actions.iter().map(|a| a.name()).collect();
        assert_eq!(kinds, ["terminate_process"], "{p:#?}");
    }

    #[test]
    fn an_unreadable_chat_or_a_young_orphan_keeps_its_cgroup_pending() {
        let mut f = Fixture::new();
        f.actual.cgroups = vec![cg("no-row", &[30], 3590)];
        let p = f.plan();
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(p.pending[0].why.contains("has no row"), "{p:#?}");
        // Old enough, a chat without a row is stopped.
        f.actual.cgroups = vec![cg("no-row", &[30], 0)];
        assert_eq!(f.plan().actions[0].name(), "stop_cgroup");
        // A chat whose row cannot be read is never stopped on a guess.
        f.desired.unreadable.push(crate::model::UnreadableRow {
            table: crate::model::Table::Chats,
            id: Some("no-row".into()),
            why: "bad row".into(),
        });
        let p = f.plan();
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(p.pending[0].why.contains("bad row"), "{p:#?}");
    }

    #[test]
    fn a_cgroup_whose_name_is_no_record_is_reported_once_old_never_acted_on() {
        let mut f = Fixture::new();
        let mut odd = cg("x", &[40], 0);
        odd.record = Err("no chat recorded".into());
        f.actual.cgroups = vec![odd.clone()];
        let p = f.plan();
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(p.pending[0].why.contains("not guessed"), "{p:#?}");
        odd.created = t(3599);
        f.actual.cgroups = vec![odd];
        assert!(
            f.plan().pending.is_empty(),
            "a young one is not reported yet"
        );
    }

    #[test]
    fn an_empty_cgroup_of_any_chat_is_removed_once_old() {
        let mut f = Fixture::new();
        f.live_chat("live");
        f.actual.cgroups = vec![cg("live", &[], 0), cg("live", &[], 3599)];
        f.actual.cgroups[1].path = PathBuf::from("/sys/fs/cgroup/boo-agents/young");
        let p = f.plan();
        let kinds: Vec<&str> = p.actions.iter().map(|a| a.name()).collect();
        assert_eq!(kinds, ["remove_cgroup"], "{p:#?}");
    }

    #[test]
    fn the_brake_counts_a_cgroup_as_a_termination() {
        let mut f = Fixture::new();
        // Chats without rows, of no session: five groups of one.
        f.actual.cgroups = (0..5)
            .map(|i| {
                let mut c = cg(&format!("c{i}"), &[100 + i], 0);
                if let Ok(r) = &mut c.record {
                    r.session = None;
                }
                c
            })
            .collect();
        let mut policy = policy();
        policy.max_terminations = 2;
        let p = plan(&f.desired, &f.actual, &policy, now(), &Scope::Host);
        assert_eq!(p.actions.len(), 2, "{p:#?}");
        assert_eq!(p.pending.len(), 3, "{p:#?}");
    }
}
