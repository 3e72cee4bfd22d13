//! `phase4-chaos`: phase 4's command line.
//!
//! ```text
//! phase4-chaos all                          # every service a supervised process, two gateways on 3000
//! phase4-chaos all -- --no-shedding         # flags after `--` go to both gateways
//! phase4-chaos all --one-process            # everything in one process, as in phases 2 and 3
//! phase4-chaos node payment                 # one of phase 3's services (what the supervisor starts)
//! phase4-chaos gateway --upstream URL,URL   # the gateway alone
//! phase4-chaos token --customer alice       # a bearer token for the gateway
//! phase4-chaos load --rate 500 --duration 60s --slo 'p99<200ms' --slo 'errors<0.1%'
//! phase4-chaos scenario kill-service --rate 200 --duration 60s --seed 1
//! phase4-chaos bench phase2 --json F        # what `cargo xtask bench` runs
//! ```

use clap::{Parser, Subcommand};
use phase3_observability::node::{Observed, Role};
use phase4_chaos::gateway::{Gateway, GatewaySettings, auth};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "phase4-chaos",
    about = "FerrisEats phase 4: the gateway, load, measurement and chaos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Phase 3's services, each a process under a supervisor that restarts what dies
    /// (ops on 9401–9406), a second order API replica (ops 9407), two gateways sharing
    /// 127.0.0.1:3000 (ops 9410, 9411), the provider simulator (3001) and the
    /// supervisor's ops (9420: /processes, /metrics). Flags after `--` go to the
    /// gateways (`all -- --no-shedding`).
    All {
        /// Where the two order API replicas listen (the gateway forwards there).
        #[arg(
            long,
            env = "ORDER_API_ADDRS",
            value_delimiter = ',',
            num_args = 2,
            default_value = "127.0.0.1:3100,127.0.0.1:3101"
        )]
        order_addrs: Vec<SocketAddr>,
        /// Every SKU's stock is raised to at least this at start: a load run should
        /// not end in a wall of `out_of_stock` cancellations.
        #[arg(long, env = "STOCK", default_value_t = 1_000_000)]
        stock: i64,
        /// Run everything but the gateway (`cargo xtask bench phase4` runs the gateway
        /// as a process of its own, to measure its CPU and memory apart).
        #[arg(long)]
        without_gateway: bool,
        /// Everything in this one process, nothing supervised (phase 3's `all` with a
        /// second order API replica, ops on 9400 and 9401, one gateway with ops 9410).
        #[arg(long, env = "ONE_PROCESS")]
        one_process: bool,
        #[command(flatten)]
        supervisor: phase4_chaos::supervisor::SupervisorSettings,
        /// Moves every port up by N — the gateway's 3000, the order APIs', every ops
        /// port, the supervisor's: a second platform beside the first (the README's
        /// tour runs this way in the tests). Not with --one-process.
        #[arg(long, env = "PORT_OFFSET", default_value_t = 0)]
        port_offset: u16,
        /// The gateways' flags (see `phase4-chaos gateway --help`).
        #[arg(last = true)]
        gateway_args: Vec<String>,
    },
    /// One of phase 3's services as a process of its own (what `all` supervises).
    Node {
        role: Role,
        /// Raise every SKU's stock to at least this first (the inventory's).
        #[arg(long)]
        stock: Option<i64>,
        #[command(flatten)]
        observed: Box<Observed>,
    },
    /// The gateway alone, in front of order API replicas already running.
    Gateway(GatewaySettings),
    /// The payment provider simulator alone (phase 4's defaults), with an ops port.
    Provider {
        #[arg(
            long = "provider-addr",
            env = "PROVIDER_ADDR",
            default_value = "127.0.0.1:3001"
        )]
        addr: std::net::SocketAddr,
        /// `/health`, `/ready`, `/metrics`.
        #[arg(long)]
        ops_addr: Option<std::net::SocketAddr>,
    },
    /// Mint a bearer token for the gateway (HS256, key from GATEWAY_JWT_KEY).
    Token {
        /// The customer the token speaks for (its subject).
        #[arg(long)]
        customer: String,
        /// How long it is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, env = "GATEWAY_JWT_KEY", default_value = auth::DEVELOPMENT_KEY, hide_default_value = true)]
        jwt_key: String,
    },
    /// Load the gateway with the request mix (open or closed model); exit status 99
    /// when a --slo threshold fails.
    Load(Box<phase4_chaos::load::run::LoadArgs>),
    /// A chaos scenario under load, ending in a verdict: exit status 0 pass, 1 fail,
    /// 2 not judged (the platform was unhealthy before the fault).
    Scenario(Box<phase4_chaos::chaos::ScenarioArgs>),
    /// A game day: one fault chosen at random among the scenarios, not named; the
    /// learners diagnose it from the dashboard and `--answer NAME`.
    Gameday(phase4_chaos::chaos::gameday::GamedayArgs),
    /// Throughput and latency percentiles, next to pgbench running the same SQL.
    Bench(phase4_chaos::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    // One line on stderr for a failure (e.g. "error: cannot reach Redis at …: start
    // it with `cargo xtask up` …"), logged as "fatal" where logs are set up.
    common::telemetry::exit_code(run(Cli::parse().command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => phase4_chaos::bench::run(&args),
        Command::Gameday(args) => {
            use phase4_chaos::chaos::{self, ScenarioArgs, gameday};
            if let Some(guess) = args.answer {
                let right = gameday::answer(&args.record, guess)?;
                std::process::exit(if right { 0 } else { 1 });
            }
            let seed = args.seed.unwrap_or_else(rand::random);
            let (record, scenario) = gameday::Record::new(seed);
            record.save(&args.record)?;
            let mut run: ScenarioArgs = phase4_chaos::parse_flags(&[
                scenario.name(),
                "--rate",
                &args.rate.to_string(),
                "--duration",
                &format!("{}ms", args.duration.as_millis()),
                "--seed",
                &seed.to_string(),
            ])?;
            run.gameday = Some(args.record.clone());
            println!(
                "game day {seed}: the platform starts, load follows, and one fault will come. \
                 Watch `cargo run -p tui -- --phase4`; answer with \
                 `phase4-chaos gameday --answer NAME` (one of: {}).",
                <chaos::Scenario as clap::ValueEnum>::value_variants()
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let outcome = runtime()?.block_on(chaos::run(&run, scenario))?;
            println!("\ngame day over. It was:\n");
            print!("{}", outcome.report());
            println!("\nresults: {}", outcome.folder.display());
            Ok(())
        }
        Command::Scenario(args) => {
            use clap::ValueEnum;
            use phase4_chaos::chaos::{self, Scenario};
            let scenarios: Vec<Scenario> = match args.scenario {
                Some(scenario) => vec![scenario],
                None => Scenario::value_variants().to_vec(),
            };
            let runtime = runtime()?;
            let mut outcomes = Vec::new();
            for scenario in scenarios {
                let outcome = runtime.block_on(chaos::run(&args, scenario))?;
                print!("{}", outcome.report());
                println!("\nresults: {}\n", outcome.folder.display());
                outcomes.push(outcome);
            }
            if outcomes.len() > 1 {
                print!("{}", chaos::table(&outcomes));
            }
            // The worst: 2 (not judged) over 1 (fail) over 0 (pass).
            std::process::exit(outcomes.iter().map(|o| o.exit_code()).max().unwrap_or(2));
        }
        Command::Load(args) => {
            use phase4_chaos::load::run;
            let report = runtime()?.block_on(run::run(&args))?;
            run::print(&report);
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
                eprintln!("report written to {}", path.display());
            }
            if !report.passed {
                std::process::exit(99);
            }
            Ok(())
        }
        Command::Token {
            customer,
            ttl,
            jwt_key,
        } => {
            println!(
                "{}",
                auth::Keys::hs256(jwt_key.as_bytes())?.mint(&customer, ttl)?
            );
            Ok(())
        }
        Command::Provider { addr, ops_addr } => {
            runtime()?.block_on(phase4_chaos::system::provider(addr, ops_addr))
        }
        Command::Gateway(settings) => runtime()?.block_on(async {
            common::telemetry::init_json_logs();
            let shutdown = common::shutdown::on_signal();
            Gateway::new(settings).await?.run(shutdown).await
        }),
        Command::All {
            order_addrs,
            stock,
            without_gateway,
            one_process,
            mut supervisor,
            port_offset,
            gateway_args,
        } => {
            let [mut first, mut second] = order_addrs[..] else {
                anyhow::bail!("--order-addrs takes two addresses");
            };
            if port_offset > 0 {
                anyhow::ensure!(
                    !one_process,
                    "--port-offset is for the supervised platform, not --one-process"
                );
                for addr in [&mut first, &mut second, &mut supervisor.supervisor_ops_addr] {
                    addr.set_port(addr.port() + port_offset);
                }
            }
            let args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
            // Checked here, so that a wrong flag fails now and not in each gateway.
            let gateway: GatewaySettings = phase4_chaos::parse_flags(&args)
                .map_err(|err| anyhow::anyhow!("the gateway flags after `--`: {err}"))?;
            if one_process {
                return runtime()?.block_on(phase4_chaos::system::all(
                    [first, second],
                    stock,
                    (!without_gateway).then_some(gateway),
                ));
            }
            common::telemetry::init_json_logs();
            let layout = phase4_chaos::system::Layout {
                offset: port_offset,
            };
            let programs = phase4_chaos::system::platform(
                layout,
                [first, second],
                stock,
                (!without_gateway).then_some(&gateway_args[..]),
                &[],
            );
            runtime()?.block_on(phase4_chaos::system::supervised(
                programs, layout, supervisor,
            ))
        }
        Command::Node {
            role,
            stock,
            observed,
        } => runtime()?.block_on(phase4_chaos::system::node(role, *observed, stock)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
