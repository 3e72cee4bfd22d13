//! Drawing: pure functions from the [`Model`] to a frame, one `render_*` per panel.
//! Nothing here reads a clock or the network, so every panel can be drawn into a
//! `TestBackend` and compared with a snapshot.
//!
//! ```text
//! ┌ title: time, refresh, window, keys ─────────────────────────────────────────┐
//! │ Services (health, RSS, CPU)          │ Incidents (key, state, since, where) │
//! │ Orders/s + sparkline │ Payment p50/p95/p99 + sparkline │ Errors and DLQ     │
//! │ Consumer lag per group: total, trend, sparkline, busy partitions │ Outbox,  │
//! │                                                                  │ breakers │
//! │ Event log, newest first                                                      │
//! └──────────────────────────────────────────────────────────────────────────────┘
//! ```

use crate::model::{
    Breaker, Health, INCIDENT_KEYS, Level, Model, ORDER_STATUSES, Percentiles, Series, Trend,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use std::time::Duration;

/// What the screen shows besides the model.
#[derive(Debug, Clone)]
pub struct View {
    pub help: bool,
    pub refresh: Duration,
}

/// The whole screen.
pub fn render(frame: &mut Frame, model: &Model, view: &View) {
    let area = frame.area();
    let services = model.services.len().max(1) as u16 + 3;
    let incidents = model.incidents.len().max(INCIDENT_KEYS.len()) as u16 + 3;
    let lag = model.lag.len().max(1) as u16 + 3;
    let [title, top, middle, queues, log] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(services.max(incidents)),
        Constraint::Length(9),
        Constraint::Length(lag.max(8)),
        Constraint::Min(4),
    ])
    .areas(area);
    render_title(frame, title, model, view);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    render_services(frame, left, model);
    render_incidents(frame, right, model);
    // Phase 4 adds a fourth panel, the gateway.
    type Panel = fn(&mut Frame, Rect, &Model);
    let mut panels: Vec<Panel> = vec![render_orders, render_latency, render_errors];
    if model.gateway.is_some() {
        panels.push(render_gateway);
    }
    if model.chaos.is_some() {
        panels.push(render_chaos);
    }
    let n = panels.len() as u32;
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, n); panels.len()]).split(middle);
    for (panel, area) in panels.into_iter().zip(areas.iter()) {
        panel(frame, *area, model);
    }
    let [lag, outbox] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(queues);
    render_lag(frame, lag, model);
    render_outbox(frame, outbox, model);
    render_log(frame, log, model);
    if view.help {
        render_help(frame, area);
    }
}

fn render_title(frame: &mut Frame, area: Rect, model: &Model, view: &View) {
    let time = model
        .now
        .map_or("waiting for the first poll".to_owned(), |t| {
            t.format("%H:%M:%S UTC").to_string()
        });
    let line = Line::from(vec![
        Span::styled(" FerrisEats ", Style::new().bold().reversed()),
        Span::raw(format!(
            " {time} · refresh {} · latency window {} ",
            humantime::format_duration(view.refresh),
            humantime::format_duration(model.config.window),
        )),
        Span::styled(
            "  1-4 switch an incident · ? help · q quit",
            Style::new().dark_gray(),
        ),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn health_style(health: Health) -> Style {
    match health {
        Health::Up => Style::new().green(),
        Health::NotReady => Style::new().yellow(),
        Health::Down => Style::new().red().bold(),
    }
}

pub fn render_services(frame: &mut Frame, area: Rect, model: &Model) {
    let rows = model.services.iter().map(|s| {
        let since = s.since.format("%H:%M:%S").to_string();
        let detail = match &s.reason {
            // The reason first: it is what matters, and the URL may be cut off.
            Some(reason) => format!("{reason} · {}", s.url),
            None => s.url.clone(),
        };
        Row::new(vec![
            Cell::from(s.name.clone()),
            Cell::from(s.health.label()).style(health_style(s.health)),
            Cell::from(since),
            Cell::from(s.rss_bytes.map_or("–".into(), mib)),
            Cell::from(
                s.cpu_cores
                    .map_or("–".into(), |c| format!("{:.0}%", c * 100.0)),
            ),
            Cell::from(detail),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["target", "state", "since", "RSS", "CPU", "address"]).style(Style::new().bold()),
    )
    .block(Block::bordered().title(" Services "));
    if model.services.is_empty() {
        frame.render_widget(
            Paragraph::new("no poll yet").block(Block::bordered().title(" Services ")),
            area,
        );
    } else {
        frame.render_widget(table, area);
    }
}

pub fn render_incidents(frame: &mut Frame, area: Rect, model: &Model) {
    let key_of = |name: &str| {
        INCIDENT_KEYS
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(" ".into(), |(k, _)| k.to_string())
    };
    let mut rows: Vec<Row> = model
        .incidents
        .iter()
        .map(|i| {
            let (state, style) = if i.active {
                ("ON", Style::new().red().bold())
            } else {
                ("off", Style::new().dark_gray())
            };
            Row::new(vec![
                Cell::from(key_of(&i.name)).style(Style::new().bold()),
                Cell::from(i.name.clone()),
                Cell::from(state).style(style),
                Cell::from(
                    i.since
                        .map_or(String::new(), |t| t.format("%H:%M:%S").to_string()),
                ),
                Cell::from(i.target.clone()),
            ])
        })
        .collect();
    // Keys whose incident no target reported: say so rather than hide the key.
    for (key, name) in INCIDENT_KEYS {
        if model.incident(name).is_none() {
            rows.push(Row::new(vec![
                Cell::from(key.to_string()).style(Style::new().bold()),
                Cell::from(name),
                Cell::from("?").style(Style::new().dark_gray()),
                Cell::from(""),
                Cell::from("no target has it").style(Style::new().dark_gray()),
            ]));
        }
    }
    let active = model.incidents.iter().filter(|i| i.active).count();
    let title = if active == 0 {
        " Incidents: none active ".to_owned()
    } else {
        format!(" Incidents: {active} ACTIVE ")
    };
    let block = Block::bordered().title(title);
    let block = if active > 0 {
        block.border_style(Style::new().red())
    } else {
        block
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Length(21),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["key", "incident", "", "since", "target"]).style(Style::new().bold()))
    .block(block);
    frame.render_widget(table, area);
}

/// The bars of a sparkline, newest on the right, as many as fit in `width`.
fn bars(series: &Series, width: u16) -> Vec<u64> {
    let skip = series.len().saturating_sub(width as usize);
    // Sparkline bars are integers scaled to the largest: keep three decimals.
    series
        .values()
        .skip(skip)
        .map(|v| (v.max(0.0) * 1000.0).round() as u64)
        .collect()
}

fn sparkline_in(frame: &mut Frame, area: Rect, series: &Series, color: Color) {
    let data = bars(series, area.width);
    frame.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(color)),
        area,
    );
}

pub fn render_orders(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" Orders per second ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, spark] = Layout::vertical([Constraint::Length(3), Constraint::Fill(1)]).areas(inner);
    let rate = |s: &str| model.orders.get(s).copied().flatten();
    let headline = Line::from(vec![
        Span::raw("placed "),
        Span::styled(per_second(rate("placed")), Style::new().bold().cyan()),
    ]);
    let others = ORDER_STATUSES[1..]
        .iter()
        .map(|s| format!("{s} {}", per_second(rate(s))))
        .collect::<Vec<_>>();
    let lines = vec![
        headline,
        Line::raw(others[..2].join("  ")),
        Line::raw(others[2..].join("  ")),
    ];
    frame.render_widget(Paragraph::new(lines), text);
    sparkline_in(frame, spark, &model.orders_history, Color::Cyan);
}

pub fn render_latency(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" Payment latency ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, spark] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(inner);
    let window = match model.window_covered {
        Some(s) if s < 9.5 => format!("last {s:.1}s"),
        Some(s) if s + 0.5 < model.config.window.as_secs_f64() => format!("last {s:.0}s"),
        _ => format!("last {}", humantime::format_duration(model.config.window)),
    };
    let row = |label: String, p: Option<Percentiles>, style: Style| match p {
        Some(p) => Line::from(vec![
            Span::raw(format!("{label:<9}")),
            Span::styled(
                format!("{:>8} {:>8} {:>8}", secs(p.p50), secs(p.p95), secs(p.p99)),
                style,
            ),
            Span::raw(format!(" {:>6}", p.count)),
        ]),
        None => Line::raw(format!(
            "{label:<9}{:>8} {:>8} {:>8} {:>6}",
            "–", "–", "–", 0
        )),
    };
    let lines = vec![
        Line::raw(format!(
            "{:<9}{:>8} {:>8} {:>8} {:>6}",
            "", "p50", "p95", "p99", "n"
        ))
        .bold(),
        row(window, model.latency_window, Style::new().bold().yellow()),
        row(
            "lifetime".into(),
            model.latency_lifetime,
            Style::new().dark_gray(),
        ),
        Line::raw("p99 over the window:").dark_gray(),
    ];
    frame.render_widget(Paragraph::new(lines), text);
    sparkline_in(frame, spark, &model.p99_history, Color::Yellow);
}

pub fn render_errors(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" Errors and dead letters ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, spark] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(inner);
    let e = &model.errors;
    let bad = |v: Option<f64>| {
        if v.is_some_and(|v| v > 0.0) {
            Style::new().red().bold()
        } else {
            Style::new()
        }
    };
    let lines = vec![
        Line::from(vec![
            Span::raw("HTTP 5xx      "),
            Span::styled(per_second(e.http_5xx), bad(e.http_5xx)),
            Span::raw(format!("  of {}", per_second(e.http_all))),
        ]),
        Line::from(vec![
            Span::raw("failed events "),
            Span::styled(per_second(e.events_failed), bad(e.events_failed)),
        ]),
        Line::from(vec![
            Span::raw("to DLQ        "),
            Span::styled(per_second(e.dlq), bad(e.dlq)),
            Span::raw(format!(
                "  depth {}",
                e.dlq_depth.map_or("–".into(), |d| format!("{d}"))
            )),
        ]),
        Line::raw("5xx/s:").dark_gray(),
    ];
    frame.render_widget(Paragraph::new(lines), text);
    sparkline_in(frame, spark, &e.history_5xx, Color::Red);
}

/// Phase 4's gateway: offered and admitted rate, what it refused and why, whether
/// admission control sheds new orders, and each order API replica.
/// Phase 4's supervisor and a running chaos scenario: the faults now, the run's
/// orders, each process and its restarts.
pub fn render_chaos(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" Chaos ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(c) = &model.chaos else {
        return;
    };
    let count = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
    let mut lines = vec![
        if c.faults.is_empty() {
            Line::from(Span::styled("no fault now", Style::new().green()))
        } else {
            Line::from(Span::styled(c.faults.join(", "), Style::new().red().bold()))
        },
        Line::from(format!(
            "orders {} final {} under way {} · lag {}",
            count(c.accepted),
            count(c.final_orders),
            count(c.in_flight),
            count(c.lag)
        )),
    ];
    for (process, up, restarts) in &c.processes {
        let style = if *up {
            Style::new()
        } else {
            Style::new().red().bold()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{process:<13}"), style),
            Span::styled(if *up { "up " } else { "DOWN" }, style),
            Span::raw(if *restarts > 0.0 {
                format!(" ↻{restarts:.0}")
            } else {
                String::new()
            }),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

pub fn render_gateway(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" Gateway ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(g) = &model.gateway else {
        return;
    };
    let warn = |v: Option<f64>| {
        if v.is_some_and(|v| v > 0.0) {
            Style::new().yellow().bold()
        } else {
            Style::new()
        }
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("offered  "),
            Span::raw(per_second(g.offered)),
            Span::raw("  admitted "),
            Span::raw(per_second(g.admitted)),
        ]),
        Line::from(vec![
            Span::raw("401 "),
            Span::styled(per_second(g.unauthorized), warn(g.unauthorized)),
            Span::raw("  429 "),
            Span::styled(per_second(g.rate_limited), warn(g.rate_limited)),
            Span::raw("  503 "),
            Span::styled(per_second(g.shed), warn(g.shed)),
        ]),
        match g.admitting_orders {
            Some(false) => Line::from(Span::styled(
                format!(
                    "shedding new orders (pipeline full: {} under way)",
                    g.order_limit.map_or("–".into(), |v| format!("{v}"))
                ),
                Style::new().red().bold(),
            )),
            Some(true) => Line::from(format!(
                "admitting orders (≤ {} under way); in flight {}",
                g.order_limit.map_or("–".into(), |v| format!("{v}")),
                g.in_flight.map_or("–".into(), |v| format!("{v}"))
            )),
            None => Line::raw("admission control off").dark_gray(),
        },
    ];
    for (upstream, up, breaker) in &g.upstreams {
        let name = upstream.trim_start_matches("http://");
        let style = if !up || *breaker != Breaker::Closed {
            Style::new().red().bold()
        } else {
            Style::new().green()
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{name:<16}")),
            Span::styled(
                format!("{} {}", if *up { "up" } else { "OUT" }, breaker.label()),
                style,
            ),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The namespace every group shares (`t0195….`), left out on screen.
pub fn common_prefix<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    if names.len() < 2 {
        return String::new();
    }
    let first = names[0];
    let mut end = 0;
    for (i, c) in first.char_indices() {
        let upto = &first[..i + c.len_utf8()];
        if !names.iter().all(|n| n.starts_with(upto)) {
            break;
        }
        if c == '.' {
            end = i + 1;
        }
    }
    first[..end].to_owned()
}

pub fn render_lag(frame: &mut Frame, area: Rect, model: &Model) {
    let prefix = common_prefix(model.lag.keys());
    let total = model.lag.values().fold(0.0, |sum, g| sum + g.total);
    let block = Block::bordered().title(format!(" Consumer lag (total {total}) "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if model.lag.is_empty() {
        frame.render_widget(
            Paragraph::new("no lag reported (is an ops server up?)"),
            inner,
        );
        return;
    }
    let rows_area = Layout::vertical(
        std::iter::once(Constraint::Length(1))
            .chain(model.lag.iter().map(|_| Constraint::Length(1))),
    )
    .split(inner);
    let columns = |row: Rect| -> [Rect; 5] {
        Layout::horizontal([
            Constraint::Length(28),
            Constraint::Length(7),
            Constraint::Length(2),
            Constraint::Length(14),
            Constraint::Fill(1),
        ])
        .spacing(1)
        .areas(row)
    };
    let header = columns(rows_area[0]);
    for (area, text) in header
        .iter()
        .zip(["group", "lag", "", "trend", "partitions behind"])
    {
        frame.render_widget(Paragraph::new(text).bold(), *area);
    }
    for ((group, lag), row) in model.lag.iter().zip(rows_area.iter().skip(1)) {
        let [name, value, arrow, spark, parts] = columns(*row);
        let hot = lag.total > model.config.lag_threshold;
        let style = if hot {
            Style::new().red().bold()
        } else {
            Style::new()
        };
        let short = group.strip_prefix(&prefix).unwrap_or(group);
        frame.render_widget(Paragraph::new(short.to_owned()), name);
        frame.render_widget(
            Paragraph::new(format!("{:>7}", lag.total)).style(style),
            value,
        );
        let arrow_style = match lag.trend {
            Trend::Up => Style::new().red().bold(),
            Trend::Down => Style::new().green(),
            Trend::Flat => Style::new().dark_gray(),
        };
        frame.render_widget(Paragraph::new(lag.trend.arrow()).style(arrow_style), arrow);
        sparkline_in(
            frame,
            spark,
            &lag.history,
            if hot { Color::Red } else { Color::Blue },
        );
        let behind: Vec<String> = lag
            .partitions
            .iter()
            .filter(|p| p.lag > 0.0)
            .map(|p| {
                let topic = p.topic.strip_prefix(&prefix).unwrap_or(&p.topic);
                format!("{topic}/{} {}", p.partition, p.lag)
            })
            .collect();
        let text = if behind.is_empty() {
            format!("{} partitions, none behind", lag.partitions.len())
        } else {
            behind.join(", ")
        };
        frame.render_widget(Paragraph::new(text).style(Style::new().dark_gray()), parts);
    }
}

pub fn render_outbox(frame: &mut Frame, area: Rect, model: &Model) {
    let mut lines =
        vec![Line::raw(format!("{:<12}{:>8}{:>12}", "outbox", "backlog", "oldest")).bold()];
    if model.outboxes.is_empty() {
        lines.push(Line::raw("no outbox reported").dark_gray());
    }
    for o in &model.outboxes {
        let old = o.oldest_age_seconds.is_some_and(|a| a > 10.0);
        lines.push(Line::from(vec![
            Span::raw(format!("{:<12}{:>8}", o.database, o.backlog)),
            Span::styled(
                format!("{:>12}", o.oldest_age_seconds.map_or("–".into(), secs)),
                if old {
                    Style::new().red().bold()
                } else {
                    Style::new()
                },
            ),
        ]));
    }
    lines.push(Line::raw("circuit breakers").bold());
    if model.breakers.is_empty() {
        lines.push(Line::raw("none reported a change (closed)").dark_gray());
    }
    for (name, state) in &model.breakers {
        let style = match state {
            Breaker::Closed => Style::new().green(),
            Breaker::HalfOpen => Style::new().yellow(),
            Breaker::Open => Style::new().red().bold(),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{name:<20}")),
            Span::styled(state.label(), style),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Outbox and breakers ")),
        area,
    );
}

pub fn render_log(frame: &mut Frame, area: Rect, model: &Model) {
    let lines: Vec<Line> = model
        .log
        .iter()
        .rev()
        .take(area.height.saturating_sub(2) as usize)
        .map(|e| {
            let style = match e.level {
                Level::Info => Style::new(),
                Level::Good => Style::new().green(),
                Level::Bad => Style::new().red(),
            };
            Line::from(vec![
                Span::styled(
                    e.at.format("%H:%M:%S ").to_string(),
                    Style::new().dark_gray(),
                ),
                Span::styled(e.text.clone(), style),
            ])
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::raw("nothing happened yet").dark_gray()]
    } else {
        lines
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Events (newest first) ")),
        area,
    );
}

/// The keys, in a box over the middle of the screen.
pub fn render_help(frame: &mut Frame, area: Rect) {
    let mut lines = vec![Line::raw("")];
    for (key, name) in INCIDENT_KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {key:<8}"), Style::new().bold()),
            Span::raw(format!("switch {name} on/off")),
        ]));
    }
    for (key, what) in [
        ("? h", "show / hide this help"),
        ("q Esc", "quit (Ctrl-C too)"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("  {key:<8}"), Style::new().bold()),
            Span::raw(what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(
        Line::raw("  A switch is a PUT/DELETE on /admin/incidents of the target that has it.")
            .dark_gray(),
    );
    let [area] = Layout::horizontal([Constraint::Length(78)])
        .flex(Flex::Center)
        .areas(area);
    let [area] = Layout::vertical([Constraint::Length(lines.len() as u16 + 2)])
        .flex(Flex::Center)
        .areas(area);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" Keys ")
                .border_style(Style::new().add_modifier(Modifier::BOLD)),
        ),
        area,
    );
}

/// `3.2/s`, or `–` when there is no rate yet.
pub fn per_second(rate: Option<f64>) -> String {
    match rate {
        None => "–".into(),
        Some(r) if r != 0.0 && r.abs() < 0.1 => format!("{r:.2}/s"),
        Some(r) => format!("{r:.1}/s"),
    }
}

/// `850ms`, `4.60s`.
pub fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else {
        format!("{s:.2}s")
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{down, snap, up};
    use crate::model::{Model, ModelConfig};
    use insta::assert_snapshot;
    use phase3_observability::incidents::Status;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// A system mid-incident: two scrapes 10 s apart, payment slowed down, the
    /// notification group falling behind, the order API down.
    pub fn busy_model() -> Model {
        let mut model = Model::new(ModelConfig::default());
        let metrics = |i: u64| {
            let mut text = format!(
                "orders_total{{status=\"placed\"}} {}\n\
                 orders_total{{status=\"paid\"}} {}\n\
                 orders_total{{status=\"cancelled\"}} {}\n\
                 http_requests_total{{method=\"POST\",route=\"/orders\",status=\"202\"}} {}\n\
                 http_requests_total{{method=\"GET\",route=\"/orders/{{id}}\",status=\"500\"}} {}\n\
                 events_failed_total{{consumer=\"payment\",topic=\"orders\",kind=\"transient\"}} {}\n\
                 dlq_messages_total{{consumer=\"payment\",topic=\"orders\",reason=\"permanent\"}} {}\n\
                 dlq_depth{{topic=\"orders.dlq\"}} 2\n\
                 kafka_consumer_lag{{group=\"ns.notification-service\",topic=\"ns.orders\",partition=\"0\"}} {}\n\
                 kafka_consumer_lag{{group=\"ns.notification-service\",topic=\"ns.orders\",partition=\"1\"}} {}\n\
                 kafka_consumer_lag{{group=\"ns.payment-service\",topic=\"ns.orders\",partition=\"0\"}} 0\n\
                 kafka_consumer_lag{{group=\"ns.payment-service\",topic=\"ns.orders\",partition=\"1\"}} 0\n\
                 outbox_backlog{{database=\"order\"}} 4\n\
                 outbox_oldest_age_seconds{{database=\"order\"}} 0.4\n\
                 outbox_backlog{{database=\"payment\"}} 0\n\
                 circuit_breaker_state{{name=\"payment-provider\"}} {}\n\
                 process_resident_memory_bytes 157286400\n\
                 process_cpu_seconds_total {}\n",
                100 + 30 * i,
                95 + 25 * i,
                2 * i,
                100 + 30 * i,
                i,
                3 * i,
                i,
                20 * i * i,
                15 * i * i,
                u8::from(i > 3),
                5 * i,
            );
            let slow = if i > 1 { 5 * i } else { 0 };
            let fast = 95 + 20 * i;
            for (le, n) in [
                ("0.1", fast),
                ("0.5", fast),
                ("1", fast),
                ("2", fast + slow / 2),
                ("5", fast + slow),
                ("+Inf", fast + slow),
            ] {
                text += &format!(
                    "payment_duration_seconds_bucket{{le=\"{le}\",outcome=\"captured\"}} {n}\n"
                );
            }
            text += &format!(
                "payment_duration_seconds_count{{outcome=\"captured\"}} {}\n",
                fast + slow
            );
            text
        };
        let incidents = |on: bool| {
            let mut list = vec![];
            for (_, name) in INCIDENT_KEYS {
                let active = on && name == "payment-slowdown";
                list.push(Status {
                    name: name.into(),
                    active,
                    description: String::new(),
                    since: active.then(|| crate::model::tests::t(20)),
                });
            }
            list
        };
        for i in 0..6u64 {
            let mut all = up("all", &metrics(i));
            all.incidents = Some(incidents(i >= 2));
            let api = if i >= 4 {
                down("order-api")
            } else {
                up("order-api", "")
            };
            let api = crate::poll::TargetPoll {
                metrics: None,
                ..api
            };
            model.apply(&snap(
                10 * i as i64,
                vec![all, api, {
                    let mut n = up("notification-api", "");
                    n.metrics = None;
                    n
                }],
            ));
        }
        model
    }

    fn draw(width: u16, height: u16, f: impl Fn(&mut Frame)) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| f(frame)).unwrap();
        terminal
    }

    fn view() -> View {
        View {
            help: false,
            refresh: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_whole_dashboard_at_160_by_50() {
        let model = busy_model();
        let terminal = draw(160, 50, |f| render(f, &model, &view()));
        assert_snapshot!(terminal.backend());
    }

    #[test]
    fn phase_4_adds_the_gateway_panel() {
        let mut model = busy_model();
        model.gateway = Some(crate::model::GatewayView {
            offered: Some(512.0),
            admitted: Some(401.5),
            unauthorized: Some(0.0),
            rate_limited: Some(3.0),
            shed: Some(107.5),
            in_flight: Some(38.0),
            admitting_orders: Some(false),
            order_limit: Some(64.0),
            upstreams: vec![
                ("http://127.0.0.1:3100".into(), true, Breaker::Closed),
                ("http://127.0.0.1:3101".into(), false, Breaker::Open),
            ],
        });
        let terminal = draw(160, 50, |f| render(f, &model, &view()));
        let screen = terminal.backend().to_string();
        for text in [
            " Gateway ",
            "shedding new orders",
            "127.0.0.1:3101  OUT open",
            "127.0.0.1:3100  up closed",
        ] {
            assert!(screen.contains(text), "{text}: {screen}");
        }
    }

    #[test]
    fn the_help_overlay_lists_every_key() {
        let model = busy_model();
        let terminal = draw(120, 40, |f| {
            render(
                f,
                &model,
                &View {
                    help: true,
                    ..view()
                },
            )
        });
        let screen = terminal.backend().to_string();
        for key in ["1", "2", "3", "4", "? h", "q Esc"] {
            assert!(screen.contains(&format!("  {key} ")), "{key}: {screen}");
        }
        assert_snapshot!(terminal.backend());
    }

    #[test]
    fn before_the_first_poll_every_panel_says_it_has_nothing() {
        let model = Model::new(ModelConfig::default());
        let terminal = draw(120, 36, |f| render(f, &model, &view()));
        assert_snapshot!(terminal.backend());
    }

    #[test]
    fn each_panel_on_its_own() {
        let model = busy_model();
        type Panel = fn(&mut Frame, Rect, &Model);
        let panels: [(&str, u16, u16, Panel); 8] = [
            ("services", 90, 6, render_services),
            ("incidents", 70, 7, render_incidents),
            ("orders", 50, 9, render_orders),
            ("latency", 50, 9, render_latency),
            ("errors", 50, 9, render_errors),
            ("lag", 100, 5, render_lag),
            ("outbox", 50, 8, render_outbox),
            ("log", 90, 12, render_log),
        ];
        for (name, w, h, f) in panels {
            let terminal = draw(w, h, |frame| f(frame, frame.area(), &model));
            insta::assert_snapshot!(format!("panel_{name}"), terminal.backend());
        }
    }

    #[test]
    fn numbers_are_formatted_for_reading_at_a_glance() {
        assert_eq!(per_second(None), "–");
        assert_eq!(per_second(Some(0.0)), "0.0/s");
        assert_eq!(per_second(Some(0.05)), "0.05/s");
        assert_eq!(per_second(Some(12.34)), "12.3/s");
        assert_eq!(secs(0.0456), "46ms");
        assert_eq!(secs(4.6), "4.60s");
        assert_eq!(
            common_prefix(["ns.a".to_string(), "ns.b.retry".to_string()].iter()),
            "ns."
        );
        assert_eq!(
            common_prefix(["a".to_string(), "a.retry".to_string()].iter()),
            ""
        );
    }
}
