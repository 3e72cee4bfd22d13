//! Both directions for every exercise: the starter FAILS its check and the reference
//! solution PASSES it. An exercise whose check cannot fail is a defect.
//!
//! These check the *shipped* starters (`src/exNN/starter.rs`), never a learner's copy
//! in `mine/`, so they pass in a learner's checkout too. From exercise 5 on, the
//! checks run against the services `cargo xtask up` starts; a starter must fail for
//! its bug, not because a service is missing.

use exercises::{EXERCISES, run_check};

#[test]
fn every_reference_solution_passes_its_check() {
    for exercise in EXERCISES {
        if let Err(failure) = run_check(exercise.check_solution) {
            panic!(
                "exercise {} ({}): the solution fails: {failure}",
                exercise.number, exercise.dir
            );
        }
    }
}

#[test]
fn every_starter_fails_its_check_with_an_explanation() {
    for exercise in EXERCISES {
        match run_check(exercise.check_starter) {
            Ok(()) => panic!(
                "exercise {} ({}): the starter passes its check, so the check cannot fail",
                exercise.number, exercise.dir
            ),
            Err(failure) => {
                assert!(
                    failure.0.len() > 40,
                    "exercise {}: the failure explains too little: {failure:?}",
                    exercise.number
                );
                assert!(
                    !failure.0.contains("cargo xtask up"),
                    "exercise {}: the starter failed for want of a service, not for its bug \
                     (so this proves nothing): {failure}",
                    exercise.number
                );
            }
        }
    }
}

#[test]
fn exercises_are_numbered_in_order_and_have_hints_and_readmes() {
    for (i, exercise) in EXERCISES.iter().enumerate() {
        assert_eq!(
            exercise.number as usize,
            i + 1,
            "{} is out of order",
            exercise.dir
        );
        assert!(
            exercise
                .readme
                .contains(&format!("start {}`", exercise.number)),
            "exercise {} README does not say how to start it",
            exercise.number
        );
        assert!(
            !exercise.hints.is_empty(),
            "exercise {} has no hints",
            exercise.number
        );
        assert!(
            exercise.readme.contains("**Time.**"),
            "exercise {} README gives no time estimate",
            exercise.number
        );
        assert!(
            exercise.readme.contains("**Read first.**"),
            "exercise {} README says nothing to read first",
            exercise.number
        );
    }
}

#[test]
fn every_starter_marks_its_gaps() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for exercise in EXERCISES {
        let path = crate_dir.join(exercise.starter_path());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("TODO(exercise)"),
            "{} has no TODO(exercise) gap",
            path.display()
        );
    }
}
