//! Which mount holds a path, read from `/proc/self/mountinfo`: what the
//! worktree root's identity is recorded as ([`crate::root_record`]).
//!
//! Parsed here rather than with a crate: a mount point anywhere on the
//! host that is not UTF-8 must not fail the read, and the kernel's octal
//! escapes (`\040` for a space) must be decoded to compare paths.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted (field 5).
    pub point: PathBuf,
    /// The directory of its file system that is mounted there (field 4):
    /// a bind mount of a subdirectory shows it.
    pub root: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl Mount {
    /// What the root's record holds of its mount. The device number is
    /// left out: a tmpfs gets a new one at every boot.
    pub fn identity(&self) -> String {
        format!(
            "{}:{} on {} (type {})",
            self.source,
            self.root.display(),
            self.point.display(),
            self.fstype
        )
    }
}

fn path_field(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_octal(field)))
}

fn text_field(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_octal(field)).into_owned()
}

/// Every mount of a mountinfo text, in its order (later mounts over
/// earlier ones at the same point).
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-")?;
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let (fstype, source) = (fields.get(dash + 1)?, fields.get(dash + 2)?);
            Some(Mount {
                point: path_field(point),
                root: path_field(root),
                fstype: text_field(fstype),
                source: text_field(source),
            })
        })
        .collect()
}

/// The mount that holds `path` (absolute and resolved) in `mounts`: the
/// one with the longest mount point that contains it, the later of two at
/// one point.
pub fn holding<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.point)) {
        if best.is_none_or(|b| m.point.as_os_str().len() >= b.point.as_os_str().len()) {
            best = Some(m);
        }
    }
    best
}

/// The mount holding `path` in this process's mount namespace.
pub fn mount_of(path: &Path) -> io::Result<Mount> {
    let mounts = parse(&std::fs::read(MOUNTINFO)?);
    holding(&mounts, path).cloned().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mount in {MOUNTINFO} holds {}", path.display()),
        )
    })
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
pub fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c))
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        30 22 0:25 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=1g\n\
        41 30 8:17 /srv/wt /tmp/boo\\040worktrees rw master:3 - xfs /dev/sdb1 rw\n\
        42 30 0:40 / /tmp/boo\\040worktrees rw - tmpfs tmpfs rw\n";

    #[test]
    fn the_mount_holding_a_path_is_the_deepest_and_the_latest() {
        let mounts = parse(INFO);
        assert_eq!(mounts.len(), 4);
        let root = Path::new("/tmp/boo worktrees");
        // Two mounts at one point: the later one is what is seen there.
        let m = holding(&mounts, &root.join("w1")).unwrap();
        assert_eq!((m.fstype.as_str(), m.point.as_path()), ("tmpfs", root));
        let under = &mounts[..3];
        let m = holding(under, root).unwrap();
        assert_eq!(m.source, "/dev/sdb1");
        assert_eq!(m.root, Path::new("/srv/wt"));
        // Unmounted: /tmp holds it, and its identity says so.
        let m = holding(&mounts[..2], root).unwrap();
        assert_eq!(m.point, Path::new("/tmp"));
        assert_ne!(m.identity(), holding(under, root).unwrap().identity());
        // A prefix of a name is not a parent.
        assert_eq!(
            holding(&mounts[..3], Path::new("/tmpx")).unwrap().point,
            Path::new("/")
        );
    }

    #[test]
    fn this_process_sees_the_mount_of_its_own_root_directory() {
        let m = mount_of(Path::new("/")).unwrap();
        assert_eq!(m.point, Path::new("/"));
    }
}
