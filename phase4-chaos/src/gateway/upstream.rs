//! The order API replicas behind the gateway: which ones to send to.
//!
//! Two mechanisms, each catching what the other misses:
//!
//! * **Health checks** — every `--health-interval` the gateway asks each replica's
//!   `/ready`. A replica that does not answer ready is taken out of the rotation,
//!   and put back when it answers again. This catches a replica that is down or
//!   draining *before* a client request finds out.
//! * **A circuit breaker per replica** — phase 1's breaker
//!   (`common::resilience::breaker`), fed by the outcomes of real requests: a
//!   replica whose answers turn into errors or timeouts (alive enough for `/ready`,
//!   sick for real work) is refused at once for a cooldown, then probed with one
//!   request.
//!
//! A request goes to the next replica in turn that is healthy and whose breaker
//! lets it through. If the connection is refused, the request never reached the
//! replica, so it is safe to try the next one, once — for a `POST` too.

use common::resilience::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Trips on half of the last 20 requests failing (at least 5), stays open 5 s.
pub const BREAKER: BreakerConfig = BreakerConfig {
    window: 20,
    min_calls: 5,
    failure_threshold: 0.5,
    cooldown: Duration::from_secs(5),
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// One order API replica.
#[derive(Debug)]
pub struct Replica {
    pub url: String,
    healthy: AtomicBool,
    breaker: Arc<CircuitBreaker>,
}

impl Replica {
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The rotation.
#[derive(Debug)]
pub struct Replicas {
    replicas: Vec<Replica>,
    next: AtomicUsize,
    /// Whether [`Replicas::check`] has run at least once.
    checked: AtomicBool,
    /// `--no-breaker`: every replica, every time, whatever the checks and breakers say
    /// (to see what the defences prevent).
    unguarded: bool,
    up: Family<UpstreamLabels, Gauge>,
    breaker: Family<UpstreamLabels, Gauge>,
}

/// A replica chosen for one request: report how it went.
#[derive(Debug)]
pub struct Chosen<'a> {
    pub replica: &'a Replica,
    permit: Option<Permit>,
}

impl Chosen<'_> {
    /// The replica answered (any status below 500, or a deliberate 503).
    pub fn answered(self) {
        if let Some(permit) = self.permit {
            permit.success();
        }
    }

    /// A 5xx, a timeout or a broken connection.
    pub fn failed(self) {
        if let Some(permit) = self.permit {
            permit.failure();
        }
    }
}

impl Replicas {
    pub fn new(urls: &[String], unguarded: bool) -> Replicas {
        let replicas = urls
            .iter()
            .map(|url| Replica {
                url: url.trim_end_matches('/').to_owned(),
                // Healthy until a check says otherwise: a gateway that starts before its
                // first check still forwards.
                healthy: AtomicBool::new(true),
                // Names must be 'static: a handful, made once at start.
                breaker: CircuitBreaker::new(
                    Box::leak(format!("order-api {url}").into_boxed_str()),
                    BREAKER,
                ),
            })
            .collect();
        Replicas {
            replicas,
            next: AtomicUsize::new(0),
            checked: AtomicBool::new(false),
            unguarded,
            up: Family::default(),
            breaker: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_upstream_up",
            "1 while an order API replica is in the rotation (its /ready answers)",
            self.up.clone(),
        );
        registry.register(
            "gateway_upstream_breaker_state",
            "Each replica's circuit breaker: 0 closed, 1 half-open, 2 open",
            self.breaker.clone(),
        );
        self.export();
    }

    pub fn all(&self) -> &[Replica] {
        &self.replicas
    }

    /// The next replica in turn that may take a request, skipping `except`.
    pub fn choose(&self, except: Option<&str>) -> Option<Chosen<'_>> {
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let replica = &self.replicas[(start + offset) % count];
            if Some(replica.url.as_str()) == except {
                continue;
            }
            if self.unguarded {
                return Some(Chosen {
                    replica,
                    permit: None,
                });
            }
            if !replica.is_healthy() {
                continue;
            }
            if let Ok(permit) = replica.breaker.try_acquire() {
                return Some(Chosen {
                    replica,
                    permit: Some(permit),
                });
            }
        }
        self.export();
        None
    }

    /// Ready to serve: the health checks have run and found a replica ready (what the
    /// gateway's own `/ready` says, without asking the replicas again).
    pub fn any_ready(&self) -> bool {
        self.checked.load(Ordering::Relaxed) && self.replicas.iter().any(Replica::is_healthy)
    }

    /// Asks every replica's `/ready` once and updates the rotation.
    pub async fn check(&self, http: &reqwest::Client) {
        for replica in &self.replicas {
            let ready = http
                .get(format!("{}/ready", replica.url))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            let was = replica.healthy.swap(ready, Ordering::Relaxed);
            if was && !ready {
                tracing::warn!(upstream = %replica.url, "order API replica not ready: taken out of the rotation");
            } else if !was && ready {
                tracing::info!(upstream = %replica.url, "order API replica ready: back in the rotation");
            }
        }
        self.checked.store(true, Ordering::Relaxed);
        self.export();
    }

    /// Updates the gauges.
    pub fn export(&self) {
        for replica in &self.replicas {
            let labels = UpstreamLabels {
                upstream: replica.url.clone(),
            };
            self.up
                .get_or_create(&labels)
                .set(i64::from(replica.is_healthy()));
            self.breaker
                .get_or_create(&labels)
                .set(match replica.breaker_state() {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas() -> Replicas {
        Replicas::new(&["http://a".to_owned(), "http://b".to_owned()], false)
    }

    #[test]
    fn requests_take_turns_and_skip_a_replica_out_of_the_rotation() {
        let r = replicas();
        let first = r.choose(None).unwrap().replica.url.clone();
        let second = r.choose(None).unwrap().replica.url.clone();
        assert_ne!(first, second, "round robin");
        r.replicas[0].healthy.store(false, Ordering::Relaxed);
        for _ in 0..4 {
            let chosen = r.choose(None).unwrap();
            assert_eq!(chosen.replica.url, "http://b");
            chosen.answered();
        }
        assert!(r.choose(Some("http://b")).is_none(), "a is out, b excluded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_replica_is_refused_by_its_breaker_then_probed() {
        let r = replicas();
        for _ in 0..10 {
            let chosen = r.choose(None).unwrap();
            if chosen.replica.url == "http://a" {
                chosen.failed();
            } else {
                chosen.answered();
            }
        }
        assert_eq!(r.replicas[0].breaker_state(), BreakerState::Open);
        for _ in 0..4 {
            let chosen = r.choose(None).unwrap();
            assert_eq!(chosen.replica.url, "http://b", "a's breaker is open");
            chosen.answered();
        }
        tokio::time::advance(BREAKER.cooldown + Duration::from_millis(1)).await;
        let urls: Vec<String> = (0..2)
            .map(|_| {
                let chosen = r.choose(None).unwrap();
                let url = chosen.replica.url.clone();
                chosen.answered();
                url
            })
            .collect();
        assert!(
            urls.contains(&"http://a".to_owned()),
            "a is probed after the cooldown"
        );
        assert_eq!(r.replicas[0].breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn unguarded_sends_to_every_replica_whatever_its_state() {
        let r = Replicas::new(&["http://a".to_owned()], true);
        r.replicas[0].healthy.store(false, Ordering::Relaxed);
        assert!(r.choose(None).is_some());
    }
}
