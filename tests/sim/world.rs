//! The simulated cluster: nodes built by the real composition root
//! (`node::start`, `node::grpc_routes`, `node::spawn_workers`) on a
//! simulated disk, network, clock and random source.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::config::Config;
use vinzclortho::coordinator::RingView;
use vinzclortho::core::key::NodeId;
use vinzclortho::env::{Blocking, Clock, Entropy, Env};
use vinzclortho::node::{self, App, Host};
use vinzclortho::rpc::identity::LocalIdentity;

use super::disk::{Disk, SimStore};
use super::net::{Net, SimConnector};

/// Wall-clock time at the simulated start (any fixed instant will do).
const EPOCH_MS: u64 = 1_780_000_000_000;

pub struct Running {
    pub app: App,
    pub incarnation: u64,
    cancel: CancellationToken,
    store: Arc<SimStore>,
    /// This process's own metrics, and the client requests it answered.
    pub metrics: PrometheusHandle,
    pub answered: Arc<AtomicU64>,
}

pub struct SimNode {
    pub http: String,
    pub cluster: String,
    pub disk: Arc<Disk>,
    /// Whom it joins through on every start (`-j`), as a real node is run.
    pub join: Option<String>,
    /// This node's clock minus the simulated time, in ms (skew).
    pub skew_ms: Arc<AtomicI64>,
    pub running: Option<Running>,
    /// Its node id, once it started (the id lives on its disk).
    pub id: Option<NodeId>,
}

pub struct Cluster {
    pub net: Arc<Net>,
    pub t0: Instant,
    config: Config,
    /// The run's random source for disks and entropy seeds.
    rng: Arc<Mutex<StdRng>>,
    pub nodes: Mutex<Vec<SimNode>>,
    next_incarnation: Mutex<u64>,
    /// Nodes that left the cluster or were force-removed: never started
    /// again, and no longer expected among the members.
    gone: Mutex<std::collections::BTreeSet<usize>>,
}

impl Cluster {
    pub fn new(net: Arc<Net>, rng: Arc<Mutex<StdRng>>, partitions: u32) -> Arc<Cluster> {
        let args = ["vinzclortho", "--storage", "memory"];
        let mut config = Cli::try_parse_from(args).unwrap().node.resolve().unwrap();
        config.partitions = Some(partitions);
        config.n_val = 3;
        config.r = 2;
        config.w = 2;
        config.request_timeout = Duration::from_secs(2);
        config.gossip_interval = Duration::from_millis(200);
        config.failure_timeout = Duration::from_secs(2);
        // Reaping within a run's minutes, under its faults (the default
        // grace of a day would never reap).
        config.tombstone_grace = Duration::from_secs(3);
        config.reaped_retention = Duration::from_secs(3600);
        // Clock hygiene under the same faults: restarts give clocks a new
        // entry per node run, and a small limit prunes them often
        // (`SIM_MAX_CLOCK=0` turns it off, to tell its failures apart).
        config.max_clock_entries = std::env::var("SIM_MAX_CLOCK").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        Arc::new(Cluster {
            net,
            t0: Instant::now(),
            config,
            rng,
            nodes: Mutex::new(Vec::new()),
            next_incarnation: Mutex::new(0),
            gone: Mutex::default(),
        })
    }

    pub fn size(&self) -> usize {
        self.nodes.lock().unwrap().len()
    }

    /// Adds a node (not started); it joins through `join`.
    pub fn add(&self, join: Option<String>) -> usize {
        let mut nodes = self.nodes.lock().unwrap();
        let i = nodes.len();
        nodes.push(SimNode {
            http: format!("10.0.0.{}:8880", i + 1),
            cluster: format!("10.0.0.{}:9880", i + 1),
            disk: Disk::new(Arc::clone(&self.rng)),
            join,
            skew_ms: Arc::new(AtomicI64::new(0)),
            running: None,
            id: None,
        });
        i
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes.lock().unwrap()[i].running.is_some()
    }

    /// Running nodes that are still members (not gone).
    pub fn running_nodes(&self) -> Vec<usize> {
        let nodes = self.nodes.lock().unwrap();
        let gone = self.gone.lock().unwrap();
        (0..nodes.len()).filter(|&i| nodes[i].running.is_some() && !gone.contains(&i)).collect()
    }

    /// Node `i` left the cluster or was force-removed, for good.
    pub fn set_gone(&self, i: usize) {
        self.gone.lock().unwrap().insert(i);
    }

    pub fn is_gone(&self, i: usize) -> bool {
        self.gone.lock().unwrap().contains(&i)
    }

    /// Nodes that are, or will be again, members.
    pub fn members(&self) -> usize {
        self.size() - self.gone.lock().unwrap().len()
    }

    pub fn cluster_address(&self, i: usize) -> String {
        self.nodes.lock().unwrap()[i].cluster.clone()
    }

    pub fn incarnation(&self, i: usize) -> Option<u64> {
        self.nodes.lock().unwrap()[i].running.as_ref().map(|r| r.incarnation)
    }

    /// Sends an HTTP request to node `i`'s router, as that node (its
    /// metrics recorder); `None` if it is not running. Returns the answer
    /// and the incarnation that gave it.
    pub async fn request(
        &self,
        i: usize,
        request: http::Request<axum::body::Body>,
    ) -> Option<(http::Response<axum::body::Body>, u64)> {
        let (router, incarnation, env, answered) = {
            let nodes = self.nodes.lock().unwrap();
            let r = nodes[i].running.as_ref()?;
            (r.app.router.clone(), r.incarnation, r.app.env.clone(), Arc::clone(&r.answered))
        };
        let response = env.scoped(router.oneshot(request)).await.ok()?;
        answered.fetch_add(1, Ordering::Relaxed);
        Some((response, incarnation))
    }

    pub fn with_app<T>(&self, i: usize, f: impl FnOnce(&App) -> T) -> Option<T> {
        let nodes = self.nodes.lock().unwrap();
        nodes[i].running.as_ref().map(|r| f(&r.app))
    }

    pub fn disk(&self, i: usize) -> Arc<Disk> {
        Arc::clone(&self.nodes.lock().unwrap()[i].disk)
    }

    /// The simulated node that runs as `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.lock().unwrap().iter().position(|n| n.id.as_ref() == Some(id))
    }

    /// The most advanced ring any running node has: the cluster's.
    pub fn latest_view(&self) -> Option<Arc<RingView>> {
        let nodes = self.nodes.lock().unwrap();
        nodes.iter().filter_map(|n| n.running.as_ref()).map(|r| r.app.membership.view()).max_by_key(|v| v.epoch)
    }

    pub fn set_skew(&self, i: usize, skew_ms: i64) {
        self.nodes.lock().unwrap()[i].skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// Starts node `i` as a new process on its disk; false if it could not
    /// (its seed unreachable: a real node exits then too).
    pub async fn start(&self, i: usize) -> Result<(), String> {
        let incarnation = {
            let mut next = self.next_incarnation.lock().unwrap();
            *next += 1;
            *next
        };
        let (http, cluster, disk, join, skew) = {
            let nodes = self.nodes.lock().unwrap();
            let n = &nodes[i];
            assert!(n.running.is_none(), "node {i} is already running");
            (n.http.clone(), n.cluster.clone(), Arc::clone(&n.disk), n.join.clone(), Arc::clone(&n.skew_ms))
        };
        let t0 = self.t0;
        let clock: Clock = Arc::new(move || {
            let now = EPOCH_MS as i64 + t0.elapsed().as_millis() as i64 + skew.load(Ordering::Relaxed);
            now as u64
        });
        let entropy = Entropy::seeded(rand::Rng::random(&mut *self.rng.lock().unwrap()));
        let (recorder, metrics) = vinzclortho::telemetry::metrics::node_recorder();
        let env = Env { clock, entropy, blocking: Blocking::Inline, recorder: Some(Arc::new(recorder)) };
        let connector = SimConnector {
            net: Arc::clone(&self.net),
            from: cluster.clone(),
            incarnation,
            request_timeout: self.config.request_timeout,
        };
        let host =
            Host { env: env.clone(), connector: Some(Arc::new(connector)), metrics: Some(metrics.clone()), tls: None };
        let mut config = self.config.clone();
        config.address = http.clone();
        config.cluster_address = cluster.clone();
        config.join = join;
        let store = SimStore::open(&disk);
        self.net.boot(&cluster, incarnation);
        let app = match env.scoped(node::start(&config, &host, http, cluster.clone(), store.clone())).await {
            Ok(app) => app,
            Err(e) => {
                self.net.unregister(&cluster);
                store.kill();
                return Err(e.to_string());
            }
        };
        let cancel = CancellationToken::new();
        let (routes, _health) = node::grpc_routes(&config, &app, cancel.clone());
        let local: Arc<dyn LocalIdentity> = app.membership.clone();
        let server = vinzclortho::rpc::server::in_process(routes, local);
        self.net.serve(&cluster, incarnation, server, env.clone());
        node::spawn_workers(&config, &app, &cancel);
        let mut nodes = self.nodes.lock().unwrap();
        nodes[i].id = Some(app.membership.local().clone());
        let answered = Arc::new(AtomicU64::new(0));
        nodes[i].running = Some(Running { app, incarnation, cancel, store, metrics, answered });
        Ok(())
    }

    /// The process of node `i` dies (its disk stays); with `power_loss`,
    /// so do its writes since the last sync. Returns the writes lost.
    pub fn crash(&self, i: usize, power_loss: bool) -> usize {
        let (running, cluster, disk) = {
            let mut nodes = self.nodes.lock().unwrap();
            let n = &mut nodes[i];
            (n.running.take(), n.cluster.clone(), Arc::clone(&n.disk))
        };
        if let Some(r) = running {
            self.net.unregister(&cluster);
            r.cancel.cancel();
            r.store.kill();
        }
        if power_loss { disk.power_loss() } else { 0 }
    }

    /// Each running node's own metrics must count exactly the client requests
    /// it answered: a node's tasks record into its recorder, not another's.
    pub fn check_metrics(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap();
        let mut problems = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let Some(r) = &n.running else { continue };
            let counted: f64 = r
                .metrics
                .render()
                .lines()
                .filter(|l| l.starts_with("vinzclortho_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let answered = r.answered.load(Ordering::Relaxed);
            if counted as u64 != answered {
                problems
                    .push(format!("node {i} counted {counted} client requests in its metrics, answered {answered}"));
            }
        }
        problems
    }

    /// Stops every node (the end of a run), so no task outlives it.
    pub fn shutdown(&self) {
        for i in 0..self.size() {
            self.crash(i, false);
        }
    }
}
