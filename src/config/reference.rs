//! The settings reference and the environment variables the tool reads, from the command tree.

use std::collections::{BTreeMap, BTreeSet};

use clap::Command;

use super::{key_of, leaves};

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
