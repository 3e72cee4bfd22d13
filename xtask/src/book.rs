//! `cargo xtask book [--serve]`: the workshop's book (`docs/`), built with a pinned
//! mdBook that xtask installs itself.
//!
//! mdBook is installed once with `cargo install mdbook --locked --version
//! MDBOOK_VERSION` into `.ferriseats/cargo-tools/` (crates.io is all it needs), so
//! every learner and CI build the book with the same version; `MDBOOK=/path/to/mdbook`
//! uses another. `cargo xtask test` exports it as `MDBOOK` for the test that builds the
//! book (`xtask/tests/book.rs`) — `book.toml` sets `create-missing = false`, so a
//! chapter listed in `SUMMARY.md` without its file fails the build instead of being
//! created empty.

use crate::process;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The mdBook every build uses.
pub const MDBOOK_VERSION: &str = "0.4.52";
/// Where `book --serve` listens.
const SERVE_PORT: &str = "3400";

#[derive(Debug, clap::Args)]
pub struct BookArgs {
    /// Serve it on http://127.0.0.1:3400 and rebuild on every change, instead of
    /// building it once into docs/book/.
    #[arg(long)]
    serve: bool,
}

/// The pinned mdBook's path, installed if missing (`MDBOOK` set by the user wins).
pub fn mdbook() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("MDBOOK")
        && !path.is_empty()
    {
        return Ok(PathBuf::from(path));
    }
    let root = crate::services::State::dir().join("cargo-tools");
    let binary = root.join("bin/mdbook");
    let marker = root.join("mdbook.version");
    let current =
        binary.is_file() && std::fs::read_to_string(&marker).is_ok_and(|v| v == MDBOOK_VERSION);
    if !current {
        println!(
            "mdbook: installing {MDBOOK_VERSION} into {} (once, a few minutes)",
            root.display()
        );
        process::run(
            Command::new(process::cargo())
                .args([
                    "install",
                    "mdbook",
                    "--locked",
                    "--version",
                    MDBOOK_VERSION,
                    "--root",
                ])
                .arg(&root),
            Duration::from_secs(30 * 60),
        )
        .map_err(|err| err.context(format!("installing mdbook {MDBOOK_VERSION} from crates.io")))?;
        std::fs::write(&marker, MDBOOK_VERSION)?;
    }
    Ok(binary)
}

pub fn run(args: &BookArgs) -> anyhow::Result<()> {
    let mdbook = mdbook()?;
    let docs = process::workspace_root().join("docs");
    let mut cmd = Command::new(&mdbook);
    if args.serve {
        println!("the book: http://127.0.0.1:{SERVE_PORT} (Ctrl-C stops)");
        cmd.args(["serve", "--hostname", "127.0.0.1", "--port", SERVE_PORT]);
    } else {
        cmd.arg("build");
    }
    cmd.arg(&docs);
    let status = cmd
        .status()
        .map_err(|err| anyhow::anyhow!("running {}: {err}", mdbook.display()))?;
    anyhow::ensure!(status.success(), "mdbook failed ({status})");
    if !args.serve {
        println!("the book: {}", docs.join("book/index.html").display());
    }
    Ok(())
}
