//! The verdict of a chaos run: what clients were told ([`Placement`]s, the load's
//! seconds) against what the books hold ([`phase2_events::books`]), the supervisor's
//! restarts and the fault schedule. Jepsen's lesson, small: a claim is checked
//! against the history, not believed.
//!
//! | rule | holds when |
//! |---|---|
//! | steady state before | before the first fault, errors (not the deliberate 429/503) ≤ 0.1 % and p99 within the SLO in at least 90 % of the seconds — otherwise the run says so and is not judged (exit 2) |
//! | nothing lost | every order a client was told was accepted (2xx) is final |
//! | at most once | no idempotency key stored twice — in particular the "maybe"s, requests answered 5xx or not at all, exist at most once |
//! | the books agree | phase 2's rules: one charge per order, no refund without a charge, stock = reservations, each notification once, outboxes drained |
//! | recovered | after each fault, five seconds in a row with goodput (their mean: admission control makes single seconds noisy) ≥ 95 % of the steady state's and p99 within the SLO in each, within the recovery target |
//! | lag back to its baseline | after each fault, the consumer groups' total lag back within the steady state's (at most twice its highest, plus 20), within the recovery target |
//! | no cascade | no process the faults did not hit restarted; reads kept their SLO while a service they do not use was down |
//! | retries within budget | from each fault to the recovery target after it, provider calls beyond one per charge ≤ 20 % of the charges, and events through the retry topics ≤ 20 % of the events published |
//! | absorbed | (faults the platform is built to absorb: a broker node of three) the orders accepted while it lasted all finished, 99 % of them within the recovery target |

use super::Fault;
use super::watch::{Finishing, Retries, Sample};
use crate::load::run::{Class, LoadReport, Second};
use common::domain::OrderId;
use phase2_events::books::Report;
use serde::Serialize;
use std::collections::BTreeMap;

/// Good seconds in a row that count as recovered.
const RECOVERED_AFTER: usize = 5;
/// A good second's goodput, against the steady state's.
const GOODPUT_SHARE: f64 = 0.95;
/// The steady state's errors (not the deliberate 429/503), at most.
const STEADY_ERRORS: f64 = 0.001;
/// Seconds of the steady state whose p99 must be within the SLO, at least.
const STEADY_SECONDS_WITHIN: f64 = 0.9;
/// What retries may add to the traffic, at most (provider calls, and events).
const RETRY_BUDGET: f64 = 0.2;
/// Fewer charges than this in a window say nothing about its calls per charge.
const RETRY_MIN_CHARGES: u64 = 10;
/// Lag counts as back to its baseline at most this many times the steady state's
/// highest, plus [`LAG_SLACK`] (a lag of 0 in the steady state is not a target).
const LAG_FACTOR: i64 = 2;
const LAG_SLACK: i64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Judged {
    Pass,
    Fail,
    /// The run started unhealthy (or could not be measured): it does not count.
    Unjudged,
}

impl Judged {
    pub fn word(self) -> &'static str {
        match self {
            Judged::Pass => "PASS",
            Judged::Fail => "FAIL",
            Judged::Unjudged => "NOT JUDGED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub target: String,
    /// From the fault to the first of five good seconds in a row; `None`: never.
    pub time_to_recover_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub judged: Judged,
    pub rules: Vec<Rule>,
    pub recoveries: Vec<Recovery>,
    /// Orders clients were told were accepted.
    pub accepted: usize,
    /// Of those, final when the books were read.
    pub final_orders: usize,
    pub lost: usize,
    /// Order requests answered 5xx or not at all: the client cannot know.
    pub maybe: usize,
    /// Idempotency keys stored more than once.
    pub duplicates: usize,
    pub steady_goodput_per_s: f64,
    pub p99_before_ms: f64,
    pub p99_during_ms: f64,
    pub p99_after_ms: f64,
    pub bystander_restarts: u64,
    pub books: Report,
    /// The highest total consumer lag before the first fault.
    pub lag_baseline: Option<i64>,
    /// After each fault's end, the seconds until the lag was back; `None`: never.
    pub lag_back_s: Vec<Option<f64>>,
    pub retries: Vec<Retries>,
    pub finishing: Vec<Finishing>,
}

/// What the verdict is drawn from.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub load: &'a LoadReport,
    pub faults: &'a [Fault],
    /// The books' rules still broken after the drain.
    pub problems: &'a [String],
    pub books: &'a Report,
    pub stored: &'a Stored,
    /// Restarts per supervised process.
    pub restarts: &'a BTreeMap<String, u64>,
    pub slo_p99_ms: f64,
    pub recovery_target_s: f64,
    /// Every second: lag, provider requests.
    pub samples: &'a [Sample],
    /// The steady state's traffic, then each fault's window.
    pub retries: &'a [Retries],
    pub finishing: &'a [Finishing],
}

/// What the order database holds: each order's status, and how many orders each
/// idempotency key created.
#[derive(Debug, Default)]
pub struct Stored {
    pub status: BTreeMap<String, String>,
    pub per_key: BTreeMap<String, i64>,
}

/// Reads [`Stored`] from the order database.
pub async fn stored(orders_db: &sqlx::AnyPool) -> anyhow::Result<Stored> {
    use sqlx::Row;
    let mut stored = Stored::default();
    for row in sqlx::query("SELECT id, status, idempotency_key FROM orders")
        .fetch_all(orders_db)
        .await?
    {
        stored.status.insert(row.get("id"), row.get("status"));
        if let Some(key) = row.get::<Option<String>, _>("idempotency_key") {
            *stored.per_key.entry(key).or_default() += 1;
        }
    }
    Ok(stored)
}

/// The orders clients were told were accepted (2xx with a `Location`), once each.
pub fn accepted(load: &LoadReport) -> Vec<OrderId> {
    let mut ids: Vec<OrderId> = load
        .placements
        .iter()
        .filter(|p| p.class == Class::Ok)
        .filter_map(|p| p.order_id.as_deref()?.parse().ok())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn is_final(status: &str) -> bool {
    matches!(status, "delivered" | "cancelled")
}

fn max_p99<'a>(seconds: impl Iterator<Item = &'a Second>) -> f64 {
    seconds.map(|s| s.p99_ms).fold(0.0, f64::max)
}

impl Verdict {
    pub fn judge(e: &Evidence<'_>) -> Verdict {
        let seconds = &e.load.seconds;
        let first_fault_s = e.faults.first().map_or(u64::MAX, |f| f.at_ms / 1000);
        // The steady state: every whole second before the first fault but the first
        // one (connections being opened).
        let steady: Vec<&Second> = seconds
            .iter()
            .filter(|s| s.t >= 1 && s.t < first_fault_s)
            .collect();
        let sent: u64 = steady.iter().map(|s| s.counts.sent).sum();
        let ok: u64 = steady.iter().map(|s| s.counts.ok).sum();
        let errors: u64 = steady.iter().map(|s| s.counts.errors()).sum();
        let refused: u64 = steady.iter().map(|s| s.counts.refused).sum();
        let steady_goodput = if steady.is_empty() {
            0.0
        } else {
            ok as f64 / steady.len() as f64
        };
        let p99_before = max_p99(steady.iter().copied());
        let within = steady.iter().filter(|s| s.p99_ms <= e.slo_p99_ms).count();
        // Refusals (429/503) are the defences at work, not ill health: admission
        // control sheds new orders by design when the rate is more than the pipeline
        // finishes. They set the steady state's goodput, which recovery is measured by.
        let steady_ok = !steady.is_empty()
            && errors as f64 <= STEADY_ERRORS * sent as f64
            && within as f64 >= STEADY_SECONDS_WITHIN * steady.len() as f64;
        let mut rules = vec![Rule {
            name: "steady state before",
            pass: steady_ok,
            detail: format!(
                "{} s before the first fault: {ok} of {sent} requests 2xx ({:.0}/s), {refused} refused on purpose (429/503), {errors} errors, p99 within {:.0} ms in {within} of the seconds (worst {p99_before:.0} ms)",
                steady.len(),
                steady_goodput,
                e.slo_p99_ms
            ),
        }];

        // Nothing lost.
        let accepted = accepted(e.load);
        let lost: Vec<&OrderId> = accepted
            .iter()
            .filter(|id| {
                !e.stored
                    .status
                    .get(&id.to_string())
                    .is_some_and(|s| is_final(s))
            })
            .collect();
        rules.push(Rule {
            name: "nothing lost",
            pass: lost.is_empty(),
            detail: if lost.is_empty() {
                format!("all {} accepted orders are final", accepted.len())
            } else {
                format!(
                    "{} of {} accepted orders are not final, e.g. {}",
                    lost.len(),
                    accepted.len(),
                    lost.iter()
                        .take(3)
                        .map(|id| {
                            let id = id.to_string();
                            let status = e.stored.status.get(&id).map_or("missing", |s| s);
                            format!("{id} ({status})")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        });

        // At most once.
        let maybe: Vec<&str> = e
            .load
            .placements
            .iter()
            .filter(|p| matches!(p.class, Class::ServerError | Class::Failed))
            .map(|p| p.key.as_str())
            .collect();
        let twice: Vec<(&String, &i64)> =
            e.stored.per_key.iter().filter(|(_, n)| **n > 1).collect();
        rules.push(Rule {
            name: "at most once",
            pass: twice.is_empty(),
            detail: format!(
                "{} order requests answered 5xx or not at all (maybe): {} of them stored, none twice; {} idempotency keys stored more than once{}",
                maybe.len(),
                maybe
                    .iter()
                    .filter(|k| e.stored.per_key.contains_key(**k))
                    .count(),
                twice.len(),
                twice
                    .first()
                    .map_or(String::new(), |(k, n)| format!(", e.g. {k} ×{n}"))
            ),
        });

        // The books.
        rules.push(Rule {
            name: "the books agree",
            pass: e.problems.is_empty(),
            detail: if e.problems.is_empty() {
                format!(
                    "{} charges ({} refunded), stock = reservations, {} notifications each sent once, outboxes drained",
                    e.books.charges, e.books.refunded, e.books.notifications
                )
            } else {
                e.problems
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });

        // Recovery, after each fault: five whole seconds in a row, each within the
        // SLO, their mean goodput back to the steady state's.
        let good = |w: &[&Second]| {
            let mean = w.iter().map(|s| s.counts.ok as f64).sum::<f64>() / w.len() as f64;
            w.iter().all(|s| s.p99_ms <= e.slo_p99_ms)
                && mean >= GOODPUT_SHARE * steady_goodput
                && w[w.len() - 1].t - w[0].t == w.len() as u64 - 1
        };
        let recoveries: Vec<Recovery> = e
            .faults
            .iter()
            .map(|fault| {
                let from = fault.end_ms().div_ceil(1000);
                let after: Vec<&Second> = seconds.iter().filter(|s| s.t >= from).collect();
                let time_to_recover_s = after
                    .windows(RECOVERED_AFTER)
                    .find(|w| good(w))
                    .map(|w| (w[0].t as f64 - fault.end_ms() as f64 / 1000.0).max(0.0));
                Recovery {
                    target: fault.name(),
                    time_to_recover_s,
                }
            })
            .collect();
        let slowest = recoveries
            .iter()
            .map(|r| r.time_to_recover_s.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max);
        rules.push(Rule {
            name: "recovered without a human",
            pass: !recoveries.is_empty() && slowest <= e.recovery_target_s,
            detail: recoveries
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.target,
                        r.time_to_recover_s
                            .map_or("never".to_owned(), |s| format!("{s:.0} s"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
                + &format!(" (target ≤ {:.0} s)", e.recovery_target_s),
        });

        // Consumer lag back to its baseline.
        let first_fault_ms = e.faults.first().map_or(u64::MAX, |f| f.at_ms);
        let lag_baseline = e
            .samples
            .iter()
            .filter(|s| s.t_ms >= 1000 && s.t_ms < first_fault_ms)
            .filter_map(|s| s.lag)
            .max();
        let lag_back_s: Vec<Option<f64>> = e
            .faults
            .iter()
            .map(|fault| {
                let limit = lag_baseline? * LAG_FACTOR + LAG_SLACK;
                e.samples
                    .iter()
                    .filter(|s| s.t_ms >= fault.end_ms())
                    .find(|s| s.lag.is_some_and(|lag| lag <= limit))
                    .map(|s| (s.t_ms - fault.end_ms()) as f64 / 1000.0)
            })
            .collect();
        let lag_slowest = lag_back_s
            .iter()
            .map(|s| s.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max);
        rules.push(Rule {
            name: "lag back to its baseline",
            pass: lag_baseline.is_some() && lag_slowest <= e.recovery_target_s,
            detail: match lag_baseline {
                None => "no lag was measured before the first fault".to_owned(),
                Some(base) => format!(
                    "steady state's lag at most {base} (back means ≤ {}): {}",
                    base * LAG_FACTOR + LAG_SLACK,
                    e.faults
                        .iter()
                        .zip(&lag_back_s)
                        .map(|(f, s)| format!(
                            "{}: {}",
                            f.name(),
                            s.map_or("not back before the load ended".to_owned(), |s| format!(
                                "{s:.0} s"
                            ))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        });

        // Retries within budget: what each fault's window adds to the steady state's.
        let (steady_traffic, windows) = match e.retries.split_first() {
            Some((steady, windows)) => (Some(steady), windows),
            None => (None, &[][..]),
        };
        let mut over = Vec::new();
        let mut within = Vec::new();
        for r in windows {
            let Some(steady) = steady_traffic else { break };
            let (calls, events) = r.added(steady);
            let judged_calls = r.charges >= RETRY_MIN_CHARGES;
            if judged_calls && calls > RETRY_BUDGET {
                over.push(format!(
                    "{}: {} provider calls for {} charges ({:.2} a charge, +{:.0} % on the steady state's {:.2})",
                    r.fault,
                    r.provider_requests,
                    r.charges,
                    r.calls_per_charge(),
                    100.0 * calls,
                    steady.calls_per_charge()
                ));
            }
            if events > RETRY_BUDGET {
                over.push(format!(
                    "{}: {} events through the retry topics for {} published (+{:.0} %)",
                    r.fault,
                    r.retried_events,
                    r.events,
                    100.0 * events
                ));
            }
            within.push(format!(
                "{}: provider {}, events {:+.0} %",
                r.fault,
                if judged_calls {
                    format!("{:+.0} %", 100.0 * calls)
                } else {
                    format!("not judged ({} charges)", r.charges)
                },
                100.0 * events
            ));
        }
        rules.push(Rule {
            name: "retries within budget",
            pass: steady_traffic.is_some() && over.is_empty(),
            detail: if over.is_empty() {
                within.join(", ") + &format!(" (budget +{:.0} %)", 100.0 * RETRY_BUDGET)
            } else {
                over.join("; ") + &format!(" — over the {:.0} % budget", 100.0 * RETRY_BUDGET)
            },
        });

        // Absorbed: what the platform is built to take without a dip.
        if !e.finishing.is_empty() {
            let late: Vec<String> = e
                .finishing
                .iter()
                .filter(|f| f.unfinished > 0 || f.p99_s.is_none_or(|p| p > e.recovery_target_s))
                .map(|f| {
                    format!(
                        "{}: of {} orders accepted meanwhile, {} unfinished, p99 {}",
                        f.fault,
                        f.orders,
                        f.unfinished,
                        f.p99_s.map_or("-".to_owned(), |p| format!("{p:.1} s"))
                    )
                })
                .collect();
            rules.push(Rule {
                name: "absorbed",
                pass: late.is_empty(),
                detail: if late.is_empty() {
                    e.finishing
                        .iter()
                        .map(|f| {
                            format!(
                                "{}: the {} orders accepted meanwhile finished, p99 {:.1} s",
                                f.fault,
                                f.orders,
                                f.p99_s.unwrap_or(0.0)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                        + &format!(" (≤ {:.0} s)", e.recovery_target_s)
                } else {
                    late.join("; ")
                        + &format!(
                            " — orders accepted during the fault should finish within {:.0} s",
                            e.recovery_target_s
                        )
                },
            });
        }

        // No cascade.
        let hit: Vec<&str> = e.faults.iter().filter_map(Fault::process).collect();
        let bystanders: Vec<(&String, &u64)> = e
            .restarts
            .iter()
            .filter(|(name, n)| !hit.contains(&name.as_str()) && **n > 0)
            .collect();
        let bystander_restarts: u64 = bystanders.iter().map(|(_, n)| **n).sum();
        let mut slow_reads = Vec::new();
        for (fault, recovery) in e.faults.iter().zip(&recoveries) {
            if !fault.reads_untouched {
                continue;
            }
            let from = fault.at_ms / 1000;
            let to = fault.end_ms() / 1000
                + recovery.time_to_recover_s.unwrap_or(e.recovery_target_s) as u64
                + 1;
            let worst = seconds
                .iter()
                .filter(|s| s.t >= from && s.t <= to)
                .map(|s| s.reads_p99_ms)
                .fold(0.0, f64::max);
            if worst > e.slo_p99_ms {
                slow_reads.push(format!("reads p99 {worst:.0} ms during {}", fault.name()));
            }
        }
        rules.push(Rule {
            name: "no cascade",
            pass: bystanders.is_empty() && slow_reads.is_empty(),
            detail: {
                let mut parts = Vec::new();
                if bystanders.is_empty() {
                    parts.push("no process the faults did not hit restarted".to_owned());
                } else {
                    parts.extend(
                        bystanders
                            .iter()
                            .map(|(n, k)| format!("{n} restarted {k}×, not hit")),
                    );
                }
                if slow_reads.is_empty() {
                    parts.push(
                        "reads kept their SLO while services they do not use were down".to_owned(),
                    );
                } else {
                    parts.extend(slow_reads);
                }
                parts.join("; ")
            },
        });

        let last = e.faults.last();
        let recovered_at = last.zip(recoveries.last()).map(|(f, r)| {
            f.end_ms() as f64 / 1000.0 + r.time_to_recover_s.unwrap_or(e.recovery_target_s)
        });
        let during = max_p99(seconds.iter().filter(|s| {
            s.t >= first_fault_s && recovered_at.is_some_and(|end| (s.t as f64) < end)
        }));
        let after = max_p99(
            seconds
                .iter()
                .filter(|s| recovered_at.is_some_and(|end| s.t as f64 >= end)),
        );
        let judged = if !steady_ok {
            Judged::Unjudged
        } else if rules.iter().all(|r| r.pass) {
            Judged::Pass
        } else {
            Judged::Fail
        };
        let final_orders = accepted.len() - lost.len();
        Verdict {
            judged,
            rules,
            recoveries,
            accepted: accepted.len(),
            final_orders,
            lost: lost.len(),
            maybe: maybe.len(),
            duplicates: twice.len(),
            steady_goodput_per_s: steady_goodput,
            p99_before_ms: p99_before,
            p99_during_ms: during,
            p99_after_ms: after,
            bystander_restarts,
            books: e.books.clone(),
            lag_baseline,
            lag_back_s,
            retries: e.retries.to_vec(),
            finishing: e.finishing.to_vec(),
        }
    }
}
