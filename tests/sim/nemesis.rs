//! The faults of a simulated run, drawn from its seed: up to three at once,
//! overlapping each other and membership changes.
//!
//! Network: partitions (both ways; the minority is random), one-way cuts,
//! lossy and slow weather. Nodes: process crashes, power losses (the disk
//! drops what was not synced), pauses (traffic both ways waits), disk
//! errors, clock skew. Membership: joins (up to the run's node limit), claim
//! changes, leaves (staged and committed at once) and a node dead for good
//! (crashed, then force-removed once the others see it down), each keeping
//! at least four members. Every fault is recorded as a window for the
//! checker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::Record;
use super::history::FaultWindow;
use super::net::Weather;
use super::world::Cluster;
use vinzclortho::core::key::NodeId;
use vinzclortho::core::membership::Change;

/// At most this many faults at once.
const MAX_ACTIVE: usize = 3;
/// Power losses at least this far apart, and one at a time: two replicas
/// losing their unsynced tails together can lose an acknowledged write
/// legitimately (that is what `--sync-writes` is for).
const POWER_LOSS_SPACING: Duration = Duration::from_secs(4);
/// A membership change's window ends once the ring settles, plus this
/// (the sweep that follows).
const SWEEP_ALLOWANCE: Duration = Duration::from_secs(2);

enum Undo {
    Links(Vec<(String, String)>),
    Weather,
    Restart(usize),
    Resume(String),
    DiskErrors(usize),
    Skew(usize),
    /// Ends when the ring settles past `epoch` (or nothing moved).
    Membership {
        epoch: u64,
        since: Instant,
        /// A leave: a member departs.
        departs: bool,
    },
    /// A crashed node that never comes back: force-remove it (through a
    /// node that sees it down) and commit, then end like `Membership`.
    ForceRemove {
        id: NodeId,
        epoch: u64,
        since: Instant,
    },
}

struct Active {
    end: Instant,
    undo: Undo,
    window: usize,
}

impl Active {
    /// A leave or force-remove still running: the node still counts as a
    /// member until it is gone.
    fn departs(&self) -> bool {
        matches!(self.undo, Undo::ForceRemove { .. } | Undo::Membership { departs: true, .. })
    }
}

fn ms(rng: &mut StdRng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

pub async fn run(
    cluster: Arc<Cluster>,
    record: Arc<Record>,
    mut rng: StdRng,
    until: Instant,
    max_nodes: usize,
    departures: bool,
) {
    let mut active: Vec<Active> = Vec::new();
    let mut last_power_loss: Option<Instant> = None;
    while Instant::now() < until {
        end_due(&cluster, &record, &mut active, false).await;
        if active.len() < MAX_ACTIVE && rng.random_bool(0.6) {
            let weather_on = active.iter().any(|a| matches!(a.undo, Undo::Weather));
            let power_ok = last_power_loss.is_none_or(|t| t.elapsed() >= POWER_LOSS_SPACING)
                && !active.iter().any(|a| matches!(a.undo, Undo::Restart(_) | Undo::ForceRemove { .. }));
            // Members left once every leave and removal under way is done.
            let staying = cluster.members() - active.iter().filter(|a| a.departs()).count();
            let can_depart = departures && staying > 4;
            if let Some(a) = start(&cluster, &record, &mut rng, max_nodes, weather_on, power_ok, can_depart).await {
                // A node dead for good loses what only it held, as a power
                // loss does: the two are spaced the same way, so no write
                // acknowledged by W nodes loses both copies legitimately.
                if record.faults.lock().unwrap()[a.window].loses_data || matches!(a.undo, Undo::ForceRemove { .. }) {
                    last_power_loss = Some(Instant::now());
                }
                active.push(a);
            }
        }
        tokio::time::sleep(ms(&mut rng, 150..1_200)).await;
    }
    end_due(&cluster, &record, &mut active, true).await;
}

/// Ends the faults whose time came (all of them with `all`); membership
/// windows end when the ring has settled.
async fn end_due(cluster: &Arc<Cluster>, record: &Record, active: &mut Vec<Active>, all: bool) {
    let now = Instant::now();
    let mut i = 0;
    while i < active.len() {
        let due = all || active[i].end <= now;
        let ended = due && finish(cluster, record, &active[i].undo, all).await;
        if ended {
            let a = active.remove(i);
            record.faults.lock().unwrap()[a.window].end = if all { Duration::MAX } else { record.now() };
        } else {
            i += 1;
        }
    }
}

/// Undoes one fault; false when it is not over yet (a ring still moving).
async fn finish(cluster: &Arc<Cluster>, record: &Record, undo: &Undo, all: bool) -> bool {
    match undo {
        Undo::Links(links) => links.iter().for_each(|(a, b)| cluster.net.uncut(a, b)),
        Undo::Weather => cluster.net.set_weather(Weather::CALM),
        // A node force-removed is never started again.
        Undo::Restart(i) if cluster.is_gone(*i) => {}
        Undo::Restart(i) => {
            if let Err(e) = cluster.start(*i).await {
                // It left while it was down: it refuses to start, as it should.
                if e.contains("left the cluster") {
                    cluster.set_gone(*i);
                    record.event(format!("node {i} left while down: {e}"));
                    return true;
                }
                record.event(format!("node {i} failed to restart: {e}; trying again later"));
                return all;
            }
            record.event(format!("node {i} restarted"));
        }
        Undo::Resume(address) => cluster.net.resume(address),
        Undo::DiskErrors(i) => cluster.disk(*i).set_error_rate(0),
        Undo::Skew(i) => cluster.set_skew(*i, 0),
        Undo::Membership { epoch, since, .. } => return membership_over(cluster, *epoch, *since, all).await,
        Undo::ForceRemove { id, epoch, since } => {
            if all {
                return true;
            }
            let removed = cluster
                .running_nodes()
                .into_iter()
                .any(|j| cluster.with_app(j, |app| app.membership.snapshot().removed.contains(id)) == Some(true));
            if !removed {
                // Staged and committed through the first node that sees it
                // down (staging a removal of a node seen up is refused).
                for j in cluster.running_nodes() {
                    let done = cluster.with_app(j, |app| {
                        app.membership.stage(id, Change::Remove).is_ok() && app.membership.request_commit().is_ok()
                    });
                    if done == Some(true) {
                        record.event(format!("force-remove of {id} staged and committed through node {j}"));
                        break;
                    }
                }
                return false;
            }
            return membership_over(cluster, *epoch, *since, all).await;
        }
    }
    true
}

/// A membership change is over once the ring settled past `epoch`, or
/// settled and nothing moved for a while (plus the sweep that follows).
/// Open to the end of the run when the run ends first.
async fn membership_over(cluster: &Arc<Cluster>, epoch: u64, since: Instant, all: bool) -> bool {
    if all {
        return true;
    }
    let settled = super::settled(cluster);
    let moved = settled.is_some_and(|e| e > epoch);
    let quiet = settled.is_some() && since.elapsed() > Duration::from_secs(5);
    if !(moved || quiet) {
        return false;
    }
    tokio::time::sleep(SWEEP_ALLOWANCE).await;
    true
}

async fn start(
    cluster: &Arc<Cluster>,
    record: &Record,
    rng: &mut StdRng,
    max_nodes: usize,
    weather_on: bool,
    power_ok: bool,
    can_depart: bool,
) -> Option<Active> {
    let running = cluster.running_nodes();
    let n = cluster.size();
    let pick = |rng: &mut StdRng| running[rng.random_range(0..running.len())];
    if running.is_empty() {
        return None;
    }
    let mut window = FaultWindow {
        name: String::new(),
        start: record.now(),
        end: Duration::MAX,
        loses_data: false,
        membership: false,
        minority: vec![],
    };
    // Without a departure possible, its draws are claim changes, as they
    // were before departures existed (so older seeds replay the same).
    let roll = match rng.random_range(0..100) {
        r @ 84..88 if can_depart => r,
        r @ 88..91 if can_depart && power_ok => r,
        84..91 => 91,
        r => r,
    };
    let (duration, undo) = match roll {
        0..10 => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let minority = rng.random_range(1..=n / 2);
            let (small, large) = order.split_at(minority);
            let mut links = Vec::new();
            for &a in small {
                for &b in large {
                    let (x, y) = (cluster.cluster_address(a), cluster.cluster_address(b));
                    links.push((x.clone(), y.clone()));
                    links.push((y, x));
                }
            }
            links.iter().for_each(|(a, b)| cluster.net.cut(a, b));
            window.name = format!("partition {small:?} | {large:?}");
            window.minority = small.to_vec();
            (ms(rng, 1_000..5_000), Undo::Links(links))
        }
        10..16 => {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a == b {
                return None;
            }
            let (x, y) = (cluster.cluster_address(a), cluster.cluster_address(b));
            cluster.net.cut(&x, &y);
            window.name = format!("one-way cut {a} -> {b}");
            (ms(rng, 1_000..4_000), Undo::Links(vec![(x, y)]))
        }
        16..24 if !weather_on => {
            let weather = if rng.random_bool(0.5) {
                Weather { delay_ms: (0, 10), loss_ppm: rng.random_range(5_000..40_000), retransmit_ppm: 20_000 }
            } else {
                Weather {
                    delay_ms: (rng.random_range(10..50), rng.random_range(50..400)),
                    loss_ppm: 0,
                    retransmit_ppm: 0,
                }
            };
            cluster.net.set_weather(weather);
            window.name = format!("weather {weather:?}");
            (ms(rng, 1_000..5_000), Undo::Weather)
        }
        24..34 => {
            let i = pick(rng);
            cluster.crash(i, false);
            window.name = format!("crash node {i}");
            (ms(rng, 300..4_000), Undo::Restart(i))
        }
        34..50 if power_ok => {
            let i = pick(rng);
            let lost = cluster.crash(i, true);
            window.name = format!("power loss on node {i} ({lost} unsynced writes lost)");
            window.loses_data = true;
            (ms(rng, 300..3_000), Undo::Restart(i))
        }
        50..58 => {
            let i = pick(rng);
            let address = cluster.cluster_address(i);
            let d = ms(rng, 300..3_000);
            cluster.net.pause(&address, Instant::now() + d);
            window.name = format!("pause node {i}");
            (d, Undo::Resume(address))
        }
        58..65 => {
            let i = pick(rng);
            cluster.disk(i).set_error_rate(rng.random_range(10_000..100_000));
            window.name = format!("disk errors on node {i}");
            (ms(rng, 500..3_000), Undo::DiskErrors(i))
        }
        65..72 => {
            let i = pick(rng);
            let skew = rng.random_range(-900..900);
            cluster.set_skew(i, skew);
            window.name = format!("clock skew {skew} ms on node {i}");
            (ms(rng, 1_000..6_000), Undo::Skew(i))
        }
        72..84 if n < max_nodes => {
            let seed = pick(rng);
            let i = cluster.add(Some(cluster.cluster_address(seed)));
            let epoch = cluster.latest_view().map(|v| v.epoch).unwrap_or(0);
            window.name = format!("node {i} joins through node {seed}");
            window.membership = true;
            if let Err(e) = cluster.start(i).await {
                record.event(format!("node {i} could not join yet: {e}"));
                // It stays down; healing starts it.
            }
            (Duration::ZERO, Undo::Membership { epoch, since: Instant::now(), departs: false })
        }
        84..88 => {
            let i = pick(rng);
            let epoch = cluster.latest_view().map(|v| v.epoch).unwrap_or(0);
            let staged = cluster.with_app(i, |app| {
                let me = app.membership.local().clone();
                app.membership.stage(&me, Change::Leave).and_then(|()| app.membership.request_commit().map(|_| ()))
            })?;
            let outcome = match staged {
                Ok(()) => "committed".to_owned(),
                Err(e) => format!("refused: {e}"),
            };
            window.name = format!("node {i} leaves ({outcome})");
            window.membership = true;
            (Duration::ZERO, Undo::Membership { epoch, since: Instant::now(), departs: true })
        }
        88..91 => {
            let i = pick(rng);
            let id = cluster.with_app(i, |app| app.membership.local().clone())?;
            let epoch = cluster.latest_view().map(|v| v.epoch).unwrap_or(0);
            cluster.crash(i, false);
            cluster.set_gone(i);
            window.name = format!("node {i} dead for good, force-removed");
            window.membership = true;
            // The others see it down after a failure timeout (2 s).
            (Duration::from_millis(2_500), Undo::ForceRemove { id, epoch, since: Instant::now() })
        }
        91..100 => {
            let i = pick(rng);
            let partitions = cluster.latest_view().map(|v| v.current.partitions()).unwrap_or(1);
            let wanted = rng.random_range(1..=u64::from(partitions));
            let epoch = cluster.latest_view().map(|v| v.epoch).unwrap_or(0);
            let result = cluster.with_app(i, |app| app.membership.set_claim(wanted))?;
            window.name = format!("node {i} claims {wanted} ({})", if result.is_ok() { "accepted" } else { "refused" });
            window.membership = true;
            (Duration::ZERO, Undo::Membership { epoch, since: Instant::now(), departs: false })
        }
        _ => return None,
    };
    record.event(format!("fault: {} for {:?}", window.name, duration));
    let mut faults = record.faults.lock().unwrap();
    faults.push(window);
    Some(Active { end: Instant::now() + duration, undo, window: faults.len() - 1 })
}

/// The OS writing dirty pages back: each disk is synced now and then,
/// whether its process runs or not.
pub async fn writeback(cluster: Arc<Cluster>, mut rng: StdRng, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(ms(&mut rng, 200..1_500)).await;
        let i = rng.random_range(0..cluster.size());
        cluster.disk(i).sync();
    }
}
