//! Reading `/metrics` back: the OpenMetrics text parsed into samples, and
//! percentiles computed from histogram buckets the way PromQL's
//! `histogram_quantile` does. The scenario tests judge the incidents with it — from
//! the outside, exactly as a dashboard would.
//!
//! **How a percentile comes out of buckets.** A histogram exports cumulative counts:
//! `le="0.5"` = observations ≤ 0.5 s. For p99 of `n` observations, find the first
//! bucket whose count reaches `0.99·n`, and assume the observations inside it are
//! spread evenly between its lower and upper bound: interpolate linearly. So the
//! answer is never more precise than the bucket it falls in — and if it falls in the
//! `+Inf` bucket, the best one can say is "above the highest finite bound", which
//! PromQL reports as that bound.
//!
//! A percentile *over a window* comes from the difference of two scrapes (what
//! `rate(…[1m])` does): [`Samples::histogram_since`].

use std::collections::BTreeMap;

/// One line of the exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A whole scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

/// Parses the text format (Prometheus or OpenMetrics); comments and unreadable lines
/// are skipped.
pub fn parse(text: &str) -> Samples {
    Samples(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].rfind('}')? + open;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    // The value, then perhaps a timestamp or an exemplar: the first word is the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(labels)
}

/// Cumulative buckets of one histogram: `(upper bound, count ≤ bound)`, ascending,
/// ending with `+Inf`.
pub type Buckets = Vec<(f64, f64)>;

impl Samples {
    /// Samples named `name` whose labels include every `(key, value)` of `filter`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
    }

    /// The sum of the matching samples (`sum(name{filter})`); `None` if there are none.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let total = self
            .matching(name, filter)
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum();
        found.then_some(total)
    }

    /// The buckets of histogram `name` (summed over the series matching `filter`,
    /// like `sum by (le)`).
    pub fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Buckets {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&bucket, filter) {
            let Some(le) = s.labels.get("le").and_then(|le| match le.as_str() {
                "+Inf" => Some(f64::INFINITY),
                le => le.parse::<f64>().ok(),
            }) else {
                continue;
            };
            // Order by bound: f64 bits sort like the numbers for non-negative values.
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
        by_le.into_values().collect()
    }

    /// The buckets of `name` observed since `before` was scraped.
    pub fn histogram_since(
        &self,
        before: &Samples,
        name: &str,
        filter: &[(&str, &str)],
    ) -> Buckets {
        let earlier = before.histogram(name, filter);
        self.histogram(name, filter)
            .into_iter()
            .map(|(le, count)| {
                let then = earlier
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, (count - then).max(0.0))
            })
            .collect()
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `buckets`, as PromQL's `histogram_quantile`
/// computes it. `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let (_, total) = *buckets.last()?;
    if total <= 0.0 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower_bound = 0.0;
    let mut below = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le == f64::INFINITY {
                // Above every finite bound: all we know is "more than the last one".
                return Some(lower_bound);
            }
            let inside = count - below;
            if inside <= 0.0 {
                return Some(le);
            }
            return Some(lower_bound + (le - lower_bound) * (rank - below) / inside);
        }
        lower_bound = le;
        below = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP payment_duration_seconds Time to charge
# TYPE payment_duration_seconds histogram
payment_duration_seconds_bucket{le="0.1",outcome="captured"} 10
payment_duration_seconds_bucket{le="0.5",outcome="captured"} 90
payment_duration_seconds_bucket{le="1.0",outcome="captured"} 100
payment_duration_seconds_bucket{le="+Inf",outcome="captured"} 100
payment_duration_seconds_sum{outcome="captured"} 31.5
payment_duration_seconds_count{outcome="captured"} 100
payment_duration_seconds_bucket{le="0.1",outcome="declined"} 0
payment_duration_seconds_bucket{le="0.5",outcome="declined"} 0
payment_duration_seconds_bucket{le="1.0",outcome="declined"} 0
payment_duration_seconds_bucket{le="+Inf",outcome="declined"} 4
kafka_consumer_lag{group="notification-service",topic="orders",partition="0"} 7
kafka_consumer_lag{group="notification-service",topic="orders",partition="1"} 5
kafka_consumer_lag{group="payment-service",topic="orders",partition="0"} 0
odd_label{path="a \"quoted\", comma"} 1
process_resident_memory_bytes 1.5e7
# EOF
"#;

    #[test]
    fn samples_and_labels_are_read_including_escapes() {
        let samples = parse(TEXT);
        assert_eq!(
            samples.sum("kafka_consumer_lag", &[("group", "notification-service")]),
            Some(12.0)
        );
        assert_eq!(
            samples.sum("process_resident_memory_bytes", &[]),
            Some(1.5e7)
        );
        assert_eq!(samples.sum("missing", &[]), None);
        let odd = samples.matching("odd_label", &[]).next().unwrap();
        assert_eq!(odd.labels["path"], r#"a "quoted", comma"#);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_promql() {
        let samples = parse(TEXT);
        let captured = samples.histogram("payment_duration_seconds", &[("outcome", "captured")]);
        assert_eq!(captured.len(), 4);
        // p50: rank 50, in (0.1, 0.5] holding 80 → 0.1 + 0.4 × 40/80 = 0.3.
        assert!((quantile(0.5, &captured).unwrap() - 0.3).abs() < 1e-9);
        // p95: rank 95, in (0.5, 1.0] holding 10 → 0.5 + 0.5 × 5/10 = 0.75.
        assert!((quantile(0.95, &captured).unwrap() - 0.75).abs() < 1e-9);
        // All four declines are above 1 s: the +Inf bucket says only "more than 1".
        let declined = samples.histogram("payment_duration_seconds", &[("outcome", "declined")]);
        assert_eq!(quantile(0.99, &declined), Some(1.0));
        // Summed over outcomes, like `sum by (le)`.
        let all = samples.histogram("payment_duration_seconds", &[]);
        assert_eq!(all.last(), Some(&(f64::INFINITY, 104.0)));
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let before = parse(
            r#"h_bucket{le="1"} 100
h_bucket{le="+Inf"} 100
"#,
        );
        let after = parse(
            r#"h_bucket{le="1"} 100
h_bucket{le="+Inf"} 110
"#,
        );
        // All of the window's 10 observations are above 1 s, though 91 % of all are not.
        let window = after.histogram_since(&before, "h", &[]);
        assert_eq!(window, vec![(1.0, 0.0), (f64::INFINITY, 10.0)]);
        assert_eq!(quantile(0.5, &window), Some(1.0));
        assert!(quantile(0.5, &after.histogram("h", &[])).unwrap() < 1.0);
    }
}
