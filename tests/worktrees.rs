//! Worktree teardown end to end: real repositories and worktrees, a real
//! database of each kind, the controller's own pass.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use boo_reconciler::act::trash::reclaim::Swept;
use boo_reconciler::act::{self, ActionResult, Outcome, RunOptions};
use boo_reconciler::controller::Controller;
use boo_reconciler::model::{Force, Scope};
use boo_reconciler::plan::Plan;
use boo_reconciler::report::exit;
use common::{detached_worktree, git, git_ok, worktree_listed, Db, Tree, World};
use tokio_util::sync::CancellationToken;

both_databases!(
    clean_worktree_of_archived_session_is_removed_and_its_branch_survives,
    dirty_worktree_is_kept_at_risk_and_forced_removal_archives_it,
    symlink_inside_worktree_to_file_outside_root_survives_removal,
    untrusted_row_paths_are_refused_and_nothing_outside_is_touched,
    session_reopened_between_plan_and_act_keeps_its_worktree,
    orphan_directory_is_reaped_only_when_old_and_clean,
    second_pass_after_convergence_does_nothing_and_plan_writes_nothing,
    worktree_of_live_session_survives,
    stale_admin_entry_keeps_its_lost_commits_under_an_archive_ref_then_is_pruned,
    locked_stale_admin_entry_is_pruned_only_with_force,
    a_stale_admin_entry_waits_out_its_grace_across_restarts_then_keeps_what_it_held,
    a_path_claimed_by_a_live_row_is_never_removed,
    a_path_claimed_by_a_live_row_added_after_the_plan_is_never_removed,
    a_live_row_claims_its_directory_under_every_spelling,
    a_root_unmounted_for_one_pass_marks_nothing_removed_and_prunes_nothing,
    a_controller_started_while_its_root_is_elsewhere_holds_until_it_is_back,
    a_root_emptied_while_rows_say_worktrees_are_there_holds_until_accepted,
    admin_entry_of_a_moved_worktree_is_not_pruned,
    removal_retires_exactly_the_worktree_and_the_reclaimer_frees_only_it,
    the_trash_is_never_an_orphan,
);

/// Every file under `dir` (the `.git` file too) with its contents, sorted.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    common::files(dir, Tree::Whole)
}

/// One sweep of `controller`'s trash reclaimer, to its end.
async fn sweep(controller: &Controller) -> Swept {
    controller
        .executor()
        .reclaimer()
        .sweep(&CancellationToken::new())
        .await
}

/// `plan` carried out with `force` by `controller`'s executor, as a pass
/// that planned it earlier would.
async fn execute_forced(controller: &Controller, plan: &Plan) -> Vec<ActionResult> {
    Arc::clone(controller.executor())
        .execute(plan, RunOptions::new(Force::On), &CancellationToken::new())
        .await
}

async fn clean_worktree_of_archived_session_is_removed_and_its_branch_survives(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    // A commit on the branch, reachable from the branch only.
    fs::write(path.join("work.txt"), "done\n").unwrap();
    git(&path, &["add", "work.txt"]);
    git(&path, &["commit", "-q", "-m", "work"]);
    let tip = git(&path, &["rev-parse", "HEAD"]);

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
    // The branch's commit is reachable from the branch itself, which is
    // never deleted: but it is reachable from no *other* ref, so it is work.
    assert!(path.exists());

    // Merge it into main: now the worktree is clean and may go.
    git(&w.repo, &["merge", "-q", "--ff-only", "boo/w1"]);
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists(), "worktree directory removed");
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert_eq!(git(&w.repo, &["rev-parse", "boo/w1"]), tip, "branch kept");
    assert!(git_ok(&w.repo, &["cat-file", "-e", &tip]));
    assert!(
        !worktree_listed(&w.repo, &path),
        "admin entry pruned: {}",
        git(&w.repo, &["worktree", "list"])
    );
    let audit = w.audit().await;
    assert!(audit.iter().any(|a| a.action == "remove_worktree"
        && a.outcome == "done"
        && a.session_id.as_deref() == Some("s1")
        && a.reason.contains("session s1 archived")));
}

async fn worktree_of_live_session_survives(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "open").await;
    w.chat("c2", "s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    let report = w.once(Scope::Host, true).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert!(path.exists());
    assert_eq!(w.row_state("w1").await.0, "active");
}

async fn dirty_worktree_is_kept_at_risk_and_forced_removal_archives_it(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    fs::write(path.join("README.md"), "changed\n").unwrap();
    fs::write(path.join("new.txt"), "untracked\n").unwrap();
    fs::write(path.join(".env"), "SECRET=1\n").unwrap();
    fs::create_dir_all(path.join("target")).unwrap();
    fs::write(path.join("target/out.o"), "build output").unwrap();
    fs::write(path.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(path.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("README.md", path.join("link")).unwrap();

    // Asked for by name, the pass weighs every reason (the interval's
    // stops at the first).
    let report = w.once(Scope::Session("s1".into()), false).await;
    assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
    assert!(path.exists());
    let (state, reasons) = w.row_state("w1").await;
    assert_eq!(state, "at_risk");
    let reasons = reasons.unwrap();
    for kind in ["unstaged", "untracked", "precious_ignored"] {
        assert!(reasons.contains(kind), "{kind} in {reasons}");
    }
    assert!(
        !reasons.contains("target/out.o"),
        "build output is not work"
    );
    assert_eq!(report.at_risk.len(), 1);

    // Reported again on the next such pass, with the same reasons, but
    // recorded in the audit only once.
    let again = w.once(Scope::Session("s1".into()), false).await;
    assert_eq!(again.at_risk.len(), 1);
    assert_eq!(w.row_state("w1").await.1.unwrap(), reasons);
    let kept = w
        .audit()
        .await
        .into_iter()
        .filter(|a| a.outcome == "kept_at_risk")
        .count();
    assert_eq!(kept, 1);

    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
    let archive = report.results[0].detail.to_value()["archive"]["reference"]
        .as_str()
        .expect("archive ref in the result")
        .to_string();
    assert!(archive.starts_with("refs/boo/archive/w1/"), "{archive}");

    // Bring it back as the README says, and compare.
    let restored = w.tmp.path().join("restored");
    detached_worktree(&w.repo, &restored, &format!("{archive}^1"));
    git(&restored, &["stash", "apply", "--index", &archive]);
    assert_eq!(
        fs::read_to_string(restored.join("README.md")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        fs::read_to_string(restored.join("new.txt")).unwrap(),
        "untracked\n"
    );
    assert_eq!(
        fs::read_to_string(restored.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    let mode = fs::metadata(restored.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit restored");
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap().to_str(),
        Some("README.md")
    );
    git(&w.repo, &["gc", "-q", "--prune=now"]);
    assert!(git_ok(&w.repo, &["cat-file", "-e", &archive]));
}

async fn symlink_inside_worktree_to_file_outside_root_survives_removal(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "deleted").await;
    let path = w.worktree("w1", "s1").await;
    let precious = w.outside.join("precious.txt");
    fs::write(&precious, "keep me\n").unwrap();
    let outside_dir = w.outside.join("dir");
    fs::create_dir(&outside_dir).unwrap();
    fs::write(outside_dir.join("inner.txt"), "keep me too\n").unwrap();
    // Ignored, so the worktree is otherwise clean.
    fs::create_dir_all(path.join("target")).unwrap();
    symlink(&precious, path.join("target/link-to-file")).unwrap();
    symlink(&outside_dir, path.join("target/link-to-dir")).unwrap();

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert_eq!(
        fs::read_to_string(outside_dir.join("inner.txt")).unwrap(),
        "keep me too\n"
    );
}

async fn untrusted_row_paths_are_refused_and_nothing_outside_is_touched(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    // A victim directory outside the root, reachable three ways.
    let victim = w.outside.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("data"), "x").unwrap();
    let dotdot = format!("{}/../outside/victim", w.root.display());
    w.worktree_row("w-dotdot", "s1", &dotdot).await;
    w.worktree_row("w-abs", "s1", victim.to_str().unwrap())
        .await;
    w.worktree_row("w-etc", "s1", "/etc").await;
    symlink(&victim, w.root.join("w-link")).unwrap();
    w.worktree_row("w-link", "s1", w.root.join("w-link").to_str().unwrap())
        .await;

    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::ERROR, "{}", report.render());
    let refused: Vec<_> = report
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Refused { .. }))
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(refused.len(), 4, "{}", report.render());
    assert_eq!(fs::read_to_string(victim.join("data")).unwrap(), "x");
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert!(
        w.root.join("w-link").is_symlink(),
        "the link itself is left too"
    );
    let audit = w.audit().await;
    for id in ["w-dotdot", "w-abs", "w-etc", "w-link"] {
        assert!(
            audit
                .iter()
                .any(|a| a.outcome == "refused" && a.target == format!("worktree-row:{id}")),
            "audit record for {id}"
        );
        assert_eq!(w.row_state(id).await.0, "active", "{id} row untouched");
    }
}

async fn session_reopened_between_plan_and_act_keeps_its_worktree(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let controller = w.controller();
    let mut notes = Default::default();
    let (plan, _) = controller
        .plan(&Scope::Host, true, &mut notes)
        .await
        .unwrap();
    assert_eq!(plan.actions.len(), 1);

    w.sql("UPDATE sessions SET status = 'open' WHERE id = 's1'")
        .await;
    w.sql("UPDATE chats SET status = 'open' WHERE id = 'c1'")
        .await;
    let results = execute_forced(&controller, &plan).await;
    assert!(
        matches!(&results[0].outcome, Outcome::Skipped { why } if why.contains("live again")),
        "{:?}",
        results[0].outcome
    );
    assert!(path.join("README.md").exists());
    assert_eq!(w.row_state("w1").await.0, "active");
}

async fn orphan_directory_is_reaped_only_when_old_and_clean(db: Db) {
    let mut w = World::new(db).await;
    // Worktrees with no row at all.
    let clean = w.add_worktree("orphan-clean");
    let dirty = w.add_worktree("orphan-dirty");
    fs::write(dirty.join("notes.txt"), "unsaved\n").unwrap();
    let plain = w.root.join("orphan-plain");
    fs::create_dir(&plain).unwrap();

    let report = w.once(Scope::Host, false).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert_eq!(report.pending.len(), 3);
    assert!(clean.exists() && dirty.exists() && plain.exists());

    w.orphan_min_age = Duration::ZERO;
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
    assert!(!clean.exists(), "old clean orphan removed");
    assert!(!plain.exists(), "old empty directory removed");
    assert!(dirty.join("notes.txt").exists(), "old dirty orphan kept");
    assert_eq!(report.at_risk.len(), 1);
    assert!(!worktree_listed(&w.repo, &clean));
}

async fn second_pass_after_convergence_does_nothing_and_plan_writes_nothing(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;

    let before_audit = w.audit().await.len();
    let plan = w.plan().await;
    assert_eq!(plan.planned.len(), 1, "{}", plan.render());
    assert!(path.exists(), "plan removed nothing");
    assert_eq!(w.row_state("w1").await.0, "active");
    assert_eq!(w.audit().await.len(), before_audit, "plan wrote no audit");

    let first = w.once(Scope::Host, false).await;
    assert_eq!(first.exit_code(), exit::CONVERGED, "{}", first.render());
    let audit_after_first = w.audit().await.len();
    let second = w.once(Scope::Host, false).await;
    assert!(second.results.is_empty(), "{}", second.render());
    assert_eq!(second.exit_code(), exit::CONVERGED);
    assert_eq!(w.audit().await.len(), audit_after_first);
}

async fn stale_admin_entry_keeps_its_lost_commits_under_an_archive_ref_then_is_pruned(db: Db) {
    let w = World::new(db).await;
    // A live worktree beside it: a root emptied while rows say worktrees
    // are there holds (a_root_emptied_or_remounted_elsewhere_holds...).
    w.session("live", "open").await;
    w.worktree("live", "live").await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    git(&path, &["checkout", "-q", "--detach"]);
    fs::write(path.join("lost.txt"), "only here\n").unwrap();
    git(&path, &["add", "lost.txt"]);
    git(&path, &["commit", "-q", "-m", "detached work"]);
    let lost = git(&path, &["rev-parse", "HEAD"]);
    // Someone deletes the directory behind git's back.
    fs::remove_dir_all(&path).unwrap();

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert!(
        !w.repo.join(".git/worktrees/w1").exists(),
        "admin entry pruned"
    );
    let refs = git(
        &w.repo,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/boo/history/",
        ],
    );
    // The history ref's commit has the kept commits as its parents.
    let kept = refs.split_whitespace().nth(1).expect("a history ref");
    let parents = git(&w.repo, &["rev-list", "--parents", "-n1", kept]);
    assert!(parents.contains(&lost), "history ref keeps {lost}: {refs}");
    git(&w.repo, &["gc", "-q", "--prune=now"]);
    assert!(git_ok(&w.repo, &["cat-file", "-e", &lost]));
    let audit = w.audit().await;
    assert!(audit
        .iter()
        .any(|a| a.action == "prune_admin_entry" && a.outcome == "done"));
    assert!(audit
        .iter()
        .any(|a| a.action == "mark_worktree_removed" && a.outcome == "done"));
}

/// A directory deleted behind git's back: its admin entry waits out
/// `worktrees.stale_entry_grace`, pending with how long it has been
/// missing, across restarts (each `once` is a new controller: the clock is
/// the database's); once the grace has passed it is pruned, and what only
/// it held (here the staged index) survives `git gc`. A directory that
/// comes back makes the pass forget when it went missing.
async fn a_stale_admin_entry_waits_out_its_grace_across_restarts_then_keeps_what_it_held(db: Db) {
    let mut w = World::new(db).await;
    w.stale_entry_grace = std::time::Duration::from_secs(3600);
    w.session("live", "open").await;
    w.worktree("live", "live").await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    fs::write(path.join("staged.txt"), "staged only\n").unwrap();
    git(&path, &["add", "staged.txt"]);
    let blob = git(&path, &["rev-parse", ":staged.txt"]);
    // Kept at risk (staged), then someone deletes it by hand.
    w.once(Scope::Host, false).await;
    assert!(path.exists());
    fs::remove_dir_all(&path).unwrap();
    let entry = w.repo.join(".git/worktrees/w1");
    let count = || async {
        w.store
            .query_strings("SELECT name FROM reconciler_missing_entries")
            .await
            .unwrap()
            .len()
    };
    for _ in 0..2 {
        let report = w.once(Scope::Host, false).await;
        assert!(
            entry.exists(),
            "pruned within its grace: {}",
            report.render()
        );
        let why = report
            .pending
            .iter()
            .map(|p| p.why.clone())
            .find(|why| why.contains("worktrees.stale_entry_grace"))
            .unwrap_or_else(|| panic!("no pending grace: {}", report.render()));
        assert!(why.contains("missing for"), "{why}");
        assert_eq!(count().await, 1);
    }
    // The directory comes back for a pass: the clock is forgotten.
    fs::create_dir(&path).unwrap();
    fs::write(path.join(".git"), format!("gitdir: {}\n", entry.display())).unwrap();
    let back = w.once(Scope::Host, false).await;
    assert_eq!(count().await, 0, "{}", back.render());
    fs::remove_dir_all(&path).unwrap();
    w.once(Scope::Host, false).await;
    assert!(entry.exists());
    // An hour later.
    w.sql("UPDATE reconciler_missing_entries SET first_missing_unix = first_missing_unix - 3600")
        .await;
    let report = w.once(Scope::Host, false).await;
    assert!(
        !entry.exists(),
        "not pruned after its grace: {}",
        report.render()
    );
    // The next pass, which no longer sees the entry, forgets its record.
    w.once(Scope::Host, false).await;
    assert_eq!(count().await, 0);
    git(&w.repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&w.repo, &["gc", "-q", "--prune=now"]);
    assert!(
        git_ok(&w.repo, &["cat-file", "-e", &blob]),
        "the staged blob is lost"
    );
}

async fn locked_stale_admin_entry_is_pruned_only_with_force(db: Db) {
    let w = World::new(db).await;
    // Only a removed row of another worktree tells that the repository is
    // this host's.
    w.worktree_row("w0", "s0", "/gone").await;
    w.sql("UPDATE worktrees SET state = 'removed' WHERE id = 'w0'")
        .await;
    let path = w.add_worktree("w1");
    git(
        &w.repo,
        &[
            "worktree",
            "lock",
            "--reason",
            "on a USB disk",
            path.to_str().unwrap(),
        ],
    );
    fs::remove_dir_all(&path).unwrap();

    let report = w.once(Scope::Host, false).await;
    assert!(
        w.repo.join(".git/worktrees/w1").exists(),
        "{}",
        report.render()
    );
    assert!(
        report.render().contains("on a USB disk"),
        "{}",
        report.render()
    );

    let report = w.once(Scope::Host, true).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!w.repo.join(".git/worktrees/w1").exists());
    // The branch is never deleted.
    assert!(git_ok(&w.repo, &["rev-parse", "--verify", "boo/w1"]));
}

async fn a_path_claimed_by_a_live_row_is_never_removed(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    w.session("s2", "open").await;
    w.chat("c2", "s2", "open").await;
    // Two rows name one directory: w1's session is gone, w2's is live.
    let path = w.worktree("w1", "s1").await;
    w.worktree_row("w2", "s2", path.to_str().unwrap()).await;
    // Clean by the preflight's standards (ignored build output only): only
    // the live row stands between it and removal.
    fs::create_dir_all(path.join("target")).unwrap();
    fs::write(path.join("target/out.o"), "build output").unwrap();
    let before = files(&path);

    for force in [false, true] {
        let report = w.once(Scope::Host, force).await;
        assert!(report.results.is_empty(), "{}", report.render());
        assert!(
            report
                .pending
                .iter()
                .any(|p| p.target.to_string().ends_with("/w1")
                    && p.why
                        .contains("row w2 of live session s2 names this directory too")),
            "force {force}: {}",
            report.render()
        );
        assert_eq!(files(&path), before, "force {force}: files untouched");
        assert_eq!(w.row_state("w2").await.0, "active");
        assert_eq!(w.row_state("w1").await.0, "active");
        assert!(git_ok(&path, &["status", "--porcelain"]));
    }
}

async fn a_path_claimed_by_a_live_row_added_after_the_plan_is_never_removed(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let before = files(&path);
    let controller = w.controller();
    let mut notes = Default::default();
    let (plan, _) = controller
        .plan(&Scope::Host, true, &mut notes)
        .await
        .unwrap();
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);

    // A live session's row claims the directory while the pass runs.
    w.session("s2", "open").await;
    w.chat("c2", "s2", "open").await;
    w.worktree_row("w2", "s2", path.to_str().unwrap()).await;
    let results = execute_forced(&controller, &plan).await;
    assert!(
        matches!(&results[0].outcome, Outcome::Skipped { why }
            if why.contains("row w2 of live session s2 names this directory too")),
        "{:?}",
        results[0].outcome
    );
    assert_eq!(files(&path), before);
    assert_eq!(w.row_state("w1").await.0, "active");
    assert_eq!(w.row_state("w2").await.0, "active");
    let audit = w.audit().await;
    assert!(audit.iter().any(|a| a.action == "remove_worktree"
        && a.outcome == "skipped"
        && a.reason.contains("row w2 of live session s2")));
}

/// A live row that names the directory through a symlink, or with a path
/// relative to the root, beside an archived row naming it plainly: the
/// directory stays, whether the live row is there when the pass plans or
/// only appears before it acts.
async fn a_live_row_claims_its_directory_under_every_spelling(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let before = files(&path);
    let link = w.tmp.path().join("link-to-w1");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    w.session("s2", "open").await;
    w.chat("c2", "s2", "open").await;
    w.worktree_row("w2", "s2", link.to_str().unwrap()).await;
    let report = w.once(Scope::Host, false).await;
    assert!(
        report.pending.iter().any(|p| p
            .why
            .contains("row w2 of live session s2 names this directory too")),
        "{report:?}"
    );
    assert_eq!(files(&path), before);

    // Planned while only the archived row names it; a live row spelling it
    // relative to the root appears before the removal.
    w.sql("DELETE FROM worktrees WHERE id = 'w2'").await;
    let controller = w.controller();
    let mut notes = Default::default();
    let (plan, _) = controller
        .plan(&Scope::Host, true, &mut notes)
        .await
        .unwrap();
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    w.worktree_row("w3", "s2", "./w1/").await;
    let results = execute_forced(&controller, &plan).await;
    assert!(
        matches!(&results[0].outcome, Outcome::Skipped { why }
            if why.contains("row w3 of live session s2 names this directory too")),
        "{:?}",
        results[0].outcome
    );
    assert_eq!(files(&path), before);
}

/// The root is a mount (here a bind mount) that goes away for one pass:
/// the pass sees that the root is not itself and holds, instead of taking
/// the empty directory under the mount point for removed worktrees. The
/// kept worktree's row stays at risk, its admin entry (staged content,
/// HEAD reflog) stays, and once the root is back the next pass keeps it.
async fn a_root_unmounted_for_one_pass_marks_nothing_removed_and_prunes_nothing(db: Db) {
    let w = World::new(db).await;
    let real = w.tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    let mount = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        common::assert_succeeded(&out);
    };
    let (real_s, root_s) = (real.to_str().unwrap(), w.root.to_str().unwrap());
    mount(&["mount", "--bind", real_s, root_s]);
    let _unmount = Unmount(root_s);
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::write(path.join("staged.txt"), "staged work\n").unwrap();
    git(&path, &["add", "staged.txt"]);
    let controller = w.controller();
    let kept = common::act_pass(&controller, Scope::Host, false).await;
    assert_eq!(w.row_state("w1").await.0, "at_risk", "{kept:?}");
    let entry = w.repo.join(".git/worktrees/w1");

    mount(&["umount", root_s]);
    let held = common::act_pass(&controller, Scope::Host, false).await;
    mount(&["mount", "--bind", real_s, root_s]);
    assert_eq!(
        held.result(),
        boo_reconciler::report::PassResult::Error,
        "{held:?}"
    );
    assert!(
        held.pending
            .iter()
            .any(|p| p.why.contains("the worktree root is not itself")),
        "{held:?}"
    );
    assert!(held.results.is_empty(), "{held:?}");
    assert_eq!(w.row_state("w1").await.0, "at_risk");
    assert!(entry.exists(), "the admin entry was pruned");

    let again = common::act_pass(&controller, Scope::Host, false).await;
    mount(&["umount", root_s]);
    assert_eq!(w.row_state("w1").await.0, "at_risk", "{again:?}");
    assert!(entry.exists());
    assert_eq!(
        fs::read_to_string(real.join("w1/staged.txt")).unwrap(),
        "staged work\n"
    );
}

/// Unmounts (lazily) what is still mounted at its path when dropped, a
/// failed assertion included.
struct Unmount<'a>(&'a str);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", self.0])
            .output();
    }
}

fn run_ok(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    common::assert_succeeded(&out);
}

/// The root's record (`reconciler_roots`): a controller that starts while
/// its root is unmounted, or with another directory mounted there, sees
/// that the root is not the one recorded and holds: no row marked removed,
/// no admin entry pruned, the reason in the report and the `root_held`
/// metric. Once the real root is back, the next controller goes on.
async fn a_controller_started_while_its_root_is_elsewhere_holds_until_it_is_back(db: Db) {
    let w = World::new(db).await;
    let (real, other) = (w.tmp.path().join("real"), w.tmp.path().join("other"));
    fs::create_dir(&real).unwrap();
    fs::create_dir(&other).unwrap();
    let (real_s, other_s, root_s) = (
        real.to_str().unwrap(),
        other.to_str().unwrap(),
        w.root.to_str().unwrap(),
    );
    run_ok(&["mount", "--bind", real_s, root_s]);
    let _unmount = Unmount(root_s);
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::write(path.join("staged.txt"), "staged work\n").unwrap();
    git(&path, &["add", "staged.txt"]);
    let kept = common::act_pass(&w.controller(), Scope::Host, false).await;
    assert_eq!(w.row_state("w1").await.0, "at_risk", "{kept:?}");
    assert_eq!(kept.observed.root_held, None);
    let entry = w.repo.join(".git/worktrees/w1");

    for (what, mount_other) in [("unmounted", false), ("another directory", true)] {
        run_ok(&["umount", root_s]);
        if mount_other {
            run_ok(&["mount", "--bind", other_s, root_s]);
        }
        // A new controller: it prepares the root as it finds it.
        let held = common::act_pass(&w.controller(), Scope::Host, false).await;
        let why = held.observed.root_held.clone().unwrap_or_default();
        assert!(why.contains("was recorded on"), "{what}: {held:?}");
        assert!(held.errors.iter().any(|e| e == &why), "{what}: {held:?}");
        assert!(held.results.is_empty(), "{what}: {held:?}");
        assert_eq!(w.row_state("w1").await.0, "at_risk", "{what}");
        assert!(entry.exists(), "{what}: the admin entry was pruned");
        let metrics = boo_reconciler::metrics::Metrics::new();
        metrics.observe_pass(&held);
        assert!(
            metrics.render().contains("boo_reconciler_root_held 1"),
            "{what}"
        );
        if mount_other {
            run_ok(&["umount", root_s]);
        }
        run_ok(&["mount", "--bind", real_s, root_s]);
    }
    let back = common::act_pass(&w.controller(), Scope::Host, false).await;
    assert_eq!(back.observed.root_held, None, "{back:?}");
    assert_eq!(w.row_state("w1").await.0, "at_risk");
    assert_eq!(
        fs::read_to_string(real.join("w1/staged.txt")).unwrap(),
        "staged work\n"
    );
}

/// Every worktree of the root gone at once while rows still name them (a
/// root wiped, a tmpfs after a reboot): the pass holds rather than mark
/// every row removed; `accept-root` (the binary) records the root as it
/// is, and the next pass marks the rows removed and prunes the entries,
/// keeping what they held.
async fn a_root_emptied_while_rows_say_worktrees_are_there_holds_until_accepted(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    fs::write(path.join("staged.txt"), "staged work\n").unwrap();
    git(&path, &["add", "staged.txt"]);
    let blob = git(&path, &["rev-parse", ":staged.txt"]);
    let kept = w.once(Scope::Host, false).await;
    assert_eq!(w.row_state("w1").await.0, "at_risk", "{}", kept.render());
    fs::remove_dir_all(&path).unwrap();
    let entry = w.repo.join(".git/worktrees/w1");

    let held = w.once(Scope::Host, false).await;
    let why = held.observed.root_held.clone().unwrap_or_default();
    assert!(why.contains("is empty while 1 row(s)"), "{}", held.render());
    assert!(why.contains("accept-root"), "{why}");
    assert_eq!(held.exit_code(), exit::ERROR);
    assert_eq!(w.row_state("w1").await.0, "at_risk");
    assert!(entry.exists());

    let out = common::world_command(&w, &w.url)
        .arg("accept-root")
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("holding worktrees") && said.contains(", empty"),
        "{said}"
    );

    let after = w.once(Scope::Host, false).await;
    assert_eq!(after.observed.root_held, None, "{}", after.render());
    assert_eq!(w.row_state("w1").await.0, "removed", "{}", after.render());
    assert!(!entry.exists(), "{}", after.render());
    git(&w.repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&w.repo, &["gc", "-q", "--prune=now"]);
    assert!(git_ok(&w.repo, &["cat-file", "-e", &blob]));
}

async fn admin_entry_of_a_moved_worktree_is_not_pruned(db: Db) {
    let mut w = World::new(db).await;
    w.orphan_min_age = Duration::ZERO;
    let a = w.add_worktree("a");
    fs::write(a.join("notes.txt"), "moved along\n").unwrap();
    // Moved by hand, not with `git worktree move`: the entry still names
    // <root>/a, and <root>/b's `.git` file still names the entry.
    let b = w.root.join("b");
    fs::rename(&a, &b).unwrap();
    let before = files(&b);
    let entry = w.repo.join(".git/worktrees/a");

    let report = w.once(Scope::Host, false).await;
    assert!(entry.is_dir(), "admin entry kept: {}", report.render());
    assert!(
        report
            .results
            .iter()
            .all(|r| r.action.name() != "prune_admin_entry"),
        "{}",
        report.render()
    );
    assert!(
        report
            .pending
            .iter()
            .any(|p| p.target.to_string().ends_with("/.git/worktrees/a")
                && p.why.contains("moved worktree")),
        "{}",
        report.render()
    );
    // Whatever the preflight decided about b itself, nothing of it is lost.
    if b.exists() {
        assert_eq!(files(&b), before);
        assert!(git_ok(&b, &["status", "--porcelain"]));
    } else {
        let refs = git(
            &w.repo,
            &["for-each-ref", "--format=%(refname)", "refs/boo/archive/"],
        );
        assert!(
            !refs.is_empty(),
            "b removed without an archive: {}",
            report.render()
        );
    }
}

async fn removal_retires_exactly_the_worktree_and_the_reclaimer_frees_only_it(db: Db) {
    let w = World::new(db).await;
    fs::write(w.outside.join("keep.txt"), "outside\n").unwrap();
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let tip = git(&path, &["rev-parse", "HEAD"]);
    // An ignored build directory (not work), with a link out of the root.
    fs::create_dir_all(path.join("target/debug")).unwrap();
    fs::write(path.join("target/debug/out.bin"), "built\n").unwrap();
    symlink(w.outside.join("keep.txt"), path.join("target/link-out")).unwrap();
    let live = w.chat_worktree("s2", "c2", "w2", "open").await;
    fs::write(live.join("draft.txt"), "unsaved\n").unwrap();
    let contents = files(&path);
    let (live_before, outside_before) = (files(&live), files(&w.outside));

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert!(!worktree_listed(&w.repo, &path));
    // The rename moved exactly the worktree: one trash entry holding what
    // the directory held, byte for byte, its link still a link.
    let trash = w.root.join(".boo-trash");
    let (records, entries): (Vec<_>, Vec<_>) = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().path())
        .partition(|p| p.to_string_lossy().ends_with(".retired"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Beside it, the record of the directory retired under that name.
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].to_string_lossy(),
        format!("{}.retired", entries[0].display())
    );
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("w1."), "{name}");
    assert!(
        name["w1.".len()..].bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(files(&entries[0]), contents);
    assert!(fs::symlink_metadata(entries[0].join("target/link-out"))
        .unwrap()
        .file_type()
        .is_symlink());
    let detail = report.results[0].detail.to_value();
    assert_eq!(detail["trash"], entries[0].display().to_string());
    // The plan shows what waits.
    let plan = w.plan().await;
    assert_eq!(plan.observed.trash.entries, 1, "{}", plan.render());
    assert!(plan.observed.trash.bytes > 0);
    assert!(
        plan.render().contains("waiting for reclaim since"),
        "{}",
        plan.render()
    );

    let controller = w.controller();
    let swept = sweep(&controller).await;
    assert_eq!(swept.reclaimed, 1, "{swept:?}");
    assert_eq!(fs::read_dir(&trash).unwrap().count(), 0, "trash emptied");
    assert_eq!(files(&live), live_before, "the live worktree untouched");
    assert_eq!(files(&w.outside), outside_before, "outside untouched");
    assert_eq!(git(&w.repo, &["rev-parse", "boo/w1"]), tip, "branch kept");
    assert_eq!(w.row_state("w2").await.0, "active");
}

async fn the_trash_is_never_an_orphan(db: Db) {
    let mut w = World::new(db).await;
    w.orphan_min_age = Duration::ZERO;
    let trash = w.root.join(".boo-trash");
    // An entry the controller retired (with its record), a name of the
    // entry's shape it did not, and another name.
    let retired = w.root.join("w9");
    fs::create_dir_all(retired.join("src")).unwrap();
    fs::write(retired.join("src/a.txt"), "a\n").unwrap();
    let root = boo_reconciler::root::WorktreeRoot::prepare(&w.root).unwrap();
    let act::trash::Pin::Pinned(mut pinned) = act::trash::pin(&root, &retired).unwrap() else {
        panic!("not pinned")
    };
    pinned.stamp_tree().unwrap();
    let act::trash::Retired::Moved { entry } =
        act::trash::retire(&root, &pinned, std::time::SystemTime::now()).unwrap()
    else {
        panic!("not retired")
    };
    let planted = trash.join("w8.1764000000000000000");
    fs::create_dir_all(&planted).unwrap();
    fs::write(planted.join("live.txt"), "live\n").unwrap();
    let foreign = trash.join("notes");
    fs::create_dir_all(&foreign).unwrap();
    // A row naming the trash itself: refused, never removed as a worktree.
    w.session("s1", "archived").await;
    w.worktree_row("wt", "s1", &trash.display().to_string())
        .await;

    let plan = w.plan().await;
    assert_eq!(plan.observed.root_entries, 0, "{}", plan.render());
    assert_eq!(plan.observed.trash.entries, 1);
    assert_eq!(
        plan.observed.trash.foreign,
        vec![foreign.clone(), planted.clone()]
    );
    assert!(
        plan.planned.iter().all(|a| !matches!(
            a.kind,
            boo_reconciler::plan::ActionKind::RemoveWorktree { .. }
        )),
        "{}",
        plan.render()
    );
    let report = w.once(Scope::Host, false).await;
    assert!(
        report
            .results
            .iter()
            .all(|r| !matches!(r.outcome, Outcome::Done { .. })),
        "{}",
        report.render()
    );
    assert!(
        entry.join("src/a.txt").exists(),
        "the pass leaves the trash alone"
    );
    let controller = w.controller();
    let swept = sweep(&controller).await;
    assert_eq!(swept.reclaimed, 1);
    assert!(!entry.exists());
    assert!(
        foreign.is_dir(),
        "a name the controller did not make is left alone"
    );
    assert_eq!(
        fs::read(planted.join("live.txt")).unwrap(),
        b"live\n",
        "nor one of the right shape that it did not retire"
    );
}
