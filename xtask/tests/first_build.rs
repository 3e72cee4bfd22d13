//! What keeps `cargo run -p phase1-monolith`'s first build short (issue 18: at most
//! 2 min 30 s on two cores) and is easy to undo without noticing: a feature of sqlx,
//! and a pin in `Cargo.lock`, which `cargo update` rewrites.

use std::path::Path;

/// Every package phase 1's build compiles (`cargo tree`, normal and build edges).
fn phase1_builds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "tree",
            "--offline",
            "-p",
            "phase1-monolith",
            "-e",
            "normal,build",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn versions_of(packages: &[String], name: &str) -> Vec<String> {
    let mut found: Vec<String> = packages
        .iter()
        .filter_map(|line| line.strip_prefix(&format!("{name} v")))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    found.dedup();
    found
}

#[test]
fn sqlx_macros_are_not_built() {
    // Their crate compiles a second PostgreSQL and SQLite driver (and SQLite's C) for
    // the compiler; migrations are embedded by common::embed_migrations! instead.
    let packages = phase1_builds();
    assert!(
        !versions_of(&packages, "sqlx").is_empty(),
        "cargo tree lists sqlx"
    );
    assert_eq!(
        versions_of(&packages, "sqlx-macros"),
        Vec::<String>::new(),
        "sqlx's `macros` feature came back: drop it from Cargo.toml (see common/src/migrations.rs)"
    );
}

#[test]
fn idna_runs_on_unicode_rs_not_icu() {
    let packages = phase1_builds();
    let adapter = versions_of(&packages, "idna_adapter");
    assert!(
        !adapter.is_empty() && adapter.iter().all(|v| v.starts_with("1.1.")),
        "idna_adapter {adapter:?}: pin it again with `cargo update -p idna_adapter --precise 1.1.0` \
         (ICU4X's derive crates cost phase 1's first build about 35 CPU-seconds)"
    );
    assert!(
        packages.iter().all(|p| !p.starts_with("icu_")),
        "ICU4X is built again"
    );
}
