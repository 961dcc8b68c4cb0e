//! Blob storage for output files, and the `blob:` references that outputs carry until they are
//! shown to a client as signed URLs.

use async_trait::async_trait;
use bytes::Bytes;

/// Outputs are stored with `blob:<key>` in place of a URL; the API surfaces turn each one into a
/// signed, expiring URL when they show the output, so a stored output never holds a URL that expires.
pub const BLOB_SCHEME: &str = "blob:";

/// A blob storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    #[error("blob storage IO failed: {0}")]
    Io(#[from] std::io::Error),
    /// A remote store (S3) refused or could not be reached.
    #[error("blob storage failed: {0}")]
    Remote(String),
}

/// Where output files live. Keys are relative paths such as `<job id>/<attempt>/<n>.png`.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, completely or not at all: a reader never sees a torn file.
    /// When it returns, the blob is durable.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;

    /// The blob's bytes, or `None` if there is no such blob.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError>;

    /// Deletes every blob whose key starts with `prefix/` (a job's files). Missing is fine.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError>;

    /// Whether the storage is reachable and writable.
    async fn check(&self) -> Result<(), BlobError>;

    /// A URL that serves the blob directly from the storage for `ttl`, when the storage can make
    /// one (presigned S3 URLs); `None` means files are served through the gateway.
    fn presigned_url(&self, _key: &str, _ttl: std::time::Duration) -> Option<String> {
        None
    }

    /// A URL a worker PUTs a file to for `ttl`, straight into the storage, when the storage can
    /// make one; `None` means files are uploaded through the gateway.
    fn presigned_put_url(&self, _key: &str, _ttl: std::time::Duration) -> Option<String> {
        None
    }
}

/// Checks that a key is a plain relative path: no `..`, no absolute path, no empty segment,
/// only `[A-Za-z0-9._-]` in each segment.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(BlobError::InvalidKey(key.to_owned()))
    }
}

/// The content type a file gets from its extension.
pub fn content_type_for(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_relative_paths() {
        assert!(validate_key("0190/1/0.png").is_ok());
        for bad in [
            "", "/abs", "a/../b", "a//b", "./a", "a/b c", "a\\b", "..", "a/%2e",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type_for("x/0.jpeg"), "image/jpeg");
        assert_eq!(content_type_for("x/0.png"), "image/png");
        assert_eq!(content_type_for("x/0.wav"), "audio/wav");
        assert_eq!(content_type_for("x/0"), "application/octet-stream");
    }
}
