//! The checker of exercise 11: phase 3's real observed system (the test harness
//! `phase3_observability::testing`, on the services `cargo xtask up` runs), five
//! rounds — healthy and each incident once, in a random order — and the learner's
//! diagnosis of each from two scrapes with the `incident*` series taken out.

use super::{Diagnose, Diagnosis, Finding, Samples};
use crate::infra::{self, Service};
use crate::{CheckRng, Failure};
use phase3_observability::incidents::IncidentSettings;
use phase3_observability::scrape::Sample;
use phase3_observability::testing::{Options, System, value};
use std::sync::Mutex;
use std::time::Duration;

/// One observed system per process at a time: its metrics are process-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ROUNDS: [Finding; 5] = [
    Finding::Healthy,
    Finding::PaymentSlowdown,
    Finding::NotificationBacklog,
    Finding::MemoryLeak,
    Finding::CpuHotPath,
];

pub fn check<D: Diagnose>() -> Result<(), Failure> {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    infra::block_on_within(Duration::from_secs(300), async {
        infra::require(&[Service::Postgres, Service::Redis, Service::Kafka]).await?;
        let system = System::start(Options {
            incidents: IncidentSettings {
                leak_bytes_per_event: 2 * 1024 * 1024,
                ..IncidentSettings::default()
            },
            // The incident switches log at WARN: only the verdict belongs on screen.
            logs: "error",
            ..Options::default()
        })
        .await;
        let result = rounds::<D>(&system).await;
        system.stop().await;
        result
    })
}

/// What the learner sees: the scrape without anything naming an incident.
fn without_incidents(samples: Samples) -> Samples {
    let names_incident = |s: &Sample| {
        s.name.starts_with("incident") || s.labels.values().any(|v| v.contains("incident"))
    };
    Samples(
        samples
            .0
            .into_iter()
            .filter(|s| !names_incident(s))
            .collect(),
    )
}

async fn rounds<D: Diagnose>(system: &System) -> Result<(), Failure> {
    let diagnose = D::new();
    // A different order every run, so no order can be learnt by heart.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(11, |d| d.as_nanos() as u64);
    let mut rng = CheckRng::new(seed);
    let mut order = ROUNDS.to_vec();
    for i in (1..order.len()).rev() {
        let j = (rng.fraction() * (i + 1) as f64) as usize;
        order.swap(i, j.min(i));
    }
    // A warm-up round, not scored: a fresh process grows (caches, pools, allocator
    // arenas) during its first traffic, which would look like a leak.
    let _ = round(system, Finding::Healthy, &diagnose).await;
    let mut report = Vec::new();
    let mut wrong = 0;
    for (i, truth) in order.iter().enumerate() {
        let diagnosis = round(system, *truth, &diagnose).await;
        let right = diagnosis.finding == *truth;
        wrong += usize::from(!right);
        report.push(format!(
            "    round {}: switched on {:<22} you said {:<20} {}\n        evidence: {}",
            i + 1,
            truth.incident().unwrap_or("nothing (healthy)"),
            format!("{:?}", diagnosis.finding),
            if right { "✓" } else { "✗" },
            diagnosis.evidence
        ));
    }
    if wrong == 0 {
        // Worth seeing when it passes too: the margins between healthy and ill.
        println!(
            "all {} rounds diagnosed right:\n{}",
            order.len(),
            report.join("\n")
        );
        return Ok(());
    }
    Err(Failure(format!(
        "{wrong} of {} diagnoses were wrong:\n{}",
        order.len(),
        report.join("\n")
    )))
}

async fn round(system: &System, truth: Finding, diagnose: &impl Diagnose) -> Diagnosis {
    let raw_before = system.scrape().await;
    let payments = value(&raw_before, "payment_duration_seconds_count", &[]);
    if let Some(name) = truth.incident() {
        system.switch(name, true).await;
    }
    // Traffic: six orders; once their payments are done (slow ones take seconds),
    // 120 reads of them — so a burning CPU cannot slow the payments down — then 3 s:
    // a healthy consumer has caught up by then, and the lag gauges are fresh.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(system.place().await);
    }
    system
        .scrape_until(
            Duration::from_secs(60),
            "the round's payments finished",
            |s| value(s, "payment_duration_seconds_count", &[]) >= payments + 6.0,
        )
        .await;
    for _ in 0..20 {
        for id in &ids {
            system.status(id).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let raw_after = system.scrape().await;
    if let Some(name) = truth.incident() {
        system.switch(name, false).await;
    }
    let diagnosis = diagnose.diagnose(
        &without_incidents(raw_before),
        &without_incidents(raw_after),
    );
    // Let the system recover before the next round: every group caught up.
    system
        .scrape_until(
            Duration::from_secs(60),
            "all consumer groups caught up",
            |s| {
                value(s, "kafka_consumer_lag", &[]) == 0.0 && value(s, "outbox_backlog", &[]) == 0.0
            },
        )
        .await;
    diagnosis
}
