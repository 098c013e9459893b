//! Named states for the safety oracle (tests/oracle/mod.rs): the ones the
//! property test (tests/oracle.rs) found losing work, shrunk to their
//! steps, and the ones that cover the rest of its vocabulary.

#[path = "oracle/mod.rs"]
mod oracle;

use oracle::world::{run_case, Integrate, Link, Name, Op, Owner, RowSpec, SubStep};

fn archived() -> Vec<RowSpec> {
    vec![RowSpec::gone(Owner::SessionArchived)]
}

#[track_caller]
fn safe(n: usize, ops: &[Op], rows: &[RowSpec], force: bool) {
    if let Err(f) = run_case(n, ops, rows, force) {
        panic!("ops {ops:?}, rows {rows:?}, force {force}:\n{f:?}");
    }
}

#[track_caller]
fn safe_both(ops: &[Op]) {
    for force in [false, true] {
        safe(1, ops, &archived(), force);
    }
}

// States the current controller loses work in.

#[test]
fn cp_a_copy_with_edits_is_never_deleted() {
    // The original is live; the copy is an orphan with an edit of its own.
    // What the pass sees first varies: several worlds make it show.
    for _ in 0..4 {
        safe(
            1,
            &[Op::CopyWorktree { wt: 0 }],
            &[RowSpec::gone(Owner::Live), RowSpec::gone(Owner::NoRow)],
            false,
        );
    }
}

#[test]
fn gitignore_tab_untracked_file_survives_forced_removal() {
    safe(1, &[Op::GitignoreTab { wt: 0 }], &archived(), true);
}

// A fresh index (here written by `git stash`) is enough for an unforced
// pass to judge untracked files by rules other than git's: the same file
// without the stash is kept at risk.

/// `op` on worktree 0, then its tracked changes stashed.
fn then_stashed(op: Op) -> [Op; 2] {
    [
        op,
        Op::Stash {
            wt: 0,
            untracked: false,
        },
    ]
}

#[test]
fn symlinked_gitignore_untracked_file_survives_after_a_stash() {
    safe(
        1,
        &then_stashed(Op::GitignoreSymlink { wt: 0 }),
        &archived(),
        false,
    );
}

#[test]
fn gitignore_tab_untracked_file_survives_after_a_stash() {
    safe(
        1,
        &then_stashed(Op::GitignoreTab { wt: 0 }),
        &archived(),
        false,
    );
}

#[test]
fn untracked_dot_git_uppercase_dir_survives() {
    safe_both(&[Op::DotGitUpper { wt: 0 }]);
}

#[test]
fn symlinked_gitignore_untracked_file_survives_forced_removal() {
    safe(1, &[Op::GitignoreSymlink { wt: 0 }], &archived(), true);
}

#[test]
fn reflog_only_commit_survives_removal() {
    safe_both(&[Op::ReflogOnly { wt: 0 }]);
}

#[test]
fn worktree_ref_only_commit_survives_removal() {
    safe_both(&[Op::WorktreeRefOnly { wt: 0 }]);
}

#[test]
fn detached_stopped_rebase_commits_survive_forced_removal() {
    safe(
        1,
        &[Op::CommitDetached { wt: 0 }, Op::StoppedRebase { wt: 0 }],
        &archived(),
        true,
    );
}

#[test]
fn moved_worktree_is_never_removed() {
    // A race between pruning the stale admin entry and judging the moved
    // directory: several worlds make it show.
    for _ in 0..16 {
        safe(1, &[Op::MoveWorktree { wt: 0 }], &archived(), false);
    }
}

#[test]
fn a_live_row_beside_an_archived_row_keeps_the_worktree() {
    safe(
        1,
        &[],
        &[RowSpec {
            owner: Owner::Live,
            base_ref: true,
            duplicate: true,
        }],
        false,
    );
}

// States the current controller handles; they stay that way.

#[test]
fn odd_untracked_names_are_kept_or_archived() {
    let mut ops: Vec<Op> = Name::ALL
        .iter()
        .map(|&name| Op::Untracked { wt: 0, name })
        .collect();
    ops.push(Op::ShowUntrackedNo);
    safe_both(&ops);
}

#[test]
fn precious_env_files_are_kept_and_build_output_is_not_work() {
    safe_both(&[
        Op::DotEnv { wt: 0, deep: false },
        Op::DotEnv { wt: 0, deep: true },
        Op::BuildOutput { wt: 0 },
    ]);
}

#[test]
fn merged_branches_are_removed_without_loss() {
    for how in [Integrate::Merge, Integrate::RebaseMerge, Integrate::Squash] {
        safe(
            1,
            &[
                Op::CommitOnBranch { wt: 0 },
                Op::CommitOnBranch { wt: 0 },
                Op::IntoMain { wt: 0, how },
            ],
            &[RowSpec {
                owner: Owner::SessionDeleted,
                base_ref: true,
                duplicate: false,
            }],
            false,
        );
    }
}

#[test]
fn deleted_branch_and_detached_commits_are_kept_or_archived() {
    safe_both(&[
        Op::CommitOnBranch { wt: 0 },
        Op::DeleteBranch { wt: 0 },
        Op::CommitDetached { wt: 0 },
    ]);
}

#[test]
fn stash_staged_and_unstaged_changes_are_kept_or_archived() {
    safe_both(&[
        Op::Stash {
            wt: 0,
            untracked: true,
        },
        Op::AddStaged { wt: 0 },
        Op::EditTracked { wt: 0, file: 1 },
        Op::DeleteTracked { wt: 0, file: 2 },
    ]);
}

#[test]
fn modes_symlinks_and_type_changes_are_kept_or_archived() {
    safe_both(&[
        Op::ChmodX { wt: 0 },
        Op::Symlink {
            wt: 0,
            how: Link::UntrackedSymlink,
        },
        Op::Symlink {
            wt: 0,
            how: Link::FileToSymlink,
        },
        Op::Symlink {
            wt: 0,
            how: Link::FileToDir,
        },
    ]);
}

/// A nested repository beside the tracked files and one inside a tracked
/// directory, in worktree 0.
fn nested_repos() -> [Op; 2] {
    [
        Op::NestedRepo {
            wt: 0,
            in_tracked_dir: false,
        },
        Op::NestedRepo {
            wt: 0,
            in_tracked_dir: true,
        },
    ]
}

#[test]
fn nested_repositories_and_submodules_are_kept_or_archived() {
    safe_both(&nested_repos());
    safe_both(&[
        Op::Submodule {
            wt: 0,
            commit: true,
        },
        Op::SubmoduleCommit { wt: 0 },
    ]);
}

#[test]
fn hidden_edits_are_kept_or_archived() {
    safe_both(&[
        Op::HiddenEdit {
            wt: 0,
            skip_worktree: false,
        },
        Op::HiddenEdit {
            wt: 0,
            skip_worktree: true,
        },
    ]);
}

#[test]
fn locks_and_operations_in_progress_keep_the_worktree() {
    for op in [
        Op::Lock { wt: 0 },
        Op::BisectStart { wt: 0 },
        Op::ConflictedMerge { wt: 0 },
        Op::StoppedRebase { wt: 0 },
    ] {
        safe_both(&[op]);
    }
}

#[test]
fn broken_and_sealed_directories_are_kept() {
    safe_both(&[Op::DeleteDotGit { wt: 0 }]);
    safe_both(&[Op::Chmod000 { wt: 0 }]);
}

#[test]
fn index_only_content_and_ignore_edge_cases_are_kept_or_archived() {
    safe_both(&[
        Op::StagedOnly { wt: 0 },
        Op::IntentToAdd { wt: 0 },
        Op::EnvInIgnoredDir { wt: 0 },
        Op::NegatedIgnore { wt: 0 },
    ]);
}

#[test]
fn nothing_outside_the_root_is_touched_through_symlinks() {
    safe_both(&[Op::SymlinkOutside { wt: 0 }, Op::RootSymlink]);
}

#[test]
fn worktrees_sharing_a_detached_head_do_not_vouch_for_each_other() {
    for force in [false, true] {
        safe(
            2,
            &[Op::CommitDetached { wt: 0 }, Op::ShareHead { wt: 0 }],
            &archived(),
            force,
        );
    }
}

/// A world of one archived worktree after `ops`, judged after a forced
/// pass: no work lost, and each archive the binary restores as git's
/// recipe does. The world and its snapshot from before the pass.
fn forced_and_restored(ops: &[Op]) -> (oracle::world::World, oracle::Snapshot) {
    let mut w = oracle::world::World::new(1);
    for op in ops {
        w.apply(op);
    }
    let before = w.snapshot();
    w.write_rows(&archived());
    w.judge(true)
        .expect("no work lost, and restored as git's recipe restores it");
    (w, before)
}

/// Found by the oracle: a file added with intent to add (`git add -N`) and
/// force-archived comes back through `boo-reconciler restore` with its
/// bytes, as an intent-to-add entry again.
#[test]
fn an_intent_to_add_file_is_restored_by_the_binary() {
    forced_and_restored(&[Op::IntentToAdd { wt: 0 }]);
}

/// Found by the oracle: a worktree moved by hand whose `.git` was deleted
/// leaves a stale admin entry; its HEAD is kept under an archive ref as a
/// plain commit, which is history, not a stash-shaped state to restore.
#[test]
fn a_stale_entrys_head_kept_under_an_archive_ref_is_history() {
    for force in [false, true] {
        safe(
            1,
            &[
                Op::CommitDetached { wt: 0 },
                Op::EditTracked { wt: 0, file: 0 },
                Op::DeleteDotGit { wt: 0 },
                Op::MoveWorktree { wt: 0 },
            ],
            &[RowSpec {
                owner: Owner::NoRow,
                base_ref: false,
                duplicate: true,
            }],
            force,
        );
    }
}

/// Found by the oracle: beside a staged new file, git's recipe leaves an
/// intent-to-add file untracked; the binary restores it as intent-to-add,
/// with the same bytes.
#[test]
fn an_intent_to_add_file_beside_a_staged_one_is_restored_with_its_bytes() {
    forced_and_restored(&[Op::AddStaged { wt: 0 }, Op::IntentToAdd { wt: 0 }]);
}

/// A forced removal of a worktree holding nested repositories and a
/// submodule with commits only they had: `boo-reconciler restore` makes
/// each repository again with its HEAD commit and branches, HEAD on its
/// branch, and its files as git's recipe brings them back (a clean
/// submodule's: its HEAD's).
#[test]
fn nested_repositories_are_restored_by_the_binary_with_their_commits() {
    let ops = [
        nested_repos().as_slice(),
        &[
            Op::Submodule {
                wt: 0,
                commit: true,
            },
            Op::SubmoduleCommit { wt: 0 },
        ],
    ]
    .concat();
    let (w, before) = forced_and_restored(&ops);
    let kept: Vec<_> = before.dirs[0]
        .nested_repos
        .iter()
        .filter(|(_, s)| s.local_only)
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    let refs = oracle::archive_refs(std::slice::from_ref(&w.main));
    let archive = refs
        .iter()
        .find(|(_, r)| oracle::archive_name(r).is_some())
        .expect("the pass archived the worktree");
    let (_, nested) = w
        .restored_by_binary(&archive.1)
        .expect("restored")
        .expect("the world has a row");
    for (p, was) in kept {
        let back = nested.get(p).expect("made again");
        assert_eq!(back.state.head, was.head, "{p:?}");
        assert_eq!(back.state.branches, was.branches, "{p:?}");
        assert_eq!(back.state.on.as_deref(), Some("refs/heads/main"), "{p:?}");
    }
}

// Everything git keeps: admin entries, submodules initialised in linked
// worktrees, gc, whitespace, mounts, writers.

#[test]
fn steps_inside_a_submodule_of_a_linked_worktree_are_kept_or_archived() {
    for step in SubStep::ALL {
        if step == SubStep::HiddenEdit {
            // Kept unforced; forced, see the case below.
            safe(1, &[Op::InSubmodule { wt: 0, step }], &archived(), false);
            continue;
        }
        safe_both(&[Op::InSubmodule { wt: 0, step }]);
    }
}

/// Found by the oracle: content staged inside a submodule initialised in
/// the linked worktree, its file then deleted, is only in the submodule's
/// index, inside the admin entry; a forced removal (and a stale entry's
/// prune) keeps that index as a commit with the submodule's commits.
#[test]
fn a_submodules_staged_only_content_survives_forced_removal() {
    safe(
        1,
        &[Op::InSubmodule {
            wt: 0,
            step: SubStep::StagedOnly,
        }],
        &archived(),
        true,
    );
}

/// Found by the oracle: an `--assume-unchanged` edit inside a submodule
/// initialised in the linked worktree. The submodule looks clean to `git
/// status`, so a forced removal's archive took its files as its HEAD's and
/// the edit went with the worktree; a submodule whose index hides a file
/// now has its files archived whole.
#[test]
fn a_hidden_edit_inside_a_submodule_survives_forced_removal() {
    safe(
        1,
        &[Op::InSubmodule {
            wt: 0,
            step: SubStep::HiddenEdit,
        }],
        &archived(),
        true,
    );
}

/// What only the admin entry holds of a worktree someone else deleted or
/// moved out of the root: HEAD and reflog commits, a per-worktree ref,
/// staged content, a submodule's tag-only and stash-only commits and its
/// staged content.
fn gone_by_hand(moved_out: bool) -> Vec<Op> {
    vec![
        Op::CommitDetached { wt: 0 },
        Op::ReflogOnly { wt: 0 },
        Op::WorktreeRefOnly { wt: 0 },
        Op::StagedOnly { wt: 0 },
        Op::InSubmodule {
            wt: 0,
            step: SubStep::TagOnly,
        },
        Op::InSubmodule {
            wt: 0,
            step: SubStep::Stash,
        },
        Op::InSubmodule {
            wt: 0,
            step: SubStep::StagedOnly,
        },
        Op::WorktreeGone { wt: 0, moved_out },
    ]
}

#[test]
fn a_worktree_deleted_or_moved_out_by_someone_else_loses_nothing_its_entry_held() {
    // Two worktrees: a root left empty while rows name worktrees in it
    // holds the pass, and the stale entry is what is judged here.
    for moved_out in [false, true] {
        for owner in [Owner::NoRow, Owner::SessionArchived] {
            for force in [false, true] {
                safe(2, &gone_by_hand(moved_out), &[RowSpec::gone(owner)], force);
            }
        }
    }
}

/// Found by the oracle (its own mistake): a stale entry holding a
/// reflog-only commit and staged content is kept under a history ref
/// whose commit has three parents, the shape of an archive; the pass
/// reports it, and the oracle asked `boo-reconciler restore` for it. A
/// history ref is commits kept, not a state to restore.
#[test]
fn a_stale_entrys_history_ref_is_not_restored_as_an_archive() {
    safe(
        3,
        &[
            Op::ReflogOnly { wt: 2 },
            Op::AddStaged { wt: 2 },
            Op::WorktreeGone {
                wt: 2,
                moved_out: false,
            },
        ],
        &archived(),
        false,
    );
}

#[test]
fn reflog_expiry_and_gc_between_steps_lose_nothing() {
    safe_both(&[
        Op::ReflogOnly { wt: 0 },
        Op::InSubmodule {
            wt: 0,
            step: SubStep::ReflogOnly,
        },
        Op::GcExpire { wt: 0 },
        Op::CommitDetached { wt: 0 },
        Op::ReflogOnly { wt: 0 },
    ]);
}

#[test]
fn a_whitespace_only_variant_of_a_merged_patch_is_not_merged() {
    for detached in [false, true] {
        safe_both(&[Op::WhitespaceMerged { wt: 0, detached }]);
        safe_both(&[
            Op::WhitespaceMerged { wt: 0, detached },
            Op::DeleteBranch { wt: 0 },
        ]);
    }
}

#[test]
fn a_root_unmounted_for_one_pass_and_mounted_again_loses_nothing() {
    // Forced: the first pass, over the root mounted, archives and removes
    // the worktree before the unmount.
    safe(
        1,
        &[
            Op::EditTracked { wt: 0, file: 0 },
            Op::CommitDetached { wt: 0 },
            Op::InSubmodule {
                wt: 0,
                step: SubStep::Commit,
            },
            Op::Remount,
        ],
        &archived(),
        true,
    );
    safe_both(&[Op::Remount]);
}

/// Found by the oracle: each `once` (or a restarted `run`) prepared the
/// root afresh, so over a root unmounted it took the empty mount point for
/// the root: every worktree looked gone and every admin entry stale, and
/// once the root was mounted again the worktrees were directories git no
/// longer knew (no HEAD, no index, no per-worktree refs), a live session's
/// among them. The root's recorded mount now holds such a pass.
#[test]
fn a_root_unmounted_between_passes_keeps_every_worktree_linked() {
    safe(
        1,
        &[Op::EditTracked { wt: 0, file: 0 }, Op::Remount],
        &archived(),
        false,
    );
    safe(1, &[Op::Remount], &[RowSpec::gone(Owner::Live)], false);
}

/// A writer with the worktree as its working directory is in use; one
/// whose first write is before the pass makes it untracked work; one
/// writing directly in its top directory moves its ctime.
#[test]
fn a_writer_that_is_not_an_agent_loses_nothing_it_wrote_during_the_pass() {
    for inside in [true, false] {
        safe_both(&[Op::Writer {
            wt: 0,
            inside,
            delay: 0,
        }]);
    }
    safe_both(&[Op::Writer {
        wt: 0,
        inside: true,
        delay: 5,
    }]);
}

/// Found by the oracle: a writer that is not an agent, outside the
/// worktree and naming it nowhere the controller looks (arguments,
/// environment, working directory), starts writing into `src/` of a clean
/// worktree while the pass judges it: judged clean, it was removed, and
/// the files written between the judgement and the retirement went with
/// the trash. The tree stamp now sees them. Several worlds make the race
/// show.
#[test]
fn a_writer_starting_during_the_pass_loses_nothing() {
    for delay in 1..16 {
        safe_both(&[Op::Writer {
            wt: 0,
            inside: false,
            delay,
        }]);
    }
}
