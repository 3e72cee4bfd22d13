//! Every phase's README has a checked tour, and a test that runs it.
//!
//! The tours themselves run in each phase's `tests/tour.rs` (against the running
//! phase); this only keeps a phase from losing its tour, or its test, unnoticed.

use std::path::Path;

const PHASES: [&str; 5] = [
    "phase1-monolith",
    "phase2-events",
    "phase3-observability",
    "phase4-chaos",
    "phase5-k8s",
];

#[test]
fn every_phase_readme_has_a_tour_and_a_test_that_runs_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for phase in PHASES {
        let readme = std::fs::read_to_string(root.join(phase).join("README.md")).unwrap();
        let steps = common_local::tour::parse(&readme);
        assert!(
            steps.len() >= 3,
            "{phase}/README.md has {} checked commands (```console blocks); a phase's walkthrough needs a tour",
            steps.len()
        );
        let test =
            std::fs::read_to_string(root.join(phase).join("tests/tour.rs")).unwrap_or_else(|_| {
                panic!("{phase}/tests/tour.rs is missing: nothing runs its README's tour")
            });
        assert!(
            test.contains("run_readme_tour")
                || (test.contains("README.md") && test.contains("run_all")),
            "{phase}/tests/tour.rs does not run README.md's tour"
        );
    }
}
