#![doc = include_str!("../README.md")]

pub mod emulator;
pub mod fal;
#[cfg(feature = "scripted")]
pub mod scripted;

pub use emulator::{Emulator, EmulatorConfig};
pub use fal::{FalConfig, FalProvider};
