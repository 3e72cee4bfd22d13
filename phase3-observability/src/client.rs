//! `phase3-observability incident list | on NAME | off NAME`: the admin API of a
//! running process, from the command line.

use crate::incidents::Status;
use anyhow::Context;

/// What to do.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum IncidentCommand {
    /// Every incident of the process and whether it is on.
    List,
    /// Switch an incident on.
    On { name: String },
    /// Switch an incident off.
    Off { name: String },
}

/// Runs `command` against the ops server at `ops` (e.g. `http://127.0.0.1:9400`).
pub async fn run(ops: &str, command: &IncidentCommand) -> anyhow::Result<Vec<Status>> {
    let http = reqwest::Client::new();
    let base = ops.trim_end_matches('/');
    let request = match command {
        IncidentCommand::List => http.get(format!("{base}/admin/incidents")),
        IncidentCommand::On { name } => http.put(format!("{base}/admin/incidents/{name}")),
        IncidentCommand::Off { name } => http.delete(format!("{base}/admin/incidents/{name}")),
    };
    let response = request
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the ops server at {base}; is `phase3-observability all` running?")
        })?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(match command {
        IncidentCommand::List => serde_json::from_str(&body)?,
        _ => vec![serde_json::from_str(&body)?],
    })
}
