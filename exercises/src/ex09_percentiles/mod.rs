//! Exercise 9: percentiles from histogram buckets.
//!
//! A Prometheus histogram does not keep observations; it keeps *cumulative* counts
//! per bucket (`le="0.5"`: how many were ≤ 0.5 s). Every p99 on a dashboard is an
//! estimate computed from those counts — PromQL's `histogram_quantile` — and a p99
//! "over the last minute" is computed from the *difference* of two scrapes. Knowing
//! how tells you what a percentile can and cannot say.

pub mod check;
pub mod solution;
pub mod starter;
crate::yours!("ex09_percentiles");

/// Cumulative buckets of one histogram: `(upper bound, observations ≤ bound)`,
/// ascending by bound, the last one `+Inf` (= the total count).
pub type Buckets = Vec<(f64, f64)>;

/// What the learner implements (their copy of `starter.rs`) and the reference
/// implements (`solution.rs`).
pub trait Percentiles {
    fn new() -> Self
    where
        Self: Sized;

    /// The `q`-quantile (0 ≤ q ≤ 1) as `histogram_quantile` computes it: find the
    /// bucket where the rank `q·total` falls and interpolate linearly inside it.
    /// `None` without observations or without a `+Inf` bucket.
    fn quantile(&self, q: f64, buckets: &[(f64, f64)]) -> Option<f64>;

    /// The observations between two scrapes of the same histogram, as cumulative
    /// buckets again (what `increase(…_bucket[window])` gives PromQL). If the process
    /// restarted in between, its counters started again from zero.
    fn since(&self, before: &[(f64, f64)], after: &[(f64, f64)]) -> Buckets;
}

pub const HINTS: &[&str] = &[
    "The counts are cumulative: bucket `le=0.5` includes everything in `le=0.25`. The rank \
     is `q · total`, where total is the `+Inf` bucket's count; the answer lies in the first \
     bucket whose count reaches the rank.",
    "Inside that bucket assume the observations are spread evenly between its lower bound \
     (the previous bucket's `le`, or 0 for the first) and its upper bound: \
     `lower + (upper − lower) · (rank − count_below) / (count_in_bucket)`.",
    "If the rank falls in the `+Inf` bucket there is no upper bound to interpolate to: \
     PromQL answers the highest finite bound. Returning `inf` breaks every graph.",
    "`since`: subtract bucket by bucket. A restart resets counters, so a bucket that went \
     *down* means the process started over — then everything in `after` is new. Compare with \
     `quantile` and `histogram_since` in phase3-observability/src/scrape.rs.",
];

pub const EXERCISE: crate::Exercise = crate::Exercise {
    number: 9,
    dir: "ex09_percentiles",
    title: "percentiles from histogram buckets",
    readme: include_str!("README.md"),
    hints: HINTS,
    needs: &[],
    check_starter: check::check::<starter::Estimator>,
    check_yours: check::check::<yours::Estimator>,
    check_solution: check::check::<solution::Estimator>,
};
