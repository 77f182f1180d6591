//! Layering: flags, then environment variables, then the `--config` file, then the defaults.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

use super::file::{applicable, read_file, scalars};
use super::{key_of, leaves, ParseError, Provenance};

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
