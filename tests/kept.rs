//! Worktrees kept at risk cost nothing while nothing changes: their verdict
//! is reused while its fingerprint holds, and a resolved worktree goes on
//! the first pass after the change. Real repositories, real worktrees, one
//! controller across passes (the verdicts live in its executor).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use boo_reconciler::act::RunOptions;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::model::{Force, Scope};
use boo_reconciler::report::{exit, KeptWorktree, PassReport};
use common::{git, git_command, Db, World};
use tokio_util::sync::CancellationToken;

both_databases!(
    a_kept_worktree_is_not_checked_again_while_nothing_changes,
    an_unchanged_fingerprint_never_lets_a_stale_verdict_remove_anything,
    what_a_kept_worktree_holds_is_measured_with_its_verdict,
);

/// A pass as the loop's timer runs it (`Trigger::Interval`). Not
/// `common::act_pass`, which runs one as `once` does (`Trigger::Command`),
/// on purpose: these tests are about the interval's passes, and a report
/// carries the trigger it ran for.
async fn pass(c: &Controller, scope: Scope, force: bool) -> PassReport {
    c.pass(
        scope,
        Mode::Act(RunOptions::new(Force::from(force))),
        Trigger::Interval,
        &CancellationToken::new(),
    )
    .await
}

async fn host(c: &Controller) -> PassReport {
    pass(c, Scope::Host, false).await
}

fn kept(r: &PassReport) -> &KeptWorktree {
    assert_eq!(r.exit_code(), exit::AT_RISK, "{}", r.render());
    assert_eq!(r.at_risk.len(), 1, "{}", r.render());
    &r.at_risk[0]
}

fn kinds(k: &KeptWorktree) -> Vec<&'static str> {
    k.reasons.iter().map(|r| r.kind()).collect()
}

/// An archived session's worktree, `w1`.
async fn world() -> (World, std::path::PathBuf) {
    let w = World::new(Db::Sqlite).await;
    world_on(w).await
}

async fn world_on(w: World) -> (World, std::path::PathBuf) {
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    (w, wt)
}

/// The first pass keeps the worktree for `kind`; `change` resolves it;
/// the next host pass (same controller, verdict cached) removes it.
async fn resolved_on_the_next_pass(w: &World, wt: &Path, kind: &str, change: impl FnOnce()) {
    let c = w.controller();
    let first = host(&c).await;
    assert!(kinds(kept(&first)).contains(&kind), "{}", first.render());
    let again = host(&c).await;
    assert!(kept(&again).verdict_reused, "{}", again.render());
    change();
    let after = host(&c).await;
    assert_eq!(after.exit_code(), exit::CONVERGED, "{}", after.render());
    assert!(!wt.exists(), "removed on the first pass after the change");
}

async fn a_kept_worktree_is_not_checked_again_while_nothing_changes(db: Db) {
    let (w, wt) = world_on(World::new(db).await).await;
    fs::write(wt.join("notes.txt"), "draft\n").unwrap();
    let c = w.controller();
    let first = host(&c).await;
    let k = kept(&first);
    assert!(
        !k.verdict_reused,
        "the first verdict comes from a preflight"
    );
    let audit = w.audit().await.len();
    for _ in 0..3 {
        let again = host(&c).await;
        let r = kept(&again);
        assert!(r.verdict_reused, "{}", again.render());
        assert_eq!(r.reasons, k.reasons, "reported with its last reasons");
        assert_eq!(r.checked_at, k.checked_at, "and when they were found");
    }
    assert_eq!(w.audit().await.len(), audit, "nothing recorded again");
    assert_eq!(w.row_state("w1").await.0, "at_risk");

    // A pass that names the chat, or a force, looks again.
    let named = pass(&c, Scope::Chat("c1".into()), false).await;
    assert!(!kept(&named).verdict_reused, "{}", named.render());
    // (Force removes it: untracked work is archived first.)
    let forced = pass(&c, Scope::Host, true).await;
    assert_eq!(forced.exit_code(), exit::CONVERGED, "{}", forced.render());
    assert!(!wt.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_recheck_interval_never_reuses_a_verdict() {
    let w = World::new(Db::Sqlite).await;
    let (w, wt) = world_on(w).await;
    fs::write(wt.join("notes.txt"), "draft\n").unwrap();
    let mut config = w.config();
    config.worktrees.recheck_interval = Duration::ZERO;
    let root = boo_reconciler::root::WorktreeRoot::prepare(&w.root).unwrap();
    let c = Controller::new(config, w.store.clone(), root);
    c.executor()
        .fence()
        .install(boo_reconciler::store::lock::HostLock::Assumed);
    for _ in 0..2 {
        let r = host(&c).await;
        assert!(!kept(&r).verdict_reused, "{}", r.render());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_untracked_file_resolves_it_on_the_next_pass() {
    let (w, wt) = world().await;
    fs::create_dir_all(wt.join("docs/drafts")).unwrap();
    fs::write(wt.join("docs/drafts/notes.txt"), "draft\n").unwrap();
    let file = wt.join("docs/drafts/notes.txt");
    resolved_on_the_next_pass(&w, &wt, "untracked", || fs::remove_file(&file).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_and_merging_into_the_base_resolves_it_on_the_next_pass() {
    let (w, wt) = world().await;
    fs::write(wt.join("feature.txt"), "done\n").unwrap();
    let (repo, dir) = (w.repo.clone(), wt.clone());
    let c = w.controller();
    let first = host(&c).await;
    assert_eq!(kinds(kept(&first)), ["untracked"]);
    git(&dir, &["add", "feature.txt"]);
    git(&dir, &["commit", "-q", "-m", "feature"]);
    let committed = host(&c).await;
    assert_eq!(
        kinds(kept(&committed)),
        ["unmerged_commits"],
        "a commit is a change: checked again"
    );
    assert!(!kept(&committed).verdict_reused);
    git(&repo, &["merge", "-q", "--ff-only", "boo/w1"]);
    let merged = host(&c).await;
    assert_eq!(merged.exit_code(), exit::CONVERGED, "{}", merged.render());
    assert!(!wt.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_env_file_resolves_it_on_the_next_pass() {
    let (w, wt) = world().await;
    fs::write(wt.join(".env"), "TOKEN=x\n").unwrap();
    let env = wt.join(".env");
    resolved_on_the_next_pass(&w, &wt, "precious_ignored", || {
        fs::remove_file(&env).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlocking_resolves_it_on_the_next_pass() {
    let (w, wt) = world().await;
    git(&w.repo, &["worktree", "lock", wt.to_str().unwrap()]);
    let (repo, dir) = (w.repo.clone(), wt.clone());
    resolved_on_the_next_pass(&w, &wt, "locked", || {
        git(&repo, &["worktree", "unlock", dir.to_str().unwrap()]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_the_rebase_resolves_it_on_the_next_pass() {
    let (w, wt) = world().await;
    // The worktree's commit and main's conflict on README.md; the rebase
    // stops on it.
    fs::write(wt.join("README.md"), "worktree's line\n").unwrap();
    git(&wt, &["commit", "-q", "-am", "worktree"]);
    fs::write(w.repo.join("README.md"), "main's line\n").unwrap();
    git(&w.repo, &["commit", "-q", "-am", "main"]);
    let out = git_command(&wt).args(["rebase", "main"]).output().unwrap();
    assert!(!out.status.success(), "the rebase stops on the conflict");
    let dir = wt.clone();
    resolved_on_the_next_pass(&w, &wt, "operation_in_progress", || {
        // Resolved as main has it: the worktree's commit becomes empty and
        // is dropped; the branch is main.
        git(&dir, &["checkout", "--ours", "README.md"]);
        git(&dir, &["add", "README.md"]);
        let out = git_command(&dir)
            .args(["-c", "core.editor=true", "rebase", "--continue"])
            .output()
            .unwrap();
        common::assert_succeeded(&out);
    })
    .await;
}

async fn an_unchanged_fingerprint_never_lets_a_stale_verdict_remove_anything(db: Db) {
    let (w, wt) = world_on(World::new(db).await).await;
    fs::write(wt.join("notes.txt"), "draft\n").unwrap();
    let c = w.controller();
    assert_eq!(kinds(kept(&host(&c).await)), ["untracked"]);
    // New work the fingerprint does not watch (an in-place append to a
    // tracked file changes no directory and is no finding yet): the stale
    // verdict is reused — and it keeps.
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(wt.join("README.md"))
        .unwrap()
        .write_all(b"more work\n")
        .unwrap();
    let stale = host(&c).await;
    assert!(kept(&stale).verdict_reused);
    assert_eq!(kinds(kept(&stale)), ["untracked"], "the last reasons");
    assert!(wt.exists());
    // The watched finding goes: a fresh preflight finds the new work and
    // keeps the worktree. A verdict that would delete is never reused.
    fs::remove_file(wt.join("notes.txt")).unwrap();
    let fresh = host(&c).await;
    assert!(!kept(&fresh).verdict_reused);
    assert_eq!(kinds(kept(&fresh)), ["unstaged"], "{}", fresh.render());
    assert!(wt.exists(), "the new work is kept");
    assert_eq!(
        fs::read_to_string(wt.join("README.md")).unwrap(),
        "hello\nmore work\n"
    );
}

/// What a kept worktree costs is in the report, `/status`'s document and
/// the metrics: measured with the verdict (allocated blocks, nothing
/// outside the worktree), and carried with it when it is reused.
async fn what_a_kept_worktree_holds_is_measured_with_its_verdict(db: Db) {
    let (w, wt) = world_on(World::new(db).await).await;
    // 4 MiB of untracked work, written (not sparse), so that it holds blocks.
    fs::write(wt.join("big.bin"), vec![7u8; 4 << 20]).unwrap();
    // Beside the worktree, under the root: not its to count.
    let beside = wt.parent().unwrap().join("not-a-worktree");
    fs::create_dir_all(&beside).unwrap();
    fs::write(beside.join("other.bin"), vec![1u8; 8 << 20]).unwrap();
    let c = w.controller();
    let first = host(&c).await;
    let bytes = kept(&first).bytes.expect("measured");
    assert!(
        (4 << 20..8 << 20).contains(&bytes),
        "the 4 MiB file and the checkout, not the 8 MiB beside it: {bytes}"
    );
    let space = first
        .observed
        .root_space
        .expect("the root's file system is read");
    assert!(
        space.free_bytes > 0 && space.free_bytes <= space.total_bytes,
        "{space:?}"
    );
    let again = host(&c).await;
    assert!(kept(&again).verdict_reused, "{}", again.render());
    assert_eq!(
        kept(&again).bytes,
        Some(bytes),
        "carried with the reused verdict"
    );
    let metrics = boo_reconciler::metrics::Metrics::new();
    metrics.observe_pass(&again);
    let text = metrics.render();
    assert!(
        text.contains(&format!("boo_reconciler_kept_bytes {bytes}")),
        "{text}"
    );
    let now = again.observed.root_space.expect("read again");
    assert!(
        text.contains(&format!(
            "boo_reconciler_root_free_bytes {}",
            now.free_bytes
        )) && text.contains(&format!(
            "boo_reconciler_root_size_bytes {}",
            now.total_bytes
        )),
        "{text}"
    );
}
