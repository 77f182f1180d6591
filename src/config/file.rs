//! The `--config` file: its sections, its keys, and the flags it stands for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::Command;

use super::{key_of, leaves, ParseError};

/// The settings of a config file: top-level keys, per-subcommand tables, librdkafka properties.
#[derive(Debug, Default, PartialEq)]
pub struct FileSettings {
    /// Keys that apply to every subcommand having them.
    pub top: BTreeMap<String, toml::Value>,
    /// `[subcommand]` tables.
    pub sections: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// `[kafka]`, flattened to dotted librdkafka property names.
    pub kafka: BTreeMap<String, String>,
}

/// Reads and splits a config file.
pub fn read_file(root: &Command, path: &Path) -> Result<FileSettings, ParseError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ParseError::Config(format!("--config {}: {e}", path.display())))?;
    parse_file(root, &text).map_err(|e| ParseError::Config(format!("{}: {e}", path.display())))
}

/// Splits the text of a config file.
pub fn parse_file(root: &Command, text: &str) -> Result<FileSettings, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let sections: BTreeSet<String> = leaves(root)
        .into_iter()
        .filter_map(|(path, _)| path.first().cloned())
        .collect();
    let mut out = FileSettings::default();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) if key == "kafka" => {
                flatten_kafka("", &inner, &mut out.kafka)?
            }
            toml::Value::Table(inner) if sections.contains(&key) => {
                out.sections.insert(key, inner.into_iter().collect());
            }
            toml::Value::Table(_) => {
                return Err(format!(
                    "`[{key}]` is not a section; sections: kafka, {}",
                    sections.into_iter().collect::<Vec<_>>().join(", ")
                ))
            }
            value => {
                out.top.insert(key, value);
            }
        }
    }
    Ok(out)
}

fn flatten_kafka(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_kafka(&name, inner, out)?,
            toml::Value::String(s) => {
                out.insert(name, s.clone());
            }
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                out.insert(name, value.to_string());
            }
            other => {
                return Err(format!(
                    "`kafka.{name}` is {}; a librdkafka property is a string, number or boolean",
                    other.type_str()
                ))
            }
        }
    }
    Ok(())
}

/// The file's settings that apply to the subcommand at `path`, section over top level. Unknown
/// keys are errors: a top-level key must be a setting of some subcommand, and a section key a
/// setting of that section's subcommands.
pub(super) fn applicable(
    root: &Command,
    settings: &FileSettings,
    path: &[String],
) -> Result<BTreeMap<String, toml::Value>, String> {
    let all = leaves(root);
    let keys_of = |filter: &dyn Fn(&[String]) -> bool| -> BTreeSet<String> {
        all.iter()
            .filter(|(p, _)| filter(p))
            .flat_map(|(_, c)| c.get_arguments().filter_map(key_of).collect::<Vec<_>>())
            .collect()
    };
    let everywhere = keys_of(&|_| true);
    for key in settings.top.keys() {
        if !everywhere.contains(key) {
            return Err(unknown(key, None, &everywhere));
        }
    }
    for (section, keys) in &settings.sections {
        let known = keys_of(&|p| p.first() == Some(section));
        if let Some(key) = keys.keys().find(|k| !known.contains(*k)) {
            return Err(unknown(key, Some(section), &known));
        }
    }
    let here = keys_of(&|p| p == path);
    let mut out: BTreeMap<String, toml::Value> = settings
        .top
        .iter()
        .filter(|(k, _)| here.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(section) = path.first().and_then(|s| settings.sections.get(s)) {
        for (k, v) in section {
            if here.contains(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn unknown(key: &str, section: Option<&String>, known: &BTreeSet<String>) -> String {
    let place = section.map_or(String::new(), |s| format!(" in [{s}]"));
    let hint = known
        .iter()
        .find(|k| strsim::levenshtein(k, key) <= 2)
        .map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
    format!(
        "unknown setting `{key}`{place}{hint}; accepted: {}",
        known.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// A setting's value as flag values: one for a scalar, one per item for an array.
pub(super) fn scalars(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            Ok(v.to_string())
        }
        toml::Value::Datetime(d) => Ok(d.to_string()),
        other => Err(format!(
            "`{key}` is {}; expected a string, number or boolean",
            other.type_str()
        )),
    };
    match value {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}
