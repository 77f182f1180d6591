//! `dual-indexer shadow`: the proxy that sends a share of the application's real reads to the
//! new cluster, translated, and compares the answers (see [`crate::shadow`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cli::heading;
use crate::es::Security;
use crate::shadow::{Proxy, ShadowSettings};

/// Where reads are answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeFrom {
    /// Every answer comes from the legacy cluster.
    Legacy,
    /// A --share of the reads with an exact translation is answered by the new cluster.
    New,
}

/// `dual-indexer shadow`.
#[derive(Debug, Args)]
pub struct ShadowArgs {
    /// Address to listen on (HOST:PORT); point the application here instead of the legacy cluster.
    #[arg(
        long,
        env = "DUAL_INDEXER_SHADOW_LISTEN",
        default_value = "127.0.0.1:9210"
    )]
    pub listen: SocketAddr,
    /// PEM certificate chain the proxy serves HTTPS with (with --tls-key); plain HTTP when unset.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_TLS_CERT", value_name = "FILE", requires = "tls_key", help_heading = heading::SECURITY)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_TLS_KEY", value_name = "FILE", requires = "tls_cert", help_heading = heading::SECURITY)]
    pub tls_key: Option<PathBuf>,
    /// The legacy cluster's URL: every request goes there.
    #[arg(
        long,
        env = "DUAL_INDEXER_LEGACY_ES_URL",
        default_value = "http://127.0.0.1:9200",
        help_heading = heading::ES
    )]
    pub legacy_url: String,
    /// The legacy index or alias whose reads (`/INDEX/_search`, `_count`, `_msearch`) are shadowed; reads of other or several indices only pass through.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_INDEX", default_value = "tags-v1", help_heading = heading::ES)]
    pub legacy_index: String,
    /// Seconds the legacy cluster has to answer a request.
    #[arg(long, env = "DUAL_INDEXER_LEGACY_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::ES)]
    pub legacy_timeout_secs: u64,
    /// The new cluster's URL.
    #[arg(
        long,
        env = "DUAL_INDEXER_ES_URL",
        default_value = "http://127.0.0.1:9201",
        help_heading = heading::ES
    )]
    pub es_url: String,
    /// The new cluster's read alias (or index) that translated reads go to.
    #[arg(long, env = "DUAL_INDEXER_INDEX", default_value = "tags-v2", help_heading = heading::ES)]
    pub index: String,
    /// Share of `_search`, `_count` and `_msearch` requests also sent, translated, to the new cluster (0 to 1).
    #[arg(long, env = "DUAL_INDEXER_SHADOW_SAMPLE", default_value_t = 0.05, value_parser = parse_share, help_heading = heading::COMPARISON)]
    pub sample: f64,
    /// Shadow requests in flight at most; a sample that finds all taken is dropped and counted.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000), help_heading = heading::COMPARISON)]
    pub shadow_concurrency: u64,
    /// Milliseconds the new cluster has to answer a shadow request (or a canary read); a later answer is dropped and counted.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::COMPARISON)]
    pub shadow_timeout_ms: u64,
    /// The report: one JSON line per shadowed request (appended); `cutover --shadow-report` reads it.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_REPORT", default_value = "shadow-report.jsonl", help_heading = heading::REPORT)]
    pub report: PathBuf,
    /// Bytes kept of each query and answer in the report.
    #[arg(long, env = "DUAL_INDEXER_SHADOW_ANSWER_BYTES", default_value_t = 4_096, help_heading = heading::REPORT)]
    pub report_answer_bytes: usize,
    /// Where reads are answered from: legacy, or new for a --share of them (the read canary; see docs/shadow.md).
    #[arg(long, env = "DUAL_INDEXER_SERVE_FROM", value_enum, default_value = "legacy", help_heading = heading::COMPARISON)]
    pub serve_from: ServeFrom,
    /// With --serve-from new: the share of reads answered by the new cluster (0 to 1).
    #[arg(long, env = "DUAL_INDEXER_CANARY_SHARE", default_value_t = 0.01, value_parser = parse_share, help_heading = heading::COMPARISON)]
    pub share: f64,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "`{text}` is not a share between 0 and 1 (0.05 is 5 %)"
        )),
    }
}

impl ShadowArgs {
    /// The proxy's settings.
    pub fn settings(&self, security: &Security) -> ShadowSettings {
        ShadowSettings {
            legacy_url: self.legacy_url.clone(),
            legacy_index: self.legacy_index.clone(),
            new_url: self.es_url.clone(),
            new_index: self.index.clone(),
            sample: self.sample,
            concurrency: self.shadow_concurrency as usize,
            timeout: Duration::from_millis(self.shadow_timeout_ms),
            legacy_timeout: Duration::from_secs(self.legacy_timeout_secs),
            report: self.report.clone(),
            answer_bytes: self.report_answer_bytes,
            canary: (self.serve_from == ServeFrom::New).then_some(self.share),
            security: security.clone(),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
        }
    }
}

/// Runs the proxy until SIGTERM or Ctrl-C, then prints what it did.
pub async fn run(args: ShadowArgs, security: &Security) -> anyhow::Result<ExitCode> {
    let proxy = Arc::new(Proxy::new(&args.settings(security))?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {} (--listen): {e}", args.listen))?;
    let address = listener.local_addr()?;
    println!("shadow: listening on {address}");
    tracing::info!(target: super::LOG_TARGET, %address, legacy = %crate::secrets::redact_url(&args.legacy_url), new = %crate::secrets::redact_url(&args.es_url), index = %args.index, sample = args.sample, "shadow proxy started");
    Arc::clone(&proxy)
        .serve(listener, super::shutdown_signal())
        .await;
    println!("{}", proxy.summary());
    Ok(ExitCode::SUCCESS)
}
