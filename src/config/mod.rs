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

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

mod file;
mod layering;
mod reference;

pub use file::{parse_file, read_file, FileSettings};
pub use layering::parse;
pub use reference::{reference, variables};

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    use clap::CommandFactory;

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
