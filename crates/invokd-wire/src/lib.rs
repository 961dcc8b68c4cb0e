//! What invokd's server puts on the wire and takes off it, as plain functions with no server
//! state: API errors with the one status mapping, JSON request bodies, the SSE events of both
//! surfaces, webhook signatures. Kept apart from `invokd-server` so the fuzz targets in `fuzz/`
//! build on these alone, not on the whole server.

pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod signing;
pub mod sse;
