//! `vinzclortho bench`: a closed-loop load generator for Vinz Clortho (and,
//! for comparison, etcd, Garage and Redis), in the spirit of basho_bench.
//!
//! `--concurrency` workers each keep one request in flight, choosing an
//! operation by `--mix` and a key by `--distribution`, until `--duration`
//! or `--ops` runs out. Latencies go to per-worker HDR histograms; the
//! report gives throughput, p50/p90/p99/p99.9/max per operation and overall,
//! and errors by kind, as a table or `--json`.
//!
//! With `--check`, worker w of c owns keys w, w + c, ... (one writer per
//! key), remembers what it wrote and checks every read against it
//! ([`check`]): a run with a wrong read or a failed request exits non-zero,
//! so a fast wrong answer never counts. `--verify` then reads every key back
//! with r=all: an acknowledged write that was lost fails the run too.
//!
//! With `--failover`, a request a node did not answer (refused connection, a
//! node shutting down, a connection broken before the answer) goes on to the
//! next node instead of failing: a rolling restart costs latency, not errors.
//!
//! * [`workload`]: mix, key choice (uniform, Zipf), value tokens. Pure.
//! * [`check`]: what a read may return, for one key's single writer. Pure.
//! * [`stats`]: histograms, error counts, summaries. Pure.
//! * [`request`]: one request and its reply or failure, for every target.
//! * [`target`]: the request for each system (REST, etcd gateway, K2V, RESP).
//! * [`k2v`]: Garage's K2V requests, their SigV4 signatures and answers. Pure.
//! * [`runner`]: workers, budget, progress line.

pub mod check;
pub mod k2v;
mod redis;
pub mod request;
pub mod runner;
pub mod stats;
pub mod target;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use runner::{Budget, Contexts, Counters, Plan, Worker, run_phase};
use stats::{Bucket, Latency, OpSummary, Recorder};
use target::{Route, Target, TargetKind};

use crate::http_client::ClientTls;
use workload::{Distribution, KeyChooser, Mix, Op};

const DEFAULT_DURATION_S: f64 = 10.0;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    vinzclortho bench --nodes 127.0.0.1:8880,127.0.0.1:8881,127.0.0.1:8882 --duration 10 --mix read=95,write=5 --preload\n  \
    vinzclortho bench --nodes 127.0.0.1:8880 --ops 100000 --distribution zipf --check --json\n  \
    vinzclortho bench --nodes 127.0.0.1:8880,127.0.0.1:8881,127.0.0.1:8882 --duration 60 --check --verify --failover\n  \
    vinzclortho bench --target etcd --nodes 127.0.0.1:2379 --duration 10\n  \
    vinzclortho bench --target garage --nodes 127.0.0.1:3904 --bucket bench --access-key-id GK... --secret-access-key ...")]
pub struct BenchArgs {
    /// Nodes to send requests to, spread round robin; `https://HOST:PORT`
    /// for HTTPS (so is every HOST:PORT with --cacert)
    #[arg(long, required = true, value_delimiter = ',', value_name = "HOST:PORT,...", value_parser = parse_node)]
    pub nodes: Vec<String>,
    /// The CA that signed the nodes' HTTP certificates (PEM): speak HTTPS,
    /// checking each node's certificate against it [default: plain HTTP,
    /// unless a node says https://]
    #[arg(long, value_name = "FILE", env = "VINZCLORTHO_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
    /// What the nodes are
    #[arg(long, value_enum, default_value_t = TargetKind::Vinz)]
    pub target: TargetKind,
    /// Run for this many seconds [default: 10, unless --ops is given].
    /// SIGINT or SIGTERM ends the run sooner; it is reported all the same
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Stop after this many requests in all
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// Requests in flight at once (one worker each); with --rate, at most
    #[arg(short = 'c', long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Open loop: start requests at this many per second in all (spread
    /// evenly over the workers) instead of each worker sending its next
    /// request when the last is answered. Latency then counts from when a
    /// request was due, not when it was sent, so a server that stalls is
    /// not hidden by the generator waiting for it (coordinated omission).
    /// Give enough --concurrency to keep up: a worker that falls behind
    /// sends at once, and its wait counts
    #[arg(long, value_name = "OPS", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Relative weights of reads, writes and deletes
    #[arg(long, default_value = "read=50,write=50,delete=0", value_name = "read=W,write=W,delete=W")]
    pub mix: Mix,
    /// Number of distinct keys
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// How keys are chosen
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Exponent s of --distribution zipf (0 is uniform; YCSB uses 0.99)
    #[arg(long, default_value_t = 0.99, value_name = "S", value_parser = parse_exponent, allow_negative_numbers = true)]
    pub zipf_exponent: f64,
    /// Size of written values in bytes
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Read quorum per request (?r=): a number, one, quorum, all or default
    #[arg(long = "r", value_name = "R", value_parser = parse_quorum)]
    pub r: Option<String>,
    /// Write quorum per request (?w=): a number, one, quorum, all or default
    #[arg(long = "w", value_name = "W", value_parser = parse_quorum)]
    pub w: Option<String>,
    /// Write every key once before measuring (for read-heavy mixes). On
    /// vinz, each key is read first, so that writes carry its context: the
    /// generator knows no context at start, and a write without one adds a
    /// sibling to a key an earlier run left. On garage every write without
    /// a causality token reads first anyway
    #[arg(long)]
    pub preload: bool,
    /// The run's keys are not stored yet (an empty cluster, or a
    /// --key-prefix no run used before): --preload writes each key without
    /// reading it first, half the requests (for loading many keys). On keys
    /// that are stored, each write adds a sibling
    #[arg(long, requires = "preload")]
    pub new_keys: bool,
    /// Correctness mode: one writer per key, every read checked against
    /// what was written; any mismatch or failed request fails the run.
    /// Keys get a fresh per-run prefix.
    #[arg(long)]
    pub check: bool,
    /// After the run (with --check): read every key of the run back with
    /// r=all and check it against the last write acknowledged for it, so
    /// that an acknowledged write that was lost fails the run
    #[arg(long, requires = "check")]
    pub verify: bool,
    /// When a node does not answer a request (connection refused, a 503 of
    /// a node shutting down, a connection that breaks before the answer),
    /// send it on to the next node of --nodes instead of failing it; each
    /// node is tried once. For rolling restarts. A write sent on after a
    /// broken connection may have landed twice; --check allows for that.
    /// Not with --target redis
    #[arg(long)]
    pub failover: bool,
    /// Which node each request goes to: `any`, round robin over --nodes;
    /// `preflist`, a node of --nodes that is a primary replica of the key
    /// (learnt once before the run from /admin/ring and /admin/preflist,
    /// as Riak's smart clients do), so the node that receives a write
    /// stamps it itself. --target vinz only
    #[arg(long, value_enum, default_value_t = Route::Any)]
    pub route: Route,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Seed of the workload's random choices [default: random]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Longest wait for one request, in milliseconds
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Bearer token sent with every request to vinz (a cluster with
    /// --security needs one with read, write and delete on default/default)
    #[arg(long, env = "VINZCLORTHO_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Prefix of every key name
    #[arg(long, default_value = "bench-", value_name = "PREFIX")]
    pub key_prefix: String,
    /// No progress line on stderr
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub garage: k2v::GarageArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("'{s}' is not a rate above 0 (requests per second)")),
    }
}

fn parse_node(s: &str) -> Result<String, String> {
    let address = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    crate::config::split_host_port(address.trim_end_matches('/')).map(|_| s.to_owned())
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

fn parse_exponent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number 0 or above")),
    }
}

fn parse_quorum(s: &str) -> Result<String, String> {
    s.parse::<crate::core::bucket::QuorumParam>().map(|_| s.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot reach {node} (--target {target}): {reason}")]
    Unreachable { node: String, target: TargetKind, reason: String },
}

/// What a run measured; `--json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: TargetKind,
    pub nodes: Vec<String>,
    pub concurrency: usize,
    /// `--rate`: the open-loop rate asked for (requests per second).
    pub rate: Option<f64>,
    pub mix: String,
    pub keys: u64,
    pub distribution: Distribution,
    pub zipf_exponent: Option<f64>,
    pub value_size_bytes: usize,
    pub r: Option<String>,
    pub w: Option<String>,
    pub seed: u64,
    pub key_prefix: String,
    pub check: bool,
    pub preload: Option<PreloadSummary>,
    /// The read-back after the run (`--verify`).
    pub verify: Option<VerifySummary>,
    pub elapsed_s: f64,
    pub overall: OpSummary,
    pub operations: BTreeMap<Op, OpSummary>,
    /// Every answered request's latency, in buckets 10 % wide from 10 µs
    /// (`bench/plot_latency.py` draws it): how many took at most `le_ms`
    /// and more than the bucket before.
    pub latency_histogram: Vec<Bucket>,
    pub reads_not_found: u64,
    pub reads_siblings: u64,
    pub reads_checked: u64,
    pub mismatches: u64,
    pub mismatch_examples: Vec<String>,
    /// Requests sent on to another node (`--failover`).
    pub failovers: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// Keys read back: every key of the run.
    pub keys: u64,
    pub elapsed_s: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub mismatches: u64,
    pub mismatch_examples: Vec<String>,
    pub failovers: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PreloadSummary {
    pub keys: u64,
    pub elapsed_s: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl Report {
    /// Why this run must not count, if it must not.
    pub fn failure(&self) -> Option<String> {
        if self.overall.ops == 0 {
            return Some("no request succeeded".into());
        }
        if !self.check {
            return None;
        }
        let preload_errors = self.preload.as_ref().map_or(0, |p| p.errors);
        let (verify_errors, verify_mismatches) = self.verify.as_ref().map_or((0, 0), |v| (v.errors, v.mismatches));
        let failed = self.overall.errors + preload_errors + verify_errors;
        let mismatches = self.mismatches + verify_mismatches;
        (failed > 0 || mismatches > 0)
            .then(|| format!("check failed: {mismatches} mismatched reads, {failed} failed requests"))
    }
}

/// The subcommand: runs, prints the report, and says how it went. When
/// `stop` resolves (SIGINT or SIGTERM) the load ends early; `--verify` still
/// reads every key back, and what ran is reported as usual.
pub async fn main(args: BenchArgs, stop: impl Future<Output = ()> + Send + 'static) -> ExitCode {
    let json = args.json;
    match run(args, stop).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
            } else {
                print!("{}", render(&report));
            }
            match report.failure() {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprintln!("vinzclortho bench: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e @ BenchError::Invalid(_)) => {
            eprintln!("vinzclortho bench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vinzclortho bench: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(args: BenchArgs, stop: impl Future<Output = ()> + Send + 'static) -> Result<Report, BenchError> {
    let mut plan = plan(&args)?;
    if args.route == Route::Preflist {
        plan.target = plan.target.clone().learn_placement().await.map_err(|e| BenchError::Unreachable {
            node: plan.target.nodes[0].clone(),
            target: plan.target.kind,
            reason: format!("--route preflist: {e}"),
        })?;
    }
    let plan = Arc::new(plan);
    let stopper = tokio::spawn({
        let plan = plan.clone();
        async move {
            stop.await;
            eprintln!("vinzclortho bench: stopping early; the report covers what ran");
            plan.stop();
        }
    });
    let report = run_plan(&args, plan).await;
    stopper.abort();
    report
}

async fn run_plan(args: &BenchArgs, plan: Arc<Plan>) -> Result<Report, BenchError> {
    for (i, node) in plan.target.nodes.iter().enumerate() {
        plan.target.probe(i).await.map_err(|e| BenchError::Unreachable {
            node: node.clone(),
            target: plan.target.kind,
            reason: e.to_string(),
        })?;
    }
    let mut workers = (0..plan.concurrency)
        .map(|id| Worker::new(plan.clone(), id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BenchError::Invalid)?;

    let mut preload = None;
    if args.preload {
        let (done, elapsed_s) = run_phase(&plan, "preload", workers, |mut w| async move {
            w.preload().await;
            w
        })
        .await;
        let mut recorder = Recorder::default();
        for w in &done {
            recorder.merge(&w.recorder);
        }
        let (_, all) = recorder.summarize(elapsed_s);
        preload =
            Some(PreloadSummary { keys: plan.keys, elapsed_s, errors: all.errors, errors_by_kind: all.errors_by_kind });
        workers = done.into_iter().map(|mut w| (w.recorder = Recorder::default(), w).1).collect();
        plan.reset_counters();
    }

    let budget = Arc::new(match args.ops {
        Some(max) => Budget::Ops { taken: AtomicU64::new(0), max },
        None => Budget::Until(Instant::now() + Duration::from_secs_f64(args.duration.unwrap_or(DEFAULT_DURATION_S))),
    });
    let (done, elapsed_s) = run_phase(&plan, "run", workers, |mut w| {
        let budget = budget.clone();
        async move {
            w.run(&budget).await;
            w
        }
    })
    .await;
    let mut recorder = Recorder::default();
    for w in &done {
        recorder.merge(&w.recorder);
    }
    let (operations, overall) = recorder.summarize(elapsed_s);
    let mut verify = None;
    if args.verify {
        let workers = done.into_iter().map(|mut w| (w.recorder = Recorder::default(), w).1).collect();
        let (done, elapsed_s) = run_phase(&plan, "verify", workers, |mut w| async move {
            w.verify().await;
            w
        })
        .await;
        let mut checked = Recorder::default();
        for w in &done {
            checked.merge(&w.recorder);
        }
        let (_, all) = checked.summarize(elapsed_s);
        verify = Some(VerifySummary {
            keys: all.ops + all.errors,
            elapsed_s,
            errors: all.errors,
            errors_by_kind: all.errors_by_kind,
            mismatches: checked.mismatches,
            mismatch_examples: checked.mismatch_examples,
            failovers: checked.failovers,
        });
    }
    Ok(Report {
        target: plan.target.kind,
        nodes: plan.target.nodes.to_vec(),
        concurrency: plan.concurrency,
        rate: plan.rate,
        mix: plan.mix.to_string(),
        keys: plan.keys,
        distribution: plan.distribution,
        zipf_exponent: (plan.distribution == Distribution::Zipf).then_some(plan.zipf_exponent),
        value_size_bytes: plan.value_size,
        r: args.r.clone(),
        w: args.w.clone(),
        seed: plan.seed,
        key_prefix: plan.key_prefix.clone(),
        check: plan.check,
        preload,
        verify,
        elapsed_s,
        overall,
        operations,
        latency_histogram: recorder.histogram(),
        reads_not_found: recorder.reads_not_found,
        reads_siblings: recorder.reads_siblings,
        reads_checked: recorder.reads_checked,
        mismatches: recorder.mismatches,
        mismatch_examples: recorder.mismatch_examples,
        failovers: recorder.failovers,
    })
}

fn plan(args: &BenchArgs) -> Result<Plan, BenchError> {
    let invalid = |s: String| BenchError::Invalid(s);
    let concurrency = args.concurrency as usize;
    if args.check && args.keys < concurrency as u64 {
        return Err(invalid(format!(
            "--check gives each worker its own keys: --keys ({}) must be at least --concurrency ({concurrency})",
            args.keys
        )));
    }
    if args.target != TargetKind::Vinz && (args.r.is_some() || args.w.is_some()) {
        return Err(invalid(format!(
            "--r and --w are Vinz Clortho's; --target {} has no per-request quorum",
            args.target
        )));
    }
    if args.route == Route::Preflist && args.target != TargetKind::Vinz {
        return Err(invalid(format!("--route preflist is for --target vinz, not {}", args.target)));
    }
    if args.failover && args.target == TargetKind::Redis {
        return Err(invalid(
            "--failover is for HTTP targets; --target redis keeps one connection per worker to one node".into(),
        ));
    }
    let chooser = KeyChooser::new(args.keys, args.distribution, args.zipf_exponent).map_err(invalid)?;
    // A fresh prefix per checked run: keys of earlier runs cannot confuse it.
    let key_prefix =
        if args.check { format!("{}{:08x}-", args.key_prefix, rand::random::<u32>()) } else { args.key_prefix.clone() };
    let tls = ClientTls::from_flags(args.cacert.as_deref(), args.nodes.iter().map(String::as_str))
        .map_err(|e| invalid(format!("--cacert: {e}")))?;
    if args.target == TargetKind::Redis && (tls.https() || args.nodes.iter().any(|n| n.contains("://"))) {
        return Err(invalid("--target redis takes HOST:PORT nodes and no --cacert (RESP without TLS)".into()));
    }
    let target = Target::new(
        args.target,
        args.nodes.clone(),
        &tls,
        args.r.clone(),
        args.w.clone(),
        Duration::from_millis(args.timeout_ms),
    )
    .with_token(args.token.as_deref())
    .map_err(BenchError::Invalid)?
    .with_failover(args.failover);
    let target = match args.target {
        TargetKind::Garage => target.with_k2v(k2v::K2v::from_args(&args.garage).map_err(invalid)?),
        _ => target,
    };
    Ok(Plan {
        target,
        mix: args.mix,
        keys: args.keys,
        chooser,
        distribution: args.distribution,
        zipf_exponent: args.zipf_exponent,
        value_size: args.value_size,
        check: args.check,
        new_keys: args.new_keys,
        key_prefix,
        seed: args.seed.unwrap_or_else(rand::random),
        concurrency,
        rate: args.rate,
        progress: !args.quiet,
        contexts: Contexts::new(64),
        counters: Counters::default(),
        stopped: AtomicBool::new(false),
    })
}

/// The report as a table for people.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let keys = match r.zipf_exponent {
        Some(s) => format!("zipf (s={s})"),
        None => "uniform".into(),
    };
    let in_flight = match r.rate {
        Some(rate) => format!("{rate:.0} requests/s open loop, up to {}", r.concurrency),
        None => r.concurrency.to_string(),
    };
    let _ = writeln!(
        out,
        "{} at {}: {in_flight} in flight, {} keys {keys}, {}-byte values, mix {}{}",
        r.target,
        r.nodes.join(","),
        r.keys,
        r.value_size_bytes,
        r.mix,
        if r.check { ", checked" } else { "" },
    );
    if let Some(p) = &r.preload {
        let _ = writeln!(out, "preload: {} keys in {:.1} s, {} errors", p.keys, p.elapsed_s, p.errors);
    }
    let _ = writeln!(out, "{:.1} s measured\n", r.elapsed_s);
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "ops", "ops/s", "errors", "mean ms", "p50", "p90", "p99", "p99.9", "max"
    );
    let row = |out: &mut String, name: &str, s: &OpSummary| {
        let Latency { mean, p50, p90, p99, p99_9, max } = s.latency_ms;
        let _ = writeln!(
            out,
            "{name:<8} {:>10} {:>10.0} {:>7} {mean:>8.2} {p50:>8.2} {p90:>8.2} {p99:>8.2} {p99_9:>8.2} {max:>8.2}",
            s.ops, s.ops_per_s, s.errors
        );
    };
    for (op, s) in &r.operations {
        row(&mut out, op.name(), s);
    }
    row(&mut out, "overall", &r.overall);
    if r.reads_not_found + r.reads_siblings > 0 {
        let _ = writeln!(out, "\nreads: {} not found, {} with siblings", r.reads_not_found, r.reads_siblings);
    }
    if !r.overall.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r.overall.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(out, "errors: {}", kinds.join(", "));
    }
    if r.failovers > 0 {
        let _ = writeln!(out, "failover: {} requests sent on to another node", r.failovers);
    }
    if r.check {
        let _ = writeln!(out, "check: {} reads verified, {} mismatches", r.reads_checked, r.mismatches);
        for example in &r.mismatch_examples {
            let _ = writeln!(out, "  {example}");
        }
    }
    if let Some(v) = &r.verify {
        let _ = writeln!(
            out,
            "verify: {} keys read back with r=all in {:.1} s, {} errors, {} mismatches",
            v.keys, v.elapsed_s, v.errors, v.mismatches
        );
        for example in &v.mismatch_examples {
            let _ = writeln!(out, "  {example}");
        }
    }
    out
}
