#![no_main]
//! Fuzz target: see `probe::fuzzing::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::fuzzing::config(data);
});
