//! Getting work back after `--force`: the archives a forced removal left
//! are listed with what they hold and the audit record that made them, and
//! a restore brings the worktree back — a row for a live session, none
//! otherwise. Real repositories, a real database (both kinds).

mod common;

use std::fs;

use boo_reconciler::archives::{self, Filter};
use boo_reconciler::plan::Scope;
use boo_reconciler::report::exit;
use common::{git, git_command, world_command, Db, World};

both_databases!(
    a_forced_removal_is_listed_and_restored_with_its_work,
    a_restore_for_a_live_session_adds_its_row,
    a_forced_nested_repository_comes_back_with_its_commits,
    a_relative_target_is_restored_where_the_operator_stands_and_recorded_whole,
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
    fs::write(lib.join("x.txt"), "x, edited\n").unwrap();
    let head = git(&lib, &["rev-parse", "HEAD"]);
    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());

    let config = w.config();
    let list = archives::list(&w.store, &config, &Filter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(!list[0].archive.nested.is_empty(), "{list:?}");
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
        text.contains("nested vendor/lib: restored with 2 branches, HEAD detached at"),
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
    // The command runs in the world's temp dir: `back` is relative to it.
    let out = world_command(&w, &w.url)
        .args(["restore", "w1", "--to", "back", "--json"])
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = w.tmp.path().join("back");
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
