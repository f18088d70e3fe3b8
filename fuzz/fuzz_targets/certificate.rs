#![no_main]
//! Fuzz target: see `probe::fuzzing::certificate`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::fuzzing::certificate(data);
});
