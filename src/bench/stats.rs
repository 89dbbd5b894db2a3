//! Latency histograms, error counts and their summary. Pure.
//!
//! Each worker records into its own [`Recorder`] (no sharing on the hot
//! path); the run merges them at the end. Latencies are kept in
//! microseconds in HDR histograms (3 significant digits, 1 µs to 60 s) and
//! reported in milliseconds. Only answered requests are timed; failures are
//! counted by kind instead.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::Op;

const LATENCY_US_MAX: u64 = 60_000_000;
/// Mismatch descriptions kept for the report; the rest are only counted.
const MISMATCH_EXAMPLES_MAX: usize = 20;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

#[derive(Debug, Clone)]
pub struct Recorder {
    latency_us: [Histogram<u64>; 3],
    errors: [BTreeMap<String, u64>; 3],
    /// Reads answered 404 and 300 (they are successes, counted apart).
    pub reads_not_found: u64,
    pub reads_siblings: u64,
    /// Reads compared against the --check oracle.
    pub reads_checked: u64,
    pub mismatches: u64,
    pub mismatch_examples: Vec<String>,
    /// Requests sent on to another node (`--failover`).
    pub failovers: u64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            latency_us: [new_histogram(), new_histogram(), new_histogram()],
            errors: Default::default(),
            reads_not_found: 0,
            reads_siblings: 0,
            reads_checked: 0,
            mismatches: 0,
            mismatch_examples: Vec::new(),
            failovers: 0,
        }
    }
}

impl Recorder {
    pub fn success(&mut self, op: Op, latency_us: u64) {
        self.latency_us[op.index()].saturating_record(latency_us.max(1));
    }

    pub fn error(&mut self, op: Op, kind: String) {
        *self.errors[op.index()].entry(kind).or_default() += 1;
    }

    pub fn mismatch(&mut self, description: String) {
        self.mismatches += 1;
        if self.mismatch_examples.len() < MISMATCH_EXAMPLES_MAX {
            self.mismatch_examples.push(description);
        }
    }

    pub fn successes(&self) -> u64 {
        self.latency_us.iter().map(Histogram::len).sum()
    }

    pub fn errors(&self) -> u64 {
        self.errors.iter().flat_map(|m| m.values()).sum()
    }

    pub fn merge(&mut self, other: &Recorder) {
        for i in 0..3 {
            self.latency_us[i].add(&other.latency_us[i]).expect("histograms share their bounds");
            for (kind, n) in &other.errors[i] {
                *self.errors[i].entry(kind.clone()).or_default() += n;
            }
        }
        self.reads_not_found += other.reads_not_found;
        self.reads_siblings += other.reads_siblings;
        self.reads_checked += other.reads_checked;
        self.mismatches += other.mismatches;
        self.failovers += other.failovers;
        let room = MISMATCH_EXAMPLES_MAX.saturating_sub(self.mismatch_examples.len());
        self.mismatch_examples.extend(other.mismatch_examples.iter().take(room).cloned());
    }

    /// Every operation's latencies in buckets 10 % wider each from 10 µs
    /// to the slowest request (a bucket's `le_ms` is the highest latency it
    /// holds); empty buckets left out.
    pub fn histogram(&self) -> Vec<Bucket> {
        let mut all = new_histogram();
        for hist in &self.latency_us {
            all.add(hist).expect("histograms share their bounds");
        }
        if all.is_empty() {
            return Vec::new();
        }
        all.iter_log(HISTOGRAM_FIRST_US, HISTOGRAM_GROWTH)
            .filter(|step| step.count_since_last_iteration() > 0)
            .map(|step| Bucket {
                le_ms: step.value_iterated_to() as f64 / 1000.0,
                count: step.count_since_last_iteration(),
            })
            .collect()
    }

    /// Per-operation and overall summaries over `elapsed_s`. Operations
    /// with weight 0 and no requests are left out.
    pub fn summarize(&self, elapsed_s: f64) -> (BTreeMap<Op, OpSummary>, OpSummary) {
        let mut all = new_histogram();
        let mut all_errors = BTreeMap::new();
        let mut per_op = BTreeMap::new();
        for op in Op::ALL {
            let (hist, errors) = (&self.latency_us[op.index()], &self.errors[op.index()]);
            all.add(hist).expect("histograms share their bounds");
            for (kind, n) in errors {
                *all_errors.entry(kind.clone()).or_default() += n;
            }
            if hist.len() + errors.values().sum::<u64>() > 0 {
                per_op.insert(op, OpSummary::new(hist, errors.clone(), elapsed_s));
            }
        }
        (per_op, OpSummary::new(&all, all_errors, elapsed_s))
    }
}

/// Upper bound of the first histogram bucket, and each next bucket's
/// bound over the last: fine enough to draw, ~90 buckets up to 10 s.
const HISTOGRAM_FIRST_US: u64 = 10;
const HISTOGRAM_GROWTH: f64 = 1.1;

/// One bucket of [`Recorder::histogram`]: requests that took at most
/// `le_ms` and more than the bucket before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency { mean: 0.0, p50: 0.0, p90: 0.0, p99: 0.0, p99_9: 0.0, max: 0.0 };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            mean: hist.mean() / 1000.0,
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            p99_9: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    /// Requests answered (2xx, and 404/300 for reads).
    pub ops: u64,
    pub ops_per_s: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub latency_ms: Latency,
}

impl OpSummary {
    fn new(hist: &Histogram<u64>, errors_by_kind: BTreeMap<String, u64>, elapsed_s: f64) -> OpSummary {
        let ops = hist.len();
        OpSummary {
            ops,
            ops_per_s: if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 },
            errors: errors_by_kind.values().sum(),
            errors_by_kind,
            latency_ms: Latency::of(hist),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = Recorder::default();
        // 1..=1000 ms, one request each.
        for ms in 1..=1000u64 {
            r.success(Op::Read, ms * 1000);
        }
        let (per_op, all) = r.summarize(2.0);
        let l = per_op[&Op::Read].latency_ms;
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(near(l.p50, 500.0) && near(l.p90, 900.0) && near(l.p99, 990.0), "{l:?}");
        assert!(near(l.p99_9, 999.0) && near(l.max, 1000.0) && near(l.mean, 500.5), "{l:?}");
        assert_eq!(per_op[&Op::Read].ops, 1000);
        assert_eq!(per_op[&Op::Read].ops_per_s, 500.0);
        assert_eq!(all, per_op[&Op::Read]);
        assert!(!per_op.contains_key(&Op::Write), "unused operations are left out");
    }

    #[test]
    fn merging_adds_counts_errors_and_examples() {
        let mut a = Recorder::default();
        a.success(Op::Read, 100);
        a.error(Op::Write, "status 503".into());
        let mut b = Recorder::default();
        b.success(Op::Write, 300);
        b.success(Op::Write, 0);
        b.error(Op::Write, "status 503".into());
        b.error(Op::Read, "timeout".into());
        b.mismatch("key 1: read absent, expected write #1".into());
        a.merge(&b);
        assert_eq!((a.successes(), a.errors(), a.mismatches), (3, 3, 1));
        let (per_op, all) = a.summarize(1.0);
        assert_eq!(per_op[&Op::Write].errors_by_kind["status 503"], 2);
        assert_eq!(all.errors_by_kind["timeout"], 1);
        assert_eq!(all.errors, 3);
        assert_eq!(per_op[&Op::Write].latency_ms.p50, 0.001, "0 µs is recorded as 1 µs");
        let l = all.latency_ms;
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
    }

    #[test]
    fn the_histogram_holds_every_request_in_buckets_that_grow_by_a_tenth() {
        let mut r = Recorder::default();
        for us in [5, 100, 100, 101, 2_000, 2_000_000] {
            r.success(Op::Read, us);
        }
        r.success(Op::Write, 100);
        let buckets = r.histogram();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 7, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].le_ms < w[1].le_ms), "{buckets:?}");
        assert_eq!(buckets[0], Bucket { le_ms: 0.009, count: 1 }, "5 µs is in the first bucket (< 10 µs)");
        let at = |ms: f64| buckets.iter().find(|b| b.le_ms >= ms).unwrap();
        assert!(at(0.1).count >= 3, "the three 100 µs requests share a bucket: {buckets:?}");
        let last = buckets.last().unwrap();
        assert!(last.le_ms >= 2000.0 && last.le_ms <= 2000.0 * 1.1, "{buckets:?}");
        assert_eq!(last.count, 1);
        assert!(Recorder::default().histogram().is_empty());
    }

    #[test]
    fn an_empty_run_summarizes_to_zeros() {
        let (per_op, all) = Recorder::default().summarize(0.0);
        assert!(per_op.is_empty());
        assert_eq!((all.ops, all.ops_per_s, all.latency_ms.max), (0, 0.0, 0.0));
    }
}
