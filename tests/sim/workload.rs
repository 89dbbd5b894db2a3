//! Simulated clients: the fault suite's workload (`tests/jepsen/workload.rs`)
//! as tasks on the simulated clock, sending real HTTP requests to a random
//! node's router in process. Values are unique tokens, so the checker can
//! trace every value read to its write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::history::{FALLBACKS_HEADER, Kind, Op, Outcome, fallbacks_of, multipart_values};
use super::world::Cluster;

const CTX: &str = "x-vinzclortho-context";
/// Keys every client writes blindly and resolves: concurrent writes.
pub const SHARED_KEYS: usize = 3;
/// Keys each client alone writes, always with a context.
pub const OWN_KEYS: usize = 2;
/// A client gives up on a request after this (then: outcome unknown).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

pub struct Client {
    pub id: usize,
    rng: StdRng,
    cluster: Arc<Cluster>,
    started: Instant,
    seq: u64,
    /// Shared with the run, which watches acknowledged writes as they land.
    ops: Arc<Mutex<Vec<Op>>>,
}

struct Read {
    values: Vec<String>,
    context: Option<String>,
}

/// What came back from a node, if anything.
struct Answer {
    status: u16,
    /// Fallbacks that took part (`X-VinzClortho-Fallbacks`).
    fallbacks: usize,
    context: Option<String>,
    content_type: String,
    body: String,
}

impl Client {
    pub fn new(id: usize, seed: u64, cluster: Arc<Cluster>, started: Instant, ops: Arc<Mutex<Vec<Op>>>) -> Client {
        Client { id, rng: StdRng::seed_from_u64(seed), cluster, started, seq: 0, ops }
    }

    /// Runs until `until` (simulated time).
    pub async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            let roll = self.rng.random_range(0..100);
            let own = format!("c{}-k{}", self.id, self.rng.random_range(0..OWN_KEYS));
            let shared = format!("s{}", self.rng.random_range(0..SHARED_KEYS));
            match roll {
                0..40 => self.update(&own).await,
                40..55 => self.write_after(&shared, None, Vec::new(), false).await,
                55..70 => self.update(&shared).await,
                70..95 => {
                    let key = if self.rng.random_bool(0.5) { own } else { shared };
                    self.read(&key).await;
                }
                _ => self.delete(&own).await,
            }
            let pause = self.rng.random_range(5..60);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn send(
        &mut self,
        node: usize,
        method: Method,
        key: &str,
        context: Option<&str>,
        body: String,
    ) -> Option<Answer> {
        let mut request = Request::builder().method(method).uri(format!("/store/{key}"));
        if let Some(ctx) = context {
            request = request.header(CTX, ctx);
        }
        let request = request.body(Body::from(body)).unwrap();
        let exchange = async {
            let (response, incarnation) = self.cluster.request(node, request).await?;
            let status = response.status().as_u16();
            let (context, content_type, fallbacks) = {
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                (
                    header(CTX),
                    header("content-type").unwrap_or_default(),
                    fallbacks_of(header(FALLBACKS_HEADER).as_deref()),
                )
            };
            let body = response.into_body().collect().await.ok()?.to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            Some((Answer { status, fallbacks, context, content_type, body }, incarnation))
        };
        let (answer, incarnation) = tokio::time::timeout(CLIENT_TIMEOUT, exchange).await.ok()??;
        // An answer from a process that has died since is a reset connection.
        (self.cluster.incarnation(node) == Some(incarnation)).then_some(answer)
    }

    async fn update(&mut self, key: &str) {
        if let Some(read) = self.read(key).await {
            let after_delete = read.values.is_empty() && read.context.is_some();
            self.write_after(key, read.context, read.values, after_delete).await;
        }
    }

    fn node(&mut self) -> usize {
        self.rng.random_range(0..self.cluster.size())
    }

    async fn read(&mut self, key: &str) -> Option<Read> {
        let node = self.node();
        let start = self.now();
        let answer = self.send(node, Method::GET, key, None, String::new()).await;
        let fallbacks = answer.as_ref().map_or(0, |a| a.fallbacks);
        let (outcome, read) = match answer {
            Some(a) => match a.status {
                200 => (Outcome::Ok(vec![a.body.clone()]), Some(Read { values: vec![a.body], context: a.context })),
                300 => {
                    let values = multipart_values(&a.content_type, &a.body);
                    (Outcome::Ok(values.clone()), Some(Read { values, context: a.context }))
                }
                404 => (Outcome::Ok(vec![]), Some(Read { values: vec![], context: a.context })),
                400..=499 => (Outcome::Failed, None),
                _ => (Outcome::Unknown, None),
            },
            None => (Outcome::Unknown, None),
        };
        let end = self.now();
        self.record(Op {
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

    async fn write_after(&mut self, key: &str, context: Option<String>, seen: Vec<String>, after_delete: bool) {
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        let node = self.node();
        let start = self.now();
        let answer = self.send(node, Method::PUT, key, context.as_deref(), value.clone()).await;
        let end = self.now();
        let kind = Kind::Write { value, seen, after_delete };
        let fallbacks = answer.as_ref().map_or(0, |a| a.fallbacks);
        let outcome = outcome_of(answer);
        self.record(Op { client: self.id, node, key: key.to_owned(), kind, start, end, outcome, fallbacks });
    }

    async fn delete(&mut self, key: &str) {
        let Some(read) = self.read(key).await else { return };
        let Some(context) = read.context else { return };
        let node = self.node();
        let start = self.now();
        let answer = self.send(node, Method::DELETE, key, Some(&context), String::new()).await;
        let end = self.now();
        let kind = Kind::Delete { seen: read.values };
        let fallbacks = answer.as_ref().map_or(0, |a| a.fallbacks);
        let outcome = outcome_of(answer);
        self.record(Op { client: self.id, node, key: key.to_owned(), kind, start, end, outcome, fallbacks });
    }
}

fn outcome_of(answer: Option<Answer>) -> Outcome {
    match answer.map(|a| a.status) {
        Some(200 | 204) => Outcome::Ok(vec![]),
        Some(400..=499) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}
