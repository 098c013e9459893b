//! Every at-risk reason, end to end: the controller keeps the worktree and
//! marks its row with the right reason; with force it archives the full
//! state, removes the worktree, and the archive brings every file back
//! byte for byte and survives `git gc --prune=now`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use boo_reconciler::model::Scope;
use boo_reconciler::report::exit;
use common::{detached_worktree, git, git_command, git_ok, Db, World};

/// What a file was: its bytes and executable bit, or a symlink's target.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { bytes: Vec<u8>, exec: bool },
    Link(PathBuf),
}

/// Every file under `dir` except git's own (`.git` anywhere) and what
/// `skip` names.
fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel.split('/').any(|c| c == ".git") || skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let ft = e.file_type();
        if ft.is_symlink() {
            out.insert(rel, Entry::Link(fs::read_link(e.path()).unwrap()));
        } else if ft.is_file() {
            let mode = e.metadata().unwrap().permissions().mode();
            out.insert(
                rel,
                Entry::File {
                    bytes: fs::read(e.path()).unwrap(),
                    exec: mode & 0o111 != 0,
                },
            );
        }
    }
    out
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let out = git_command(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    // Some set-ups (a merge that conflicts) fail on purpose.
    let _ = out;
}

fn commit_file(dir: &Path, name: &str, content: &str, msg: &str) {
    fs::write(dir.join(name), content).unwrap();
    git(dir, &["add", name]);
    git(dir, &["commit", "-q", "-m", msg]);
}

/// One case: how to put work at risk, the reason expected, and what the
/// restored snapshot need not contain.
struct Case {
    name: &'static str,
    kind: &'static str,
    setup: fn(&World, &Path),
    /// Paths the archive is not expected to bring back as files.
    skip: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "staged",
        kind: "staged",
        setup: |_, p| {
            fs::write(p.join("README.md"), "staged change\n").unwrap();
            git(p, &["add", "README.md"]);
        },
        skip: &[],
    },
    Case {
        name: "unstaged",
        kind: "unstaged",
        setup: |_, p| fs::write(p.join("README.md"), "unstaged change\n").unwrap(),
        skip: &[],
    },
    Case {
        name: "untracked_deep",
        kind: "untracked",
        setup: |_, p| {
            fs::create_dir_all(p.join("docs/deep")).unwrap();
            fs::write(p.join("docs/deep/notes.txt"), "notes\n").unwrap();
            fs::write(p.join("tool.sh"), "#!/bin/sh\n").unwrap();
            fs::set_permissions(p.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::symlink("docs/deep/notes.txt", p.join("notes-link")).unwrap();
        },
        skip: &[],
    },
    Case {
        name: "conflicts",
        kind: "conflicts",
        setup: |w, p| {
            commit_file(p, "README.md", "branch side\n", "branch");
            commit_file(&w.repo, "README.md", "main side\n", "main");
            git_env(p, &["merge", "-q", "main"], &[]);
        },
        skip: &[],
    },
    Case {
        name: "branch_commits",
        kind: "unmerged_commits",
        setup: |_, p| commit_file(p, "feature.txt", "feature\n", "feature"),
        skip: &[],
    },
    Case {
        name: "detached_head_commits",
        kind: "unmerged_commits",
        setup: |_, p| {
            git(p, &["checkout", "-q", "--detach"]);
            commit_file(p, "detached.txt", "detached\n", "detached work");
        },
        skip: &[],
    },
    Case {
        name: "rebase_stopped_on_clean_tree",
        kind: "operation_in_progress",
        setup: |w, p| {
            commit_file(p, "feature.txt", "feature\n", "feature");
            commit_file(&w.repo, "other.txt", "other\n", "main moves");
            git_env(
                p,
                &["rebase", "-q", "-i", "main"],
                &[("GIT_SEQUENCE_EDITOR", "sed -i 1ibreak")],
            );
            assert!(p.join(".git").is_file());
        },
        skip: &[],
    },
    Case {
        name: "bisect",
        kind: "operation_in_progress",
        setup: |_, p| {
            git(p, &["bisect", "start"]);
        },
        skip: &[],
    },
    Case {
        name: "locked",
        kind: "locked",
        setup: |w, p| {
            git(
                &w.repo,
                &[
                    "worktree",
                    "lock",
                    "--reason",
                    "in use by a test",
                    p.to_str().unwrap(),
                ],
            );
        },
        skip: &[],
    },
    Case {
        name: "nested_repository",
        kind: "nested_repository",
        setup: |_, p| {
            let n = p.join("nested");
            fs::create_dir(&n).unwrap();
            git(&n, &["init", "-q", "-b", "main"]);
            commit_file(&n, "inner.txt", "inner\n", "nested work");
        },
        skip: &[],
    },
    Case {
        name: "assume_unchanged",
        kind: "hidden_changes",
        setup: |_, p| {
            git(p, &["update-index", "--assume-unchanged", "README.md"]);
            fs::write(p.join("README.md"), "hidden change\n").unwrap();
        },
        skip: &[],
    },
    Case {
        name: "skip_worktree",
        kind: "hidden_changes",
        setup: |_, p| {
            git(p, &["update-index", "--skip-worktree", "README.md"]);
            fs::write(p.join("README.md"), "hidden change\n").unwrap();
        },
        skip: &[],
    },
    Case {
        name: "branch_deleted",
        kind: "branch_deleted",
        setup: |w, p| {
            commit_file(p, "feature.txt", "feature\n", "feature");
            git(&w.repo, &["update-ref", "-d", "refs/heads/boo/w1"]);
        },
        skip: &[],
    },
    Case {
        name: "precious_ignored",
        kind: "precious_ignored",
        setup: |_, p| {
            fs::write(p.join(".env"), "TOKEN=secret\n").unwrap();
            fs::create_dir_all(p.join("app")).unwrap();
            fs::write(p.join("app/.env.local"), "LOCAL=1\n").unwrap();
        },
        skip: &[],
    },
];

async fn every_at_risk_reason_is_kept_then_archived_with_force(db: Db) {
    let mut failures = Vec::new();
    for case in CASES {
        if let Err(e) = run_case(db, case).await {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

async fn run_case(db: Db, case: &Case) -> Result<(), String> {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    (case.setup)(&w, &path);
    let before = snapshot(&path, case.skip);

    let report = w.once(Scope::Host, false).await;
    if report.exit_code() != exit::AT_RISK {
        return Err(format!("expected exit 3, report:\n{}", report.render()));
    }
    if !path.exists() {
        return Err("worktree removed without force".into());
    }
    // The host pass stops at the first reason it finds: kept, with one.
    let (state, reasons) = w.row_state("w1").await;
    let reasons = reasons.unwrap_or_default();
    if state != "at_risk" || !reasons.contains("\"kind\"") {
        return Err(format!(
            "row {state} with reasons {reasons}, expected at_risk"
        ));
    }
    if snapshot(&path, case.skip) != before {
        return Err("the pass changed the worktree".into());
    }
    // A pass asked for by name weighs every reason: the case's among them.
    let report = w.once(Scope::Session("s1".into()), false).await;
    if report.exit_code() != exit::AT_RISK || !path.exists() {
        return Err(format!("expected exit 3, report:\n{}", report.render()));
    }
    let (state, reasons) = w.row_state("w1").await;
    let reasons = reasons.unwrap_or_default();
    if state != "at_risk"
        || !reasons.contains(&format!("\"kind\":\"{}\"", case.kind))
            && !reasons.contains(&format!("\"kind\": \"{}\"", case.kind))
    {
        return Err(format!(
            "row {state} with reasons {reasons}, expected {}",
            case.kind
        ));
    }
    if snapshot(&path, case.skip) != before {
        return Err("the pass changed the worktree".into());
    }

    let report = w.once(Scope::Host, true).await;
    if report.exit_code() != exit::CONVERGED || path.exists() {
        return Err(format!(
            "forced removal did not converge:\n{}",
            report.render()
        ));
    }
    if w.row_state("w1").await.0 != "removed" {
        return Err("row not marked removed".into());
    }
    let archive = match &report.results[0].detail {
        boo_reconciler::act::Detail::Removed(r) => r.archive.as_ref().map(|a| a.reference.clone()),
        _ => None,
    }
    .ok_or("no archive ref in the result")?;

    git(&w.repo, &["gc", "-q", "--prune=now"]);
    if !git_ok(
        &w.repo,
        &["cat-file", "-e", &format!("{archive}^{{commit}}")],
    ) {
        return Err(format!("{archive} lost after gc"));
    }

    let restored = w.tmp.path().join("restored");
    let base = if git_ok(
        &w.repo,
        &["rev-parse", "-q", "--verify", &format!("{archive}^1")],
    ) {
        format!("{archive}^1")
    } else {
        "main".to_string()
    };
    detached_worktree(&w.repo, &restored, &base);
    let out = git_command(&restored)
        .args(["stash", "apply", "--index", &archive])
        .output()
        .unwrap();
    if !out.status.success() {
        // A conflicted index cannot be applied with --index: the working
        // tree alone must still come back.
        let out = git_command(&restored)
            .args(["stash", "apply", &archive])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "git stash apply {archive}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let after = snapshot(&restored, case.skip);
    if after != before {
        let missing: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        let extra: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        return Err(format!(
            "restored state differs: missing or different {missing:?}, extra {extra:?}"
        ));
    }
    Ok(())
}

both_databases!(
    every_at_risk_reason_is_kept_then_archived_with_force,
    directory_that_is_not_a_worktree_is_kept_even_with_force,
    mount_point_inside_a_worktree_is_kept_even_with_force,
);

async fn directory_that_is_not_a_worktree_is_kept_even_with_force(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.root.join("w1");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("data.txt"), "not in git\n").unwrap();
    w.worktree_row("w1", "s1", path.to_str().unwrap()).await;

    for force in [false, true] {
        let report = w.once(Scope::Host, force).await;
        assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
        assert_eq!(
            fs::read_to_string(path.join("data.txt")).unwrap(),
            "not in git\n"
        );
        let (state, reasons) = w.row_state("w1").await;
        assert_eq!(state, "at_risk");
        assert!(reasons.unwrap().contains("not_a_worktree"));
    }
}

async fn mount_point_inside_a_worktree_is_kept_even_with_force(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    // Ignored, so that the mount is the only reason.
    let mnt = path.join("target");
    fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "this test needs to mount a tmpfs (run as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fs::write(mnt.join("on-tmpfs"), "mounted\n").unwrap();

    for force in [false, true] {
        let report = w.once(Scope::Host, force).await;
        assert_eq!(report.exit_code(), exit::AT_RISK, "{}", report.render());
        assert_eq!(
            fs::read_to_string(mnt.join("on-tmpfs")).unwrap(),
            "mounted\n"
        );
        assert!(path.join("README.md").exists());
        let (_, reasons) = w.row_state("w1").await;
        assert!(reasons.unwrap().contains("mount_point"));
    }
}
