//! Blob storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...), so that every replica
//! reads the files any of them wrote.
//!
//! Requests are signed with SigV4 by `rusty-s3` (no I/O of its own) and sent with reqwest; the
//! same signer makes presigned GET URLs without a network round trip, so showing an output never
//! waits on S3.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::blob::{BlobError, BlobStore, content_type_for, validate_key};
use reqwest::StatusCode;
use rusty_s3::{
    Bucket, Credentials, S3Action, UrlStyle,
    actions::{ListObjectsV2, ObjectIdentifier},
};

/// How long the URL of one request to S3 stays valid: only as long as it takes to send it.
const REQUEST_TTL: Duration = Duration::from_secs(300);
/// S3 deletes at most this many keys per request.
const DELETE_BATCH: usize = 1000;
/// Presigned SigV4 URLs cannot live longer than a week.
const MAX_PRESIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Written by `check_writable`: proves the bucket is reachable and writable.
const HEALTH_KEY: &str = ".invokd-health";

/// Where the bucket is and how to reach it.
#[derive(Clone)]
pub struct S3Config {
    /// `https://s3.<region>.amazonaws.com`, or an S3-compatible server's URL.
    pub endpoint: url::Url,
    pub bucket: String,
    pub region: String,
    /// Path-style URLs (`<endpoint>/<bucket>/<key>`), which S3-compatible servers expect;
    /// virtual-host style (`<bucket>.<endpoint host>/<key>`) otherwise.
    pub path_style: bool,
    /// Prepended to every key, so one bucket can hold several deployments.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Blobs as objects of one bucket; the key (after the configured prefix) is the object key.
#[derive(Clone)]
pub struct S3BlobStore {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn remote(what: &str, e: impl std::fmt::Display) -> BlobError {
    BlobError::Remote(format!("{what}: {e}"))
}

/// Sends one request; a transport failure, or an answer that is neither a success nor one of
/// `also_ok`, is an error that says what was being done and what S3 answered (its XML body cut
/// short: enough to see the `<Code>`).
async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
    also_ok: &[StatusCode],
) -> Result<reqwest::Response, BlobError> {
    // S3 asks its clients to try again after a 500, 502, 503 or 504, as AWS's own SDKs do (a
    // busy or starting server answers them); every request here (PUT, GET, DELETE of one key,
    // a listing) may be sent twice.
    const RETRIES: u32 = 3;
    let mut req = req;
    let mut tries = 0;
    let res = loop {
        let again = if tries < RETRIES {
            req.try_clone()
        } else {
            None
        };
        let res = req.send().await;
        let transient = match &res {
            Ok(r) => matches!(r.status().as_u16(), 500 | 502 | 503 | 504),
            Err(e) => e.is_connect() || e.is_timeout(),
        };
        match again {
            Some(next) if transient => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100 << (2 * tries))).await;
                req = next;
            }
            _ => break res,
        }
    };
    let res = res.map_err(|e| remote(what, e))?;
    let status = res.status();
    if status.is_success() || also_ok.contains(&status) {
        return Ok(res);
    }
    let body = res.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    Err(BlobError::Remote(format!(
        "{what}: S3 answered {status}: {body}"
    )))
}

impl S3BlobStore {
    /// A store for the configured bucket. Nothing is sent until the first call.
    pub fn new(config: S3Config) -> Result<Self, BlobError> {
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(config.endpoint, style, config.bucket, config.region)
            .map_err(|e| remote("invalid S3 bucket settings", e))?;
        let prefix = config.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| remote("cannot build the HTTP client", e))?;
        let credentials = match config.session_token {
            Some(token) => {
                Credentials::new_with_token(config.access_key_id, config.secret_access_key, token)
            }
            None => Credentials::new(config.access_key_id, config.secret_access_key),
        };
        Ok(Self {
            bucket,
            credentials,
            prefix,
            http,
        })
    }

    fn object_key(&self, key: &str) -> Result<String, BlobError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    /// A presigned GET URL for the blob, valid for `ttl` (at most a week).
    pub fn presigned_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError> {
        let object = self.object_key(key)?;
        let action = self.bucket.get_object(Some(&self.credentials), &object);
        Ok(action.sign(ttl.min(MAX_PRESIGN_TTL)).to_string())
    }

    /// Creates the bucket; an existing bucket owned by these credentials is fine.
    pub async fn create_bucket(&self) -> Result<(), BlobError> {
        let action = self.bucket.create_bucket(&self.credentials);
        let url = action.sign(REQUEST_TTL);
        let body = action.body();
        let req = self
            .http
            .put(url)
            // S3 wants a length even for the empty body of us-east-1.
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body);
        send(req, "creating the bucket failed", &[StatusCode::CONFLICT]).await?;
        Ok(())
    }

    /// Writes a small object: the bucket exists and these credentials may write to it.
    pub async fn check_writable(&self) -> Result<(), BlobError> {
        self.put(HEALTH_KEY, Bytes::from_static(b"ok")).await
    }

    /// Every object key under `prefix`, one page of the listing at a time.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(REQUEST_TTL);
            let res = send(self.http.get(url), "listing objects failed", &[]).await?;
            let text = res
                .text()
                .await
                .map_err(|e| remote("listing objects failed", e))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| remote("S3's object listing is unreadable", e))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<(), BlobError> {
        let objects: Vec<ObjectIdentifier> = keys
            .iter()
            .map(|k| ObjectIdentifier::new(k.clone()))
            .collect();
        let mut action = self
            .bucket
            .delete_objects(Some(&self.credentials), objects.iter());
        action.set_quiet(true);
        let url = action.sign(REQUEST_TTL);
        let (body, md5) = action.body_with_md5();
        let req = self.http.post(url).header("Content-MD5", md5).body(body);
        send(req, "deleting objects failed", &[]).await?;
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let object = self.object_key(key)?;
        // A PUT is atomic in S3: readers see the old object, or the whole new one.
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &object)
            .sign(REQUEST_TTL);
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, content_type_for(key))
            .body(bytes);
        send(req, "storing a file in S3 failed", &[]).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let object = self.object_key(key)?;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &object)
            .sign(REQUEST_TTL);
        const WHAT: &str = "reading a file from S3 failed";
        let res = send(self.http.get(url), WHAT, &[StatusCode::NOT_FOUND]).await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        res.bytes().await.map(Some).map_err(|e| remote(WHAT, e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        // The trailing slash keeps job `ab` from taking the files of job `abc` with it.
        let under = format!("{}/", self.object_key(prefix)?);
        let keys = self.list(&under).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_batch(batch).await?;
        }
        Ok(())
    }

    /// A HEAD of the bucket: cheap enough for a load balancer's readiness probe. Start-up checks
    /// writing with `check_writable`.
    async fn check(&self) -> Result<(), BlobError> {
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(REQUEST_TTL);
        let what = format!("checking the bucket {} failed", self.bucket.name());
        send(self.http.head(url), &what, &[]).await?;
        Ok(())
    }

    fn presigned_url(&self, key: &str, ttl: Duration) -> Option<String> {
        self.presigned_get(key, ttl).ok()
    }

    fn presigned_put_url(&self, key: &str, ttl: Duration) -> Option<String> {
        let object = self.object_key(key).ok()?;
        let action = self.bucket.put_object(Some(&self.credentials), &object);
        Some(action.sign(ttl.min(MAX_PRESIGN_TTL)).to_string())
    }
}
