use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use super::*;
use crate::git::scenes::{
    commit_file, commit_on_a_deleted_branch, conflicted_merge, files, init_repo,
};
use crate::git::testutil::{precious, set_exec, write, Fixture};

const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

#[test]
fn archive_restores_everything_byte_for_byte_and_survives_gc() {
    let f = Fixture::new();
    write(&f.repo.join("tool.sh"), "#!/bin/sh\necho hi\n");
    write(&f.repo.join("both.txt"), "base\n");
    symlink("README", f.repo.join("tracked-link")).unwrap();
    f.commit_all(&f.repo, "more files");
    // A stash of the user's in the main repository, which must stay.
    write(&f.repo.join("README"), "stashed by the user\n");
    f.git(&f.repo, &["stash", "-q"]);
    let stash_before = f.rev(&f.repo, "refs/stash");

    let wt = f.worktree("w", "b");
    f.git(&wt, &["checkout", "-q", "--detach"]);
    write(&wt.join("detached.txt"), "committed on a detached HEAD\n");
    let detached = f.commit_all(&wt, "detached work");

    // staged
    write(&wt.join("README"), "staged content\n");
    f.git(&wt, &["add", "README"]);
    // staged, then changed again (index differs from HEAD and file)
    write(&wt.join("both.txt"), "staged\n");
    f.git(&wt, &["add", "both.txt"]);
    write(&wt.join("both.txt"), "staged\nand unstaged\n");
    // unstaged, deleted, exec bit, retargeted symlink
    write(&wt.join("lib.txt"), "one\n2\nthree\n");
    fs::remove_file(wt.join("detached.txt")).unwrap();
    set_exec(&wt.join("tool.sh"));
    fs::remove_file(wt.join("tracked-link")).unwrap();
    symlink("lib.txt", wt.join("tracked-link")).unwrap();
    // untracked: a file, an executable, a symlink, binary bytes
    write(&wt.join("notes/todo.md"), "- untracked\n");
    write(&wt.join("run.sh"), "#!/bin/sh\n");
    set_exec(&wt.join("run.sh"));
    symlink("../README", wt.join("notes/up")).unwrap();
    fs::write(wt.join("blob.bin"), [0u8, 159, 146, 150, 255, b'\n', b'\r']).unwrap();
    // a staged new file
    write(&wt.join("added.txt"), "added\n");
    f.git(&wt, &["add", "added.txt"]);
    // precious ignored, and build output that is not kept
    write(&wt.join(".env"), "SECRET=1\n");
    write(&wt.join("config/.env.local"), "SECRET=2\n");
    write(&wt.join("target/debug/app"), "build output\n");

    let index_path = f.repo.join(".git/worktrees/w/index");
    let index_before = fs::read(&index_path).unwrap();
    let refs_before = f.git(&f.repo, &["for-each-ref"]);
    let status_before = f.git(&wt, &["status", "--porcelain", "--ignored"]);
    let head_before = f.rev(&wt, "HEAD");
    let original = files(&wt, &["target"]);

    let a = archive(&wt, "w", now(), &precious()).unwrap();
    assert_eq!(a.reference, format!("refs/boo/archive/w/{NOW}"));
    assert_eq!(f.rev(&f.repo, &a.reference), a.commit);
    assert_eq!(f.rev(&f.repo, &format!("{}^1", a.reference)), detached);
    assert_eq!(
        f.git(&f.repo, &["log", "-1", "--format=%an <%ae> %at", &a.commit]),
        format!("boo-reconciler <boo-reconciler@localhost> {NOW}")
    );

    // Nothing of the user's changed.
    assert_eq!(fs::read(&index_path).unwrap(), index_before);
    let refs_after = f.git(&f.repo, &["for-each-ref"]);
    let refs_after: Vec<&str> = refs_after
        .lines()
        .filter(|l| !l.contains("refs/boo/"))
        .collect();
    assert_eq!(refs_after, refs_before.lines().collect::<Vec<_>>());
    assert_eq!(f.rev(&f.repo, "refs/stash"), stash_before);
    assert_eq!(f.rev(&wt, "HEAD"), head_before);
    assert_eq!(
        f.git(&wt, &["status", "--porcelain", "--ignored"]),
        status_before
    );

    // A fresh worktree at the first parent gets it all back.
    let fresh = f.detached("fresh", &format!("{}^1", a.reference));
    f.git(&fresh, &["stash", "apply", "--index", &a.reference]);
    assert_eq!(files(&fresh, &[]), original);
    assert_eq!(
        f.git(&fresh, &["diff", "--cached", "--binary"]),
        f.git(&wt, &["diff", "--cached", "--binary"])
    );
    assert_eq!(
        f.git(&fresh, &["status", "--porcelain"]),
        f.git(&wt, &["status", "--porcelain"])
    );

    // Remove both worktrees; the archive ref alone keeps everything.
    let i = f.rev(&f.repo, &format!("{}^2", a.reference));
    let u = f.rev(&f.repo, &format!("{}^3", a.reference));
    for w in [&wt, &fresh] {
        fs::remove_dir_all(w).unwrap();
    }
    f.git(&f.repo, &["worktree", "prune"]);
    f.expire_and_gc();
    for oid in [&a.commit, &detached, &i, &u] {
        assert!(f.has_object(oid), "{oid} lost by gc");
    }
    // Control: an unreferenced commit does not survive, so the check
    // above can fail.
    let tree = f.rev(&f.repo, "HEAD^{tree}");
    let dangling = f.git(&f.repo, &["commit-tree", "-m", "dangling", &tree]);
    f.git(&f.repo, &["gc", "-q", "--prune=now"]);
    assert!(!f.has_object(&dangling));
}

#[test]
fn archive_of_a_clean_worktree_has_no_untracked_parent() {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    let a = archive(&wt, "w", now(), &precious()).unwrap();
    assert_eq!(
        f.git(&f.repo, &["rev-list", "--parents", "-n1", &a.commit])
            .split(' ')
            .count(),
        3
    );
    assert_eq!(
        f.rev(&f.repo, &format!("{}^{{tree}}", a.reference)),
        f.rev(&f.repo, "main^{tree}")
    );
}

#[test]
fn archive_never_overwrites_an_existing_ref() {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    let a1 = archive(&wt, "w", now(), &precious()).unwrap();
    write(&wt.join("new.txt"), "x\n");
    let a2 = archive(&wt, "w", now(), &precious()).unwrap();
    let a3 = archive(&wt, "w", now(), &precious()).unwrap();
    assert_eq!(a1.reference, format!("refs/boo/archive/w/{NOW}"));
    assert_eq!(a2.reference, format!("refs/boo/archive/w/{NOW}-1"));
    assert_eq!(a3.reference, format!("refs/boo/archive/w/{NOW}-2"));
    assert_eq!(f.rev(&f.repo, &a1.reference), a1.commit);
    assert_ne!(a1.commit, a2.commit);
}

#[test]
fn archive_keeps_hidden_changes_and_conflicts() {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    f.git(&wt, &["update-index", "--assume-unchanged", "lib.txt"]);
    write(&wt.join("lib.txt"), "hidden change\n");
    conflicted_merge(&f, &wt);
    let conflicted = fs::read(wt.join("README")).unwrap();
    assert!(String::from_utf8_lossy(&conflicted).contains("<<<<<<<"));

    let a = archive(&wt, "w", now(), &precious()).unwrap();
    let show = |rev: &str| f.git(&f.repo, &["show", rev]);
    assert_eq!(show(&format!("{}:lib.txt", a.reference)), "hidden change");
    assert_eq!(
        show(&format!("{}:README", a.reference)).as_bytes(),
        String::from_utf8_lossy(&conflicted).trim_end().as_bytes()
    );
    assert_eq!(
        show(&format!("{}^2:README", a.reference)),
        show(&format!("{}:README", a.reference))
    );
}

#[test]
fn archive_of_a_deleted_branch_keeps_its_commits() {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    let c = commit_on_a_deleted_branch(&f, &wt);
    write(&wt.join("a.txt"), "a2\n");
    let a = archive(&wt, "w", now(), &precious()).unwrap();
    assert_eq!(f.rev(&f.repo, &format!("{}^1", a.reference)), c);
    assert_eq!(
        f.git(&f.repo, &["show", &format!("{}:a.txt", a.reference)]),
        "a2"
    );
    fs::remove_dir_all(&wt).unwrap();
    f.git(&f.repo, &["worktree", "prune"]);
    f.expire_and_gc();
    assert!(f.has_object(&c));
}

#[test]
fn archive_of_an_unborn_head_uses_an_empty_base() {
    let f = Fixture::new();
    let wt = f.add_worktree(&f.root.join("w"), &["--orphan", "-b", "o"], None);
    write(&wt.join("first.txt"), "first\n");
    let a = archive(&wt, "w", now(), &precious()).unwrap();
    let base = format!("{}^1", a.reference);
    assert_eq!(
        f.rev(&f.repo, &format!("{base}^{{tree}}")),
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    );
    assert_eq!(
        f.git(&f.repo, &["show", &format!("{}^3:first.txt", a.reference)]),
        "first"
    );
}

#[test]
fn archive_keeps_nested_repositories_files_and_commits() {
    let f = Fixture::new();
    let wt = f.worktree("w", "b");
    let nested = wt.join("vendor/lib");
    init_repo(&f, &nested);
    let head = commit_file(&f, &nested, "x.txt", "x\n", "nested work");
    write(&nested.join("x.txt"), "x changed\n");
    write(&nested.join("y.txt"), "untracked in nested\n");
    let a = archive(&wt, "w", now(), &precious()).unwrap();
    let show = |rev: String| f.git(&f.repo, &["show", &rev]);
    assert_eq!(
        show(format!("{}^3:vendor/lib/x.txt", a.reference)),
        "x changed"
    );
    assert_eq!(
        show(format!("{}^3:vendor/lib/y.txt", a.reference)),
        "untracked in nested"
    );
    assert!(
        f.try_git(
            &f.repo,
            &[
                "cat-file",
                "-e",
                &format!("{}^3:vendor/lib/.git", a.reference)
            ]
        )
        .status
        .code()
            != Some(0)
    );
    assert_eq!(f.rev(&f.repo, &format!("{}-nested/0", a.reference)), head);
    assert_eq!(
        f.rev(&f.repo, &format!("{}-nested/0-heads/main", a.reference)),
        head
    );
}

#[test]
fn archive_refuses_what_it_cannot_keep() {
    let f = Fixture::new();
    // A standalone repository would take its archive with it.
    let standalone = f.root.join("s");
    init_repo(&f, &standalone);
    assert!(archive(&standalone, "s", now(), &precious()).is_err());
    // A plain directory has no repository to archive into.
    let plain = f.root.join("p");
    write(&plain.join("f"), "x\n");
    assert!(archive(&plain, "p", now(), &precious()).is_err());
}

#[test]
fn archive_records_the_paths_of_the_nested_repositories_it_kept_and_an_unborn_branch() {
    let f = Fixture::new();
    let up = f.tmp.path().join("upstream");
    fs::create_dir_all(&up).unwrap();
    f.git(&up, &["init", "-q"]);
    write(&up.join("lib.txt"), "library\n");
    f.commit_all(&up, "lib");
    let wt = f.worktree("w", "b");
    // Pushed as it is: nothing to keep, nothing recorded.
    f.git(
        &wt,
        &["submodule", "add", "-q", up.to_str().unwrap(), "a-sub"],
    );
    f.git(&wt, &["commit", "-q", "-m", "submodule"]);
    // A clean submodule with a commit of its own: its files are its HEAD's.
    f.git(
        &wt,
        &["submodule", "add", "-q", up.to_str().unwrap(), "b-sub"],
    );
    f.git(&wt, &["commit", "-q", "-m", "submodule"]);
    write(&wt.join("b-sub/lib.txt"), "changed\n");
    f.commit_all(&wt.join("b-sub"), "only here");
    // A nested repository under an odd name.
    let odd = wt.join("c odd\n\"name\"");
    fs::create_dir_all(&odd).unwrap();
    f.git(&odd, &["init", "-q"]);
    write(&odd.join("x.txt"), "x\n");
    f.commit_all(&odd, "x");
    // An id that tries to write a record of its own.
    let a = archive(&wt, "w\nnested 9 \"x\"", now(), &precious()).unwrap();
    let msg = f.git(&f.repo, &["log", "-1", "--format=%B", &a.reference]);
    assert_eq!(
        records::parse(msg.as_bytes()),
        records::Records {
            unborn: None,
            nested: vec![
                records::NestedRecord {
                    n: 1,
                    path: b"b-sub".to_vec(),
                    clean: true,
                },
                records::NestedRecord {
                    n: 2,
                    path: b"c odd\n\"name\"".to_vec(),
                    clean: false,
                },
            ],
            modes: Vec::new(),
        },
        "{msg}"
    );
    let kept = f.git(
        &f.repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            &format!("{}-nested/", a.reference),
        ],
    );
    assert!(!kept.contains("-nested/0"), "{kept}");
    assert!(
        kept.contains("-nested/1\n") && kept.contains("-nested/2\n"),
        "{kept}"
    );

    let orphan = f.add_worktree(&f.root.join("o"), &["--orphan", "-b", "new/o"], None);
    write(&orphan.join("first.txt"), "first\n");
    let a = archive(&orphan, "o", now(), &precious()).unwrap();
    let msg = f.git(&f.repo, &["log", "-1", "--format=%B", &a.reference]);
    assert_eq!(
        records::parse(msg.as_bytes()).unborn.as_deref(),
        Some("refs/heads/new/o"),
        "{msg}"
    );
}
