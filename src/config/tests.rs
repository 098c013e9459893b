use std::collections::BTreeMap;

use super::error::did_you_mean;
use super::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/boo-reconciler.toml");

fn s(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// Sets `host.id` on the command line, so tests don't depend on the
/// machine's hostname.
fn with_host(mut overrides: Vec<(String, String)>) -> Vec<(String, String)> {
    overrides.insert(0, s("host.id", "test-host"));
    overrides
}

fn defaults() -> Config {
    Config::resolve(None, &[], &with_host(vec![])).unwrap()
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

fn load(
    file: Option<&str>,
    env: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> Result<Config, ConfigError> {
    let tmp = file.map(write);
    let sources = Sources {
        file: tmp.as_ref().map(|f| f.path().to_path_buf()),
        env: env.iter().map(|(a, b)| s(a, b)).collect(),
        overrides: with_host(overrides.iter().map(|(a, b)| s(a, b)).collect()),
    };
    Config::load(&sources)
}

fn load_err(file: Option<&str>, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> ConfigError {
    load(file, env, overrides).expect_err("expected a config error")
}

fn setting(config: &Config, name: &str) -> toml::Value {
    let (section, key) = name.split_once('.').unwrap();
    config.summary()[section][key].clone()
}

// -- defaults, example file, table ------------------------------------

#[test]
fn defaults_are_the_documented_values() {
    let c = defaults();
    assert_eq!(c.database.url, "sqlite://boo-reconciler.db");
    assert!(c.database.auto_migrate);
    assert_eq!(c.host.id, "test-host");
    assert_eq!(c.r#loop.interval, Duration::from_secs(30));
    assert_eq!(c.r#loop.jitter, Duration::from_secs(3));
    assert_eq!(c.r#loop.pass_timeout, Duration::from_secs(120));
    assert_eq!(c.r#loop.max_parallel_actions, 4);
    assert!(!c.r#loop.dry_run);
    assert!(c.worktrees.enabled && c.processes.enabled && c.opencode.enabled);
    assert_eq!(c.worktrees.root, PathBuf::from("/tmp/booworktrees"));
    assert_eq!(c.worktrees.orphan_min_age, Duration::from_secs(600));
    assert_eq!(c.worktrees.precious, vec![".env", ".env.*"]);
    assert_eq!(c.processes.chat_label, "BOO_CHAT_ID");
    assert_eq!(c.processes.session_label, "BOO_SESSION_ID");
    assert_eq!(c.processes.agent_label, "BOO_AGENT");
    assert_eq!(c.processes.instance, "");
    assert_eq!(c.processes.instance(), None);
    assert_eq!(c.processes.instance_label, "BOO_INSTANCE");
    assert_eq!(c.processes.orphan_min_age, Duration::from_secs(120));
    assert_eq!(c.processes.term_grace, Duration::from_secs(5));
    assert_eq!(
        Key::find("processes.term_grace").unwrap().env_var(),
        "BOO_RECONCILER_PROCESSES_TERM_GRACE"
    );
    assert_eq!(
        c.opencode.url.as_ref().map(|u| u.as_str()),
        Some("http://127.0.0.1:4096/")
    );
    assert_eq!(c.opencode.username, "opencode");
    assert_eq!(c.opencode.password, "");
    assert_eq!(c.opencode.timeout, Duration::from_secs(3));
    assert_eq!(c.opencode.orphan_min_age, Duration::from_secs(600));
}

#[test]
fn host_id_defaults_to_the_hostname() {
    let c = Config::defaults().unwrap();
    let hostname = nix::unistd::gethostname().unwrap();
    assert_eq!(c.host.id, hostname.to_string_lossy());
}

#[test]
fn example_file_equals_defaults() {
    let sources = Sources {
        file: Some(PathBuf::from(EXAMPLE)),
        env: vec![],
        overrides: with_host(vec![]),
    };
    assert_eq!(Config::load(&sources).unwrap(), defaults());
}

#[test]
fn example_file_shows_every_key_with_its_doc() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for key in KEYS {
        let header = format!("[{}]", key.section);
        let start = lines
            .iter()
            .position(|l| l.trim() == header)
            .unwrap_or_else(|| panic!("example file lacks {header}"));
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |p| start + 1 + p);
        let assignment = format!("{} =", key.key);
        let at = (start + 1..end)
            .find(|&i| {
                let l = lines[i].trim();
                l.strip_prefix("# ").unwrap_or(l).starts_with(&assignment)
            })
            .unwrap_or_else(|| panic!("example file lacks {} in {header}", key.key));
        // host.id is the one commented-out setting: its default is computed.
        let commented = lines[at].trim_start().starts_with('#');
        assert_eq!(
            commented,
            key.default == DefaultValue::Hostname,
            "{}",
            key.name()
        );
        assert_eq!(
            lines[at - 1].trim(),
            format!("# {}", key.doc),
            "comment above {} differs from its doc in KEYS",
            key.name()
        );
    }
}

#[test]
fn key_table_is_consistent() {
    let names: BTreeSet<String> = KEYS.iter().map(Key::name).collect();
    assert_eq!(names.len(), KEYS.len(), "duplicate key");
    let vars: BTreeSet<String> = KEYS.iter().map(Key::env_var).collect();
    assert_eq!(
        vars.len(),
        KEYS.len(),
        "two keys share an environment variable"
    );
    assert_eq!(
        Key::find("worktrees.orphan_min_age").unwrap().env_var(),
        "BOO_RECONCILER_WORKTREES_ORPHAN_MIN_AGE"
    );
    assert_eq!(
        Key::find("loop.max_parallel_actions").unwrap().env_var(),
        "BOO_RECONCILER_LOOP_MAX_PARALLEL_ACTIONS"
    );
    for key in KEYS {
        assert!(
            !key.doc.contains('\n'),
            "{}: doc must be one line",
            key.name()
        );
    }
}

#[test]
fn summary_covers_every_key_and_round_trips() {
    let c = defaults();
    let summary = c.summary();
    let mut names = BTreeSet::new();
    for (section, keys) in &summary {
        for key in keys.as_table().unwrap().keys() {
            names.insert(format!("{section}.{key}"));
        }
    }
    let expected: BTreeSet<String> = KEYS.iter().map(Key::name).collect();
    assert_eq!(names, expected);

    let dumped = toml::to_string(&summary).unwrap();
    let reloaded = load(Some(&dumped), &[], &[]).unwrap();
    assert_eq!(reloaded, c);
}

/// The fields of `config` as its `Debug` shows them, `section.key` to
/// value: every field of every section, secrets redacted.
fn debug_fields(config: &Config) -> BTreeMap<String, String> {
    let text = format!("{config:#?}");
    let mut fields = BTreeMap::new();
    let mut section = "";
    let mut current: Option<String> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if indent == 4 {
            section = line.split_once(':').map_or("", |(name, _)| name);
        } else if indent == 8 && line.starts_with(|c: char| c.is_ascii_lowercase()) {
            let (key, value) = line.split_once(": ").unwrap();
            let name = format!("{section}.{key}");
            fields.insert(name.clone(), value.to_owned());
            current = Some(name);
        } else if indent >= 8 {
            if let Some(value) = current.as_ref().and_then(|name| fields.get_mut(name)) {
                value.push_str(line);
            }
        }
    }
    fields
}

#[test]
fn every_field_has_a_row_and_every_row_a_field() {
    let fields: BTreeSet<String> = debug_fields(&defaults()).into_keys().collect();
    let rows: BTreeSet<String> = KEYS.iter().map(Key::name).collect();
    assert_eq!(fields, rows);
}

#[test]
fn every_row_fills_the_field_of_its_name_and_shows_it_back() {
    let base = defaults();
    let before = debug_fields(&base);
    for key in KEYS {
        let name = key.name();
        let default = key.shown(&base);
        let (text, shown) = samples(key.kind)[1..]
            .iter()
            .map(|(_, text, shown)| (*text, shown.clone()))
            .find(|(_, shown)| *shown != default)
            .unwrap_or_else(|| panic!("{name}: no sample differs from the default"));
        let mut c = base.clone();
        key.set_text(&mut c, text, &Origin::CommandLine).unwrap();
        assert_eq!(key.shown(&c), shown, "{name}: shown through its row");

        let after = debug_fields(&c);
        let changed: Vec<&String> = after
            .iter()
            .filter(|(field, value)| before.get(*field) != Some(*value))
            .map(|(field, _)| field)
            .collect();
        assert_eq!(changed, [&name], "{name}: fills its own field, no other");

        // A secret is shown as ***, which does not load back as itself.
        if key.kind != Kind::Secret {
            let dumped = toml::to_string(&c.summary()).unwrap();
            let file = Some((Path::new("summary.toml"), dumped.as_str()));
            let reloaded = Config::resolve(file, &[], &[]).unwrap();
            assert_eq!(reloaded, c, "{name}: its summary loads back");
        }
    }
}

#[test]
fn summary_and_debug_hide_the_database_password() {
    let c = load(None, &[], &[("database.url", "postgres://u:secret@h/db")]).unwrap();
    assert_eq!(c.database.url, "postgres://u:secret@h/db");
    assert_eq!(
        setting(&c, "database.url").as_str(),
        Some("postgres://u:***@h/db")
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
}

// -- precedence -------------------------------------------------------

/// Three values for each kind, each different from the one before and
/// from the default: (file as TOML, environment, command line), and
/// what the summary shows for each.
fn samples(kind: Kind) -> [(&'static str, &'static str, toml::Value); 3] {
    use toml::Value as V;
    let strs = |v: &[&str]| V::Array(v.iter().map(|s| V::from(*s)).collect());
    match kind {
        Kind::Bool => [
            ("false", "", V::Boolean(false)),
            ("", "yes", V::Boolean(true)),
            ("", "off", V::Boolean(false)),
        ],
        Kind::Duration | Kind::NonZeroDuration => [
            ("\"1h 30m\"", "", V::from("1h 30m")),
            ("", "7s", V::from("7s")),
            ("", "11m", V::from("11m")),
        ],
        Kind::PositiveInt => [
            ("7", "", V::Integer(7)),
            ("", "8", V::Integer(8)),
            ("", "9", V::Integer(9)),
        ],
        Kind::Label => [
            ("\"FILE_LABEL\"", "", V::from("FILE_LABEL")),
            ("", "ENV_LABEL", V::from("ENV_LABEL")),
            ("", "CLI_LABEL_2", V::from("CLI_LABEL_2")),
        ],
        Kind::OptionalName => [
            ("\"file-instance\"", "", V::from("file-instance")),
            ("", "env-instance", V::from("env-instance")),
            ("", "", V::from("")),
        ],
        Kind::Name => [
            ("\"file-host\"", "", V::from("file-host")),
            ("", "env-host", V::from("env-host")),
            ("", "cli-host", V::from("cli-host")),
        ],
        Kind::AutoBool => [
            ("false", "", V::from("false")),
            ("", "yes", V::from("true")),
            ("", "off", V::from("false")),
        ],
        Kind::CgroupParent => [
            ("\"off\"", "", V::from("off")),
            ("", "/sys/fs/cgroup/env", V::from("/sys/fs/cgroup/env")),
            ("", "/sys/fs/cgroup/cli", V::from("/sys/fs/cgroup/cli")),
        ],
        Kind::AbsolutePath => [
            ("\"/srv/file\"", "", V::from("/srv/file")),
            ("", "/srv/env", V::from("/srv/env")),
            ("", "/srv/cli", V::from("/srv/cli")),
        ],
        Kind::DatabaseUrl => [
            ("\"sqlite://file.db\"", "", V::from("sqlite://file.db")),
            ("", "postgres://h/env", V::from("postgres://h/env")),
            ("", "postgresql://h/cli", V::from("postgresql://h/cli")),
        ],
        Kind::HttpUrl => [
            ("\"http://file:1\"", "", V::from("http://file:1")),
            (
                "",
                "https://env.example/oc/",
                V::from("https://env.example/oc/"),
            ),
            ("", "", V::from("")),
        ],
        // A secret shows as *** whatever its value.
        Kind::Secret => [
            ("\"file-secret\"", "", V::from("***")),
            ("", "env-secret", V::from("***")),
            ("", "cli-secret", V::from("***")),
        ],
        Kind::GlobList => [
            ("[\"*.file\"]", "", strs(&["*.file"])),
            ("", " *.env1 , *.env2 ,", strs(&["*.env1", "*.env2"])),
            ("", "*.cli", strs(&["*.cli"])),
        ],
        // Numeric uids need no user behind them; root exists everywhere.
        Kind::User => [
            ("\"root\"", "", V::from("root")),
            ("", "1234", V::from("1234")),
            ("", "4321", V::from("4321")),
        ],
        Kind::SocketAddr => [
            ("\"127.0.0.1:1\"", "", V::from("127.0.0.1:1")),
            ("", "0.0.0.0:2", V::from("0.0.0.0:2")),
            ("", "[::1]:3", V::from("[::1]:3")),
        ],
    }
}

#[test]
fn precedence_override_env_file_default_for_every_key() {
    for key in KEYS {
        let name = key.name();
        let var = key.env_var();
        let [(file_toml, _, file_v), (_, env_s, env_v), (_, cli_s, cli_v)] =
            match (key.kind, key.default) {
                // The samples must differ from the default at each step.
                (Kind::Bool, DefaultValue::Text("false")) => [
                    ("true", "", toml::Value::Boolean(true)),
                    ("", "no", toml::Value::Boolean(false)),
                    ("", "on", toml::Value::Boolean(true)),
                ],
                _ => samples(key.kind),
            };
        let file = format!("[{}]\n{} = {}\n", key.section, key.key, file_toml);
        // host.id is set on the command line by `load`; drop that for it.
        let run = |file: Option<&str>, env: &[(&str, &str)], cli: &[(&str, &str)]| {
            let tmp = file.map(write);
            let mut overrides: Vec<_> = with_host(vec![]);
            if key.name() == "host.id" {
                overrides.clear();
            }
            overrides.extend(cli.iter().map(|(a, b)| s(a, b)));
            let c = Config::load(&Sources {
                file: tmp.as_ref().map(|f| f.path().to_path_buf()),
                env: env.iter().map(|(a, b)| s(a, b)).collect(),
                overrides,
            })
            .unwrap();
            setting(&c, &name)
        };
        let default = setting(&Config::defaults().unwrap(), &name);
        assert_eq!(run(None, &[], &[]), default, "{name}: default");
        assert_ne!(file_v, default, "{name}: sample equals default");
        assert_eq!(
            run(Some(&file), &[], &[]),
            file_v,
            "{name}: file beats default"
        );
        assert_eq!(
            run(Some(&file), &[(&var, env_s)], &[]),
            env_v,
            "{name}: env beats file"
        );
        assert_eq!(
            run(Some(&file), &[(&var, env_s)], &[(&name, cli_s)]),
            cli_v,
            "{name}: override beats env"
        );
        assert_eq!(
            run(None, &[], &[(&name, cli_s)]),
            cli_v,
            "{name}: override alone"
        );
    }
}

#[test]
fn last_occurrence_wins_within_a_source() {
    let c = load(
        None,
        &[
            ("BOO_RECONCILER_LOOP_JITTER", "1s"),
            ("BOO_RECONCILER_LOOP_JITTER", "2s"),
        ],
        &[("loop.interval", "5s"), ("loop.interval", "6s")],
    )
    .unwrap();
    assert_eq!(c.r#loop.jitter, Duration::from_secs(2));
    assert_eq!(c.r#loop.interval, Duration::from_secs(6));
}

#[test]
fn value_syntax() {
    for (text, expected) in [
        ("1", true),
        ("ON", true),
        ("Yes", true),
        ("0", false),
        ("no", false),
        ("off", false),
        ("FALSE", false),
    ] {
        let c = load(None, &[("BOO_RECONCILER_DATABASE_AUTO_MIGRATE", text)], &[]).unwrap();
        assert_eq!(c.database.auto_migrate, expected, "{text}");
    }
    let c = load(
        None,
        &[("BOO_RECONCILER_WORKTREES_PRECIOUS", "")],
        &[
            ("loop.jitter", "0s"),
            ("worktrees.orphan_min_age", "1h 30m"),
        ],
    )
    .unwrap();
    assert!(
        c.worktrees.precious.is_empty(),
        "empty env list is an empty list"
    );
    assert_eq!(c.r#loop.jitter, Duration::ZERO, "jitter may be 0");
    assert_eq!(c.worktrees.orphan_min_age, Duration::from_secs(5400));
}

#[test]
fn an_unknown_boo_reconciler_variable_is_refused_naming_the_closest_setting() {
    let err = load_err(None, &[("BOO_RECONCILER_WORKTREE_ROOT", "/srv/wt")], &[]);
    assert!(
        matches!(&err, ConfigError::UnknownEnv { name, closest, key }
            if name == "BOO_RECONCILER_WORKTREE_ROOT"
                && closest == "BOO_RECONCILER_WORKTREES_ROOT"
                && key == "worktrees.root"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "unknown environment variable BOO_RECONCILER_WORKTREE_ROOT: it is not a setting; \
         did you mean BOO_RECONCILER_WORKTREES_ROOT (worktrees.root)? Settings are read \
         from BOO_RECONCILER_<SECTION>_<KEY>; rename or unset it"
    );
    // Refused even beside the variable it meant to set.
    let err = load_err(
        None,
        &[
            ("BOO_RECONCILER_LOOP_INTERVAL", "9s"),
            ("BOO_RECONCILER_LOOP_INTERVALL", "soon"),
        ],
        &[],
    );
    assert!(
        matches!(&err, ConfigError::UnknownEnv { name, closest, .. }
            if name == "BOO_RECONCILER_LOOP_INTERVALL"
                && closest == "BOO_RECONCILER_LOOP_INTERVAL"),
        "{err:?}"
    );
    let err = load_err(None, &[("BOO_RECONCILER_", "x")], &[]);
    assert!(matches!(err, ConfigError::UnknownEnv { .. }), "{err:?}");
}

#[test]
fn the_token_and_log_variables_are_not_settings_and_not_refused() {
    let sources = Sources {
        file: None,
        env: vec![
            s("BOO_RECONCILER_TOKEN", "t0ken"),
            s("BOO_RECONCILER_LOG", "debug"),
            s("BOO_RECONCILER_LOOP_INTERVAL", "9s"),
            s("PATH", "/bin"),
        ],
        overrides: with_host(vec![]),
    };
    let c = Config::resolve(None, &sources.env, &sources.overrides).unwrap();
    assert_eq!(c.r#loop.interval, Duration::from_secs(9));
    assert_eq!(c.http.token, "t0ken");
    assert_eq!(
        sources.unrecognized_env(),
        vec!["BOO_RECONCILER_TOKEN", "BOO_RECONCILER_LOG"]
    );
}

#[test]
fn a_typo_of_a_key_is_answered_with_the_key_it_most_likely_meant() {
    let keys: Vec<String> = KEYS.iter().map(Key::name).collect();
    assert_eq!(
        did_you_mean("loop.intervl", &keys),
        ". Did you mean `loop.interval`?"
    );
    assert_eq!(
        did_you_mean("worktree.root", &keys),
        ". Did you mean `worktrees.root`?"
    );
    assert_eq!(did_you_mean("completely.different", &keys), "");
    let err = load_err(None, &[], &[("loop.intervall", "30s")]);
    assert!(
        err.to_string().ends_with("Did you mean `loop.interval`?"),
        "{err}"
    );
}

// -- bounds -----------------------------------------------------------

#[test]
fn a_duration_beyond_the_bound_is_refused_never_a_panic() {
    for key in KEYS
        .iter()
        .filter(|k| matches!(k.kind, Kind::Duration | Kind::NonZeroDuration))
    {
        assert!(
            key.doc.contains("at most 365d"),
            "{}: doc must state the bound",
            key.name()
        );
        let name = key.name();
        let err = load_err(None, &[], &[(&name, "4000000000000000h")]);
        assert_invalid(
            err,
            &name,
            "4000000000000000h",
            Origin::CommandLine,
            "a duration of at most 365d",
        );
        let var = key.env_var();
        let err = load_err(None, &[(&var, "366d")], &[]);
        assert!(
            matches!(err, ConfigError::InvalidValue { .. }),
            "{name}: {err:?}"
        );
        let c = load(None, &[], &[(&name, "365d")]).unwrap();
        let shown = setting(&c, &name);
        // The summary is loadable again, even at the bound.
        assert_eq!(
            humantime::parse_duration(shown.as_str().unwrap()).unwrap(),
            MAX_DURATION,
            "{name}"
        );
    }
}

#[test]
fn deadlines_computed_from_durations_at_the_bound_do_not_overflow() {
    // The largest sums the controller forms from settings: the next
    // pass (interval + jitter), the nudge client's limit and the
    // queue's bound (pass_timeout + 30s, pass_timeout * 2), readiness
    // (interval * 3), and each grace or timeout from now.
    let worst = MAX_DURATION * 3 + Duration::from_secs(60);
    assert!(std::time::Instant::now().checked_add(worst).is_some());
    assert!(tokio::time::Instant::now().checked_add(worst).is_some());
    assert!(std::time::SystemTime::now().checked_add(worst).is_some());
}

// -- files ------------------------------------------------------------

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Config::load(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(&err, ConfigError::FileNotFound { path: p } if *p == path));
    assert_eq!(
        err.to_string(),
        format!("config file {} not found", path.display())
    );
}

#[test]
fn default_file_is_optional_and_read_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boo-reconciler.toml");
    let sources = Sources {
        overrides: with_host(vec![]),
        ..Sources::default()
    };
    let c = Config::load_with_default_file(&sources, &path).unwrap();
    assert_eq!(c, defaults());
    std::fs::write(&path, "[loop]\ninterval = \"1m\"\n").unwrap();
    let c = Config::load_with_default_file(&sources, &path).unwrap();
    assert_eq!(c.r#loop.interval, Duration::from_secs(60));
    // A bad value in it names it.
    std::fs::write(&path, "[loop]\ninterval = \"soon\"\n").unwrap();
    let err = Config::load_with_default_file(&sources, &path).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("(from {})", path.display())),
        "{err}"
    );
}

#[test]
fn invalid_toml_names_the_file() {
    let f = write("[loop\ninterval = 30s\n");
    let err = Config::load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "config file {} is not valid TOML: ",
            f.path().display()
        )),
        "{msg}"
    );
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn unknown_file_key_is_named_with_the_valid_keys() {
    let f = write("[loop]\nintervall = \"30s\"\n");
    let err = Config::load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    match &err {
        ConfigError::UnknownKey {
            path,
            section,
            key,
            valid,
        } => {
            assert_eq!(path, f.path());
            assert_eq!(section, "loop");
            assert_eq!(key, "intervall");
            assert_eq!(
                valid,
                &[
                    "interval",
                    "jitter",
                    "pass_timeout",
                    "max_parallel_actions",
                    "dry_run"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "unknown key `intervall` in section [loop] of config file {}; valid keys in [loop] are interval, jitter, pass_timeout, max_parallel_actions, dry_run. Did you mean `interval`?",
            f.path().display()
        )
    );
}

#[test]
fn unknown_file_section_is_named_with_the_valid_sections() {
    let f = write("[worktree]\nroot = \"/x\"\n");
    let err = Config::load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownSection { section, .. } if section == "worktree"));
    assert_eq!(
        err.to_string(),
        format!(
            "unknown section [worktree] in config file {}; valid sections are [database], [host], [loop], [worktrees], [processes], [opencode], [http]",
            f.path().display()
        )
    );
}

#[test]
fn top_level_value_in_file_is_rejected() {
    for text in ["interval = \"30s\"\n", "loop = 3\n"] {
        let err = load_err(Some(text), &[], &[]);
        assert!(matches!(err, ConfigError::NotASection { .. }), "{err:?}");
        assert!(err.to_string().contains("is not a section"), "{err}");
    }
}

#[test]
fn unknown_override_is_an_error() {
    let err = load_err(None, &[], &[("loop.intervall", "30s")]);
    assert!(matches!(&err, ConfigError::UnknownOverride { key, .. } if key == "loop.intervall"));
    assert!(err.to_string().starts_with(
        "unknown setting `loop.intervall` (from the command line); expected section.key, one of database.url, "
    ), "{err}");
    let err = load_err(None, &[], &[("interval", "30s")]);
    assert!(matches!(err, ConfigError::UnknownOverride { .. }));
}

// -- bad values -------------------------------------------------------

fn assert_invalid(err: ConfigError, key: &str, value: &str, origin: Origin, expected: &str) {
    let msg = err.to_string();
    match err {
        ConfigError::InvalidValue {
            key: k,
            value: v,
            origin: o,
            expected: e,
        } => {
            assert_eq!(
                (k.as_str(), v.as_str(), &o, e.as_str()),
                (key, value, &origin, expected),
                "{msg}"
            );
        }
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    assert_eq!(
        msg,
        format!("invalid value {value:?} for {key} (from {origin}): expected {expected}")
    );
}

#[test]
fn bad_duration_from_env_names_key_value_and_variable() {
    let err = load_err(None, &[("BOO_RECONCILER_LOOP_INTERVAL", "soon")], &[]);
    assert_eq!(
        err.to_string(),
        "invalid value \"soon\" for loop.interval (from BOO_RECONCILER_LOOP_INTERVAL): expected a duration like 30s or 10m"
    );
}

#[test]
fn bad_values_name_key_value_and_source() {
    let file = |text: &str| {
        let f = write(text);
        let path = f.path().to_path_buf();
        let err = Config::load(&Sources {
            file: Some(path.clone()),
            ..Sources::default()
        })
        .unwrap_err();
        (err, Origin::File(path))
    };
    let env = |var: &str, value: &str| {
        (
            load_err(None, &[(var, value)], &[]),
            Origin::Env(var.to_owned()),
        )
    };
    let cli = |key: &str, value: &str| (load_err(None, &[], &[(key, value)]), Origin::CommandLine);

    let (e, o) = cli("database.auto_migrate", "maybe");
    assert_invalid(
        e,
        "database.auto_migrate",
        "maybe",
        o,
        "a boolean: true/false, 1/0, yes/no or on/off",
    );
    let (e, o) = cli("processes.lineage", "maybe");
    assert_invalid(
        e,
        "processes.lineage",
        "maybe",
        o,
        Kind::AutoBool.expected(),
    );
    let (e, o) = file("[processes]\nlineage = 1\n");
    assert_invalid(
        e,
        "processes.lineage",
        "1",
        o,
        &format!("{} (a quoted TOML string)", Kind::AutoBool.expected()),
    );
    let (e, o) = file("[database]\nauto_migrate = \"yes\"\n");
    assert_invalid(
        e,
        "database.auto_migrate",
        "yes",
        o,
        "true or false (a TOML boolean, without quotes)",
    );

    let (e, o) = cli("loop.interval", "0s");
    assert_invalid(
        e,
        "loop.interval",
        "0s",
        o,
        "a duration greater than zero, like 30s or 10m",
    );
    let (e, o) = env("BOO_RECONCILER_LOOP_PASS_TIMEOUT", "0");
    assert_invalid(
        e,
        "loop.pass_timeout",
        "0",
        o,
        "a duration greater than zero, like 30s or 10m",
    );
    let (e, o) = env("BOO_RECONCILER_WORKTREES_ORPHAN_MIN_AGE", "-5m");
    assert_invalid(
        e,
        "worktrees.orphan_min_age",
        "-5m",
        o,
        "a duration like 30s or 10m",
    );
    let (e, o) = file("[loop]\njitter = 3\n");
    assert_invalid(
        e,
        "loop.jitter",
        "3",
        o,
        "a duration like 30s or 10m (a quoted TOML string)",
    );

    let (e, o) = env("BOO_RECONCILER_LOOP_MAX_PARALLEL_ACTIONS", "0");
    assert_invalid(
        e,
        "loop.max_parallel_actions",
        "0",
        o,
        "a positive integer (1 or more)",
    );
    let (e, o) = cli("loop.max_parallel_actions", "lots");
    assert_invalid(
        e,
        "loop.max_parallel_actions",
        "lots",
        o,
        "a positive integer (1 or more)",
    );
    let (e, o) = file("[loop]\nmax_parallel_actions = 0\n");
    assert_invalid(
        e,
        "loop.max_parallel_actions",
        "0",
        o,
        "a positive integer (1 or more)",
    );
    let (e, o) = file("[loop]\nmax_parallel_actions = \"4\"\n");
    assert_invalid(
        e,
        "loop.max_parallel_actions",
        "4",
        o,
        "a positive integer (1 or more, a TOML integer without quotes)",
    );

    let (e, o) = env("BOO_RECONCILER_HOST_ID", "my host");
    assert_invalid(
        e,
        "host.id",
        "my host",
        o,
        "a non-empty name without whitespace",
    );
    let (e, o) = cli("host.id", "");
    assert_invalid(e, "host.id", "", o, "a non-empty name without whitespace");

    let (e, o) = file("[worktrees]\nroot = \"booworktrees\"\n");
    assert_invalid(
        e,
        "worktrees.root",
        "booworktrees",
        o,
        "an absolute path like /tmp/booworktrees",
    );
    let (e, o) = file("[worktrees]\nprecious = \".env\"\n");
    assert_invalid(
        e,
        "worktrees.precious",
        ".env",
        o,
        "an array of strings like [\".env\", \".env.*\"]",
    );
}

#[test]
fn bad_database_url_is_named_and_redacted() {
    let err = load_err(
        None,
        &[("BOO_RECONCILER_DATABASE_URL", "mysql://u:secret@h/db")],
        &[],
    );
    assert_invalid(
        err,
        "database.url",
        "mysql://u:***@h/db",
        Origin::Env("BOO_RECONCILER_DATABASE_URL".to_owned()),
        "a database URL starting with sqlite://, postgres:// or postgresql://",
    );
    for bad in ["boo.db", "sqlite://", "sqlite:boo.db", "http://h/db"] {
        let err = load_err(None, &[], &[("database.url", bad)]);
        assert!(
            matches!(err, ConfigError::InvalidValue { .. }),
            "{bad}: {err:?}"
        );
    }
    for good in [
        "sqlite://boo.db",
        "sqlite:///var/lib/boo.db",
        "postgres://h/db",
        "postgresql://u:p@h:5432/db",
    ] {
        load(None, &[], &[("database.url", good)]).unwrap();
    }
}

// -- labels -----------------------------------------------------------

const LABEL_KEYS: [&str; 4] = [
    "processes.chat_label",
    "processes.session_label",
    "processes.agent_label",
    "processes.instance_label",
];

#[test]
fn a_label_that_ordinary_processes_carry_is_refused() {
    for key in LABEL_KEYS {
        for name in [
            "PATH",
            "HOME",
            "USER",
            "SHELL",
            "PWD",
            "LANG",
            "LC_ALL",
            "TERM",
            "LOGNAME",
            "XDG_RUNTIME_DIR",
            "SSH_AUTH_SOCK",
            "SUDO_USER",
            "LD_PRELOAD",
            "SHLVL",
            "TZ",
        ] {
            let err = load_err(None, &[], &[(key, name)]);
            let msg = err.to_string();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, value, origin: Origin::CommandLine, expected }
                    if k == key && value == name && expected.contains("ordinary processes do not carry")),
                "{key}={name}: {msg}"
            );
        }
    }
    let var = "BOO_RECONCILER_PROCESSES_CHAT_LABEL";
    let err = load_err(None, &[(var, "HOME")], &[]);
    assert!(err.to_string().starts_with(
        "invalid value \"HOME\" for processes.chat_label (from BOO_RECONCILER_PROCESSES_CHAT_LABEL): expected a name that ordinary processes do not carry"
    ), "{err}");
    // A longer name that merely starts like one is not ordinary.
    let c = load(None, &[], &[("processes.chat_label", "PATHFINDER_CHAT")]).unwrap();
    assert_eq!(c.processes.chat_label, "PATHFINDER_CHAT");
}

#[test]
fn a_label_that_does_not_look_like_the_orchestrators_is_refused() {
    for key in LABEL_KEYS {
        for name in [
            "boo_chat_id",
            "Boo_Chat",
            "1CHAT",
            "_CHAT",
            "BOO-CHAT",
            "BOO CHAT",
            "BOO.CHAT",
            "BOO_CHAT=x",
            "",
            "BOO_ÇHAT",
        ] {
            let err = load_err(None, &[], &[(key, name)]);
            assert_invalid(err, key, name, Origin::CommandLine, Kind::Label.expected());
        }
    }
    let f = write("[processes]\nagent_label = \"path\"\n");
    let err = Config::load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    assert_invalid(
        err,
        "processes.agent_label",
        "path",
        Origin::File(f.path().to_path_buf()),
        Kind::Label.expected(),
    );
}

#[test]
fn two_labels_with_the_same_name_are_refused() {
    // No file: the example file would be the origin of the chat label.
    let err = Config::resolve(
        None,
        &[],
        &with_host(vec![s("processes.agent_label", "BOO_CHAT_ID")]),
    )
    .unwrap_err();
    assert_invalid(
        err,
        "processes.agent_label",
        "BOO_CHAT_ID",
        Origin::CommandLine,
        "a name different from processes.chat_label (also BOO_CHAT_ID, from the built-in default): each label names a different thing",
    );
    let err = load_err(
        None,
        &[("BOO_RECONCILER_PROCESSES_CHAT_LABEL", "MY_LABEL")],
        &[("processes.session_label", "MY_LABEL")],
    );
    assert_invalid(
        err,
        "processes.session_label",
        "MY_LABEL",
        Origin::CommandLine,
        "a name different from processes.chat_label (also MY_LABEL, from BOO_RECONCILER_PROCESSES_CHAT_LABEL): each label names a different thing",
    );
    let c = load(
        None,
        &[],
        &[
            ("processes.chat_label", "MY_CHAT"),
            ("processes.agent_label", "MY_AGENT"),
        ],
    )
    .unwrap();
    assert_eq!(
        (
            c.processes.chat_label.as_str(),
            c.processes.agent_label.as_str()
        ),
        ("MY_CHAT", "MY_AGENT")
    );
}

#[test]
fn an_instance_is_a_name_or_nothing_and_its_label_is_distinct() {
    let c = load(
        None,
        &[("BOO_RECONCILER_PROCESSES_INSTANCE", "blue-1")],
        &[],
    )
    .unwrap();
    assert_eq!(c.processes.instance(), Some("blue-1"));
    let c = load(Some("[processes]\ninstance = \"\"\n"), &[], &[]).unwrap();
    assert_eq!(c.processes.instance(), None);
    for bad in ["blue 1", " ", "a\tb"] {
        let err = load_err(None, &[], &[("processes.instance", bad)]);
        assert_invalid(
            err,
            "processes.instance",
            bad,
            Origin::CommandLine,
            Kind::OptionalName.expected(),
        );
    }
    // No file: the example file would be the origin of the agent label.
    let err = Config::resolve(
        None,
        &[],
        &with_host(vec![s("processes.instance_label", "BOO_AGENT")]),
    )
    .unwrap_err();
    assert_invalid(
        err,
        "processes.instance_label",
        "BOO_AGENT",
        Origin::CommandLine,
        "a name different from processes.agent_label (also BOO_AGENT, from the built-in default): each label names a different thing",
    );
}

#[test]
fn bad_glob_is_named() {
    let err = load_err(
        None,
        &[("BOO_RECONCILER_WORKTREES_PRECIOUS", ".env,[oops")],
        &[],
    );
    match &err {
        ConfigError::InvalidGlob {
            key, glob, origin, ..
        } => {
            assert_eq!(key, "worktrees.precious");
            assert_eq!(glob, "[oops");
            assert_eq!(
                origin,
                &Origin::Env("BOO_RECONCILER_WORKTREES_PRECIOUS".to_owned())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("invalid glob \"[oops\" in worktrees.precious (from BOO_RECONCILER_WORKTREES_PRECIOUS): "),
        "{err}"
    );
    let err = load_err(Some("[worktrees]\nprecious = [\".env\", \"\"]\n"), &[], &[]);
    assert!(
        matches!(&err, ConfigError::InvalidGlob { glob, .. } if glob.is_empty()),
        "{err:?}"
    );
}

#[test]
fn a_shadowed_bad_value_still_fails() {
    let err = load_err(
        Some("[loop]\ninterval = \"soon\"\n"),
        &[],
        &[("loop.interval", "30s")],
    );
    assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
}

// -- redact_url -------------------------------------------------------

#[test]
fn redact_url_cases() {
    for (url, redacted) in [
        ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
        (
            "postgresql://u:secret@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgres://u:p@ss/w?rd@h/db", "postgres://u:***@h/db"),
        ("postgres://:secret@h/db", "postgres://:***@h/db"),
        (
            "postgres://h/db?user=u&password=secret&sslmode=require",
            "postgres://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgres://h:5432/db", "postgres://h:5432/db"),
        ("sqlite://boo-reconciler.db", "sqlite://boo-reconciler.db"),
        ("soon", "soon"),
        ("", ""),
    ] {
        assert_eq!(redact_url(url), redacted, "{url}");
    }
}

// -- opencode -----------------------------------------------------------

#[test]
fn empty_opencode_url_turns_it_off() {
    let c = load(Some("[opencode]\nurl = \"\"\n"), &[], &[]).unwrap();
    assert_eq!(c.opencode.url, None);
    assert_eq!(setting(&c, "opencode.url").as_str(), Some(""));
    let c = load(None, &[("BOO_RECONCILER_OPENCODE_URL", "")], &[]).unwrap();
    assert_eq!(c.opencode.url, None);
    let c = load(None, &[], &[("opencode.url", "http://127.0.0.1:4097")]).unwrap();
    assert_eq!(
        setting(&c, "opencode.url").as_str(),
        Some("http://127.0.0.1:4097")
    );
}

#[test]
fn bad_opencode_url_is_named_and_redacted() {
    let expected = Kind::HttpUrl.expected();
    for (bad, shown) in [
        ("127.0.0.1:4096", "127.0.0.1:4096"),
        ("ftp://h/", "ftp://h/"),
        ("http://", "http://"),
        ("http://h/?x=1", "http://h/?x=1"),
        (
            "http://opencode:secret@h:4096",
            "http://opencode:***@h:4096",
        ),
    ] {
        let err = load_err(None, &[], &[("opencode.url", bad)]);
        assert_invalid(err, "opencode.url", shown, Origin::CommandLine, expected);
    }
}

#[test]
fn http_token_is_read_from_boo_reconciler_token() {
    let c = load(None, &[("BOO_RECONCILER_TOKEN", "t0k")], &[]).unwrap();
    assert_eq!(c.http.token, "t0k");
    assert_eq!(setting(&c, "http.token").as_str(), Some("***"));
    assert!(!format!("{:?}", c.http).contains("t0k"));
    let c = load(
        None,
        &[
            ("BOO_RECONCILER_TOKEN", "t0k"),
            ("BOO_RECONCILER_HTTP_TOKEN", "ours"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.http.token, "ours");
    let err = load_err(None, &[("BOO_RECONCILER_HTTP_LISTEN", "localhost")], &[]);
    assert!(err.to_string().contains("http.listen"), "{err}");
}

#[test]
fn opencode_password_falls_back_to_opencode_server_password() {
    let c = load(None, &[("OPENCODE_SERVER_PASSWORD", "from-opencode")], &[]).unwrap();
    assert_eq!(c.opencode.password, "from-opencode");
    let c = load(
        Some("[opencode]\npassword = \"from-file\"\n"),
        &[("OPENCODE_SERVER_PASSWORD", "from-opencode")],
        &[],
    )
    .unwrap();
    assert_eq!(c.opencode.password, "from-opencode", "env beats file");
    let c = load(
        None,
        &[
            ("BOO_RECONCILER_OPENCODE_PASSWORD", "ours"),
            ("OPENCODE_SERVER_PASSWORD", "from-opencode"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.opencode.password, "ours", "our own variable wins");
    let c = load(None, &[("OPENCODE_SERVER_USERNAME", "boo")], &[]).unwrap();
    assert_eq!(c.opencode.username, "boo");
    let sources = Sources {
        env: vec![s("OPENCODE_SERVER_PASSWORD", "x")],
        ..Sources::default()
    };
    assert!(sources.unrecognized_env().is_empty());
}

#[test]
fn summary_debug_and_errors_hide_the_opencode_password() {
    let c = load(None, &[], &[("opencode.password", "hunter2")]).unwrap();
    assert_eq!(c.opencode.password, "hunter2");
    assert_eq!(setting(&c, "opencode.password").as_str(), Some("***"));
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!toml::to_string(&c.summary()).unwrap().contains("hunter2"));
    let err = load_err(Some("[opencode]\npassword = 12345\n"), &[], &[]);
    assert!(!err.to_string().contains("12345"), "{err}");
}

// -- precious globs ---------------------------------------------------

#[test]
fn precious_globs_match_env_files_at_any_depth() {
    let set = defaults().precious_globs();
    for path in [
        ".env",
        "a/.env",
        "a/b/c/.env",
        ".env.local",
        "sub/.env.local",
        ".env.production",
        "/tmp/booworktrees/w1/.env",
    ] {
        assert!(set.is_match(path), "{path} should be precious");
    }
    for path in [
        ".envrc",
        "a/.envrc",
        "env",
        "x.env",
        ".env/file",
        "a/.env.d/file",
        "README.md",
    ] {
        assert!(!set.is_match(path), "{path} should not be precious");
    }
}

#[test]
fn precious_globs_with_a_slash_are_anchored_and_star_stays_in_one_directory() {
    let mut c = defaults();
    c.worktrees.precious = vec!["config/*.key".into(), "*.pem".into()];
    let set = c.precious_globs();
    assert!(set.is_match("config/a.key"));
    assert!(!set.is_match("config/sub/a.key"), "* must not cross /");
    assert!(!set.is_match("x/config/a.key"), "a glob with / is anchored");
    assert!(set.is_match("a.pem"));
    assert!(set.is_match("deep/dir/a.pem"));
}
