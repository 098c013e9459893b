//! No pass of the controller loses work, over generated worktree states.
//!
//! The oracle (tests/oracle/mod.rs) knows nothing of the controller's code:
//! it asks git what is work, runs the binary once, and proves that every
//! byte and commit is still in place, committed, or in a restorable
//! archive. `BOO_ORACLE_CASES=5000` makes a long run.

#[path = "oracle/mod.rs"]
mod oracle;

use oracle::world::{run_case, Op, Owner, RowSpec, SubStep, World};
use oracle::{check, snapshot, Violation};
use proptest::prelude::*;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

fn config() -> ProptestConfig {
    let cases = std::env::var("BOO_ORACLE_CASES")
        .or_else(|_| std::env::var("PROPTEST_CASES"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    ProptestConfig {
        cases,
        // Named regression tests (tests/oracle_cases.rs) keep what was found.
        failure_persistence: None,
        // A case is a few hundred milliseconds of git: bound the shrinking.
        max_shrink_time: 300_000,
        ..ProptestConfig::default()
    }
}

/// Steps in states the controller is known to lose work in (comma
/// separated), each with an ignored named test in tests/oracle_cases.rs:
/// left out unless `BOO_ORACLE_WITHOUT` is set. None is known.
const KNOWN_LOSSES: &str = "";

/// `BOO_ORACLE_WITHOUT=ReflogOnly,CopyWorktree` leaves those steps out (and
/// `DuplicateRows` the second rows naming one path), to look past failures
/// already known.
fn left_out() -> Vec<String> {
    std::env::var("BOO_ORACLE_WITHOUT")
        .unwrap_or_else(|_| KNOWN_LOSSES.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    let left_out = left_out();
    (0..Op::KINDS, 0u8..3, any::<u8>())
        .prop_map(|(k, w, x)| Op::from_parts(k, w, x))
        .prop_filter("left out by BOO_ORACLE_WITHOUT", move |op| {
            !op.names().iter().any(|n| left_out.contains(n))
        })
}

fn row() -> impl Strategy<Value = RowSpec> {
    let duplicates = if left_out().iter().any(|s| s == "DuplicateRows") {
        0.0
    } else {
        0.15
    };
    (
        0..Owner::ALL.len(),
        any::<bool>(),
        proptest::bool::weighted(duplicates),
    )
        .prop_map(|(o, base_ref, duplicate)| RowSpec {
            owner: Owner::ALL[o],
            base_ref,
            duplicate,
        })
}

/// Cases run so far, shrinking steps included.
static CASES_RUN: AtomicUsize = AtomicUsize::new(0);

/// A long run prints nothing until it ends: a line on stderr every 100
/// cases (written past the test harness's capture) says how far it got.
fn progress() {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let n = CASES_RUN.fetch_add(1, Ordering::Relaxed) + 1;
    if n % 100 == 0 {
        let _ = writeln!(
            std::io::stderr(),
            "oracle: {n} cases run in {} s",
            start.elapsed().as_secs()
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_pass_loses_work(
        n in 1usize..=3,
        ops in proptest::collection::vec(op(), 0..8),
        rows in proptest::collection::vec(row(), 1..4),
        force in any::<bool>(),
    ) {
        progress();
        if let Err(f) = run_case(n, &ops, &rows, force) {
            prop_assert!(false, "{:?}", f);
        }
    }
}

/// The oracle can fail: an untracked file deleted by hand is reported.
#[test]
fn oracle_reports_an_untracked_file_deleted_by_hand() {
    let w = World::new(1);
    let f = w.root.join("w0/notes.txt");
    std::fs::write(&f, "only here\n").unwrap();
    let before = snapshot(&w.root, std::slice::from_ref(&w.main));
    std::fs::remove_file(&f).unwrap();
    let after = snapshot(&w.root, std::slice::from_ref(&w.main));
    let err = check(&before, &after, &[], &[]).expect_err("a lost file is reported");
    assert!(
        err.iter()
            .any(|v| matches!(v, Violation::WorkLost { path, .. }
            if path.as_os_str() == "notes.txt")),
        "{err:?}"
    );
}

/// The oracle can fail: a whole worktree deleted by hand, with a commit
/// only its branch had, is reported for the commit as well.
#[test]
fn oracle_reports_a_worktree_deleted_by_hand() {
    let mut w = World::new(1);
    w.apply(&Op::CommitDetached { wt: 0 });
    let before = snapshot(&w.root, std::slice::from_ref(&w.main));
    std::fs::remove_dir_all(w.root.join("w0")).unwrap();
    oracle::world::g(&w.main, &["worktree", "prune"]);
    let after = snapshot(&w.root, std::slice::from_ref(&w.main));
    let err = check(&before, &after, &[], &[]).expect_err("a lost commit is reported");
    assert!(
        err.iter()
            .any(|v| matches!(v, Violation::CommitLost { .. })),
        "{err:?}"
    );
}

/// The oracle can fail: a stale admin entry pruned by hand, with a
/// detached commit, staged content and a submodule's tag-only commit only
/// it held, is reported for each.
#[test]
fn oracle_reports_what_only_a_stale_admin_entry_held_pruned_by_hand() {
    let mut w = World::new(1);
    for op in [
        Op::CommitDetached { wt: 0 },
        Op::StagedOnly { wt: 0 },
        Op::InSubmodule {
            wt: 0,
            step: SubStep::TagOnly,
        },
        Op::WorktreeGone {
            wt: 0,
            moved_out: false,
        },
    ] {
        w.apply(&op);
    }
    let before = w.snapshot();
    let entry = before.admins.first().expect("the entry is seen");
    assert_eq!(entry.modules.len(), 1, "{entry:?}");
    oracle::world::g(&w.main, &["worktree", "prune"]);
    let after = w.snapshot();
    assert!(after.admins.is_empty(), "{:?}", after.admins);
    let err = check(&before, &after, &[], &w.stores()).expect_err("lost work is reported");
    let lost = |c: &String| {
        err.iter()
            .any(|v| matches!(v, Violation::CommitLost { commit, .. } if commit == c))
    };
    assert!(entry.commits.iter().any(lost), "{err:?}");
    assert!(entry.modules.values().flatten().any(lost), "{err:?}");
    assert!(
        err.iter()
            .any(|v| matches!(v, Violation::StagedLost { path, .. }
            if path.to_string_lossy().starts_with("staged-only-"))),
        "{err:?}"
    );
}

/// The oracle can fail: a committed file whose blob is gone from the
/// object store is not held by the commit naming it.
#[test]
fn oracle_reports_a_committed_file_whose_blob_is_missing() {
    let w = World::new(1);
    let wt = w.root.join("w0");
    std::fs::write(wt.join("notes.txt"), "only here\n").unwrap();
    let before = w.snapshot();
    assert!(oracle::world::g(&wt, &["add", "notes.txt"]));
    assert!(oracle::world::g(&wt, &["commit", "-q", "-m", "notes"]));
    std::fs::remove_file(wt.join("notes.txt")).unwrap();
    let held = w.snapshot();
    let after_commit = check(&before, &held, &[], &[]);
    assert!(
        after_commit.as_ref().map_or_else(
            |v| !v.iter().any(|v| matches!(v, Violation::WorkLost { .. })),
            |_| true
        ),
        "{after_commit:?}"
    );
    let blob = oracle::blob_id(b"only here\n");
    let loose = w
        .main
        .join(".git/objects")
        .join(&blob[..2])
        .join(&blob[2..]);
    std::fs::remove_file(&loose).expect("a loose blob");
    let after = w.snapshot();
    let err = check(&before, &after, &[], &[]).expect_err("the missing blob is reported");
    assert!(
        err.iter()
            .any(|v| matches!(v, Violation::WorkLost { path, .. }
            if path.as_os_str() == "notes.txt")),
        "{err:?}"
    );
}

/// The oracle can fail: a worktree whose admin entry is deleted from
/// under it is reported, though every byte of it is still there.
#[test]
fn oracle_reports_a_worktree_unlinked_from_its_admin_entry() {
    let w = World::new(1);
    let before = w.snapshot();
    std::fs::remove_dir_all(w.main.join(".git/worktrees/w0")).unwrap();
    let after = w.snapshot();
    let err = check(&before, &after, &[], &[]).expect_err("the unlinking is reported");
    assert!(
        err.iter()
            .any(|v| matches!(v, Violation::Unlinked { dir } if dir == "w0")),
        "{err:?}"
    );
}

/// A forced removal's archive comes back through `boo-reconciler restore`
/// exactly as git's own recipe brings it back, the work in it.
#[test]
fn the_binarys_restore_brings_back_what_gits_recipe_does() {
    let mut w = World::new(1);
    std::fs::write(w.root.join("w0/notes.txt"), "only here\n").unwrap();
    std::fs::write(w.root.join("w0/.env"), "TOKEN=1\n").unwrap();
    w.write_rows(&[RowSpec::gone(Owner::SessionArchived)]);
    w.judge(true).expect("no work lost");
    let refs = oracle::archive_refs(std::slice::from_ref(&w.main));
    assert_eq!(refs.len(), 1, "{refs:?}");
    let reference = &refs[0].1;
    let (got, nested) = w
        .restored_by_binary(reference)
        .expect("restored")
        .expect("the world has a row");
    assert!(nested.is_empty(), "{nested:?}");
    let recipe = oracle::restore(&w.main, reference).expect("the recipe restores it");
    assert_eq!(got, recipe);
    assert!(
        got.files.keys().any(|p| p.as_os_str() == "notes.txt"),
        "{got:?}"
    );
    assert!(got.files.keys().any(|p| p.as_os_str() == ".env"), "{got:?}");
}

/// The oracle can fail: a nested repository whose kept commits are gone
/// when the binary restores its worktree is reported as not made again.
#[test]
fn oracle_reports_a_nested_repository_the_restore_did_not_make_again() {
    let mut w = World::new(1);
    w.apply(&Op::NestedRepo {
        wt: 0,
        in_tracked_dir: false,
    });
    w.write_rows(&[RowSpec::gone(Owner::SessionArchived)]);
    let before = w.snapshot();
    let (refs, _) = w.pass(true);
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(w.restore_differs(&refs[0], &before), None);
    let kept = oracle::git_ok(
        &w.main,
        &[
            "for-each-ref",
            "--format=%(refname)",
            &format!("{}-nested/", refs[0]),
        ],
    )
    .unwrap();
    for r in String::from_utf8_lossy(&kept).lines() {
        oracle::world::g(&w.main, &["update-ref", "-d", r]);
    }
    let differs = w
        .restore_differs(&refs[0], &before)
        .expect("a nested repository not made again is reported");
    assert!(differs.contains("was not made again"), "{differs}");
}

/// Nothing touched: nothing reported, and looking changed nothing.
#[test]
fn oracle_passes_when_everything_is_left_alone() {
    let mut w = World::new(2);
    for op in [
        Op::Untracked {
            wt: 0,
            name: oracle::world::Name::Newline,
        },
        Op::DotEnv { wt: 0, deep: true },
        Op::NestedRepo {
            wt: 1,
            in_tracked_dir: true,
        },
        Op::CopyWorktree { wt: 1 },
    ] {
        w.apply(&op);
    }
    let before = snapshot(&w.root, std::slice::from_ref(&w.main));
    let after = snapshot(&w.root, std::slice::from_ref(&w.main));
    check(&before, &after, &[], &[]).expect("nothing was lost");
}

/// A live session's worktrees are left alone by a real pass.
#[test]
fn live_worktrees_pass_the_oracle() {
    run_case(
        2,
        &[Op::Untracked {
            wt: 0,
            name: oracle::world::Name::Space,
        }],
        &[RowSpec::gone(Owner::Live)],
        false,
    )
    .unwrap();
}
