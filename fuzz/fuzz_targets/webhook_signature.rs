//! Fuzzes `invokd_server::fuzzing::webhook_signature`; its doc says what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| invokd_server::fuzzing::webhook_signature(data));
