#![doc = include_str!("../README.md")]

pub mod blob;
pub mod catalog;
pub mod events;
pub mod ids;
pub mod input_files;
pub mod job;
pub mod key_cache;
pub mod keys;
pub mod lifecycle;
pub mod provider;
pub mod queue_counts;
pub mod queue_positions;
pub mod run;
pub mod run_updates;
pub mod running;
pub mod service;
pub mod signing;
pub mod store;
pub mod workers;

pub use ids::{JobId, KeyId};
pub use job::{CancelOutcome, Job, JobError, JobStatus, Lease, NewJob, Outcome, UpstreamRef};
