//! Agent cgroups in the cgroup v2 hierarchy: one per agent, made by
//! `launch` ([`crate::launch`]), found and torn down by the controller.
//!
//! Why a cgroup: a process can clear its environment, call
//! `setproctitle`, double-fork into a new session or fork without end; it
//! cannot leave its cgroup without write access to an ancestor's
//! `cgroup.procs`, and `cgroup.kill` stops every member at once, however
//! many there are and whatever they call themselves.
//!
//! # The record
//! A cgroup's name records its agent, so that the controller needs no
//! other store to know whose it is, and an operator reads it with `ls`:
//! `chat=<chat>,session=<session>,agent=<agent>[,instance=<instance>],pid=<pid>`,
//! each value percent-encoded outside `[A-Za-z0-9._-]`. A name that does
//! not read that way is not guessed at: the controller reports it and
//! leaves it alone.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The subtree `auto` makes for a root controller and launcher, at the top
/// of the v2 hierarchy.
pub const AUTO_SUBTREE: &str = "boo-agents";

/// The longest name a cgroup directory may have.
const NAME_MAX: usize = 255;

/// What an agent's cgroup records of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    pub chat: String,
    pub session: Option<String>,
    pub agent: String,
    /// `processes.instance` of the launcher's configuration, if set.
    pub instance: Option<String>,
    /// The launcher's pid, which is the agent's after the exec.
    pub pid: i32,
}

impl Record {
    /// The cgroup name recording `self`; an error names the value that
    /// makes it too long for a directory name.
    pub fn name(&self) -> Result<String, String> {
        let mut name = format!("chat={}", encode(&self.chat));
        if let Some(s) = &self.session {
            name.push_str(&format!(",session={}", encode(s)));
        }
        name.push_str(&format!(",agent={}", encode(&self.agent)));
        if let Some(i) = &self.instance {
            name.push_str(&format!(",instance={}", encode(i)));
        }
        name.push_str(&format!(",pid={}", self.pid));
        if name.len() > NAME_MAX {
            return Err(format!(
                "the cgroup name recording chat {:?}, session {:?} and agent {:?} is {} bytes, \
                 more than a directory name may have ({NAME_MAX}): use shorter ids",
                self.chat,
                self.session.as_deref().unwrap_or(""),
                self.agent,
                name.len()
            ));
        }
        Ok(name)
    }

    /// Reads a cgroup name back; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Record, String> {
        let (mut chat, mut session, mut agent, mut instance, mut pid) =
            (None, None, None, None, None);
        for field in name.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("field {field:?} is not key=value"))?;
            let value = decode(value).ok_or_else(|| format!("{key}: bad percent-encoding"))?;
            let slot = match key {
                "chat" => &mut chat,
                "session" => &mut session,
                "agent" => &mut agent,
                "instance" => &mut instance,
                "pid" => &mut pid,
                other => return Err(format!("unknown field {other:?}")),
            };
            if slot.replace(value).is_some() {
                return Err(format!("field {key} given twice"));
            }
        }
        let chat = chat.filter(|c| !c.is_empty()).ok_or("no chat recorded")?;
        let agent = agent.filter(|a| !a.is_empty()).ok_or("no agent recorded")?;
        let pid = pid
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|p| *p > 1)
            .ok_or("no pid recorded")?;
        Ok(Record {
            chat,
            session: session.filter(|s| !s.is_empty()),
            agent,
            instance,
            pid,
        })
    }
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `processes.cgroup_parent`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// `off`: no agent cgroups.
    Off,
    /// `auto` found no place for them: why.
    Unavailable(String),
    /// Agent cgroups live under this directory of the v2 hierarchy.
    At {
        path: PathBuf,
        /// Made by `auto` (created on first use) rather than named by the
        /// operator (which must exist).
        auto: bool,
    },
}

impl Parent {
    /// Resolves the setting against this host's mounts. `auto` is the v2
    /// hierarchy's [`AUTO_SUBTREE`] for root and nothing for any other
    /// user (only an operator can name the subtree delegated to it); a
    /// path must lie in a cgroup2 mount.
    pub fn resolve(setting: &str, is_root: bool) -> Result<Parent, String> {
        match setting {
            "off" => Ok(Parent::Off),
            "auto" | "" => {
                if !is_root {
                    return Ok(Parent::Unavailable(
                        "processes.cgroup_parent is auto and this user is not root: set it to a \
                         cgroup v2 subtree delegated to this user to contain agents"
                            .into(),
                    ));
                }
                match v2_mount() {
                    Ok(m) => Ok(Parent::At {
                        path: m.join(AUTO_SUBTREE),
                        auto: true,
                    }),
                    Err(why) => Ok(Parent::Unavailable(why)),
                }
            }
            path => {
                let path = PathBuf::from(path);
                let mounts = crate::mounts::parse(
                    &fs::read(crate::mounts::MOUNTINFO)
                        .map_err(|e| format!("cannot read {}: {e}", crate::mounts::MOUNTINFO))?,
                );
                match crate::mounts::holding(&mounts, &path) {
                    Some(m) if m.fstype == "cgroup2" => Ok(Parent::At { path, auto: false }),
                    Some(m) => Err(format!(
                        "processes.cgroup_parent {} is on a {} file system, not in the cgroup v2 \
                         hierarchy: name a directory under a cgroup2 mount{}",
                        path.display(),
                        m.fstype,
                        v2_mount()
                            .map(|p| format!(" (here: {})", p.display()))
                            .unwrap_or_default()
                    )),
                    None => Err(format!(
                        "processes.cgroup_parent {} is on no mount",
                        path.display()
                    )),
                }
            }
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Parent::At { path, .. } => Some(path),
            Parent::Off | Parent::Unavailable(_) => None,
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one.
pub fn v2_mount() -> Result<PathBuf, String> {
    let text = fs::read(crate::mounts::MOUNTINFO)
        .map_err(|e| format!("cannot read {}: {e}", crate::mounts::MOUNTINFO))?;
    let mounts = crate::mounts::parse(&text);
    let v2: Vec<_> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    v2.iter()
        .find(|m| m.point == Path::new("/sys/fs/cgroup"))
        .or_else(|| v2.first())
        .map(|m| m.point.clone())
        .ok_or_else(|| "no cgroup v2 hierarchy is mounted (no cgroup2 in mountinfo)".into())
}

/// The pids in `cgroup` and every cgroup below it. A cgroup removed
/// meanwhile has none.
pub fn members(cgroup: &Path) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        match fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != cgroup => continue,
            Err(e) => return Err(e),
        }
        dirs.extend(children(&dir)?);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The cgroups directly below `cgroup`.
pub fn children(cgroup: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(cgroup) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether any process is in `cgroup` or below (`populated` of
/// `cgroup.events`).
pub fn populated(cgroup: &Path) -> io::Result<bool> {
    let text = fs::read_to_string(cgroup.join("cgroup.events"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() == "1")
        .ok_or_else(|| io::Error::other("cgroup.events has no populated line"))
}

/// Kills every process of `cgroup` and below at once (`cgroup.kill`,
/// Linux 5.14).
pub fn kill(cgroup: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.kill"))?
        .write_all(b"1")
}

/// Removes `cgroup` and the cgroups below it, deepest first. Only an empty
/// cgroup can be removed (the kernel refuses the others with `EBUSY`), so
/// this never takes a process with it. Gone already is done.
pub fn remove(cgroup: &Path) -> io::Result<()> {
    for child in children(cgroup)? {
        remove(&child)?;
    }
    match fs::remove_dir(cgroup) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Moves process `pid` into `cgroup`.
pub fn enter(cgroup: &Path, pid: i32) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?
        .write_all(pid.to_string().as_bytes())
}

/// The v2 cgroup of `pid`, as `/proc/<pid>/cgroup` names it (relative to
/// the hierarchy's root as this process sees it), e.g. `/boo-agents/chat=…`.
pub fn of_pid(pid: i32) -> io::Result<PathBuf> {
    let text = fs::read(format!("/proc/{pid}/cgroup"))?;
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .map(|rel| PathBuf::from(OsStr::from_bytes(rel)))
        .ok_or_else(|| io::Error::other(format!("pid {pid} has no cgroup v2 line")))
}

/// `cgroup` (a path under the v2 mount `mount`) as `/proc/<pid>/cgroup`
/// names it.
pub fn relative(mount: &Path, cgroup: &Path) -> Option<PathBuf> {
    let rel = cgroup.strip_prefix(mount).ok()?;
    Some(Path::new("/").join(rel))
}

/// Whether `pid` is in `rel` (as [`relative`] gives it) or below it now.
pub fn contains(rel: &Path, pid: i32) -> bool {
    of_pid(pid).is_ok_and(|c| c.starts_with(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_whatever_its_ids_hold() {
        let r = Record {
            chat: "c,1=x%/y z".into(),
            session: Some("s.2".into()),
            agent: "qwen".into(),
            instance: Some("blue".into()),
            pid: 4242,
        };
        let name = r.name().unwrap();
        assert_eq!(
            name,
            "chat=c%2C1%3Dx%25%2Fy%20z,session=s.2,agent=qwen,instance=blue,pid=4242"
        );
        assert!(!name.contains('/'));
        assert_eq!(Record::parse(&name).unwrap(), r);
        let bare = Record {
            session: None,
            instance: None,
            ..r
        };
        assert_eq!(Record::parse(&bare.name().unwrap()).unwrap(), bare);
    }

    #[test]
    fn a_name_that_does_not_read_as_a_record_is_an_error_never_a_guess() {
        for bad in [
            "",
            "something",
            "chat=a,agent=b",
            "chat=,agent=b,pid=5",
            "chat=a,agent=b,pid=1",
            "chat=a,agent=b,pid=x",
            "chat=a,chat=b,agent=c,pid=5",
            "chat=a%zz,agent=b,pid=5",
            "chat=a,agent=b,pid=5,colour=red",
        ] {
            assert!(Record::parse(bad).is_err(), "{bad:?} was read as a record");
        }
    }

    #[test]
    fn an_id_too_long_for_a_directory_name_is_refused_naming_it() {
        let r = Record {
            chat: "x".repeat(300),
            session: None,
            agent: "a".into(),
            instance: None,
            pid: 7,
        };
        let e = r.name().unwrap_err();
        assert!(e.contains("more than a directory name may have"), "{e}");
    }

    #[test]
    fn the_setting_resolves_off_auto_and_paths() {
        assert_eq!(Parent::resolve("off", true).unwrap(), Parent::Off);
        match Parent::resolve("auto", false).unwrap() {
            Parent::Unavailable(why) => assert!(why.contains("delegated"), "{why}"),
            other => panic!("{other:?}"),
        }
        let e = Parent::resolve("/tmp/not-a-cgroup", true).unwrap_err();
        assert!(e.contains("not in the cgroup v2 hierarchy"), "{e}");
    }
}
