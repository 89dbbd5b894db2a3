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
    fn an_empty_run_summarizes_to_zeros() {
        let (per_op, all) = Recorder::default().summarize(0.0);
        assert!(per_op.is_empty());
        assert_eq!((all.ops, all.ops_per_s, all.latency_ms.max), (0, 0.0, 0.0));
    }
}
