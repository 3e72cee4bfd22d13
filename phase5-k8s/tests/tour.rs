//! The README's checked commands (the runner is `common_local::tour`; see phase 1's
//! `tests/tour.rs`), run from the repository's root as the README says. Needs
//! kustomize and kubernetes-validate, which `cargo xtask test` installs.

use common_local::tour::Tour;
use std::path::Path;

#[test]
fn the_readme_tour_prints_what_the_readme_says() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let root = crate_dir.parent().unwrap();
    let mut tour = Tour::new(root)
        .unwrap()
        .binary("phase5-k8s", Path::new(env!("CARGO_BIN_EXE_phase5-k8s")));
    match tour.run_all(&readme) {
        Ok(steps) => println!("{steps} commands of the README ran as it says"),
        Err(failure) => panic!("README.md's tour no longer holds — {failure}"),
    }
}
