#![no_main]
//! Fuzz target: see `probe::fuzzing::diagnose_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::fuzzing::diagnose_json(data);
});
