#![doc = include_str!("../README.md")]

pub mod blob_fs;
pub mod sqlite;

pub use blob_fs::LocalBlobStore;
pub use sqlite::SqliteStore;
