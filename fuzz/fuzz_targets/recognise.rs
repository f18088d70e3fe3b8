#![no_main]
//! Fuzz target: see `probe::fuzzing::recognise`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::fuzzing::recognise(data);
});
