//! How jobs are shown on each surface; here, what both share: `blob:` references turned into
//! signed, expiring file URLs.

pub mod async_invoke;
pub mod fal_queue;
pub use invokd_wire::sse;

use chrono::Utc;
use invokd_core::{
    JobId,
    blob::{BLOB_SCHEME, BlobStore},
    signing::UrlSigner,
};

use crate::{config::FileUrls, state::App};
use serde_json::{Map, Value};

/// Turns `blob:<key>` into `<base>/files/<key>?expires=..&sig=..`.
///
/// Only keys under the job's own prefix are signed: outputs echo user text (a prompt of
/// `blob:<another job's file>` must stay text, not become a signed URL to someone else's file).
pub struct UrlRenderer<'a> {
    pub base_url: &'a str,
    pub signer: &'a UrlSigner,
    pub expires: i64,
    /// Set when files are served straight from the blob storage (presigned URLs), for this long.
    pub direct: Option<(&'a dyn BlobStore, std::time::Duration)>,
}

impl<'a> UrlRenderer<'a> {
    /// The renderer for a request reaching the server at `base_url`.
    pub fn new(state: &'a App, base_url: &'a str) -> Self {
        Self {
            base_url,
            signer: &state.signer,
            expires: expiry(state.config.file_url_ttl),
            direct: direct_urls(
                state.config.file_urls,
                state.blobs.as_ref(),
                state.config.file_url_ttl,
            ),
        }
    }
}

/// The blob storage that makes file URLs itself, when the configuration asks for it.
pub fn direct_urls(
    mode: FileUrls,
    blobs: &dyn BlobStore,
    ttl: std::time::Duration,
) -> Option<(&dyn BlobStore, std::time::Duration)> {
    (mode == FileUrls::Presigned).then_some((blobs, ttl))
}

/// Expiry rounded up to the hour, so repeated reads give the same URL and caches can work.
pub fn expiry(ttl: std::time::Duration) -> i64 {
    let at = Utc::now().timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    (at + 3599) / 3600 * 3600
}

impl UrlRenderer<'_> {
    pub fn file_url(&self, key: &str) -> String {
        if let Some(url) = self
            .direct
            .and_then(|(blobs, ttl)| blobs.presigned_url(key, ttl))
        {
            return url;
        }
        let sig = self.signer.sign(key, self.expires);
        format!(
            "{}/files/{key}?expires={}&sig={sig}",
            self.base_url, self.expires
        )
    }

    fn rewrite(&self, v: &mut Value, job_prefix: &str) {
        match v {
            Value::String(s) => {
                if let Some(key) = s.strip_prefix(BLOB_SCHEME)
                    && key.starts_with(job_prefix)
                {
                    *s = self.file_url(key);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.rewrite(i, job_prefix)),
            Value::Object(map) => map.values_mut().for_each(|i| self.rewrite(i, job_prefix)),
            _ => {}
        }
    }

    /// The job's output with each of its own file references turned into a URL.
    pub fn output(&self, job: JobId, output: &Map<String, Value>) -> Map<String, Value> {
        let mut v = Value::Object(output.clone());
        self.rewrite(&mut v, &format!("{job}/"));
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blob_references_become_signed_urls_everywhere() {
        let signer = UrlSigner::new(b"k".to_vec());
        let r = UrlRenderer {
            base_url: "http://h:1",
            signer: &signer,
            expires: 3600,
            direct: None,
        };
        let job = JobId::generate();
        let other = JobId::generate();
        let out = r.output(
            job,
            json!({
                "images": [{"url": format!("blob:{job}/1/0.png")}],
                "audio": {"url": format!("blob:{job}/1/o.wav")},
                "prompt": format!("blob:{other}/1/0.png"),
            })
            .as_object()
            .unwrap(),
        );
        let url = out["images"][0]["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://h:1/files/{job}/1/0.png?expires=3600&sig=")),
            "{url}"
        );
        assert!(
            out["audio"]["url"]
                .as_str()
                .unwrap()
                .contains(&format!("/files/{job}/1/o.wav?"))
        );
        assert_eq!(
            out["prompt"],
            format!("blob:{other}/1/0.png"),
            "another job's file is never signed"
        );
        let sig = url.rsplit_once("sig=").unwrap().1;
        assert!(signer.verify(&format!("{job}/1/0.png"), 3600, sig, 0));
    }
}
