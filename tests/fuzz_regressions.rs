//! The fuzz targets' inputs replayed as ordinary tests: every seed (`fuzz/seeds/TARGET/`) and
//! every input a fuzzer once crashed on (`fuzz/regressions/TARGET/`, committed with the fix) goes
//! through the same entry point as `cargo fuzz` uses, which must return without panicking.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let data = std::fs::read(&path).unwrap();
            out.push((path, data));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, entry: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs for {target}");
    for (path, data) in inputs {
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
    }
}

#[test]
fn config_inputs() {
    replay("config", probe::fuzzing::config);
}

#[test]
fn recognise_inputs() {
    replay("recognise", probe::fuzzing::recognise);
}

#[test]
fn certificate_inputs() {
    replay("certificate", probe::fuzzing::certificate);
}

#[test]
fn diagnose_json_inputs() {
    replay("diagnose_json", probe::fuzzing::diagnose_json);
}

#[test]
fn witness_inputs() {
    replay("witness", probe::fuzzing::witness);
}
