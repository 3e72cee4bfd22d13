//! `cargo run -p exercises -- list | check [N] | hint N | watch [N]`
//!
//! Thin: parses the command and walks [`exercises::EXERCISES`]. The checks run the
//! starter code compiled into this binary, which is why `cargo run` (which rebuilds
//! after an edit) is the way to call it.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use exercises::progress::{self, Progress};
use exercises::{EXERCISES, Exercise, Failure, find};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Debug, Parser)]
#[command(about = "FerrisEats guided exercises: fix the starter, get a verdict")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every exercise and whether its check passes now.
    List,
    /// Run the check of exercise N (or of all), explaining any failure.
    Check { number: Option<u32> },
    /// Reveal the next hint of exercise N (the ones already revealed are shown again).
    Hint { number: u32 },
    /// Check, then wait until a starter.rs changes and exit so `cargo run` rebuilds.
    /// Use it in a loop: `while cargo run -q -p exercises -- watch; do :; done`.
    Watch { number: Option<u32> },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List => {
            let mut solved = 0;
            for exercise in EXERCISES {
                let passed = quiet_check(exercise.check_starter).is_ok();
                solved += usize::from(passed);
                let mark = if passed { "✓ solved " } else { "· to do  " };
                println!("{mark} {:>2}  {}", exercise.number, exercise.title);
            }
            println!(
                "\n{solved}/{} solved. Next: `cargo run -p exercises -- check N`",
                EXERCISES.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { number } => Ok(check(&selected(number)?)),
        Command::Hint { number } => {
            let exercise =
                find(number).with_context(|| format!("there is no exercise {number}"))?;
            let path = progress::default_path();
            let mut progress = Progress::load(&path)?;
            let revealed = progress.reveal_hint(number, exercise.hints.len());
            progress.save(&path)?;
            for (i, hint) in exercise.hints.iter().take(revealed).enumerate() {
                println!("hint {}/{}: {hint}\n", i + 1, exercise.hints.len());
            }
            if revealed == exercise.hints.len() {
                println!(
                    "That was the last hint. The reference is in exercises/src/{}/solution.rs.",
                    exercise.dir
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { number } => {
            let exercises = selected(number)?;
            check(&exercises);
            let before = mtimes(&exercises);
            println!(
                "\nwatching {} starter file(s); edit and save to re-check (Ctrl-C to stop)",
                exercises.len()
            );
            // Polling once a second: a handful of files, no extra dependency, and it
            // behaves the same on every platform and editor (atomic-rename saves too).
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if mtimes(&exercises) != before {
                    println!("a starter changed; exiting so `cargo run` rebuilds and re-checks");
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

fn selected(number: Option<u32>) -> anyhow::Result<Vec<&'static Exercise>> {
    match number {
        None => Ok(EXERCISES.iter().collect()),
        Some(n) => match find(n) {
            Some(exercise) => Ok(vec![exercise]),
            None => bail!("there is no exercise {n}; `list` shows them"),
        },
    }
}

/// Runs the checks; exit code 1 if any fails.
fn check(exercises: &[&Exercise]) -> ExitCode {
    let mut failed = 0;
    for exercise in exercises {
        match quiet_check(exercise.check_starter) {
            Ok(()) => println!("✓ exercise {} ({}) passes", exercise.number, exercise.title),
            Err(failure) => {
                failed += 1;
                println!(
                    "✗ exercise {} ({}) does not pass yet:\n    {failure}\n    edit exercises/{} · hint: `cargo run -p exercises -- hint {}`",
                    exercise.number,
                    exercise.title,
                    exercise.starter_path(),
                    exercise.number
                );
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// [`exercises::run_check`] with the panic hook silenced: a panic in the code under
/// test becomes a [`Failure`] with its message, without a backtrace notice on top.
/// Only around the check, so a bug in the tool itself still reports normally.
fn quiet_check(check: fn() -> Result<(), Failure>) -> Result<(), Failure> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = exercises::run_check(check);
    std::panic::set_hook(previous);
    result
}

fn mtimes(exercises: &[&Exercise]) -> Vec<Option<SystemTime>> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    exercises
        .iter()
        .map(|e| {
            std::fs::metadata(crate_dir.join(e.starter_path()))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}
