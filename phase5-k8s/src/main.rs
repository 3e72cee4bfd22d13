//! `phase5-k8s`: the manifests, checked without a cluster.
//!
//!     cargo run -p phase5-k8s -- check                       # the base and the kind overlay
//!     cargo run -p phase5-k8s -- check phase5-k8s/deploy/overlays/misconfig/no-prestop
//!     cargo run -p phase5-k8s -- rules                        # what each rule is about
//!     cargo run -p phase5-k8s -- rehearse cpu-starved         # the manifests' behaviour, with processes
//!     cargo run -p phase5-k8s -- rehearse --all               # all six, one after another

use clap::{Parser, Subcommand};
use phase5_k8s::policy::{self, Rule};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    about = "FerrisEats phase 5: Kubernetes manifests, rendered, validated and held to policy rules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render each kustomization (default: the base and the kind overlay), validate it
    /// strictly against the Kubernetes schemas, and check the policy rules. Exit 1 if
    /// any object is invalid or breaks a rule.
    Check { dirs: Vec<PathBuf> },
    /// The policy rules and what each protects against.
    Rules,
    /// Run the pods of the rendered manifests as processes — their CPU and memory
    /// limits in cgroups, probed at their intervals, restarted, behind a Service —
    /// and show what a misconfiguration does beside the base. Needs root (cgroups)
    /// and `cargo xtask up`. Exit 1 if a check fails.
    Rehearse(Box<phase5_k8s::rehearse::RehearseArgs>),
}

/// What `check` checks by default: what must pass (the misconfigurations are named
/// one by one, to see them fail).
fn must_pass() -> Vec<PathBuf> {
    let deploy = common_local::process::workspace_root().join("phase5-k8s/deploy");
    vec![deploy.join("base"), deploy.join("overlays/kind")]
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Rehearse(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Runtime::new()?;
            let reports = runtime.block_on(phase5_k8s::rehearse::run_all(&args))?;
            if !reports.iter().all(phase5_k8s::rehearse::Report::passed) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Rules => {
            for rule in Rule::ALL {
                println!("{rule}");
            }
            Ok(())
        }
        Command::Check { dirs } => {
            let dirs = if dirs.is_empty() { must_pass() } else { dirs };
            let mut failed = false;
            for dir in dirs {
                let yaml = phase5_k8s::render(&dir)?;
                let objects = policy::parse(&yaml)?;
                let validation = phase5_k8s::validate(&yaml)?;
                let findings = policy::check(&objects);
                println!(
                    "{}: {} objects, {} refused by the schemas (Kubernetes {}), {} policy finding(s)",
                    dir.display(),
                    objects.len(),
                    validation.errors.len(),
                    phase5_k8s::render::KUBERNETES_VERSION,
                    findings.len()
                );
                for error in &validation.errors {
                    println!("  ✘ {error}");
                }
                failed |= !validation.errors.is_empty();
                for finding in &findings {
                    println!("  ✘ {finding}");
                }
                failed |= !findings.is_empty();
            }
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
