//! A root controller over repositories that belong to the orchestrator's
//! user (the real local user `testing::OWNER`), who plants symlinks where
//! git keeps its state to lead the controller's writes into a root-only
//! directory. Whatever was planted, and with or without `--force`, the
//! root-only directory is unchanged (every entry's owner, mode, times,
//! size and bytes) and nothing root-owned is left in the owner's
//! repository; a repository reached through such a link keeps its
//! worktrees as `unsafe_repository`, which force does not override.
//!
//! These tests switch users, so the suite runs as root (as CI does).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use boo_reconciler::model::Scope;
use boo_reconciler::testing::{local_user, LocalUser, OWNER};
use common::{Db, World};
use sha1::{Digest, Sha1};

/// Where the owner plants a link, and what the link replaces.
#[derive(Clone, Copy, Debug)]
enum Plant {
    /// `.git/<path>` becomes a symlink to the root-only directory (what
    /// was there is moved aside).
    Common(&'static str),
    /// Every fan-out directory `.git/objects/xx` that does not exist yet
    /// becomes a symlink to it: whichever object is written next.
    EveryNewObjectDir,
    /// `.git/packed-refs` becomes a symlink to a root-only file.
    PackedRefs,
    /// The clean worktree's `.git` file names the root-only directory as
    /// its git directory.
    GitFile,
}

const PLANTS: &[Plant] = &[
    Plant::Common("logs"),
    Plant::Common("refs"),
    Plant::Common("refs/boo"),
    Plant::Common("worktrees"),
    Plant::EveryNewObjectDir,
    Plant::PackedRefs,
    Plant::GitFile,
];

/// One entry of the root-only directory as `stat` and its bytes show it.
type Seen = (u32, u32, u32, i64, i64, i64, i64, u64, Option<Vec<u8>>);

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Seen> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let bytes = m
                .is_file()
                .then(|| Sha1::digest(fs::read(e.path()).unwrap()).to_vec());
            let seen = (
                m.uid(),
                m.gid(),
                m.mode(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.size(),
                bytes,
            );
            (e.path().to_path_buf(), seen)
        })
        .collect()
}

fn root_owned(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.path().symlink_metadata().unwrap().uid() == 0)
        .map(|e| e.path().display().to_string())
        .collect()
}

fn give_to(dir: &Path, u: LocalUser) {
    for e in walkdir::WalkDir::new(dir) {
        lchown(e.unwrap().path(), Some(u.uid), Some(u.gid)).unwrap();
    }
}

/// A root-only directory with a file, a subdirectory and a file in it.
fn victim(w: &World) -> PathBuf {
    let v = w.tmp.path().join("root-only");
    fs::create_dir_all(v.join("sub")).unwrap();
    fs::write(v.join("secret"), "root's secret\n").unwrap();
    fs::write(v.join("sub/more"), "more\n").unwrap();
    fs::set_permissions(&v, fs::Permissions::from_mode(0o700)).unwrap();
    v
}

fn plant(w: &World, plant: Plant, victim: &Path, clean: &Path, owner: LocalUser) {
    let common = w.repo.join(".git");
    let link = |at: &Path, to: &Path| {
        if at.symlink_metadata().is_ok() {
            fs::rename(at, at.with_extension("aside")).unwrap();
        }
        symlink(to, at).unwrap();
        lchown(at, Some(owner.uid), Some(owner.gid)).unwrap();
    };
    match plant {
        Plant::Common(spot) => link(&common.join(spot), victim),
        Plant::EveryNewObjectDir => {
            for n in 0..=255u8 {
                let at = common.join(format!("objects/{n:02x}"));
                if at.symlink_metadata().is_err() {
                    link(&at, victim);
                }
            }
        }
        Plant::PackedRefs => link(&common.join("packed-refs"), &victim.join("secret")),
        Plant::GitFile => {
            fs::write(
                clean.join(".git"),
                format!("gitdir: {}\n", victim.display()),
            )
            .unwrap();
            lchown(clean.join(".git"), Some(owner.uid), Some(owner.gid)).unwrap();
        }
    }
}

/// Session s1 and chat c1 archived; worktrees `clean` and `dirty` (with an
/// untracked draft) of it, and `gone`, deleted by hand after a commit only
/// its detached HEAD reaches (a stale admin entry an ordinary pass
/// archives and prunes). The repository and the worktrees belong to
/// `owner`; the root stays root's.
async fn owners_world(db: Db, owner: LocalUser) -> World {
    let w = common::archived_world(db).await;
    let clean = w.worktree("clean", "s1").await;
    let dirty = w.worktree("dirty", "s1").await;
    fs::write(dirty.join("draft.txt"), "the owner's draft\n").unwrap();
    let gone = w.add_worktree("gone");
    common::git(&gone, &["checkout", "-q", "--detach"]);
    fs::write(gone.join("g.txt"), "g\n").unwrap();
    common::git(&gone, &["add", "g.txt"]);
    common::git(&gone, &["commit", "-q", "-m", "only gone's"]);
    fs::remove_dir_all(&gone).unwrap();
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to(&w.repo, owner);
    for wt in [&clean, &dirty] {
        give_to(wt, owner);
    }
    w
}

/// The archive refs of `w`'s repository.
fn boo_refs(w: &World) -> String {
    common::git(
        &w.repo,
        &[
            "-c",
            "safe.directory=*",
            "for-each-ref",
            "--format=%(refname)",
            "refs/boo/",
        ],
    )
}

/// The binary, as root with the capability bounding set `bounding`
/// (`setpriv` syntax), running `args` over `w`; its exit code and output.
fn binary_with_capabilities(w: &World, bounding: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", bounding, "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_boo-reconciler"))
        .args(["--database-url", &w.url, "--host-id", common::HOST])
        .arg("--worktree-root")
        .arg(&w.root)
        .args(["--set", "opencode.url=", "--set", "http.listen=127.0.0.1:1"])
        .args(["--set", "worktrees.stale_entry_grace=0s"])
        .args(["--set", &format!("processes.chat_label={}", w.labels[0])])
        .args(["--set", &format!("processes.session_label={}", w.labels[1])])
        .args(["--set", &format!("processes.agent_label={}", w.labels[2])])
        .args(args)
        .current_dir(w.tmp.path())
        .output()
        .unwrap();
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), shown)
}

async fn symlinks_planted_by_the_owner_lead_a_root_controller_nowhere(db: Db) {
    let owner = local_user(OWNER);
    for &p in PLANTS {
        for force in [false, true] {
            let w = owners_world(db, owner).await;
            let (clean, dirty) = (w.root.join("clean"), w.root.join("dirty"));
            let v = victim(&w);
            plant(&w, p, &v, &clean, owner);
            let before = snapshot(&v);

            let first = w.once(Scope::Session("s1".into()), force).await;
            let host = w.once(Scope::Host, force).await;

            let what = format!("{p:?}, force {force}");
            assert_eq!(
                snapshot(&v),
                before,
                "{what}: the root-only directory changed\n{first:?}\n{host:?}"
            );
            assert_eq!(
                root_owned(&w.repo),
                Vec::<String>::new(),
                "{what}: root-owned entries in the owner's repository"
            );
            assert_eq!(
                fs::read_to_string(dirty.join("draft.txt")).ok().as_deref(),
                (!force
                    || matches!(
                        p,
                        Plant::Common(_) | Plant::EveryNewObjectDir | Plant::PackedRefs
                    ))
                .then_some("the owner's draft\n"),
                "{what}: the dirty worktree is kept unless forced over a safe repository"
            );
            match p {
                Plant::GitFile => {
                    assert!(clean.exists(), "{what}: a .git naming elsewhere is kept");
                }
                _ => {
                    assert_eq!(
                        first.result(),
                        boo_reconciler::report::PassResult::Error,
                        "{what}: a pass that meets an unsafe repository is an error (exit 1)"
                    );
                    assert!(clean.exists(), "{what}: kept\n{first:?}");
                    let (state, reasons) = w.row_state("clean").await;
                    assert_eq!(state, "at_risk", "{what}");
                    assert!(
                        reasons
                            .as_deref()
                            .unwrap_or("")
                            .contains("unsafe_repository"),
                        "{what}: {reasons:?}"
                    );
                }
            }
        }
    }
}

/// Without a planted link, the same root controller archives and prunes
/// the stale entry and removes the clean worktree, all as the owner:
/// the attacks above are refused, not merely failing.
async fn the_same_world_without_a_link_is_reconciled_as_the_owner(db: Db) {
    let w = owners_world(db, local_user(OWNER)).await;
    w.once(Scope::Session("s1".into()), true).await;
    let host = w.once(Scope::Host, false).await;
    assert!(
        !w.root.join("clean").exists() && !w.root.join("dirty").exists(),
        "{host:?}"
    );
    assert!(!w.repo.join(".git/worktrees/gone").exists(), "{host:?}");
    let refs = boo_refs(&w);
    assert!(refs.contains("refs/boo/archive/dirty/"), "{refs}");
    assert!(refs.contains("refs/boo/history/gone/"), "{refs}");
    assert_eq!(root_owned(&w.repo), Vec::<String>::new());
}

both_databases!(
    symlinks_planted_by_the_owner_lead_a_root_controller_nowhere,
    the_same_world_without_a_link_is_reconciled_as_the_owner,
);

/// The root unit's capabilities (`ROOT_CAPABILITIES`, which a unit test
/// keeps equal to `config/boo-reconciler-root.service`) are enough for a
/// root controller over another user's worktrees: the binary, run as root
/// with its bounding set cut to exactly that list, removes a clean
/// worktree, archives and removes a dirty one with force, archives and
/// prunes a stale admin entry, and leaves nothing root-owned behind.
/// (Without `CAP_DAC_OVERRIDE` the first removal fails with EACCES.)
#[test]
fn the_root_units_capabilities_are_enough() {
    let caps: Vec<String> = boo_reconciler::privilege::ROOT_CAPABILITIES
        .iter()
        .map(|(c, _)| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", caps.join(","));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(owners_world(Db::Sqlite, local_user(OWNER)));
    for args in [&["once", "--session", "s1", "--force"][..], &["once"][..]] {
        let (code, shown) = binary_with_capabilities(&w, &bounding, args);
        assert_eq!(code, Some(0), "{args:?}: {shown}");
    }
    for id in ["clean", "dirty"] {
        assert!(!w.root.join(id).exists(), "{id} is still there");
    }
    assert!(!w.repo.join(".git/worktrees/gone").exists());
    let refs = boo_refs(&w);
    assert!(refs.contains("refs/boo/archive/dirty/"), "{refs}");
    assert!(refs.contains("refs/boo/history/gone/"), "{refs}");
    assert_eq!(root_owned(&w.repo), Vec::<String>::new());
}

/// A root controller that cannot switch users (a unit without
/// `CAP_SETUID`/`CAP_SETGID`) runs no git and writes nothing in another
/// user's worktree: the worktree is kept as `preflight_failed` naming the
/// capabilities (not `not_a_worktree`, which would blame the directory),
/// also with `--force`, and the run exits 3.
#[test]
fn without_the_capabilities_to_switch_a_worktree_is_kept_naming_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(owners_world(Db::Sqlite, local_user(OWNER)));
    for force in [&[][..], &["--force"][..]] {
        let args = [&["once", "--session", "s1"][..], force].concat();
        let (code, shown) = binary_with_capabilities(&w, "-setuid,-setgid", &args);
        assert_eq!(code, Some(3), "{force:?}: {shown}");
        assert!(shown.contains("preflight failed"), "{shown}");
        assert!(shown.contains("CAP_SETUID"), "{shown}");
        assert!(w.root.join("clean/README.md").exists(), "{shown}");
        assert!(w.root.join("dirty/draft.txt").exists(), "{shown}");
    }
    assert_eq!(root_owned(&w.repo), Vec::<String>::new());
}
