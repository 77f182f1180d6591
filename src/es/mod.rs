//! Connecting to an Elasticsearch or OpenSearch cluster and preparing its indices.
//!
//! The index mappings live in `schemas/` and are compiled in from there, so the service, its
//! tests and its documentation all read the same file. [`cluster`] knows which version answers
//! and what that changes; [`read`] reads a whole index without sorting on `_id`.

pub mod cluster;
pub mod read;

use std::path::PathBuf;
use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::Value;

use crate::secrets::{self, Secret};

pub use crate::schemas::{LEGACY_INDEX_TEMPLATE, NEW_INDEX_TEMPLATE};

/// How to authenticate to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An API key in the encoded form Elasticsearch returns (base64 of `id:api_key`).
    ApiKey(Secret),
}

/// How to reach one cluster safely: its credentials and which server certificates to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSecurity {
    /// Credentials, if the cluster needs them.
    pub auth: Option<Auth>,
    /// A PEM file with the CA certificate(s) that signed the cluster's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Skip certificate validation (development only; logged as a warning).
    pub insecure: bool,
}

/// The security settings of both clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The new cluster.
    pub new: ClusterSecurity,
    /// The legacy cluster.
    pub legacy: ClusterSecurity,
}

impl ClusterSecurity {
    /// The prefix of the new cluster's secret variables.
    pub const NEW_PREFIX: &'static str = "DUAL_INDEXER_ES";
    /// The prefix of the legacy cluster's secret variables.
    pub const LEGACY_PREFIX: &'static str = "DUAL_INDEXER_LEGACY_ES";
    /// The secrets each prefix names (each also as `…_FILE`).
    pub const SECRETS: [&'static str; 2] = ["PASSWORD", "API_KEY"];

    /// One cluster's settings. `prefix` names its secret variables (`DUAL_INDEXER_ES` reads
    /// `DUAL_INDEXER_ES_PASSWORD[_FILE]` and `DUAL_INDEXER_ES_API_KEY[_FILE]`); `flag` is the
    /// prefix of its flags (`--es`), for messages.
    pub fn resolve(
        prefix: &str,
        flag: &str,
        username: Option<String>,
        ca_cert: Option<PathBuf>,
        insecure: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let password = secrets::from_env(&format!("{prefix}_PASSWORD"), env)?;
        let api_key = secrets::from_env(&format!("{prefix}_API_KEY"), env)?;
        let auth = match (username, password, api_key) {
            (None, None, None) => None,
            (Some(username), Some(password), None) => Some(Auth::Basic { username, password }),
            (None, None, Some(key)) => Some(Auth::ApiKey(key)),
            (Some(_), None, None) => {
                return Err(format!(
                    "{flag}-username is set but no password: set {prefix}_PASSWORD or {prefix}_PASSWORD_FILE"
                ))
            }
            (None, Some(_), None) => {
                return Err(format!(
                    "{prefix}_PASSWORD is set but {flag}-username is not"
                ))
            }
            (_, _, Some(_)) => {
                return Err(format!(
                    "{prefix}_API_KEY and basic credentials ({flag}-username, {prefix}_PASSWORD) are both set; use one"
                ))
            }
        };
        if insecure && ca_cert.is_some() {
            return Err(format!(
                "{flag}-ca-cert and {flag}-insecure are both set; a CA to validate against and no validation contradict each other"
            ));
        }
        Ok(Self {
            auth,
            ca_cert,
            insecure,
        })
    }
}

/// Builds a client for one cluster without credentials (or with those in the URL).
pub fn client(url: &str, timeout: Duration) -> anyhow::Result<Elasticsearch> {
    secure_client(url, &ClusterSecurity::default(), timeout)
}

/// Builds a client for one cluster. Credentials in the URL (`https://user:pass@host`) are taken
/// out of it and sent as basic authentication, so no error or log line can show them.
pub fn secure_client(
    url: &str,
    security: &ClusterSecurity,
    timeout: Duration,
) -> anyhow::Result<Elasticsearch> {
    let shown = crate::secrets::redact_url(url);
    let mut parsed = url::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("`{shown}` is not a valid Elasticsearch URL: {e}"))?;
    let mut auth = security.auth.clone();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        anyhow::ensure!(
            auth.is_none(),
            "the URL {shown} carries credentials and others are configured too; use one"
        );
        auth = Some(Auth::Basic {
            username: percent_decode(parsed.username()),
            password: Secret::new(percent_decode(parsed.password().unwrap_or_default())),
        });
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
    }
    let mut builder =
        TransportBuilder::new(SingleNodeConnectionPool::new(parsed.clone())).timeout(timeout);
    match auth {
        Some(Auth::Basic { username, password }) => {
            builder = builder.auth(Credentials::Basic(username, password.expose().to_owned()));
        }
        Some(Auth::ApiKey(key)) => {
            builder = builder.auth(Credentials::EncodedApiKey(key.expose().to_owned()));
        }
        None => {}
    }
    if let Some(path) = &security.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "reading the CA certificate {} for {shown}: {e}",
                path.display()
            )
        })?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{} is not a PEM CA certificate: {e}", path.display()))?;
        builder = builder.cert_validation(CertificateValidation::Full(certificate));
    } else if security.insecure {
        tracing::warn!(url = %parsed, "TLS certificate validation is OFF for this cluster: development only");
        builder = builder.cert_validation(CertificateValidation::None);
    }
    let transport = builder
        .build()
        .map_err(|e| anyhow::anyhow!("building the Elasticsearch client for {shown}: {e}"))?;
    Ok(Elasticsearch::new(transport))
}

/// Decodes `%XX` escapes, as userinfo in a URL carries them.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// An answer that asking again will not change: a 4xx other than 408 (timeout) and 429 (too
/// many requests). Callers that retry show it at once instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether an HTTP status is a final answer to the request (see [`Refused`]).
pub fn is_final(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// Sends a JSON request and returns the status and parsed body (`Null` for an empty body).
pub async fn request(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let bytes = body.map(serde_json::to_vec).transpose()?;
    let response = client
        .send(
            method,
            path,
            HeaderMap::new(),
            None::<&()>,
            bytes.as_deref(),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let status = response.status_code().as_u16();
    let text = response.text().await?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// Like [`request`], but only a 2xx answer is a success: anything else is the error
/// "`what` failed with HTTP <status>: <body>".
pub async fn request_ok(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
    what: &str,
) -> anyhow::Result<Value> {
    let (status, reply) = request(client, method, path, body).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "{what} failed with HTTP {status}: {reply}"
    );
    Ok(reply)
}

/// Creates `index` with the settings and mappings of `template` unless an index or alias of that
/// name exists. Returns whether it created it.
pub async fn ensure_index(
    client: &Elasticsearch,
    index: &str,
    template: &str,
) -> anyhow::Result<bool> {
    let (status, _) = request(client, Method::Head, &format!("/{index}"), None).await?;
    if status == 200 {
        return Ok(false);
    }
    let template: Value = serde_json::from_str(template)?;
    let body = &template["template"];
    let (status, reply) = request(client, Method::Put, &format!("/{index}"), Some(body)).await?;
    match status {
        200..=299 => Ok(true),
        400 if reply.to_string().contains("already_exists") => Ok(false),
        _ => anyhow::bail!("creating index `{index}` failed with HTTP {status}: {reply}"),
    }
}

/// The mapping `_meta` of `index` (or of the one index behind an alias); `{}` when it has none.
pub async fn read_meta(client: &Elasticsearch, index: &str) -> anyhow::Result<Value> {
    let mapping = request_ok(
        client,
        Method::Get,
        &format!("/{index}/_mapping"),
        None,
        &format!("reading the mapping of `{index}`"),
    )
    .await?;
    Ok(mapping
        .as_object()
        .and_then(|indices| indices.values().next())
        .and_then(|m| m["mappings"].get("_meta"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({})))
}

/// Changes the mapping `_meta` of `index` with `change`. Elasticsearch replaces `_meta` whole, so
/// it is read first and written back with every other key kept.
pub async fn update_meta(
    client: &Elasticsearch,
    index: &str,
    what: &str,
    change: impl FnOnce(&mut Value),
) -> anyhow::Result<()> {
    let mut meta = read_meta(client, index).await?;
    change(&mut meta);
    request_ok(
        client,
        Method::Put,
        &format!("/{index}/_mapping"),
        Some(&serde_json::json!({ "_meta": meta })),
        &format!("{what} in the `_meta` of `{index}`"),
    )
    .await?;
    Ok(())
}

/// Makes recent writes visible to search (real Elasticsearch needs this; the stand-in does not).
pub async fn refresh(client: &Elasticsearch, index: &str) -> anyhow::Result<()> {
    request_ok(
        client,
        Method::Post,
        &format!("/{index}/_refresh"),
        None,
        &format!("refreshing `{index}`"),
    )
    .await?;
    Ok(())
}

/// Counts the documents in `index`.
pub async fn count(client: &Elasticsearch, index: &str) -> anyhow::Result<u64> {
    let reply = request_ok(
        client,
        Method::Get,
        &format!("/{index}/_count"),
        None,
        &format!("counting `{index}`"),
    )
    .await?;
    reply["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("`{index}/_count` answered without a count: {reply}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_timeout_or_an_overload_of_the_4xx_is_worth_asking_again() {
        assert!(is_final(400) && is_final(404) && is_final(403));
        assert!(!is_final(408) && !is_final(429) && !is_final(503) && !is_final(200));
    }
    use crate::secrets::fake_env as env;

    fn resolve(
        username: Option<&str>,
        pairs: &[(&str, &str)],
        insecure: bool,
    ) -> Result<ClusterSecurity, String> {
        ClusterSecurity::resolve(
            "P",
            "--es",
            username.map(str::to_owned),
            None,
            insecure,
            &env(pairs),
        )
    }

    #[test]
    fn credentials_are_basic_or_an_api_key_and_half_of_basic_is_refused() {
        assert_eq!(
            resolve(None, &[], false).unwrap(),
            ClusterSecurity::default()
        );
        let basic = resolve(Some("elastic"), &[("P_PASSWORD", "pw")], false).unwrap();
        assert_eq!(
            basic.auth,
            Some(Auth::Basic {
                username: "elastic".into(),
                password: Secret::new("pw")
            })
        );
        assert!(!format!("{basic:?}").contains("pw\""), "{basic:?}");
        let key = resolve(None, &[("P_API_KEY", "a2V5")], false).unwrap();
        assert_eq!(key.auth, Some(Auth::ApiKey(Secret::new("a2V5"))));

        let no_password = resolve(Some("elastic"), &[], false).unwrap_err();
        assert!(no_password
            .contains("--es-username is set but no password: set P_PASSWORD or P_PASSWORD_FILE"));
        let no_user = resolve(None, &[("P_PASSWORD", "pw")], false).unwrap_err();
        assert!(no_user.contains("P_PASSWORD is set but --es-username is not"));
        let both = resolve(
            Some("e"),
            &[("P_PASSWORD", "pw"), ("P_API_KEY", "k")],
            false,
        )
        .unwrap_err();
        assert!(both.contains("are both set"));
        let contradiction =
            ClusterSecurity::resolve("P", "--es", None, Some("/ca.pem".into()), true, &env(&[]))
                .unwrap_err();
        assert!(contradiction.contains("--es-ca-cert and --es-insecure"));
    }

    #[test]
    fn url_credentials_are_decoded_and_clash_with_configured_ones() {
        assert_eq!(percent_decode("p%40ss%3Aw0rd"), "p@ss:w0rd");
        assert_eq!(percent_decode("100%"), "100%");
        let configured = resolve(None, &[("P_API_KEY", "k")], false).unwrap();
        let err = secure_client(
            "http://u:hunter2@127.0.0.1:9200",
            &configured,
            Duration::from_secs(1),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("carries credentials"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(client("http://u:hunter2@127.0.0.1:9200", Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_ca_file_must_hold_a_pem_certificate() {
        let path = std::env::temp_dir().join(format!("not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "this is not a certificate").unwrap();
        let security = ClusterSecurity {
            ca_cert: Some(path.clone()),
            ..Default::default()
        };
        let err = secure_client("https://127.0.0.1:9200", &security, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not a PEM CA certificate"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let missing = ClusterSecurity {
            ca_cert: Some("/no/such/ca.pem".into()),
            ..Default::default()
        };
        let err = secure_client("https://127.0.0.1:9200", &missing, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("reading the CA certificate /no/such/ca.pem"),
            "{err}"
        );
    }
}
