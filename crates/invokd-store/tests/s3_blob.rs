//! The S3 blob store against a real S3-compatible server: `INVOKD_TEST_S3_URL`, which
//! `scripts/services` starts (moto). Each test works in a bucket of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use invokd_core::blob::{BlobError, BlobStore};
use invokd_store::{S3BlobStore, S3Config};

fn endpoint() -> url::Url {
    let url = std::env::var("INVOKD_TEST_S3_URL").unwrap_or_else(|_| {
        panic!("INVOKD_TEST_S3_URL is not set: run `source scripts/services` first (it starts an S3-compatible server)")
    });
    url.parse().expect("INVOKD_TEST_S3_URL is a URL")
}

fn config(bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        endpoint: endpoint(),
        bucket: bucket.to_owned(),
        region: "us-east-1".to_owned(),
        path_style: true,
        prefix: prefix.to_owned(),
        access_key_id: "testing".to_owned(),
        secret_access_key: "testing".to_owned(),
        session_token: None,
    }
}

async fn fresh_store(prefix: &str) -> S3BlobStore {
    let bucket = format!("invokd-test-{:016x}", rand::random::<u64>());
    let store = S3BlobStore::new(config(&bucket, prefix)).unwrap();
    store.create_bucket().await.unwrap();
    // Creating it again is fine: several replicas start with the same settings.
    store.create_bucket().await.unwrap();
    store
}

#[tokio::test]
async fn put_get_and_missing() {
    let s = fresh_store("").await;
    s.put("j1/1/0.png", Bytes::from_static(b"\x89PNG..."))
        .await
        .unwrap();
    assert_eq!(
        s.get("j1/1/0.png").await.unwrap().unwrap(),
        Bytes::from_static(b"\x89PNG...")
    );
    assert!(s.get("j1/1/1.png").await.unwrap().is_none());
    // Overwriting replaces the whole object.
    s.put("j1/1/0.png", Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert_eq!(&s.get("j1/1/0.png").await.unwrap().unwrap()[..], b"second");
    s.check().await.unwrap();
    s.check_writable().await.unwrap();
}

#[tokio::test]
async fn bad_keys_are_refused_before_any_request() {
    let s = fresh_store("").await;
    for bad in ["../x", "/abs", "a//b", "a/b c", ""] {
        assert!(
            matches!(
                s.put(bad, Bytes::new()).await,
                Err(BlobError::InvalidKey(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(s.get(bad).await, Err(BlobError::InvalidKey(_))));
    }
}

#[tokio::test]
async fn delete_prefix_takes_one_jobs_files_across_pages() {
    let s = fresh_store("deploy-a").await;
    // More than one listing page (1,000 keys) and one delete batch.
    let keys: Vec<String> = (0..1_003).map(|n| format!("ab/1/{n}.png")).collect();
    let puts = keys.iter().map(|k| s.put(k, Bytes::from_static(b"x")));
    for chunk in puts.collect::<Vec<_>>().chunks_mut(64) {
        for r in futures::future::join_all(chunk.iter_mut()).await {
            r.unwrap();
        }
    }
    // A job whose id starts like the other's keeps its files.
    s.put("abc/1/0.png", Bytes::from_static(b"keep"))
        .await
        .unwrap();
    s.delete_prefix("ab").await.unwrap();
    assert!(s.get("ab/1/0.png").await.unwrap().is_none());
    assert!(s.get("ab/1/1002.png").await.unwrap().is_none());
    assert_eq!(&s.get("abc/1/0.png").await.unwrap().unwrap()[..], b"keep");
    // Nothing there is fine.
    s.delete_prefix("nothing-here").await.unwrap();
}

#[tokio::test]
async fn prefixes_keep_deployments_apart() {
    let bucket = format!("invokd-test-{:016x}", rand::random::<u64>());
    let a = S3BlobStore::new(config(&bucket, "a")).unwrap();
    let b = S3BlobStore::new(config(&bucket, "b/")).unwrap();
    a.create_bucket().await.unwrap();
    a.put("j/1/0.wav", Bytes::from_static(b"a")).await.unwrap();
    assert!(b.get("j/1/0.wav").await.unwrap().is_none());
    b.put("j/1/0.wav", Bytes::from_static(b"b")).await.unwrap();
    b.delete_prefix("j").await.unwrap();
    assert_eq!(&a.get("j/1/0.wav").await.unwrap().unwrap()[..], b"a");
}

#[tokio::test]
async fn presigned_urls_serve_the_file_without_credentials() {
    let s = fresh_store("p").await;
    s.put("j/1/0.jpeg", Bytes::from_static(b"jpeg bytes"))
        .await
        .unwrap();
    let url = s
        .presigned_url("j/1/0.jpeg", Duration::from_secs(600))
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("X-Amz-Expires=600"), "{url}");
    let res = reqwest::get(&url).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(&res.bytes().await.unwrap()[..], b"jpeg bytes");
    // A week at most: SigV4 refuses longer.
    let long = s
        .presigned_url("j/1/0.jpeg", Duration::from_secs(30 * 24 * 3600))
        .unwrap();
    assert!(long.contains("X-Amz-Expires=604800"), "{long}");
    assert!(s.presigned_url("../x", Duration::from_secs(1)).is_none());
}

#[tokio::test]
async fn an_unreachable_or_missing_bucket_is_an_error() {
    let mut c = config("no-such-bucket-invokd", "");
    let s = S3BlobStore::new(c.clone()).unwrap();
    assert!(matches!(s.check().await, Err(BlobError::Remote(_))));
    assert!(matches!(
        s.check_writable().await,
        Err(BlobError::Remote(_))
    ));
    c.endpoint = "http://127.0.0.1:9".parse().unwrap();
    let s = S3BlobStore::new(c).unwrap();
    let err = s.get("j/1/0.png").await.unwrap_err();
    assert!(matches!(err, BlobError::Remote(_)), "{err}");
}
