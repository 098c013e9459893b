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
