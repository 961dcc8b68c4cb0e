//! Fetching the files an input names, before a run: invokd's own signed file URLs are read from
//! the blob store, `data:` URIs are decoded, other http(s) URLs are downloaded with limits on
//! size and time, and never from loopback, private, link-local or metadata addresses unless the
//! operator allows it. A remote worker fetches the same way, minus the blob store: its
//! gateway's URLs are downloaded like any other, and trusted wherever the gateway runs.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use invokd_core::{
    blob::{BlobStore, content_type_for, validate_key},
    input_files::{decode_data_uri, file_refs},
    provider::{InputFile, InputSource, ProviderError},
    signing::UrlSigner,
};
use serde_json::{Map, Value};

/// Limits and rules of input downloads.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Allow URLs that resolve to loopback, private or link-local addresses (tests, intranets).
    pub allow_private: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            allow_private: false,
        }
    }
}

/// Resolves the file references of inputs into bytes.
#[derive(Clone)]
pub struct InputFetcher {
    http: reqwest::Client,
    /// This server's own files, read without a network trip; none on a remote worker.
    own: Option<(Arc<dyn BlobStore>, UrlSigner)>,
    /// Downloads from this origin may reach any address, with their own client (a worker's
    /// gateway).
    trusted: Option<(reqwest::Url, reqwest::Client)>,
    config: FetchConfig,
}

impl InputFetcher {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        signer: UrlSigner,
        config: FetchConfig,
    ) -> anyhow::Result<Self> {
        Self::build(Some((blobs, signer)), None, config)
    }

    /// A remote worker's: every file is downloaded; those of `gateway` (its origin) even from a
    /// private address.
    pub fn remote(gateway: reqwest::Url, config: FetchConfig) -> anyhow::Result<Self> {
        let trusted = http_client(true, &config)?;
        Self::build(None, Some((gateway, trusted)), config)
    }

    fn build(
        own: Option<(Arc<dyn BlobStore>, UrlSigner)>,
        trusted: Option<(reqwest::Url, reqwest::Client)>,
        config: FetchConfig,
    ) -> anyhow::Result<Self> {
        // A worker's gateway has a client of its own (`trusted`), which may reach it wherever it
        // runs (often this host); every other URL keeps the connect-time address check.
        let http = http_client(config.allow_private, &config)?;
        Ok(Self {
            http,
            own,
            trusted,
            config,
        })
    }
}

/// The client of input downloads: the connect-time address check unless `allow_private`.
fn http_client(allow_private: bool, config: &FetchConfig) -> reqwest::Result<reqwest::Client> {
    crate::outbound::client(allow_private)
        .timeout(config.timeout)
        .connect_timeout(Duration::from_secs(10))
        // A redirect could lead to an internal address; the caller should give the final URL.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[async_trait::async_trait]
impl InputSource for InputFetcher {
    /// Every file the input names, fetched; the first failure fails the run with its field.
    async fn fetch_all(&self, input: &Map<String, Value>) -> Result<Vec<InputFile>, ProviderError> {
        let mut files = Vec::new();
        for r in file_refs(input) {
            let field = r.dotted_path();
            let fail =
                |why: String| ProviderError::permanent("bad_request", format!("{field}: {why}"));
            let (content_type, bytes) = self.fetch(&r.value).await.map_err(fail)?;
            files.push(InputFile {
                field,
                url: r.value,
                content_type,
                bytes,
            });
        }
        Ok(files)
    }
}

impl InputFetcher {
    /// One file: its content type and bytes, or why it cannot be had.
    pub(crate) async fn fetch(&self, value: &str) -> Result<(String, Bytes), String> {
        if let Some(decoded) = decode_data_uri(value) {
            let d = decoded?;
            return Ok((d.content_type, Bytes::from(d.bytes)));
        }
        let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
        if let Some(found) = self.own_file(&url).await {
            return found;
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("cannot fetch {} URLs", url.scheme()));
        }
        let http = match &self.trusted {
            Some((gateway, http)) if gateway.origin() == url.origin() => http,
            _ => {
                if !self.config.allow_private {
                    crate::outbound::check_public(&url).await?;
                }
                &self.http
            }
        };
        let mut resp = http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("cannot fetch {url}: HTTP {}", resp.status()));
        }
        let too_big = || format!("{url} is larger than {} MiB", self.config.max_bytes >> 20);
        if resp
            .content_length()
            .is_some_and(|n| n > self.config.max_bytes as u64)
        {
            return Err(too_big());
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
        {
            if body.len() + chunk.len() > self.config.max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((content_type, body.freeze()))
    }

    /// A signed `/files/` URL of this server, read from the blob store without a network trip.
    async fn own_file(&self, url: &reqwest::Url) -> Option<Result<(String, Bytes), String>> {
        let (blobs, signer) = self.own.as_ref()?;
        // Blob keys use only characters that need no percent-encoding.
        let key = url.path().strip_prefix("/files/")?.to_owned();
        let query: std::collections::HashMap<_, _> = url.query_pairs().collect();
        let expires = query.get("expires")?.parse::<i64>().ok()?;
        let sig = query.get("sig")?;
        if !signer.verify(&key, expires, sig, Utc::now().timestamp()) {
            return None;
        }
        if validate_key(&key).is_err() {
            return Some(Err("invalid file URL".into()));
        }
        Some(match blobs.get(&key).await {
            Ok(Some(bytes)) => Ok((content_type_for(&key).to_owned(), bytes)),
            Ok(None) => Err(format!("{url} no longer exists")),
            Err(e) => Err(format!("reading {url}: {e}")),
        })
    }
}
