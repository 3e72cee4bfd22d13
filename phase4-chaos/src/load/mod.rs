//! HTTP load, in the two models a benchmark has to tell apart.
//!
//! | model | module | question it answers |
//! |---|---|---|
//! | closed (N users, each waits for its answer) | [`closed`] | how much can the server finish with N requests in flight? |
//! | open (requests arrive at a rate, answered or not) | [`open`] | what do users see at this arrival rate — without coordinated omission? |
//! | either, with a request mix, tokens, thresholds (`phase4-chaos load`) | [`run`], [`mix`] | does the platform hold its SLOs at this load? |
//!
//! Both record latencies in the same kind of HDR histogram ([`histogram`]), so their
//! percentiles, pgbench's and the end-to-end observer's are computed alike.

pub mod closed;
pub mod mix;
pub mod open;
pub mod run;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds: 1 µs .. 10 min, 3 significant digits — exact
/// enough for p99 and max, in constant memory, and mergeable across workers.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// At most `max` characters of `text` (for error bodies in reports).
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
