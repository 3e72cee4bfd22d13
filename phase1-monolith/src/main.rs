//! Run with `cargo run -p phase1-monolith` (then see the README for the curl tour),
//! or `cargo run -p phase1-monolith -- --help` for every option.

use clap::Parser;
use phase1_monolith::config::{Cli, Command};
use phase1_monolith::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_json_logs();
    let cli = Cli::parse();
    let shutdown = common::shutdown::on_signal();
    let result = match cli.command {
        Some(Command::Provider(config)) => {
            let listener = common::http::listen(
                config.addr,
                "the payment provider simulator",
                "--provider-addr",
            )
            .await?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            let sim = common::payment::Simulator::new(&config);
            sim.serve(listener, shutdown)
                .await
                .map_err(anyhow::Error::from)
        }
        None => match Application::build(cli.settings).await {
            Ok(app) => app.run_until_stopped(shutdown).await,
            Err(err) => Err(err),
        },
    };
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "fatal");
    }
    result
}
