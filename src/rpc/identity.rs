//! Every internal call names whom it is for, and the server checks it.
//!
//! Addresses are reused (DHCP, Kubernetes rescheduling a pod): without names
//! one process could answer for two replicas, so that W=2 is met with one
//! physical copy, and a node of another cluster could accept our writes. So
//! every call to a peer carries three gRPC metadata entries:
//!
//! | header | value |
//! |---|---|
//! | `vc-cluster-id` | the cluster id, 16 lowercase hex digits (as `/admin/status` shows it) |
//! | `vc-to-node` | the id of the node the call is meant for |
//! | `vc-from-node` | the caller's node id |
//!
//! The names are a contract with tools outside this repository (grpcurl
//! scripts, proxies): do not rename them.
//!
//! Client side, [`Peers`](super::peers::Peers) hands out channels wrapped in
//! [`Identified`], which stamps the three headers on every call to that peer.
//! Server side, [`IdentityLayer`] checks them before any service method runs:
//! a call for another cluster or another node, or without the headers, is
//! refused with FAILED_PRECONDITION, changes nothing, and is logged and
//! counted (`vinzclortho_rpc_refused_total`). What each method needs is its
//! [`Policy`]: gRPC health and reflection need nothing (load balancers,
//! grpcurl); `Membership/GetState` is a read-only operator call made with
//! grpcurl, so it needs nothing, but what it does carry must be right; and
//! `Membership/Join` comes from a node that is not a member yet, which knows
//! neither the cluster id nor the seed's id, so it too needs nothing but is
//! checked on what it carries (a joiner sends `vc-from-node`, its own id).
//! A node that was removed from the cluster, or that found another live
//! process under its id, answers for nobody: it refuses every call but the
//! open and read-only ones.
//!
//! Over mutual TLS (`tls`) the caller's certificate is checked too
//! ([`check_certificate`]): the cluster binds each node id to the name of
//! the certificate it joined with (`ClusterState::certificate_names`), and a
//! call whose `vc-from-node` is bound to another name than the presented
//! certificate's is refused (`wrong_certificate`): a certificate can never
//! act for another node. An id with no binding yet (a cluster that ran
//! without certificates, until the node's own binding has spread by gossip)
//! is accepted from any certificate of the cluster CA.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderMap, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::core::key::NodeId;
use crate::membership::Membership;
use crate::telemetry::metrics;

/// The cluster the call is meant for: 16 lowercase hex digits.
pub const CLUSTER_ID_HEADER: &str = "vc-cluster-id";
/// The node the call is meant for: its id.
pub const TO_NODE_HEADER: &str = "vc-to-node";
/// The node that makes the call: its id.
pub const FROM_NODE_HEADER: &str = "vc-from-node";
/// On a refusal: its reason, so a caller can tell "this is not the node you
/// meant" (as good as unreachable) from an error of the node it meant.
pub const REFUSED_HEADER: &str = "vc-refused";

/// A cluster id as the headers, logs and `/admin/status` write it.
pub fn cluster_id_text(cluster_id: u64) -> String {
    format!("{cluster_id:016x}")
}

/// Who this node is when it calls a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub node: NodeId,
    /// `None` while joining: the cluster id comes with the join's answer.
    pub cluster_id: Option<u64>,
}

impl Caller {
    pub fn member(node: NodeId, cluster_id: u64) -> Caller {
        Caller { node, cluster_id: Some(cluster_id) }
    }

    pub fn joining(node: NodeId) -> Caller {
        Caller { node, cluster_id: None }
    }
}

/// Who a server answers for; [`Membership`] is the node's.
pub trait LocalIdentity: Send + Sync + 'static {
    fn node(&self) -> &NodeId;
    fn cluster_id(&self) -> u64;
    /// True once this node learnt it was removed from the cluster.
    fn removed(&self) -> bool;
    /// The HTTP address of another live process found running under this
    /// node's id (`core::duplicate`), if any.
    fn duplicate_of(&self) -> Option<String> {
        None
    }
    /// The certificate name `node` is bound to, if any.
    fn certificate_name(&self, _node: &NodeId) -> Option<String> {
        None
    }
}

/// A fixed identity, never removed: for servers in tests and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node: NodeId,
    pub cluster_id: u64,
}

impl LocalIdentity for Identity {
    fn node(&self) -> &NodeId {
        &self.node
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn removed(&self) -> bool {
        false
    }
}

impl LocalIdentity for Membership {
    fn node(&self) -> &NodeId {
        self.local()
    }

    fn cluster_id(&self) -> u64 {
        Membership::cluster_id(self)
    }

    fn removed(&self) -> bool {
        Membership::removed(self)
    }

    fn duplicate_of(&self) -> Option<String> {
        Membership::duplicate_of(self).map(|other| other.address)
    }

    fn certificate_name(&self, node: &NodeId) -> Option<String> {
        Membership::certificate_name(self, node)
    }
}

/// What a method requires of a call's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// gRPC health and reflection: nothing, ever.
    Open,
    /// `Membership/GetState`: nothing, but what is sent must be right; still
    /// answered by a removed node (it says what that node knows).
    ReadOnly,
    /// `Membership/Join`: nothing (a joiner knows no cluster id and no seed
    /// id), but what is sent must be right.
    Join,
    /// Everything else: all three headers, and right.
    Member,
}

/// The policy of a gRPC path (`/package.Service/Method`).
pub fn policy(path: &str) -> Policy {
    const MEMBERSHIP: &str = "/vinzclortho.membership.v1.Membership/";
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return Policy::Open;
    }
    match path.strip_prefix(MEMBERSHIP) {
        Some("GetState") => Policy::ReadOnly,
        Some("Join") => Policy::Join,
        _ => Policy::Member,
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this node belongs to cluster {expected}, the call names cluster {got:?} (vc-cluster-id)")]
    WrongCluster { expected: String, got: String },
    #[error(
        "this is node {expected}, the call is meant for node {got:?} (vc-to-node); \
         another node has this address now"
    )]
    WrongNode { expected: NodeId, got: String },
    #[error(
        "internal calls must carry vc-cluster-id, vc-to-node and vc-from-node; missing {missing} \
         (this is node {node} of cluster {cluster})"
    )]
    MissingIdentity { missing: String, node: NodeId, cluster: String },
    #[error("node {node} left the cluster or was removed from it; it answers no internal calls")]
    Removed { node: NodeId },
    #[error(
        "another process runs as node {node} at {address} (a copied data directory?); \
         this one answers no internal calls"
    )]
    Duplicate { node: NodeId, address: String },
    #[error(
        "the call claims to come from node {node} (vc-from-node), which uses the certificate named {bound:?}; \
         this one is named {presented:?}: a certificate cannot act for another node"
    )]
    WrongCertificate { node: String, bound: String, presented: String },
}

impl Refusal {
    /// The `reason` label of the refusal metric (one of
    /// `metrics::RPC_REFUSED_REASONS`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::WrongNode { .. } => "wrong_node",
            Refusal::MissingIdentity { .. } => "missing_identity",
            Refusal::Removed { .. } => "removed",
            Refusal::Duplicate { .. } => "duplicate",
            Refusal::WrongCertificate { .. } => "wrong_certificate",
        }
    }

    /// The answer: FAILED_PRECONDITION (the call is fine, it went to the
    /// wrong place), with the reason in `vc-refused`.
    pub fn to_status(&self) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(REFUSED_HEADER, tonic::metadata::MetadataValue::from_static(self.reason()));
        Status::with_metadata(Code::FailedPrecondition, format!("refused: {self}"), metadata)
    }
}

/// True when `status` is a refusal by [`IdentityLayer`]: the peer is not the
/// node the call was meant for.
pub fn is_refusal(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.metadata().get(REFUSED_HEADER).is_some()
}

/// Checks a call's headers against `policy` and this node's identity.
pub fn check(policy: Policy, headers: &HeaderMap, local: &dyn LocalIdentity) -> Result<(), Refusal> {
    if policy == Policy::Open {
        return Ok(());
    }
    if policy != Policy::ReadOnly && local.removed() {
        return Err(Refusal::Removed { node: local.node().clone() });
    }
    if policy != Policy::ReadOnly
        && let Some(address) = local.duplicate_of()
    {
        return Err(Refusal::Duplicate { node: local.node().clone(), address });
    }
    // A value that is not text cannot be right; show it as such.
    let header = |name: &str| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or("<not text>").to_owned());
    let cluster = cluster_id_text(local.cluster_id());
    let (cluster_sent, to_sent, from_sent) =
        (header(CLUSTER_ID_HEADER), header(TO_NODE_HEADER), header(FROM_NODE_HEADER));
    if let Some(got) = cluster_sent.as_ref().filter(|got| **got != cluster) {
        return Err(Refusal::WrongCluster { expected: cluster, got: got.clone() });
    }
    if let Some(got) = to_sent.as_ref().filter(|got| *got != local.node().as_str()) {
        return Err(Refusal::WrongNode { expected: local.node().clone(), got: got.clone() });
    }
    if policy == Policy::Member {
        let missing: Vec<&str> =
            [(CLUSTER_ID_HEADER, &cluster_sent), (TO_NODE_HEADER, &to_sent), (FROM_NODE_HEADER, &from_sent)]
                .into_iter()
                .filter(|(_, sent)| sent.is_none())
                .map(|(name, _)| name)
                .collect();
        if !missing.is_empty() {
            return Err(Refusal::MissingIdentity { missing: missing.join(", "), node: local.node().clone(), cluster });
        }
    }
    Ok(())
}

/// Checks the certificate a call came with against the name the cluster
/// bound its `vc-from-node` to. `presented`: `None` over plaintext (nothing
/// to check), else the name of the peer's certificate (`""` if it has
/// none). Open and read-only methods take any certificate of the CA.
pub fn check_certificate(
    policy: Policy,
    headers: &HeaderMap,
    presented: Option<&str>,
    local: &dyn LocalIdentity,
) -> Result<(), Refusal> {
    let Some(presented) = presented else { return Ok(()) };
    if matches!(policy, Policy::Open | Policy::ReadOnly) {
        return Ok(());
    }
    let Some(from) = headers.get(FROM_NODE_HEADER).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    match local.certificate_name(&NodeId::new(from)) {
        Some(bound) if bound != presented => {
            Err(Refusal::WrongCertificate { node: from.to_owned(), bound, presented: presented.to_owned() })
        }
        _ => Ok(()),
    }
}

/// The headers one caller stamps on every call, made once.
#[derive(Debug)]
pub struct CallerHeaders {
    cluster_id: Option<HeaderValue>,
    from: HeaderValue,
}

impl CallerHeaders {
    /// Panics on a node id that cannot be a header value: this node's own id
    /// is hex digits (`node::identity`), or a test's name.
    pub fn new(caller: &Caller) -> CallerHeaders {
        CallerHeaders {
            cluster_id: caller
                .cluster_id
                .map(|id| HeaderValue::from_str(&cluster_id_text(id)).expect("hex digits are a header value")),
            from: HeaderValue::from_str(caller.node.as_str()).expect("this node's id is a header value"),
        }
    }
}

/// The id of the node a call is for, as a header value; `None` for an id
/// (from a peer's gossip) that cannot be one.
pub fn to_node_value(node: &NodeId) -> Option<HeaderValue> {
    HeaderValue::from_str(node.as_str()).ok()
}

/// A client transport (a tonic `Channel`) that stamps this node's identity,
/// and the node each call is for, on every call.
#[derive(Debug, Clone)]
pub struct Identified<S> {
    inner: S,
    caller: Arc<CallerHeaders>,
    /// `None` only for a seed, known by its address alone.
    to: Option<HeaderValue>,
}

impl<S> Identified<S> {
    pub fn new(inner: S, caller: Arc<CallerHeaders>, to: Option<HeaderValue>) -> Identified<S> {
        Identified { inner, caller, to }
    }
}

impl<S, B> Service<http::Request<B>> for Identified<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let headers = request.headers_mut();
        if let Some(cluster_id) = &self.caller.cluster_id {
            headers.insert(CLUSTER_ID_HEADER, cluster_id.clone());
        }
        if let Some(to) = &self.to {
            headers.insert(TO_NODE_HEADER, to.clone());
        }
        headers.insert(FROM_NODE_HEADER, self.caller.from.clone());
        self.inner.call(request)
    }
}

/// The server side: checks every call's identity before its service runs.
#[derive(Clone)]
pub struct IdentityLayer {
    local: Arc<dyn LocalIdentity>,
}

impl IdentityLayer {
    pub fn new(local: Arc<dyn LocalIdentity>) -> IdentityLayer {
        IdentityLayer { local }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = CheckIdentity<S>;

    fn layer(&self, inner: S) -> CheckIdentity<S> {
        CheckIdentity { inner, local: Arc::clone(&self.local) }
    }
}

#[derive(Clone)]
pub struct CheckIdentity<S> {
    inner: S,
    local: Arc<dyn LocalIdentity>,
}

impl<S, B, R> Service<http::Request<B>> for CheckIdentity<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let policy = policy(path);
        let presented = super::tls::over_tls(request.extensions())
            .then(|| super::tls::peer_certificate_name(request.extensions()).unwrap_or_default());
        let checked = check(policy, request.headers(), &*self.local)
            .and_then(|()| check_certificate(policy, request.headers(), presented.as_deref(), &*self.local));
        match checked {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                let from = request.headers().get(FROM_NODE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                let remote = super::tls::remote_addr(request.extensions());
                tracing::warn!(
                    reason = refusal.reason(),
                    method = %path,
                    from,
                    remote = ?remote,
                    error = %refusal,
                    "refused internal call"
                );
                metrics::rpc_refused(refusal.reason());
                Either::Left(ready(Ok(refusal.to_status().into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity { node: NodeId::new("00000000000000aa"), cluster_id: 0x42 }
    }

    fn headers(entries: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in entries {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const RIGHT: [(&str, &str); 3] = [
        (CLUSTER_ID_HEADER, "0000000000000042"),
        (TO_NODE_HEADER, "00000000000000aa"),
        (FROM_NODE_HEADER, "00000000000000bb"),
    ];

    #[test]
    fn methods_have_the_policies_the_docs_give() {
        let cases = [
            ("/grpc.health.v1.Health/Check", Policy::Open),
            ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Policy::Open),
            ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Policy::Open),
            ("/vinzclortho.membership.v1.Membership/GetState", Policy::ReadOnly),
            ("/vinzclortho.membership.v1.Membership/Join", Policy::Join),
            ("/vinzclortho.membership.v1.Membership/Gossip", Policy::Member),
            ("/vinzclortho.replica.v1.Replica/Merge", Policy::Member),
            ("/vinzclortho.replica.v1.Replica/Calls", Policy::Member),
            ("/vinzclortho.transfer.v1.Transfer/Push", Policy::Member),
            ("/unknown.Service/Method", Policy::Member),
        ];
        for (path, expected) in cases {
            assert_eq!(policy(path), expected, "{path}");
        }
    }

    /// (policy, headers sent, expected reason or None for accepted)
    type Case = (Policy, Vec<(&'static str, &'static str)>, Option<&'static str>);

    #[test]
    fn calls_are_checked_by_their_policy() {
        let wrong_cluster = [RIGHT[0].0, "0000000000000043"];
        let wrong_node = [RIGHT[1].0, "00000000000000cc"];
        let upper = [RIGHT[0].0, "000000000000004A"];
        let cases: Vec<Case> = vec![
            (Policy::Member, RIGHT.to_vec(), None),
            (Policy::Member, vec![], Some("missing_identity")),
            (Policy::Member, RIGHT[..2].to_vec(), Some("missing_identity")),
            (Policy::Member, RIGHT[1..].to_vec(), Some("missing_identity")),
            (Policy::Member, vec![(wrong_cluster[0], wrong_cluster[1]), RIGHT[1], RIGHT[2]], Some("wrong_cluster")),
            (Policy::Member, vec![(upper[0], upper[1]), RIGHT[1], RIGHT[2]], Some("wrong_cluster")),
            (Policy::Member, vec![RIGHT[0], (wrong_node[0], wrong_node[1]), RIGHT[2]], Some("wrong_node")),
            (Policy::Join, vec![], None),
            (Policy::Join, vec![RIGHT[2]], None),
            (Policy::Join, RIGHT.to_vec(), None),
            (Policy::Join, vec![(wrong_node[0], wrong_node[1])], Some("wrong_node")),
            (Policy::Join, vec![(wrong_cluster[0], wrong_cluster[1])], Some("wrong_cluster")),
            (Policy::ReadOnly, vec![], None),
            (Policy::ReadOnly, vec![(wrong_node[0], wrong_node[1])], Some("wrong_node")),
            (Policy::Open, vec![(wrong_cluster[0], wrong_cluster[1])], None),
        ];
        for (policy, sent, expected) in cases {
            let got = check(policy, &headers(&sent), &me()).err();
            assert_eq!(got.as_ref().map(Refusal::reason), expected, "{policy:?} {sent:?}: {got:?}");
        }
    }

    #[test]
    fn refusals_say_what_was_expected_and_what_came() {
        let sent = headers(&[RIGHT[0], (TO_NODE_HEADER, "00000000000000cc"), RIGHT[2]]);
        let refusal = check(Policy::Member, &sent, &me()).unwrap_err();
        let status = refusal.to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("00000000000000aa") && status.message().contains("00000000000000cc"));
        assert!(is_refusal(&status));
        assert!(!is_refusal(&Status::failed_precondition("too many siblings")));

        let refusal = check(Policy::Member, &headers(&[RIGHT[1]]), &me()).unwrap_err();
        let message = refusal.to_string();
        assert!(message.contains("missing vc-cluster-id, vc-from-node"), "{message}");
        assert!(message.contains("0000000000000042"), "{message}");
    }

    struct Removed(Identity);

    impl LocalIdentity for Removed {
        fn node(&self) -> &NodeId {
            &self.0.node
        }
        fn cluster_id(&self) -> u64 {
            self.0.cluster_id
        }
        fn removed(&self) -> bool {
            true
        }
    }

    struct Duplicated(Identity);

    impl LocalIdentity for Duplicated {
        fn node(&self) -> &NodeId {
            &self.0.node
        }
        fn cluster_id(&self) -> u64 {
            self.0.cluster_id
        }
        fn removed(&self) -> bool {
            false
        }
        fn duplicate_of(&self) -> Option<String> {
            Some("10.0.0.9:8080".into())
        }
    }

    #[test]
    fn a_node_that_found_its_duplicate_answers_only_open_and_read_only_calls() {
        let duplicated = Duplicated(me());
        let right = headers(&RIGHT);
        for (policy, accepted) in
            [(Policy::Open, true), (Policy::ReadOnly, true), (Policy::Join, false), (Policy::Member, false)]
        {
            let got = check(policy, &right, &duplicated);
            assert_eq!(got.is_ok(), accepted, "{policy:?}: {got:?}");
            if let Err(refusal) = got {
                assert_eq!(refusal.reason(), "duplicate");
                assert!(refusal.to_string().contains("10.0.0.9:8080"), "{refusal}");
            }
        }
    }

    #[test]
    fn a_removed_node_answers_only_open_and_read_only_calls() {
        let removed = Removed(me());
        let right = headers(&RIGHT);
        for (policy, accepted) in
            [(Policy::Open, true), (Policy::ReadOnly, true), (Policy::Join, false), (Policy::Member, false)]
        {
            let got = check(policy, &right, &removed);
            assert_eq!(got.is_ok(), accepted, "{policy:?}: {got:?}");
            if let Err(refusal) = got {
                assert_eq!(refusal.reason(), "removed");
            }
        }
    }

    #[test]
    fn every_reason_is_registered_with_the_metric() {
        let node = NodeId::new("n");
        let refusals = [
            Refusal::WrongCluster { expected: String::new(), got: String::new() },
            Refusal::WrongNode { expected: node.clone(), got: String::new() },
            Refusal::MissingIdentity { missing: String::new(), node: node.clone(), cluster: String::new() },
            Refusal::Removed { node: node.clone() },
            Refusal::Duplicate { node, address: String::new() },
            Refusal::WrongCertificate { node: String::new(), bound: String::new(), presented: String::new() },
        ];
        for refusal in refusals {
            assert!(metrics::RPC_REFUSED_REASONS.contains(&refusal.reason()), "{refusal:?}");
        }
    }

    struct Bound(Identity);

    impl LocalIdentity for Bound {
        fn node(&self) -> &NodeId {
            &self.0.node
        }
        fn cluster_id(&self) -> u64 {
            self.0.cluster_id
        }
        fn removed(&self) -> bool {
            false
        }
        fn certificate_name(&self, node: &NodeId) -> Option<String> {
            (node.as_str() == "00000000000000bb").then(|| "node-b".to_owned())
        }
    }

    #[test]
    fn a_certificate_acts_only_for_the_node_it_is_bound_to() {
        let bound = Bound(me());
        let right = headers(&RIGHT); // from 00000000000000bb
        let unbound_from = headers(&[RIGHT[0], RIGHT[1], (FROM_NODE_HEADER, "00000000000000cc")]);
        let cases = [
            (Policy::Member, &right, Some("node-b"), None),
            (Policy::Member, &right, Some("intruder"), Some("wrong_certificate")),
            (Policy::Member, &right, Some(""), Some("wrong_certificate")),
            (Policy::Join, &right, Some("intruder"), Some("wrong_certificate")),
            // Plaintext: no certificate to check (the port is loopback or
            // --insecure-cluster).
            (Policy::Member, &right, None, None),
            // Not bound yet: any certificate of the CA.
            (Policy::Member, &unbound_from, Some("intruder"), None),
            (Policy::ReadOnly, &right, Some("intruder"), None),
            (Policy::Open, &right, Some("intruder"), None),
        ];
        for (policy, sent, presented, expected) in cases {
            let got = check_certificate(policy, sent, presented, &bound).err();
            assert_eq!(got.as_ref().map(Refusal::reason), expected, "{policy:?} {presented:?}: {got:?}");
        }
        let refusal = check_certificate(Policy::Member, &right, Some("intruder"), &bound).unwrap_err();
        assert!(refusal.to_string().contains("node-b") && refusal.to_string().contains("intruder"), "{refusal}");
        assert!(is_refusal(&refusal.to_status()));
    }

    #[test]
    fn an_identified_transport_stamps_every_call() {
        let caller = Arc::new(CallerHeaders::new(&Caller::member(NodeId::new("00000000000000bb"), 0x42)));
        let seen = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let recorder = {
            let seen = Arc::clone(&seen);
            tower::service_fn(move |request: http::Request<()>| {
                *seen.lock().unwrap() = request.headers().clone();
                async { Ok::<_, std::convert::Infallible>(()) }
            })
        };
        let to_me = Identified::new(recorder, caller, to_node_value(&me().node));
        futures::executor::block_on(tower::ServiceExt::oneshot(to_me, http::Request::new(()))).unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(check(Policy::Member, &seen, &me()), Ok(()), "{seen:?}");
    }
}
