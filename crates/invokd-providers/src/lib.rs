#![doc = include_str!("../README.md")]

pub mod command;
pub mod emulator;
pub mod fal;
pub mod process;
#[cfg(feature = "scripted")]
pub mod scripted;
pub mod speech;
#[cfg(test)]
mod testing;

pub use command::{CommandConfig, CommandProvider};
pub use emulator::{Emulator, EmulatorConfig};
pub use fal::{FalConfig, FalProvider};
pub use speech::LocalSpeech;
