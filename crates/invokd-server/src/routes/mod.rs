//! HTTP handlers, one module per resource; each extracts, calls one service function, and maps
//! the result to a view.

pub mod admin;
pub mod admin_workers;
pub mod async_invoke;
pub mod fal_queue;
pub mod fal_run;
pub mod fal_webhook;
pub mod files;
pub mod health;
pub mod models;
pub mod runpod;
pub mod storage;
pub mod worker;
