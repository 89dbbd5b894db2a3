//! Secondary-index (2i) queries through Riak's HTTP API on real clusters
//! larger than N: equality, ranges, `$key` and `$bucket`, terms, pages and
//! their continuations, streamed multipart answers and `term_regex`, each
//! compared with what was written; entries follow their objects' writes and
//! deletes; answers stay complete with nodes down and while a node joins
//! (index entries move with their objects); and bad queries are 400s.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, NodeProc, client, wait_for};

/// What object `i` is indexed under.
fn number(i: usize) -> i64 {
    (i % 50) as i64 - 10
}

fn name(i: usize) -> String {
    format!("name-{:03}", i % 97)
}

fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// Writes objects `keys` of bucket `people` with their index entries, from
/// a few threads over the given nodes, `w=all` (a query asks one replica per
/// partition).
fn write(nodes: &[&NodeProc], keys: std::ops::Range<usize>) {
    let next = AtomicUsize::new(keys.start);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (next, node, end) = (&next, nodes[t % nodes.len()], keys.end);
            s.spawn(move || {
                let http = client();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return;
                    }
                    let put = || {
                        http.put(node.url(&format!("/buckets/people/keys/{}?w=all", key(i))))
                            .header("content-type", "text/plain")
                            .header("x-riak-index-n_int", number(i).to_string())
                            .header("x-riak-index-name_bin", name(i))
                            .header("x-riak-index-tag_bin", format!("t{}, all", i % 3))
                            .body(format!("v{i}"))
                            .send()
                            .unwrap()
                    };
                    let ok = (0..5).any(|_| put().status().is_success());
                    assert!(ok, "PUT {} failed five times", key(i));
                }
            });
        }
    });
}

fn get(node: &NodeProc, path: &str) -> (u16, String, String) {
    let r = client().get(node.url(path)).timeout(Duration::from_secs(120)).send().unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, r.text().unwrap())
}

fn json(node: &NodeProc, path: &str) -> serde_json::Value {
    let (status, content_type, body) = get(node, path);
    assert_eq!((status, content_type.as_str()), (200, "application/json"), "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

/// `{"results":[{"TERM":"KEY"}]}` as (term, key) pairs.
fn pairs(value: &serde_json::Value) -> Vec<(String, String)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let (t, k) = o.as_object().unwrap().iter().next().unwrap();
            (t.clone(), k.as_str().unwrap().to_owned())
        })
        .collect()
}

/// The JSON parts of a `stream=true` answer, read as Riak's Python client
/// reads them; checks the framing (Riak's `multipart/mixed;boundary=B`).
fn streamed(node: &NodeProc, path: &str) -> Vec<serde_json::Value> {
    let (status, content_type, body) = get(node, path);
    assert_eq!(status, 200, "{path}: {body}");
    let boundary = content_type.strip_prefix("multipart/mixed;boundary=").expect("Riak's content type");
    let end = format!("\r\n--{boundary}--\r\n");
    assert!(body.ends_with(&end), "{path}: the body ends with the closing boundary: {body:?}");
    let body = &body[..body.len() - end.len()];
    body.split(&format!("\r\n--{boundary}\r\n"))
        .skip(1)
        .map(|part| {
            let (headers, json) = part.split_once("\r\n\r\n").expect("a part has headers");
            assert_eq!(headers, "Content-Type: application/json");
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

/// Every (term, key) of bucket `people` under `field` within [low, high],
/// sorted, from the model of what was written (`live` objects only).
fn model(live: &[usize], field: &str, low: i64, high: i64) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = match field {
        "n_int" => live.iter().map(|&i| (number(i), key(i))).filter(|(n, _)| (low..=high).contains(n)).collect(),
        _ => unreachable!(),
    };
    out.sort();
    out
}

/// Pages through a query with `max_results`, checking Riak's continuation
/// rule on each page; the pages' keys in order.
fn paged(node: &NodeProc, path: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut continuation: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{path}?max_results={max}");
        if let Some(c) = &continuation {
            url.push_str(&format!("&continuation={c}"));
        }
        let page = json(node, &url);
        let keys = strings(&page["keys"]);
        assert!(keys.len() <= max, "{url}: {} results", keys.len());
        continuation = page.get("continuation").map(|c| c.as_str().unwrap().to_owned());
        assert_eq!(continuation.is_some(), keys.len() == max, "{url}: a continuation exactly on full pages");
        out.extend(keys);
        if continuation.is_none() {
            return out;
        }
    }
    panic!("{path}: no last page");
}

/// Every query form against the model of what is live, from `node`.
fn check_queries(node: &NodeProc, live: &[usize]) {
    let keys = |v: Vec<(i64, String)>| v.into_iter().map(|(_, k)| k).collect::<Vec<_>>();
    let mut all: Vec<String> = live.iter().map(|&i| key(i)).collect();
    all.sort();
    // Equality: keys only, even with return_terms (as Riak).
    let eq = json(node, "/buckets/people/index/n_int/7?return_terms=true");
    assert_eq!(eq.as_object().unwrap().keys().collect::<Vec<_>>(), ["keys"]);
    let mut got = strings(&eq["keys"]);
    got.sort();
    assert_eq!(got, keys(model(live, "n_int", 7, 7)));
    // A range with terms, sorted by (term, key).
    let range = json(node, "/types/default/buckets/people/index/n_int/-5/12?return_terms=true");
    let want: Vec<(String, String)> =
        model(live, "n_int", -5, 12).into_iter().map(|(n, k)| (n.to_string(), k)).collect();
    assert_eq!(pairs(&range["results"]), want);
    // Pages of a range, through their continuations.
    assert_eq!(paged(node, "/buckets/people/index/n_int/-100/100", 7), keys(model(live, "n_int", -100, 100)));
    assert_eq!(paged(node, "/buckets/people/index/$bucket/people", 50), all);
    // Binary terms, `$key`, and a regex on the terms.
    let mut tagged = strings(&json(node, "/buckets/people/index/tag_bin/all")["keys"]);
    tagged.sort();
    assert_eq!(tagged, all);
    let want: Vec<String> = all.iter().filter(|k| k.as_str() >= "k0100" && k.as_str() <= "k0150").cloned().collect();
    assert_eq!(strings(&json(node, "/buckets/people/index/$key/k0100/k0150?max_results=10000")["keys"]), want);
    let regex = json(node, "/buckets/people/index/name_bin/name-000/name-999?term_regex=5%24&return_terms=true");
    let mut want: Vec<(String, String)> =
        live.iter().map(|&i| (name(i), key(i))).filter(|(n, _)| n.ends_with('5')).collect();
    want.sort();
    assert_eq!(pairs(&regex["results"]), want);
    // Streamed: every result once, in parts; with max_results, the
    // continuation in a part of its own.
    let parts = streamed(node, "/buckets/people/index/n_int/-100/100?stream=true");
    let mut got: Vec<String> = parts.iter().flat_map(|p| strings(&p["keys"])).collect();
    got.sort();
    assert_eq!(got, all);
    let parts = streamed(node, "/buckets/people/index/n_int/-100/100?stream=true&return_terms=true&max_results=3");
    let want: Vec<(String, String)> =
        model(live, "n_int", -100, 100).into_iter().take(3).map(|(n, k)| (n.to_string(), k)).collect();
    assert_eq!(pairs(&parts[0]["results"]), want);
    assert!(parts[1]["continuation"].is_string(), "{parts:?}");
}

#[test]
fn index_queries_answer_what_was_written_and_survive_nodes_down() {
    let args = ["--gossip-interval-ms", "100", "--failure-timeout-ms", "1500", "-p", "16"];
    let mut cluster = Cluster::start_with(191, 5, &args);
    let nodes: Vec<&NodeProc> = cluster.running().collect();
    write(&nodes, 0..400);
    let mut live: Vec<usize> = (0..400).collect();
    check_queries(cluster.node(0), &live);

    // A write that drops an entry, and a delete: gone from the next query.
    let n1 = cluster.node(1);
    let http = client();
    let r = http.get(n1.url(&format!("/buckets/people/keys/{}", key(17)))).send().unwrap();
    let vclock = r.headers()["x-riak-vclock"].to_str().unwrap().to_owned();
    let r = http
        .put(n1.url(&format!("/buckets/people/keys/{}?w=all", key(17))))
        .header("content-type", "text/plain")
        .header("x-riak-vclock", vclock)
        .header("x-riak-index-n_int", "1000")
        .body("moved")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = http.delete(n1.url(&format!("/buckets/people/keys/{}?w=all", key(18)))).send().unwrap();
    assert_eq!(r.status(), 204);
    live.retain(|&i| i != 17 && i != 18);
    let n0 = cluster.node(0);
    let eq: Vec<String> = strings(&json(n0, &format!("/buckets/people/index/n_int/{}", number(17)))["keys"]);
    assert!(!eq.contains(&key(17)) && !eq.contains(&key(18)), "{eq:?}");
    assert_eq!(strings(&json(n0, "/buckets/people/index/n_int/1000")["keys"]), [key(17)]);
    let named = strings(&json(n0, &format!("/buckets/people/index/name_bin/{}", name(17)))["keys"]);
    assert!(!named.contains(&key(17)) && named.contains(&key(17 + 97)), "{named:?}");
    let r = http.delete(n1.url(&format!("/buckets/people/keys/{}?w=all", key(17)))).send().unwrap();
    assert_eq!(r.status(), 204);
    assert!(strings(&json(n0, "/buckets/people/index/n_int/1000")["keys"]).is_empty());

    // Bad queries: a 400 saying why; an unknown type: Riak's 404.
    for (path, says) in [
        ("/buckets/people/index/n/1", "Invalid field name"),
        ("/buckets/people/index/n_int/one", "Could not parse"),
        ("/buckets/people/index/n_int/1/2/3", "Invalid query"),
        ("/buckets/people/index/n_int/1/2?term_regex=1", "integer queries"),
        ("/buckets/people/index/n_bin/a/b?term_regex=(", "Invalid term regular expression"),
        ("/buckets/people/index/n_int/1/2?max_results=0", "Invalid max_results"),
        ("/buckets/people/index/n_int/1/2?continuation=forged", "Invalid continuation"),
        ("/buckets/people/index/n_int/1/2?return_terms=maybe", "Invalid return_terms"),
        ("/buckets/people/index/n_int/1/2?timeout=-1", "Bad timeout value"),
    ] {
        let (status, _, body) = get(n0, path);
        assert!(status == 400 && body.contains(says), "{path}: {status} {body}");
    }
    assert_eq!(get(n0, "/types/nope/buckets/people/index/n_int/1").0, 404);

    // Two nodes down (N=3): every partition keeps a live holder, and every
    // answer is still complete, before and after they are seen down.
    cluster.kill9(1);
    cluster.kill9(3);
    let n0 = cluster.node(0);
    let mut got = strings(&json(n0, "/buckets/people/index/$bucket/people")["keys"]);
    got.sort();
    let mut want: Vec<String> = live.iter().map(|&i| key(i)).collect();
    want.sort();
    assert_eq!(got, want, "complete with two nodes down, undetected");
    wait_for("two nodes seen down", Duration::from_secs(30), || {
        let s = common::status(cluster.node(0))?;
        let down = s["members"].as_array()?.iter().filter(|m| m["status"] == "down").count();
        (down == 2).then_some(())
    });
    check_queries(cluster.node(4), &live);
}

#[test]
fn index_entries_move_with_their_objects_when_a_node_joins() {
    let mut cluster = Cluster::start_with(192, 4, &["-p", "16"]);
    let nodes: Vec<&NodeProc> = cluster.running().collect();
    write(&nodes, 0..600);
    let live: Vec<usize> = (0..600).collect();
    let want = model(&live, "n_int", -100, 100);
    cluster.add();
    // Query until the move is over, from a node that was there before.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut queries, mut during_move) = (0, 0);
    loop {
        let n0 = cluster.node(0);
        let moving = common::status(n0).unwrap()["ring"]["moving"] == true;
        let got = json(n0, "/buckets/people/index/n_int/-100/100?return_terms=true");
        let got: Vec<(i64, String)> =
            pairs(&got["results"]).into_iter().map(|(t, k)| (t.parse().unwrap(), k)).collect();
        assert_eq!(got, want, "a query during the join");
        queries += 1;
        during_move += usize::from(moving);
        let s = common::status(n0).unwrap();
        let up = s["members"].as_array().unwrap().iter().filter(|m| m["status"] == "up").count();
        if queries >= 3 && s["ring"]["moving"] == false && up == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the join did not finish in time");
    }
    cluster.wait_converged(Duration::from_secs(120));
    // The newcomer answers from the entries it was sent, and so do the
    // others without the partitions they handed over.
    let counts: BTreeMap<usize, usize> = (0..5)
        .map(|n| (n, strings(&json(cluster.node(n), "/buckets/people/index/tag_bin/all")["keys"]).len()))
        .collect();
    assert!(counts.values().all(|&c| c == live.len()), "{counts:?}");
    check_queries(cluster.node(4), &live);
    eprintln!("{queries} queries during the join, {during_move} of them started while partitions moved");
}
