//! Coverage queries: a question every partition answers once (the keys of a
//! bucket, the buckets of a type, a secondary-index query), asked of one
//! live holder per partition (`core::coverage`) and streamed back.
//!
//! [`Coverage::start`] plans on the current ring and fails at once when some
//! partition has no live holder. Then a task asks a few partitions at a
//! time ([`PARTITIONS_IN_FLIGHT`]) through a [`CoverageClient`], and passes
//! each page on through a small bounded channel as it arrives: a slow
//! reader slows the holders down (backpressure to the store), and nothing
//! holds the whole answer. Keys are unique within a partition and each
//! partition is asked once, so keys need no de-duplication; buckets do (a
//! bucket has keys in many partitions), so the buckets already sent are
//! remembered, one entry per bucket.
//!
//! A holder that fails (a node that went down since the plan, or that is on
//! a newer ring: then this node catches up and plans that partition on the
//! new ring) is replaced by another live holder of the partition, a few
//! times ([`ATTEMPTS_PER_PARTITION`]). A partition's keys arrive in
//! ascending order, so the next holder resumes after the last key passed on
//! and nothing is sent twice; buckets start over, and the buckets already
//! sent are skipped as above. Index entries are unique and ordered within a
//! partition as keys are, and resume the same way.
//!
//! Pages arrive in no order across partitions. An index query that wants
//! its results sorted (a page of `max_results`, or a whole answer) merges
//! them with [`sorted`]; each holder then sends at most `max_results`
//! entries, so a page costs at most that many per partition, and the merge
//! keeps only the best `max_results`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::Topology;
use crate::core::coverage::{self, Uncovered};
use crate::core::index::IndexRequest;
use crate::core::key::NodeId;
use crate::core::ring::Partition;
use crate::env::Env;
use crate::error::{ErrorCode, HasErrorCode};
use crate::replica::{CallContext, ReplicaError};
use crate::telemetry::metrics;

/// The longest bucket type or bucket name a listing takes (and a holder
/// accepts in a request).
pub const NAME_MAX_BYTES: usize = 64 * 1024;
/// Partitions asked at once by one listing.
pub const PARTITIONS_IN_FLIGHT: usize = 4;
/// Pages a listing holds between the holders and its reader.
const PAGES_BUFFERED: usize = 4;
/// Holders one partition may be asked of before the listing fails.
const ATTEMPTS_PER_PARTITION: usize = 3;

/// What each partition is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoverageQuery {
    /// The keys of one bucket.
    Keys { bucket_type: Bytes, bucket: Bytes },
    /// The buckets of one type that hold a live object.
    Buckets { bucket_type: Bytes },
    /// A secondary-index query: its entries (`core::index`), starting after
    /// the entry `after` (a continuation), at most `max` per partition.
    Index { request: IndexRequest, after: Option<Bytes>, max: Option<u32> },
}

impl CoverageQuery {
    /// The metric label and span field.
    pub fn kind(&self) -> &'static str {
        match self {
            CoverageQuery::Keys { .. } => "keys",
            CoverageQuery::Buckets { .. } => "buckets",
            CoverageQuery::Index { .. } => "index",
        }
    }
}

/// Some of one partition's answer, in the partition's order.
pub type Page = Vec<Bytes>;

/// How a coordinator asks one holder for one partition's answer.
#[async_trait]
pub trait CoverageClient: Send + Sync + 'static {
    /// Sends the answer of `node` for `partition` to `pages`, page by page,
    /// and returns `Ok` once it is complete. Keys come in ascending order,
    /// starting after `after` when given (a resumed partition); `after` is
    /// ignored for buckets. If `pages` is closed (the listing ended) it may
    /// stop early, and returns `Ok`.
    async fn query(
        &self,
        node: &NodeId,
        partition: Partition,
        query: &CoverageQuery,
        after: Option<Bytes>,
        call: CallContext,
        pages: mpsc::Sender<Page>,
    ) -> Result<(), ReplicaError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error("listing refused: {0}")]
    Uncovered(#[from] Uncovered),
    #[error("listing failed: node {node} could not list partition {partition}: {error}")]
    Failed { node: NodeId, partition: Partition, error: ReplicaError },
    #[error("listing did not finish within {0:?}")]
    Timeout(Duration),
    #[error(
        "node {node} left the cluster or was removed from it, so it serves no data; \
         use another node"
    )]
    Removed { node: NodeId },
    #[error("the answer holds more than {limit} bytes; ask for pages (max_results) or stream it")]
    TooLarge { limit: usize },
    /// The listing's task ended without saying how (a bug, a panic).
    #[error("the listing stopped unexpectedly")]
    Stopped,
}

impl HasErrorCode for CoverageError {
    fn code(&self) -> ErrorCode {
        match self {
            CoverageError::Uncovered(_) | CoverageError::Timeout(_) | CoverageError::Removed { .. } => {
                ErrorCode::Unavailable
            }
            CoverageError::Failed { error, .. } => match error.code() {
                // A holder's disk failed: still the listing's internal error.
                ErrorCode::Internal => ErrorCode::Internal,
                _ => ErrorCode::Unavailable,
            },
            CoverageError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            CoverageError::Stopped => ErrorCode::Internal,
        }
    }
}

/// Runs coverage queries from this node.
pub struct Coverage {
    topology: Arc<dyn Topology>,
    client: Arc<dyn CoverageClient>,
    /// Varies which holders plans pick, listing after listing.
    rotation: AtomicUsize,
    env: Env,
}

/// A listing under way: its pages, in arrival order, until `None`.
pub struct Listing {
    pages: mpsc::Receiver<Result<Page, CoverageError>>,
    /// Set by the task once every partition answered completely.
    complete: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    finished: bool,
    /// The metric label, for a listing dropped before its end.
    kind: &'static str,
}

impl Listing {
    /// The next page; `None` once every partition answered. After an error
    /// there is nothing more.
    pub async fn next(&mut self) -> Option<Result<Page, CoverageError>> {
        if self.finished {
            return None;
        }
        match self.pages.recv().await {
            Some(Err(e)) => {
                self.finished = true;
                Some(Err(e))
            }
            Some(page) => Some(page),
            None => {
                self.finished = true;
                // Every sender is gone: complete, or the task died.
                (!self.complete.load(Ordering::Acquire)).then_some(Err(CoverageError::Stopped))
            }
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // A reader that went away stops the holders too.
        if !self.finished {
            metrics::listing(self.kind, "gone");
        }
        self.task.abort();
    }
}

impl Coverage {
    pub fn new(topology: Arc<dyn Topology>, client: Arc<dyn CoverageClient>) -> Coverage {
        Coverage { topology, client, rotation: AtomicUsize::new(0), env: Env::real() }
    }

    /// Spawns its tasks through `env` (the node's metrics recorder).
    pub fn with_env(mut self, env: &Env) -> Coverage {
        self.env = env.clone();
        self
    }

    /// Plans `query` and starts it; it must end by `deadline`. Fails at once
    /// when some partition has no live holder.
    pub fn start(&self, query: CoverageQuery, deadline: Instant) -> Result<Listing, CoverageError> {
        if self.topology.removed() {
            return Err(CoverageError::Removed { node: self.topology.local().clone() });
        }
        let view = self.topology.view();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let plan = coverage::plan(&view.current, view.n_val, |n| self.topology.is_up(n), rotation)
            .inspect_err(|_| metrics::listing(query.kind(), "uncovered"))?;
        let (tx, rx) = mpsc::channel(PAGES_BUFFERED);
        let complete = Arc::new(AtomicBool::new(false));
        let kind = query.kind();
        let run = Run {
            topology: Arc::clone(&self.topology),
            client: Arc::clone(&self.client),
            seen: (matches!(query, CoverageQuery::Buckets { .. })).then(|| Mutex::new(HashSet::new())),
            query,
            deadline,
            out: tx,
        };
        let span = tracing::info_span!(
            "coordinator.listing",
            kind = run.query.kind(),
            partitions = view.current.partitions(),
            nodes = plan.assignments.len()
        );
        let work = plan.by_partition();
        let context = CallContext { deadline, ring_epoch: view.epoch, ring_hash: view.ring_hash };
        let done = Arc::clone(&complete);
        let task = self.env.spawn(
            async move {
                let started = Instant::now();
                let kind = run.query.kind();
                let run = &run;
                let all = futures::stream::iter(work)
                    .map(|(partition, node)| run.partition(partition, node, context))
                    .buffer_unordered(PARTITIONS_IN_FLIGHT);
                let outcome = tokio::time::timeout_at(deadline, async {
                    let mut all = std::pin::pin!(all);
                    while let Some(result) = all.next().await {
                        result?;
                    }
                    Ok(())
                })
                .await
                .unwrap_or_else(|_| Err(CoverageError::Timeout(deadline.saturating_duration_since(started))));
                match outcome {
                    Ok(()) => {
                        done.store(true, Ordering::Release);
                        metrics::listing(kind, "ok");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listing failed");
                        metrics::listing(kind, "failed");
                        let _ = run.out.send(Err(e)).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Listing { pages: rx, complete, task, finished: false, kind })
    }
}

/// One listing's shared state, borrowed by its partitions' futures.
struct Run {
    topology: Arc<dyn Topology>,
    client: Arc<dyn CoverageClient>,
    query: CoverageQuery,
    /// Buckets already sent (bucket listings only).
    seen: Option<Mutex<HashSet<Bytes>>>,
    deadline: Instant,
    out: mpsc::Sender<Result<Page, CoverageError>>,
}

impl Run {
    /// Asks holders of `partition`, `first` first, until its answer is
    /// complete; passes its pages on.
    async fn partition(
        &self,
        partition: Partition,
        first: NodeId,
        mut context: CallContext,
    ) -> Result<(), CoverageError> {
        let mut node = first;
        let mut tried: Vec<NodeId> = Vec::new();
        // The last key passed on: a next holder resumes after it.
        let mut after: Option<Bytes> = match &self.query {
            CoverageQuery::Index { after, .. } => after.clone(),
            _ => None,
        };
        // Keys and entries come in order: a next holder resumes after the
        // last one passed on.
        let ordered = !matches!(self.query, CoverageQuery::Buckets { .. });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tx, mut rx) = mpsc::channel::<Page>(1);
            let call = self.client.query(&node, partition, &self.query, after.clone(), context, tx);
            let forward = async {
                let mut last = None;
                while let Some(page) = rx.recv().await {
                    let page = self.fresh(page);
                    if page.is_empty() {
                        continue;
                    }
                    let tail = page.last().cloned();
                    metrics::listed(self.query.kind(), page.len());
                    if self.out.send(Ok(page)).await.is_err() {
                        break;
                    }
                    last = tail;
                }
                last
            };
            let (answer, last) = tokio::join!(call, forward);
            if ordered && last.is_some() {
                after = last;
            }
            let error = match answer {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let failed = |error| CoverageError::Failed { node: node.clone(), partition, error };
            if attempt >= ATTEMPTS_PER_PARTITION || !replaceable(&error) {
                return Err(failed(error));
            }
            tracing::info!(partition, %node, error = %error, resumed = after.is_some(), "holder failed; asking another");
            tried.push(node.clone());
            if let ReplicaError::StaleRing { node: newer, epoch } = &error {
                // Our ring is behind: catch up, and plan on the new one.
                if !self.topology.catch_up(newer, *epoch, self.deadline).await {
                    return Err(failed(error));
                }
                tried.clear();
            }
            let view = self.topology.view();
            context.ring_epoch = view.epoch;
            context.ring_hash = view.ring_hash;
            let is_up = |n: &NodeId| self.topology.is_up(n);
            match coverage::alternative(&view.current, view.n_val, partition, is_up, &tried) {
                Some(next) => node = next,
                None => return Err(failed(error)),
            }
        }
    }

    /// The page without the buckets already sent (buckets only).
    fn fresh(&self, page: Page) -> Page {
        match &self.seen {
            None => page,
            Some(seen) => {
                let mut seen = seen.lock().expect("listing lock");
                page.into_iter().filter(|b| seen.insert(b.clone())).collect()
            }
        }
    }
}

/// The entries of an index listing in ascending order, all of them or the
/// first `max`: the partitions' pages merged, holding at most `max` entries
/// (all of them without `max`) at any time, and never more than
/// `max_bytes` of them (else [`CoverageError::TooLarge`]).
pub async fn sorted(mut listing: Listing, max: Option<usize>, max_bytes: usize) -> Result<Vec<Bytes>, CoverageError> {
    let mut best = std::collections::BTreeSet::new();
    let mut bytes = 0;
    while let Some(page) = listing.next().await {
        for entry in page? {
            if best.contains(&entry) {
                continue;
            }
            if let Some(max) = max
                && best.len() >= max
            {
                match best.last() {
                    Some(worst) if entry < *worst => {
                        bytes -= best.pop_last().map_or(0, |e: Bytes| e.len());
                    }
                    _ => continue,
                }
            }
            bytes += entry.len();
            if bytes > max_bytes {
                return Err(CoverageError::TooLarge { limit: max_bytes });
            }
            best.insert(entry);
        }
    }
    Ok(best.into_iter().collect())
}

/// Whether another holder may answer instead: the holder did not answer
/// (down, or not the node we meant), or answers for another ring.
fn replaceable(error: &ReplicaError) -> bool {
    match error {
        ReplicaError::Unreachable { .. } | ReplicaError::UnknownNode(_) | ReplicaError::StaleRing { .. } => true,
        // It does not hold the partition (its ring moved on), or is stopping.
        ReplicaError::Remote { code, .. } => matches!(code, ErrorCode::Conflict | ErrorCode::Unavailable),
        ReplicaError::Storage(_) | ReplicaError::TooManySiblings { .. } | ReplicaError::Expired => false,
    }
}

/// A scripted listing for the tests of the layers above (the HTTP edge).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::coordinator::RingView;
    use crate::core::ring::Ring;

    /// One node holding the 4 partitions of its ring.
    struct Alone(Arc<RingView>, NodeId);

    #[async_trait]
    impl Topology for Alone {
        fn view(&self) -> Arc<RingView> {
            Arc::clone(&self.0)
        }
        fn local(&self) -> &NodeId {
            &self.1
        }
        fn is_up(&self, _node: &NodeId) -> bool {
            true
        }
        fn http_address(&self, node: &NodeId) -> String {
            node.to_string()
        }
        async fn catch_up(&self, _from: &NodeId, _epoch: u64, _until: Instant) -> bool {
            false
        }
    }

    /// Each partition answers one key, `k{partition}`; `failing` fails
    /// after sending it.
    struct Holder {
        failing: Option<Partition>,
    }

    #[async_trait]
    impl CoverageClient for Holder {
        async fn query(
            &self,
            node: &NodeId,
            partition: Partition,
            _query: &CoverageQuery,
            _after: Option<Bytes>,
            _call: CallContext,
            pages: mpsc::Sender<Page>,
        ) -> Result<(), ReplicaError> {
            let _ = pages.send(vec![Bytes::from(format!("k{partition}"))]).await;
            if self.failing == Some(partition) {
                return Err(ReplicaError::Unreachable {
                    node: node.clone(),
                    reason: "gone".into(),
                    maybe_applied: false,
                });
            }
            Ok(())
        }
    }

    /// Listings on one node of 4 partitions, whose partition `failing`
    /// fails after its first page.
    pub(crate) fn one_node(failing: Option<Partition>) -> Coverage {
        let a = NodeId::new("a");
        let current = Arc::new(Ring::single(4, a.clone()).unwrap());
        let view = Arc::new(RingView { epoch: 1, ring_hash: 0, current, target: None, n_val: 3, r: 2, w: 2 });
        Coverage::new(Arc::new(Alone(view, a)), Arc::new(Holder { failing }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;
    use crate::coordinator::RingView;
    use crate::core::ring::{Claim, Ring};

    struct Fixed {
        view: Arc<RingView>,
        local: NodeId,
        down: HashSet<NodeId>,
    }

    #[async_trait]
    impl Topology for Fixed {
        fn view(&self) -> Arc<RingView> {
            Arc::clone(&self.view)
        }
        fn local(&self) -> &NodeId {
            &self.local
        }
        fn is_up(&self, node: &NodeId) -> bool {
            !self.down.contains(node)
        }
        fn http_address(&self, node: &NodeId) -> String {
            node.to_string()
        }
        async fn catch_up(&self, _from: &NodeId, _epoch: u64, _until: Instant) -> bool {
            false
        }
    }

    /// Every holder answers two names per partition (keys) or the same two
    /// buckets; some fail before answering, some after the first page.
    #[derive(Default)]
    struct Script {
        fail_before: HashSet<NodeId>,
        fail_after: HashSet<NodeId>,
        asked: Mutex<Vec<(NodeId, Partition)>>,
    }

    #[async_trait]
    impl CoverageClient for Script {
        async fn query(
            &self,
            node: &NodeId,
            partition: Partition,
            query: &CoverageQuery,
            after: Option<Bytes>,
            _call: CallContext,
            pages: mpsc::Sender<Page>,
        ) -> Result<(), ReplicaError> {
            self.asked.lock().unwrap().push((node.clone(), partition));
            let down =
                || ReplicaError::Unreachable { node: node.clone(), reason: "scripted".into(), maybe_applied: false };
            if self.fail_before.contains(node) {
                return Err(down());
            }
            // Two pages, ascending, from after `after`.
            let pages_of = match query {
                CoverageQuery::Keys { .. } | CoverageQuery::Index { .. } => [
                    vec![Bytes::from(format!("p{partition}-a")), Bytes::from(format!("p{partition}-b"))],
                    vec![Bytes::from(format!("p{partition}-c"))],
                ],
                CoverageQuery::Buckets { .. } => [vec![Bytes::from("a"), Bytes::from("b")], vec![Bytes::from("c")]],
            };
            for (i, page) in pages_of.into_iter().enumerate() {
                let page: Page = page.into_iter().filter(|k| after.as_ref().is_none_or(|a| k > a)).collect();
                if !page.is_empty() {
                    let _ = pages.send(page).await;
                }
                if i == 0 && self.fail_after.contains(node) {
                    return Err(down());
                }
            }
            Ok(())
        }
    }

    fn node(i: usize) -> NodeId {
        NodeId::new(format!("n{i}"))
    }

    fn ring() -> Arc<Ring> {
        let claims: Vec<Claim> = (0..5).map(|i| Claim { node: node(i), wanted: 1 }).collect();
        Arc::new(Ring::from_claims(16, &claims, 3).unwrap())
    }

    fn coverage(script: Arc<Script>, down: &[usize]) -> Coverage {
        let ring = ring();
        let view = Arc::new(RingView { epoch: 1, ring_hash: 0, current: ring, target: None, n_val: 3, r: 2, w: 2 });
        let topology = Fixed { view, local: node(0), down: down.iter().map(|&i| node(i)).collect() };
        Coverage::new(Arc::new(topology), script)
    }

    fn keys() -> CoverageQuery {
        CoverageQuery::Keys { bucket_type: Bytes::from("default"), bucket: Bytes::from("b") }
    }

    async fn collect(mut listing: Listing) -> Result<Vec<Bytes>, CoverageError> {
        let mut out = Vec::new();
        while let Some(page) = listing.next().await {
            out.extend(page?);
        }
        Ok(out)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn every_partition_answers_once_and_a_holder_failing_first_is_replaced() {
        // A node the first plan picks is up to the failure detector but
        // does not answer.
        let plan = coverage::plan(&ring(), 3, |_| true, 0).unwrap();
        let silent = plan.assignments.keys().next().unwrap().clone();
        let script = Arc::new(Script { fail_before: [silent.clone()].into(), ..Script::default() });
        let c = coverage(Arc::clone(&script), &[]);
        for _ in 0..3 {
            let names = collect(c.start(keys(), deadline()).unwrap()).await.unwrap();
            let set: BTreeSet<Bytes> = names.iter().cloned().collect();
            assert_eq!((names.len(), set.len()), (48, 48), "three keys of each of 16 partitions, once");
        }
        let asked = script.asked.lock().unwrap();
        assert!(asked.iter().any(|(n, _)| *n == silent), "{silent} was tried and replaced");
    }

    #[tokio::test]
    async fn a_holder_failing_midway_is_resumed_by_another_after_its_last_key() {
        // The plan's first node fails after its first page of every partition.
        let plan = coverage::plan(&ring(), 3, |_| true, 0).unwrap();
        let failing = plan.assignments.keys().next().unwrap().clone();
        let script = Arc::new(Script { fail_after: [failing].into(), ..Script::default() });
        let c = coverage(Arc::clone(&script), &[]);
        let names = collect(c.start(keys(), deadline()).unwrap()).await.unwrap();
        let set: BTreeSet<Bytes> = names.iter().cloned().collect();
        assert_eq!((names.len(), set.len()), (48, 48), "every key once, none repeated by the resumed holder");
        // Buckets start over on the next holder; each is still sent once.
        let query = CoverageQuery::Buckets { bucket_type: Bytes::from("default") };
        let names = collect(c.start(query, deadline()).unwrap()).await.unwrap();
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len());
        assert_eq!(names.len(), 3);
    }

    #[tokio::test]
    async fn index_pages_are_merged_in_order_and_resume_after_a_continuation() {
        // Holders fail midway too: a resumed partition sends nothing twice.
        let plan = coverage::plan(&ring(), 3, |_| true, 0).unwrap();
        let failing = plan.assignments.keys().next().unwrap().clone();
        let c = coverage(Arc::new(Script { fail_after: [failing].into(), ..Script::default() }), &[]);
        let request = IndexRequest {
            bucket_type: Bytes::from("default"),
            bucket: Bytes::from("b"),
            query: crate::core::index::IndexQuery::Bucket,
            term_regex: None,
        };
        let query = |after: Option<Bytes>| CoverageQuery::Index { request: request.clone(), after, max: Some(5) };
        let mut all = collect(c.start(query(None), deadline()).unwrap()).await.unwrap();
        all.sort();
        assert_eq!(all.len(), 48);
        let first = sorted(c.start(query(None), deadline()).unwrap(), Some(5), 1 << 20).await.unwrap();
        assert_eq!(first, all[..5]);
        let next = sorted(c.start(query(first.last().cloned()), deadline()).unwrap(), Some(5), 1 << 20).await.unwrap();
        assert_eq!(next, all[5..10]);
        let whole = sorted(c.start(query(None), deadline()).unwrap(), None, 1 << 20).await.unwrap();
        assert_eq!(whole, all);
        let e = sorted(c.start(query(None), deadline()).unwrap(), None, 20).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::PayloadTooLarge, "{e}");
    }

    #[tokio::test]
    async fn holders_failing_every_time_fail_the_listing() {
        let script = Arc::new(Script { fail_after: (0..5).map(node).collect(), ..Script::default() });
        let c = coverage(script, &[]);
        let e = collect(c.start(keys(), deadline()).unwrap()).await.unwrap_err();
        assert!(matches!(e, CoverageError::Failed { .. }), "{e}");
        assert_eq!(e.code(), ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn buckets_are_sent_once_and_uncovered_rings_are_refused() {
        let c = coverage(Arc::new(Script::default()), &[]);
        let query = CoverageQuery::Buckets { bucket_type: Bytes::from("default") };
        let names = collect(c.start(query.clone(), deadline()).unwrap()).await.unwrap();
        assert_eq!(names, vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]);
        // Three of five down: some partition has all three holders down,
        // or not; the plan fails exactly when one has.
        let c = coverage(Arc::new(Script::default()), &[0, 1, 2, 3]);
        let e = c.start(query, deadline()).err().expect("one node cannot hold every partition at N=3 of 5");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.to_string().contains("no live holder"), "{e}");
    }
}
