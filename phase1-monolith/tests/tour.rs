//! The README's tour, run as a learner runs it: every ```` ```console ```` block of
//! `README.md`, in order, against the real binary (started by the tour's first
//! command), each command's output compared with what the README shows. A README that
//! drifts from the program fails here, at the line that no longer holds.
//!
//! The runner is `common_local::tour`; the ports 3000/3001 are moved to free ones
//! (the README's commands are rewritten, the output written back). Needs `curl`, `jq`
//! and `sqlite3` (`cargo xtask test` installs what is missing).

use common_local::tour::Tour;
use std::path::Path;

#[test]
fn the_readme_tour_prints_what_the_readme_says() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let dir = std::env::temp_dir().join(format!("ferriseats-phase1-tour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut tour = Tour::new(&dir)
        .unwrap()
        .binary(
            "phase1-monolith",
            Path::new(env!("CARGO_BIN_EXE_phase1-monolith")),
        )
        .port(3000, "LISTEN_ADDR")
        .unwrap()
        .port(3001, "PROVIDER_ADDR")
        .unwrap();
    match tour.run_all(&readme) {
        Ok(steps) => println!("{steps} commands of the README ran as it says"),
        Err(failure) => panic!(
            "README.md's tour no longer holds — {failure}\n(the tour ran in {}; phase1.log is there)",
            dir.display()
        ),
    }
    drop(tour);
    let _ = std::fs::remove_dir_all(&dir);
}
