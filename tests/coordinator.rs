//! The coordinator's rules in process, without sockets: a scripted topology
//! (ring view and liveness) and a scripted replica client in front of real
//! replicas on in-memory stores, under tokio's paused clock, so deadlines
//! are exact and the tests take no real time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vinzclortho::coordinator::{
    Coordinator, CoordinatorError, CoordinatorSettings, QuorumParam, ReadOptions, ReplicaClient, Reply, RingView,
    Topology, WriteOptions,
};
use vinzclortho::core::bucket::{BucketError, BucketProps, ClusterDefaults};
use vinzclortho::core::digest::Digest;
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::object::{Content, Mutation, Object};
use vinzclortho::core::quorum::Answer;
use vinzclortho::core::ring::{Partition, Ring};
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::error::{ErrorCode, HasErrorCode};
use vinzclortho::replica::{CallContext, Replica, ReplicaError, SiblingLimits};
use vinzclortho::rpc::forward::forwarded_error_status;
use vinzclortho::rpc::status::replica_error_from_status;
use vinzclortho::storage::MemoryStore;

const TIMEOUT: Duration = Duration::from_secs(2);

fn n(name: &str) -> NodeId {
    NodeId::new(name)
}

/// A 4-partition ring where every partition's three holders are `a`, `x`
/// and `y` (owners a, x, y, a).
fn ring(x: &str, y: &str) -> Arc<Ring> {
    Arc::new(Ring::from_owners(vec![n("a"), n(x), n(y), n("a")]).unwrap())
}

struct Scripted {
    local: NodeId,
    view: Mutex<Arc<RingView>>,
    down: Mutex<HashSet<NodeId>>,
    /// Buckets (of the default type) with their own n_val.
    n_vals: Mutex<BTreeMap<Vec<u8>, usize>>,
    /// The node left the cluster (or was removed): it coordinates nothing.
    removed: AtomicBool,
}

impl Scripted {
    fn new(local: &str, current: Arc<Ring>, target: Option<Arc<Ring>>) -> Arc<Scripted> {
        let view = RingView { epoch: 1, ring_hash: 0, current, target, n_val: 3, r: 2, w: 2 };
        Arc::new(Scripted {
            local: n(local),
            view: Mutex::new(Arc::new(view)),
            down: Mutex::new(HashSet::new()),
            n_vals: Mutex::new(BTreeMap::new()),
            removed: AtomicBool::new(false),
        })
    }

    fn set_down(&self, nodes: &[&str]) {
        *self.down.lock().unwrap() = nodes.iter().map(|s| n(s)).collect();
    }

    /// The claimant's switch: the target becomes current.
    fn switch(&self) {
        let mut view = self.view.lock().unwrap();
        let mut next = (**view).clone();
        next.current = next.target.take().expect("a move in progress");
        next.epoch += 1;
        *view = Arc::new(next);
    }
}

#[async_trait]
impl Topology for Scripted {
    fn view(&self) -> Arc<RingView> {
        Arc::clone(&self.view.lock().unwrap())
    }
    fn local(&self) -> &NodeId {
        &self.local
    }
    fn is_up(&self, node: &NodeId) -> bool {
        !self.down.lock().unwrap().contains(node)
    }
    fn http_address(&self, node: &NodeId) -> String {
        format!("{node}:8880")
    }
    fn removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
    fn bucket_props(&self, bucket_type: &[u8], bucket: &[u8]) -> Result<BucketProps, BucketError> {
        if bucket_type != b"default" {
            return Err(BucketError::UnknownType(String::from_utf8_lossy(bucket_type).into_owned()));
        }
        let view = self.view();
        let mut props = BucketProps::defaults(ClusterDefaults { n_val: view.n_val, r: view.r, w: view.w });
        if let Some(n_val) = self.n_vals.lock().unwrap().get(bucket) {
            props.n_val = *n_val;
        }
        Ok(props)
    }
    async fn catch_up(&self, _from: &NodeId, epoch: u64, until: tokio::time::Instant) -> bool {
        loop {
            if self.view().epoch >= epoch {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How a node answers replica calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    Answers,
    /// Connection refused, at once.
    Refuses,
    /// Never answers (a paused or partitioned node).
    Silent,
    /// Applies the call, then its answer is lost (the connection broke).
    AppliesThenLost,
}

/// Real replicas, one per node, behind scripted behaviours; counts calls.
struct Nodes {
    replicas: BTreeMap<NodeId, Arc<Replica>>,
    behaviour: Mutex<BTreeMap<NodeId, Behaviour>>,
    stamps: Mutex<Vec<NodeId>>,
    /// Ring epochs of nodes that are ahead of the coordinator.
    epochs: Mutex<BTreeMap<NodeId, u64>>,
    /// Reads asked of each node, in order: true for a digest.
    reads: Mutex<Vec<(NodeId, bool)>>,
    /// The coordinators of nodes that take forwarded writes, and the
    /// forwards sent, in order.
    receivers: Mutex<BTreeMap<NodeId, Arc<Coordinator>>>,
    forwards: Mutex<Vec<NodeId>>,
}

impl Nodes {
    fn new(names: &[&str]) -> Arc<Nodes> {
        let replicas = names
            .iter()
            .map(|s| (n(s), Arc::new(Replica::new(Arc::new(MemoryStore::new()), SiblingLimits::default()))))
            .collect();
        Arc::new(Nodes {
            replicas,
            behaviour: Mutex::new(BTreeMap::new()),
            stamps: Mutex::new(Vec::new()),
            epochs: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(Vec::new()),
            receivers: Mutex::new(BTreeMap::new()),
            forwards: Mutex::new(Vec::new()),
        })
    }

    /// The reads asked of `node` so far: true for a digest.
    fn reads_of(&self, node: &str) -> Vec<bool> {
        self.reads.lock().unwrap().iter().filter(|(m, _)| *m == n(node)).map(|(_, d)| *d).collect()
    }

    /// `node` takes forwarded writes, coordinating them with its own view of
    /// the ring (`current`, `target`), as its Forward service does.
    /// Returns the receiver's topology.
    fn receive_forwards(self: &Arc<Self>, node: &str, current: Arc<Ring>, target: Option<Arc<Ring>>) -> Arc<Scripted> {
        let topology = Scripted::new(node, current, target);
        let receiver = coordinator(Arc::clone(&topology), Arc::clone(self));
        self.receivers.lock().unwrap().insert(n(node), Arc::new(receiver));
        topology
    }

    fn set(&self, node: &str, b: Behaviour) {
        self.behaviour.lock().unwrap().insert(n(node), b);
    }

    async fn gate(&self, node: &NodeId) -> Result<Arc<Replica>, ReplicaError> {
        let b = self.behaviour.lock().unwrap().get(node).copied().unwrap_or(Behaviour::Answers);
        match b {
            Behaviour::Answers => Ok(Arc::clone(&self.replicas[node])),
            Behaviour::Refuses => Err(ReplicaError::Unreachable {
                node: node.clone(),
                reason: "connection refused".into(),
                maybe_applied: false,
            }),
            Behaviour::Silent => std::future::pending().await,
            // The caller applies the call, then reports the lost answer.
            Behaviour::AppliesThenLost => Ok(Arc::clone(&self.replicas[node])),
        }
    }

    fn answer_lost(&self, node: &NodeId) -> Option<ReplicaError> {
        let b = self.behaviour.lock().unwrap().get(node).copied();
        (b == Some(Behaviour::AppliesThenLost)).then(|| ReplicaError::Unreachable {
            node: node.clone(),
            reason: "connection reset".into(),
            maybe_applied: true,
        })
    }

    /// A node whose ring is ahead refuses calls planned on an older one,
    /// as `rpc::replica_server` does.
    fn fence(&self, node: &NodeId, call: CallContext) -> Result<(), ReplicaError> {
        match self.epochs.lock().unwrap().get(node) {
            Some(&epoch) if call.ring_epoch != 0 && call.ring_epoch < epoch => {
                Err(ReplicaError::StaleRing { node: node.clone(), epoch })
            }
            _ => Ok(()),
        }
    }

    /// What `node` stores for `key`, read directly.
    async fn stored(&self, node: &str, key: &ObjectKey) -> Object {
        self.replicas[&n(node)].get(partition(key), key.clone()).await.unwrap()
    }
}

fn partition(key: &ObjectKey) -> Partition {
    ring("b", "c").partition_of(key)
}

#[async_trait]
impl ReplicaClient for Nodes {
    async fn get(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        self.fence(node, call)?;
        self.gate(node).await?.get(partition, key.clone()).await
    }

    /// Digests as `rpc::replica_server` makes them.
    async fn read(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        digest: bool,
        call: CallContext,
    ) -> Result<Answer, ReplicaError> {
        self.reads.lock().unwrap().push((node.clone(), digest));
        let object = self.get(node, partition, key, call).await?;
        Ok(if digest { Answer::Digest(Digest::of(&object)) } else { Answer::Full(object) })
    }

    async fn coordinate(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        call: CallContext,
    ) -> Result<Object, ReplicaError> {
        self.fence(node, call)?;
        let replica = self.gate(node).await?;
        self.stamps.lock().unwrap().push(node.clone());
        let stamped = replica.coordinate(partition, key.clone(), context.clone(), mutation.clone()).await?;
        match self.answer_lost(node) {
            Some(lost) => Err(lost),
            None => Ok(stamped),
        }
    }

    async fn merge(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        self.fence(node, call)?;
        self.gate(node).await?.merge(partition, key.clone(), object.clone()).await.map(|_| ())
    }

    async fn merge_hinted(
        &self,
        node: &NodeId,
        partition: Partition,
        key: &ObjectKey,
        object: &Object,
        target: &NodeId,
        call: CallContext,
    ) -> Result<(), ReplicaError> {
        self.fence(node, call)?;
        let replica = self.gate(node).await?;
        replica.merge_hinted(partition, key.clone(), object.clone(), target.clone()).await.map(|_| ())
    }

    async fn forward_write(
        &self,
        node: &NodeId,
        key: &ObjectKey,
        context: &VersionVector,
        mutation: &Mutation,
        options: WriteOptions,
        call: CallContext,
    ) -> Result<Reply, ReplicaError> {
        self.fence(node, call)?;
        self.forwards.lock().unwrap().push(node.clone());
        let receiver = self.receivers.lock().unwrap().get(node).cloned();
        let Some(receiver) = receiver else {
            return Err(ReplicaError::Unreachable {
                node: node.clone(),
                reason: "takes no forwarded writes".into(),
                maybe_applied: false,
            });
        };
        self.gate(node).await?;
        let reply = receiver
            .write_forwarded(key, context, mutation.clone(), options, call.deadline)
            .await
            // Across the wire as the Forward service answers and the
            // replica client reads it.
            .map_err(|e| replica_error_from_status(node, forwarded_error_status(e)))?;
        match self.answer_lost(node) {
            Some(lost) => Err(lost),
            None => Ok(reply),
        }
    }
}

fn coordinator(topology: Arc<Scripted>, nodes: Arc<Nodes>) -> Coordinator {
    Coordinator::new(topology, nodes, CoordinatorSettings { timeout: TIMEOUT })
}

fn put(v: &str) -> Mutation {
    Mutation::Put(Content {
        value: v.to_owned().into(),
        content_type: "text/plain".into(),
        last_modified_ms: 0,
        meta: Default::default(),
    })
}

fn values(o: &Object) -> BTreeSet<String> {
    o.siblings().iter().map(|s| String::from_utf8(s.content.value.to_vec()).unwrap()).collect()
}

fn key() -> ObjectKey {
    ObjectKey::in_default_bucket("k")
}

fn unavailable(result: Result<Object, CoordinatorError>) -> String {
    match result {
        Err(e @ (CoordinatorError::Unavailable { .. } | CoordinatorError::StaleRing { .. })) => e.to_string(),
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_during_a_move_needs_w_of_the_new_holders_and_is_read_after_the_switch() {
    // Current holders {a,b,c}, moving to {a,d,e}.
    let topology = Scripted::new("a", ring("b", "c"), Some(ring("d", "e")));
    let nodes = Nodes::new(&["a", "b", "c", "d", "e"]);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));

    // With d and e down, {a,b} is a current quorum but only one new holder
    // would have the write: before, it was acknowledged and an R=2 read of
    // {a,d,e} after the switch could miss it. Now it is a 503.
    topology.set_down(&["d", "e"]);
    let refused = unavailable(c.put(&key(), &VersionVector::new(), put("v0"), QuorumParam::Default).await);
    assert!(refused.contains("needed 2 of 3") && refused.contains("e:8880 failed: node is down"), "{refused}");

    // With every node up, the write reaches W of both rings before the ack.
    topology.set_down(&[]);
    nodes.set("b", Behaviour::Silent);
    nodes.set("e", Behaviour::Silent);
    c.put(&key(), &VersionVector::new(), put("v1"), QuorumParam::Default).await.unwrap();
    for holder in ["a", "d"] {
        assert!(values(&nodes.stored(holder, &key()).await).contains("v1"), "{holder} lacks v1");
    }

    // The switch; a read of the new holders sees v1 even with a down and
    // e (which never got v1) answering.
    topology.switch();
    topology.set_down(&["a"]);
    nodes.set("e", Behaviour::Answers);
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert!(values(&read).contains("v1"));
}

#[tokio::test(start_paused = true)]
async fn known_down_replicas_fail_fast() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    let c = coordinator(Arc::clone(&topology), nodes);
    topology.set_down(&["b", "c"]);
    let started = tokio::time::Instant::now();
    let refused = unavailable(c.get(&key(), QuorumParam::Default).await);
    assert!(refused.contains("b:8880 failed: node is down"), "{refused}");
    let refused = unavailable(c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await);
    assert!(refused.contains("needed 2 of 3"), "{refused}");
    assert_eq!(started.elapsed(), Duration::ZERO, "known-down nodes are not waited for");
}

#[tokio::test(start_paused = true)]
async fn silent_replicas_end_at_the_deadline() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("b", Behaviour::Silent);
    nodes.set("c", Behaviour::Silent);
    let c = coordinator(topology, nodes);
    let started = tokio::time::Instant::now();
    let refused = unavailable(c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await);
    assert_eq!(started.elapsed(), TIMEOUT);
    assert!(refused.contains("did not answer in time"), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_stamp_hands_the_write_to_the_next() {
    // The coordinator is not a replica (a 5-node cluster): it asks the
    // preference list in order; a refuses, b stamps.
    let topology = Scripted::new("z", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("a", Behaviour::Refuses);
    let c = coordinator(topology, Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n("b")]);
    assert_eq!(values(&nodes.stored("c", &key()).await), BTreeSet::from(["v".to_owned()]));
}

/// A write is stamped once. A slow stamper is not replaced by a second one
/// before the deadline: if both applied it, the value would come back as a
/// second sibling after a client overwrote it (the fault suite caught that
/// when stamping moved on after a share of the deadline). A stamper that
/// fails fast is replaced at once (see above).
/// A stamp whose answer was lost may have been applied: stamping the write
/// again elsewhere would give it two dots, and the copy under the first
/// comes back as a sibling after a client overwrites the second (found by
/// the simulator, seed 24, under packet loss). The client is told the
/// outcome is unknown instead.
#[tokio::test(start_paused = true)]
async fn a_stamp_whose_answer_was_lost_is_not_stamped_again() {
    let topology = Scripted::new("z", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("a", Behaviour::AppliesThenLost);
    let c = coordinator(topology, Arc::clone(&nodes));
    let error = unavailable(c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await);
    assert!(error.contains("connection reset"), "{error}");
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n("a")], "one stamp only");
    assert_eq!(values(&nodes.stored("a", &key()).await), BTreeSet::from(["v".to_owned()]));
}

#[tokio::test(start_paused = true)]
async fn a_silent_stamper_is_not_doubled_by_a_second_stamp() {
    let topology = Scripted::new("z", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("a", Behaviour::Silent);
    let c = coordinator(topology, Arc::clone(&nodes));
    let started = tokio::time::Instant::now();
    unavailable(c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await);
    assert_eq!(started.elapsed(), TIMEOUT, "it ends at the request deadline, not later");
    assert!(nodes.stamps.lock().unwrap().is_empty(), "no second replica stamped the write");
    for node in ["b", "c"] {
        assert!(nodes.stored(node, &key()).await.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn read_repair_sends_the_merge_to_stale_replicas() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("c", Behaviour::Refuses);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert!(nodes.stored("c", &key()).await.is_empty());
    nodes.set("c", Behaviour::Answers);
    let read = c.get(&key(), QuorumParam::All).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]));
    let repaired = async {
        loop {
            if !nodes.stored("c", &key()).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), repaired).await.expect("c was repaired");
}

impl Scripted {
    /// Gossip brings this node the newer ring at `epoch` after `after`.
    fn learn_epoch_after(self: &Arc<Self>, epoch: u64, after: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut view = this.view.lock().unwrap();
            let mut next = (**view).clone();
            next.epoch = epoch;
            *view = Arc::new(next);
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_on_a_newer_ring_makes_the_coordinator_catch_up_before_it_counts_it() {
    // b has seen ring epoch 2; this coordinator is still on 1. c is paused,
    // so the write needs b: b refuses the call planned on epoch 1 (it could
    // be counting holders that moved), the coordinator catches up (gossip),
    // then sends the stamped object again and b takes it.
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.epochs.lock().unwrap().insert(n("b"), 2);
    nodes.set("c", Behaviour::Silent);
    topology.learn_epoch_after(2, Duration::from_millis(300));
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&nodes.stored("b", &key()).await), BTreeSet::from(["v".to_owned()]));
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n("a")], "stamped once, sent twice");

    // A read planned on the old ring is refused the same way and retried.
    let topology = Scripted::new("a", ring("b", "c"), None);
    topology.learn_epoch_after(2, Duration::from_millis(300));
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]));
}

/// The ring moves twice while the coordinator catches up: its replicas are
/// on epoch 2 and the coordinator on 1; when gossip brings it epoch 2 (after
/// 300 ms) the replicas are already on 3, which it learns at 600 ms. Each
/// catch-up is to a newer ring, so the request keeps going until its
/// deadline. (A join's switch followed at once by a leaver's removal does
/// this; CI saw a read answer 503 "did not catch up in time" after one
/// catch-up.)
fn ring_moves_twice(topology: &Arc<Scripted>, nodes: &Arc<Nodes>) {
    for node in ["a", "b", "c"] {
        nodes.epochs.lock().unwrap().insert(n(node), 2);
    }
    let (topology, nodes) = (Arc::clone(topology), Arc::clone(nodes));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for node in ["a", "b", "c"] {
            nodes.epochs.lock().unwrap().insert(n(node), 3);
        }
        topology.learn_epoch_after(2, Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(300)).await;
        topology.learn_epoch_after(3, Duration::ZERO);
    });
}

#[tokio::test(start_paused = true)]
async fn a_ring_that_moves_again_while_the_coordinator_catches_up_does_not_fail_the_request() {
    let nodes = Nodes::new(&["a", "b", "c"]);
    let topology = Scripted::new("a", ring("b", "c"), None);
    ring_moves_twice(&topology, &nodes);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&nodes.stored("b", &key()).await), BTreeSet::from(["v".to_owned()]));

    // A read, the same way.
    nodes.epochs.lock().unwrap().clear();
    let topology = Scripted::new("a", ring("b", "c"), None);
    ring_moves_twice(&topology, &nodes);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]));
}

#[tokio::test(start_paused = true)]
async fn a_stamper_on_a_newer_ring_stamps_nothing_until_the_coordinator_caught_up() {
    let topology = Scripted::new("z", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.epochs.lock().unwrap().insert(n("a"), 2);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    // Never catches up: the write fails with a message that says why, and
    // nothing was stamped.
    let refused = unavailable(c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await);
    assert!(refused.contains("ring epoch 2"), "{refused}");
    assert!(nodes.stamps.lock().unwrap().is_empty());
    // Catches up: a stamps.
    topology.learn_epoch_after(2, Duration::from_millis(100));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n("a")]);
}

/// Five owners over 8 partitions: every key has three primaries and two
/// fallbacks. Returns the ring and the key's (primaries, fallbacks).
fn five() -> (Arc<Ring>, Vec<String>, Vec<String>) {
    let ring = Arc::new(Ring::from_owners(["a", "b", "c", "d", "e", "a", "b", "c"].map(n).to_vec()).unwrap());
    let p = ring.partition_of(&key());
    let primaries = ring.holders(p, 3).iter().map(|x| x.to_string()).collect();
    let fallbacks = ring.fallbacks(p, 3).into_iter().map(|e| e.node.to_string()).collect();
    (ring, primaries, fallbacks)
}

fn hints_on(nodes: &Nodes, node: &str) -> Vec<NodeId> {
    let ring = five().0;
    nodes.replicas[&n(node)].store().hints_for(ring.partition_of(&key()), &key()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_hands_its_slot_to_a_fallback_that_keeps_a_hint() {
    let (ring, primaries, fallbacks) = five();
    let topology = Scripted::new(&primaries[0], Arc::clone(&ring), None);
    let nodes = Nodes::new(&["a", "b", "c", "d", "e"]);
    // Thought up, but refuses: its merge fails and the first fallback
    // takes the slot, with a hint naming it.
    nodes.set(&primaries[2], Behaviour::Refuses);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    let all = WriteOptions { w: QuorumParam::All, ..WriteOptions::default() };
    let reply = c.write(&key(), &VersionVector::new(), put("v"), all).await.unwrap();
    assert_eq!(reply.fallbacks, 1);
    assert_eq!(hints_on(&nodes, &fallbacks[0]), vec![n(&primaries[2])]);
    assert!(hints_on(&nodes, &fallbacks[1]).is_empty());
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n(&primaries[0])], "a primary stamped");
    // A read with r=all counts the fallback in the failing primary's place.
    let read = c.read(&key(), ReadOptions { r: QuorumParam::All, ..ReadOptions::default() }).await.unwrap();
    assert_eq!((values(&read.object), read.fallbacks), (BTreeSet::from(["v".to_owned()]), 1));
    // pr=all refuses: a primary is missing, whatever the fallback says.
    let strict = ReadOptions { r: QuorumParam::Default, pr: QuorumParam::All, ..ReadOptions::default() };
    let refused = unavailable(c.read(&key(), strict).await.map(|r| r.object));
    assert!(refused.contains("primaries"), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn with_every_primary_down_a_fallback_stamps_and_pw_refuses_before_stamping() {
    let (ring, primaries, fallbacks) = five();
    let topology = Scripted::new(&fallbacks[1], Arc::clone(&ring), None);
    let nodes = Nodes::new(&["a", "b", "c", "d", "e"]);
    let down: Vec<&str> = primaries.iter().map(String::as_str).collect();
    topology.set_down(&down);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    // pw=1 cannot be met: 503, and nothing is stamped anywhere.
    let strict = WriteOptions { w: QuorumParam::Default, pw: QuorumParam::One };
    let refused = unavailable(c.write(&key(), &VersionVector::new(), put("refused"), strict).await.map(|r| r.object));
    assert!(refused.contains("needed 1 of 3 primaries"), "{refused}");
    assert!(nodes.stamps.lock().unwrap().is_empty());
    // Without pw, W=2 through both fallbacks: the first stamps (standing in
    // for the first primary), each keeps a hint for the primary it stands
    // in for.
    let reply = c.write(&key(), &VersionVector::new(), put("v"), WriteOptions::default()).await.unwrap();
    assert_eq!(reply.fallbacks, 2);
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n(&fallbacks[0])]);
    assert_eq!(hints_on(&nodes, &fallbacks[0]), vec![n(&primaries[0])]);
    assert_eq!(hints_on(&nodes, &fallbacks[1]), vec![n(&primaries[1])]);
    for p in &primaries {
        assert!(nodes.stored(p, &key()).await.is_empty(), "{p} was down");
    }
    let read = c.read(&key(), ReadOptions::default()).await.unwrap();
    assert_eq!((values(&read.object), read.fallbacks), (BTreeSet::from(["v".to_owned()]), 2));
}

/// A bucket's n_val places its keys on the first n_val holders of the
/// cluster's preference list: writes reach those only, a request's default
/// quorum is capped at n_val, an explicit one above it is refused, and an
/// unknown bucket type is a 404.
#[tokio::test(start_paused = true)]
async fn a_bucket_with_a_smaller_n_val_lives_on_its_first_n_val_holders() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    topology.n_vals.lock().unwrap().extend([(b"one".to_vec(), 1), (b"two".to_vec(), 2)]);
    for (bucket, n_val) in [("one", 1usize), ("two", 2)] {
        let k = ObjectKey::new("default", bucket, "k");
        c.put(&k, &VersionVector::new(), put(bucket), QuorumParam::Default).await.unwrap();
        let holders = ring("b", "c").holders(partition(&k), 3);
        for (i, holder) in holders.iter().enumerate() {
            let stored = nodes.stored(holder.as_str(), &k).await;
            assert_eq!(!stored.is_empty(), i < n_val, "{bucket}: {holder} (position {i})");
        }
        assert_eq!(values(&c.get(&k, QuorumParam::Default).await.unwrap()), BTreeSet::from([bucket.to_owned()]));
        assert_eq!(values(&c.get(&k, QuorumParam::All).await.unwrap()), BTreeSet::from([bucket.to_owned()]));
        let refused = c.get(&k, QuorumParam::Count(3)).await.unwrap_err();
        assert!(matches!(refused, CoordinatorError::BadRequest(_)), "{refused}");
        assert_eq!(c.n_val_of(&k).unwrap(), n_val);
    }
    let unknown = ObjectKey::new("nope", "b", "k");
    let refused = c.get(&unknown, QuorumParam::Default).await.unwrap_err();
    assert!(matches!(refused, CoordinatorError::Bucket(BucketError::UnknownType(_))), "{refused}");
    assert_eq!(vinzclortho::error::HasErrorCode::code(&refused), vinzclortho::error::ErrorCode::NotFound);
}

/// Has `node`'s own replica stamp `v` on top of what it holds.
async fn write_on(nodes: &Nodes, node: &str, v: &str) {
    let replica = &nodes.replicas[&n(node)];
    let held = replica.get(partition(&key()), key()).await.unwrap();
    replica.coordinate(partition(&key()), key(), held.clock().clone(), put(v)).await.unwrap();
}

/// Copies `from`'s object into `to`.
async fn sync(nodes: &Nodes, from: &str, to: &str) {
    let object = nodes.stored(from, &key()).await;
    nodes.replicas[&n(to)].merge(partition(&key()), key(), object).await.unwrap();
}

/// R=2 of 3: two replicas are asked for the value (this node first), the
/// third for a digest; a digest that shows a newer copy among the R answers
/// is fetched, and the answer is that copy, as a full read's would be.
#[tokio::test(start_paused = true)]
async fn a_digest_that_differs_is_fetched_and_the_answer_includes_it() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    write_on(&nodes, "b", "v1").await;
    sync(&nodes, "b", "c").await;
    write_on(&nodes, "c", "v2").await;
    // a (full) never answers: the quorum is b (full, v1) and c (digest, v2).
    nodes.set("a", Behaviour::Silent);
    let c = coordinator(topology, Arc::clone(&nodes));
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v2".to_owned()]));
    assert_eq!(nodes.reads_of("a"), vec![false]);
    assert_eq!(nodes.reads_of("b"), vec![false]);
    assert_eq!(nodes.reads_of("c"), vec![true, false], "a digest, then the value it showed");
}

/// Equal copies: the digest matches and nothing is fetched.
#[tokio::test(start_paused = true)]
async fn a_digest_that_matches_fetches_nothing() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    let c = coordinator(topology, Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::All).await.unwrap();
    nodes.set("b", Behaviour::Silent);
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]));
    assert_eq!(nodes.reads_of("c"), vec![true]);
}

/// A full-value replica that fails (no fallback left) leaves the read to a
/// digest replica: its copy, which the remaining full answer lacks, is
/// fetched, so the answer holds what R replicas hold.
#[tokio::test(start_paused = true)]
async fn a_failing_full_value_replica_is_replaced_by_a_digest_replicas_value() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    write_on(&nodes, "c", "v").await;
    nodes.set("b", Behaviour::Refuses);
    let c = coordinator(topology, Arc::clone(&nodes));
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]), "a (empty) alone would say not found");
    assert_eq!(nodes.reads_of("c"), vec![true, false]);
}

/// A digest replica whose value fetch fails no longer counts: with the
/// other full replica silent, the read cannot answer and says so.
#[tokio::test(start_paused = true)]
async fn a_failed_value_fetch_takes_the_digest_answer_back() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    write_on(&nodes, "c", "v").await;
    nodes.set("b", Behaviour::Refuses);
    // c answers its digest, then refuses the fetch.
    let fetch_refused = {
        let nodes = Arc::clone(&nodes);
        async move {
            loop {
                if !nodes.reads_of("c").is_empty() {
                    nodes.set("c", Behaviour::Refuses);
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let c = coordinator(topology, Arc::clone(&nodes));
    let k = key();
    let (result, ()) = tokio::join!(c.get(&k, QuorumParam::Default), fetch_refused);
    let refused = unavailable(result);
    assert!(refused.contains("value fetch failed"), "{refused}");
}

/// A digest replica whose value fetch fails hands its slot to a fallback,
/// as a replica that fails outright does: with the other full replica
/// silent, the fallback's copy completes the quorum and the read answers
/// instead of waiting out its deadline for a 503.
#[tokio::test(start_paused = true)]
async fn a_failed_value_fetch_hands_its_slot_to_a_fallback() {
    let (ring, primaries, fallbacks) = five();
    let p = ring.partition_of(&key());
    let topology = Scripted::new(&primaries[0], Arc::clone(&ring), None);
    let nodes = Nodes::new(&["a", "b", "c", "d", "e"]);
    // The third primary and the first fallback (a hinted copy) hold v; the
    // coordinator's own copy is empty.
    let holder = &nodes.replicas[&n(&primaries[2])];
    holder.coordinate(p, key(), VersionVector::new(), put("v")).await.unwrap();
    let held = holder.get(p, key()).await.unwrap();
    nodes.replicas[&n(&fallbacks[0])].merge(p, key(), held).await.unwrap();
    // The second full-value replica never answers; the third answers its
    // digest, then refuses the fetch of its value.
    nodes.set(&primaries[1], Behaviour::Silent);
    let fetch_refused = {
        let (nodes, third) = (Arc::clone(&nodes), primaries[2].clone());
        async move {
            loop {
                if !nodes.reads_of(&third).is_empty() {
                    nodes.set(&third, Behaviour::Refuses);
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let c = coordinator(topology, Arc::clone(&nodes));
    let k = key();
    let (read, ()) = tokio::join!(c.read(&k, ReadOptions::default()), fetch_refused);
    let read = read.expect("the fallback's copy completes the quorum");
    assert_eq!((values(&read.object), read.fallbacks), (BTreeSet::from(["v".to_owned()]), 1));
    assert_eq!(nodes.reads_of(&primaries[2]), vec![true, false], "a digest, then the fetch it refused");
    assert_eq!(nodes.reads_of(&fallbacks[0]), vec![false], "the fallback is asked for its value");
}

/// Read repair still finds a stale replica that answered with a digest.
#[tokio::test(start_paused = true)]
async fn read_repair_repairs_a_stale_digest_replica() {
    let topology = Scripted::new("a", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.set("c", Behaviour::Refuses);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    nodes.set("c", Behaviour::Answers);
    let read = c.get(&key(), QuorumParam::Default).await.unwrap();
    assert_eq!(values(&read), BTreeSet::from(["v".to_owned()]));
    assert_eq!(nodes.reads_of("c"), vec![true], "c gave a digest, and its empty copy needed no fetch");
    let repaired = async {
        loop {
            if !nodes.stored("c", &key()).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), repaired).await.expect("c was repaired");
}

/// The key's primaries on `ring("b", "c")`, in preference-list order.
fn primaries_of_k() -> Vec<String> {
    ring("b", "c").holders(partition(&key()), 3).iter().map(|x| x.to_string()).collect()
}

/// Riak's put FSM: a node that is no replica of the key hands the write
/// whole to the key's first up primary, which stamps it itself and merges
/// it into the others; the forwarding node makes that one call only.
#[tokio::test(start_paused = true)]
async fn a_write_on_a_node_that_is_no_replica_is_forwarded_whole_to_the_first_up_primary() {
    let p = primaries_of_k();
    let topology = Scripted::new("z", ring("b", "c"), None);
    let nodes = Nodes::new(&["a", "b", "c"]);
    for holder in &p {
        nodes.receive_forwards(holder, ring("b", "c"), None);
    }
    // The first primary is known down: the second one coordinates.
    topology.set_down(&[&p[0]]);
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    let reply = c.write(&key(), &VersionVector::new(), put("v"), WriteOptions::default()).await.unwrap();
    assert_eq!(values(&reply.object), BTreeSet::from(["v".to_owned()]));
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[1])], "one forward, to the first up primary");
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n(&p[1])], "the receiver stamped it itself");
    for holder in &p {
        assert!(values(&nodes.stored(holder, &key()).await).contains("v"), "{holder} lacks v");
    }
    // A node that is a replica coordinates its writes itself.
    let local = coordinator(Scripted::new(&p[2], ring("b", "c"), None), Arc::clone(&nodes));
    local.put(&key(), reply.object.clock(), put("w"), QuorumParam::Default).await.unwrap();
    assert_eq!(nodes.forwards.lock().unwrap().len(), 1, "no forward from a replica");
}

/// A forward whose answer was lost may have been stamped by its receiver:
/// coordinating it anywhere else would give the write a second dot, which
/// comes back as a sibling. The client is told the outcome is unknown.
#[tokio::test(start_paused = true)]
async fn a_forward_whose_answer_was_lost_is_not_coordinated_again() {
    let p = primaries_of_k();
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.receive_forwards(&p[0], ring("b", "c"), None);
    nodes.set(&p[0], Behaviour::AppliesThenLost);
    let c = coordinator(Scripted::new("z", ring("b", "c"), None), Arc::clone(&nodes));
    let error = c.write(&key(), &VersionVector::new(), put("v"), WriteOptions::default()).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
    assert!(error.to_string().contains("connection reset"), "{error}");
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[0])]);
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n(&p[0])], "stamped once, by the receiver only");
    for holder in &p {
        let stored = nodes.stored(holder, &key()).await;
        assert!(stored.siblings().len() <= 1, "{holder} holds {:?}", values(&stored));
    }
}

/// A forward that reaches a primary after it left the cluster (its identity
/// check let the call in a moment before) is refused before anything is
/// done, as that check would now refuse it, and coordinated here: the
/// client's write succeeds (it answered 503 before; seen as one failed write
/// in about six runs of membership_ops' leave under load).
#[tokio::test(start_paused = true)]
async fn a_forward_to_a_primary_that_just_left_is_coordinated_here() {
    let p = primaries_of_k();
    let nodes = Nodes::new(&["a", "b", "c"]);
    let leaver = nodes.receive_forwards(&p[0], ring("b", "c"), None);
    leaver.removed.store(true, Ordering::SeqCst);
    let c = coordinator(Scripted::new("z", ring("b", "c"), None), Arc::clone(&nodes));
    let reply = c.write(&key(), &VersionVector::new(), put("v"), WriteOptions::default()).await.unwrap();
    assert_eq!(values(&reply.object), BTreeSet::from(["v".to_owned()]));
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[0])]);
    assert_eq!(nodes.stamps.lock().unwrap().len(), 1, "stamped once, here's plan");
    for holder in &p {
        assert!(values(&nodes.stored(holder, &key()).await).contains("v"), "{holder} lacks v");
    }
}

/// While the key's partition moves away from its first primary (that node
/// leaves, say), the write goes to a primary that keeps the key on both
/// rings: the leaving one may stop serving half way through it (seen in
/// membership_ops' leave under load as a 503 after the leaver had stamped).
#[tokio::test(start_paused = true)]
async fn a_forward_during_a_move_goes_to_a_primary_that_keeps_the_key() {
    let p = primaries_of_k();
    // Current holders {a,b,c}; the first primary moves out, to "d".
    let leaving = n(&p[0]);
    let owners: Vec<NodeId> =
        ["a", "b", "c", "a"].iter().map(|o| if n(o) == leaving { n("d") } else { n(o) }).collect();
    let target = Arc::new(Ring::from_owners(owners).unwrap());
    let nodes = Nodes::new(&["a", "b", "c", "d"]);
    for holder in &p {
        nodes.receive_forwards(holder, ring("b", "c"), Some(Arc::clone(&target)));
    }
    let c = coordinator(Scripted::new("z", ring("b", "c"), Some(Arc::clone(&target))), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[1])], "to the first primary that stays");
    for holder in target.holders(partition(&key()), 3) {
        assert!(values(&nodes.stored(&holder.to_string(), &key()).await).contains("v"), "{holder} lacks v");
    }
}

/// A write this node would refuse before stamping (`?pw=2` with two of the
/// three primaries down, as it sees them) is refused here, not forwarded to
/// the one up primary, which may not have seen them down yet and would
/// stamp it: a 503 then left a sibling behind (hints.rs saw it in CI).
#[tokio::test(start_paused = true)]
async fn a_write_refused_for_pw_here_is_not_forwarded() {
    let p = primaries_of_k();
    let nodes = Nodes::new(&["a", "b", "c"]);
    for holder in &p {
        nodes.receive_forwards(holder, ring("b", "c"), None);
    }
    nodes.set(&p[1], Behaviour::Silent);
    nodes.set(&p[2], Behaviour::Silent);
    let topology = Scripted::new("z", ring("b", "c"), None);
    topology.set_down(&[&p[1], &p[2]]);
    let c = coordinator(topology, Arc::clone(&nodes));
    let options = WriteOptions { pw: QuorumParam::Count(2), ..WriteOptions::default() };
    let error = c.write(&key(), &VersionVector::new(), put("refused"), options).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
    assert!(nodes.forwards.lock().unwrap().is_empty(), "not forwarded");
    assert!(nodes.stamps.lock().unwrap().is_empty(), "nothing stamped");
}

/// A forward that certainly never arrived (connection refused) is
/// coordinated here, as a write was before forwarding.
#[tokio::test(start_paused = true)]
async fn a_forward_that_could_not_be_sent_is_coordinated_here() {
    let p = primaries_of_k();
    let nodes = Nodes::new(&["a", "b", "c"]);
    nodes.receive_forwards(&p[0], ring("b", "c"), None);
    nodes.set(&p[0], Behaviour::Refuses);
    let c = coordinator(Scripted::new("z", ring("b", "c"), None), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[0])]);
    // p0 refuses its stamp too: the next primary stamps for this node.
    assert_eq!(*nodes.stamps.lock().unwrap(), vec![n(&p[1])]);
    for holder in &p[1..] {
        assert!(values(&nodes.stored(holder, &key()).await).contains("v"), "{holder} lacks v");
    }
}

/// While the key's partition moves, the receiver of a forward counts W of
/// both preference lists, as for a write it received itself; and a
/// forwarded write is never forwarded again, even by a node whose ring
/// says it is no replica (two nodes that disagree cannot loop).
#[tokio::test(start_paused = true)]
async fn a_forwarded_write_during_a_move_reaches_w_of_both_rings_and_is_not_forwarded_again() {
    // Current holders {a,b,c}, moving to {a,d,e}.
    let p = primaries_of_k();
    let nodes = Nodes::new(&["a", "b", "c", "d", "e"]);
    nodes.receive_forwards(&p[0], ring("b", "c"), Some(ring("d", "e")));
    // One silent holder in each ring (not the receiver): W=2 of each still
    // needs every other holder.
    let silent_current = p.iter().find(|h| *h != &p[0] && *h != "a").unwrap().clone();
    let silent_target = if p[0] == "d" { "e" } else { "d" };
    nodes.set(&silent_current, Behaviour::Silent);
    nodes.set(silent_target, Behaviour::Silent);
    let topology = Scripted::new("z", ring("b", "c"), Some(ring("d", "e")));
    let c = coordinator(Arc::clone(&topology), Arc::clone(&nodes));
    c.put(&key(), &VersionVector::new(), put("v"), QuorumParam::Default).await.unwrap();
    assert_eq!(*nodes.forwards.lock().unwrap(), vec![n(&p[0])]);
    for holder in ["a", "b", "c", "d", "e"].into_iter().filter(|h| *h != silent_current && *h != silent_target) {
        assert!(values(&nodes.stored(holder, &key()).await).contains("v"), "{holder} lacks v");
    }

    // A forwarded write on "z" (no replica) is coordinated there.
    nodes.set(&silent_current, Behaviour::Answers);
    nodes.set(silent_target, Behaviour::Answers);
    let forwarded = c
        .write_forwarded(
            &key(),
            &VersionVector::new(),
            put("x"),
            WriteOptions::default(),
            tokio::time::Instant::now() + TIMEOUT,
        )
        .await
        .unwrap();
    assert!(values(&forwarded.object).contains("x"));
    assert_eq!(nodes.forwards.lock().unwrap().len(), 1, "not forwarded again");
}
