//! The command line: every flag documented once, here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Reconciles agent chats with what the host runs: stops the agent
/// processes, closes the opencode sessions and removes the git worktrees of
/// chats and sessions that are no longer live, without ever losing work.
#[derive(Debug, Parser)]
#[command(name = "boo-reconciler", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: ./config/boo-reconciler.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Sets database.url (sqlite://PATH or postgres://…)
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Sets host.id
    #[arg(long, global = true, value_name = "ID")]
    pub host_id: Option<String>,

    /// Sets worktrees.root
    #[arg(long, global = true, value_name = "DIR")]
    pub worktree_root: Option<String>,

    /// Sets any setting, as section.key=value (repeatable; wins over the
    /// environment and the file)
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: a pass every loop.interval until SIGINT/SIGTERM.
    Run {
        /// Observe only: plan and report every pass, act on nothing (the
        /// same as loop.dry_run = true)
        #[arg(long)]
        dry_run: bool,
    },
    /// Run one pass now and print what it did.
    ///
    /// Exit codes: 0 converged, 3 converged except worktrees kept at risk,
    /// 1 error, 2 bad usage or configuration.
    Once {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Archive, then remove, worktrees kept at risk (never for mount
        /// points or worktrees in use)
        #[arg(long)]
        force: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print what a pass would do, with reasons; writes nothing.
    Plan {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// List the archives `--force` left in this host's repositories,
    /// newest first, with what each holds; reads only.
    Archives {
        /// Only the archives of this worktree id
        #[arg(long, value_name = "ID")]
        worktree: Option<String>,
        /// Only the archives of this session's worktrees
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Bring a force-archived worktree back: a new worktree with HEAD, the
    /// index, the working tree and the untracked and precious files as
    /// archived. Never writes over anything, never moves a branch, never
    /// deletes the archive.
    Restore {
        /// An archive ref (refs/boo/archive/<id>/<secs>), or a worktree id
        /// for its newest archive
        what: String,
        /// Where to create it [default: a new directory under
        /// worktrees.root named after the worktree id]
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// Record the worktree root as it is now, after a pass held because it
    /// was not what was recorded (another mount, or emptied while rows say
    /// worktrees are in it) and the change is meant: a new disk, a root
    /// wiped on purpose. Passes then judge it again; rows whose worktrees
    /// are gone are marked removed.
    AcceptRoot,
    /// Start an agent the controller can always stop: labelled, leading its
    /// process group, in a cgroup of its own under
    /// processes.cgroup_parent; then become it (exec), standard input and
    /// output untouched.
    ///
    /// Exit codes: only on failure: 2 bad input or cgroup parent, 127 the
    /// command cannot be run.
    Launch {
        /// The agent's chat (the chat label's value)
        #[arg(long, value_name = "ID")]
        chat: String,
        /// The agent's session (the session label's value)
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// The agent's name, e.g. qwen or opencode (the agent label's value)
        #[arg(long, value_name = "NAME")]
        agent: String,
        /// The agent's command and its arguments (after --)
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Show what the running controller sees (its GET /status).
    Status {
        /// The controller's HTTP address [default: http://<http.listen>]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print the status document as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ScopeArgs {
    /// Only this chat (and its session's worktree if it was the last live chat)
    #[arg(long, value_name = "ID")]
    pub chat: Option<String>,
    /// Only this session's chats and worktree
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

impl Cli {
    /// Parses `args` (the program name first) as clap does, then puts back
    /// what clap drops: a global flag given both before and after the
    /// command keeps only the later occurrence's values, so `--set a=1 run
    /// --set b=2` would silently lose `a=1` (a root, a URL). Every `--set`
    /// is kept, in order; a single-valued flag given twice with different
    /// values is an error naming it.
    pub fn parse_all<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut cli = Cli::try_parse_from(&args)?;
        let flags = global_flags();
        // An agent's own arguments are not this program's flags.
        let end = match &cli.command {
            Command::Launch { command, .. } => args.len().saturating_sub(command.len()),
            _ => args.len(),
        };
        let seen = occurrences(&args[1.min(end)..end], &flags);
        cli.global.set = seen
            .iter()
            .filter(|(flag, _)| flag == "--set")
            .map(|(_, v)| v.clone())
            .collect();
        for (flag, _) in flags.iter().filter(|(_, repeated)| !repeated) {
            let mut values: Vec<&String> = seen
                .iter()
                .filter(|(f, _)| f == flag)
                .map(|(_, v)| v)
                .collect();
            values.dedup();
            if values.len() > 1 {
                let shown: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{flag} given more than once, with {}: give it once\n",
                        shown.join(" and ")
                    ),
                ));
            }
        }
        Ok(cli)
    }

    /// Every command-line setting: the global flags' ([`Global::overrides`])
    /// and then the command's own (`run --dry-run` is `loop.dry_run=true`).
    pub fn overrides(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = self.global.overrides()?;
        if let Command::Run { dry_run: true } = self.command {
            out.push(("loop.dry_run".into(), "true".into()));
        }
        Ok(out)
    }
}

/// The global flags, as `--name`, each with whether it may be repeated
/// (`--set`): read from the one definition above, so that a flag added
/// there is covered here.
fn global_flags() -> Vec<(String, bool)> {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .filter(|a| a.is_global_set() && a.get_action().takes_values())
        .filter_map(|a| {
            let repeated = matches!(a.get_action(), clap::ArgAction::Append);
            a.get_long().map(|l| (format!("--{l}"), repeated))
        })
        .collect()
}

/// Each global flag's occurrences in `args`, in order, as clap has already
/// accepted them: every such flag takes a value (the next argument, or
/// after `=`), and nothing after `--` is a flag.
fn occurrences(args: &[std::ffi::OsString], flags: &[(String, bool)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let known = |f: &str| flags.iter().any(|(name, _)| name == f);
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if let Some((flag, value)) = a.split_once('=') {
            if known(flag) {
                out.push((flag.to_string(), value.to_string()));
            }
        } else if known(&a) {
            if let Some(value) = it.next() {
                out.push((a.to_string(), value.to_string()));
            }
        }
    }
    out
}

impl Global {
    /// The command-line settings as `section.key` overrides, or the
    /// malformed `--set` argument.
    pub fn overrides(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let named = [
            ("database.url", &self.database_url),
            ("host.id", &self.host_id),
            ("worktrees.root", &self.worktree_root),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                out.push((key.to_string(), v.clone()));
            }
        }
        for s in &self.set {
            match s.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    out.push((k.trim().to_string(), v.to_string()))
                }
                _ => {
                    return Err(format!(
                    "invalid --set {s:?}: expected SECTION.KEY=VALUE, e.g. --set loop.interval=10s"
                ))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(args: &[&str]) -> Vec<String> {
        Cli::parse_all(args.iter().copied())
            .expect("parses")
            .global
            .set
    }

    #[test]
    fn a_set_before_and_after_the_command_are_both_kept_in_order() {
        assert_eq!(
            sets(&[
                "b",
                "--set",
                "a.x=1",
                "--set=a.y=2",
                "plan",
                "--set",
                "a.z=3"
            ]),
            ["a.x=1", "a.y=2", "a.z=3"]
        );
        assert_eq!(sets(&["b", "plan", "--set", "a.z=3"]), ["a.z=3"]);
        assert!(sets(&["b", "plan"]).is_empty());
    }

    #[test]
    fn a_single_valued_flag_given_twice_with_different_values_is_an_error() {
        let e = Cli::parse_all(["b", "--worktree-root", "/a", "plan", "--worktree-root=/b"])
            .expect_err("conflict");
        let text = e.to_string();
        assert!(
            text.contains("--worktree-root") && text.contains("\"/a\" and \"/b\""),
            "{text}"
        );
        let same =
            Cli::parse_all(["b", "--host-id", "h", "plan", "--host-id", "h"]).expect("same value");
        assert_eq!(same.global.host_id.as_deref(), Some("h"));
    }

    #[test]
    fn the_global_flags_are_read_from_the_definition() {
        let flags = global_flags();
        for (flag, repeated) in [
            ("--config", false),
            ("--log-format", false),
            ("--database-url", false),
            ("--host-id", false),
            ("--worktree-root", false),
            ("--set", true),
        ] {
            assert!(
                flags.contains(&(flag.to_string(), repeated)),
                "{flag}: {flags:?}"
            );
        }
    }

    #[test]
    fn a_set_value_that_looks_like_a_flag_is_a_value() {
        assert_eq!(
            sets(&["b", "--set", "worktrees.precious=--config", "plan"]),
            ["worktrees.precious=--config"]
        );
    }
}
