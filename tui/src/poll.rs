//! Polling: every target asked for `/health`, `/ready`, `/metrics` and
//! `/admin/incidents`, all at once, each request with its own timeout, the answers
//! gathered into one [`Snapshot`] and sent to the UI over a channel.
//!
//! **Why the UI never waits.** The poller runs in tokio tasks of its own; the UI loop
//! only ever reads the latest snapshot that arrived. A target that hangs costs one
//! timeout (800 ms by default) in the poller, shows as down, and the screen keeps
//! redrawing and answering keys meanwhile. A round is bounded by that timeout, and a
//! round that overruns the refresh interval delays the next one instead of piling up
//! (`MissedTickBehavior::Delay`).

use crate::config::Target;
use chrono::{DateTime, Utc};
use phase3_observability::incidents::Status;
use phase3_observability::scrape::{self, Samples};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The answer to one probe request.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// 2xx.
    Ok,
    /// Answered, but with this status (e.g. 503 from `/ready`).
    Status(u16),
    /// 404: the target does not serve this path.
    Absent,
    /// No answer: refused, reset, timed out. The text says which.
    Failed(String),
}

/// What one target said in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetPoll {
    pub name: String,
    pub url: String,
    pub health: Probe,
    pub ready: Probe,
    /// The parsed `/metrics`, when served.
    pub metrics: Option<Arc<Samples>>,
    /// `/admin/incidents`, when served.
    pub incidents: Option<Vec<Status>>,
}

/// One round over every target, stamped with when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub at: DateTime<Utc>,
    pub targets: Vec<TargetPoll>,
}

/// The HTTP client of the poller and of the incident switches.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // Never reuse a connection to a process that may have restarted meanwhile
        // for longer than a few rounds.
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("a client without TLS builds")
}

async fn get(client: &reqwest::Client, url: String) -> Result<reqwest::Response, String> {
    client.get(url).send().await.map_err(|err| describe(&err))
}

/// A short reason for the event log: "timed out", "connection refused", …
pub fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    if err.is_connect() {
        let text = format!("{err:?}");
        if text.contains("Connection refused") || text.contains("ConnectionRefused") {
            return "connection refused".into();
        }
        return "cannot connect".into();
    }
    if err.is_decode() || err.is_body() {
        return "unreadable answer".into();
    }
    "request failed".into()
}

async fn probe(client: &reqwest::Client, url: String) -> Probe {
    match get(client, url).await {
        Ok(r) if r.status().is_success() => Probe::Ok,
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Probe::Absent,
        Ok(r) => Probe::Status(r.status().as_u16()),
        Err(err) => Probe::Failed(err),
    }
}

async fn metrics(client: &reqwest::Client, url: String) -> Option<Arc<Samples>> {
    let response = get(client, url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let text = response.text().await.ok()?;
    Some(Arc::new(scrape::parse(&text)))
}

async fn incidents(client: &reqwest::Client, url: String) -> Option<Vec<Status>> {
    let response = get(client, url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Polls one target: its four endpoints concurrently.
pub async fn poll_target(client: &reqwest::Client, target: &Target) -> TargetPoll {
    let base = &target.url;
    let (health, ready, metrics, incidents) = tokio::join!(
        probe(client, format!("{base}/health")),
        probe(client, format!("{base}/ready")),
        metrics(client, format!("{base}/metrics")),
        incidents(client, format!("{base}/admin/incidents")),
    );
    TargetPoll {
        name: target.name.clone(),
        url: target.url.clone(),
        health,
        ready,
        metrics,
        incidents,
    }
}

/// One round over every target, concurrently; stamped when it finished.
pub async fn poll_once(client: &reqwest::Client, targets: &[Target]) -> Snapshot {
    let polls = futures::future::join_all(targets.iter().map(|t| poll_target(client, t))).await;
    Snapshot {
        at: Utc::now(),
        targets: polls,
    }
}

/// Polls every `refresh` (or at once when `now` is notified, e.g. after an incident
/// switch) and sends each snapshot, until `stop` or until the receiver is gone.
pub async fn run(
    client: reqwest::Client,
    targets: Vec<Target>,
    refresh: Duration,
    now: Arc<Notify>,
    tx: mpsc::Sender<Snapshot>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = now.notified() => {}
        }
        let snapshot = tokio::select! {
            _ = stop.cancelled() => return,
            s = poll_once(&client, &targets) => s,
        };
        // A full channel means the UI is behind: drop this round rather than queue.
        match tx.try_send(snapshot) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// `PUT` (on) or `DELETE` (off) `/admin/incidents/{name}` on `target`; the state the
/// server reports back.
pub async fn switch_incident(
    client: &reqwest::Client,
    target: &Target,
    name: &str,
    on: bool,
) -> Result<Status, String> {
    let url = format!("{}/admin/incidents/{name}", target.url);
    let request = if on {
        client.put(url)
    } else {
        client.delete(url)
    };
    let response = request.send().await.map_err(|err| describe(&err))?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", target.name, response.status()));
    }
    response.json().await.map_err(|err| describe(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_nobody_listens_on_is_down_and_has_no_metrics() {
        // Bind and drop: a port that refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target: Target = format!("gone=127.0.0.1:{port}").parse().unwrap();
        let poll = poll_target(&client(Duration::from_millis(300)), &target).await;
        assert!(matches!(poll.health, Probe::Failed(_)), "{poll:?}");
        assert_eq!(poll.metrics, None);
        assert_eq!(poll.incidents, None);
    }

    #[tokio::test]
    async fn a_target_that_never_answers_costs_one_timeout() {
        // Accepts connections, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let target: Target = format!("slow={addr}").parse().unwrap();
        let started = std::time::Instant::now();
        let poll = poll_target(&client(Duration::from_millis(200)), &target).await;
        assert_eq!(poll.health, Probe::Failed("timed out".into()));
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }
}
