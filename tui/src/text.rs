//! `--once`: the model as plain text, one section per panel, no colours and no
//! terminal needed — for scripts, CI logs and the book.

use crate::model::{INCIDENT_KEYS, Model, ORDER_STATUSES, Percentiles};
use crate::ui::{per_second, secs};
use std::fmt::Write;

/// Every panel, in screen order.
pub fn render(model: &Model) -> String {
    let mut out = String::new();
    let time = model.now.map_or("no poll".to_owned(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    });
    let _ = writeln!(out, "FerrisEats dashboard — {time}");
    for section in [
        services(model),
        incidents(model),
        orders(model),
        latency(model),
        errors(model),
        lag(model),
        outbox(model),
        events(model),
    ] {
        out.push('\n');
        out.push_str(&section);
    }
    out
}

pub fn services(model: &Model) -> String {
    let mut out = String::from("SERVICES\n");
    for s in &model.services {
        let _ = write!(
            out,
            "  {:<18} {:<9} since {}",
            s.name,
            s.health.label(),
            s.since.format("%H:%M:%S")
        );
        if let Some(rss) = s.rss_bytes {
            let _ = write!(out, "  rss {:.0} MiB", rss / (1024.0 * 1024.0));
        }
        if let Some(cpu) = s.cpu_cores {
            let _ = write!(out, "  cpu {:.0}%", cpu * 100.0);
        }
        let _ = write!(out, "  {}", s.url);
        if let Some(reason) = &s.reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
    }
    out
}

pub fn incidents(model: &Model) -> String {
    let mut out = String::from("INCIDENTS\n");
    for (key, name) in INCIDENT_KEYS {
        match model.incident(name) {
            Some(i) => {
                let state = if i.active { "ON " } else { "off" };
                let since = i.since.map_or(String::new(), |t| {
                    format!(" since {}", t.format("%H:%M:%S"))
                });
                let _ = writeln!(out, "  [{key}] {state} {name:<22} on {}{since}", i.target);
            }
            None => {
                let _ = writeln!(out, "  [{key}] ?   {name:<22} (no target has it)");
            }
        }
    }
    for i in model
        .incidents
        .iter()
        .filter(|i| !INCIDENT_KEYS.iter().any(|(_, n)| *n == i.name))
    {
        let state = if i.active { "ON " } else { "off" };
        let _ = writeln!(out, "      {state} {:<22} on {}", i.name, i.target);
    }
    out
}

pub fn orders(model: &Model) -> String {
    let mut out = String::from("ORDERS PER SECOND\n ");
    for status in ORDER_STATUSES {
        let rate = model.orders.get(status).copied().flatten();
        let _ = write!(out, " {status} {}", per_second(rate));
    }
    out.push('\n');
    out
}

pub fn latency(model: &Model) -> String {
    let mut out = String::from("PAYMENT LATENCY\n");
    let line = |label: &str, p: Option<Percentiles>| match p {
        Some(p) => format!(
            "  {label:<14} p50 {:>7}  p95 {:>7}  p99 {:>7}  (n={})\n",
            secs(p.p50),
            secs(p.p95),
            secs(p.p99),
            p.count
        ),
        None => format!("  {label:<14} no payments\n"),
    };
    let covered = model
        .window_covered
        .map_or("window".to_owned(), |s| format!("last {s:.1}s"));
    out += &line(&covered, model.latency_window);
    out += &line("lifetime", model.latency_lifetime);
    out
}

pub fn errors(model: &Model) -> String {
    let e = &model.errors;
    format!(
        "ERRORS AND DEAD LETTERS\n  http 5xx {} of {}  failed events {}  to dlq {}  dlq depth {}\n",
        per_second(e.http_5xx),
        per_second(e.http_all),
        per_second(e.events_failed),
        per_second(e.dlq),
        e.dlq_depth.map_or("–".into(), |d| d.to_string()),
    )
}

pub fn lag(model: &Model) -> String {
    let mut out = String::from("CONSUMER LAG\n");
    if model.lag.is_empty() {
        out += "  none reported\n";
    }
    // The namespace every group shares is said once, not on every line.
    let prefix = crate::ui::common_prefix(model.lag.keys());
    if !prefix.is_empty() {
        let _ = writeln!(out, "  (groups and topics of namespace {prefix:?})");
    }
    let strip = |s: &str| s.strip_prefix(&prefix).unwrap_or(s).to_owned();
    for (group, lag) in &model.lag {
        let behind: Vec<String> = lag
            .partitions
            .iter()
            .filter(|p| p.lag > 0.0)
            .map(|p| format!("{}/{}={}", strip(&p.topic), p.partition, p.lag))
            .collect();
        let _ = writeln!(
            out,
            "  {:<28} {:>7} {}  {}",
            strip(group),
            lag.total,
            lag.trend.arrow(),
            if behind.is_empty() {
                format!("{} partitions, none behind", lag.partitions.len())
            } else {
                behind.join(" ")
            }
        );
    }
    out
}

pub fn outbox(model: &Model) -> String {
    let mut out = String::from("OUTBOX\n");
    if model.outboxes.is_empty() {
        out += "  none reported\n";
    }
    for o in &model.outboxes {
        let _ = writeln!(
            out,
            "  {:<12} backlog {:>6}  oldest {}",
            o.database,
            o.backlog,
            o.oldest_age_seconds.map_or("–".into(), secs)
        );
    }
    out += "\nCIRCUIT BREAKERS\n";
    if model.breakers.is_empty() {
        out += "  none reported a change (closed)\n";
    }
    for (name, state) in &model.breakers {
        let _ = writeln!(out, "  {name:<20} {}", state.label());
    }
    if let Some(g) = &model.gateway {
        let rate = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}/s"));
        let limit = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        out += "\nGATEWAY\n";
        let _ = writeln!(
            out,
            "  offered {}  admitted {}  401 {}  429 {}  503 {}",
            rate(g.offered),
            rate(g.admitted),
            rate(g.unauthorized),
            rate(g.rate_limited),
            rate(g.shed)
        );
        let _ = writeln!(
            out,
            "  {}",
            match g.admitting_orders {
                Some(true) => format!(
                    "admitting new orders (up to {} under way)",
                    limit(g.order_limit)
                ),
                Some(false) => format!(
                    "shedding new orders (the pipeline is full: {} under way)",
                    limit(g.order_limit)
                ),
                None => "admission control off".to_owned(),
            }
        );
        for (upstream, up, breaker) in &g.upstreams {
            let _ = writeln!(
                out,
                "  {upstream:<24} {}  breaker {}",
                if *up {
                    "in the rotation"
                } else {
                    "OUT of the rotation"
                },
                breaker.label()
            );
        }
    }
    if let Some(c) = &model.chaos {
        let count = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        out += "\nCHAOS\n";
        let _ = writeln!(
            out,
            "  faults now: {}",
            if c.faults.is_empty() {
                "none".to_owned()
            } else {
                c.faults.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  orders: accepted {}  final {}  under way {}  consumer lag {}",
            count(c.accepted),
            count(c.final_orders),
            count(c.in_flight),
            count(c.lag)
        );
        for (process, up, restarts) in &c.processes {
            let _ = writeln!(
                out,
                "  {process:<14} {}  restarts {restarts:.0}",
                if *up { "running" } else { "DOWN" }
            );
        }
    }
    out
}

pub fn events(model: &Model) -> String {
    let mut out = String::from("EVENTS\n");
    if model.log.is_empty() {
        out += "  nothing happened yet\n";
    }
    for e in &model.log {
        let _ = writeln!(out, "  {} {}", e.at.format("%H:%M:%S"), e.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::model::tests::{down, snap, up};

    #[test]
    fn once_output_shows_a_dead_service_as_down() {
        let mut model = Model::new(ModelConfig::default());
        model.apply(&snap(
            0,
            vec![
                up("all", "orders_total{status=\"placed\"} 1\n"),
                down("order-api"),
            ],
        ));
        model.apply(&snap(
            1,
            vec![
                up("all", "orders_total{status=\"placed\"} 3\n"),
                down("order-api"),
            ],
        ));
        let text = render(&model);
        insta::assert_snapshot!(text);
        assert!(text.contains("order-api          down"), "{text}");
        assert!(text.contains("placed 2.0/s"), "{text}");
    }
}
