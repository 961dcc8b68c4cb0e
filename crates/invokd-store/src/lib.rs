#![doc = include_str!("../README.md")]

pub mod blob_fs;
mod group_commit;
pub mod sqlite;

pub use blob_fs::LocalBlobStore;
pub use sqlite::SqliteStore;
