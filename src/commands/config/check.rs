//! `config check`: show the effective settings with their sources, secrets redacted, and check
//! them against the broker and the clusters.

use std::time::Duration;

use elasticsearch::http::Method;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::ConfigCheckArgs;
use crate::config::{key_of, Provenance};
use crate::es::cluster::{self, Role};
use crate::es::{self, Auth, ClusterSecurity, Security};

/// Property or setting names whose values are secrets.
const SENSITIVE: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "jaas",
    "key.pem",
    "credentials",
];

fn sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| name.contains(s))
}

/// A setting's value as shown: URLs without userinfo, librdkafka secrets and secret-named
/// settings as `<redacted>`.
pub fn shown(key: &str, values: &[String]) -> String {
    let one = |v: &String| {
        if key == "kafka" {
            match v.split_once('=') {
                Some((k, _)) if sensitive(k) => format!("{k}=<redacted>"),
                _ => v.clone(),
            }
        } else if sensitive(key) {
            "<redacted>".to_owned()
        } else if v.contains("://") {
            crate::secrets::redact_url(v)
        } else {
            v.clone()
        }
    };
    values.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// The effective settings, one line each: key, value, source.
pub fn describe(parsed: &Provenance) -> String {
    let mut lines = Vec::new();
    for arg in parsed.leaf_command.get_arguments() {
        let Some(key) = key_of(arg) else { continue };
        let values: Vec<String> = parsed
            .leaf
            .get_raw(arg.get_id().as_str())
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if values.is_empty() {
            "(unset)".to_owned()
        } else {
            shown(&key, &values)
        };
        lines.push(format!("  {key:<26} {value:<40} {}", parsed.source(arg)));
    }
    lines.sort();
    lines.join("\n") + "\n"
}

fn auth_line(name: &str, security: &ClusterSecurity) -> String {
    let auth = match &security.auth {
        None => "no credentials".to_owned(),
        Some(Auth::Basic { username, .. }) => {
            format!("basic auth as `{username}`, password <redacted>")
        }
        Some(Auth::ApiKey(_)) => "API key <redacted>".to_owned(),
    };
    let tls = match (&security.ca_cert, security.insecure) {
        (Some(ca), _) => format!("TLS validated against {}", ca.display()),
        (None, true) => "TLS NOT validated (insecure)".to_owned(),
        (None, false) => "TLS validated against the system roots".to_owned(),
    };
    format!("  {name:<26} {auth}; {tls}")
}

/// One check's outcome.
#[derive(Debug)]
pub struct Finding {
    /// What was checked.
    pub what: String,
    /// `Ok(detail)` or `Err(problem)`.
    pub outcome: Result<String, String>,
}

/// Runs every check and returns the findings, in order.
pub async fn run_checks(args: &ConfigCheckArgs, security: &Security) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |what: &str, outcome: Result<String, String>| {
        out.push(Finding {
            what: what.to_owned(),
            outcome,
        })
    };
    let run = &args.run;
    push(
        "settings",
        run.settings().map(|s| {
            format!(
                "valid; group `{}`, legacy group `{}`",
                s.group, run.legacy_group
            )
        }),
    );
    push(
        "envelope",
        run.envelope.plan().map(|p| p.mapping().to_string()),
    );
    match run.kafka.client_config() {
        Err(e) => push("broker", Err(format!("{e:#}"))),
        Ok(config) => {
            let topic = run.topic.clone();
            let metadata = tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
                consumer
                    .fetch_metadata(None, Duration::from_secs(10))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match metadata {
                Err(e) => {
                    push(
                        "broker",
                        Err(format!("{} is not reachable: {e}", run.kafka.brokers)),
                    );
                }
                Ok(metadata) => {
                    push(
                        "broker",
                        Ok(format!(
                            "{} answers ({} brokers)",
                            run.kafka.brokers,
                            metadata.brokers().len()
                        )),
                    );
                    let found = metadata.topics().iter().find(|t| t.name() == topic);
                    push(
                        "topic",
                        match found {
                            Some(t) if t.error().is_none() => Ok(format!(
                                "`{topic}` exists ({} partitions)",
                                t.partitions().len()
                            )),
                            _ => Err(format!(
                                "topic `{topic}` does not exist on {}",
                                run.kafka.brokers
                            )),
                        },
                    );
                }
            }
        }
    }
    let new = cluster("new cluster", &run.es_url, &security.new, Role::New).await;
    let reachable = new.outcome.is_ok();
    out.push(new);
    if reachable {
        out.push(index_finding(&run.es_url, &security.new, &run.index, run.create_index).await);
    }
    if let Some(url) = &args.legacy_es_url {
        let legacy = cluster("legacy cluster", url, &security.legacy, Role::Legacy).await;
        let reachable = legacy.outcome.is_ok();
        out.push(legacy);
        if reachable {
            out.push(index_finding(url, &security.legacy, &args.legacy_index, false).await);
        }
    }
    out
}

/// `GET /` of one cluster, checked against its role, with its row of the compatibility table.
async fn cluster(what: &str, url: &str, security: &ClusterSecurity, role: Role) -> Finding {
    let outcome = async {
        let shown = crate::secrets::redact_url(url);
        let client = es::secure_client(url, security, Duration::from_secs(10))
            .map_err(|e| format!("{e:#}"))?;
        let found = cluster::probe(&client, &shown, role)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("{shown} answers: {found}; {}", found.row()))
    }
    .await;
    Finding {
        what: what.to_owned(),
        outcome,
    }
}

async fn index_finding(
    url: &str,
    security: &ClusterSecurity,
    index: &str,
    creatable: bool,
) -> Finding {
    let outcome = async {
        let client = es::secure_client(url, security, Duration::from_secs(10)).map_err(|e| format!("{e:#}"))?;
        let (status, _) = es::request(&client, Method::Head, &format!("/{index}"), None)
            .await
            .map_err(|e| format!("{e:#}"))?;
        match status {
            200 => Ok(format!("`{index}` exists")),
            404 if creatable => Ok(format!("`{index}` is missing; --create-index will create it from schemas/")),
            404 => Err(format!("`{index}` does not exist (create it with `dual-indexer index create`, or pass --create-index)")),
            _ => Err(format!("looking for `{index}` answered HTTP {status}")),
        }
    }
    .await;
    Finding {
        what: "index".to_owned(),
        outcome,
    }
}

/// The whole report: settings, credentials, findings.
pub fn report(parsed: &Provenance, security: &Security, findings: &[Finding]) -> String {
    let mut out =
        String::from("effective settings (flag > env > file > default; secrets redacted):\n");
    out.push_str(&describe(parsed));
    out.push_str(&auth_line("new cluster credentials", &security.new));
    out.push('\n');
    out.push_str(&auth_line("legacy cluster credentials", &security.legacy));
    out.push_str("\n\nchecks:\n");
    for f in findings {
        match &f.outcome {
            Ok(detail) => out.push_str(&format!("  ok    {:<16} {detail}\n", f.what)),
            Err(problem) => out.push_str(&format!("  FAIL  {:<16} {problem}\n", f.what)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_credentials_are_redacted() {
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            shown(
                "kafka",
                &values(&[
                    "sasl.password=hunter2",
                    "security.protocol=SSL",
                    "sasl.jaas.config=x"
                ])
            ),
            "sasl.password=<redacted>, security.protocol=SSL, sasl.jaas.config=<redacted>"
        );
        assert_eq!(
            shown("es_url", &values(&["https://u:hunter2@es:9200"])),
            "https://es:9200/"
        );
        assert_eq!(shown("index", &values(&["tags-v2"])), "tags-v2");
    }
}
