//! Resolution: each row's value from the first source that gives it
//! (command line, environment, file, built-in default), every given value
//! checked even where a higher source shadows it.

use std::path::Path;

use super::keys::{row, unset, Field};
use super::parse::invalid;
use super::{
    Config, ConfigError, DefaultValue, Key, Kind, Origin, Sources, ENV_NOT_SETTINGS, ENV_PREFIX,
    KEYS,
};

impl Config {
    pub(super) fn load_with_default_file(
        sources: &Sources,
        default_file: &Path,
    ) -> Result<Config, ConfigError> {
        let file = match &sources.file {
            Some(path) => Some((path.clone(), read_file(path)?)),
            None => match std::fs::read_to_string(default_file) {
                Ok(text) => Some((default_file.to_path_buf(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(ConfigError::ReadFile {
                        path: default_file.to_path_buf(),
                        error,
                    })
                }
            },
        };
        let file = file.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
        Self::resolve(file, &sources.env, &sources.overrides)
    }

    /// Writes the sources into the rows' fields from the lowest to the
    /// highest, so that the last write of a row is the one that counts.
    pub(super) fn resolve(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut config = unset();
        let mut origins: Vec<Option<Origin>> = vec![None; KEYS.len()];

        if let Some((path, text)) = file {
            read_toml(path, text, &mut config, &mut origins)?;
        }

        refuse_unknown_env(env)?;
        for (i, key) in KEYS.iter().enumerate() {
            if let Some((var, value)) = env_value(key, env) {
                let origin = Origin::Env(var);
                key.set_text(&mut config, value, &origin)?;
                origins[i] = Some(origin);
            }
        }

        for (name, value) in overrides {
            let (i, key) = name
                .split_once('.')
                .and_then(|(section, key)| row(section, key))
                .ok_or_else(|| ConfigError::UnknownOverride {
                    key: name.clone(),
                    valid: KEYS.iter().map(Key::name).collect(),
                })?;
            let origin = Origin::CommandLine;
            key.set_text(&mut config, value, &origin)?;
            origins[i] = Some(origin);
        }

        let origins = KEYS
            .iter()
            .zip(origins)
            .map(|(key, origin)| match origin {
                Some(origin) => Ok(origin),
                None => set_default(key, &mut config),
            })
            .collect::<Result<Vec<Origin>, ConfigError>>()?;
        distinct_labels(&config, &origins)?;
        Ok(config)
    }
}

/// The value `env` gives `key` and the variable it came from: its own
/// variable, else its fallback; the last occurrence of a name wins.
fn env_value<'e>(key: &Key, env: &'e [(String, String)]) -> Option<(String, &'e str)> {
    let find = |var: &str| {
        env.iter()
            .rev()
            .find(|(name, _)| name == var)
            .map(|(_, value)| value.as_str())
    };
    let own = key.env_var();
    if let Some(value) = find(&own) {
        return Some((own, value));
    }
    let var = key.fallback_env()?;
    find(var).map(|value| (var.to_owned(), value))
}

pub(super) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::FileNotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::ReadFile {
                path: path.to_path_buf(),
                error,
            }
        }
    })
}

fn sections() -> Vec<String> {
    let mut seen = Vec::new();
    for key in KEYS {
        if !seen.iter().any(|s| s == key.section) {
            seen.push(key.section.to_owned());
        }
    }
    seen
}

fn read_toml(
    path: &Path,
    text: &str,
    config: &mut Config,
    origins: &mut [Option<Origin>],
) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let origin = Origin::File(path.to_path_buf());
    for (section, entries) in &table {
        let Some(entries) = entries.as_table() else {
            return Err(ConfigError::NotASection {
                path: path.to_path_buf(),
                name: section.clone(),
                valid: sections(),
            });
        };
        if !KEYS.iter().any(|k| k.section == section) {
            return Err(ConfigError::UnknownSection {
                path: path.to_path_buf(),
                section: section.clone(),
                valid: sections(),
            });
        }
        for (name, value) in entries {
            let (i, key) = row(section, name).ok_or_else(|| ConfigError::UnknownKey {
                path: path.to_path_buf(),
                section: section.clone(),
                key: name.clone(),
                valid: KEYS
                    .iter()
                    .filter(|k| k.section == section)
                    .map(|k| k.key.to_owned())
                    .collect(),
            })?;
            key.set_toml(config, value, &origin)?;
            origins[i] = Some(origin.clone());
        }
    }
    Ok(())
}

/// Refuses the first `BOO_RECONCILER_*` variable of `env` that is no
/// setting, naming the setting it most likely meant.
fn refuse_unknown_env(env: &[(String, String)]) -> Result<(), ConfigError> {
    let vars: Vec<(String, &Key)> = KEYS.iter().map(|k| (k.env_var(), k)).collect();
    let unknown = env.iter().map(|(name, _)| name).find(|name| {
        name.starts_with(ENV_PREFIX)
            && !ENV_NOT_SETTINGS.contains(&name.as_str())
            && !vars.iter().any(|(var, _)| var == *name)
    });
    let Some(name) = unknown else {
        return Ok(());
    };
    let (closest, key) = vars
        .iter()
        .min_by_key(|(var, _)| strsim::levenshtein(var, name))
        .expect("KEYS is not empty");
    Err(ConfigError::UnknownEnv {
        name: name.clone(),
        closest: closest.clone(),
        key: key.name(),
    })
}

/// Refuses two label keys with the same name: one variable cannot tell a
/// chat and an agent apart, and "carries the chat label and the agent
/// label" would shrink to one condition.
fn distinct_labels(config: &Config, origins: &[Origin]) -> Result<(), ConfigError> {
    let labels: Vec<(&Key, &str, &Origin)> = KEYS
        .iter()
        .zip(origins)
        .filter(|(key, _)| key.kind == Kind::Label)
        .filter_map(|(key, origin)| match key.field {
            Field::Text(get, _) => Some((key, get(config).as_str(), origin)),
            _ => None,
        })
        .collect();
    for (i, (key, value, origin)) in labels.iter().enumerate() {
        if let Some((other, _, other_origin)) = labels[..i].iter().find(|(_, v, _)| v == value) {
            return Err(invalid(
                key,
                value,
                origin,
                &format!(
                    "a name different from {} (also {value}, from {other_origin}): each label names a different thing",
                    other.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the built-in default of `key`, computing the hostname only here,
/// when nothing else set `host.id`.
fn set_default(key: &Key, config: &mut Config) -> Result<Origin, ConfigError> {
    match key.default {
        DefaultValue::Text(text) => {
            key.set_text(config, text, &Origin::Default)?;
            Ok(Origin::Default)
        }
        DefaultValue::List(items) => {
            let items = items.iter().map(|item| (*item).to_owned()).collect();
            key.set_items(config, items, &Origin::Default)?;
            Ok(Origin::Default)
        }
        DefaultValue::Hostname => {
            let name = hostname()?;
            key.set_text(config, &name, &Origin::Hostname)?;
            Ok(Origin::Hostname)
        }
    }
}

fn hostname() -> Result<String, ConfigError> {
    nix::unistd::gethostname()
        .map_err(|e| ConfigError::Hostname {
            reason: e.to_string(),
        })?
        .into_string()
        .map_err(|_| ConfigError::Hostname {
            reason: "the hostname is not valid UTF-8".to_owned(),
        })
}
