//! The README keeps up with the code: every flag of every implemented subcommand and every
//! metric the code emits is documented there.

use clap::CommandFactory;
use dual_indexer::cli::Cli;

const README: &str = include_str!("../README.md");

#[test]
fn every_flag_of_run_generate_lag_and_backfill_is_in_the_readme() {
    let cli = Cli::command();
    let mut missing = Vec::new();
    for name in ["run", "generate", "lag", "backfill"] {
        let sub = cli.find_subcommand(name).expect("subcommand exists");
        for arg in sub.get_arguments().chain(cli.get_arguments()) {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            if !README.contains(&format!("`--{long}")) {
                missing.push(format!("{name} --{long}"));
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if !README.contains(&format!("`{env}`")) {
                    missing.push(format!("{name} --{long} env {env}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not documented in README.md: {missing:?}"
    );
}

#[test]
fn every_metric_name_in_the_code_is_in_the_readme() {
    let mut missing = Vec::new();
    let mut found = 0;
    for entry in walk("src") {
        let source = std::fs::read_to_string(&entry).unwrap();
        for kind in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
            for piece in source.split(kind).skip(1) {
                let name = piece.split('"').next().unwrap();
                found += 1;
                if !README.contains(&format!("`{name}`")) {
                    missing.push(name.to_owned());
                }
            }
        }
    }
    assert!(found > 10, "the scan found the metric macros ({found})");
    assert!(
        missing.is_empty(),
        "metrics not documented in README.md: {missing:?}"
    );
}

fn walk(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(path.to_str().unwrap()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}
