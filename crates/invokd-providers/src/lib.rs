#![doc = include_str!("../README.md")]

pub mod emulator;

pub use emulator::{Emulator, EmulatorConfig};
