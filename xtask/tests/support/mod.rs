//! What several of xtask's tests read: the workspace and its READMEs.

use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The root README and every crate's (and the two READMEs inside crates).
pub fn readmes(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    for dir in [
        "common",
        "phase1-monolith",
        "phase1-monolith/migrations",
        "phase2-events",
        "phase3-observability",
        "phase4-chaos",
        "phase5-k8s",
        "tui",
        "exercises",
        "exercises/mine",
        "xtask",
    ] {
        let readme = root.join(dir).join("README.md");
        if readme.exists() {
            files.push(readme);
        }
    }
    files
}
