//! One configuration model for every subcommand, filled in this order: command-line flags, then
//! environment variables (`DUAL_INDEXER_…`), then an optional TOML file (`--config`), then the
//! documented defaults.
//!
//! The model is the command line itself: every setting is a flag of some subcommand, and its
//! key is the name of its environment variable without `DUAL_INDEXER_`, in lower case (the flag's
//! long name with `_` when it has no variable). So `--es-url`, `DUAL_INDEXER_ES_URL` and `es_url`
//! in the file are one setting, and `backfill --to-url` is `es_url` too, because it reads the same
//! variable. The file's top-level keys apply to every subcommand that has the setting; a
//! `[run]`, `[backfill]`, … table applies to that subcommand only and wins over the top level;
//! `[kafka]` holds librdkafka properties (`[kafka] "security.protocol" = "SSL"`, or dotted keys).
//!
//! The file is applied by adding, for every setting the command line and the environment left
//! at its default, the flag the file asks for, and parsing again. Clap then checks the file's
//! values exactly as it checks flags; an error names the file and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(String),
    /// The `--config` file.
    File(PathBuf),
    /// The documented default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("flag"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Default => f.write_str("default"),
        }
    }
}

/// What is needed to say where each setting of the running subcommand came from.
#[derive(Debug)]
pub struct Provenance {
    /// The matches of the subcommand that runs (the leaf), after the file was applied.
    pub leaf: ArgMatches,
    /// The leaf's definition.
    pub leaf_command: Command,
    /// The file, if one was read.
    pub file: Option<PathBuf>,
    /// The arg ids set from the file.
    pub from_file: BTreeSet<String>,
}

impl Provenance {
    /// Where the setting `arg` of the leaf came from.
    pub fn source(&self, arg: &Arg) -> Source {
        let id = arg.get_id().as_str();
        match self.leaf.value_source(id) {
            Some(ValueSource::CommandLine) if self.from_file.contains(id) => {
                Source::File(self.file.clone().unwrap_or_default())
            }
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => Source::Default,
        }
    }
}

/// The model key of a flag, or `None` for flags that are not settings (`--help`, `--config`).
pub fn key_of(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    if ["help", "version", "config"].contains(&long) {
        return None;
    }
    let from_env = arg
        .get_env()
        .and_then(|e| e.to_str())
        .and_then(|e| e.strip_prefix("DUAL_INDEXER_"))
        .map(str::to_ascii_lowercase);
    Some(from_env.unwrap_or_else(|| long.replace('-', "_")))
}

/// Every leaf subcommand, with its path (`["index", "create"]`) and definition, globals included.
pub fn leaves(root: &Command) -> Vec<(Vec<String>, Command)> {
    fn walk(cmd: &Command, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Command)>) {
        if cmd.has_subcommands() {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                path.push(sub.get_name().to_owned());
                walk(sub, path, out);
                path.pop();
            }
        } else {
            out.push((path.clone(), cmd.clone()));
        }
    }
    let mut root = root.clone();
    root.build();
    let mut out = Vec::new();
    walk(&root, &mut Vec::new(), &mut out);
    out
}

/// Parses the command line, applying the `--config` file when one is named. A clap error (bad
/// flag, `--help`) comes back as such, for `exit()`; an error of the file as a sentence.
pub fn parse<C: CommandFactory + FromArgMatches>(
    argv: Vec<OsString>,
) -> Result<(C, Provenance), ParseError> {
    let mut root = C::command();
    root.build();
    let matches = root
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| name_the_variable(&root, &argv, e))?;
    let (path, leaf_matches) = leaf_of(&matches);
    let leaf_command = find(&root, &path).clone();
    let file = leaf_matches.get_one::<PathBuf>("config").cloned();
    let Some(file) = file else {
        let cli = C::from_arg_matches(&matches)?;
        let provenance = Provenance {
            leaf: leaf_matches.clone(),
            leaf_command,
            file: None,
            from_file: BTreeSet::new(),
        };
        return Ok((cli, provenance));
    };
    let settings = read_file(&root, &file)?;
    let wanted = applicable(&root, &settings, &path)
        .map_err(|e| ParseError::Config(format!("{}: {e}", file.display())))?;
    let mut extra: Vec<OsString> = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in &wanted {
        let arg = leaf_command
            .get_arguments()
            .find(|a| key_of(a).as_deref() == Some(key.as_str()))
            .expect("applicable() keeps only keys of the leaf");
        let id = arg.get_id().as_str();
        if matches!(
            leaf_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or_default());
        let values = scalars(key, value)
            .map_err(|e| ParseError::Config(format!("{}: {e}", file.display())))?;
        if arg.get_action().takes_values() {
            for v in values {
                extra.push(flag.clone().into());
                extra.push(v.into());
            }
        } else if values.iter().any(|v| v == "true") {
            extra.push(flag.into());
        }
        from_file.insert(id.to_owned());
    }
    if leaf_command.get_arguments().any(|a| a.get_id() == "kafka") {
        let given: BTreeSet<String> = leaf_matches
            .get_many::<(String, String)>("kafka")
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        for (key, value) in &settings.kafka {
            if !given.contains(key) {
                extra.push("--kafka".into());
                extra.push(format!("{key}={value}").into());
                from_file.insert("kafka".into());
            }
        }
    }
    let mut full = argv.clone();
    full.extend(extra);
    let matches = root.clone().try_get_matches_from(&full).map_err(|e| {
        ParseError::Config(format!(
            "{}: a value from this file was refused: {}",
            file.display(),
            e.render().to_string().trim()
        ))
    })?;
    let cli = C::from_arg_matches(&matches)?;
    let (_, leaf) = leaf_of(&matches);
    let provenance = Provenance {
        leaf: leaf.clone(),
        leaf_command,
        file: Some(file),
        from_file,
    };
    Ok((cli, provenance))
}

/// A refused value that came from an environment variable is reported with the variable's name
/// and value: clap names only the flag, which the user never typed.
fn name_the_variable(root: &Command, argv: &[OsString], error: clap::Error) -> ParseError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return error.into();
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return error.into();
    };
    let long = flag
        .trim_start_matches('-')
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let typed = argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    });
    let variable = leaves(root)
        .iter()
        .flat_map(|(_, cmd)| cmd.get_arguments().cloned().collect::<Vec<_>>())
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    match variable {
        Some(name) if !typed && std::env::var_os(&name).is_some() => ParseError::Config(format!(
            "{name}: {}",
            error
                .render()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
        )),
        _ => error.into(),
    }
}

/// Why the command line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A flag problem, `--help` or `--version`: clap prints it and picks the exit code.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A problem with the config file.
    #[error("{0}")]
    Config(String),
}

fn leaf_of(matches: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut path = Vec::new();
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        path.push(name.to_owned());
        current = sub;
    }
    (path, current)
}

fn find<'a>(root: &'a Command, path: &[String]) -> &'a Command {
    path.iter().fold(root, |cmd, name| {
        cmd.find_subcommand(name)
            .expect("a parsed subcommand exists")
    })
}

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
fn applicable(
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
        .find(|k| edit_distance(k, key) <= 2)
        .map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
    format!(
        "unknown setting `{key}`{place}{hint}; accepted: {}",
        known.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let next = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A setting's value as flag values: one for a scalar, one per item for an array.
fn scalars(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
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

/// Every environment variable the tool reads: the settings' variables, and the secrets' (each
/// also as `…_FILE`).
pub fn variables(root: &Command) -> BTreeSet<String> {
    use crate::es::ClusterSecurity;
    let mut out: BTreeSet<String> = leaves(root)
        .iter()
        .flat_map(|(_, cmd)| {
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let secrets = [ClusterSecurity::NEW_PREFIX, ClusterSecurity::LEGACY_PREFIX]
        .iter()
        .flat_map(|prefix| {
            ClusterSecurity::SECRETS
                .iter()
                .map(move |name| format!("{prefix}_{name}"))
        })
        .chain(
            crate::cli::KafkaArgs::SECRETS
                .iter()
                .map(|(name, _)| (*name).to_owned()),
        );
    for secret in secrets {
        out.insert(format!("{secret}_FILE"));
        out.insert(secret);
    }
    out
}

/// The settings reference: one row per key, over every subcommand. docs/configuration.md embeds it
/// between markers, and a test keeps the two equal.
pub fn reference(root: &Command) -> String {
    struct Row {
        flags: BTreeSet<String>,
        env: String,
        default: String,
        help: String,
        used_by: BTreeSet<String>,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (path, cmd) in leaves(root) {
        for arg in cmd.get_arguments() {
            let Some(key) = key_of(arg) else { continue };
            let row = rows.entry(key).or_insert_with(|| Row {
                flags: BTreeSet::new(),
                env: arg
                    .get_env()
                    .map(|e| format!("`{}`", e.to_string_lossy()))
                    .unwrap_or_default(),
                default: arg
                    .get_default_values()
                    .iter()
                    .map(|v| format!("`{}`", v.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(", "),
                help: arg
                    .get_help()
                    .map(|h| h.to_string().replace('|', "\\|"))
                    .unwrap_or_default(),
                used_by: BTreeSet::new(),
            });
            row.used_by.insert(path.join(" "));
            row.flags
                .insert(format!("`--{}`", arg.get_long().unwrap_or_default()));
        }
    }
    let total = leaves(root).len();
    let mut out = String::from(
        "| key | flag | env | default | subcommands | meaning |\n|---|---|---|---|---|---|\n",
    );
    for (key, row) in rows {
        let used_by = if row.used_by.len() == total {
            "all".to_owned()
        } else {
            row.used_by.into_iter().collect::<Vec<_>>().join(", ")
        };
        out.push_str(&format!(
            "| `{key}` | {} | {} | {} | {used_by} | {} |\n",
            row.flags.into_iter().collect::<Vec<_>>().join(", "),
            row.env,
            row.default,
            row.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Cli;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("dual-indexer")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn file(text: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_key_is_one_setting_within_a_subcommand() {
        for (path, cmd) in leaves(&Cli::command()) {
            let mut seen = BTreeSet::new();
            for arg in cmd.get_arguments() {
                if let Some(key) = key_of(arg) {
                    assert!(seen.insert(key.clone()), "{path:?}: two flags are `{key}`");
                }
            }
        }
    }

    #[test]
    fn a_key_has_one_default_and_one_variable_in_every_subcommand() {
        /// A key's default, variable, and the subcommand its default was seen in.
        type Seen = (Vec<String>, Option<String>, Vec<String>);
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut problems: Vec<String> = Vec::new();
        for (path, cmd) in leaves(&Cli::command()) {
            for arg in cmd.get_arguments() {
                let Some(key) = key_of(arg) else { continue };
                let default: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let entry = seen
                    .entry(key.clone())
                    .or_insert_with(|| (Vec::new(), env.clone(), path.clone()));
                if entry.1 != env {
                    problems.push(format!(
                        "`{key}`: variable {:?}, and {env:?} in {path:?}",
                        entry.1
                    ));
                }
                // A subcommand may require a setting that others default; where two have a
                // default, it is the same.
                if default.is_empty() {
                    continue;
                }
                if entry.0.is_empty() {
                    entry.0 = default;
                    entry.2.clone_from(&path);
                } else if entry.0 != default {
                    problems.push(format!(
                        "`{key}`: default {:?} in {:?}, {default:?} in {path:?}",
                        entry.0, entry.2
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let path = file(
            "index = \"from-file\"\nlog_format = \"json\"\n[run]\nbatch_max_docs = 77\ntopic = \"file-topic\"\n[backfill]\nslices = 9\n[kafka]\n\"security.protocol\" = \"SSL\"\nsasl.mechanisms = \"PLAIN\"\n",
        );
        let p = path.to_str().unwrap();
        let (cli, parsed) =
            parse::<Cli>(argv(&["run", "--config", p, "--topic", "flag-topic"])).unwrap();
        let crate::commands::Command::Run(run) = &cli.command else {
            unreachable!()
        };
        assert_eq!(run.topic, "flag-topic");
        assert_eq!(run.index, "from-file");
        assert_eq!(run.batch_max_docs, 77);
        assert_eq!(cli.global.log_format, crate::telemetry::LogFormat::Json);
        let config = run.kafka.client_config_from(&|_| None).unwrap();
        assert_eq!(config.get("security.protocol"), Some("SSL"));
        assert_eq!(config.get("sasl.mechanisms"), Some("PLAIN"));
        let source = |id: &str| {
            let arg = parsed
                .leaf_command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap();
            parsed.source(arg)
        };
        assert_eq!(source("topic"), Source::Flag);
        assert_eq!(source("index"), Source::File(path.clone()));
        assert_eq!(source("linger_ms"), Source::Default);

        // The same file serves backfill: `index` is its --to-index, and its own table applies.
        let (cli, _) = parse::<Cli>(argv(&["backfill", "--config", p])).unwrap();
        let crate::commands::Command::Backfill(backfill) = &cli.command else {
            unreachable!()
        };
        assert_eq!(backfill.to_index, "from-file");
        assert_eq!(backfill.slices, 9);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_files_name_the_file_the_key_and_what_is_accepted() {
        let err = |text: &str, args: &[&str]| {
            let path = file(text);
            let mut a = vec!["run", "--config", path.to_str().unwrap()];
            a.extend_from_slice(args);
            let e = match parse::<Cli>(argv(&a)) {
                Err(ParseError::Config(e)) => e,
                other => panic!("expected a config error, got {other:?}"),
            };
            std::fs::remove_file(&path).unwrap();
            assert!(e.contains("config-test-"), "{e}");
            e
        };
        let e = err("idnex = \"x\"\n", &[]);
        assert!(
            e.contains("unknown setting `idnex` (did you mean `index`?)"),
            "{e}"
        );
        let e = err("[run]\nslices = 4\n", &[]);
        assert!(e.contains("unknown setting `slices` in [run]"), "{e}");
        let e = err("[run]\nbatch_max_docs = \"many\"\n", &[]);
        assert!(
            e.contains("refused") && e.contains("--batch-max-docs"),
            "{e}"
        );
        let e = err("[nope]\nx = 1\n", &[]);
        assert!(e.contains("`[nope]` is not a section"), "{e}");
        let e = err("index = [1, {a = 1}]\n", &[]);
        assert!(e.contains("`index` is table"), "{e}");
        let e = err("index = \n", &[]);
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn the_reference_has_a_row_per_setting() {
        let table = reference(&Cli::command());
        for key in [
            "es_url",
            "index",
            "slices",
            "brokers",
            "kafka",
            "es_username",
            "log_format",
        ] {
            assert!(table.contains(&format!("| `{key}` |")), "{key} missing");
        }
        assert!(
            table.contains(
                "| `log_format` | `--log-format` | `DUAL_INDEXER_LOG_FORMAT` | `text` | all |"
            ),
            "{table}"
        );
    }
}
