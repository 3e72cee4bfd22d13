//! `tui` — the FerrisEats terminal dashboard.
//!
//! ```text
//! cargo run -p tui                                    # watch `phase3-observability all`
//! cargo run -p tui -- --split                         # watch split mode (ops 9401–9406)
//! cargo run -p tui -- --target all=127.0.0.1:9400 --refresh 500ms
//! cargo run -p tui -- --once                          # one plain-text snapshot, then exit
//! ```

use clap::Parser;
use tui::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Cli::parse().into_config().map_err(anyhow::Error::msg)?;
    if config.once {
        print!("{}", tui::app::once(&config).await);
        return Ok(());
    }
    tui::app::run(config).await
}
