//! Riak's HTTP object API on a real 4-node cluster (larger than N=3), spoken
//! as Riak's client libraries speak it: names quoted with `quote_plus`, the
//! vclock base64-decoded and re-encoded between a read and a write,
//! `Accept: multipart/mixed, */*;q=0.5` for siblings, conditional requests,
//! `returnbody`, and the same object reached through every path form and
//! through `/store`.

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Cluster, client};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};

const VCLOCK: &str = "x-riak-vclock";
const SIBLINGS_ACCEPT: &str = "multipart/mixed, */*;q=0.5";

struct Riak {
    http: Client,
    nodes: Vec<String>,
}

impl Riak {
    fn url(&self, node: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[node % self.nodes.len()])
    }

    fn get(&self, node: usize, path: &str) -> RequestBuilder {
        self.http.get(self.url(node, path))
    }

    fn put(&self, node: usize, path: &str, body: &str) -> RequestBuilder {
        self.http.put(self.url(node, path)).header("content-type", "text/plain").body(body.to_owned())
    }

    /// A client-side vclock round trip: decoded from base64 and encoded
    /// again, as the Python and Java clients keep it.
    fn vclock(response: &Response) -> String {
        let raw = response.headers()[VCLOCK].to_str().unwrap();
        let decoded = STANDARD.decode(raw).expect("X-Riak-Vclock is standard base64");
        let again = STANDARD.encode(decoded);
        assert_eq!(again, raw, "the vclock survives a client's decode and encode");
        again
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// The parts of a `multipart/mixed` body: (headers with lower-case names,
/// value).
fn parts(content_type: &str, body: &[u8]) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut out = Vec::new();
    let mut rest = &text[..];
    let find = |h: &[u8], n: &[u8]| h.windows(n.len()).position(|w| w == n);
    let start = find(rest, delimiter.as_bytes()).expect("a first delimiter");
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return out;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let end = find(rest, delimiter.as_bytes()).expect("a closing delimiter");
        let part = &rest[..end];
        let blank = find(part, b"\r\n\r\n").expect("a blank line in the part");
        let headers = String::from_utf8(part[..blank].to_vec())
            .unwrap()
            .split("\r\n")
            .map(|line| {
                let (k, v) = line.split_once(": ").expect("a header line");
                (k.to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        out.push((headers, part[blank + 4..].to_vec()));
        rest = &rest[end + delimiter.len()..];
    }
}

#[test]
fn riak_objects_as_riak_clients_see_them() {
    let cluster = Cluster::start(181, 4);
    let riak = Riak { http: client(), nodes: cluster.running().map(|n| n.http.clone()).collect() };

    // A write with every kind of metadata, read back through another node.
    let r = riak
        .http
        .put(riak.url(0, "/buckets/people/keys/ann+lee"))
        .body("hello")
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-riak-meta-color", "blue")
        .header("x-riak-index-age_int", "042")
        .header("x-riak-index-name_bin", "ann, lee")
        .header("link", "</buckets/people/keys/bob>; riaktag=\"friend\"")
        .header("content-encoding", "identity")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().unwrap());
    let r = riak.get(1, "/buckets/people/keys/ann%20lee").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&r, "x-riak-meta-color"), "blue");
    assert_eq!(header(&r, "x-riak-index-age_int"), "42", "an _int is stored as an integer");
    assert_eq!(header(&r, "x-riak-index-name_bin"), "ann, lee");
    assert_eq!(header(&r, "link"), "</buckets/people>; rel=\"up\", </buckets/people/keys/bob>; riaktag=\"friend\"");
    assert_eq!(header(&r, "content-encoding"), "identity");
    let etag = header(&r, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert!(!header(&r, "last-modified").is_empty());
    let vclock = Riak::vclock(&r);
    assert_eq!(r.text().unwrap(), "hello");

    // The same object through the typed path, the legacy path, HEAD.
    for (node, path) in [(2, "/types/default/buckets/people/keys/ann+lee"), (3, "/riak/people/ann+lee")] {
        let r = riak.get(node, path).send().unwrap();
        assert_eq!((r.status(), header(&r, "etag")), (StatusCode::OK, etag.clone()), "{path}");
    }
    let r = riak.get(3, "/riak/people/ann+lee").send().unwrap();
    assert_eq!(header(&r, "link"), "</riak/people>; rel=\"up\", </riak/people/bob>; riaktag=\"friend\"");
    let r = riak.http.head(riak.url(0, "/buckets/people/keys/ann+lee")).send().unwrap();
    assert_eq!((r.status(), header(&r, "etag")), (StatusCode::OK, etag.clone()));

    // Conditional reads.
    let r = riak.get(1, "/buckets/people/keys/ann+lee").header("if-none-match", &etag).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = riak.get(1, "/buckets/people/keys/ann+lee").header("if-none-match", "\"other\"").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
    let r = riak.get(2, "/buckets/people/keys/ann+lee").header("if-modified-since", &later).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // An update with the vclock replaces; returnbody answers with it.
    let r = riak
        .put(2, "/buckets/people/keys/ann+lee?returnbody=true", "hello again")
        .header(VCLOCK, &vclock)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(header(&r, "etag"), etag);
    let vclock = Riak::vclock(&r);
    assert_eq!(r.text().unwrap(), "hello again");

    // Conditional writes: 412 when the condition fails, nothing written.
    let r = riak.put(0, "/buckets/people/keys/ann+lee", "x").header("if-none-match", "*").send().unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = riak.put(0, "/buckets/people/keys/ann+lee", "x").header("if-match", &etag).send().unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "the old ETag no longer matches");
    let r = riak.put(0, "/buckets/people/keys/fresh", "new").header("if-none-match", "*").send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = riak.get(1, "/buckets/people/keys/ann+lee").send().unwrap();
    assert_eq!(r.text().unwrap(), "hello again");

    // Two writes with the same vclock: siblings, shown three ways.
    for (node, value) in [(0, "left"), (1, "right")] {
        let r = riak.put(node, "/buckets/people/keys/ann+lee", value).header(VCLOCK, &vclock).send().unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let r = riak.get(3, "/buckets/people/keys/ann+lee").header("accept", SIBLINGS_ACCEPT).send().unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let siblings_vclock = Riak::vclock(&r);
    let content_type = header(&r, "content-type");
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    let parts = parts(&content_type, &r.bytes().unwrap());
    let mut values: Vec<String> = parts.iter().map(|(_, v)| String::from_utf8(v.clone()).unwrap()).collect();
    values.sort();
    assert_eq!(values, ["left", "right"]);
    for (h, _) in &parts {
        assert_eq!(h["content-type"], "text/plain");
        assert!(h["link"].starts_with("</buckets/people>; rel=\"up\""), "{h:?}");
        assert!(!h["etag"].is_empty() && !h["last-modified"].is_empty(), "{h:?}");
    }
    let r = riak.get(3, "/buckets/people/keys/ann+lee").send().unwrap();
    assert_eq!((r.status(), header(&r, "content-type")), (StatusCode::MULTIPLE_CHOICES, "text/plain".to_owned()));
    let text = r.text().unwrap();
    let vtags: Vec<&str> = text.strip_prefix("Siblings:\n").expect("Riak's sibling list").lines().collect();
    assert_eq!(vtags.len(), 2);
    let r = riak.get(0, &format!("/buckets/people/keys/ann+lee?vtag={}", vtags[0])).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), format!("\"{}\"", vtags[0]));
    // Resolving with the siblings' vclock leaves one value.
    let r = riak.put(1, "/buckets/people/keys/ann+lee", "merged").header(VCLOCK, &siblings_vclock).send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = riak.get(2, "/buckets/people/keys/ann+lee").send().unwrap();
    assert_eq!((r.status(), r.text().unwrap()), (StatusCode::OK, "merged".to_owned()));

    // POST without a key: 201 and a Location that reads back.
    let r = riak
        .http
        .post(riak.url(0, "/buckets/people/keys"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = header(&r, "location");
    assert!(location.starts_with("/buckets/people/keys/") && location.len() > 30, "{location}");
    let r = riak.get(1, &location).send().unwrap();
    assert_eq!((r.status(), header(&r, "content-type")), (StatusCode::OK, "application/json".to_owned()));
    let r = riak
        .http
        .post(riak.url(0, "/types/default/buckets/people/keys?returnbody=true"))
        .header("content-type", "text/plain")
        .body("typed")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(header(&r, "location").starts_with("/types/default/buckets/people/keys/"));
    assert_eq!(r.text().unwrap(), "typed");

    // /store/{key} is /buckets/default/keys/{key}; their contexts are
    // interchangeable.
    let r = riak.http.put(riak.url(0, "/store/shared")).body("from store").send().unwrap();
    let context = header(&r, "x-vinzclortho-context");
    let r = riak.get(1, "/buckets/default/keys/shared").send().unwrap();
    assert_eq!(r.text().unwrap(), "from store");
    let r = riak.put(2, "/buckets/default/keys/shared", "from riak").header(VCLOCK, &context).send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = riak.get(3, "/store/shared").send().unwrap();
    assert_eq!((r.status(), r.text().unwrap()), (StatusCode::OK, "from riak".to_owned()), "no sibling");

    // Delete: 204, then 404 with the tombstone's vclock and X-Riak-Deleted.
    let r = riak.http.delete(riak.url(0, "/buckets/people/keys/ann+lee")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = riak.get(1, "/buckets/people/keys/ann+lee").send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "x-riak-deleted"), "true");
    Riak::vclock(&r);
    assert_eq!(r.text().unwrap(), "not found\n");
    let r = riak.http.delete(riak.url(2, "/buckets/people/keys/ann+lee")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing left to delete");
    let r = riak.get(1, "/buckets/people/keys/never").send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get(VCLOCK).is_none());

    // notfound_ok=false: not-founds no longer count towards R, yet a key
    // nobody has is a 404 (Riak's not-found), not a failed quorum.
    for query in ["notfound_ok=false", "notfound_ok=false&basic_quorum=true", "notfound_ok=false&r=1"] {
        let r = riak.get(1, &format!("/buckets/people/keys/nobody?{query}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{query}");
        let r = riak.get(1, &format!("/buckets/people/keys/fresh?{query}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{query}");
    }

    // The service resources a Riak client reads first.
    let r = riak.get(0, "/").header("accept", "application/json").send().unwrap();
    let resources: serde_json::Value = r.json().unwrap();
    for name in ["riak_kv_wm_buckets", "riak_kv_wm_bucket_type", "riak_kv_wm_counter", "riak_kv_wm_preflist"] {
        assert!(resources[name].is_string(), "{name} in {resources}");
    }
    assert_eq!(resources["riak_kv_wm_stats"], "/stats");
    let stats: serde_json::Value = riak.get(1, "/stats").send().unwrap().json().unwrap();
    let version = stats["riak_kv_version"].as_str().unwrap();
    assert!(version.split('.').next().unwrap().parse::<u32>().unwrap() >= 2, "{version}");
    assert!(stats["node_gets_total"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["node_put_fsm_time_99"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["ring_members"].as_array().unwrap().len(), 4);
    let r = riak.get(2, "/types/default/buckets/people/keys/fresh/preflist").send().unwrap();
    let preflist: serde_json::Value = r.json().unwrap();
    let entries = preflist["preflist"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let nodes: std::collections::BTreeSet<&str> = entries.iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 3, "three distinct nodes: {preflist}");
    assert!(entries.iter().all(|e| e["primary"] == true));
    for (method, path) in [
        (reqwest::Method::POST, "/mapred"),
        (reqwest::Method::GET, "/types/maps/buckets/b/datatypes/k"),
        (reqwest::Method::GET, "/search/query/index"),
        (reqwest::Method::GET, "/riak/people/fresh/_,_,_"),
    ] {
        let r = riak.http.request(method, riak.url(0, path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED, "{path}");
        assert!(r.text().unwrap().contains("not supported"), "{path}");
    }

    // Counters: concurrent increments through every node, none lost.
    assert_eq!(riak.get(0, "/buckets/hits/counters/page").send().unwrap().status(), StatusCode::NOT_FOUND);
    std::thread::scope(|s| {
        for node in 0..4 {
            let riak = &riak;
            s.spawn(move || {
                for i in 0..40 {
                    let delta = if i % 4 == 3 { "-1" } else { "2" };
                    let r = riak.http.post(riak.url(node, "/buckets/hits/counters/page")).body(delta).send().unwrap();
                    assert_eq!(r.status(), StatusCode::NO_CONTENT);
                }
            });
        }
    });
    // Per node: 30 increments of 2, 10 of -1.
    let expected = 4 * (30 * 2 - 10);
    for node in 0..4 {
        let r = riak.get(node, "/buckets/hits/counters/page").send().unwrap();
        assert_eq!((r.status(), r.text().unwrap()), (StatusCode::OK, expected.to_string()), "node {node}");
    }
    let r = riak.http.post(riak.url(1, "/buckets/hits/counters/page?returnvalue=true")).body("5").send().unwrap();
    assert_eq!((r.status(), r.text().unwrap()), (StatusCode::OK, (expected + 5).to_string()));
    let r = riak.http.post(riak.url(1, "/buckets/hits/counters/page")).body("five").send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Keys are bytes: %2F is part of the key, not a path separator, and a
    // key need not be UTF-8.
    for path in ["/buckets/b/keys/a%2Fb", "/buckets/b/keys/%FF%00"] {
        assert_eq!(riak.put(0, path, "bytes").send().unwrap().status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(riak.get(1, path).send().unwrap().text().unwrap(), "bytes", "{path}");
    }
}

#[test]
fn riak_refuses_bad_requests_with_riaks_answers() {
    let cluster = Cluster::start(182, 1);
    let riak = Riak { http: client(), nodes: vec![cluster.node(0).http.clone()] };
    let bad = |r: Response, status: StatusCode, needle: &str| {
        assert_eq!(r.status(), status);
        let text = r.text().unwrap();
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    };
    let no_type = riak.http.put(riak.url(0, "/buckets/b/keys/k")).body("v").send().unwrap();
    bad(no_type, StatusCode::BAD_REQUEST, "Missing Content-Type request header");
    let r =
        riak.http.put(riak.url(0, "/buckets/b/keys/k")).header("content-type", "nonsense").body("v").send().unwrap();
    bad(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "is not a valid media type");
    let r = riak.put(0, "/buckets/b/keys/k?w=two", "v").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "w query parameter must be an integer or one of the following words");
    let r = riak.get(0, "/buckets/b/keys/k?r=4").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "above n_val");
    let r = riak.get(0, "/buckets/b/keys/k?notfound_ok=maybe").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "notfound_ok query parameter must be true or false");
    let r = riak.get(0, "/buckets/b/keys/k?timeout=soon").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "Bad timeout value");
    let r = riak.put(0, "/buckets/b/keys/k", "v").header("x-riak-index-age", "1").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "Invalid field name");
    let r = riak.put(0, "/buckets/b/keys/k", "v").header("x-riak-index-age_int", "old").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "Could not parse field 'age_int'");
    let r = riak.put(0, "/buckets/b/keys/k", "v").header("link", "<http://elsewhere>; rel=\"x\"").send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "Invalid Link header");
    // A vclock that is not ours, or another key's, is refused, never applied.
    let r = riak
        .put(0, "/buckets/b/keys/k", "v")
        .header(VCLOCK, "a85hYGBgzGDKBVIcR4M2cgczH7HPYEpkzGNlsP/VfYIvCwA=")
        .send()
        .unwrap();
    bad(r, StatusCode::BAD_REQUEST, "invalid x-riak-vclock");
    let r = riak.put(0, "/buckets/b/keys/other", "v").send().unwrap();
    let other = header(&r, VCLOCK);
    let r = riak.put(0, "/buckets/b/keys/k", "v").header(VCLOCK, &other).send().unwrap();
    bad(r, StatusCode::BAD_REQUEST, "not issued for this key");
    // Nothing above was stored.
    assert_eq!(riak.get(0, "/buckets/b/keys/k").send().unwrap().status(), StatusCode::NOT_FOUND);
    let r = riak.get(0, "/buckets//keys/k").send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
