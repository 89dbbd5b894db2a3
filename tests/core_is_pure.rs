//! `src/core` holds the rules of the system as pure functions: no runtime,
//! no network, no disk, no clock, no randomness. This test fails when code
//! there names any of them (comments are allowed to).

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "tonic",
    "axum",
    "hyper",
    "rocksdb",
    "std::time",
    "SystemTime",
    "Instant",
    "rand::",
    "std::fs",
    "std::net",
    "std::thread",
    "std::env",
    "std::io",
    "std::process",
    "tracing",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_names_no_io() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"), &mut files);
    assert!(files.len() >= 5, "found {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "core must stay pure:\n{}", offences.join("\n"));
}
