//! The flag groups of the command line: the options every subcommand accepts, and the groups
//! several subcommands share (Kafka, Elasticsearch, the lag rule). The root and each
//! subcommand's own flags live beside their bodies in [`crate::commands`].
//!
//! Each flag can also be set through the environment variable named in its help
//! (`DUAL_INDEXER_…`); a flag given on the command line wins.

use std::time::Duration;

use clap::Args;
use rdkafka::ClientConfig;

use crate::command::CommandKind;
use crate::envelope::mapping::{self, OperationValue, Rename};
use crate::envelope::{Mapping, Plan, Pointer, TagsFormat, TextSource, Tombstones, VersionSource};
use crate::telemetry::LogFormat;

/// The headings that group a subcommand's flags in its `--help`.
pub(crate) mod heading {
    pub const KAFKA: &str = "Kafka";
    pub const ES: &str = "Elasticsearch";
    pub const BATCHING: &str = "Batching and retries";
    pub const LAG: &str = "Lag and gate";
    pub const SECURITY: &str = "Security";
    pub const LOGGING: &str = "Logging and metrics";
    pub const STATUS: &str = "Status server";
    pub const SLICES: &str = "Slices and checkpoint";
    pub const COMPARISON: &str = "Comparison";
    pub const REPORT: &str = "Report";
    pub const SETTLE: &str = "Settling (both indexers live)";
    pub const ENVELOPE: &str = "Envelope (the producers' message format; see docs/envelope.md)";
}

/// Options every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML file of settings: flags and environment variables win over it, and it wins over the defaults (see docs/configuration.md).
    #[arg(long, global = true, env = "DUAL_INDEXER_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LOG_FORMAT",
        default_value = "text",
        help_heading = heading::LOGGING
    )]
    pub log_format: LogFormat,
    /// Log level filter (`info`, `debug`, or a tracing directive such as `dual_indexer=debug`). RUST_LOG overrides it.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LOG_LEVEL",
        default_value = "info",
        help_heading = heading::LOGGING
    )]
    pub log_level: String,
    /// Send metrics to this statsd agent (HOST:PORT). No metrics are sent when unset.
    #[arg(long, global = true, env = "DUAL_INDEXER_STATSD", help_heading = heading::LOGGING)]
    pub statsd: Option<String>,
    /// Prefix of every metric name.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_METRICS_PREFIX",
        default_value = "dual_indexer",
        help_heading = heading::LOGGING
    )]
    pub metrics_prefix: String,
    /// User for the new cluster; its password comes from DUAL_INDEXER_ES_PASSWORD or DUAL_INDEXER_ES_PASSWORD_FILE (an API key from DUAL_INDEXER_ES_API_KEY[_FILE] instead).
    #[arg(long, global = true, env = "DUAL_INDEXER_ES_USERNAME", help_heading = heading::SECURITY)]
    pub es_username: Option<String>,
    /// PEM file of the CA that signed the new cluster's TLS certificate.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_ES_CA_CERT",
        value_name = "FILE",
        help_heading = heading::SECURITY
    )]
    pub es_ca_cert: Option<std::path::PathBuf>,
    /// Do not validate the new cluster's TLS certificate (development only).
    #[arg(long, global = true, env = "DUAL_INDEXER_ES_INSECURE", help_heading = heading::SECURITY)]
    pub es_insecure: bool,
    /// User for the legacy cluster; its password comes from DUAL_INDEXER_LEGACY_ES_PASSWORD or DUAL_INDEXER_LEGACY_ES_PASSWORD_FILE (an API key from DUAL_INDEXER_LEGACY_ES_API_KEY[_FILE] instead).
    #[arg(long, global = true, env = "DUAL_INDEXER_LEGACY_ES_USERNAME", help_heading = heading::SECURITY)]
    pub legacy_es_username: Option<String>,
    /// PEM file of the CA that signed the legacy cluster's TLS certificate.
    #[arg(
        long,
        global = true,
        env = "DUAL_INDEXER_LEGACY_ES_CA_CERT",
        value_name = "FILE",
        help_heading = heading::SECURITY
    )]
    pub legacy_es_ca_cert: Option<std::path::PathBuf>,
    /// Do not validate the legacy cluster's TLS certificate (development only).
    #[arg(long, global = true, env = "DUAL_INDEXER_LEGACY_ES_INSECURE", help_heading = heading::SECURITY)]
    pub legacy_es_insecure: bool,
}

impl GlobalArgs {
    /// Credentials and TLS settings of both clusters, with the secrets read from `env`.
    pub fn security(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::es::Security, String> {
        use crate::es::ClusterSecurity;
        Ok(crate::es::Security {
            new: ClusterSecurity::resolve(
                ClusterSecurity::NEW_PREFIX,
                "--es",
                self.es_username.clone(),
                self.es_ca_cert.clone(),
                self.es_insecure,
                env,
            )?,
            legacy: ClusterSecurity::resolve(
                ClusterSecurity::LEGACY_PREFIX,
                "--legacy-es",
                self.legacy_es_username.clone(),
                self.legacy_es_ca_cert.clone(),
                self.legacy_es_insecure,
                env,
            )?,
        })
    }
}

/// How to reach Kafka.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (comma-separated HOST:PORT).
    #[arg(long, env = "DUAL_INDEXER_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Any librdkafka setting, as KEY=VALUE (repeatable), e.g. `--kafka security.protocol=SSL`.
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka: Vec<(String, String)>,
}

impl KafkaArgs {
    /// librdkafka secrets read from the environment (or `…_FILE`), and the property each sets.
    pub const SECRETS: &'static [(&'static str, &'static str)] = &[
        ("DUAL_INDEXER_KAFKA_SASL_PASSWORD", "sasl.password"),
        ("DUAL_INDEXER_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    ];

    /// The librdkafka client configuration shared by consumers and producers.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        self.client_config_from(&crate::secrets::process_env)
            .map_err(anyhow::Error::msg)
    }

    /// [`Self::client_config`], with secrets read from `env`. A secret given with `--kafka` wins
    /// over the environment, as flags win over variables everywhere.
    pub fn client_config_from(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "dual-indexer");
        for (name, property) in Self::SECRETS {
            if let Some(secret) = crate::secrets::from_env(name, env)? {
                config.set(*property, secret.expose());
            }
        }
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        Ok(config)
    }
}

/// Parses a `KEY=VALUE` flag value (`--kafka`, `--dlq-kafka`).
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example `security.protocol=SSL`)"
        )),
    }
}

/// The lag rule's thresholds, shared by `run` and `lag`.
#[derive(Debug, Args, Clone)]
pub struct LagRuleArgs {
    /// Seconds between lag samples.
    #[arg(long, env = "DUAL_INDEXER_LAG_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_secs: u64,
    /// CAUGHT_UP needs the lag at or under --caught-up-threshold at every sample for this many seconds.
    #[arg(long, env = "DUAL_INDEXER_LAG_WINDOW_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub window_secs: u64,
    /// Lag (messages) that still counts as caught up.
    #[arg(long, env = "DUAL_INDEXER_CAUGHT_UP_THRESHOLD", default_value_t = 0)]
    pub caught_up_threshold: u64,
    /// STALLED: lag above zero and no commit progress for this many seconds.
    #[arg(long, env = "DUAL_INDEXER_STALL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_secs: u64,
}

impl LagRuleArgs {
    /// The rule these flags describe.
    pub fn rule(&self) -> crate::lag::rule::LagRule {
        crate::lag::rule::LagRule {
            caught_up_threshold: self.caught_up_threshold as i64,
            window: Duration::from_secs(self.window_secs),
            stall_after: Duration::from_secs(self.stall_secs),
            ..crate::lag::rule::LagRule::default()
        }
    }

    /// Time between samples.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// Where each part of a command is in the producers' messages, shared by `run` and
/// `envelope check`. The defaults are the built-in envelope (`schemas/command.schema.json`).
#[derive(Debug, Args, Clone)]
pub struct EnvelopeArgs {
    /// Where the document id is, tried in order (repeatable): a JSON Pointer into the value (`/payload/uid`), `key`, `key:/pointer` into a JSON key, or `header:NAME`.
    #[arg(long, value_name = "SOURCE", default_values = ["/id", "key"])]
    pub id_from: Vec<TextSource>,
    /// Where the operation is: a JSON Pointer into the value.
    #[arg(long, value_name = "POINTER", default_value = "/type", value_parser = Pointer::parse)]
    pub operation_from: Pointer,
    /// An operation value and what it does (repeatable): `CREATE=upsert`, `REMOVE=delete`.
    #[arg(long, value_name = "VALUE=upsert|delete", default_values = ["upsert=upsert", "delete=delete"])]
    pub operation: Vec<OperationValue>,
    /// The operation of a message that carries none: upsert or delete. Unset, such a message is dead-lettered.
    #[arg(long, value_name = "OPERATION", value_parser = mapping::parse_kind)]
    pub default_operation: Option<CommandKind>,
    /// Where each write's external version comes from: offset, record-timestamp, header:NAME, a JSON Pointer into the value (`/meta/seq`), or the built-in envelope's `version` or `timestamp` field.
    #[arg(long, env = "DUAL_INDEXER_VERSION_SOURCE", default_value = "offset")]
    pub version_source: VersionSource,
    /// Where the tags are: a JSON Pointer into the value.
    #[arg(long, value_name = "POINTER", default_value = "/tags", value_parser = Pointer::parse)]
    pub tags_from: Pointer,
    /// How the tags are laid out: object (`{"name": "dor"}`), pairs (`[{"key": "name", "value": "dor"}]`) or prefix (fields named `<prefix><key>`).
    #[arg(long, default_value = "object")]
    pub tags_format: TagsFormat,
    /// With --tags-format pairs: the member of each pair holding the key.
    #[arg(long, value_name = "POINTER", default_value = "/key", value_parser = Pointer::parse)]
    pub tag_key: Pointer,
    /// With --tags-format pairs: the member of each pair holding the value.
    #[arg(long, value_name = "POINTER", default_value = "/value", value_parser = Pointer::parse)]
    pub tag_value: Pointer,
    /// With --tags-format prefix: the start of the field names that are tags (`tag.`).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub tag_prefix: String,
    /// The object whose members are the document's fields (`""` for the whole value; members used for another part are left out).
    #[arg(long, value_name = "POINTER", default_value = "/fields", value_parser = Pointer::parse)]
    pub fields_from: Pointer,
    /// Keep only these fields (repeatable); all are kept when none is named.
    #[arg(long = "field", value_name = "NAME")]
    pub only_fields: Vec<String>,
    /// Rename a field on its way into the document (repeatable): `userName=user_name`.
    #[arg(long, value_name = "FROM=TO")]
    pub rename_field: Vec<Rename>,
    /// Where each document's `_routing` is (a pointer, `key`, `key:/pointer` or `header:NAME`). Unset, documents route by id.
    #[arg(long, value_name = "SOURCE")]
    pub routing_from: Option<TextSource>,
    /// What a tombstone (a keyed message with no value) means: reject (dead-letter it) or delete (the document its key names).
    #[arg(long, default_value = "reject")]
    pub tombstones: Tombstones,
}

impl EnvelopeArgs {
    /// The mapping these flags describe.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            id: self.id_from.clone(),
            operation: self.operation_from.clone(),
            operations: self.operation.clone(),
            default_operation: self.default_operation,
            version: self.version_source.clone(),
            tags: self.tags_from.clone(),
            tags_format: self.tags_format,
            tag_key: self.tag_key.clone(),
            tag_value: self.tag_value.clone(),
            tag_prefix: self.tag_prefix.clone(),
            fields: self.fields_from.clone(),
            only_fields: self.only_fields.clone(),
            renames: self.rename_field.clone(),
            routing: self.routing_from.clone(),
            tombstones: self.tombstones,
        }
    }

    /// The checked, compiled mapping.
    pub fn plan(&self) -> Result<Plan, String> {
        Plan::compile(self.mapping())
    }
}

/// Which Elasticsearch cluster an admin subcommand talks to.
#[derive(Debug, Args, Clone)]
pub struct EsArgs {
    /// The cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub es_url: String,
}

impl EsArgs {
    /// A client for the cluster, once its `GET /` says it is a version the new cluster may be
    /// (logged, and refused otherwise).
    pub async fn client(
        &self,
        security: &crate::es::ClusterSecurity,
    ) -> anyhow::Result<elasticsearch::Elasticsearch> {
        let client = crate::es::secure_client(&self.es_url, security, Duration::from_secs(60))?;
        crate::es::cluster::connect(&client, &self.es_url, crate::es::cluster::Role::New).await?;
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Cli, Command};
    use clap::CommandFactory;
    use clap::Parser;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kafka_secrets_come_from_the_environment_and_flags_win() {
        let cli = Cli::try_parse_from(["dual-indexer", "run", "--kafka", "ssl.key.password=flag"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        let env = |name: &str| match name {
            "DUAL_INDEXER_KAFKA_SASL_PASSWORD" => Some("from-env".to_owned()),
            "DUAL_INDEXER_KAFKA_SSL_KEY_PASSWORD" => Some("also-env".to_owned()),
            _ => None,
        };
        let config = args.kafka.client_config_from(&env).unwrap();
        assert_eq!(config.get("sasl.password"), Some("from-env"));
        assert_eq!(config.get("ssl.key.password"), Some("flag"));
        let clash = |name: &str| {
            name.starts_with("DUAL_INDEXER_KAFKA_SASL_PASSWORD")
                .then(|| "x".to_owned())
        };
        let err = args.kafka.client_config_from(&clash).unwrap_err();
        assert!(err.contains("DUAL_INDEXER_KAFKA_SASL_PASSWORD and DUAL_INDEXER_KAFKA_SASL_PASSWORD_FILE are both set"), "{err}");
    }

    #[test]
    fn cluster_credentials_are_separate_for_legacy_and_new() {
        let cli = Cli::try_parse_from([
            "dual-indexer",
            "verify",
            "--es-username",
            "new-user",
            "--legacy-es-insecure",
        ])
        .unwrap();
        let env = |name: &str| match name {
            "DUAL_INDEXER_ES_PASSWORD" => Some("new-pw".to_owned()),
            "DUAL_INDEXER_LEGACY_ES_API_KEY" => Some("bGVnYWN5".to_owned()),
            _ => None,
        };
        let security = cli.global.security(&env).unwrap();
        assert_eq!(
            security.new.auth,
            Some(crate::es::Auth::Basic {
                username: "new-user".into(),
                password: crate::secrets::Secret::new("new-pw")
            })
        );
        assert!(!security.new.insecure);
        assert_eq!(
            security.legacy.auth,
            Some(crate::es::Auth::ApiKey(crate::secrets::Secret::new(
                "bGVnYWN5"
            )))
        );
        assert!(security.legacy.insecure);
        let shown = format!("{security:?}");
        assert!(
            !shown.contains("new-pw") && !shown.contains("bGVnYWN5"),
            "{shown}"
        );
    }

    #[test]
    fn run_help_lists_every_flag_once_under_its_heading() {
        let mut cli = Cli::command();
        cli.build();
        let run = cli.find_subcommand_mut("run").expect("run exists");
        let help = run.render_long_help().to_string();
        // A heading is an unindented line ending in `:`. A flag's own line starts with the flag
        // (after a short form such as `-h, `); its description is indented further and may name
        // other flags.
        let mut section = "";
        let mut listed: Vec<(&str, &str)> = Vec::new();
        for line in help.lines() {
            let indent = line.len() - line.trim_start().len();
            if indent == 0 {
                if let Some(title) = line.strip_suffix(':') {
                    section = title;
                }
            } else if indent <= 6 {
                let flag = match line.trim_start().split_once(", ") {
                    Some((short, long)) if short.len() == 2 => long,
                    _ => line.trim_start(),
                };
                if let Some(long) = flag.strip_prefix("--") {
                    listed.push((long.split(' ').next().unwrap_or_default(), section));
                }
            }
        }
        for title in [
            heading::KAFKA,
            heading::ES,
            heading::BATCHING,
            heading::LAG,
            heading::SECURITY,
            heading::LOGGING,
            heading::STATUS,
        ] {
            assert!(
                listed.iter().any(|(_, section)| *section == title),
                "no flag under {title:?} in\n{help}"
            );
        }
        for arg in run.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            let times = listed.iter().filter(|(flag, _)| *flag == long).count();
            assert_eq!(times, 1, "--{long} listed {times} times in\n{help}");
        }
        let mut ungrouped: Vec<&str> = listed
            .iter()
            .filter(|(_, section)| *section == "Options")
            .map(|(flag, _)| *flag)
            .collect();
        ungrouped.sort_unstable();
        assert_eq!(ungrouped, ["config", "help", "version"], "{help}");
    }
}
