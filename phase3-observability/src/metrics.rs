//! Prometheus metrics: one registry per process, served as OpenMetrics text on
//! `GET /metrics`, and the HTTP metrics every service gets from one middleware.
//!
//! * **One [`Metrics`] value per process**, cloned into whatever records: it owns the
//!   `prometheus_client` registry, and each part of a service registers its own
//!   metrics in it once, at build time ([`Metrics::register`]). Recording is then a
//!   plain atomic update — no lock and no allocation on the hot path, beyond the
//!   label set of a [`Family`] the first time it is seen.
//! * **HTTP**, recorded by [`track_http`] (an axum middleware):
//!   `http_requests_total{method, route, status}` and
//!   `http_request_duration_seconds{method, route}`, a histogram, and
//!   `http_requests_in_flight{method, route}`, a gauge. The `route` label
//!   is the *matched route* (`/orders/{id}`), never the raw path: one series per
//!   order id would grow without bound and kill the metrics server — the classic
//!   "label cardinality" mistake. Unmatched paths are counted as `route="unmatched"`.
//! * **Histogram buckets decide what a percentile can say.** PromQL's
//!   `histogram_quantile` interpolates inside a bucket, so p99 is only as precise as
//!   the buckets around it. [`LATENCY_BUCKETS`] are roughly ×2 apart from 1 ms to
//!   30 s: fine enough to tell a 40 ms p99 from an 80 ms one, coarse enough to stay
//!   cheap (16 series per route).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Upper bounds (seconds) of the latency histograms: 1 ms … 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process's metrics: the registry, and the HTTP metrics of [`track_http`].
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registration happens at build time, encoding on each scrape; neither is on a
    /// request's path, so a std `Mutex` is enough.
    registry: Arc<Mutex<Registry>>,
    http: HttpMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<RouteLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the HTTP metrics registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by method and matched route",
            http.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being served right now, by method and matched route",
            http.in_flight.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            http,
        }
    }

    /// Registers `metric` under `name` (OpenMetrics adds `_total` to counters) and
    /// returns it, for the caller to keep and record into.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.registry
            .lock()
            .expect("the metrics registry lock is never held across a panic")
            .register(name, help, metric.clone());
        metric
    }

    /// Registers a collector: metrics computed afresh on every scrape (e.g. the
    /// process's memory and CPU, read from the operating system).
    pub fn register_collector(&self, collector: impl prometheus_client::collector::Collector) {
        self.registry
            .lock()
            .expect("the metrics registry lock is never held across a panic")
            .register_collector(Box::new(collector));
    }

    /// Everything registered, as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .expect("the metrics registry lock is never held across a panic");
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

/// `GET /metrics`: mount with `.route("/metrics", get(serve)).with_state(metrics)`,
/// or through [`router`].
pub async fn serve(State(metrics): State<Metrics>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], metrics.encode()).into_response()
}

/// A router with only `GET /metrics`, to merge into a service's router.
pub fn router(metrics: Metrics) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(serve))
        .with_state(metrics)
}

/// The HTTP middleware: counts every response and times it, by matched route.
/// Add with `.layer(axum::middleware::from_fn_with_state(metrics, track_http))`.
/// `Router::layer` wraps the routes, and the fallback only if one was set with
/// `.fallback(…)`: set one, or requests for unknown paths are not counted.
pub async fn track_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let labels = RouteLabels {
        method: method.clone(),
        route: route.clone(),
    };
    let in_flight = metrics.http.in_flight.get_or_create(&labels).clone();
    in_flight.inc();
    // Decremented on drop, so a request abandoned by its client still leaves.
    let _leaving = InFlight(in_flight);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .http
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}

struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(metrics: &Metrics) -> Router {
        Router::new()
            .route("/orders/{id}", get(|| async { "an order" }))
            .route("/fail", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                track_http,
            ))
            .merge(router(metrics.clone()))
    }

    async fn get_path(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_by_matched_route_not_by_raw_path() {
        let metrics = Metrics::new();
        let app = app(&metrics);
        for id in ["a", "b", "c"] {
            assert_eq!(
                get_path(&app, &format!("/orders/{id}")).await.0,
                StatusCode::OK
            );
        }
        get_path(&app, "/fail").await;
        get_path(&app, "/nowhere").await;

        let (status, text) = get_path(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/orders/{id}",status="200"} 3"#
            ),
            "three orders, one series:\n{text}"
        );
        assert!(text.contains(r#"route="/fail",status="503"} 1"#), "{text}");
        assert!(
            text.contains(r#"route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("/orders/a"),
            "no raw paths as labels:\n{text}"
        );
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    #[tokio::test]
    async fn every_request_lands_in_the_latency_histogram() {
        let metrics = Metrics::new();
        let app = app(&metrics);
        get_path(&app, "/orders/x").await;
        get_path(&app, "/orders/y").await;
        let text = metrics.encode();
        assert!(
            text.contains(r#"http_requests_in_flight{method="GET",route="/orders/{id}"} 0"#),
            "every request that came in went out again:\n{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{method="GET",route="/orders/{id}"} 2"#
            ),
            "{text}"
        );
        // Every bucket is exported, up to +Inf, so PromQL can compute any quantile.
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("http_request_duration_seconds_bucket{"))
            .filter(|l| l.contains(r#"route="/orders/{id}""#))
            .count();
        assert_eq!(buckets, LATENCY_BUCKETS.len() + 1);
    }

    #[test]
    fn a_registered_metric_is_exported_and_recorded_through_its_handle() {
        let metrics = Metrics::new();
        let backlog: prometheus_client::metrics::gauge::Gauge = metrics.register(
            "outbox_backlog",
            "Unpublished outbox rows",
            Default::default(),
        );
        backlog.set(42);
        assert!(metrics.encode().contains("outbox_backlog 42"));
    }
}
