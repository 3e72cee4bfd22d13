//! Chooses, for every exercise, the code that `check` and `watch` run: the learner's
//! copy `mine/<exercise>.rs` when it exists (made by `start N`), else the shipped
//! starter. Each choice is one `include!` in `$OUT_DIR/yours_<exercise>.rs`, which the
//! exercise's `yours` module includes (see `yours!` in `src/lib.rs`).
//!
//! The shipped starter is compiled separately as the `starter` module either way, so
//! `tests/both_directions.rs` always checks the unsolved version.
//!
//! `FERRISEATS_EXERCISES=shipped` ignores `mine/` altogether: `cargo xtask test` sets
//! it, so a learner's half-written copy (which may not even compile) never breaks the
//! repository's own test suite.

use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let mine = crate_dir.join("mine");
    // A directory: cargo re-runs this script when anything in it changes (a copy
    // appears, is edited or is removed). `mine/` is in git (its README), so it exists.
    println!("cargo::rerun-if-changed={}", mine.display());
    // A new exercise directory needs its choice written too.
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=FERRISEATS_EXERCISES");
    let shipped_only = std::env::var("FERRISEATS_EXERCISES").is_ok_and(|v| v == "shipped");

    let mut exercises: Vec<String> = std::fs::read_dir(crate_dir.join("src"))
        .expect("exercises/src")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("starter.rs").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    exercises.sort();
    for exercise in exercises {
        let copy = mine.join(format!("{exercise}.rs"));
        let chosen = if copy.is_file() && !shipped_only {
            copy
        } else {
            crate_dir.join("src").join(&exercise).join("starter.rs")
        };
        write_if_changed(
            &out_dir.join(format!("yours_{exercise}.rs")),
            &format!("include!({:?});\n", chosen.display().to_string()),
        );
    }
}

/// Leaves the file (and its mtime) alone when the content is the same.
fn write_if_changed(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        std::fs::write(path, content).expect("writing to OUT_DIR");
    }
}
