//! The test harness of phase 3 and of the dashboard (feature `testing`): one observed
//! system per test process — `phase3-observability all`, built in this process on
//! phase 2's [`Scratch`] (four fresh databases and a topic namespace of its own),
//! with ports of its own — judged from its ops server's `/metrics`, from the
//! outside, like a dashboard.
//!
//! The tracing subscriber is global, so each test binary holds one scenario (the
//! suite may run under plain `cargo test`, where the tests of a binary share a
//! process: RSS and CPU readings would mix). Needs PostgreSQL, Redis and the broker
//! (`cargo xtask up`); when one is missing, [`System::start`] panics saying so.

use crate::incidents::IncidentSettings;
use crate::node::{Node, Observed, Role};
use crate::scrape::{self, Samples};
use crate::{Instruments, telemetry};
use clap::Parser;
use common::payment::LatencyRange;
use common::shutdown::CancellationToken;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use phase2_events::testing::Scratch;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    observed: Observed,
}

/// What a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    pub provider_latency: LatencyRange,
    pub incidents: IncidentSettings,
    /// Keep every finished span in memory (the tracing test).
    pub capture_spans: bool,
    /// The log filter when `RUST_LOG` is not set (the first system of a process
    /// decides, like every other process-wide setting here).
    pub logs: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            provider_latency: LatencyRange::ZERO,
            incidents: IncidentSettings::default(),
            capture_spans: false,
            logs: "warn",
        }
    }
}

struct Global {
    instruments: Instruments,
    spans: InMemorySpanExporter,
    _provider: SdkTracerProvider,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

fn global(options: &Options) -> &'static Global {
    GLOBAL.get_or_init(|| {
        let instruments = Instruments::new(options.incidents.leak_bytes_per_event);
        let spans = InMemorySpanExporter::default();
        let mut provider = SdkTracerProvider::builder().with_resource(telemetry::resource("test"));
        if options.capture_spans {
            provider = provider.with_simple_exporter(spans.clone());
        }
        let provider = provider.build();
        telemetry::install(
            &provider,
            instruments.spans.clone(),
            instruments.leak.layer(),
            options.logs,
        )
        .expect("one subscriber per test process");
        Global {
            instruments,
            spans,
            _provider: provider,
        }
    })
}

/// A running observed system.
#[derive(Debug)]
pub struct System {
    pub namespace: String,
    pub order_url: String,
    pub ops_url: String,
    pub http: reqwest::Client,
    pub spans: InMemorySpanExporter,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    scratch: Scratch,
}

impl System {
    pub async fn start(options: Options) -> System {
        let global = global(&options);
        let scratch = Scratch::create(None).await;
        let namespace = scratch.namespace().to_owned();
        let mut observed = Wrapper::parse_from(["test"]).observed;
        observed.settings = scratch.settings.clone();
        let s = &mut observed.settings;
        s.provider.latency = options.provider_latency;
        s.payment.attempt_timeout = Duration::from_secs(5);
        s.payment.deadline = Duration::from_secs(12);
        observed.incidents = options.incidents.clone();
        observed.ops_addr = Some("127.0.0.1:0".parse().unwrap());
        observed.probe_interval = Duration::from_millis(500);

        let node = Node::build(
            Role::All,
            observed,
            global.instruments.metrics.clone(),
            &global.instruments.leak,
        )
        .await
        .unwrap_or_else(|err| {
            panic!(
                "starting phase 3 failed: {err:#}\nThe phase 3 tests need PostgreSQL, Redis and \
                 Apache Kafka: start them with `cargo xtask up`."
            )
        });
        let order_url = format!("http://{}", node.order_addr().expect("all runs the API"));
        let ops_url = format!("http://{}", node.ops_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node.run(shutdown.clone()));
        System {
            namespace,
            order_url,
            ops_url,
            http: reqwest::Client::new(),
            spans: global.spans.clone(),
            shutdown,
            task,
            scratch,
        }
    }

    /// `<namespace>.<name>`: a topic or group of this system.
    pub fn ns(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    /// Places an order of one pizza; returns its id once accepted (202).
    pub async fn place(&self) -> String {
        phase2_events::testing::place_order(&self.http, &self.order_url, &[("pizza-margherita", 1)])
            .await
            .to_string()
    }

    /// `GET` of `url` as JSON.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: String) -> T {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The order's status, by `GET /orders/{id}`.
    pub async fn status(&self, id: &str) -> String {
        let body: Value = self
            .get_json(format!("{}/orders/{id}", self.order_url))
            .await;
        body["status"].as_str().unwrap_or("").to_owned()
    }

    /// Whether the ops server says incident `name` is on (`GET /admin/incidents`).
    pub async fn incident_active(&self, name: &str) -> bool {
        let list: Vec<crate::incidents::Status> = self
            .get_json(format!("{}/admin/incidents", self.ops_url))
            .await;
        list.iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} not in {list:?}"))
            .active
    }

    /// Waits until every order in `ids` is delivered (panics after `limit`).
    pub async fn wait_delivered(&self, ids: &[String], limit: Duration) {
        let started = Instant::now();
        for id in ids {
            loop {
                let status = self.status(id).await;
                if status == "delivered" {
                    break;
                }
                assert!(
                    started.elapsed() < limit,
                    "order {id} is {status:?}, not delivered, after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// One scrape of the ops server.
    pub async fn scrape(&self) -> Samples {
        let response = self
            .http
            .get(format!("{}/metrics", self.ops_url))
            .send()
            .await
            .expect("ops server reachable");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        scrape::parse(&response.text().await.unwrap())
    }

    /// Scrapes until `check` holds (panics with the last scrape after `limit`).
    pub async fn scrape_until(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Samples) -> bool,
    ) -> Samples {
        let started = Instant::now();
        loop {
            let samples = self.scrape().await;
            if check(&samples) {
                return samples;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not true after {limit:?}; last scrape:\n{samples:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `PUT` (on) or `DELETE` (off) `/admin/incidents/{name}`; returns the state.
    pub async fn switch(&self, name: &str, on: bool) -> Value {
        let url = format!("{}/admin/incidents/{name}", self.ops_url);
        let request = if on {
            self.http.put(url)
        } else {
            self.http.delete(url)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "switching {name}");
        let state: Value = response.json().await.unwrap();
        assert_eq!(state["active"], on, "{state}");
        state
    }

    /// Stops the system, removes its databases and deletes its topics.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.scratch.remove().await;
    }
}

/// The summed value of `name{filter}`, 0 when absent.
pub fn value(samples: &Samples, name: &str, filter: &[(&str, &str)]) -> f64 {
    samples.sum(name, filter).unwrap_or(0.0)
}
