//! Run with `cargo run -p phase1-monolith` (then see the README for the curl tour),
//! or `cargo run -p phase1-monolith -- --help` for every option.

use clap::Parser;
use phase1_monolith::config::{Cli, Command};
use phase1_monolith::startup::Application;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::telemetry::init_json_logs();
    // Logged as "fatal", then one line on stderr: the last a learner sees.
    common::telemetry::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = common::shutdown::on_signal();
    match cli.command {
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
        None => {
            Application::build(cli.settings)
                .await?
                .run_until_stopped(shutdown)
                .await
        }
    }
}
