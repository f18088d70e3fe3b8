#![no_main]
//! Fuzz target: see `probe::fuzzing::witness`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::fuzzing::witness(data);
});
