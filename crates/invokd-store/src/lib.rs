#![doc = include_str!("../README.md")]

pub mod blob_fs;
pub mod blob_s3;
mod group_commit;
pub mod sqlite;

pub use blob_fs::LocalBlobStore;
pub use blob_s3::{S3BlobStore, S3Config};
pub use sqlite::SqliteStore;
