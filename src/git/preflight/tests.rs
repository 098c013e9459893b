use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::git::scenes::{commit_file, commit_on_a_deleted_branch, conflicted_merge, init_repo};
use crate::git::testutil::{precious, set_exec, write, Fixture};
use crate::risk::SAMPLE;

/// What every preflight of these tests asks, unless it says otherwise
/// (`..request(wt, &globs)`): the worktree `wt` on branch `b` from
/// `main`, every reason, each reach asked of `git rev-list`.
fn request<'a>(wt: &'a Path, globs: &'a GlobSet) -> Preflight<'a> {
    Preflight {
        worktree: wt,
        branch: Some("b"),
        base_ref: Some("main"),
        repo_path: None,
        precious: globs,
        timeout: crate::git::cli::DEFAULT_TIMEOUT,
        depth: Depth::All,
        refs: None,
    }
}

/// The full preflight, after checking on every state these tests build
/// that the one that stops at the first finding agrees with it (nothing
/// found by both, or a non-empty subset of its reasons' kinds), and that
/// the one that reads the surviving refs from a [`RefsCache`] finds
/// exactly what `git rev-list` finds.
fn run(wt: &Path, branch: Option<&str>, base: Option<&str>) -> Vec<AtRisk> {
    let globs = precious();
    let cache = RefsCache::default();
    let at = |depth, refs| {
        preflight(&Preflight {
            branch,
            base_ref: base,
            depth,
            refs,
            ..request(wt, &globs)
        })
    };
    let first = at(Depth::First, None);
    let all = at(Depth::All, None);
    assert_eq!(
        at(Depth::All, Some(&cache)),
        all,
        "with the refs listed once"
    );
    assert_eq!(
        first.is_empty(),
        all.is_empty(),
        "the first finding {first:?} disagrees with all of them {all:?}"
    );
    for r in &first {
        assert!(
            kinds(&all).contains(&r.kind()),
            "{r:?} found first is not among {all:?}"
        );
    }
    all
}

/// Checks whether the full preflight of `wt` with `cache` runs `git
/// rev-list`, as `expected` says.
fn assert_rev_list(wt: &Path, cache: &RefsCache, expected: bool) {
    let globs = precious();
    let (_, cost) = preflight_costed(&Preflight {
        refs: Some(cache),
        ..request(wt, &globs)
    });
    let ran: Vec<String> = cost.git.into_iter().map(|(name, _)| name).collect();
    assert_eq!(ran.contains(&"rev-list".into()), expected, "{ran:?}");
}

/// The preflight of a worktree made by [`Fixture::worktree`] with
/// branch `b` and base `main`.
fn check(wt: &Path) -> Vec<AtRisk> {
    run(wt, Some("b"), Some("main"))
}

fn kinds(r: &[AtRisk]) -> Vec<&'static str> {
    r.iter().map(AtRisk::kind).collect()
}

fn only(r: Vec<AtRisk>) -> AtRisk {
    assert_eq!(r.len(), 1, "expected exactly one reason, got {r:?}");
    r.into_iter().next().unwrap()
}

/// The one reason [`check`] finds in `wt`.
fn the_reason(wt: &Path) -> AtRisk {
    only(check(wt))
}

/// A fresh fixture and its worktree `w` on branch `b`.
fn worktree() -> (Fixture, PathBuf) {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    (f, wt)
}

/// The reason of `kind` that lists `paths`, every one it counts.
fn listing(kind: &str, paths: &[&str]) -> AtRisk {
    let count = paths.len();
    let paths = paths.iter().map(|p| p.to_string()).collect();
    match kind {
        "staged" => AtRisk::Staged { count, paths },
        "unstaged" => AtRisk::Unstaged { count, paths },
        "untracked" => AtRisk::Untracked { count, paths },
        "conflicts" => AtRisk::Conflicts { count, paths },
        "hidden_changes" => AtRisk::HiddenChanges { count, paths },
        "precious_ignored" => AtRisk::PreciousIgnored { count, paths },
        _ => panic!("a {kind} reason lists no paths"),
    }
}

/// The reason `commits` (newest first) give, with HEAD at `head`.
fn unmerged(head: &str, commits: &[&str]) -> AtRisk {
    AtRisk::UnmergedCommits {
        count: commits.len(),
        head: head.to_string(),
        commits: commits.iter().map(|c| c.to_string()).collect(),
    }
}

fn in_progress(operation: &str) -> AtRisk {
    AtRisk::OperationInProgress {
        operation: operation.to_string(),
    }
}

fn nested_at(path: &str) -> AtRisk {
    AtRisk::NestedRepository {
        path: path.to_string(),
    }
}

#[test]
fn a_head_another_ref_names_needs_no_rev_list() {
    let (f, wt) = worktree();
    let cache = RefsCache::default();
    assert_eq!(check(&wt), vec![]);
    assert_rev_list(&wt, &cache, false);
    // A lightweight tag at a commit of the branch names it too.
    let c = commit_file(&f, &wt, "new.txt", "x\n", "tagged");
    f.git(&f.repo, &["tag", "t1", &c]);
    assert_eq!(check(&wt), vec![]);
    assert_rev_list(&wt, &cache, false);
}

#[test]
fn a_head_only_its_own_branch_or_a_per_worktree_ref_names_is_left_to_rev_list() {
    let (f, wt) = worktree();
    let cache = RefsCache::default();
    let c = commit_file(&f, &wt, "new.txt", "x\n", "only on b");
    assert_rev_list(&wt, &cache, true);
    assert_eq!(the_reason(&wt), unmerged(&c, &[&c]));
    // A per-worktree ref vanishes with the worktree: it names the
    // commit, but does not keep it.
    f.git(&wt, &["update-ref", "refs/worktree/keep", &c]);
    f.git(&wt, &["checkout", "-q", "--detach"]);
    assert_rev_list(&wt, &cache, true);
    assert_eq!(kinds(&check(&wt)), vec!["unmerged_commits"]);
    // An annotated tag names a tag object, not the commit: rev-list
    // decides, and the tag keeps it.
    f.git(&f.repo, &["tag", "-a", "-m", "v1", "v1", &c]);
    assert_rev_list(&wt, &cache, true);
    assert_eq!(check(&wt), vec![]);
}

#[test]
fn clean_worktree_has_no_reasons() {
    let (f, wt) = worktree();
    assert_eq!(check(&wt), vec![]);
    // Without a base ref too: the branch tip is main's tip.
    assert_eq!(run(&wt, None, None), vec![]);
    // A merged branch is reachable from main.
    commit_file(&f, &wt, "new.txt", "x\n", "add new");
    f.git(&f.repo, &["merge", "-q", "--no-ff", "-m", "merge b", "b"]);
    assert_eq!(check(&wt), vec![]);
}

#[test]
fn staged_change() {
    let (f, wt) = worktree();
    write(&wt.join("README"), "changed\n");
    write(&wt.join("added.txt"), "new\n");
    f.git(&wt, &["add", "README", "added.txt"]);
    let expected = listing("staged", &["README", "added.txt"]);
    assert_eq!(the_reason(&wt), expected);
}

#[test]
fn unstaged_change() {
    let (_f, wt) = worktree();
    write(&wt.join("README"), "changed\n");
    fs::remove_file(wt.join("lib.txt")).unwrap();
    let expected = listing("unstaged", &["README", "lib.txt"]);
    assert_eq!(the_reason(&wt), expected);
}

#[test]
fn exec_bit_change_is_unstaged() {
    let (_f, wt) = worktree();
    set_exec(&wt.join("README"));
    assert_eq!(the_reason(&wt), listing("unstaged", &["README"]));
}

#[test]
fn untracked_files_are_listed_inside_untracked_directories() {
    let (_f, wt) = worktree();
    write(&wt.join("notes.md"), "x\n");
    write(&wt.join("new/deep/file.txt"), "x\n");
    symlink("README", wt.join("link")).unwrap();
    let expected = listing("untracked", &["link", "new/deep/file.txt", "notes.md"]);
    assert_eq!(the_reason(&wt), expected);
}

#[test]
fn untracked_paths_are_sampled() {
    let (_f, wt) = worktree();
    for i in 0..25 {
        write(&wt.join(format!("gen/f{i:02}.txt")), "x\n");
    }
    match the_reason(&wt) {
        AtRisk::Untracked { count, paths } => {
            assert_eq!(count, 25);
            assert_eq!(paths.len(), SAMPLE);
            assert_eq!(paths[0], "gen/f00.txt");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn conflicts_and_merge_in_progress() {
    let (f, wt) = worktree();
    conflicted_merge(&f, &wt);
    let r = check(&wt);
    assert!(r.contains(&listing("conflicts", &["README"])), "{r:?}");
    assert!(r.contains(&in_progress("merge")));
    // Commit "ours" is on branch b only.
    assert!(kinds(&r).contains(&"unmerged_commits"), "{r:?}");
}

#[test]
fn branch_commits_reachable_from_nothing_else() {
    let (f, wt) = worktree();
    let c1 = commit_file(&f, &wt, "feature.txt", "feature\n", "feature 1");
    let c2 = commit_file(&f, &wt, "feature.txt", "feature 2\n", "feature 2");
    assert_eq!(the_reason(&wt), unmerged(&c2, &[&c2, &c1]));
    // Another branch keeps them: not at risk.
    f.git(&f.repo, &["branch", "keep", "b"]);
    assert_eq!(check(&wt), vec![]);
    f.git(&f.repo, &["branch", "-D", "keep"]);
    // So does a tag, a remote ref, an archive ref.
    for r in [
        "refs/tags/t",
        "refs/remotes/origin/b",
        "refs/boo/archive/x/1",
    ] {
        f.git(&f.repo, &["update-ref", r, &c2]);
        assert_eq!(check(&wt), vec![], "{r}");
        f.git(&f.repo, &["update-ref", "-d", r]);
    }
    assert_eq!(kinds(&check(&wt)), vec!["unmerged_commits"]);
}

#[test]
fn detached_head_commits_are_unmerged() {
    let (f, wt) = worktree();
    f.git(&wt, &["checkout", "-q", "--detach"]);
    let c = commit_file(&f, &wt, "detached.txt", "x\n", "on detached head");
    let expected = unmerged(&c, &[&c]);
    assert_eq!(the_reason(&wt), expected);
    assert_eq!(only(run(&wt, None, None)), expected);
    // Another worktree detached at the same commit does not count.
    f.detached("other", &c);
    assert_eq!(the_reason(&wt), expected);
}

#[test]
fn rebase_merged_branch_is_not_at_risk() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    commit_file(&f, &wt, "b.txt", "b\n", "b");
    // main moves on, then takes the branch's commits rebased on top.
    commit_file(&f, &f.repo, "other.txt", "o\n", "other");
    f.git(&f.repo, &["cherry-pick", "main..b"]);
    assert_ne!(f.rev(&f.repo, "main^"), f.rev(&wt, "HEAD"));
    assert_eq!(check(&wt), vec![]);
    // Without the base ref, the main repository's HEAD branch is the
    // base.
    assert_eq!(run(&wt, Some("b"), None), vec![]);
    // With that HEAD elsewhere and no remote, nothing says they were
    // merged.
    f.git(&f.repo, &["checkout", "-q", "--detach"]);
    assert_eq!(kinds(&run(&wt, Some("b"), None)), vec!["unmerged_commits"]);
}

#[test]
fn squash_merged_branch_is_not_at_risk() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    commit_file(&f, &wt, "lib.txt", "one\ntwo\nTHREE\nfour\nfive\n", "b");
    commit_file(&f, &f.repo, "other.txt", "o\n", "other");
    f.git(&f.repo, &["merge", "-q", "--squash", "b"]);
    f.git(&f.repo, &["commit", "-q", "-m", "squashed b"]);
    assert_eq!(check(&wt), vec![]);
    // A commit after the squash is work again.
    let c = commit_file(&f, &wt, "c.txt", "c\n", "c");
    match the_reason(&wt) {
        AtRisk::UnmergedCommits { commits, .. } => assert_eq!(commits[0], c),
        other => panic!("{other:?}"),
    }
}

#[test]
fn partly_merged_branch_lists_only_the_rest() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    let b = commit_file(&f, &wt, "b.txt", "b\n", "b");
    f.git(&f.repo, &["cherry-pick", "b~1"]);
    assert_eq!(the_reason(&wt), unmerged(&b, &[&b]));
}

#[test]
fn rebase_stopped_on_a_clean_tree() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    f.git(&f.repo, &["branch", "keep", "b"]); // the commit is safe; only the rebase counts
    let out = f
        .cmd(&wt)
        .env("GIT_SEQUENCE_EDITOR", "sed -i -e 1s/^pick/edit/")
        .args(["rebase", "-q", "-i", "main"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(the_reason(&wt), in_progress("rebase"));
}

#[test]
fn bisect_in_progress() {
    let (f, wt) = worktree();
    f.git(&wt, &["bisect", "start"]);
    assert_eq!(the_reason(&wt), in_progress("bisect"));
}

#[test]
fn cherry_pick_and_revert_in_progress() {
    let (f, wt) = worktree();
    commit_file(&f, &f.repo, "README", "theirs\n", "theirs");
    commit_file(&f, &wt, "README", "ours\n", "ours");
    f.git(&f.repo, &["branch", "keep", "b"]);
    assert!(!f.try_git(&wt, &["cherry-pick", "main"]).status.success());
    let r = check(&wt);
    assert!(r.contains(&in_progress("cherry-pick")), "{r:?}");
    f.git(&wt, &["cherry-pick", "--abort"]);
    assert_eq!(check(&wt), vec![]);
}

#[test]
fn revert_in_progress() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "README", "v2\n", "v2");
    commit_file(&f, &wt, "README", "v3\n", "v3");
    f.git(&f.repo, &["branch", "keep", "b"]);
    // Reverting v2 conflicts with v3.
    let revert = f.try_git(&wt, &["revert", "--no-edit", "HEAD~1"]);
    assert!(!revert.status.success());
    let r = check(&wt);
    assert!(r.contains(&in_progress("revert")), "{r:?}");
}

#[test]
fn locked_worktree_with_reason() {
    let (f, wt) = worktree();
    let path = wt.to_str().unwrap();
    let why = "on a USB stick";
    f.git(&f.repo, &["worktree", "lock", "--reason", why, path]);
    let reason = Some(why.to_string());
    assert_eq!(the_reason(&wt), AtRisk::Locked { reason });
    f.git(&f.repo, &["worktree", "unlock", path]);
    f.git(&f.repo, &["worktree", "lock", path]);
    assert_eq!(the_reason(&wt), AtRisk::Locked { reason: None });
}

/// A repository to use as a submodule, and a worktree of the fixture
/// whose branch `b` records it at `sub`.
fn with_submodule(f: &Fixture) -> PathBuf {
    let upstream = f.tmp.path().join("subrepo");
    init_repo(f, &upstream);
    commit_file(f, &upstream, "s.txt", "s\n", "sub initial");
    f.git(
        &f.repo,
        &["submodule", "add", "-q", upstream.to_str().unwrap(), "sub"],
    );
    f.commit_all(&f.repo, "add submodule");
    let wt = f.worktree("w", "b");
    f.git(&wt, &["submodule", "update", "-q", "--init"]);
    wt
}

/// The one [`AtRisk::Submodule`] reason of `r`, which must be for
/// `sub`: its detail.
fn submodule_detail(r: &[AtRisk]) -> &str {
    match r.iter().find(|r| matches!(r, AtRisk::Submodule { .. })) {
        Some(AtRisk::Submodule { path, detail }) => {
            assert_eq!(path, "sub");
            detail
        }
        _ => panic!("{r:?}"),
    }
}

#[test]
fn submodule_with_uncommitted_changes() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("sub/s.txt"), "changed\n");
    write(&wt.join("sub/new.txt"), "new\n");
    let r = vec![the_reason(&wt)];
    let detail = submodule_detail(&r);
    assert!(detail.contains("modified content"), "{detail}");
    assert!(detail.contains("untracked content"), "{detail}");
}

#[test]
fn submodule_with_unpushed_commits() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    let sub = wt.join("sub");
    f.git(&sub, &["checkout", "-q", "-b", "work"]);
    commit_file(&f, &sub, "s.txt", "local\n", "local only");
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(
        detail.contains("1 commit(s) on no remote-tracking ref"),
        "{detail}"
    );
}

/// The submodule's git directory (inside the worktree's admin entry).
fn sub_gitdir(f: &Fixture, sub: &Path) -> PathBuf {
    PathBuf::from(f.git(sub, &["rev-parse", "--absolute-git-dir"]))
}

/// A submodule is judged like the worktree: an ignored precious file in
/// it keeps the worktree, with a reason naming the submodule and the file
/// (git's status of the superproject shows nothing).
#[test]
fn a_precious_ignored_file_in_a_submodule_keeps_the_worktree() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    let sub = wt.join("sub");
    write(&sub_gitdir(&f, &sub).join("info/exclude"), ".env\nbuild/\n");
    write(&sub.join("build/out.o"), "regenerable\n");
    assert_eq!(check(&wt), vec![], "build output is not work");
    write(&sub.join(".env"), "SECRET=1\n");
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(
        detail.contains("precious") && detail.contains(".env"),
        "{detail}"
    );
}

/// A nested repository in a submodule's ignored directory, and an
/// assume-unchanged edit inside a submodule: each keeps the worktree.
#[test]
fn a_nested_repository_or_a_hidden_edit_in_a_submodule_keeps_the_worktree() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    let sub = wt.join("sub");
    write(&sub_gitdir(&f, &sub).join("info/exclude"), "deps/\n");
    let nested = sub.join("deps/lib");
    init_repo(&f, &nested);
    commit_file(&f, &nested, "x.txt", "x\n", "nested work");
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(detail.contains("nested repository at deps/lib"), "{detail}");
    fs::remove_dir_all(sub.join("deps")).unwrap();
    assert_eq!(check(&wt), vec![]);

    f.git(&sub, &["update-index", "--assume-unchanged", "s.txt"]);
    write(&sub.join("s.txt"), "hidden edit\n");
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(detail.contains("s.txt"), "{detail}");
    assert!(detail.contains("assume-unchanged"), "{detail}");
}

/// Commits only the submodule's git directory holds, reached by a tag or
/// a stash entry rather than a branch: they go with the admin entry, so
/// they keep the worktree.
#[test]
fn a_submodules_tag_only_commit_or_stash_keeps_the_worktree() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    let sub = wt.join("sub");
    f.git(&sub, &["checkout", "-q", "--detach"]);
    commit_file(&f, &sub, "t.txt", "tagged\n", "tagged only");
    f.git(&sub, &["tag", "kept"]);
    f.git(&sub, &["checkout", "-q", "HEAD~1"]);
    let r = check(&wt);
    assert!(
        submodule_detail(&r).contains("1 commit(s) on no remote-tracking ref"),
        "{r:?}"
    );
    f.git(&sub, &["tag", "-d", "kept"]);
    assert_eq!(check(&wt), vec![]);

    write(&sub.join("s.txt"), "stashed\n");
    f.git(&sub, &["stash", "-q"]);
    write(&sub.join("s.txt"), "stashed earlier\n");
    f.git(&sub, &["stash", "-q"]);
    // The newer entry dropped: the older one, still in the stash's
    // reflog, is work too.
    f.git(&sub, &["stash", "drop", "-q", "stash@{0}"]);
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(
        detail.contains("commit(s) on no remote-tracking ref"),
        "{detail}"
    );
}

/// A submodule of a submodule is judged the same way, named by its path
/// inside the outer one.
#[test]
fn a_submodule_inside_a_submodule_is_judged_too() {
    let f = Fixture::new();
    let inner = f.tmp.path().join("inner");
    init_repo(&f, &inner);
    commit_file(&f, &inner, "i.txt", "i\n", "inner initial");
    let outer = f.tmp.path().join("subrepo");
    init_repo(&f, &outer);
    commit_file(&f, &outer, "s.txt", "s\n", "outer initial");
    f.git(
        &outer,
        &["submodule", "add", "-q", inner.to_str().unwrap(), "in"],
    );
    f.commit_all(&outer, "add inner");
    f.git(
        &f.repo,
        &["submodule", "add", "-q", outer.to_str().unwrap(), "sub"],
    );
    f.commit_all(&f.repo, "add submodule");
    let wt = f.worktree("w", "b");
    f.git(&wt, &["submodule", "update", "-q", "--init", "--recursive"]);
    assert_eq!(check(&wt), vec![]);
    let deep = wt.join("sub/in");
    write(&sub_gitdir(&f, &deep).join("info/exclude"), ".env\n");
    write(&deep.join(".env"), "SECRET=2\n");
    let r = check(&wt);
    let detail = submodule_detail(&r);
    assert!(detail.contains("submodule in:"), "{detail}");
    assert!(detail.contains(".env"), "{detail}");
}

#[test]
fn staged_submodule_pointer_is_staged() {
    let f = Fixture::new();
    let wt = with_submodule(&f);
    let upstream = f.tmp.path().join("subrepo");
    commit_file(&f, &upstream, "s.txt", "upstream 2\n", "sub 2");
    let sub = wt.join("sub");
    f.git(&sub, &["fetch", "-q", "origin"]);
    f.git(&sub, &["checkout", "-q", "--detach", "origin/main"]);
    f.git(&wt, &["add", "sub"]);
    assert_eq!(the_reason(&wt), listing("staged", &["sub"]));
}

#[test]
fn nested_repository() {
    let (f, wt) = worktree();
    let nested = wt.join("vendor/lib");
    init_repo(&f, &nested);
    commit_file(&f, &nested, "x.txt", "x\n", "nested");
    assert_eq!(the_reason(&wt), nested_at("vendor/lib"));
    // Also inside an ignored directory.
    fs::rename(wt.join("vendor"), wt.join("node_modules")).unwrap();
    assert_eq!(the_reason(&wt), nested_at("node_modules/lib"));
}

#[test]
fn assume_unchanged_change_is_hidden_change() {
    let (f, wt) = worktree();
    f.git(&wt, &["update-index", "--assume-unchanged", "README"]);
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("README"), "secretly changed\n");
    assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(the_reason(&wt), listing("hidden_changes", &["README"]));
}

#[test]
fn skip_worktree_absent_is_not_a_change_but_present_and_different_is() {
    let (f, wt) = worktree();
    f.git(&wt, &["update-index", "--skip-worktree", "lib.txt"]);
    fs::remove_file(wt.join("lib.txt")).unwrap();
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("lib.txt"), "one\ntwo\nthree\nfour\nfive\n");
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("lib.txt"), "different\n");
    assert_eq!(f.git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(the_reason(&wt), listing("hidden_changes", &["lib.txt"]));
}

#[test]
fn deleted_branch() {
    let (f, wt) = worktree();
    let c = commit_on_a_deleted_branch(&f, &wt);
    let deleted = AtRisk::BranchDeleted { branch: "b".into() };
    assert_eq!(check(&wt), vec![deleted, unmerged(&c, &[&c])]);
    // Staged changes are measured against the branch's last commit.
    write(&wt.join("a.txt"), "a2\n");
    f.git(&wt, &["add", "a.txt"]);
    assert_eq!(check(&wt)[2], listing("staged", &["a.txt"]));
}

/// A branch fast-forwarded into main and then deleted: every commit it
/// had, main reaches; nothing is at risk.
#[test]
fn a_deleted_branch_whose_commits_main_has_is_not_at_risk() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    f.git(&f.repo, &["merge", "-q", "--ff-only", "b"]);
    f.git(&f.repo, &["update-ref", "-d", "refs/heads/b"]);
    assert_eq!(check(&wt), vec![]);
}

/// A worktree whose branch `b` and `main` each have a commit of their
/// own, `b` about to merge `main`.
fn diverged() -> (Fixture, PathBuf) {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "a.txt", "a\n", "a");
    commit_file(&f, &f.repo, "m.txt", "m\n", "m");
    (f, wt)
}

#[test]
fn clean_merge_commits_are_skipped_but_evil_merges_are_work() {
    let (f, wt) = diverged();
    f.git(&wt, &["merge", "-q", "--no-edit", "main"]);
    // main takes commit a by cherry-pick (a rebase-merge).
    f.git(&f.repo, &["cherry-pick", "b~1"]);
    assert_eq!(check(&wt), vec![]);

    // An "evil" merge: the merge commit carries an extra edit.
    let (f, wt) = diverged();
    f.git(&wt, &["merge", "-q", "--no-commit", "main"]);
    write(&wt.join("evil.txt"), "only in the merge\n");
    f.git(&wt, &["add", "evil.txt"]);
    f.git(&wt, &["commit", "-q", "--no-edit"]);
    let merge = f.rev(&wt, "HEAD");
    f.git(&f.repo, &["cherry-pick", "b^1"]);
    assert_eq!(the_reason(&wt), unmerged(&merge, &[&merge]));
}

#[test]
fn ignored_build_output_is_not_work_but_precious_files_are() {
    let (_f, wt) = worktree();
    write(&wt.join("target/debug/app"), "binary\n");
    write(&wt.join("node_modules/x/index.js"), "x\n");
    assert_eq!(check(&wt), vec![]);
    write(&wt.join(".env"), "SECRET=1\n");
    write(&wt.join("sub/.env.local"), "SECRET=2\n");
    write(&wt.join("target/.env"), "SECRET=3\n");
    // An ignored directory matching a glob is precious as a whole.
    write(&wt.join(".env.d/db"), "SECRET=4\n");
    let precious = [".env", ".env.d/db", "sub/.env.local", "target/.env"];
    assert_eq!(the_reason(&wt), listing("precious_ignored", &precious));
}

/// A virtualenv named like a precious file (`python -m venv .env`) is
/// regenerable: its files are not precious as a whole, though a precious
/// file inside it still is; the same directory without `pyvenv.cfg` is.
#[test]
fn a_virtualenv_named_like_a_precious_file_is_not_precious() {
    let (_f, wt) = worktree();
    write(&wt.join(".env/pyvenv.cfg"), "home = /usr/bin\n");
    write(&wt.join(".env/lib/python3/site.py"), "x\n");
    assert_eq!(check(&wt), vec![]);
    write(&wt.join(".env/bin/.env"), "SECRET=1\n");
    assert_eq!(
        the_reason(&wt),
        listing("precious_ignored", &[".env/bin/.env"])
    );
    fs::remove_file(wt.join(".env/pyvenv.cfg")).unwrap();
    assert_eq!(kinds(&check(&wt)), vec!["precious_ignored"]);
}

#[test]
fn not_a_worktree_unless_empty_or_absent() {
    let f = Fixture::new();
    let dir = f.root.join("plain");
    assert_eq!(check(&dir), vec![]); // absent
    fs::create_dir(&dir).unwrap();
    assert_eq!(check(&dir), vec![]); // empty
    write(&dir.join("file"), "x\n");
    assert_eq!(kinds(&check(&dir)), vec!["not_a_worktree"]);

    // A standalone repository is not a linked worktree.
    let repo = f.root.join("standalone");
    init_repo(&f, &repo);
    assert_eq!(kinds(&check(&repo)), vec!["not_a_worktree"]);

    // A worktree whose admin entry is gone.
    let wt = f.worktree("w", "b");
    fs::remove_dir_all(f.repo.join(".git/worktrees/w")).unwrap();
    assert_eq!(kinds(&check(&wt)), vec!["not_a_worktree"]);
}

#[test]
fn preflight_does_not_write_the_index() {
    let (f, wt) = worktree();
    write(&wt.join("README"), "changed\n");
    write(&wt.join("u.txt"), "u\n");
    let index = f.repo.join(".git/worktrees/w/index");
    let before = fs::read(&index).unwrap();
    let mtime = fs::metadata(&index).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = check(&wt);
    assert_eq!(kinds(&r), vec!["unstaged", "untracked"]);
    assert_eq!(fs::read(&index).unwrap(), before);
    assert_eq!(fs::metadata(&index).unwrap().modified().unwrap(), mtime);
}

// --- Each state the libgit2 preflight judged differently from git ---

fn run_for(wt: &Path, repo: &Path) -> Vec<AtRisk> {
    let globs = precious();
    preflight(&Preflight {
        repo_path: Some(repo),
        ..request(wt, &globs)
    })
}

fn cp_a(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_copy_of_a_worktree_is_not_a_worktree() {
    let (f, wt) = worktree();
    let copy = f.root.join("copy");
    cp_a(&wt, &copy);
    write(&copy.join("README"), "edited in the copy\n");
    assert_eq!(kinds(&check(&copy)), vec!["not_a_worktree"]);
    let detail = String::new();
    assert!(!AtRisk::NotAWorktree { detail }.force_overrides());
    // The original is judged by its own files.
    assert_eq!(check(&wt), vec![]);
}

#[test]
fn a_moved_worktree_is_not_a_worktree_until_repaired() {
    let (f, wt) = worktree();
    let moved = f.root.join("moved");
    fs::rename(&wt, &moved).unwrap();
    assert_eq!(kinds(&check(&moved)), vec!["not_a_worktree"]);
    f.git(&moved, &["worktree", "repair"]);
    assert_eq!(check(&moved), vec![]);
}

#[test]
fn a_worktree_of_another_repository_than_its_row_names_is_not_a_worktree() {
    let (f, wt) = worktree();
    assert_eq!(run_for(&wt, &f.repo), vec![]);
    assert_eq!(run_for(&wt, &f.repo.join(".git")), vec![]);
    let other = Fixture::new();
    assert_eq!(kinds(&run_for(&wt, &other.repo)), vec!["not_a_worktree"]);
    assert_eq!(
        kinds(&run_for(&wt, &f.root.join("nothing-here"))),
        vec!["not_a_worktree"]
    );
}

#[test]
fn an_ignore_rule_ending_in_a_tab_does_not_hide_a_file() {
    let f = Fixture::new();
    let rules = "target/\nnotes.md\t\n";
    commit_file(&f, &f.repo, ".gitignore", rules, "ignore rule with a tab");
    let wt = f.worktree("w", "b");
    write(&wt.join("notes.md"), "my notes\n");
    assert_eq!(the_reason(&wt), listing("untracked", &["notes.md"]));
}

#[test]
fn an_untracked_dot_git_in_other_letter_case_is_untracked() {
    let (_f, wt) = worktree();
    write(&wt.join(".GIT/notes.txt"), "n\n");
    assert_eq!(the_reason(&wt), listing("untracked", &[".GIT/notes.txt"]));
}

#[test]
fn a_symlinked_gitignore_is_not_followed() {
    let f = Fixture::new();
    write(&f.repo.join("rules"), "s/\n");
    fs::remove_file(f.repo.join(".gitignore")).unwrap();
    symlink("rules", f.repo.join(".gitignore")).unwrap();
    f.commit_all(&f.repo, "gitignore as a symlink");
    let wt = f.worktree("w", "b");
    write(&wt.join("s/todo.txt"), "todo\n");
    assert_eq!(the_reason(&wt), listing("untracked", &["s/todo.txt"]));
}

#[test]
fn a_nested_repository_inside_a_tracked_directory_is_found() {
    let (f, wt) = worktree();
    commit_file(&f, &wt, "src/main.txt", "tracked\n", "src");
    let inner = wt.join("src/inner");
    init_repo(&f, &inner);
    commit_file(&f, &inner, "i.txt", "inner\n", "inner work");
    let r = check(&wt);
    assert!(kinds(&r).contains(&"nested_repository"), "{r:?}");
    assert!(r.contains(&nested_at("src/inner")), "{r:?}");
}

/// A pristine clone in an ignored build directory (CMake FetchContent):
/// its remote-tracking refs cover every commit and nothing of its own is
/// in it, so it is no work. Each thing of its own makes it one again: a
/// local commit, a stash, an untracked file, a precious ignored file.
#[test]
fn a_pristine_clone_in_an_ignored_directory_is_not_work() {
    let (f, wt) = worktree();
    let upstream = f.tmp.path().join("upstream");
    init_repo(&f, &upstream);
    commit_file(&f, &upstream, "u.txt", "u\n", "upstream");
    let clone = wt.join("target/_deps/foo-src");
    fs::create_dir_all(clone.parent().unwrap()).unwrap();
    f.git(
        &wt,
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    write(&clone.join(".gitignore"), "build/\n");
    f.git(&clone, &["add", ".gitignore"]);
    f.git(&clone, &["commit", "-q", "-m", "mine"]);
    let nested = vec![nested_at("target/_deps/foo-src")];
    assert_eq!(check(&wt), nested, "a local commit is work");
    f.git(
        &clone,
        &["push", "-q", "origin", "HEAD:refs/heads/main-copy"],
    );
    f.git(&clone, &["fetch", "-q"]);
    // Its reflog still holds nothing the remote lacks: covered now.
    assert_eq!(check(&wt), vec![]);
    write(&clone.join("build/out.o"), "o\n");
    assert_eq!(check(&wt), vec![], "build output is no work");
    write(&clone.join("build/.env"), "SECRET=1\n");
    assert_eq!(check(&wt), nested, "a precious file is work");
    fs::remove_file(clone.join("build/.env")).unwrap();
    write(&clone.join("notes.txt"), "n\n");
    assert_eq!(check(&wt), nested, "an untracked file is work");
    f.git(&clone, &["stash", "-q", "-u"]);
    assert_eq!(check(&wt), nested, "a stash is work");
    f.git(&clone, &["stash", "pop", "-q"]);
    fs::remove_file(clone.join("notes.txt")).unwrap();
    assert_eq!(check(&wt), vec![]);
}

#[test]
fn untracked_files_are_found_whatever_status_show_untracked_files_says() {
    let (f, wt) = worktree();
    f.git(&f.repo, &["config", "status.showUntrackedFiles", "no"]);
    write(&wt.join("deep/er/new.txt"), "n\n");
    assert_eq!(kinds(&check(&wt)), vec!["untracked"]);
}

#[test]
fn commits_only_the_reflog_or_per_worktree_refs_reach_are_kept_not_reasons() {
    let (f, wt) = worktree();
    f.git(&wt, &["checkout", "-q", "--detach"]);
    let dropped = commit_file(&f, &wt, "x.txt", "x\n", "dropped by reset");
    f.git(&wt, &["reset", "-q", "--hard", "HEAD~1"]);
    f.git(&wt, &["checkout", "-q", "b"]);
    assert_eq!(check(&wt), vec![]);
    let t = crate::git::cli::DEFAULT_TIMEOUT;
    assert_eq!(unreferenced_history(&wt, t).unwrap(), vec![dropped.clone()]);
    // Once another ref holds it, nothing is left to keep.
    f.git(&f.repo, &["branch", "keeper", &dropped]);
    assert_eq!(unreferenced_history(&wt, t).unwrap(), Vec::<String>::new());
    f.git(&f.repo, &["branch", "-q", "-D", "keeper"]);
    // A per-worktree ref alone keeps nothing once the worktree goes.
    f.git(&wt, &["reflog", "expire", "--expire=now", "--all"]);
    f.git(&wt, &["update-ref", "refs/worktree/keep", &dropped]);
    assert_eq!(check(&wt), vec![]);
    assert_eq!(unreferenced_history(&wt, t).unwrap(), vec![dropped]);
}

#[test]
fn sha256_and_reftable_repositories_are_judged_by_git() {
    for init in [
        &["--object-format=sha256"][..],
        &["--ref-format=reftable"][..],
    ] {
        let f = Fixture::new_with(init);
        let wt = f.worktree("w", "b");
        assert_eq!(check(&wt), vec![], "{init:?}");
        write(&wt.join("new.txt"), "n\n");
        assert_eq!(kinds(&check(&wt)), vec!["untracked"], "{init:?}");
        f.commit_all(&wt, "work");
        assert_eq!(kinds(&check(&wt)), vec!["unmerged_commits"], "{init:?}");
    }
}

#[test]
fn split_and_sparse_indexes_are_clean() {
    let f = Fixture::new();
    write(&f.repo.join("a/one.txt"), "1\n");
    write(&f.repo.join("b/two.txt"), "2\n");
    f.commit_all(&f.repo, "dirs");
    let wt = f.worktree("w", "b");
    f.git(&wt, &["update-index", "--split-index"]);
    assert_eq!(check(&wt), vec![]);
    f.git(
        &wt,
        &["sparse-checkout", "set", "--cone", "--sparse-index", "a"],
    );
    assert!(!wt.join("b/two.txt").exists());
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("a/one.txt"), "changed\n");
    assert_eq!(kinds(&check(&wt)), vec!["unstaged"]);
}

#[test]
fn a_clean_filter_makes_no_false_change() {
    let f = Fixture::new();
    f.git(&f.repo, &["config", "filter.tagged.clean", "sed s/^/X/"]);
    f.git(&f.repo, &["config", "filter.tagged.smudge", "sed s/^X//"]);
    write(&f.repo.join(".gitattributes"), "*.dat filter=tagged\n");
    commit_file(&f, &f.repo, "a.dat", "hello\n", "filtered file");
    let wt = f.worktree("w", "b");
    assert_eq!(fs::read_to_string(wt.join("a.dat")).unwrap(), "hello\n");
    assert_eq!(check(&wt), vec![]);
    write(&wt.join("a.dat"), "changed\n");
    assert_eq!(kinds(&check(&wt)), vec!["unstaged"]);
}

/// `chown -R nobody:nogroup`, and a parent every user can traverse.
fn give_to_nobody(f: &Fixture) {
    let mode = fs::Permissions::from_mode(0o755);
    fs::set_permissions(f.tmp.path(), mode).unwrap();
    let st = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(f.tmp.path())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn as_root_git_runs_as_the_owner_and_judges_as_for_anyone() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches users: run the suite as root (as CI does)"
    );
    let f = Fixture::new();
    let clean = f.worktree("clean", "c");
    let dirty = f.worktree("dirty", "b");
    write(&dirty.join("todo.txt"), "t\n");
    let locked_out = f.worktree("locked-out", "l");
    write(&locked_out.join("d/secret.txt"), "s\n");
    give_to_nobody(&f);
    fs::set_permissions(locked_out.join("d"), fs::Permissions::from_mode(0o000)).unwrap();
    let g = crate::git::cli::Git::for_dir(&clean, crate::git::cli::DEFAULT_TIMEOUT).unwrap();
    assert_eq!(g.run_as().map(|r| r.uid), Some(65534));
    assert_eq!(run(&clean, Some("c"), Some("main")), vec![]);
    assert_eq!(kinds(&check(&dirty)), vec!["untracked"]);
    // Root could read it, its owner cannot: git as the owner says so.
    let r = run(&locked_out, Some("l"), Some("main"));
    assert!(kinds(&r).contains(&"unreadable"), "{r:?}");
    fs::set_permissions(locked_out.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn without_a_base_ref_a_remotes_default_branch_is_the_base() {
    let f = Fixture::new();
    let upstream = f.tmp.path().join("upstream");
    f.git(
        f.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            f.repo.to_str().unwrap(),
            upstream.to_str().unwrap(),
        ],
    );
    f.git(
        &f.repo,
        &["remote", "add", "origin", upstream.to_str().unwrap()],
    );
    f.git(&f.repo, &["fetch", "-q", "origin"]);
    f.git(&f.repo, &["remote", "set-head", "origin", "main"]);
    let wt = f.worktree("w", "b");
    commit_file(&f, &wt, "feature.txt", "f\n", "feature");
    // Squash-merged upstream, by someone else.
    let other = f.tmp.path().join("other");
    f.git(
        f.tmp.path(),
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    commit_file(&f, &other, "feature.txt", "f\n", "squashed feature");
    f.git(&other, &["push", "-q", "origin", "main"]);
    f.git(&f.repo, &["fetch", "-q", "origin"]);
    // The main repository's own HEAD is no help: detached on the old
    // main.
    f.git(&f.repo, &["checkout", "-q", "--detach"]);
    assert_eq!(run(&wt, Some("b"), None), vec![]);
    // Nor is it without the remote's HEAD.
    f.git(&f.repo, &["remote", "set-head", "origin", "--delete"]);
    assert_eq!(kinds(&run(&wt, Some("b"), None)), vec!["unmerged_commits"]);
}
