//! A run: workers, each one request in flight, share the target and a
//! budget (a deadline or an operation count); a progress line once a second;
//! per-worker recorders merged at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::check::{KeyOracle, Observed, Outcome};
use super::request::{Reply, Request};
use super::stats::Recorder;
use super::target::{Conn, Target, TargetKind};
use super::workload::{KeyChooser, Mix, Op, Shard, Token};

/// Everything the workers share.
pub struct Plan {
    pub target: Target,
    pub mix: Mix,
    pub keys: u64,
    /// Key choice over all keys (without --check).
    pub chooser: KeyChooser,
    pub distribution: super::workload::Distribution,
    pub zipf_exponent: f64,
    pub value_size: usize,
    pub check: bool,
    /// `--new-keys`: no key of the run is stored before it.
    pub new_keys: bool,
    pub key_prefix: String,
    pub seed: u64,
    pub concurrency: usize,
    /// `--rate`: requests per second in all, open loop.
    pub rate: Option<f64>,
    pub progress: bool,
    pub contexts: Contexts,
    pub counters: Counters,
    /// Set by a signal: the load (preload, run) ends at its next request.
    pub stopped: AtomicBool,
}

/// Totals the progress line reads while workers run.
#[derive(Default)]
pub struct Counters {
    done: AtomicU64,
    errors: AtomicU64,
}

/// The last causal context seen for each key, by any worker: a write
/// carries it, so it supersedes what was read or written before instead of
/// piling up siblings. Sharded so workers seldom wait on each other.
pub struct Contexts {
    shards: Vec<Mutex<HashMap<u64, HeaderValue>>>,
}

impl Contexts {
    pub fn new(shards: usize) -> Contexts {
        Contexts { shards: (0..shards.max(1)).map(|_| Mutex::default()).collect() }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, HeaderValue>> {
        &self.shards[(key % self.shards.len() as u64) as usize]
    }

    fn get(&self, key: u64) -> Option<HeaderValue> {
        self.shard(key).lock().expect("no panics while holding the lock").get(&key).cloned()
    }

    fn set(&self, key: u64, context: Option<&HeaderValue>) {
        if let Some(context) = context {
            // A copy, not a clone: a header parsed by hyper is a slice of the
            // whole response's read buffer, and a clone kept that buffer
            // (kilobytes) alive per key: a 10-million-key preload grew the
            // generator by 8 KiB a key until it ran out of memory.
            let owned = HeaderValue::from_bytes(context.as_bytes()).expect("it was a header value");
            self.shard(key).lock().expect("no panics while holding the lock").insert(key, owned);
        }
    }

    /// Drops the key's context: a write spent it.
    fn forget(&self, key: u64) {
        self.shard(key).lock().expect("no panics while holding the lock").remove(&key);
    }
}

/// When workers stop taking new requests.
pub enum Budget {
    Until(Instant),
    Ops { taken: AtomicU64, max: u64 },
}

impl Budget {
    fn take(&self) -> bool {
        match self {
            Budget::Until(deadline) => Instant::now() < *deadline,
            Budget::Ops { taken, max } => taken.fetch_add(1, Ordering::Relaxed) < *max,
        }
    }
}

pub struct Worker {
    id: u64,
    plan: Arc<Plan>,
    conn: Conn,
    rng: StdRng,
    shard: Shard,
    /// Key choice within the shard (with --check).
    shard_chooser: KeyChooser,
    oracles: HashMap<u64, KeyOracle>,
    seq: u64,
    /// With --rate: when the request about to be sent was due; its latency
    /// counts from then.
    due: Option<Instant>,
    pub recorder: Recorder,
}

impl Worker {
    pub fn new(plan: Arc<Plan>, id: usize) -> Result<Worker, String> {
        let shard = Shard { worker: id as u64, workers: plan.concurrency as u64, keys: plan.keys };
        let shard_chooser = KeyChooser::new(shard.len().max(1), plan.distribution, plan.zipf_exponent)?;
        // Distinct, reproducible streams per worker.
        let rng = StdRng::seed_from_u64(plan.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok(Worker {
            id: id as u64,
            conn: plan.target.conn(id),
            plan,
            rng,
            shard,
            shard_chooser,
            oracles: HashMap::new(),
            seq: 0,
            due: None,
            recorder: Recorder::default(),
        })
    }

    /// Writes every key of this worker's shard once. On Vinz Clortho it
    /// reads each key first, unless the run's keys are new (--check,
    /// --new-keys): a write without the context of what is stored adds a
    /// sibling, so keys left by an earlier run would otherwise all get one.
    pub async fn preload(&mut self) {
        let read_first = self.plan.target.kind == TargetKind::Vinz && !self.plan.check && !self.plan.new_keys;
        for j in 0..self.shard.len() {
            if self.plan.stopped() {
                break;
            }
            let key = self.shard.key(j);
            if read_first {
                self.read(key).await;
            }
            self.write(Op::Write, key).await;
        }
    }

    pub async fn run(&mut self, budget: &Budget) {
        let mut schedule = self.plan.rate.map(|rate| Schedule::new(rate, self.plan.concurrency, self.id));
        while !self.plan.stopped() && budget.take() {
            if let Some(schedule) = &mut schedule {
                let due = schedule.next();
                tokio::time::sleep_until(due.into()).await;
                self.due = Some(due);
            }
            let op = self.plan.mix.sample(&mut self.rng);
            let key = if self.plan.check {
                self.shard.key(self.shard_chooser.sample(&mut self.rng))
            } else {
                self.plan.chooser.sample(&mut self.rng)
            };
            match op {
                Op::Read => self.read(key).await,
                Op::Write | Op::Delete => {
                    if self.oracles.get(&key).is_some_and(KeyOracle::uncertain) {
                        // A write whose outcome is unknown may have landed:
                        // read first so the next write's context covers it.
                        self.read(key).await;
                    }
                    self.write(op, key).await;
                }
            }
        }
    }

    /// Reads every key of this worker's shard back with `r=all` and checks
    /// each against what this worker knows it wrote (`--verify`, after the
    /// run): an acknowledged write that is gone is a mismatch.
    pub async fn verify(&mut self) {
        let mut conn = self.plan.target.with_read_quorum("all").conn(self.id as usize);
        std::mem::swap(&mut self.conn, &mut conn);
        // Not cut short by a signal: a stopped run is still checked whole.
        for j in 0..self.shard.len() {
            self.read(self.shard.key(j)).await;
        }
        std::mem::swap(&mut self.conn, &mut conn);
    }

    fn key_name(&self, key: u64) -> String {
        format!("{}{key}", self.plan.key_prefix)
    }

    async fn read(&mut self, key: u64) {
        let name = self.key_name(key);
        let request = Request { op: Op::Read, key: &name, value: Bytes::new(), context: None };
        let started = self.due.take().unwrap_or_else(Instant::now);
        let attempts = self.conn.call_failing_over(&request).await;
        let latency_us = started.elapsed().as_micros() as u64;
        self.recorder.failovers += u64::from(attempts.failovers);
        let reply = match attempts.result {
            Ok(reply) => reply,
            Err(failure) => return self.failed(Op::Read, failure.kind()),
        };
        self.recorder.success(Op::Read, latency_us);
        self.plan.counters.done.fetch_add(1, Ordering::Relaxed);
        self.plan.contexts.set(key, reply.context());
        let observed = match &reply {
            Reply::NotFound(_) => {
                self.recorder.reads_not_found += 1;
                Observed::Absent
            }
            Reply::Siblings(values, _) => {
                self.recorder.reads_siblings += 1;
                Observed::Siblings(values.iter().map(|v| self.seq_of(key, v)).collect())
            }
            Reply::Value(value, _) => Observed::Value(self.seq_of(key, value)),
            Reply::Done(_) => Observed::Value(None),
        };
        if self.plan.check {
            self.recorder.reads_checked += 1;
            let oracle = self.oracles.entry(key).or_default();
            if let Err(mismatch) = oracle.check(&observed) {
                self.recorder.mismatch(format!("key {name}: {mismatch}"));
            }
        }
    }

    /// A write (`Op::Write`) or a delete (`Op::Delete`) of `key`.
    async fn write(&mut self, op: Op, key: u64) {
        let name = self.key_name(key);
        let seq = self.seq;
        self.seq += 1;
        let value = match op {
            Op::Write => Bytes::from(Token { worker: self.id, key, seq }.value(self.plan.value_size)),
            _ => Bytes::new(),
        };
        let request = Request { op, key: &name, value, context: self.plan.contexts.get(key) };
        let started = self.due.take().unwrap_or_else(Instant::now);
        let attempts = self.conn.call_failing_over(&request).await;
        let latency_us = started.elapsed().as_micros() as u64;
        self.recorder.failovers += u64::from(attempts.failovers);
        if !self.plan.target.kind.writes_return_context() {
            // Sent, so it may have landed: the token it carried no longer
            // covers what is stored (see `TargetKind::writes_return_context`).
            self.plan.contexts.forget(key);
        }
        let version = (op == Op::Write).then_some(seq);
        // Sent on after a connection broke: the first node may have stored
        // it too, so it may come back as a sibling of itself.
        if attempts.doubtful && self.plan.check {
            self.oracles.entry(key).or_default().wrote(version, Outcome::Unknown);
        }
        let outcome = match attempts.result {
            Ok(reply) => {
                self.recorder.success(op, latency_us);
                self.plan.counters.done.fetch_add(1, Ordering::Relaxed);
                self.plan.contexts.set(key, reply.context());
                Outcome::Acknowledged
            }
            Err(failure) => {
                let outcome = failure.outcome();
                self.failed(op, failure.kind());
                outcome
            }
        };
        if self.plan.check {
            self.oracles.entry(key).or_default().wrote(version, outcome);
        }
    }

    fn failed(&mut self, op: Op, kind: String) {
        self.recorder.error(op, kind);
        self.plan.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The sequence number of a value this worker wrote to this key.
    fn seq_of(&self, key: u64, value: &[u8]) -> Option<u64> {
        Token::parse(value, self.plan.value_size).filter(|t| t.worker == self.id && t.key == key).map(|t| t.seq)
    }
}

/// When one worker's requests are due under `--rate`: every
/// `concurrency / rate` seconds, the workers offset from each other so that
/// the whole load arrives evenly rather than in bursts of `concurrency`.
struct Schedule {
    next: Instant,
    every: Duration,
}

impl Schedule {
    fn new(rate: f64, workers: usize, id: u64) -> Schedule {
        let every = Duration::from_secs_f64(workers as f64 / rate);
        let next = Instant::now() + every.mul_f64(id as f64 / workers as f64);
        Schedule { next, every }
    }

    /// The next request's due time. Behind schedule, it is in the past:
    /// the request goes at once and the wait counts in its latency.
    fn next(&mut self) -> Instant {
        let due = self.next;
        self.next += self.every;
        due
    }
}

/// Runs `phase` on every worker at once; returns the workers and the time
/// it took. A progress line goes to stderr once a second meanwhile.
pub async fn run_phase<F, Fut>(
    plan: &Arc<Plan>,
    label: &'static str,
    workers: Vec<Worker>,
    phase: F,
) -> (Vec<Worker>, f64)
where
    F: Fn(Worker) -> Fut,
    Fut: Future<Output = Worker> + Send + 'static,
{
    let started = Instant::now();
    let progress = plan.progress.then(|| tokio::spawn(progress(plan.clone(), label, started)));
    let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(phase(w))).collect();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.expect("bench workers do not panic"));
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
    }
    (done, elapsed_s)
}

async fn progress(plan: Arc<Plan>, label: &'static str, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_done, mut last_at) = (plan.counters.done.load(Ordering::Relaxed), Instant::now());
    loop {
        tick.tick().await;
        let (done, errors) = (plan.counters.done.load(Ordering::Relaxed), plan.counters.errors.load(Ordering::Relaxed));
        let now = Instant::now();
        let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "bench {label}: {:>5.1} s  {rate:>9.0} ops/s  {done:>10} ops  {errors} errors",
            started.elapsed().as_secs_f64()
        );
        (last_done, last_at) = (done, now);
    }
}

impl Plan {
    /// Ends the load at its next request (a signal); `--verify` still runs.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    pub fn reset_counters(&self) {
        self.counters.done.store(0, Ordering::Relaxed);
        self.counters.errors.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context kept for a key must not pin the response buffer it was
    /// parsed from (see `Contexts::set`).
    #[test]
    fn a_kept_context_owns_its_bytes() {
        let response = Bytes::from(vec![b'c'; 8192]);
        let header = HeaderValue::from_maybe_shared(response.slice(100..140)).unwrap();
        assert_eq!(header.as_bytes().as_ptr(), response[100..].as_ptr(), "the header is a slice of the response");
        let contexts = Contexts::new(4);
        contexts.set(7, Some(&header));
        let kept = contexts.get(7).unwrap();
        assert_eq!(kept, header);
        let buffer = response.as_ptr_range();
        assert!(!buffer.contains(&kept.as_bytes().as_ptr()), "the kept context points into the response's buffer");
    }
}
