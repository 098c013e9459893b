//! The agent cgroups under `processes.cgroup_parent` ([`crate::cgroup`]).
//!
//! Only this controller's are listed: with `processes.instance` set, those
//! recording that instance; without, those recording none. A cgroup whose
//! name does not read as a record is listed with why, for the report: it
//! is never acted on.

use std::path::Path;
use std::time::SystemTime;

use crate::cgroup::{self, Record};
use crate::model::AgentCgroup;

/// What [`observe`] found.
#[derive(Clone, Debug, Default)]
pub struct Cgroups {
    pub cgroups: Vec<AgentCgroup>,
    /// Why the parent could not be read, if it could not: agents in it
    /// are then not seen this pass.
    pub error: Option<String>,
}

/// The cgroups directly under `parent`; a parent that does not exist yet
/// (no agent launched) has none.
pub fn observe(parent: &Path, instance: Option<&str>) -> Cgroups {
    let mut out = Cgroups::default();
    let dirs = match cgroup::children(parent) {
        Ok(d) => d,
        Err(e) => {
            out.error = Some(format!(
                "cannot list the agent cgroups in {}: {e}",
                parent.display()
            ));
            return out;
        }
    };
    for path in dirs {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let record = Record::parse(&name);
        if let Ok(r) = &record {
            if r.instance.as_deref() != instance {
                continue;
            }
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // removed meanwhile
        };
        let members = match cgroup::members(&path) {
            Ok(m) => m,
            Err(e) => {
                out.error = Some(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        out.cgroups.push(AgentCgroup {
            path,
            record,
            members,
            created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn only_this_instances_cgroups_are_listed_and_a_name_that_is_no_record_is_kept_with_why() {
        let mount = cgroup::v2_mount().expect("the cgroup v2 hierarchy (run as root)");
        let parent = mount.join(format!("boo-unit-observe-{}", fastrand::u32(..)));
        std::fs::create_dir(&parent).expect("a writable cgroup v2 hierarchy (run as root)");
        let record = |instance: Option<&str>| Record {
            chat: "c1".into(),
            session: None,
            agent: "qwen".into(),
            instance: instance.map(Into::into),
            pid: 77,
        };
        let blue = parent.join(record(Some("blue")).name().unwrap());
        let none = parent.join(record(None).name().unwrap());
        let odd = parent.join("made-by-hand");
        for d in [&blue, &none, &odd] {
            std::fs::create_dir(d).unwrap();
        }
        let names = |seen: &Cgroups| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = seen.cgroups.iter().map(|c| c.path.clone()).collect();
            v.sort();
            v
        };
        let as_blue = observe(&parent, Some("blue"));
        let as_none = observe(&parent, None);
        let gone = observe(&parent.join("not-there"), None);
        for d in [&blue, &none, &odd] {
            std::fs::remove_dir(d).unwrap();
        }
        std::fs::remove_dir(&parent).unwrap();

        assert_eq!(names(&as_blue), {
            let mut v = vec![blue.clone(), odd.clone()];
            v.sort();
            v
        });
        assert_eq!(names(&as_none), {
            let mut v = vec![none.clone(), odd.clone()];
            v.sort();
            v
        });
        let odd_seen = as_none.cgroups.iter().find(|c| c.path == odd).unwrap();
        assert!(odd_seen.record.is_err());
        assert!(odd_seen.members.is_empty());
        assert!(as_none.error.is_none() && gone.error.is_none() && gone.cgroups.is_empty());
    }
}
