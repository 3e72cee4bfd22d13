//! The reference for exercise 9. Phase 3's `scrape::quantile`
//! (phase3-observability/src/scrape.rs) is the same computation; the dashboard's
//! window (tui/src/model.rs) handles restarts the same way as `since` here.

use super::{Buckets, Percentiles};

#[derive(Debug)]
pub struct Estimator;

impl Percentiles for Estimator {
    fn new() -> Self {
        Estimator
    }

    fn quantile(&self, q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
        let &(last_bound, total) = buckets.last()?;
        if total <= 0.0 || last_bound != f64::INFINITY {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(upper, count) in buckets {
            if count >= rank {
                if upper == f64::INFINITY {
                    return Some(lower); // "above the highest finite bound"
                }
                let inside = count - below;
                if inside <= 0.0 {
                    return Some(upper);
                }
                return Some(lower + (upper - lower) * (rank - below) / inside);
            }
            (lower, below) = (upper, count);
        }
        Some(lower)
    }

    fn since(&self, before: &[(f64, f64)], after: &[(f64, f64)]) -> Buckets {
        let then = |le: f64| {
            before
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |(_, count)| *count)
        };
        // A counter that went down was reset: the process restarted, all is new.
        let restarted = after.iter().any(|&(le, count)| count < then(le));
        after
            .iter()
            .map(|&(le, count)| (le, if restarted { count } else { count - then(le) }))
            .collect()
    }
}
