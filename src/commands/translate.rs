//! `dual-indexer translate`: the query translator as a tool of its own, for the team that moves an
//! application's searches to the new schema. It reads a legacy search on stdin and prints the
//! new-schema search on stdout; its class (exact, or `analysis` with the direction) and notes go
//! to stderr. A search it cannot translate is refused with the construct and the reason.

use std::io::Read;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use crate::cli::heading;
use crate::translate::{self, Fidelity};

/// `dual-indexer translate`.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The input is one query clause (`{"match": …}`) rather than a whole `_search` body.
    #[arg(long)]
    pub clause: bool,
    /// Print one JSON object (`class`, `direction`, `body`, `notes`, or `construct` and `reason`) instead of the body alone.
    #[arg(long, help_heading = heading::REPORT)]
    pub json: bool,
}

/// Translates stdin; exits 1 when the search cannot be translated, 2 when stdin is not JSON.
pub fn run(args: TranslateArgs) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("reading the legacy search from stdin: {e}"))?;
    let legacy: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the legacy search on stdin is not JSON: {e}"))?
    };
    let translated = if args.clause {
        translate::query(&legacy)
    } else {
        translate::search_body(&legacy)
    };
    match translated {
        Ok(t) => {
            let direction = match t.fidelity {
                Fidelity::Exact => None,
                Fidelity::Narrower => Some("narrower"),
                Fidelity::Wider => Some("wider"),
            };
            if args.json {
                let out = json!({"class": t.fidelity.class(), "direction": direction, "body": t.body, "notes": t.notes});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&t.body)?);
                match direction {
                    None => eprintln!("class: exact"),
                    Some(d) => eprintln!(
                        "class: analysis ({d}: the new search finds {} the legacy one)",
                        if d == "narrower" {
                            "a subset of what"
                        } else {
                            "a superset of what"
                        }
                    ),
                }
                for note in &t.notes {
                    eprintln!("note: {note}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            if args.json {
                let out = json!({"class": "untranslatable", "construct": refusal.construct, "reason": refusal.reason});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                eprintln!("error: {refusal}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
