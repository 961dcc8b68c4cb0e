#![doc = include_str!("../README.md")]

pub mod emulator;
pub mod fal;

pub use emulator::{Emulator, EmulatorConfig};
pub use fal::{FalConfig, FalProvider};
