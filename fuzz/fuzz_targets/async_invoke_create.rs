//! Fuzzes `invokd_wire::fuzzing::async_invoke_create`; its doc says what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| invokd_wire::fuzzing::async_invoke_create(data));
