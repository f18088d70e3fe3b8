//! The layers of `src/` point one way: every `crate::` path in a module names its own top-level
//! module or one of a lower layer (README.md, "Architecture"). A new top-level module must be
//! given its layer here.

use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first; modules on one line are one layer and import neither
/// each other nor anything above.
const LAYERS: &[&[&str]] = &[
    &["text", "words", "observe"],
    &["diagnose"],
    &["settings"],
    &["engine"],
    &["report", "config"],
    &["alert"],
    &["store"],
    &["notify"],
    &["feeds"],
    &["schedule"],
    &["cli"],
    // The fuzz targets' entry points, which drive the command line's own functions.
    &["fuzzing"],
];

/// The roots: they wire everything together.
const ROOTS: &[&str] = &["lib", "main"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules named by `crate::` paths in `source`, with their line numbers; comments
/// are skipped, and `use crate::{a::b, c}` groups name each of their first segments.
fn crate_imports(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_group = 0usize;
    for (n, raw) in source.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("");
        let mut rest = line;
        if in_group > 0 {
            rest = group_names(rest, &mut in_group, n + 1, &mut out);
        }
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                in_group = 1;
                rest = group_names(group, &mut in_group, n + 1, &mut out);
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((n + 1, name));
                rest = after;
            }
        }
    }
    out
}

/// Reads the names of a `{…}` group at depth 1 until it closes; returns what follows it.
fn group_names<'a>(
    text: &'a str,
    depth: &mut usize,
    line: usize,
    out: &mut Vec<(usize, String)>,
) -> &'a str {
    let mut expecting_name = *depth == 1;
    let mut word = String::new();
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            if expecting_name && *depth == 1 && word != "self" {
                out.push((line, std::mem::take(&mut word)));
            }
            word.clear();
            expecting_name = false;
        }
        match c {
            '{' => *depth += 1,
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    return &text[i + 1..];
                }
            }
            ',' if *depth == 1 => expecting_name = true,
            _ => {}
        }
    }
    if !word.is_empty() && expecting_name && *depth == 1 {
        out.push((line, word));
    }
    ""
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if ROOTS.contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer(&module) else {
            wrong.push(format!(
                "src/{}: module `{module}` has no layer in tests/layers.rs",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(file).unwrap();
        for (line, imported) in crate_imports(&source) {
            if imported == module {
                continue;
            }
            match layer(&imported) {
                Some(theirs) if theirs < own => {}
                theirs => wrong.push(format!(
                    "src/{}:{line}: {module} (layer {own}) imports crate::{imported} (layer {})",
                    relative.display(),
                    theirs.map_or("none".to_string(), |t| t.to_string())
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checker_reads_paths_groups_and_skips_comments() {
    let source = "use crate::observe::Status;\n\
                  use crate::{\n    settings::{self, Target},\n    text,\n};\n\
                  // use crate::cli;\n\
                  let x = crate::engine::probe(); /* */ crate::store::open();\n\
                  use crate::{alert::{AlertState, step}, config::Config};\n";
    let got: Vec<(usize, String)> = crate_imports(source);
    let expected: Vec<(usize, String)> = [
        (1, "observe"),
        (3, "settings"),
        (4, "text"),
        (7, "engine"),
        (7, "store"),
        (8, "alert"),
        (8, "config"),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.to_string()))
    .collect();
    assert_eq!(got, expected);
    assert!(layer("observe") < layer("engine"));
    assert_eq!(layer("nonexistent"), None);
}
