//! `cargo run -p exercises -- list | start N | check [N] | hint N | watch [N]`
//!
//! Thin: parses the command and walks [`exercises::EXERCISES`]. The checks run the
//! learner's code compiled into this binary (`exercises/mine/…`, see `build.rs`),
//! which is why `cargo run` (which rebuilds after an edit) is the way to call it, and
//! why `watch` re-runs `cargo run … check` after every save.

use anyhow::Context;
use clap::{Parser, Subcommand};
use exercises::progress::{self, Progress};
use exercises::{EXERCISES, Exercise, Failure, find};
use std::path::{Path, PathBuf};
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
    /// Every exercise and whether it is solved (the plain-Rust ones are checked now;
    /// the ones needing `cargo xtask up` show their last `check`).
    List,
    /// Copy exercise N's starter to exercises/mine/, the file you edit.
    Start {
        number: u32,
        /// Overwrite your copy with a fresh starter.
        #[arg(long)]
        force: bool,
    },
    /// Run the check of exercise N (or of all), explaining any failure.
    Check { number: Option<u32> },
    /// Reveal the next hint of exercise N (the ones already revealed are shown again).
    Hint { number: u32 },
    /// Check, then re-check (rebuilding with cargo) every time your copy changes.
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

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let progress_path = progress::default_path();
    match cli.command {
        Command::List => {
            let progress = Progress::load(&progress_path)?;
            let mut solved = 0;
            for exercise in EXERCISES {
                let started = crate_dir().join(exercise.mine_path()).is_file();
                let (passed, note) = if exercise.needs.is_empty() {
                    (quiet_check(exercise.check_yours).is_ok(), String::new())
                } else if !started {
                    (false, String::new())
                } else {
                    let last = progress.last_check.get(&exercise.number).copied();
                    let note = match last {
                        None => "  (needs `cargo xtask up`; not checked yet)".to_owned(),
                        Some(_) => "  (last `check`)".to_owned(),
                    };
                    (last == Some(true), note)
                };
                solved += usize::from(passed);
                let mark = if passed { "✓ solved " } else { "· to do  " };
                let started = if started { "" } else { "  [not started]" };
                println!(
                    "{mark} {:>2}  {}{started}{note}",
                    exercise.number, exercise.title
                );
            }
            println!(
                "\n{solved}/{} solved. Begin one with `cargo run -p exercises -- start N`.",
                EXERCISES.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { number, force } => {
            let exercise = exercise(number)?;
            let (starter, mine) = (
                crate_dir().join(exercise.starter_path()),
                crate_dir().join(exercise.mine_path()),
            );
            if mine.is_file() && !force {
                println!(
                    "exercises/{} exists already: edit it, or `start {number} --force` to begin again",
                    exercise.mine_path()
                );
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::copy(&starter, &mine)
                .with_context(|| format!("copying {} to {}", starter.display(), mine.display()))?;
            // A fresh copy is unsolved: forget the verdict of the one before.
            let mut progress = Progress::load(&progress_path)?;
            if progress.last_check.remove(&number).is_some() {
                progress.save(&progress_path)?;
            }
            println!(
                "Exercise {number}: {}\n\n  read   exercises/src/{}/README.md\n  edit   exercises/{}\n  check  cargo run -p exercises -- check {number}\n  hint   cargo run -p exercises -- hint {number}",
                exercise.title,
                exercise.dir,
                exercise.mine_path()
            );
            if !exercise.needs.is_empty() {
                println!("\n  This check runs against the real services: `cargo xtask up` first.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { number } => {
            let exercises = selected(number)?;
            let results = check(&exercises);
            let mut progress = Progress::load(&progress_path)?;
            for (exercise, passed) in exercises.iter().zip(&results) {
                progress.last_check.insert(exercise.number, *passed);
            }
            progress.save(&progress_path)?;
            Ok(if results.iter().all(|passed| *passed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Hint { number } => {
            let exercise = exercise(number)?;
            let mut progress = Progress::load(&progress_path)?;
            let revealed = progress.reveal_hint(number, exercise.hints.len());
            progress.save(&progress_path)?;
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
        Command::Watch { number } => watch(number),
    }
}

fn exercise(number: u32) -> anyhow::Result<&'static Exercise> {
    find(number).with_context(|| format!("there is no exercise {number}; `list` shows them"))
}

fn selected(number: Option<u32>) -> anyhow::Result<Vec<&'static Exercise>> {
    match number {
        None => Ok(EXERCISES.iter().collect()),
        Some(n) => Ok(vec![exercise(n)?]),
    }
}

/// Runs the checks, printing each verdict; returns whether each passed.
fn check(exercises: &[&Exercise]) -> Vec<bool> {
    exercises
        .iter()
        .map(|exercise| {
            let started = crate_dir().join(exercise.mine_path()).is_file();
            match quiet_check(exercise.check_yours) {
                Ok(()) => {
                    println!("✓ exercise {} ({}) passes", exercise.number, exercise.title);
                    true
                }
                Err(failure) => {
                    let edit = if started {
                        format!("edit exercises/{}", exercise.mine_path())
                    } else {
                        format!(
                            "not started: `cargo run -p exercises -- start {}`",
                            exercise.number
                        )
                    };
                    println!(
                        "✗ exercise {} ({}) does not pass yet:\n    {failure}\n    {edit} · hint: `cargo run -p exercises -- hint {}`",
                        exercise.number, exercise.title, exercise.number
                    );
                    false
                }
            }
        })
        .collect()
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

/// Checks, then polls the learner's copies once a second and re-runs
/// `cargo run -q -p exercises -- check [N]` after every change: the check must run
/// the *new* code, so it has to be rebuilt, and cargo is what rebuilds it (a compile
/// error is printed like any other verdict, and watching goes on).
///
/// Polling a handful of files needs no extra dependency and behaves the same with
/// every editor (including those that save by renaming).
fn watch(number: Option<u32>) -> anyhow::Result<ExitCode> {
    let exercises = selected(number)?;
    let files: Vec<PathBuf> = exercises
        .iter()
        .map(|e| crate_dir().join(e.mine_path()))
        .collect();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec![
        "run".to_owned(),
        "-q".into(),
        "-p".into(),
        "exercises".into(),
        "--".into(),
        "check".into(),
    ];
    args.extend(number.map(|n| n.to_string()));
    let mut before = mtimes(&files);
    check(&exercises);
    loop {
        println!(
            "\nwatching {} (Ctrl-C to stop)",
            files
                .iter()
                .map(|f| f
                    .strip_prefix(crate_dir())
                    .unwrap_or(f)
                    .display()
                    .to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = mtimes(&files);
            if now != before {
                before = now;
                break;
            }
        }
        println!("\n— changed; rebuilding and checking —");
        let status = std::process::Command::new(&cargo)
            .args(&args)
            .current_dir(crate_dir())
            .status()
            .with_context(|| "running cargo (is it on PATH?)")?;
        if !status.success() && status.code() != Some(1) {
            println!("(cargo exited with {status}: fix the compile error and save again)");
        }
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| modified(f)).collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
