//! `vinzclortho admin backup` and restore, with real processes: a backup
//! taken while a writer keeps writing, a node restored from it, and every
//! acknowledged write still there and causality kept (the restored node
//! stamps with new actors, so no dot is issued twice). Bad targets are
//! refused with why.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, Cluster, FAST, NodeProc, client, wait_for};
use reqwest::StatusCode;
use serde_json::Value;
use sha1::{Digest, Sha1};

const CTX: &str = "x-vinzclortho-context";
/// Every wait of this file: generous, the test machine is shared.
const DEADLINE: Duration = Duration::from_secs(180);

fn sha1_hex(value: &str) -> String {
    Sha1::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `vinzclortho admin --node NODE ARGS...`: exit code, stdout, stderr.
fn admin(node: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["admin", "--node", node, "--request-timeout", "60"])
        .args(args)
        .output()
        .expect("run vinzclortho admin");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn post_backup(node: &str, body: &str) -> (StatusCode, String) {
    let r = client().post(format!("http://{node}/admin/backup")).body(body.to_owned()).send().unwrap();
    (r.status(), r.text().unwrap())
}

/// The values of a key read with `r=all` through `node` (one per sibling),
/// and its context; None if the read failed.
fn read_all(node: &str, key: &str) -> Option<(BTreeSet<String>, Option<String>)> {
    let r = client().get(format!("http://{node}/store/{key}?r=all")).send().ok()?;
    let status = r.status();
    let context = r.headers().get(CTX).map(|v| v.to_str().unwrap().to_owned());
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = r.bytes().ok()?;
    let values = match status {
        StatusCode::OK => BTreeSet::from([String::from_utf8_lossy(&body).into_owned()]),
        StatusCode::MULTIPLE_CHOICES => vinzclortho::bench::target::multipart_values(&content_type, &body)
            .ok()?
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
        StatusCode::NOT_FOUND => BTreeSet::new(),
        _ => return None,
    };
    Some((values, context))
}

fn put(node: &str, key: &str, value: &str, context: Option<&str>) -> Result<(), String> {
    let mut request = client().put(format!("http://{node}/store/{key}")).body(value.to_owned());
    if let Some(context) = context {
        request = request.header(CTX, context);
    }
    let r = request.send().map_err(|e| e.to_string())?;
    match r.status() {
        StatusCode::OK => Ok(()),
        other => Err(format!("{other}: {}", r.text().unwrap_or_default())),
    }
}

/// The key's primaries (HTTP addresses).
fn primaries(node: &NodeProc, key: &str) -> Vec<String> {
    let v: Value = client().get(node.url(&format!("/admin/preflist/{key}"))).send().unwrap().json().unwrap();
    v["preflist"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["primary"] == true)
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect()
}

/// The sibling hashes `http` holds for `key`, as `/admin/replicas` asked
/// through `via` reports them; None if it did not answer.
fn copy_on(via: &NodeProc, http: &str, key: &str) -> Option<Vec<String>> {
    let report: Value = client().get(via.url(&format!("/admin/replicas/{key}"))).send().ok()?.json().ok()?;
    let entry = report["replicas"].as_array()?.iter().find(|r| r["node"] == http)?;
    if entry["answered"] != true {
        return None;
    }
    let mut shas: Vec<String> =
        entry["siblings"].as_array()?.iter().map(|s| s["sha1"].as_str().unwrap().to_owned()).collect();
    shas.sort();
    Some(shas)
}

/// The whole procedure of the README's "Backup and restore", on node 1 of a
/// 4-node cluster (N=3): back it up with `vinzclortho admin backup` while a
/// writer writes through every node, write more, kill it, put the backup in
/// place of its data directory, start it. Nothing acknowledged is lost,
/// anti-entropy brings the restored node up to date, and a write through
/// it with a context from before the backup keeps the newer value as a
/// sibling: had it reissued a dot of its old actor, one would be lost.
#[test]
fn a_node_restored_from_a_backup_taken_under_load_loses_nothing_and_reissues_no_dot() {
    let args = [FAST, &["--anti-entropy-interval-ms", "300"]].concat();
    let mut c = Cluster::start_with(201, 4, &args);
    let restored = c.node(1).http.clone();
    let nodes: Vec<String> = c.running().map(|n| n.http.clone()).collect();

    // Written before the backup: in it.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..40 {
        let (key, value) = (format!("before{i}"), format!("b{i}"));
        put(&nodes[i % 4], &key, &value, None).unwrap();
        acknowledged.insert(key, value);
    }
    // A key node 1 stamps (it is a primary, and the write goes through it):
    // v1 before the backup, and the context of that read.
    let causal = (0..).map(|i| format!("causal{i}")).find(|k| primaries(c.node(0), k).contains(&restored)).unwrap();
    put(&restored, &causal, "v1", None).unwrap();
    let (values, context_v1) = read_all(&restored, &causal).unwrap();
    assert_eq!(values, BTreeSet::from(["v1".to_owned()]));
    let context_v1 = context_v1.expect("a context");

    // A writer through every node, across the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::<(String, String, Instant)>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, written, failed, nodes) =
            (Arc::clone(&stop), Arc::clone(&written), Arc::clone(&failed), nodes.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("during{i}"), format!("d{i}"));
                match put(&nodes[i % nodes.len()], &key, &value, None) {
                    Ok(()) => written.lock().unwrap().push((key, value, Instant::now())),
                    Err(why) => failed.lock().unwrap().push(format!("{key}: {why}")),
                }
                i += 1;
            }
        })
    };
    wait_for("the writer's first writes", DEADLINE, || (written.lock().unwrap().len() >= 20).then_some(()));

    let backup_dir = c.dir.path().join("node1-backup");
    let started = Instant::now();
    let (code, out, err) = admin(&restored, &["backup", backup_dir.to_str().unwrap(), "--json"]);
    let finished = Instant::now();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["path"], backup_dir.to_str().unwrap());
    assert_eq!(answer["node"], restored.as_str());
    assert_eq!(answer["node_id"], common::status(c.node(1)).unwrap()["node_id"]);
    assert_eq!(answer["engine"], "rocksdb");
    assert_eq!(answer["ring_epoch"], common::status(c.node(1)).unwrap()["ring"]["epoch"]);
    assert!(answer["files"].as_u64() > Some(0) && answer["bytes"].as_u64() > Some(0), "{answer}");
    assert!(answer["objects"].as_u64().is_some() && answer["took_ms"].as_u64().is_some(), "{answer}");
    assert!(backup_dir.join("CURRENT").is_file(), "the backup is a RocksDB directory");

    // More writes after the backup, from the writer and of the causal key
    // (node 1 stamps v2 with the actor its backup knows).
    let count = written.lock().unwrap().len();
    wait_for("writes after the backup", DEADLINE, || (written.lock().unwrap().len() >= count + 40).then_some(()));
    put(&restored, &causal, "v2", Some(&context_v1)).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "writes failed during the backup: {failed:?}");
    let written = written.lock().unwrap().clone();
    let during = written.iter().filter(|(_, _, at)| *at >= started && *at <= finished).count();
    eprintln!(
        "backup took {:?}; {} writes in all, {during} acknowledged while it ran",
        finished - started,
        written.len()
    );
    let after: Vec<String> = written.iter().filter(|(_, _, at)| *at > finished).map(|(k, _, _)| k.clone()).collect();
    acknowledged.extend(written.into_iter().map(|(k, v, _)| (k, v)));

    // Restore: stop node 1, replace its data directory with the backup,
    // start it on its addresses.
    let (http, cluster) = c.kill9(1);
    let data_dir = c.data_dir(1);
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::rename(&backup_dir, &data_dir).unwrap();
    c.restart(1, &http, &cluster);
    assert_eq!(common::status(c.node(1)).unwrap()["node_id"], answer["node_id"], "the same node, restored");
    wait_for("the restored node to see every member up", DEADLINE, || {
        let s = common::status(c.node(1))?;
        s["members"].as_array()?.iter().all(|m| m["status"] == "up").then_some(())
    });

    // At once, through the restored node (it holds v1 only, unless a repair
    // was quicker): a write with the context read before the backup. It
    // supersedes v1, not v2 (which that read never saw): both stay.
    put(&restored, &causal, "v3", Some(&context_v1)).unwrap();
    c.wait_converged(DEADLINE);

    // Anti-entropy (nothing reads these keys) brings the restored node the
    // writes it missed: those acknowledged after the backup.
    let missed: Vec<&String> = after.iter().filter(|k| primaries(c.node(0), k).contains(&restored)).collect();
    assert!(!missed.is_empty());
    for key in missed {
        let want = vec![sha1_hex(&acknowledged[key])];
        wait_for(&format!("{key} back on the restored node"), DEADLINE, || {
            (copy_on(c.node(0), &restored, key)? == want).then_some(())
        });
    }

    // Every acknowledged write, read with R=all through every node.
    for (i, (key, value)) in acknowledged.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        wait_for(&format!("{key} = {value} with r=all via {node}"), DEADLINE, || {
            let (values, _) = read_all(node, key)?;
            (values == BTreeSet::from([value.clone()])).then_some(())
        });
    }

    // The causal key: v2 and v3 are siblings, on every replica; v1 is gone.
    let both = BTreeSet::from(["v2".to_owned(), "v3".to_owned()]);
    for node in &nodes {
        let (values, _) = read_all(node, &causal).unwrap();
        assert_eq!(values, both, "read via {node}");
    }
    let mut want = vec![sha1_hex("v2"), sha1_hex("v3")];
    want.sort();
    for primary in primaries(c.node(0), &causal) {
        wait_for(&format!("{causal}'s siblings on {primary}"), DEADLINE, || {
            (copy_on(c.node(0), &primary, &causal)? == want).then_some(())
        });
    }
    // And a write with the context of that read resolves them.
    let (_, context) = read_all(&restored, &causal).unwrap();
    put(&restored, &causal, "v4", context.as_deref()).unwrap();
    assert_eq!(read_all(&nodes[0], &causal).unwrap().0, BTreeSet::from(["v4".to_owned()]));
}

/// A target the node cannot use is a 400 saying why (exit 2 from the CLI),
/// nothing is written; the memory engine answers 501 (exit 1).
#[test]
fn bad_backup_targets_are_refused_with_why() {
    let c = Cluster::start(202, 1);
    let node = c.node(0).http.clone();
    let scratch = tempfile::tempdir().unwrap();
    let existing = scratch.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let file = scratch.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let json = |p: &Path| serde_json::json!({ "path": p.to_str().unwrap() }).to_string();

    let cases = [
        (r#"{"path": "relative/dir"}"#.to_owned(), "is not absolute"),
        (json(&existing), "exists already"),
        (json(&file.join("backup")), "cannot write"),
        (json(&scratch.path().join("missing/backup")), "cannot write"),
        (json(&c.data_dir(0).join("inside")), "inside the data directory"),
        ("not json".to_owned(), "expected a JSON body"),
        (r#"{"dir": "/tmp/x"}"#.to_owned(), "expected a JSON body"),
        ("{}".to_owned(), "expected a JSON body"),
    ];
    for (body, why) in cases {
        let (status, text) = post_backup(&node, &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(why), "{body}: {text}");
    }
    assert!(std::fs::read_dir(&existing).unwrap().next().is_none());
    assert!(!c.data_dir(0).join("inside").exists());

    // The CLI: a relative path is refused before anything is sent; a 400 is
    // bad usage too; a good one prints what was written.
    let (code, _, err) = admin(&node, &["backup", "relative/dir"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not absolute"), "{err}");
    let (code, _, err) = admin(&node, &["backup", existing.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("400") && err.contains("exists already"), "{err}");
    let good = scratch.path().join("good");
    let (code, out, err) = admin(&node, &["backup", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(good.to_str().unwrap()) && out.contains("ring epoch"), "{out}");
    assert!(good.join("CURRENT").is_file());

    // A node that keeps everything in memory has nothing to back up.
    let memory_dir = c.dir.path().join("memory");
    let memory = NodeProc::start(
        &memory_dir,
        &["-a", "127.0.202.2:0", "--cluster-address", "127.0.202.2:0", "--storage", "memory"],
    );
    let target = scratch.path().join("from-memory");
    let (status, text) = post_backup(&memory.http, &json(&target));
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{text}");
    assert!(text.contains("nothing to back up"), "{text}");
    let (code, _, err) = admin(&memory.http, &["backup", target.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("501") && err.contains("--storage rocksdb"), "{err}");
    assert!(!target.exists());
}

/// The README's whole-cluster procedure on 3 nodes (N=3): back up every
/// node with one ring, write between and after the backups, stop them all,
/// put every backup in place, start them all. What any backup held comes
/// back on every replica; what came after the last backup is gone; the
/// cluster takes writes again.
#[test]
fn a_whole_cluster_restored_from_its_backups_holds_what_they_held() {
    let args = [FAST, &["--anti-entropy-interval-ms", "300"]].concat();
    let mut c = Cluster::start_with(203, 3, &args);
    let nodes: Vec<String> = c.running().map(|n| n.http.clone()).collect();
    for i in 0..30 {
        put(&nodes[i % 3], &format!("early{i}"), &format!("e{i}"), None).unwrap();
    }
    let backups: Vec<_> = (0..3).map(|i| c.dir.path().join(format!("backup{i}"))).collect();
    let mut epochs = BTreeSet::new();
    for (i, dir) in backups.iter().enumerate() {
        let (code, out, err) = admin(&nodes[i], &["--json", "backup", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        epochs.insert(serde_json::from_str::<Value>(&out).unwrap()["ring_epoch"].as_u64().unwrap());
        if i == 0 {
            // After node 0's backup, before the others': in two backups.
            put(&nodes[0], "between", "b", None).unwrap();
        }
    }
    assert_eq!(epochs.len(), 1, "one ring: {epochs:?}");
    put(&nodes[1], "late", "l", None).unwrap();

    let addresses: Vec<(String, String)> = (0..3).map(|i| c.kill9(i)).collect();
    for (i, dir) in backups.iter().enumerate() {
        std::fs::remove_dir_all(c.data_dir(i)).unwrap();
        std::fs::rename(dir, c.data_dir(i)).unwrap();
    }
    for (i, (http, cluster)) in addresses.iter().enumerate() {
        c.restart(i, http, cluster);
    }
    c.wait_converged(DEADLINE);

    // "between" reaches node 0, whose backup lacked it, with no read
    // (anti-entropy).
    wait_for("between on node 0", DEADLINE, || {
        (copy_on(c.node(1), &nodes[0], "between")? == [sha1_hex("b")]).then_some(())
    });
    let mut want: BTreeMap<String, BTreeSet<String>> =
        (0..30).map(|i| (format!("early{i}"), BTreeSet::from([format!("e{i}")]))).collect();
    want.insert("between".into(), BTreeSet::from(["b".to_owned()]));
    want.insert("late".into(), BTreeSet::new());
    for (i, (key, values)) in want.iter().enumerate() {
        let node = &nodes[i % 3];
        wait_for(&format!("{key} = {values:?} with r=all via {node}"), DEADLINE, || {
            (read_all(node, key)?.0 == *values).then_some(())
        });
    }
    put(&nodes[2], "after", "a", None).unwrap();
    assert_eq!(read_all(&nodes[0], "after").unwrap().0, BTreeSet::from(["a".to_owned()]));
}
