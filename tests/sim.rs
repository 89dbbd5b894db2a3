//! Deterministic simulation of a whole cluster, in one thread.
//!
//! Every node is the shipped code, built by the composition root
//! (`node::start`), with what a seed must control injected through
//! `node::Host`: a clock that follows the simulated time (with per-node
//! skew), a random source seeded from the run's seed, blocking work run
//! inline, and a network (`sim/net.rs`) that carries the real gRPC messages
//! to the real servers while deciding each message's delay or loss. Disks
//! (`sim/disk.rs`) keep what was synced across a power loss and lose the
//! rest. Time is tokio's paused clock: it jumps to the next timer whenever
//! every task waits, so a 20-second run takes well under a second of CPU.
//! Clients send HTTP requests to the nodes' routers in process.
//!
//! A seed fixes everything: the schedule of faults, every message's fate,
//! node ids, actors, the workload. The same seed gives the same history
//! (`sim_is_deterministic` checks it); a failing seed prints the one-line
//! command that replays it.
//!
//! Each run checks what the fault suite checks (`jepsen/checker.rs`: no
//! acknowledged write lost, no phantom, no unexplained stale read or
//! resurrection, convergence after healing) and invariants watched during
//! the run (`invariants`): a dot is never issued for two different values
//! of a key, and every acknowledged write is covered on at least W disks of
//! its key's current holders (so a ring switch never leaves fewer).
//!
//! Commands:
//! * `cargo test --test sim`: as many seeds as fit in `SIM_BUDGET_SECS`
//!   (default 60) on every core, plus the determinism check and the proof
//!   that each deliberate bug (`fault-injection`) is found.
//! * `SIM_BUDGET_SECS=3600 SIM_FIRST_SEED=1000000 cargo test --release --test sim -- sim_seeds`:
//!   many thousands.
//! * `SIM_SEED=42 cargo test --test sim -- --nocapture sim_replay`: one seed,
//!   with its event log (`SIM_FAULT=reuse-actor` to replay with a deliberate
//!   bug; `SIM_NODES`, `SIM_MAX_NODES`, `SIM_SECONDS` as printed). To find
//!   where two runs part: `SIM_DUMP=FILE` writes the history, `SIM_TRACE=FILE`
//!   one line per network message; `SIM_LOG=FILTER` prints the nodes' logs.

#[path = "jepsen/checker.rs"]
#[allow(dead_code)]
mod checker;
#[path = "jepsen/history.rs"]
#[allow(dead_code)]
mod history;

#[path = "sim/disk.rs"]
mod disk;
#[path = "sim/invariants.rs"]
mod invariants;
#[path = "sim/nemesis.rs"]
mod nemesis;
#[path = "sim/net.rs"]
mod net;
#[path = "sim/workload.rs"]
mod workload;
#[path = "sim/world.rs"]
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::membership::Change;

use checker::Report;
use history::{FaultWindow, History, Op};
use net::Net;
use world::Cluster;

/// What one run looks like; every field is in the replay command.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes at the start (more join during the run, up to `max_nodes`).
    pub nodes: usize,
    pub max_nodes: usize,
    pub partitions: u32,
    pub clients: usize,
    /// Simulated seconds of workload under faults.
    pub seconds: u64,
    /// A deliberate bug of the `fault-injection` feature, switched on.
    pub fault: Option<String>,
    /// Leaves and force-removals among the faults (`SIM_DEPARTURES=0`: none,
    /// which replays seeds recorded before they existed).
    pub departures: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { nodes: 4, max_nodes: 6, partitions: 32, clients: 4, seconds: 12, fault: None, departures: true }
    }
}

impl Options {
    fn from_env() -> Options {
        let mut o = Options::default();
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = num("SIM_NODES") {
            o.nodes = v as usize;
        }
        if let Some(v) = num("SIM_MAX_NODES") {
            o.max_nodes = v as usize;
        }
        if let Some(v) = num("SIM_SECONDS") {
            o.seconds = v;
        }
        if let Some(v) = num("SIM_CLIENTS") {
            o.clients = v as usize;
        }
        o.fault = std::env::var("SIM_FAULT").ok().filter(|f| !f.is_empty());
        o.departures = num("SIM_DEPARTURES") != Some(0);
        o
    }

    fn replay_command(&self, seed: u64) -> String {
        let mut fault = self.fault.as_deref().map(|f| format!("SIM_FAULT={f} ")).unwrap_or_default();
        if !self.departures {
            fault.push_str("SIM_DEPARTURES=0 ");
        }
        format!(
            "{fault}SIM_SEED={seed} SIM_NODES={} SIM_MAX_NODES={} SIM_SECONDS={} SIM_CLIENTS={} \
             cargo test --test sim -- --nocapture sim_replay",
            self.nodes, self.max_nodes, self.seconds, self.clients
        )
    }
}

pub struct Outcome {
    pub seed: u64,
    pub report: Report,
    /// Invariant violations and convergence failures.
    pub problems: Vec<String>,
    /// Violations of a known open hole: reported, not failed (see
    /// `invariants`).
    pub known_issues: Vec<String>,
    /// A digest of everything observable: the history and the final state.
    pub digest: u64,
    pub messages: u64,
    pub events: Vec<String>,
    /// The history's operations, one line each (to compare two runs).
    pub ops: Vec<String>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !self.report.valid() || !self.problems.is_empty()
    }

    fn summary(&self) -> String {
        let r = &self.report;
        let mut lines = vec![format!(
            "seed {}: {} ops, {} acknowledged writes, {} unknown, {} messages; lost {}, phantoms {}, stale reads {} \
             ({} excused, {} with a fallback), resurrections {} ({} excused), ryw {}",
            self.seed,
            r.ops,
            r.acknowledged_writes,
            r.unknown,
            self.messages,
            r.lost.len(),
            r.phantoms.len(),
            r.stale_reads.len(),
            r.stale_reads_excused.len(),
            r.stale_reads_fallback.len(),
            r.resurrections.len(),
            r.resurrections_excused.len(),
            r.ryw_violations.len(),
        )];
        let examples = [&r.lost, &r.phantoms, &r.stale_reads, &r.resurrections, &r.ryw_violations];
        lines.extend(examples.iter().flat_map(|v| v.iter().take(3)).cloned());
        lines.extend(self.problems.iter().take(10).cloned());
        lines.extend(self.known_issues.iter().take(3).map(|k| format!("known issue: {k}")));
        lines.join("\n  ")
    }
}

thread_local! {
    /// Panics on this thread during the current run (a failed assertion in
    /// a node's code ends up as a 500 or a dead task, which no client sees).
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records every panic on the thread it happened on, then reports it as usual.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
}

/// Runs one seed to the end, on this thread.
pub fn run(seed: u64, options: &Options) -> Outcome {
    count_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    // `SIM_LOG=filter` (tracing's syntax) shows the nodes' logs, all of
    // them interleaved; the time in each line is the simulated one.
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .try_init();
    }
    vinzclortho::faults::set_for_thread(options.fault.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let mut outcome = runtime.block_on(simulate(seed, options));
    // Tasks the run left waiting (dead processes' streams) go with it.
    drop(runtime);
    let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    outcome.problems.extend(panics.into_iter().map(|p| format!("a node panicked: {p}")));
    vinzclortho::faults::set_for_thread(None);
    outcome
}

/// Log timestamps on the simulated clock.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => write!(w, "{:?}", Instant::now()),
            Err(_) => write!(w, "-"),
        }
    }
}

/// Shared by the run's tasks: what happened, for the checker and the log.
pub struct Record {
    pub ops: Arc<Mutex<Vec<Op>>>,
    pub faults: Mutex<Vec<FaultWindow>>,
    pub events: Mutex<Vec<String>>,
    pub t0: Instant,
}

impl Record {
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn event(&self, what: String) {
        let at = self.now();
        self.events.lock().unwrap().push(format!("{:>8.3}s {what}", at.as_secs_f64()));
    }
}

async fn simulate(seed: u64, options: &Options) -> Outcome {
    // The paused clock starts a few real nanoseconds past the timer wheel's
    // origin; one timer aligns it to whole milliseconds from there, so that
    // no later rounding depends on how fast this machine started the run.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut master = StdRng::seed_from_u64(seed);
    let shared = Arc::new(Mutex::new(StdRng::seed_from_u64(master.random())));
    let net = Net::new(Arc::clone(&shared));
    let cluster = Cluster::new(Arc::clone(&net), shared, options.partitions);
    let record =
        Arc::new(Record { ops: Arc::default(), faults: Mutex::default(), events: Mutex::default(), t0: cluster.t0 });
    let mut problems = Vec::new();

    let first = cluster.add(None);
    if let Err(e) = cluster.start(first).await {
        panic!("the first node does not start: {e}");
    }
    for _ in 1..options.nodes {
        let i = cluster.add(Some(cluster.cluster_address(first)));
        if let Err(e) = cluster.start(i).await {
            problems.push(format!("node {i} could not join at the start: {e}"));
        }
    }
    if settle(&cluster, Duration::from_secs(60)).await.is_none() {
        problems.push("the initial cluster did not settle".into());
    }
    record.event(format!("{} nodes settled", options.nodes));

    let start = Instant::now();
    let until = start + Duration::from_secs(options.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = invariants::Watcher::new(Arc::clone(&cluster), Arc::clone(&record));
    let watch = tokio::spawn(invariants::watch(Arc::clone(&watcher), Arc::clone(&stop)));
    let os = tokio::spawn(nemesis::writeback(
        Arc::clone(&cluster),
        StdRng::seed_from_u64(master.random()),
        Arc::clone(&stop),
    ));
    let nemesis = tokio::spawn(nemesis::run(
        Arc::clone(&cluster),
        Arc::clone(&record),
        StdRng::seed_from_u64(master.random()),
        until,
        options.max_nodes,
        options.departures,
    ));
    let clients: Vec<_> = (0..options.clients)
        .map(|id| {
            let client =
                workload::Client::new(id, master.random(), Arc::clone(&cluster), record.t0, Arc::clone(&record.ops));
            tokio::spawn(client.run(until))
        })
        .collect();
    for client in clients {
        client.await.expect("a client task panicked");
    }
    nemesis.await.expect("the nemesis panicked");
    record.event("workload over; healing".into());

    heal(&cluster, &record).await;
    if settle(&cluster, Duration::from_secs(120)).await.is_none() {
        problems.push(format!("the cluster did not settle within 120 s after healing: {}", describe(&cluster)));
        // What each node's membership holds and owes, to see why.
        for i in 0..cluster.size() {
            cluster.with_app(i, |a| {
                let s = a.membership.snapshot();
                let records: Vec<_> =
                    s.members.values().map(|m| (m.node.to_string(), m.transfers_epoch, m.transfers_done.len())).collect();
                record.event(format!(
                    "node {i}: state ring epoch {} moving {}, members (id, move, done) {records:?}, transfers owed {:?}",
                    s.ring.epoch,
                    s.ring.target.is_some(),
                    a.membership.my_transfers().iter().map(|t| t.partition).collect::<Vec<_>>()
                ))
            });
        }
    }
    let history_ops = record.ops.lock().unwrap().clone();
    let keys: BTreeSet<String> = history_ops.iter().map(|op| op.key.clone()).collect();
    let final_state = match converge(&cluster, &keys, Duration::from_secs(60)).await {
        Some(state) => state,
        None => {
            problems.push("replicas did not converge within 60 s after healing".into());
            BTreeMap::new()
        }
    };
    // Hints drain: once every node is up, every fallback delivers what it
    // holds for others and deletes its hints.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while !invariants::hints_left(&cluster).is_empty() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = invariants::hints_left(&cluster);
    if !left.is_empty() {
        problems.push(format!("hints were not delivered within 60 s after healing: {left:?}"));
    }
    problems.extend(cluster.check_metrics());
    stop.store(true, Ordering::SeqCst);
    let _ = watch.await;
    let _ = os.await;
    watcher.final_check();
    problems.extend(watcher.problems());
    let known_issues = watcher.known_issues();

    let end = record.now();
    let mut faults = record.faults.lock().unwrap().clone();
    for window in &mut faults {
        window.end = window.end.min(end);
    }
    let history = History { ops: history_ops, faults, final_state };
    let report = checker::check(&history);
    let mut digest = DefaultHasher::new();
    format!("{:?}{:?}", history.ops, history.final_state).hash(&mut digest);
    let messages = net.messages.load(Ordering::Relaxed);
    cluster.shutdown();
    if let Ok(path) = std::env::var("SIM_TRACE") {
        std::fs::write(path, net.trace.lock().unwrap().join("\n")).unwrap();
    }
    let events = record.events.lock().unwrap().clone();
    let ops = history.ops.iter().map(|op| format!("{op:?}")).collect();
    Outcome { seed, report, problems, known_issues, digest: digest.finish(), messages, events, ops }
}

/// Ends every fault: links, weather, disks, clocks; starts every stopped node.
async fn heal(cluster: &Arc<Cluster>, record: &Record) {
    cluster.net.heal();
    for i in 0..cluster.size() {
        cluster.disk(i).set_error_rate(0);
        cluster.set_skew(i, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..cluster.size() {
        while !cluster.running(i) && !cluster.is_gone(i) && Instant::now() < deadline {
            match cluster.start(i).await {
                Ok(()) => record.event(format!("node {i} started after healing")),
                Err(e) if e.contains("left the cluster") => {
                    record.event(format!("node {i} left while down: {e}"));
                    cluster.set_gone(i);
                }
                Err(e) => {
                    record.event(format!("node {i} failed to start after healing: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    // A node dead for good whose force-removal the run ended before: it is
    // removed now, through any member that sees it down.
    let dead: Vec<NodeId> = (0..cluster.size())
        .filter(|i| cluster.is_gone(*i) && !cluster.running(*i))
        .filter_map(|i| cluster.nodes.lock().unwrap()[i].id.clone())
        .collect();
    for id in dead {
        let member = |j: usize| cluster.with_app(j, |app| app.membership.snapshot().members.contains_key(&id));
        while cluster.running_nodes().into_iter().any(|j| member(j) == Some(true)) && Instant::now() < deadline {
            for j in cluster.running_nodes() {
                let done = cluster.with_app(j, |app| {
                    app.membership.stage(&id, Change::Remove).is_ok() && app.membership.request_commit().is_ok()
                });
                if done == Some(true) {
                    record.event(format!("force-remove of {id} staged and committed through node {j} after healing"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The ring epoch once every node runs, sees every other up, and all agree
/// on one ring with nothing moving.
fn settled(cluster: &Cluster) -> Option<u64> {
    // A node that left (or learnt it was removed) is no member any more.
    for i in 0..cluster.size() {
        if cluster.with_app(i, |app| app.membership.stopped().is_some()) == Some(true) {
            cluster.set_gone(i);
        }
    }
    let n = cluster.members();
    let mut epochs = BTreeSet::new();
    for i in (0..cluster.size()).filter(|i| !cluster.is_gone(*i)) {
        let (epoch, ok) = cluster.with_app(i, |app| {
            let members = app.membership.members();
            let view = app.membership.view();
            // The ring is what the claims ask for, so the claimant has nothing
            // left to plan (a new claimant waits a failure timeout first).
            let state = app.membership.snapshot();
            let placed = state
                .desired_ring(&mut vinzclortho::core::ring::Planner::default())
                .is_ok_and(|desired| desired == state.ring.current);
            (
                view.epoch,
                members.len() == n && members.iter().all(|m| m.status == "up") && placed && view.target.is_none(),
            )
        })?;
        if !ok {
            return None;
        }
        epochs.insert(epoch);
    }
    (epochs.len() == 1).then(|| epochs.pop_first()).flatten()
}

async fn settle(cluster: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(epoch) = settled(cluster) {
            return Some(epoch);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(cluster: &Cluster) -> String {
    (0..cluster.size())
        .map(|i| {
            cluster
                .with_app(i, |app| {
                    let view = app.membership.view();
                    let up = app.membership.members().iter().filter(|m| m.status == "up").count();
                    format!("node {i}: epoch {} moving {} up {up}", view.epoch, view.target.is_some())
                })
                .unwrap_or_else(|| format!("node {i}: down"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads every key with r=all (read repair) until every holder's disk has
/// the same values for it; returns those values, sorted, per key.
async fn converge(
    cluster: &Arc<Cluster>,
    keys: &BTreeSet<String>,
    timeout: Duration,
) -> Option<BTreeMap<String, Vec<String>>> {
    let deadline = Instant::now() + timeout;
    let mut round = 0;
    loop {
        round += 1;
        let mut state = BTreeMap::new();
        let mut agreed = true;
        for key in keys {
            let node = round % cluster.size();
            let request = http::Request::get(format!("/store/{key}?r=all")).body(axum::body::Body::empty()).unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), cluster.request(node, request)).await;
            match invariants::holder_values(cluster, &ObjectKey::in_default_bucket(key.clone())) {
                Some(values) => {
                    state.insert(key.clone(), values);
                }
                None => agreed = false,
            }
        }
        if agreed {
            return Some(state);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn budget() -> Duration {
    let secs = std::env::var("SIM_BUDGET_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// Runs seeds from `first` on every core until the budget is spent or one
/// fails; returns the seeds run and the first failure.
fn explore(first: u64, options: &Options, budget: Duration, stop_at_failure: bool) -> (u64, Vec<Outcome>) {
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicU64::new(first));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let known = Arc::new(Mutex::new(Vec::new()));
    let found = Arc::new(AtomicBool::new(false));
    let threads = std::env::var("SIM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while started.elapsed() < budget && !(stop_at_failure && found.load(Ordering::SeqCst)) {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    let outcome = run(seed, options);
                    done.fetch_add(1, Ordering::SeqCst);
                    if outcome.failed() {
                        found.store(true, Ordering::SeqCst);
                        failures.lock().unwrap().push(outcome);
                    } else if !outcome.known_issues.is_empty() {
                        known.lock().unwrap().push(outcome.seed);
                    }
                }
            });
        }
    });
    let mut failures = std::mem::take(&mut *failures.lock().unwrap());
    failures.sort_by_key(|o| o.seed);
    let mut known = std::mem::take(&mut *known.lock().unwrap());
    known.sort_unstable();
    if !known.is_empty() {
        println!("seeds that hit the known open hole (two rings at one epoch): {known:?}");
    }
    (done.load(Ordering::SeqCst), failures)
}

/// The simulation tests each use every core: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn sim_seeds() {
    let _serial = serial();
    let options = Options::from_env();
    let first = std::env::var("SIM_FIRST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let started = std::time::Instant::now();
    let (runs, failures) = explore(first, &options, budget(), false);
    println!(
        "simulation: {runs} seeds from {first} in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for failure in &failures {
        println!("FAILED {}\n  replay: {}", failure.summary(), options.replay_command(failure.seed));
    }
    assert!(runs > 0, "no seed ran within the budget");
    assert!(failures.is_empty(), "{} of {runs} seeds failed (see above)", failures.len());
}

#[test]
fn sim_replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) else { return };
    let options = Options::from_env();
    let started = std::time::Instant::now();
    let outcome = run(seed, &options);
    for event in &outcome.events {
        println!("{event}");
    }
    println!("{}\n  digest {:016x}, {:.2} s", outcome.summary(), outcome.digest, started.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("SIM_DUMP") {
        std::fs::write(path, outcome.ops.join("\n")).unwrap();
    }
    assert!(!outcome.failed(), "seed {seed} failed");
}

#[test]
fn sim_is_deterministic() {
    let _serial = serial();
    // A seed whose run has joins, claim changes and transfers.
    let (seed, options) = (24, Options::from_env());
    let a = run(seed, &options);
    let b = run(seed, &options);
    assert!(a.report.ops > 100, "too few operations to compare: {}", a.report.ops);
    if let Some(i) = (0..a.ops.len().min(b.ops.len())).find(|&i| a.ops[i] != b.ops[i]) {
        panic!("one seed, two histories: operation {i} was\n  {}\nthen\n  {}", a.ops[i], b.ops[i]);
    }
    assert_eq!(a.events, b.events, "one seed, two schedules");
    assert_eq!((a.messages, a.digest), (b.messages, b.digest), "one seed, two histories");
    // And in another process, where everything seeded by the OS (hash map
    // keys, tokio's own random choices) differs.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sim_replay", "--nocapture"])
        .env("SIM_SEED", seed.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let digest = format!("digest {:016x}", a.digest);
    assert!(
        stdout.contains(&digest),
        "another process replayed seed {seed} differently (expected {digest}):\n{stdout}"
    );
}

/// The simulator earns its keep only if it finds bugs: with each deliberate
/// bug of the `fault-injection` feature switched on, some seed within the
/// budget must fail (and its replay command is printed, like any failure).
#[test]
fn sim_finds_each_deliberate_bug() {
    let _serial = serial();
    // Each search stops at its first failing seed (5 to 35 s here); the
    // budget only matters when a bug goes unnoticed.
    let budget = std::env::var("SIM_CANARY_BUDGET_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    for fault in ["ack-before-quorum", "reuse-actor", "switch-before-data-moved"] {
        let options = Options { fault: Some(fault.to_owned()), ..Options::default() };
        let started = std::time::Instant::now();
        let (runs, failures) = explore(0, &options, Duration::from_secs(budget), true);
        let first = failures.first().unwrap_or_else(|| panic!("{fault}: no failing seed in {runs} seeds ({budget} s)"));
        println!(
            "{fault}: seed {} failed after {runs} seeds in {:.1} s\n  {}\n  replay: {}",
            first.seed,
            started.elapsed().as_secs_f64(),
            first.summary(),
            options.replay_command(first.seed)
        );
    }
}
