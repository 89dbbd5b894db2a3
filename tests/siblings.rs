//! riak_test's sibling explosion (verify_dvv_repeats), as our own test: two
//! clients interleave fetch / resolve / put on one key for 100 rounds,
//! through different nodes of a 5-node cluster (larger than N=3) while
//! replicas crash and come back. With dotted version vectors a round of two
//! concurrent writes leaves exactly their two values as siblings, never
//! more, however many rounds pass; with plain per-node vector clocks (or a
//! stamp that reissued a dot) siblings pile up or writes vanish.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::{Cluster, client, wait_for};
use reqwest::StatusCode;

const CTX: &str = "x-vinzclortho-context";
const ROUNDS: usize = 100;

/// A read: the ids in each sibling's value, and the context.
struct Read {
    siblings: Vec<BTreeSet<String>>,
    context: Option<String>,
}

fn read(http: &reqwest::blocking::Client, node: &str) -> Result<Read, String> {
    let r = http.get(format!("http://{node}/store/explode")).send().map_err(|e| e.to_string())?;
    let status = r.status();
    let context = r.headers().get(CTX).map(|v| v.to_str().unwrap().to_owned());
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = r.bytes().map_err(|e| e.to_string())?;
    let ids = |v: &[u8]| -> BTreeSet<String> {
        String::from_utf8_lossy(v).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    let siblings = match status {
        StatusCode::NOT_FOUND => Vec::new(),
        StatusCode::OK => vec![ids(&body)],
        StatusCode::MULTIPLE_CHOICES => {
            vinzclortho::bench::target::multipart_values(&content_type, &body)?.iter().map(|v| ids(v)).collect()
        }
        other => return Err(format!("read: {other}: {}", String::from_utf8_lossy(&body))),
    };
    Ok(Read { siblings, context })
}

#[test]
fn two_clients_resolving_one_key_never_see_more_than_two_siblings() {
    let mut cluster = Cluster::start(62, 5);
    let nodes = [cluster.node(0).http.clone(), cluster.node(1).http.clone()];
    let after_fetch = Arc::new(Barrier::new(3));
    let after_put = Arc::new(Barrier::new(3));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    // Writes whose outcome is unknown (a 503 or a broken connection): such a
    // write may still land later, as one more sibling nobody resolved yet.
    let unknown = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for (c, node) in nodes.iter().enumerate() {
        let (node, after_fetch, after_put) = (node.clone(), Arc::clone(&after_fetch), Arc::clone(&after_put));
        let (acknowledged, unknown) = (Arc::clone(&acknowledged), Arc::clone(&unknown));
        clients.push(std::thread::spawn(move || {
            let http = client();
            let mut most = 0;
            // Recorded, not asserted here: a panic would leave the other
            // threads waiting at a barrier for ever.
            let mut violations = Vec::new();
            for round in 0..ROUNDS {
                let fetched = read(&http, &node);
                // Both clients have fetched before either writes: every round
                // is two concurrent writes on the same context.
                after_fetch.wait();
                if let Ok(fetched) = fetched {
                    let allowed = 2 + *unknown.lock().unwrap();
                    if fetched.siblings.len() > allowed {
                        violations.push(format!(
                            "round {round}: client {c} read {} siblings (at most {allowed} allowed): {:?}",
                            fetched.siblings.len(),
                            fetched.siblings
                        ));
                    }
                    most = most.max(fetched.siblings.len());
                    // Resolve: the union of what every sibling holds, plus ours.
                    let mut value: BTreeSet<String> = fetched.siblings.into_iter().flatten().collect();
                    let id = format!("c{c}r{round}");
                    value.insert(id.clone());
                    let body = value.into_iter().collect::<Vec<_>>().join(",");
                    let mut put = http.put(format!("http://{node}/store/explode")).body(body);
                    if let Some(ctx) = &fetched.context {
                        put = put.header(CTX, ctx);
                    }
                    match put.send().map(|r| r.status()) {
                        Ok(StatusCode::OK) => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        Ok(s) if s.is_client_error() => {
                            violations.push(format!("round {round}: client {c}: write refused: {s}"))
                        }
                        _ => *unknown.lock().unwrap() += 1,
                    }
                }
                after_put.wait();
            }
            (most, violations)
        }));
    }
    // Faults: replicas that the clients do not talk to crash while the
    // round's writes are in flight, and come back between rounds, so writes
    // go on with a replica missing and the returning one has to catch up.
    let mut down = None;
    for round in 0..ROUNDS {
        after_fetch.wait();
        if round == 20 || round == 60 {
            let i = if round == 20 { 4 } else { 3 };
            down = Some((i, cluster.kill9(i)));
        }
        after_put.wait();
        if round == 40 || round == 80 {
            let (i, (http, grpc)) = down.take().unwrap();
            cluster.restart(i, &http, &grpc);
        }
    }
    let (most, violations): (Vec<usize>, Vec<Vec<String>>) = clients.into_iter().map(|c| c.join().unwrap()).unzip();
    let violations: Vec<String> = violations.into_iter().flatten().collect();
    assert!(violations.is_empty(), "{violations:#?}");
    let unknown = *unknown.lock().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ROUNDS, "most writes succeed: {} of {}", acknowledged.len(), 2 * ROUNDS);
    assert!(most.contains(&2), "the rounds did make siblings: {most:?}");
    // Once the cluster is whole again, a read's siblings together hold every
    // acknowledged write: resolving never dropped one.
    cluster.wait_converged(Duration::from_secs(60));
    let http = client();
    let last = wait_for("a final read", Duration::from_secs(30), || read(&http, &nodes[0]).ok());
    assert!(last.siblings.len() <= 2 + unknown, "{} siblings at the end", last.siblings.len());
    let union: BTreeSet<String> = last.siblings.into_iter().flatten().collect();
    let lost: Vec<&String> = acknowledged.difference(&union).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
