//! Clients that read and write through random nodes and record everything
//! they sent and saw. Values are unique tokens, so every value read can be
//! traced to the write that produced it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{FALLBACKS_HEADER, Kind, Op, Outcome, fallbacks_of, multipart_values};

const CTX: &str = "x-vinzclortho-context";
/// Keys every client writes blindly and resolves: concurrent writes.
pub const SHARED_KEYS: usize = 4;
/// Keys each client alone writes, always with a context.
pub const OWN_KEYS: usize = 3;

pub struct Client {
    pub id: usize,
    rng: StdRng,
    http: reqwest::blocking::Client,
    nodes: Vec<String>,
    /// Nodes that left or were killed for good: not sent to any more.
    departed: Arc<Mutex<BTreeSet<usize>>>,
    started: Instant,
    seq: u64,
    pub ops: Vec<Op>,
}

/// The values of a GET, and its context, if it succeeded.
struct Read {
    values: Vec<String>,
    context: Option<String>,
}

impl Read {
    /// Not found, but with a context: the key was deleted.
    fn tombstone(&self) -> bool {
        self.values.is_empty() && self.context.is_some()
    }
}

impl Client {
    pub fn new(
        id: usize,
        seed: u64,
        nodes: Vec<String>,
        started: Instant,
        departed: Arc<Mutex<BTreeSet<usize>>>,
    ) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(4))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Client {
            id,
            rng: StdRng::seed_from_u64(seed ^ (id as u64) << 32),
            http,
            nodes,
            departed,
            started,
            seq: 0,
            ops: Vec::new(),
        }
    }

    pub fn run(&mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let roll = self.rng.random_range(0..100);
            let own = format!("c{}-k{}", self.id, self.rng.random_range(0..OWN_KEYS));
            let shared = format!("s{}", self.rng.random_range(0..SHARED_KEYS));
            match roll {
                0..40 => self.update(&own),
                40..55 => self.write_after(&shared, None, Vec::new(), false),
                55..70 => self.update(&shared),
                70..95 => {
                    let key = if self.rng.random_bool(0.5) { own } else { shared };
                    self.read(&key);
                }
                _ => self.delete(&own),
            }
        }
    }

    fn node(&mut self) -> usize {
        let departed = self.departed.lock().unwrap().clone();
        let serving: Vec<usize> = (0..self.nodes.len()).filter(|n| !departed.contains(n)).collect();
        if serving.is_empty() {
            return self.rng.random_range(0..self.nodes.len());
        }
        serving[self.rng.random_range(0..serving.len())]
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Read, then write a new value with the read's context.
    fn update(&mut self, key: &str) {
        if let Some(read) = self.read(key) {
            let after_delete = read.tombstone();
            self.write_after(key, read.context, read.values, after_delete);
        }
    }

    fn read(&mut self, key: &str) -> Option<Read> {
        let node = self.node();
        let start = self.now();
        let result = self.http.get(format!("http://{}/store/{key}", self.nodes[node])).send();
        let mut fallbacks = 0;
        let (outcome, read) = match result {
            Ok(r) => {
                let status = r.status().as_u16();
                fallbacks = fallbacks_of(r.headers().get(FALLBACKS_HEADER).and_then(|v| v.to_str().ok()));
                let context = r.headers().get(CTX).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let content_type =
                    r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                match (status, r.text()) {
                    (200, Ok(body)) => (Outcome::Ok(vec![body.clone()]), Some(Read { values: vec![body], context })),
                    (300, Ok(body)) => {
                        let values = multipart_values(&content_type, &body);
                        (Outcome::Ok(values.clone()), Some(Read { values, context }))
                    }
                    (404, Ok(_)) => (Outcome::Ok(vec![]), Some(Read { values: vec![], context })),
                    (400..=499, _) => (Outcome::Failed, None),
                    _ => (Outcome::Unknown, None),
                }
            }
            Err(_) => (Outcome::Unknown, None),
        };
        let end = self.now();
        self.ops.push(Op {
            client: self.id,
            node,
            key: key.to_owned(),
            kind: Kind::Read,
            start,
            end,
            outcome,
            fallbacks,
        });
        read
    }

    /// One blind write of a fresh value to `key`, recorded like the others
    /// (a run's cold keys: written once, before the faults, never again).
    pub fn blind_write(&mut self, key: &str) {
        self.write_after(key, None, Vec::new(), false);
    }

    fn write_after(&mut self, key: &str, context: Option<String>, seen: Vec<String>, after_delete: bool) {
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        let node = self.node();
        let start = self.now();
        let mut request = self.http.put(format!("http://{}/store/{key}", self.nodes[node])).body(value.clone());
        if let Some(ctx) = &context {
            request = request.header(CTX, ctx);
        }
        let (outcome, fallbacks) = outcome_of(request.send());
        let end = self.now();
        let kind = Kind::Write { value, seen, after_delete };
        self.ops.push(Op { client: self.id, node, key: key.to_owned(), kind, start, end, outcome, fallbacks });
    }

    fn delete(&mut self, key: &str) {
        let Some(read) = self.read(key) else { return };
        let Some(context) = read.context else { return };
        let node = self.node();
        let start = self.now();
        let (outcome, fallbacks) = outcome_of(
            self.http.delete(format!("http://{}/store/{key}", self.nodes[node])).header(CTX, context).send(),
        );
        let end = self.now();
        let kind = Kind::Delete { seen: read.values };
        self.ops.push(Op { client: self.id, node, key: key.to_owned(), kind, start, end, outcome, fallbacks });
    }
}

/// The outcome of a write or delete, and how many fallbacks took part.
fn outcome_of(result: reqwest::Result<reqwest::blocking::Response>) -> (Outcome, usize) {
    let fallbacks = result
        .as_ref()
        .map(|r| fallbacks_of(r.headers().get(FALLBACKS_HEADER).and_then(|v| v.to_str().ok())))
        .unwrap_or(0);
    let outcome = match result.map(|r| r.status().as_u16()) {
        Ok(200) => Outcome::Ok(vec![]),
        Ok(400..=499) => Outcome::Failed,
        _ => Outcome::Unknown,
    };
    (outcome, fallbacks)
}
