//! `vinzclortho bench`, the real binary, against a real 3-node cluster: its
//! --check runs find no mismatch and no error on a healthy cluster, its
//! JSON report holds together, and it fails clearly when it cannot run.
//! Throughput is not asserted here: performance targets live in
//! bench/compare.sh, never in timed tests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Cluster};
use serde_json::Value;

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `vinzclortho bench ARGS`, killing it if it outlives `limit`.
fn bench(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { status, stdout: std::fs::read_to_string(out).unwrap(), stderr: std::fs::read_to_string(err).unwrap() }
}

/// The report of a run without --check that went without an error.
fn plain_report(run: &Run) -> Value {
    assert!(run.status.success(), "bench failed ({}): {}\n{}", run.status, run.stderr, run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(report["overall"]["errors"], 0, "{report}");
    report
}

/// The report is sound and says the run was clean.
fn assert_clean(run: &Run) -> Value {
    assert!(run.status.success(), "bench failed ({}): {}\n{}", run.status, run.stderr, run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    let overall = &report["overall"];
    assert!(overall["ops"].as_u64().unwrap() > 0, "{report}");
    assert!(overall["ops_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(overall["errors"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{}", report["mismatch_examples"]);
    assert_eq!(report["check"], true);
    assert!(report["reads_checked"].as_u64().unwrap() > 0, "{report}");
    let mut per_op_ops = 0;
    for (op, summary) in
        report["operations"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v)).chain([("overall", overall)])
    {
        let l = &summary["latency_ms"];
        let p: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"].iter().map(|k| l[k].as_f64().unwrap()).collect();
        assert!(p[0] > 0.0, "{op}: {l}");
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{op}: percentiles not monotonic: {l}");
        if op != "overall" {
            per_op_ops += summary["ops"].as_u64().unwrap();
        }
    }
    assert_eq!(per_op_ops, overall["ops"].as_u64().unwrap(), "per-operation counts add up");
    // The histogram holds every answered request, in growing buckets.
    let buckets = report["latency_histogram"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, overall["ops"].as_u64().unwrap(), "{report}");
    let bounds: Vec<f64> = buckets.iter().map(|b| b["le_ms"].as_f64().unwrap()).collect();
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    assert!(*bounds.last().unwrap() >= overall["latency_ms"]["max"].as_f64().unwrap(), "{report}");
    report
}

#[test]
fn checked_runs_against_a_real_cluster_are_clean() {
    let cluster = Cluster::start(51, 3);
    let nodes: Vec<&str> = cluster.running().map(|n| n.http.as_str()).collect();
    let nodes = nodes.join(",");
    let limit = Duration::from_secs(60);

    // Reads, writes and deletes, uniform keys, spread over the 3 nodes.
    let run = bench(
        &[
            "--nodes",
            &nodes,
            "--duration",
            "2",
            "--check",
            "--json",
            "--seed",
            "1",
            "-c",
            "16",
            "--keys",
            "500",
            "--mix",
            "read=50,write=40,delete=10",
        ],
        limit,
    );
    let report = assert_clean(&run);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3);
    for op in ["read", "write", "delete"] {
        assert!(report["operations"][op]["ops"].as_u64().unwrap() > 0, "{op}: {report}");
    }
    // The progress line went to stderr, not into the JSON.
    assert!(run.stderr.contains("ops/s"), "{}", run.stderr);

    // Hot Zipfian keys after a preload, an operation budget, all-replica
    // quorums: still every read is the last write.
    let run = bench(
        &[
            "--nodes",
            &nodes,
            "--ops",
            "3000",
            "--check",
            "--json",
            "--quiet",
            "--preload",
            "-c",
            "8",
            "--keys",
            "200",
            "--distribution",
            "zipf",
            "--mix",
            "read=80,write=20",
            "--r",
            "all",
            "--w",
            "all",
            "--value-size",
            "1000",
        ],
        limit,
    );
    let report = assert_clean(&run);
    assert_eq!(report["preload"]["keys"], 200);
    assert_eq!(report["preload"]["errors"], 0);
    assert_eq!(report["overall"]["ops"], 3000);
    assert_eq!(report["reads_not_found"], 0, "every key was preloaded and none deleted");
    assert!(run.stderr.is_empty(), "--quiet: {}", run.stderr);

    // --new-keys: a preload of keys nobody stored writes each key once and
    // reads none (no GET reaches any node), and a later run finds every key
    // with one value.
    let gets = || -> f64 {
        cluster
            .running()
            .map(|n| {
                let text = common::client().get(n.url("/metrics")).send().unwrap().text().unwrap();
                text.lines()
                    .filter(|l| l.starts_with("vinzclortho_requests_total{") && l.contains(r#"op="get""#))
                    .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                    .sum::<f64>()
            })
            .sum()
    };
    let before = gets();
    let run = bench(
        &["--nodes", &nodes, "--ops", "1", "--preload", "--new-keys", "--key-prefix", "fresh-", "--json", "-q"]
            .into_iter()
            .chain(["-c", "8", "--keys", "300", "--mix", "read=100"])
            .collect::<Vec<_>>(),
        limit,
    );
    let report = plain_report(&run);
    assert_eq!(report["preload"]["keys"], 300);
    assert_eq!(gets(), before + 1.0, "a preload of new keys reads nothing (the one read is --ops 1's)");
    let run = bench(
        &["--nodes", &nodes, "--ops", "600", "--key-prefix", "fresh-", "--json", "-q", "-c", "8", "--keys", "300"]
            .into_iter()
            .chain(["--mix", "read=100"])
            .collect::<Vec<_>>(),
        limit,
    );
    let report = plain_report(&run);
    assert_eq!(report["reads_not_found"], 0, "{report}");
    assert_eq!(report["reads_siblings"], 0, "{report}");
    // Without --preload the flag means nothing, and is refused.
    let run = bench(&["--nodes", &nodes, "--ops", "1", "--new-keys"], limit);
    assert!(!run.status.success() && run.stderr.contains("--preload"), "{}", run.stderr);

    // Open loop: requests start at the rate asked for, not faster, however
    // fast the cluster answers (an upper bound: a slow machine may fall
    // behind, and then each late request's wait counts in its latency).
    let run = bench(
        &["--nodes", &nodes, "--duration", "2", "--rate", "100", "--check", "--json", "-q", "-c", "8", "--keys", "100"],
        limit,
    );
    let report = assert_clean(&run);
    assert_eq!(report["rate"], 100.0);
    let ops = report["overall"]["ops"].as_u64().unwrap() + report["overall"]["errors"].as_u64().unwrap();
    assert!(ops <= 2 * 100 + 8, "at most 100/s for 2 s (and one per worker at the end): {ops}");

    // The table for people names every operation and the check.
    let run = bench(&["--nodes", &nodes, "--ops", "200", "--check", "-q", "-c", "4", "--keys", "50"], limit);
    assert!(run.status.success(), "{}", run.stderr);
    for needle in ["p99.9", "read", "write", "overall", "check: ", " 0 mismatches"] {
        assert!(run.stdout.contains(needle), "{needle:?} in:\n{}", run.stdout);
    }
}

#[test]
fn a_closed_port_fails_fast_with_a_clear_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let node = format!("127.0.0.1:{port}");
    let garage = ["--bucket", "bench", "--access-key-id", "GK1", "--secret-access-key", "s"];
    for target in ["vinz", "etcd", "redis", "garage"] {
        let started = Instant::now();
        let mut args = vec!["--nodes", &node, "--target", target, "--duration", "1", "--check"];
        if target == "garage" {
            args.extend(garage);
        }
        let run = bench(&args, Duration::from_secs(30));
        assert_eq!(run.status.code(), Some(1), "{target}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("cannot reach {node}")), "{target}: {}", run.stderr);
        assert!(run.stderr.to_lowercase().contains("connect"), "{target}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "no report for a run that never started: {}", run.stdout);
        assert!(started.elapsed() < Duration::from_secs(10), "{target}: took {:?}", started.elapsed());
    }
}

/// A fake node that answers every request at once: it acknowledges writes
/// and forgets them, so every read is 404.
fn forgetful_node() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                // One request after another on the kept-alive connection.
                loop {
                    let (mut request_line, mut length) = (String::new(), 0usize);
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    reader.by_ref().take(length as u64).read_to_end(&mut Vec::new()).unwrap();
                    let status = if request_line.starts_with("GET /store/") { "404 Not Found" } else { "200 OK" };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[test]
fn a_fast_wrong_answer_fails_the_check() {
    let node = forgetful_node();
    let run = bench(
        &["--nodes", &node, "--ops", "2000", "--check", "--json", "-q", "-c", "4", "--keys", "20", "--seed", "3"],
        Duration::from_secs(30),
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("check failed"), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["overall"]["errors"], 0, "every request was answered");
    assert!(report["mismatches"].as_u64().unwrap() > 100, "{report}");
    let example = report["mismatch_examples"][0].as_str().unwrap();
    assert!(example.contains("read absent, expected write #"), "{example}");
    // Without --check the same run counts: the check is what catches it.
    let run = bench(&["--nodes", &node, "--ops", "200", "-q", "-c", "4"], Duration::from_secs(30));
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    for (args, needle) in [
        (&["--nodes", "127.0.0.1:1", "--mix", "read=0,write=0"][..], "every weight is 0"),
        (&["--nodes", "127.0.0.1:1", "--mix", "scan=5"][..], "unknown operation"),
        (&["--nodes", "nohost"][..], "HOST:PORT"),
        (&["--nodes", "127.0.0.1:1", "--concurrency", "0"][..], "--concurrency"),
        (&["--nodes", "127.0.0.1:1", "--duration", "0"][..], "above 0"),
        (&["--nodes", "127.0.0.1:1", "--duration", "1", "--ops", "5"][..], "cannot be used with"),
        (&["--nodes", "127.0.0.1:1", "--distribution", "pareto"][..], "invalid value"),
        (&["--nodes", "127.0.0.1:1", "--zipf-exponent", "-1"][..], "0 or above"),
        (&["--nodes", "127.0.0.1:1", "--r", "two"][..], "not a number, one, quorum"),
        (&["--nodes", "127.0.0.1:1", "--check", "--keys", "3", "-c", "4"][..], "--keys (3) must be at least"),
        (&["--nodes", "127.0.0.1:1", "--target", "etcd", "--w", "1"][..], "no per-request quorum"),
        (
            &["--nodes", "127.0.0.1:1", "--target", "garage", "--access-key-id", "GK1", "--secret-access-key", "s"][..],
            "--bucket",
        ),
        (&["--nodes", "127.0.0.1:1", "--rate", "0"][..], "not a rate above 0"),
        (&["--nodes", "127.0.0.1:1", "--rate", "fast"][..], "not a rate above 0"),
        (&[][..], "--nodes"),
    ] {
        let run = bench(args, Duration::from_secs(30));
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {needle:?} not in {}", run.stderr);
    }
}

/// What the fake K2V server saw that a careful client never does.
#[derive(Default)]
struct K2vFaults {
    /// Writes or deletes without a causality token onto an item that has
    /// values: each adds a concurrent value.
    blind_writes: u64,
    /// Requests without a SigV4 `Authorization` for key GKtest, service k2v
    /// and region garage, or whose `x-amz-content-sha256` is not the body's.
    unsigned: u64,
    requests: u64,
}

/// A fake Garage K2V node, causally faithful enough for the generator: an
/// item keeps the values no write has superseded, each with a dot (the
/// item's counter when written); a token is the counter when it was read,
/// and a write carrying it drops the values it covers. ReadItem answers
/// 404, one value as it is (204 for a tombstone), or several as JSON (409
/// if JSON is not accepted), always with the item's token.
fn fake_k2v() -> (String, std::sync::Arc<std::sync::Mutex<K2vFaults>>) {
    use base64::Engine as _;
    use sha2::Digest as _;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Item = (u64, Vec<(u64, Option<Vec<u8>>)>);
    let items: Arc<Mutex<HashMap<String, Item>>> = Arc::default();
    let faults: Arc<Mutex<K2vFaults>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = faults.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (items, faults) = (items.clone(), faults.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = HashMap::new();
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                    }
                    let length = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
                    let mut body = Vec::new();
                    reader.by_ref().take(length).read_to_end(&mut body).unwrap();
                    let mut parts = request_line.split(' ');
                    let (method, item_key) = (parts.next().unwrap(), parts.next().unwrap().to_owned());
                    let signed = headers.get("authorization").is_some_and(|a| {
                        a.starts_with("AWS4-HMAC-SHA256 Credential=GKtest/") && a.contains("/garage/k2v/aws4_request")
                    }) && headers.get("x-amz-content-sha256")
                        == Some(&sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect());
                    let token = headers.get("x-garage-causality-token").map(|t| t.parse::<u64>().unwrap());
                    let mut faults = faults.lock().unwrap();
                    faults.requests += 1;
                    faults.unsigned += u64::from(!signed);
                    let mut items = items.lock().unwrap();
                    let (counter, values) = items.entry(item_key).or_default();
                    let (status, content_type, answer) = match method {
                        "GET" if values.is_empty() => ("404 Not Found", "application/json", b"{}".to_vec()),
                        "GET" if values.len() == 1 => match &values[0].1 {
                            Some(v) => ("200 OK", "application/octet-stream", v.clone()),
                            None => ("204 No Content", "application/octet-stream", Vec::new()),
                        },
                        "GET" if headers.get("accept").is_some_and(|a| a.contains("application/json")) => {
                            let list: Vec<Option<String>> = values
                                .iter()
                                .map(|(_, v)| v.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)))
                                .collect();
                            ("200 OK", "application/json", serde_json::to_vec(&list).unwrap())
                        }
                        "GET" => ("409 Conflict", "application/octet-stream", Vec::new()),
                        "PUT" | "DELETE" => {
                            match token {
                                Some(seen) => values.retain(|(dot, _)| *dot > seen),
                                None if !values.is_empty() => faults.blind_writes += 1,
                                None => {}
                            }
                            *counter += 1;
                            values.push((*counter, (method == "PUT").then_some(body)));
                            ("204 No Content", "application/octet-stream", Vec::new())
                        }
                        _ => ("400 Bad Request", "text/plain", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nx-garage-causality-token: {counter}\r\n\
                         content-length: {}\r\n\r\n",
                        answer.len()
                    );
                    drop((items, faults));
                    // One write: head and body apart would wait on Nagle and delayed ACKs.
                    if writer.write_all(&[head.into_bytes(), answer].concat()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, seen)
}

/// `--target garage` signs every request, carries the causality token of
/// each key, and since K2V's writes return none, reads before a write whose
/// token a write spent: no write is blind, and a single writer per key never
/// sees a concurrent value, so --check and --verify are clean.
#[test]
fn garage_target_signs_carries_tokens_and_never_writes_blind() {
    let (node, faults) = fake_k2v();
    let garage = ["--target", "garage", "--nodes", &node, "--bucket", "bench", "--access-key-id", "GKtest"];
    let mut checked = garage.to_vec();
    checked.extend(["--ops", "3000", "--check", "--verify", "--json", "-q", "-c", "4", "--keys", "40", "--seed", "5"]);
    checked.extend(["--secret-access-key", "s3cr3t", "--mix", "read=40,write=50,delete=10"]);
    let report = assert_clean(&bench(&checked, Duration::from_secs(60)));
    assert_eq!(report["target"], "garage");
    assert_eq!(report["reads_siblings"], 0, "{report}");
    assert!(report["operations"]["delete"]["ops"].as_u64().unwrap() > 0, "{report}");
    // Twice over the same keys, as compare.sh's workloads follow each other:
    // the second preload knows no token, so it reads before each write.
    let mut preloaded = garage.to_vec();
    preloaded.extend(["--preload", "--ops", "300", "-q", "-c", "1", "--keys", "100", "--secret-access-key", "s3cr3t"]);
    for _ in 0..2 {
        let run = bench(&preloaded, Duration::from_secs(60));
        assert!(run.status.success(), "{}\n{}", run.stderr, run.stdout);
    }
    let faults = faults.lock().unwrap();
    assert!(faults.requests > 3000);
    assert_eq!(faults.unsigned, 0, "every request signed");
    assert_eq!(faults.blind_writes, 0, "every write carried the token of what it replaces");
}
