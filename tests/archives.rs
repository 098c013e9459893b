//! Getting work back after `--force`: the archives a forced removal left
//! are listed with what they hold and the audit record that made them, and
//! a restore brings the worktree back — a row for a live session, none
//! otherwise. Real repositories, a real database (both kinds).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use boo_reconciler::archives::{self, Filter};
use boo_reconciler::model::Scope;
use boo_reconciler::report::exit;
use common::{git, git_command, world_command, Db, World};

both_databases!(
    a_forced_removal_is_listed_and_restored_with_its_work,
    a_restore_for_a_live_session_adds_its_row,
    a_forced_nested_repository_comes_back_with_its_commits,
    a_relative_target_is_restored_where_the_operator_stands_and_recorded_whole,
    refused_targets_are_named_and_nothing_is_written,
    a_live_sessions_restore_outside_the_root_is_refused_and_later_passes_pass,
    two_restores_in_one_second_get_a_row_each,
    an_owners_secrets_come_back_with_their_modes,
);

async fn forced(w: &World) -> std::path::PathBuf {
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    fs::write(path.join("README.md"), "edited, not committed\n").unwrap();
    fs::write(path.join("notes.md"), "untracked\n").unwrap();
    fs::write(path.join(".env"), "TOKEN=1\n").unwrap();
    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    path
}

async fn a_forced_removal_is_listed_and_restored_with_its_work(db: Db) {
    let w = World::new(db).await;
    let gone = forced(&w).await;
    let config = w.config();
    let list = archives::list(&w.store, &config, &Filter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    assert_eq!(a.archive.worktree_id, "w1");
    assert_eq!(a.session_id.as_deref(), Some("s1"));
    assert_eq!(
        (
            a.archive.staged,
            a.archive.unstaged,
            a.archive.untracked,
            a.archive.precious
        ),
        (0, 1, 1, 1)
    );
    // The force's intent and its outcome both name the archive.
    let outcomes: Vec<&str> = a.audit.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["intent", "done"], "{:?}", a.audit);
    // Filters.
    let none = Filter {
        worktree: Some("w2".into()),
        ..Filter::default()
    };
    assert!(archives::list(&w.store, &config, &none)
        .await
        .unwrap()
        .is_empty());
    let by_session = Filter {
        session: Some("s1".into()),
        ..Filter::default()
    };
    assert_eq!(
        archives::list(&w.store, &config, &by_session)
            .await
            .unwrap()
            .len(),
        1
    );

    // Restored by worktree id, outside the root: the work is back, no row.
    let to = w.outside.join("back");
    let r = archives::restore(&w.store, &config, "w1", Some(&to))
        .await
        .unwrap();
    assert_eq!(r.row, None, "{r:?}");
    assert!(r.note.contains("session s1 is not live"), "{}", r.note);
    assert_eq!(
        fs::read_to_string(to.join("README.md")).unwrap(),
        "edited, not committed\n"
    );
    assert_eq!(
        fs::read_to_string(to.join("notes.md")).unwrap(),
        "untracked\n"
    );
    assert_eq!(fs::read_to_string(to.join(".env")).unwrap(), "TOKEN=1\n");
    assert!(!gone.exists());
    // The archive is still there, and a second restore to the same place
    // is refused without touching it.
    git(&w.repo, &["rev-parse", "--verify", &a.archive.reference]);
    let e = archives::restore(&w.store, &config, &a.archive.reference, Some(&to))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("not empty"), "{e:#}");
    assert_eq!(
        fs::read_to_string(to.join("README.md")).unwrap(),
        "edited, not committed\n"
    );
    // Nothing named that.
    let e = archives::restore(&w.store, &config, "w9", None)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("no archive w9"), "{e:#}");
}

async fn a_restore_for_a_live_session_adds_its_row(db: Db) {
    let w = World::new(db).await;
    forced(&w).await;
    // The session is open again: its restored worktree gets a row.
    w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    w.chat("c1", "s1", "open").await;
    let config = w.config();
    let r = archives::restore(&w.store, &config, "w1", None)
        .await
        .unwrap();
    let id = r.row.clone().expect("a row for the live session");
    assert!(r.restored.path.starts_with(&w.root), "{r:?}");
    assert_eq!(w.row_state(&id).await.0, "active");
    // The next pass leaves it alone: its session is live.
    let report = w.once(Scope::Host, false).await;
    assert!(r.restored.path.exists(), "{}", report.render());
    assert_eq!(
        fs::read_to_string(r.restored.path.join("notes.md")).unwrap(),
        "untracked\n"
    );
}

async fn a_forced_nested_repository_comes_back_with_its_commits(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    let lib = path.join("vendor/lib");
    fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q", "-b", "trunk"]);
    fs::write(lib.join("x.txt"), "x\n").unwrap();
    git(&lib, &["add", "x.txt"]);
    git(
        &lib,
        &["commit", "-q", "-m", "only in the nested repository"],
    );
    git(&lib, &["branch", "side"]);
    // A tag, a note, a stash entry and a commit only the reflog reaches.
    git(&lib, &["tag", "-a", "-m", "release", "v1"]);
    git(&lib, &["notes", "add", "-m", "a note", "HEAD"]);
    fs::write(lib.join("x.txt"), "stashed\n").unwrap();
    git(&lib, &["stash", "push", "-q", "-m", "kept aside"]);
    fs::write(lib.join("lost.txt"), "lost\n").unwrap();
    git(&lib, &["add", "lost.txt"]);
    git(&lib, &["commit", "-q", "-m", "reset away"]);
    let lost = git(&lib, &["rev-parse", "HEAD"]);
    git(&lib, &["reset", "-q", "--hard", "HEAD~1"]);
    fs::write(lib.join("x.txt"), "x, edited\n").unwrap();
    let head = git(&lib, &["rev-parse", "HEAD"]);
    let stash = git(&lib, &["stash", "list", "--format=%H %gs"]);
    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    // Nothing but the archive keeps them now.
    git(&w.repo, &["worktree", "prune"]);
    git(&w.repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&w.repo, &["gc", "-q", "--prune=now"]);

    let config = w.config();
    let list = archives::list(&w.store, &config, &Filter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].archive.nested_repositories(), 1, "{list:?}");
    assert!(
        archives::render(&list).contains("(+1 nested)"),
        "{}",
        archives::render(&list)
    );
    let refs = git(&w.repo, &["for-each-ref"]);
    let to = w.outside.join("back");
    let r = archives::restore(&w.store, &config, "w1", Some(&to))
        .await
        .unwrap();
    let back = to.join("vendor/lib");
    assert_eq!(git(&back, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&back, &["log", "-1", "--format=%s"]),
        "only in the nested repository"
    );
    assert_eq!(
        git(
            &back,
            &["for-each-ref", "--format=%(refname)", "refs/heads/"]
        ),
        "refs/heads/side\nrefs/heads/trunk"
    );
    assert_eq!(
        fs::read_to_string(back.join("x.txt")).unwrap(),
        "x, edited\n"
    );
    assert_eq!(git(&back, &["cat-file", "-t", "v1"]), "tag");
    assert_eq!(git(&back, &["notes", "show", "HEAD"]), "a note");
    assert_eq!(git(&back, &["stash", "list", "--format=%H %gs"]), stash);
    assert!(
        git(&back, &["log", "-g", "--format=%H", "HEAD"])
            .lines()
            .any(|l| l == lost),
        "the commit only the reflog reached is in HEAD's reflog again"
    );
    // Two branches at the kept HEAD: which one it was on is not known.
    assert!(!git_command(&back)
        .args(["symbolic-ref", "-q", "HEAD"])
        .status()
        .unwrap()
        .success());
    assert_eq!(git(&w.repo, &["for-each-ref"]), refs);
    // What the command prints and answers say so.
    let text = archives::render_restore(&r);
    assert!(
        text.contains(
            "nested vendor/lib: restored with 2 branches, 2 other refs, 1 stash entry, \
             1 reflog-only commit, HEAD detached at"
        ),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["nested"][0]["path"], "vendor/lib", "{json}");
    assert_eq!(json["nested"][0]["placed"], true, "{json}");
}

async fn a_relative_target_is_restored_where_the_operator_stands_and_recorded_whole(db: Db) {
    let w = World::new(db).await;
    forced(&w).await;
    w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    w.chat("c1", "s1", "open").await;
    // The command runs in the world's temp dir: `booworktrees/back` is
    // relative to it.
    let out = world_command(&w, &w.url)
        .args(["restore", "w1", "--to", "booworktrees/back", "--json"])
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = w.root.join("back");
    assert_eq!(answer["path"], expected.display().to_string(), "{answer:#}");
    assert_eq!(
        fs::read_to_string(expected.join("notes.md")).unwrap(),
        "untracked\n"
    );
    let id = answer["row"].as_str().expect("a row for the live session");
    let path = w
        .store
        .query_strings(&format!("SELECT path FROM worktrees WHERE id = '{id}'"))
        .await
        .unwrap();
    assert_eq!(path[0][0].as_deref(), Some(expected.to_str().unwrap()));
}

/// Every worktree row, as `id path state`.
async fn rows(w: &World) -> Vec<String> {
    w.store
        .query_strings("SELECT id, path, state FROM worktrees ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `restore w1 --to <to>` through the binary: its exit code and stderr.
fn restore_to(w: &World, to: &Path) -> (Option<i32>, String) {
    let out = world_command(w, &w.url)
        .args(["restore", "w1", "--to"])
        .arg(to)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a refused restore must have left alone: the worktree rows, the
/// main repository's worktrees and refs.
async fn untouched(w: &World) -> (Vec<String>, String, String) {
    (
        rows(w).await,
        git(&w.repo, &["worktree", "list", "--porcelain"]),
        git(&w.repo, &["for-each-ref"]),
    )
}

async fn refused_targets_are_named_and_nothing_is_written(db: Db) {
    let w = World::new(db).await;
    let gone = forced(&w).await;
    // A live session's worktree, reached through an alias of its parent.
    w.session("s2", "open").await;
    w.chat("c2", "s2", "open").await;
    let live = w.worktree("w2", "s2").await;
    fs::remove_dir_all(&live).unwrap();
    git(&w.repo, &["worktree", "prune"]);
    symlink(&w.root, w.tmp.path().join("alias")).unwrap();
    let before = untouched(&w).await;
    let git_dir = w.repo.join(".git");
    for (to, says) in [
        (
            w.root.join(".boo-trash/back"),
            "inside the controller's trash",
        ),
        (git_dir.join("back"), "inside the git directory"),
        (git_dir.join("worktrees/back"), "inside the git directory"),
        (git_dir.join("refs/heads/back"), "inside the git directory"),
        // The forced worktree's row is removed, and still names its path.
        (
            gone.clone(),
            "the directory worktree row w1 (session s1, removed)",
        ),
        (
            w.tmp.path().join("alias/w2"),
            "the directory worktree row w2 (session s2, active)",
        ),
        (
            w.outside.join("../booworktrees/w2"),
            "the directory worktree row w2",
        ),
    ] {
        let (code, stderr) = restore_to(&w, &to);
        assert_eq!(code, Some(1), "{}: {stderr}", to.display());
        assert!(stderr.contains(says), "{}: {stderr}", to.display());
        assert!(
            stderr.contains(&to.display().to_string()),
            "the target is named: {stderr}"
        );
        assert!(!to.exists(), "{}", to.display());
        assert_eq!(untouched(&w).await, before, "{}", to.display());
    }
    // Control: the same restore beside them is made.
    let (code, stderr) = restore_to(&w, &w.outside.join("fine"));
    assert_eq!(code, Some(0), "{stderr}");
}

async fn a_live_sessions_restore_outside_the_root_is_refused_and_later_passes_pass(db: Db) {
    let w = World::new(db).await;
    forced(&w).await;
    w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    w.chat("c1", "s1", "open").await;
    let before = untouched(&w).await;
    for to in [
        w.outside.join("back"),
        w.root.join("deeper/back"),
        w.root.clone(),
    ] {
        let (code, stderr) = restore_to(&w, &to);
        assert_eq!(code, Some(1), "{}: {stderr}", to.display());
        assert!(
            stderr.contains("worktrees.root")
                && stderr.contains(&format!("--to {}/<name>", w.root.display())),
            "{stderr}"
        );
        assert!(!w.outside.join("back").exists() && !w.root.join("deeper").exists());
        assert_eq!(untouched(&w).await, before, "{}", to.display());
    }
    // Under the root, spelled through an alias: the row records it with
    // the root as the controller spells it.
    symlink(&w.root, w.tmp.path().join("alias")).unwrap();
    let (code, stderr) = restore_to(&w, &w.tmp.path().join("alias/back"));
    assert_eq!(code, Some(0), "{stderr}");
    let back = w.root.join("back");
    assert!(
        rows(&w)
            .await
            .iter()
            .any(|r| r.ends_with(&format!(" {} active", back.display()))),
        "{:?}",
        rows(&w).await
    );
    // Once the session closes, passes take the row as theirs: the work
    // in it keeps it (at risk), and nothing is an error.
    w.sql("UPDATE sessions SET status = 'archived' WHERE id = 's1'")
        .await;
    for _ in 0..2 {
        let report = w.once(Scope::Host, false).await;
        assert_ne!(report.exit_code(), exit::ERROR, "{}", report.render());
        assert!(!report.render().contains("refuse"), "{}", report.render());
    }
    assert!(back.join("notes.md").exists());
}

async fn two_restores_in_one_second_get_a_row_each(db: Db) {
    let w = World::new(db).await;
    forced(&w).await;
    w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    w.chat("c1", "s1", "open").await;
    let config = w.config();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut made = Vec::new();
    for to in [None, None, Some(w.root.join("a")), Some(w.root.join("b"))] {
        let r = archives::restore_at(&w.store, &config, "w1", to.as_deref(), now)
            .await
            .unwrap();
        made.push((r.row.clone().expect("a row"), r.restored.path.clone()));
    }
    let ids: Vec<&str> = made.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "w1-restored-1800000000",
            "w1-restored-1800000000-1",
            "w1-restored-1800000000-2",
            "w1-restored-1800000000-3",
        ]
    );
    assert_eq!(made[0].1, w.root.join("w1-restored-1800000000"));
    assert_eq!(made[1].1, w.root.join("w1-restored-1800000000-1"));
    let all = rows(&w).await;
    for (id, path) in &made {
        assert!(path.join("notes.md").exists(), "{}", path.display());
        assert!(
            all.contains(&format!("{id} {} active", path.display())),
            "{all:?}"
        );
    }
}

/// The bits of `rel` below `dir`.
fn mode_of(dir: &Path, rel: &str) -> u32 {
    fs::symlink_metadata(dir.join(rel)).unwrap().mode() & 0o777
}

async fn an_owners_secrets_come_back_with_their_modes(db: Db) {
    use boo_reconciler::testing::{local_user, OWNER};
    let owner = local_user(OWNER);
    let w = common::archived_world(db).await;
    let path = w.worktree("w1", "s1").await;
    fs::write(path.join(".env"), "TOKEN=1\n").unwrap();
    fs::create_dir_all(path.join("keys")).unwrap();
    fs::write(path.join("keys/id"), "key\n").unwrap();
    fs::write(path.join("notes.md"), "plain\n").unwrap();
    let chmod = |rel: &str, mode: u32| {
        fs::set_permissions(path.join(rel), fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(".env", 0o600);
    chmod("keys/id", 0o600);
    chmod("keys", 0o700);
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&w.repo, &path, &w.outside] {
        for e in walkdir::WalkDir::new(dir) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(owner.uid), Some(owner.gid)).unwrap();
        }
    }
    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());

    let to = w.outside.join("back");
    let (code, stderr) = restore_to(&w, &to);
    assert_eq!(code, Some(0), "{stderr}");
    for (rel, mode) in [
        (".env", 0o600),
        ("keys", 0o700),
        ("keys/id", 0o600),
        ("notes.md", 0o644),
        ("README.md", 0o644),
    ] {
        assert_eq!(mode_of(&to, rel), mode, "{rel}: {:o}", mode_of(&to, rel));
        assert_eq!(
            fs::symlink_metadata(to.join(rel)).unwrap().uid(),
            owner.uid,
            "{rel} is the owner's"
        );
    }
    assert_eq!(fs::read_to_string(to.join("keys/id")).unwrap(), "key\n");
}
