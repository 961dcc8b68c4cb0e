#![doc = include_str!("../README.md")]

pub mod admin;
pub mod async_invoke;
pub mod error_code;
pub mod fal_queue;
pub mod worker;

pub use error_code::ErrorCode;
