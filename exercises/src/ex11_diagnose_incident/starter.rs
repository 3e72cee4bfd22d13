// Exercise 11: your implementation.
//
// `cargo run -p exercises -- start 11` copies this starter to `exercises/mine/ex11_diagnose_incident.rs`;
// edit that copy (this file stays as shipped), then `cargo run -p exercises -- check 11`.
//
// Useful: `after.sum(name, &[("label", "value")])` (summed over matching series),
// `after.histogram_since(before, name, &[])` (the window's buckets), `quantile(q, &buckets)`,
// and `after.0` (every sample: name, labels, value) for anything else.

use super::{Diagnose, Diagnosis, Finding, Samples, quantile};

#[derive(Debug)]
pub struct OnCall;

impl Diagnose for OnCall {
    fn new() -> Self {
        OnCall
    }

    fn diagnose(&self, before: &Samples, after: &Samples) -> Diagnosis {
        let window = after.histogram_since(before, "payment_duration_seconds", &[]);
        let payment_p99 = quantile(0.99, &window);
        if payment_p99.is_some_and(|p99| p99 > 1.0) {
            return Diagnosis {
                finding: Finding::PaymentSlowdown,
                evidence: format!("payment p99 over the window {payment_p99:?} s"),
            };
        }
        // TODO(exercise): three more incidents, three more signals. Which metrics
        // moved between `before` and `after`?
        Diagnosis {
            finding: Finding::Healthy,
            evidence: format!("payment p99 over the window {payment_p99:?} s"),
        }
    }
}
