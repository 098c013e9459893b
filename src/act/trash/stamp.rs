//! A stamp of a directory tree: every entry below a directory by its
//! relative path, with what `lstat` says of it, so that a second stamp of
//! the same directory says whether anything in it changed in between.
//!
//! A removal stamps the worktree right after pinning it, before the git
//! preflight, and again once the rename has moved it into the trash
//! ([`crate::act::trash`]): a process that is not an agent (no labels, its
//! working directory elsewhere) writing into the worktree while it is
//! judged is seen, and its writes are put back, not reclaimed.
//!
//! # What an entry is
//!
//! Its path relative to the stamped directory, file type and mode,
//! `(st_dev, st_ino)`, size and `st_ctime` (seconds and nanoseconds).
//! The kernel sets `st_ctime` on every write, truncation, `chmod`,
//! `chown`, link or unlink of an entry, and on a directory when an entry
//! is made, removed or renamed in it; contents are never read. The stamped
//! directory's own times are left out: the rename into the trash sets
//! them, and what is made, removed or renamed right inside it shows as
//! entries of its own.
//!
//! # Guarantees
//! 1. **Any change shows.** A file written (size changed, or the same
//!    size and only its `st_ctime` moved), a file made in a
//!    subdirectory, a file removed, a rename, a `chmod`, an entry
//!    replaced: two stamps differ, naming each path (tests
//!    `the_same_tree_stamps_the_same`, `a_write_that_changes_the_size_shows`,
//!    `a_write_that_keeps_the_size_shows`, `a_file_made_in_a_subdirectory_shows`,
//!    `a_removed_file_shows`, `a_rename_shows`, `a_chmod_shows`).
//! 2. **Never follows a symlink, never leaves the file system.** Every
//!    directory is opened relative to its parent's handle with
//!    `O_NOFOLLOW | O_DIRECTORY`, every entry looked at with
//!    `fstatat(AT_SYMLINK_NOFOLLOW)`; a symlink is an entry of its own
//!    and what it points to is never looked at; a directory on another
//!    device is an entry, never entered (tests `a_symlink_is_never_followed`
//!    and `a_directory_swapped_for_a_symlink_mid_walk_is_not_followed`).
//! 3. **Cheap.** One directory read per directory, one `fstatat` per
//!    entry, no file opened (about 11 ms for 5,261 entries in a release
//!    build, warm cache: the ignored test `stamp_cost`).
//! 4. **Settled, or said so.** A timestamp is taken from a coarse clock,
//!    so a second write within the same tick as the first could leave
//!    `st_ctime` where it was. An entry whose `st_ctime` is less than
//!    [`TICK_BOUND`] before the walk began is *fresh*: a later change of
//!    it might not show. [`take_settled`] takes the stamp again after
//!    that bound while any entry is fresh, and answers the fresh entries
//!    when it cannot settle: the tree is being written now (test
//!    `a_tree_written_while_stamped_is_not_settled`).
//!
//! Limits: only what the kernel records shows; a write that keeps the
//! size shows by its `st_ctime` alone, hence (4). A clock stepped back
//! may make an entry look fresh (the worktree is then kept, never lost),
//! or, stepped back between two stamps, give a changed entry its old
//! `st_ctime` again (its size, inode or mode must then change for it to
//! show). An entry reused under the same name and inode number (a file
//! removed and another made) shows by its `st_ctime`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::git::paths::rel_str;

/// Longer than any coarse clock tick (10 ms at `HZ=100`): an entry whose
/// `st_ctime` is older than this when the walk begins cannot be changed
/// again with the same `st_ctime`.
pub const TICK_BOUND: Duration = Duration::from_millis(20);

/// How many times [`take_settled`] walks before it says the tree is being
/// written.
const SETTLE_TRIES: usize = 3;

/// A stamp of a directory tree (see the module's documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Sorted by path; the stamped directory itself first (empty path).
    entries: Vec<Entry>,
    /// When the walk began.
    began: SystemTime,
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stamp({} entries)", self.entries.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    path: Vec<u8>,
    mode: u32,
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
    note: Note,
}

/// What the walk could say of an entry beyond its `lstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Note {
    Seen,
    /// A directory on another device: never entered.
    OtherFileSystem,
    /// A directory that could not be opened or read (the errno).
    Unlisted(i32),
    /// An entry that could not be looked at (the errno).
    Unstatable(i32),
    /// A directory that was another one once opened: the tree moved under
    /// the walk, and this stamp equals no other.
    Raced,
}

impl Stamp {
    /// How many entries it holds, the stamped directory included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing, not even the stamped directory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries changed less than [`TICK_BOUND`] before the walk began
    /// (or after), and those the tree moved under: a later change of them
    /// might not show.
    pub fn fresh(&self) -> Vec<String> {
        let since = self.began.checked_sub(TICK_BOUND).unwrap_or(UNIX_EPOCH);
        self.entries
            .iter()
            .skip(1)
            .filter(|e| e.note == Note::Raced || ctime_of(e) >= since)
            .map(|e| shown(&e.path))
            .collect()
    }
}

fn ctime_of(e: &Entry) -> SystemTime {
    let (s, ns) = e.ctime;
    match u64::try_from(s) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, ns.clamp(0, 999_999_999) as u32),
        Err(_) => UNIX_EPOCH,
    }
}

/// A relative path as a message shows it: the stamped directory is `.`.
fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        rel_str(rel)
    }
}

fn kind(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

fn entry(path: Vec<u8>, st: &FileStat, note: Note) -> Entry {
    Entry {
        path,
        mode: st.st_mode,
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        ctime: (st.st_ctime, st.st_ctime_nsec),
        note,
    }
}

/// A directory still to read: its name in `parent`, whose handle its
/// siblings share (only the directories on the way down hold one).
struct Frame {
    parent: Rc<Dir>,
    /// Its index in the entries, to mark it when it cannot be read.
    at: usize,
    rel: Vec<u8>,
    ino: u64,
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
}

/// Stamps the directory `dir` is a handle to (an `O_PATH` handle will
/// do). Errors only when the directory itself cannot be opened or read;
/// what cannot be read below it is noted in the stamp.
pub fn take(dir: &impl AsFd) -> io::Result<Stamp> {
    let began = SystemTime::now();
    let top = openat(dir, ".", dir_flags(), Mode::empty())?;
    let st = fstat(&top)?;
    let dev = st.st_dev;
    // The stamped directory's times are the rename's: left out.
    let mut me = entry(Vec::new(), &st, Note::Seen);
    me.ctime = (0, 0);
    let mut entries = vec![me];
    let mut frames = Vec::new();
    read_into(Dir::from_fd(top)?, &[], dev, &mut entries, &mut frames)?;
    while let Some(f) = frames.pop() {
        let opened = openat(
            f.parent.as_fd(),
            OsStr::from_bytes(name_of(&f.rel)),
            dir_flags(),
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                entries[f.at].note = Note::Unlisted(e as i32);
                continue;
            }
        };
        match fstat(&fd) {
            Ok(st) if (st.st_dev, st.st_ino) == (dev, f.ino) => {}
            _ => {
                entries[f.at].note = Note::Raced;
                continue;
            }
        }
        let dir = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                entries[f.at].note = Note::Unlisted(e as i32);
                continue;
            }
        };
        if let Err(e) = read_into(dir, &f.rel, dev, &mut entries, &mut frames) {
            entries[f.at].note = Note::Unlisted(e.raw_os_error().unwrap_or(0));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Stamp { entries, began })
}

fn name_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => &rel[i + 1..],
        None => rel,
    }
}

/// Reads the directory `dir` (at `rel`): an entry for each name in it,
/// and a frame for each directory on device `dev` to read later.
fn read_into(
    mut dir: Dir,
    rel: &[u8],
    dev: u64,
    entries: &mut Vec<Entry>,
    frames: &mut Vec<Frame>,
) -> io::Result<()> {
    let mut names = Vec::new();
    for e in dir.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    let dir = Rc::new(dir);
    for name in names {
        let path = if rel.is_empty() {
            name.clone()
        } else {
            [rel, b"/", &name].concat()
        };
        let st = match fstatat(
            dir.as_fd(),
            OsStr::from_bytes(&name),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Gone since the listing: a later stamp will not have it either.
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                entries.push(Entry {
                    path,
                    mode: 0,
                    dev: 0,
                    ino: 0,
                    size: 0,
                    ctime: (0, 0),
                    note: Note::Unstatable(e as i32),
                });
                continue;
            }
        };
        if kind(st.st_mode) == SFlag::S_IFDIR {
            if st.st_dev != dev {
                entries.push(entry(path, &st, Note::OtherFileSystem));
                continue;
            }
            frames.push(Frame {
                parent: Rc::clone(&dir),
                at: entries.len(),
                rel: path.clone(),
                ino: st.st_ino,
            });
        }
        entries.push(entry(path, &st, Note::Seen));
    }
    Ok(())
}

/// [`take`], again after [`TICK_BOUND`] while any entry is fresh
/// ([`Stamp::fresh`]), a few times at most: the stamp, and the entries
/// still fresh in it (none: settled).
pub fn take_settled(dir: &impl AsFd) -> io::Result<(Stamp, Vec<String>)> {
    let mut tries = 0;
    loop {
        let stamp = take(dir)?;
        let fresh = stamp.fresh();
        tries += 1;
        if fresh.is_empty() || tries == SETTLE_TRIES {
            return Ok((stamp, fresh));
        }
        std::thread::sleep(TICK_BOUND + Duration::from_millis(5));
    }
}

/// Each path whose entry differs between `before` and `after`, with how
/// (`new`, `gone`, `replaced`, `written`, `changed`), in path order.
pub fn changes(before: &Stamp, after: &Stamp) -> Vec<String> {
    let (mut a, mut b) = (
        before.entries.iter().peekable(),
        after.entries.iter().peekable(),
    );
    let mut out = Vec::new();
    loop {
        let (x, y) = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), Some(y)) if x.path == y.path => (x, y),
            (Some(x), Some(y)) if x.path < y.path => {
                out.push(format!("{} (gone)", shown(&x.path)));
                a.next();
                continue;
            }
            (Some(x), None) => {
                out.push(format!("{} (gone)", shown(&x.path)));
                a.next();
                continue;
            }
            (_, Some(y)) => {
                out.push(format!("{} (new)", shown(&y.path)));
                b.next();
                continue;
            }
        };
        if let Some(how) = how_changed(x, y) {
            out.push(format!("{} ({how})", shown(&x.path)));
        }
        a.next();
        b.next();
    }
    out
}

/// How one path's entry changed; `None` when it did not.
fn how_changed(x: &Entry, y: &Entry) -> Option<&'static str> {
    if x == y && x.note != Note::Raced {
        return None;
    }
    Some(
        if (x.dev, x.ino) != (y.dev, y.ino) || kind(x.mode) != kind(y.mode) {
            "replaced"
        } else if kind(x.mode) == SFlag::S_IFREG
            && (x.size != y.size || (x.ctime != y.ctime && x.mode == y.mode))
        {
            "written"
        } else {
            "changed"
        },
    )
}

/// `"<n> entr(y/ies) <what>: a, b, …"`, with a sample of the paths.
pub fn describe(what: &str, paths: Vec<String>) -> String {
    let (count, sample) = crate::risk::sample(paths);
    let more = if count > sample.len() { ", …" } else { "" };
    let noun = if count == 1 { "entry" } else { "entries" };
    format!("{count} {noun} {what}: {}{more}", sample.join(", "))
}

/// The handle [`take`] is given in the tests: the directory at `path`.
#[cfg(test)]
pub(crate) fn handle(path: &std::path::Path) -> std::os::fd::OwnedFd {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A small tree: `a.txt`, `sub/b.txt`, `sub/deeper/c.txt`, a symlink.
    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("sub/deeper")).unwrap();
        fs::write(d.join("a.txt"), "a").unwrap();
        fs::write(d.join("sub/b.txt"), "bb").unwrap();
        fs::write(d.join("sub/deeper/c.txt"), "ccc").unwrap();
        std::os::unix::fs::symlink("sub/b.txt", d.join("link")).unwrap();
        tmp
    }

    /// A settled stamp of `dir` (its entries older than the tick bound).
    fn settled(dir: &Path) -> Stamp {
        let (s, fresh) = take_settled(&handle(dir)).unwrap();
        assert!(fresh.is_empty(), "{fresh:?}");
        s
    }

    fn again(dir: &Path) -> Stamp {
        take(&handle(dir)).unwrap()
    }

    #[test]
    fn the_same_tree_stamps_the_same() {
        let t = tree();
        let one = settled(t.path());
        assert_eq!(one.len(), 7, "{:?}", one.entries);
        // Reading files changes nothing a stamp covers.
        fs::read(t.path().join("sub/deeper/c.txt")).unwrap();
        assert_eq!(changes(&one, &again(t.path())), Vec::<String>::new());
    }

    #[test]
    fn a_write_that_changes_the_size_shows() {
        let t = tree();
        let one = settled(t.path());
        fs::OpenOptions::new()
            .append(true)
            .open(t.path().join("sub/deeper/c.txt"))
            .unwrap()
            .write_all(b"more")
            .unwrap();
        assert_eq!(
            changes(&one, &again(t.path())),
            vec!["sub/deeper/c.txt (written)".to_string()]
        );
    }

    #[test]
    fn a_write_that_keeps_the_size_shows() {
        let t = tree();
        let one = settled(t.path());
        // Same length, other bytes, in place: only st_ctime moves.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(t.path().join("sub/b.txt"))
            .unwrap();
        f.write_all(b"xy").unwrap();
        drop(f);
        assert_eq!(
            changes(&one, &again(t.path())),
            vec!["sub/b.txt (written)".to_string()]
        );
    }

    #[test]
    fn a_file_made_in_a_subdirectory_shows() {
        let t = tree();
        let one = settled(t.path());
        fs::write(t.path().join("sub/deeper/new.o"), "").unwrap();
        assert_eq!(
            changes(&one, &again(t.path())),
            vec![
                "sub/deeper (changed)".to_string(),
                "sub/deeper/new.o (new)".into()
            ]
        );
    }

    #[test]
    fn a_removed_file_shows() {
        let t = tree();
        let one = settled(t.path());
        fs::remove_file(t.path().join("a.txt")).unwrap();
        assert_eq!(
            changes(&one, &again(t.path())),
            vec!["a.txt (gone)".to_string()]
        );
    }

    #[test]
    fn a_rename_shows() {
        let t = tree();
        let one = settled(t.path());
        fs::rename(t.path().join("sub/b.txt"), t.path().join("sub/b2.txt")).unwrap();
        let got = changes(&one, &again(t.path()));
        assert!(got.contains(&"sub/b.txt (gone)".to_string()), "{got:?}");
        assert!(got.contains(&"sub/b2.txt (new)".to_string()), "{got:?}");
        // Renamed within the same directory and back: the same names, but
        // the directory and the file were changed (their ctime).
        let one = settled(t.path());
        fs::rename(t.path().join("sub/b2.txt"), t.path().join("sub/tmp")).unwrap();
        fs::rename(t.path().join("sub/tmp"), t.path().join("sub/b2.txt")).unwrap();
        assert!(!changes(&one, &again(t.path())).is_empty());
    }

    #[test]
    fn a_chmod_shows() {
        let t = tree();
        let one = settled(t.path());
        fs::set_permissions(t.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            changes(&one, &again(t.path())),
            vec!["a.txt (changed)".to_string()]
        );
        // The stamped directory's own mode counts too; its times do not.
        let one = settled(t.path());
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(
            changes(&one, &again(t.path())),
            vec![". (changed)".to_string()]
        );
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let t = tree();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("x.txt"), "x").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), t.path().join("out")).unwrap();
        let one = settled(t.path());
        assert!(
            one.entries.iter().all(|e| !e.path.starts_with(b"out/")),
            "nothing below a symlink is stamped"
        );
        // What the link points to may change: the stamp does not care.
        fs::write(elsewhere.path().join("x.txt"), "changed").unwrap();
        fs::write(elsewhere.path().join("y.txt"), "new").unwrap();
        assert_eq!(changes(&one, &again(t.path())), Vec::<String>::new());
        // The link itself is an entry. (The new link may get the freed
        // inode number back: its ctime tells it apart.)
        fs::remove_file(t.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("out")).unwrap();
        let got = changes(&one, &again(t.path()));
        assert!(
            got == ["out (replaced)"] || got == ["out (changed)"],
            "{got:?}"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_walk_is_not_followed() {
        let t = tree();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("secret"), "x").unwrap();
        // The walk's second step: `sub` was looked at as a directory, then
        // became a symlink before it was opened.
        let dir = handle(t.path());
        let top = Dir::openat(&dir, ".", dir_flags(), Mode::empty()).unwrap();
        let mut entries = Vec::new();
        let mut frames = Vec::new();
        let dev = fstat(&dir).unwrap().st_dev;
        read_into(top, &[], dev, &mut entries, &mut frames).unwrap();
        fs::rename(t.path().join("sub"), t.path().join("sub-away")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), t.path().join("sub")).unwrap();
        let f = frames.into_iter().find(|f| f.rel == b"sub").unwrap();
        let opened = openat(
            f.parent.as_fd(),
            OsStr::from_bytes(name_of(&f.rel)),
            dir_flags(),
            Mode::empty(),
        );
        assert!(
            matches!(opened, Err(Errno::ELOOP | Errno::ENOTDIR)),
            "{opened:?}"
        );
        // And a whole stamp sees a link, nothing below it.
        let s = again(t.path());
        assert!(s.entries.iter().all(|e| !e.path.starts_with(b"sub/")));
    }

    #[test]
    fn a_tree_written_while_stamped_is_not_settled() {
        let t = tree();
        // Written just now: fresh, and still fresh however long the
        // writer keeps writing.
        let path = t.path().join("sub/b.txt");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs::write(&path, "bb").unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(10));
        let (_, fresh) = take_settled(&handle(t.path())).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(fresh, vec!["sub/b.txt".to_string()]);
        // Once the writes stop, it settles.
        assert!(take_settled(&handle(t.path())).unwrap().1.is_empty());
    }

    /// The cost of a stamp: a tree of 5,000 files in 250 directories,
    /// stamped five times; prints the median. Not a check (wall-clock
    /// depends on the machine):
    /// `cargo test --release --lib stamp_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn stamp_cost() {
        let t = tempfile::tempdir().unwrap();
        for d in 0..250 {
            let dir = t.path().join(format!("src/m{}/d{d}", d % 10));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                fs::write(dir.join(format!("f{f}.rs")), "fn main() {}\n").unwrap();
            }
        }
        let h = handle(t.path());
        let mut took: Vec<Duration> = (0..5)
            .map(|_| {
                let at = std::time::Instant::now();
                let s = take(&h).unwrap();
                let took = at.elapsed();
                assert_eq!(s.len(), 1 + 1 + 10 + 250 + 5000);
                took
            })
            .collect();
        took.sort();
        eprintln!(
            "stamp of 5,261 entries: median {:?} (min {:?}, max {:?})",
            took[2], took[0], took[4]
        );
    }

    #[test]
    fn describe_names_a_sample() {
        let many: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
        let d = describe("changed", many);
        assert!(d.starts_with("12 entries changed: f00, f01"), "{d}");
        assert!(d.ends_with(", …"), "{d}");
        assert_eq!(describe("changed", vec!["a".into()]), "1 entry changed: a");
    }
}
