//! Fuzzes `invokd_wire::fuzzing::fal_submit`; its doc says what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| invokd_wire::fuzzing::fal_submit(data));
