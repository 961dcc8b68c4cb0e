//! Workers: processes elsewhere that pull the jobs of the models they serve, run them and hand
//! back their outputs (docs/workers.md). Their tokens, presence and leases, the check of their
//! results, and the service the worker endpoints call, a driver of the same lifecycle as the
//! in-process dispatcher, and RunPod's worker protocol over the same calls.

mod lease;
mod output_check;
mod presence;
mod runpod;
mod service;
mod tokens;

pub use lease::{WorkerLease, owner_for};
pub use output_check::{OutputProblem, check_output, check_references, image_dimensions};
pub use presence::{WorkerPresence, WorkerRecord};
pub use runpod::{RunpodJobId, RunpodWorker, error_of, progress_of};
pub use service::{
    Beats, CONNECTED_WITHIN, HeldBeat, HeldRun, Hello, StoredFileInfo, Taken, WorkerError,
    WorkerService, WorkerServiceConfig, valid_file_name,
};
pub use tokens::{ModelPatterns, PatternError, TOKEN_PREFIX, WorkerToken, generate_token};
