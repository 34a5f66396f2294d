//! `rust-version` in Cargo.toml is true: no lower than any dependency's own `rust-version`,
//! nor than the language features the code uses. (Library APIs newer than `rust-version` are
//! caught by clippy's `incompatible_msrv` lint, which CI runs with `-D warnings`.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::wait_bounded;

/// A language feature whose use sets a floor on the Rust version.
struct LanguageFloor {
    feature: &'static str,
    /// The release that made it stable, (major, minor).
    since: (u64, u64),
    /// Spots it in a line of our code.
    used_in: fn(&str) -> bool,
}

/// The features that matter; add a row when the code starts using a newer one.
const LANGUAGE_FLOORS: &[LanguageFloor] = &[LanguageFloor {
    feature: "let-chains (`if let … && …`)",
    since: (1, 88),
    used_in: |line| {
        let code = line.split("//").next().unwrap_or_default();
        (code.contains("if let ") || code.contains("while let ")) && code.contains(" && ")
            || code.trim_start().starts_with("&& let ")
    },
}];

/// "1.85", "1.82.0" → (1, 85).
fn major_minor(v: &str) -> (u64, u64) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("a version number"));
    (
        parts.next().expect("major"),
        parts.next().unwrap_or_default(),
    )
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn rust_version_covers_dependencies_and_language_features() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let child = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cargo metadata");
    let out = wait_bounded(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let declared = packages
        .iter()
        .find(|p| p["name"] == "udplab")
        .and_then(|p| p["rust_version"].as_str())
        .map(major_minor)
        .expect("udplab declares a rust-version");

    // Dependencies (dev-dependencies too: `cargo test` and the benchmarks build them).
    for p in packages {
        if let Some(v) = p["rust_version"].as_str() {
            assert!(
                major_minor(v) <= declared,
                "{} {} needs Rust {v}, above rust-version {declared:?}",
                p["name"],
                p["version"]
            );
        }
    }

    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty(), "no sources under {}", root.display());
    for LanguageFloor {
        feature,
        since,
        used_in,
    } in LANGUAGE_FLOORS
    {
        let first_use = files.iter().find_map(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            text.lines()
                .position(used_in)
                .map(|i| format!("{}:{}", f.display(), i + 1))
        });
        if let Some(place) = first_use {
            assert!(
                *since <= declared,
                "{feature} (used at {place}) needs Rust {}.{}, above rust-version {declared:?}",
                since.0,
                since.1
            );
        }
    }
}
