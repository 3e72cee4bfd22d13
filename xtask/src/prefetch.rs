//! `cargo xtask prefetch [--skip-build]`: everything the workshop downloads,
//! downloaded (and built) now, so that a room can work offline afterwards.
//!
//! The work is a list of [`Step`]s ([`steps`]), run in order. Each prints one line
//! when it ends — `ok` or `FAILED`, how long it took, what it fetched or found — and
//! a failed step also says what to do; the next steps run all the same, the lines
//! are repeated together at the end, and the command fails if any step did. Steps
//! that find their work done return at once, so running it again after a fix only
//! does what is missing.
//!
//! The steps call the installers of the commands that need the things, never copies
//! of them:
//!
//! | step | what | installer |
//! |---|---|---|
//! | `crates` | every crate of `Cargo.lock` (`cargo fetch`) | — |
//! | `postgresql`, `redis`, `kafka`, `prometheus` | the servers, when not installed yet (Debian packages as root; Kafka's jars from Maven Central, with Java and Maven) | each service's `install` ([`crate::services::Service`]), as `up` runs it; nothing is started |
//! | `nextest` | cargo-nextest, `cargo xtask test`'s runner | [`crate::test::nextest_available`] |
//! | `promtool`, `locust`, `phase5-python`, `phase5-go`, `mdbook`, `tmux` | the tools the suite and the book need | [`crate::test::TOOLS`] (mdBook: [`crate::book::mdbook`]) |
//! | `build` | the workspace and its tests, debug (`cargo build --workspace --all-targets`) | — |
//! | `release` | the release build `cargo xtask bench` and `chaos` run | [`process::build_bench_packages`] |
//!
//! `--skip-build` leaves out `build` and `release` (the two long ones: tens of
//! minutes on two cores) for a quick check of the downloads.
//!
//! **Adding a step** (a browser for a test, say): one more entry in [`steps`] — a
//! name, whether it compiles, a function returning what it fetched, and what to do
//! when it fails. A tool the test suite needs belongs in [`crate::test::TOOLS`]
//! instead, and so becomes a step by itself.

use crate::services::{self, Service};
use crate::{process, test};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    /// Download only: leave out the debug build of the workspace and the release
    /// build of the benchmarks (the two long steps).
    #[arg(long)]
    skip_build: bool,
}

/// One thing to fetch.
pub struct Step {
    /// Short, unique: the step's name on its line.
    pub name: &'static str,
    /// It compiles the workspace (`--skip-build` leaves it out).
    pub build: bool,
    /// Does the work; returns what it fetched or found, in a few words.
    pub run: Box<dyn Fn() -> anyhow::Result<String>>,
    /// What to do when it fails.
    pub fix: String,
}

/// Every step, in the order they run: the downloads first (a room may have the
/// network for a while only), then the builds, which need none once the crates are
/// there.
pub fn steps() -> Vec<Step> {
    let mut steps = vec![Step {
        name: "crates",
        build: false,
        run: Box::new(fetch_crates),
        fix: "check that this machine reaches crates.io (or your registry mirror), then run \
              `cargo xtask prefetch` again"
            .to_owned(),
    }];
    for service in services::all_services() {
        steps.push(Step {
            name: service.name,
            build: false,
            run: Box::new(move || install(service)),
            fix: (service.manual)(),
        });
    }
    steps.push(Step {
        name: "nextest",
        build: false,
        run: Box::new(|| {
            anyhow::ensure!(
                test::nextest_available(),
                "cargo-nextest is not installed and could not be installed"
            );
            Ok("cargo nextest (`cargo xtask test` runs the suite with it)".to_owned())
        }),
        fix: "check that this machine reaches crates.io, then run `cargo xtask prefetch` again \
              (without nextest, `cargo xtask test` falls back to the slower `cargo test`)"
            .to_owned(),
    });
    for tool in test::TOOLS {
        steps.push(Step {
            name: tool.name,
            build: false,
            run: Box::new(move || {
                let env = (tool.get)()?;
                if env.is_empty() {
                    return Ok("installed".to_owned());
                }
                Ok(env
                    .iter()
                    .map(|(name, path)| format!("{name}={}", shown(path)))
                    .collect::<Vec<_>>()
                    .join(" "))
            }),
            fix: format!(
                "it comes from {}: check that this machine reaches it, then run `cargo xtask \
                 prefetch` again",
                tool.source
            ),
        });
    }
    steps.push(Step {
        name: "build",
        build: true,
        run: Box::new(|| {
            cargo(&["build", "--workspace", "--all-targets"])?;
            Ok("the workspace with its tests and examples, debug (target/debug)".to_owned())
        }),
        fix: "read the compiler's message above; `cargo build --workspace --all-targets` \
              repeats it"
            .to_owned(),
    });
    steps.push(Step {
        name: "release",
        build: true,
        run: Box::new(|| {
            process::build_bench_packages()?;
            Ok(format!(
                "{} in release mode (target/release: `cargo xtask bench` and `chaos`)",
                process::BENCH_PACKAGES.join(", ")
            ))
        }),
        fix: "read the compiler's message above; `cargo build --release -p phase4-chaos` \
              repeats it"
            .to_owned(),
    });
    steps
}

pub fn run(args: &PrefetchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for step in steps() {
        if step.build && args.skip_build {
            let line = format!("skipped {:<14} {:>9}  --skip-build", step.name, "");
            println!("prefetch: {line}");
            lines.push(line);
            continue;
        }
        println!("\nprefetch: {} …", step.name);
        let step_started = Instant::now();
        let outcome = (step.run)();
        let took = secs(step_started.elapsed());
        let line = match outcome {
            Ok(what) => format!("ok      {:<14} {took:>9}  {what}", step.name),
            Err(err) => {
                let err = format!("{err:#}");
                eprintln!(
                    "prefetch: {} FAILED: {err}\n\nwhat to do: {}",
                    step.name, step.fix
                );
                failed.push(step.name);
                // The summary keeps the first line; the whole error is above.
                let first = err.lines().next().unwrap_or_default().to_owned();
                format!("FAILED  {:<14} {took:>9}  {first}", step.name)
            }
        };
        println!("prefetch: {line}");
        lines.push(line);
    }
    println!(
        "\nprefetch: {} steps in {}:",
        lines.len(),
        secs(started.elapsed())
    );
    for line in &lines {
        println!("  {line}");
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} failed (what to do is printed with each); the other steps are done, and \
             running `cargo xtask prefetch` again only does what is missing",
            failed.join(", ")
        );
    }
    if args.skip_build {
        println!(
            "\nThe downloads are done; the builds were left out (--skip-build): they need no \
             network, only time."
        );
    } else {
        println!(
            "\nEverything is here and built: the workshop works without a network now. To \
             make sure nothing tries to reach it, `export CARGO_NET_OFFLINE=true`."
        );
    }
    Ok(())
}

/// `cargo fetch`: every crate the lock file names, into cargo's cache.
fn fetch_crates() -> anyhow::Result<String> {
    cargo(&["fetch"])?;
    let lock = std::fs::read_to_string(process::workspace_root().join("Cargo.lock"))?;
    let crates = lock
        .split("[[package]]")
        .filter(|package| package.contains("source = \"registry+"))
        .count();
    Ok(format!(
        "{crates} crates of Cargo.lock in cargo's cache (~/.cargo/registry)"
    ))
}

/// A service's software, as `up` would install it when missing; never started.
fn install(service: &Service) -> anyhow::Result<String> {
    if let Some(url) = services::override_url(service) {
        return Ok(format!(
            "not needed: {}={} points at another server",
            service.env_override,
            services::redact(&url)
        ));
    }
    if (service.installed)() {
        return Ok("already installed".to_owned());
    }
    (service.install)(process::privilege())?;
    anyhow::ensure!(
        (service.installed)(),
        "the installation finished, but {} cannot be found",
        service.name
    );
    Ok("installed (not started: `cargo xtask up` starts it)".to_owned())
}

/// `cargo ARGS` in the workspace, its output on the terminal.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    process::run(
        Command::new(process::cargo())
            .args(args)
            .current_dir(process::workspace_root()),
        Duration::from_secs(2 * 60 * 60),
    )
}

/// A path for the summary: relative to the workspace when it is in it.
fn shown(path: &str) -> String {
    let root = process::workspace_root();
    std::path::Path::new(path)
        .strip_prefix(&root)
        .map_or_else(|_| path.to_owned(), |p| p.display().to_string())
}

fn secs(took: Duration) -> String {
    format!("{:.1} s", took.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_installer_is_a_step() {
        let steps = steps();
        let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        // What `up` (with --observability) and `test` install, and the crates.
        let expected = services::all_services()
            .map(|s| s.name)
            .chain(test::TOOLS.iter().map(|t| t.name))
            .chain(["crates", "nextest", "build", "release"]);
        for name in expected {
            assert!(names.contains(&name), "no prefetch step for {name}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "two steps share a name: {names:?}"
        );
        // Only the two builds are left out by --skip-build.
        let builds: Vec<&str> = steps.iter().filter(|s| s.build).map(|s| s.name).collect();
        assert_eq!(builds, ["build", "release"]);
        assert!(steps.iter().all(|s| !s.fix.is_empty()));
    }
}
