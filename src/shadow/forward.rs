//! The legacy side of the proxy: every request is sent to the legacy cluster as it came (method,
//! path, query, headers with the application's credentials, body), and the answer comes back as
//! it was sent: status, headers and the body's bytes, compressed or not.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, StatusCode};

use crate::es::ClusterSecurity;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and `host`, which
/// the client sets for the upstream.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The legacy cluster, reached through one pooled HTTP client.
#[derive(Debug, Clone)]
pub struct Legacy {
    client: reqwest::Client,
    base: String,
}

/// The legacy cluster's answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers, less the hop-by-hop ones.
    pub headers: HeaderMap,
    /// Its body, byte for byte.
    pub body: Bytes,
    /// From sending the request to the last byte of the answer.
    pub elapsed: Duration,
}

impl Legacy {
    /// A client for the legacy cluster at `url`, with its TLS settings. Its credentials are not
    /// used: the application's own pass through.
    pub fn new(url: &str, security: &ClusterSecurity, timeout: Duration) -> anyhow::Result<Self> {
        let shown = crate::secrets::redact_url(url);
        url::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("`{shown}` is not a valid legacy cluster URL: {e}"))?;
        // The answer must reach the application as the cluster sent it: no decompression.
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .tcp_nodelay(true);
        if let Some(path) = &security.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "reading the CA certificate {} for {shown}: {e}",
                    path.display()
                )
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not a PEM CA certificate: {e}", path.display())
            })?;
            builder = builder.add_root_certificate(certificate);
        } else if security.insecure {
            tracing::warn!(url = %shown, "TLS certificate validation is OFF for the legacy cluster: development only");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client for {shown}: {e}"))?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request as it came.
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, reqwest::Error> {
        let started = Instant::now();
        let response = self
            .client
            .request(method, format!("{}{path_and_query}", self.base))
            .headers(end_to_end(headers))
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = end_to_end(response.headers());
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }
}

/// `headers` without the hop-by-hop ones.
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out.remove("keep-alive");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_content_headers_pass_and_connection_headers_do_not() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        let out = end_to_end(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "content-type"]);
    }
}
