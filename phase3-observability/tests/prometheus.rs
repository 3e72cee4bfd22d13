//! The monitoring set-up in `deploy/`, checked without a running Prometheus or
//! Grafana:
//!
//! * `promtool check config` / `check rules` accept prometheus.yml (and its compose
//!   variant) and alerts.yml;
//! * `promtool test rules alerts.test.yml` passes: every alert fires on the
//!   synthetic series meant to trigger it (and stays quiet on the healthy ones);
//! * every alert has a severity, a summary, a description and a runbook that
//!   exists in the docs, and is expected to fire by at least one unit test;
//! * the Grafana dashboard is valid JSON on the provisioned data source, and every
//!   query in it — and in the alerts — names only metrics the services export
//!   ([`METRICS`], the metric contract of phase 3): a renamed metric breaks this
//!   test, not the dashboard in the middle of a workshop.
//!
//! promtool comes with Prometheus (Debian package `prometheus`); `cargo xtask test`
//! installs it and exports `PROMTOOL`. Without it these tests fail, never skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_serde::Value;

/// Every metric name a query may use, as exposed on /metrics (prometheus-client,
/// OpenMetrics: counters end in `_total`). Histograms are listed by their base
/// name; their `_bucket`, `_sum` and `_count` series are allowed.
const METRICS: &[&str] = &[
    // HTTP (every service with an API)
    "http_requests_total",
    "http_request_duration_seconds",
    "http_requests_in_flight",
    // Business
    "orders_total",
    "payment_duration_seconds",
    // Events
    "events_processed_total",
    "event_processing_duration_seconds",
    "events_failed_total",
    "dlq_messages_total",
    "dlq_depth",
    "kafka_consumer_lag",
    "kafka_consumer_committed_offset",
    "kafka_topic_high_watermark",
    // Outbox and relay
    "outbox_backlog",
    "outbox_oldest_age_seconds",
    "relay_published_total",
    // The payment worker's queue
    "payments_due",
    "payments_oldest_due_age_seconds",
    // Resilience
    "circuit_breaker_state",
    // Process
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_threads",
    "process_start_time_seconds",
    // Planned incidents
    "incident_active",
    // Added by Prometheus itself for every target.
    "up",
];

const HISTOGRAMS: &[&str] = &[
    "http_request_duration_seconds",
    "payment_duration_seconds",
    "event_processing_duration_seconds",
];

/// The incidents `incident_active{incident}` reports (each has a runbook).
const INCIDENTS: &[&str] = &[
    "payment-slowdown",
    "notification-backlog",
    "memory-leak",
    "cpu-hot-path",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn prometheus_dir() -> PathBuf {
    crate_dir().join("deploy/prometheus")
}

fn repo_root() -> PathBuf {
    crate_dir()
        .parent()
        .expect("the crate lives one level below the repository root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn yaml(path: &Path) -> Value {
    yaml_serde::from_str(&read(path))
        .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()))
}

/// `$PROMTOOL`, else `promtool` on `$PATH`; fails the test when there is none.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PROMTOOL={} does not exist: install the Debian `prometheus` package, or run \
             `cargo xtask up --observability`",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: install the Debian `prometheus` package, or run \
                 `cargo xtask up --observability`"
            )
        })
}

/// Runs `promtool ARGS…` in deploy/prometheus and fails with its output on error.
fn run_promtool(args: &[&str]) -> String {
    let promtool = promtool();
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`promtool {}` failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn promtool_accepts_the_prometheus_configs() {
    for config in ["prometheus.yml", "prometheus.compose.yml"] {
        let out = run_promtool(&["check", "config", config]);
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let out = run_promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    let out = run_promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn both_configs_scrape_every_metrics_port_with_a_service_label() {
    let expected: BTreeSet<(u16, &str)> = [
        (9400, "all"),
        (9401, "order"),
        (9402, "payment"),
        (9403, "inventory"),
        (9404, "notification"),
        (9405, "delivery"),
        (9406, "relay"),
    ]
    .into();
    for (file, host) in [
        ("prometheus.yml", "127.0.0.1"),
        ("prometheus.compose.yml", "host.docker.internal"),
    ] {
        let config = yaml(&prometheus_dir().join(file));
        let job = config["scrape_configs"]
            .as_sequence()
            .expect("scrape_configs")
            .iter()
            .find(|job| job["job_name"].as_str() == Some("ferriseats"))
            .unwrap_or_else(|| panic!("{file}: no job `ferriseats`"));
        let mut found = BTreeSet::new();
        for group in job["static_configs"].as_sequence().expect("static_configs") {
            let service = group["labels"]["service"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a target group without a service label"));
            for target in group["targets"].as_sequence().expect("targets") {
                let target = target.as_str().expect("a target is host:port");
                let (h, port) = target.rsplit_once(':').expect("host:port");
                assert_eq!(h, host, "{file}: {target}");
                let port: u16 = port.parse().expect("a port");
                let known = expected
                    .iter()
                    .find(|(p, _)| *p == port)
                    .unwrap_or_else(|| panic!("{file}: unexpected target {target}"));
                found.insert(*known);
                assert_eq!(known.1, service, "{file}: {target}");
            }
        }
        assert_eq!(found, expected, "{file}: the targets");
    }
}

/// Every rule of alerts.yml, as a YAML mapping.
fn alert_rules() -> Vec<Value> {
    let rules = yaml(&prometheus_dir().join("alerts.yml"));
    rules["groups"]
        .as_sequence()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|group| {
            group["rules"]
                .as_sequence()
                .expect("a group has rules")
                .clone()
        })
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

#[test]
fn every_alert_is_documented_and_has_a_runbook() {
    let rules = alert_rules();
    assert!(
        rules.len() >= 7,
        "expected the seven alerts, got {}",
        rules.len()
    );
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(rule.get("for").is_some(), "{name}: no `for:`");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity is {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name}: no annotations.{key}"
            );
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap();
        // The runbook of IncidentSwitchedOn is the incident's own: one per incident.
        let runbooks: Vec<String> = if runbook.contains("{{ $labels.incident }}") {
            INCIDENTS
                .iter()
                .map(|incident| runbook.replace("{{ $labels.incident }}", incident))
                .collect()
        } else {
            vec![runbook.to_owned()]
        };
        for runbook in runbooks {
            assert!(
                runbook.starts_with("docs/src/phase3/runbooks/") && runbook.ends_with(".md"),
                "{name}: runbook {runbook} is not a page of docs/src/phase3/runbooks/"
            );
            let page = repo_root().join(&runbook);
            assert!(
                page.is_file(),
                "{name}: runbook {} does not exist",
                page.display()
            );
        }
    }
}

#[test]
fn every_alert_is_expected_to_fire_by_a_unit_test() {
    let tests = yaml(&prometheus_dir().join("alerts.test.yml"));
    let mut fired = BTreeSet::new();
    for test in tests["tests"]
        .as_sequence()
        .expect("alerts.test.yml has tests")
    {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(case["alertname"].as_str().expect("alertname").to_owned());
            }
        }
    }
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            fired.contains(name),
            "alert {name} is never expected to fire in alerts.test.yml"
        );
    }
}

/// The metric names a PromQL expression uses: every identifier that is not a
/// function (followed by `(`), a keyword, a label name (inside `{…}` or a
/// `by (…)` / `without (…)` / `on (…)` / `ignoring (…)` / `group_left (…)` list),
/// a string, a range (`[1m]`) or a number.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        // Aggregation operators may be followed by `by (…)` instead of `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Strings, label matchers, ranges and Grafana variables out first.
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '{' => {
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
                cleaned.push(' ');
            }
            _ => cleaned.push(c),
        }
    }
    let bytes: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            // Exponents of numbers such as 1e6.
            if start > 0 && bytes[start - 1].is_ascii_digit() {
                continue;
            }
            let mut j = i;
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            let call = bytes.get(j) == Some(&'(');
            if LABEL_LISTS.contains(&word.to_lowercase().as_str()) {
                skip_list = call;
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else if c == '(' && skip_list {
            // Skip the label list.
            while i < bytes.len() && bytes[i] != ')' {
                i += 1;
            }
            skip_list = false;
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

fn allowed(name: &str) -> bool {
    METRICS.contains(&name)
        || HISTOGRAMS.iter().any(|base| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name == format!("{base}{suffix}"))
        })
}

#[test]
fn the_metric_name_extraction_works() {
    let names = metric_names(
        r#"sum by (instance, service) (rate(process_cpu_seconds_total{job="x", le="1e6"}[1m]))
             / on (instance) group_left (route) (sum(rate(http_requests_total[5m])) > 5) > 1e6
           and max by (le) (incident_active offset 5m) == bool 1"#,
    );
    assert_eq!(
        names,
        [
            "http_requests_total",
            "incident_active",
            "process_cpu_seconds_total"
        ]
        .map(str::to_owned)
        .into()
    );
}

#[test]
fn the_alerts_use_only_exported_metrics() {
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().expect("expr");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{name}: no metric found in {expr}");
        for metric in names {
            assert!(
                allowed(&metric),
                "{name}: `{metric}` is not an exported metric"
            );
        }
    }
}

/// Every panel of a dashboard, including those nested in collapsed rows.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
        .clone();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner.iter().cloned());
        }
        out.push(panel);
    }
    out
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = crate_dir().join("deploy/grafana/dashboards/ferriseats.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|err| panic!("{} is not valid JSON: {err}", path.display()));
    assert_eq!(dashboard["uid"], "ferriseats");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let mut queries = 0;
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "panel {title:?}: duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "panel {title:?}: data source"
        );
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {title:?}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a query has an expr");
            queries += 1;
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title:?}: no metric in {expr}");
            for metric in names {
                assert!(
                    allowed(&metric),
                    "panel {title:?}: `{metric}` is not an exported metric ({expr})"
                );
                used.insert(metric);
            }
        }
    }
    assert!(queries >= 13, "only {queries} queries");
    // The panels the dashboard promises.
    for metric in [
        "orders_total",
        "payment_duration_seconds_bucket",
        "http_request_duration_seconds_bucket",
        "http_requests_total",
        "events_processed_total",
        "dlq_messages_total",
        "kafka_consumer_lag",
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "circuit_breaker_state",
        "http_requests_in_flight",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "incident_active",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn grafana_is_provisioned_with_the_dashboards_data_source() {
    let grafana = crate_dir().join("deploy/grafana/provisioning");
    let datasources = yaml(&grafana.join("datasources/prometheus.yml"));
    let source = &datasources["datasources"][0];
    assert_eq!(source["uid"].as_str(), Some("prometheus"));
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let providers = yaml(&grafana.join("dashboards/dashboards.yml"));
    assert_eq!(
        providers["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}
