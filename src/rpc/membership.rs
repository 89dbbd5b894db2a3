//! The membership service (gossip, join, state) over gRPC: its server, its
//! client calls, and the conversion of cluster state to and from protobuf.
//!
//! Message limits. Gossip and the answers to Join and GetState carry the
//! whole cluster state, whose size grows with the partition count: two rings
//! while a move runs, and each member's transfer reports. tonic's default
//! 4 MiB stopped gossip in a cluster of 2^17 partitions while it moved, so
//! the move never completed. So both sides size their limits from the
//! largest legal message for the cluster's partition count
//! ([`largest_message_bytes`]), made computable by bounds on what a state may
//! hold (`core::membership::MAX_MEMBERS` and the id and address lengths),
//! which are enforced on everything that comes from the wire. The partition
//! count is capped (`core::ring::MAX_PARTITIONS`) so that this stays under
//! [`MESSAGE_CEILING_BYTES`]. Join, which strangers may call, is capped far
//! lower before it is decoded ([`MembershipRoutes`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::identity::FROM_NODE_HEADER;
use super::membership_pb as pb;
use super::membership_pb::membership_client::MembershipClient;
use super::membership_pb::membership_server::MembershipServer;
use super::peers::PeerChannel;
use super::status::error_status;
use crate::core::bucket::{
    BucketRecord, Buckets, MAX_BUCKETS, MAX_NAME_BYTES, MAX_PROPS_BYTES, MAX_TYPES, PropsPatch, TypeRecord,
};
use crate::core::context::ClusterSecret;
use crate::core::key::NodeId;
use crate::core::membership::{
    Change, ClusterState, Departure, MAX_ADDRESS_BYTES, MAX_CERTIFICATE_NAME_BYTES, MAX_MEMBERS, MAX_NODE_ID_BYTES,
    MAX_REMOVED, Member, PROTOCOL_VERSION, RingState, Staged, StagedPlan,
};
use crate::core::ring::{MAX_PARTITIONS, Ring};
#[cfg(test)]
use crate::core::security::Scope;
use crate::core::security::{
    Grant, MAX_GRANTS, MAX_SCOPE_BYTES, MAX_TOKEN_NAME_BYTES, MAX_TOKENS, Permission, TokenRecord, Tokens,
};
use crate::membership::Membership;
use crate::telemetry::metrics;

pub struct MembershipService {
    membership: Arc<Membership>,
    /// Handed to a node when it is admitted, and to no one else.
    secret: ClusterSecret,
}

impl MembershipService {
    pub fn new(membership: Arc<Membership>, secret: ClusterSecret) -> MembershipService {
        MembershipService { membership, secret }
    }
}

/// No membership message may be larger, whatever the cluster: beyond it a
/// state is too large to exchange every gossip round anyway.
pub const MESSAGE_CEILING_BYTES: usize = 1 << 30;

/// Bytes of a varint holding `value`.
const fn varint_bytes(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field (string, bytes, message, packed
/// repeated) of `len` bytes: tag, length, body.
const fn delimited(len: usize) -> usize {
    1 + varint_bytes(len as u64) + len
}

/// Scalar fields at their largest, with their tag.
const U64_FIELD: usize = 1 + 10;
const U32_FIELD: usize = 1 + 5;
const FIXED64_FIELD: usize = 1 + 8;
const BOOL_FIELD: usize = 1 + 1;

/// The largest legal `ClusterState` (proto/membership.proto) of a cluster of
/// `partitions`: every id and address at its bound, [`MAX_MEMBERS`] members
/// each reporting every partition sent (a member reports at most the
/// partitions there are), a target ring as large as the current one, and
/// [`MAX_REMOVED`] removed ids.
pub fn largest_state_bytes(partitions: u32) -> usize {
    let p = partitions as usize;
    let id = delimited(MAX_NODE_ID_BYTES);
    let address = delimited(MAX_ADDRESS_BYTES);
    let transfers_done = delimited(p * varint_bytes(u64::from(partitions.saturating_sub(1))));
    let member = id + 2 * address + U32_FIELD + 3 * U64_FIELD + transfers_done + BOOL_FIELD;
    let ring = 2 * U64_FIELD + id + 2 * p * id;
    let staged = 3 * id + U32_FIELD + U64_FIELD + BOOL_FIELD;
    let plan = (MAX_MEMBERS + MAX_REMOVED) * delimited(staged) + 2 * (U64_FIELD + id);
    let departure = 2 * id + BOOL_FIELD + U32_FIELD;
    let certificate_name = id + delimited(MAX_CERTIFICATE_NAME_BYTES);
    let longest_permission = Permission::ALL.iter().map(|p| p.name().len()).max().unwrap_or(0);
    let grant = Permission::ALL.len() * delimited(longest_permission) + delimited(MAX_SCOPE_BYTES);
    let token = delimited(MAX_TOKEN_NAME_BYTES)
        + delimited(32)
        + MAX_GRANTS * delimited(grant)
        + 2 * U64_FIELD
        + BOOL_FIELD
        + id;
    let bucket_type = delimited(MAX_NAME_BYTES) + delimited(MAX_PROPS_BYTES) + BOOL_FIELD + U64_FIELD + id;
    let bucket = 2 * delimited(MAX_NAME_BYTES) + delimited(MAX_PROPS_BYTES) + U64_FIELD + id;
    FIXED64_FIELD
        + 4 * U32_FIELD
        + MAX_MEMBERS * delimited(member)
        + delimited(ring)
        + MAX_REMOVED * id
        + delimited(plan)
        + (MAX_MEMBERS + MAX_REMOVED) * delimited(departure)
        + MAX_MEMBERS * delimited(certificate_name)
        + BOOL_FIELD
        + MAX_TOKENS * delimited(token)
        + MAX_TYPES * delimited(bucket_type)
        + MAX_BUCKETS * delimited(bucket)
}

/// The largest legal membership message of a cluster of `partitions`: a
/// state, plus what comes with it. GetState's list of members that are up
/// (every member's id) outweighs Gossip's sender id and protocol version and
/// Join's secret.
pub fn largest_message_bytes(partitions: u32) -> usize {
    delimited(largest_state_bytes(partitions)) + MAX_MEMBERS * delimited(MAX_NODE_ID_BYTES) + 2 * U32_FIELD
}

/// The largest Join request: one member record (a joiner sends it without
/// transfer reports, `Member::new`) at its bounds, with room to spare.
pub const MAX_JOIN_REQUEST_BYTES: usize = 16 * 1024;

const JOIN_PATH: &str = "/vinzclortho.membership.v1.Membership/Join";

/// The membership service as a node serves it, with its message limits
/// sized for the cluster's partition count.
pub fn server(service: MembershipService, partitions: u32) -> MembershipRoutes {
    let limit = largest_message_bytes(partitions);
    MembershipRoutes {
        inner: MembershipServer::new(service).max_decoding_message_size(limit).max_encoding_message_size(limit),
    }
}

/// The membership server, with Join bodies capped at
/// [`MAX_JOIN_REQUEST_BYTES`] before they are decoded: Join is open to
/// callers that are not members yet (`identity::Policy::Join`), so a stranger
/// must not get the state-sized limit that gossip between members needs.
/// (tonic's limits are per service, not per method.)
#[derive(Clone)]
pub struct MembershipRoutes {
    inner: MembershipServer<MembershipService>,
}

impl tonic::server::NamedService for MembershipRoutes {
    const NAME: &'static str = <MembershipServer<MembershipService> as tonic::server::NamedService>::NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for MembershipRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = <MembershipServer<MembershipService> as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() == JOIN_PATH {
            use http_body_util::BodyExt;
            // A Status as the body's error reaches the caller as that status.
            let limited = request.map(|body| {
                http_body_util::Limited::new(body, MAX_JOIN_REQUEST_BYTES).map_err(|e| {
                    Status::out_of_range(format!("a join request is at most {MAX_JOIN_REQUEST_BYTES} bytes: {e}"))
                })
            });
            self.inner.call(limited)
        } else {
            self.inner.call(request)
        }
    }
}

fn client<T>(channel: T, partitions: u32) -> MembershipClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let limit = largest_message_bytes(partitions);
    MembershipClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
}

fn check_protocol(version: u32) -> Result<(), Status> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "peer speaks membership protocol {version}, this node speaks {PROTOCOL_VERSION}; \
             run the same release on every node"
        )))
    }
}

#[tonic::async_trait]
impl pb::membership_server::Membership for MembershipService {
    async fn gossip(&self, request: Request<pb::GossipRequest>) -> Result<Response<pb::GossipResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        let theirs = state_from_pb(request.state.ok_or_else(|| Status::invalid_argument("gossip without a state"))?)?;
        self.membership.merge(&theirs).map_err(|e| {
            tracing::warn!(from = %request.from, error = %e, "refused gossip");
            error_status(&e)
        })?;
        Ok(Response::new(pb::GossipResponse { state: Some(state_to_pb(&self.membership.snapshot())) }))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        // The joiner names itself (`vc-from-node`, see `join`); older
        // releases send nothing.
        let from = request.metadata().get(FROM_NODE_HEADER).map(|v| v.to_str().unwrap_or("<not text>").to_owned());
        // Over mutual TLS, the joiner's id is bound to its certificate's name.
        let certificate = request.peer_certs().and_then(|certs| super::tls::certificate_name(certs.first()?));
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        let member = member_from_pb(request.member.ok_or_else(|| Status::invalid_argument("join without a member"))?)?;
        // Security is fixed at creation: refused before the joiner becomes
        // a member, so a node that then cannot start leaves no record.
        let security = self.membership.security();
        if request.security != security {
            let (cluster, joiner) = if security { ("on", "without") } else { ("off", "with") };
            return Err(Status::failed_precondition(format!(
                "the cluster runs with client security {cluster} (fixed when it was created), and node {} was \
                 started {joiner} --security; start it with the cluster's setting",
                member.node
            )));
        }
        if let Some(from) = from.as_ref().filter(|from| *from != member.node.as_str()) {
            return Err(Status::invalid_argument(format!(
                "join from node {from:?} (vc-from-node) for node {}: a node joins as itself",
                member.node
            )));
        }
        tracing::info!(
            node = %member.node,
            address = %member.address,
            cluster_address = %member.cluster_address,
            certificate = certificate.as_deref().unwrap_or(""),
            "node joins"
        );
        let state =
            self.membership.admit_with_certificate(member, certificate.as_deref()).map_err(|e| error_status(&e))?;
        let cluster_secret = self.secret.as_bytes().to_vec().into();
        Ok(Response::new(pb::JoinResponse { state: Some(state_to_pb(&state)), cluster_secret }))
    }

    async fn get_state(&self, _: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let state = self.membership.snapshot();
        let up = state.members.keys().filter(|n| self.membership.is_up(n)).map(|n| n.to_string()).collect();
        Ok(Response::new(pb::GetStateResponse { state: Some(state_to_pb(&state)), up }))
    }

    async fn going_down(
        &self,
        request: Request<pb::GoingDownRequest>,
    ) -> Result<Response<pb::GoingDownResponse>, Status> {
        // The identity layer has checked vc-from-node (and, over mutual
        // TLS, that the certificate is the one bound to it): a member can
        // only say this of itself.
        let from = request.metadata().get(FROM_NODE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        if from.as_deref() != Some(request.node.as_str()) {
            return Err(Status::invalid_argument(format!(
                "going-down notice for node {:?} from node {:?} (vc-from-node): a node only says this of itself",
                request.node,
                from.unwrap_or_default()
            )));
        }
        if request.node.is_empty() || request.node.len() > MAX_NODE_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "going-down notice: a node id of {} bytes; 1 to {MAX_NODE_ID_BYTES}",
                request.node.len()
            )));
        }
        let taken = self.membership.peer_going_down(&NodeId::new(request.node), (request.generation, request.version));
        Ok(Response::new(pb::GoingDownResponse { taken }))
    }
}

/// Tells a peer this node (`from`, whose record is at `stamp`) is going
/// down; returns whether the peer took the notice.
pub async fn going_down(channel: PeerChannel, from: &NodeId, stamp: (u64, u64)) -> Result<bool, Status> {
    let request = pb::GoingDownRequest {
        protocol_version: PROTOCOL_VERSION,
        node: from.to_string(),
        generation: stamp.0,
        version: stamp.1,
    };
    // A small message: no state-sized limit needed, any partition count will do.
    let reply = observed("Membership/GoingDown", client(channel, 1).going_down(request)).await?.into_inner();
    Ok(reply.taken)
}

/// Push-pull gossip with one peer: sends our state, returns theirs.
pub async fn gossip(channel: PeerChannel, from: &NodeId, state: &ClusterState) -> Result<ClusterState, Status> {
    let request = pb::GossipRequest {
        protocol_version: PROTOCOL_VERSION,
        from: from.to_string(),
        state: Some(state_to_pb(state)),
    };
    let reply = observed("Membership/Gossip", client(channel, state.partitions()).gossip(request)).await?.into_inner();
    state_from_pb(reply.state.ok_or_else(|| Status::invalid_argument("gossip reply without a state"))?)
}

/// Asks a member to admit `member`; returns the cluster's state and secret.
/// `channel` is a seed's (`Peers::seed_channel`): it names the joiner
/// (`vc-from-node`) but neither the cluster nor the seed, unknown until the
/// answer. The joiner does not know the cluster's partition count either, so
/// it accepts an answer as large as any cluster's can be.
pub async fn join(channel: PeerChannel, member: &Member) -> Result<(ClusterState, ClusterSecret), Status> {
    join_with_security(channel, member, false).await
}

/// [`join`] for a node started with `--security` set to `security`: a
/// member of a cluster with the other setting refuses it.
pub async fn join_with_security(
    channel: PeerChannel,
    member: &Member,
    security: bool,
) -> Result<(ClusterState, ClusterSecret), Status> {
    let request = pb::JoinRequest { protocol_version: PROTOCOL_VERSION, member: Some(member_to_pb(member)), security };
    let reply = observed("Membership/Join", client(channel, MAX_PARTITIONS).join(request)).await?.into_inner();
    let secret = ClusterSecret::try_from_slice(&reply.cluster_secret).ok_or_else(|| {
        Status::failed_precondition("the member admitted us without the cluster secret; it runs an older release")
    })?;
    let state = state_from_pb(reply.state.ok_or_else(|| Status::invalid_argument("join reply without a state"))?)?;
    Ok((state, secret))
}

/// Counts a membership call by method and status code.
async fn observed<T>(method: &'static str, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
    metrics::grpc_client(method, code, started.elapsed().as_secs_f64());
    result
}

pub fn state_to_pb(s: &ClusterState) -> pb::ClusterState {
    let names = |ring: &Ring| ring.owners().iter().map(|n| n.to_string()).collect();
    pb::ClusterState {
        cluster_id: s.cluster_id,
        partitions: s.partitions(),
        n_val: s.n_val as u32,
        r: s.r as u32,
        w: s.w as u32,
        members: s.members.values().map(member_to_pb).collect(),
        removed: s.removed.iter().map(|n| n.to_string()).collect(),
        plan: Some(plan_to_pb(&s.plan)),
        departures: s
            .departures
            .iter()
            .map(|(node, d)| pb::Departure {
                node: node.to_string(),
                done: d.done,
                by: d.by.as_ref().map(|b| b.to_string()).unwrap_or_default(),
                claim: d.claim,
            })
            .collect(),
        certificate_names: s.certificate_names.iter().map(|(node, name)| (node.to_string(), name.clone())).collect(),
        security: s.security,
        tokens: s.tokens.values().map(token_to_pb).collect(),
        bucket_types: s
            .buckets
            .types
            .iter()
            .map(|(name, t)| pb::BucketType {
                name: name.clone(),
                props: t.props.to_json().to_string(),
                active: t.active,
                version: t.stamp.0,
                editor: t.stamp.1.to_string(),
            })
            .collect(),
        bucket_props: s
            .buckets
            .buckets
            .iter()
            .map(|((bucket_type, bucket), b)| pb::BucketProps {
                bucket_type: bucket_type.clone().into(),
                bucket: bucket.clone().into(),
                props: b.props.to_json().to_string(),
                version: b.stamp.0,
                editor: b.stamp.1.to_string(),
            })
            .collect(),
        ring: Some(pb::Ring {
            epoch: s.ring.epoch,
            author: s.ring.author.to_string(),
            owners: names(&s.ring.current),
            target: s.ring.target.as_ref().map(names).unwrap_or_default(),
            target_epoch: s.ring.target_epoch,
        }),
    }
}

pub fn state_from_pb(p: pb::ClusterState) -> Result<ClusterState, Status> {
    let bad = |m: String| Status::invalid_argument(format!("cluster state: {m}"));
    let ring = p.ring.ok_or_else(|| bad("no ring".into()))?;
    if p.members.len() > MAX_MEMBERS || p.removed.len() > MAX_REMOVED {
        return Err(bad(format!(
            "{} members and {} removed ids; at most {MAX_MEMBERS} and {MAX_REMOVED}",
            p.members.len(),
            p.removed.len()
        )));
    }
    let plan = p.plan.unwrap_or_default();
    if plan.changes.len() > MAX_MEMBERS + MAX_REMOVED || p.departures.len() > MAX_MEMBERS + MAX_REMOVED {
        return Err(bad(format!(
            "{} staged changes and {} departures; at most {} each",
            plan.changes.len(),
            p.departures.len(),
            MAX_MEMBERS + MAX_REMOVED
        )));
    }
    if p.certificate_names.len() > MAX_MEMBERS {
        return Err(bad(format!("{} certificate names; at most {MAX_MEMBERS}", p.certificate_names.len())));
    }
    if let Some(name) = p.certificate_names.values().find(|name| name.len() > MAX_CERTIFICATE_NAME_BYTES) {
        return Err(bad(format!("a certificate name of {} bytes; at most {MAX_CERTIFICATE_NAME_BYTES}", name.len())));
    }
    if p.tokens.len() > MAX_TOKENS {
        return Err(bad(format!("{} tokens; at most {MAX_TOKENS}", p.tokens.len())));
    }
    if p.bucket_types.len() > MAX_TYPES || p.bucket_props.len() > MAX_BUCKETS {
        return Err(bad(format!(
            "{} bucket types and {} buckets with properties; at most {MAX_TYPES} and {MAX_BUCKETS}",
            p.bucket_types.len(),
            p.bucket_props.len()
        )));
    }
    let staged_ids = plan.changes.iter().flat_map(|c| [&c.node, &c.by, &c.author]);
    let departure_ids = p.departures.iter().flat_map(|d| [&d.node, &d.by]);
    let ids = ring
        .owners
        .iter()
        .chain(&ring.target)
        .chain(&p.removed)
        .chain([&ring.author, &plan.commit_author, &plan.applied_author])
        .chain(staged_ids)
        .chain(departure_ids)
        .chain(p.certificate_names.keys())
        .chain(p.tokens.iter().map(|t| &t.editor))
        .chain(p.bucket_types.iter().map(|t| &t.editor))
        .chain(p.bucket_props.iter().map(|b| &b.editor));
    if let Some(id) = ids.into_iter().find(|id| id.len() > MAX_NODE_ID_BYTES) {
        return Err(bad(format!("a node id of {} bytes; at most {MAX_NODE_ID_BYTES}", id.len())));
    }
    let owners = |names: Vec<String>| Ring::from_owners(names.into_iter().map(NodeId::new).collect());
    let current = owners(ring.owners).map_err(|e| bad(e.to_string()))?;
    if current.partitions() != p.partitions {
        return Err(bad(format!("{} owners for {} partitions", current.partitions(), p.partitions)));
    }
    let target = match ring.target.len() {
        0 => None,
        n if n as u32 == p.partitions => Some(owners(ring.target).map_err(|e| bad(e.to_string()))?),
        n => return Err(bad(format!("target has {n} owners for {} partitions", p.partitions))),
    };
    let (n_val, r, w) = (p.n_val as usize, p.r as usize, p.w as usize);
    if n_val == 0 || r == 0 || w == 0 || r > n_val || w > n_val {
        return Err(bad(format!("n_val={n_val} r={r} w={w} are inconsistent")));
    }
    let members: BTreeMap<NodeId, Member> =
        p.members.into_iter().map(|m| member_from_pb(m).map(|m| (m.node.clone(), m))).collect::<Result<_, _>>()?;
    if let Some(m) = members.values().find(|m| m.transfers_done.last().is_some_and(|d| *d >= p.partitions)) {
        return Err(bad(format!("member {} reports a partition beyond {}", m.node, p.partitions)));
    }
    let mut tokens = Tokens::new();
    for token in p.tokens {
        let token = token_from_pb(token).map_err(&bad)?;
        if tokens.insert(token.name.clone(), token).is_some() {
            return Err(bad("two tokens of one name".into()));
        }
    }
    let buckets = buckets_from_pb(p.bucket_types, p.bucket_props, n_val).map_err(&bad)?;
    Ok(ClusterState {
        cluster_id: p.cluster_id,
        n_val,
        r,
        w,
        removed: p.removed.into_iter().map(NodeId::new).collect(),
        ring: RingState {
            epoch: ring.epoch,
            author: NodeId::new(ring.author),
            current,
            target,
            target_epoch: ring.target_epoch,
        },
        plan: plan_from_pb(plan)?,
        departures: p
            .departures
            .into_iter()
            .map(|d| {
                let by = (!d.by.is_empty()).then(|| NodeId::new(d.by));
                (NodeId::new(d.node), Departure { done: d.done, by, claim: d.claim })
            })
            .collect(),
        // Members only, as `ClusterState::bind_certificate` keeps them.
        certificate_names: p
            .certificate_names
            .into_iter()
            .map(|(node, name)| (NodeId::new(node), name))
            .filter(|(node, _)| members.contains_key(node))
            .collect(),
        members,
        security: p.security,
        tokens,
        buckets,
    })
}

/// Bucket types and bucket properties from the wire, checked as a client's
/// are (a peer can send nothing `bucket-type create` or `PUT .../props`
/// could not have made) and within the bounds the largest legal state is
/// computed from.
fn buckets_from_pb(types: Vec<pb::BucketType>, buckets: Vec<pb::BucketProps>, n_val: usize) -> Result<Buckets, String> {
    let props = |text: &str| -> Result<PropsPatch, String> {
        if text.len() > MAX_PROPS_BYTES {
            return Err(format!("bucket properties of {} bytes; at most {MAX_PROPS_BYTES}", text.len()));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("bucket properties: {e}"))?;
        let object = value.as_object().ok_or("bucket properties: not a JSON object")?;
        let patch = PropsPatch::from_json(object).map_err(|e| format!("bucket properties: {e}"))?;
        patch.check_n_val(n_val).map_err(|e| format!("bucket properties: {e}"))?;
        Ok(patch)
    };
    let mut out = Buckets::default();
    for t in types {
        if !crate::core::bucket::valid_type_name(&t.name) || t.name == crate::core::bucket::DEFAULT_TYPE {
            return Err(format!("a bucket type named {:?}", t.name.chars().take(64).collect::<String>()));
        }
        let record =
            TypeRecord { props: props(&t.props)?, active: t.active, stamp: (t.version, NodeId::new(t.editor)) };
        if out.types.insert(t.name, record).is_some() {
            return Err("two bucket types of one name".into());
        }
    }
    for b in buckets {
        if b.bucket_type.len() > MAX_NAME_BYTES || b.bucket.len() > MAX_NAME_BYTES {
            return Err(format!("a bucket name of more than {MAX_NAME_BYTES} bytes"));
        }
        let record = BucketRecord { props: props(&b.props)?, stamp: (b.version, NodeId::new(b.editor)) };
        if out.buckets.insert((b.bucket_type.to_vec(), b.bucket.to_vec()), record).is_some() {
            return Err("two property records of one bucket".into());
        }
    }
    Ok(out)
}

fn token_to_pb(t: &TokenRecord) -> pb::Token {
    pb::Token {
        name: t.name.clone(),
        hash: t.hash.to_vec().into(),
        grants: t
            .grants
            .iter()
            .map(|g| pb::Grant {
                permissions: g.permissions.iter().map(|p| p.name().to_owned()).collect(),
                scope: g.scope.to_string(),
            })
            .collect(),
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
        revoked: t.revoked,
        version: t.stamp.0,
        editor: t.stamp.1.to_string(),
    }
}

/// A token record from the wire, within the bounds the largest legal state
/// is computed from. Its grants are checked as a client's are (a peer can
/// send nothing an admin could not have made).
fn token_from_pb(t: pb::Token) -> Result<TokenRecord, String> {
    if !crate::core::security::valid_name(&t.name) {
        return Err(format!(
            "a token name of {} bytes, or not of letters, digits, '-', '_' and '.'; at most {MAX_TOKEN_NAME_BYTES}",
            t.name.len()
        ));
    }
    let hash: [u8; 32] = t
        .hash
        .as_ref()
        .try_into()
        .map_err(|_| format!("token {:?}: a hash of {} bytes, not 32", t.name, t.hash.len()))?;
    if t.grants.len() > MAX_GRANTS {
        return Err(format!("token {:?}: {} grants; at most {MAX_GRANTS}", t.name, t.grants.len()));
    }
    let mut grants = Vec::with_capacity(t.grants.len());
    for g in &t.grants {
        if g.permissions.len() > Permission::ALL.len() {
            return Err(format!("token {:?}: a grant of {} permissions", t.name, g.permissions.len()));
        }
        grants.push(
            Grant::parse(g.permissions.iter().map(String::as_str), &g.scope)
                .map_err(|e| format!("token {:?}: {e}", t.name))?,
        );
    }
    // (Scope::parse bounds each scope's length; Grant::parse refuses admin
    // beyond `*` and grants without a permission.)
    Ok(TokenRecord {
        name: t.name,
        hash,
        grants,
        expires_at_ms: (t.expires_at_ms != 0).then_some(t.expires_at_ms),
        revoked: t.revoked,
        stamp: (t.version, NodeId::new(t.editor)),
    })
}

fn plan_to_pb(plan: &StagedPlan) -> pb::Plan {
    let changes = plan
        .changes
        .iter()
        .map(|(node, staged)| {
            let (kind, by) = match &staged.change {
                None | Some(Change::Leave) => (pb::staged::Kind::Leave, String::new()),
                Some(Change::Remove) => (pb::staged::Kind::Remove, String::new()),
                Some(Change::Replace { by }) => (pb::staged::Kind::Replace, by.to_string()),
            };
            pb::Staged {
                node: node.to_string(),
                kind: kind as i32,
                by,
                version: staged.version,
                author: staged.author.to_string(),
                staged: staged.change.is_some(),
            }
        })
        .collect();
    pb::Plan {
        changes,
        commit_version: plan.commit.0,
        commit_author: plan.commit.1.to_string(),
        applied_version: plan.applied.0,
        applied_author: plan.applied.1.to_string(),
    }
}

fn plan_from_pb(plan: pb::Plan) -> Result<StagedPlan, Status> {
    let mut changes = BTreeMap::new();
    for staged in plan.changes {
        let change = match (staged.staged, pb::staged::Kind::try_from(staged.kind)) {
            (false, _) => None,
            (true, Ok(pb::staged::Kind::Leave)) => Some(Change::Leave),
            (true, Ok(pb::staged::Kind::Remove)) => Some(Change::Remove),
            (true, Ok(pb::staged::Kind::Replace)) if !staged.by.is_empty() => {
                Some(Change::Replace { by: NodeId::new(staged.by) })
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "cluster state: a bad staged change for {}",
                    staged.node
                )));
            }
        };
        let entry = Staged { version: staged.version, author: NodeId::new(staged.author), change };
        changes.insert(NodeId::new(staged.node), entry);
    }
    Ok(StagedPlan {
        changes,
        commit: (plan.commit_version, NodeId::new(plan.commit_author)),
        applied: (plan.applied_version, NodeId::new(plan.applied_author)),
    })
}

pub fn member_to_pb(m: &Member) -> pb::Member {
    pb::Member {
        node: m.node.to_string(),
        address: m.address.clone(),
        cluster_address: m.cluster_address.clone(),
        wanted_claim: m.wanted_claim,
        generation: m.generation,
        version: m.version,
        transfers_epoch: m.transfers_epoch,
        transfers_done: m.transfers_done.iter().copied().collect(),
        leaving: m.leaving,
    }
}

pub fn member_from_pb(m: pb::Member) -> Result<Member, Status> {
    if m.node.is_empty() || m.address.is_empty() || m.cluster_address.is_empty() {
        return Err(Status::invalid_argument("member without an id, an address or a cluster address"));
    }
    // Bounded so that the largest legal state is computable (see the module
    // comment); real ids are 16 hex digits.
    if m.node.len() > MAX_NODE_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "member id of {} bytes; at most {MAX_NODE_ID_BYTES}",
            m.node.len()
        )));
    }
    if let Some(long) = [&m.address, &m.cluster_address].into_iter().find(|a| a.len() > MAX_ADDRESS_BYTES) {
        return Err(Status::invalid_argument(format!(
            "member {} has an address of {} bytes; at most {MAX_ADDRESS_BYTES}",
            m.node,
            long.len()
        )));
    }
    Ok(Member {
        node: NodeId::new(m.node),
        address: m.address,
        cluster_address: m.cluster_address,
        wanted_claim: m.wanted_claim,
        generation: m.generation,
        version: m.version,
        transfers_epoch: m.transfers_epoch,
        transfers_done: m.transfers_done.into_iter().collect(),
        leaving: m.leaving,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_state_round_trips_and_bad_states_are_refused() {
        let me = Member::new(NodeId::new("a"), "a:1".into(), "a:2".into(), 8, 5);
        let mut s = ClusterState::new(42, me, 8, 3, 2, 2).unwrap();
        s.members.insert(NodeId::new("b"), Member::new(NodeId::new("b"), "b:1".into(), "b:2".into(), 8, 6));
        s.plan_ring(&NodeId::new("a"), |_| true, &mut crate::core::ring::Planner::default());
        let first = s.my_transfers(&NodeId::new("a"), |_| true).remove(0);
        assert!(s.mark_transfer_done(&NodeId::new("a"), &first));
        assert!(s.ring.target.is_some());
        assert_eq!(state_from_pb(state_to_pb(&s)).unwrap(), s);

        let mut bad = state_to_pb(&s);
        bad.partitions = 16;
        assert!(state_from_pb(bad).is_err());
        let mut bad = state_to_pb(&s);
        bad.r = 4;
        assert!(state_from_pb(bad).is_err());
        let mut bad = state_to_pb(&s);
        bad.ring.as_mut().unwrap().target.pop();
        assert!(state_from_pb(bad).is_err());
        let mut bad = state_to_pb(&s);
        bad.ring = None;
        assert!(state_from_pb(bad).is_err());

        // Staged changes and departures travel too.
        s.stage(&NodeId::new("a"), &NodeId::new("b"), Change::Replace { by: NodeId::new("a") }).unwrap();
        s.departures.insert(NodeId::new("c"), Departure { done: false, by: None, claim: 3 });
        assert_eq!(state_from_pb(state_to_pb(&s)).unwrap(), s);
        let mut bad = state_to_pb(&s);
        bad.plan.as_mut().unwrap().changes[0].by.clear();
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "a replace by nobody");
    }

    /// A state with every field at its bound: the largest legal one.
    fn largest_state(partitions: u32) -> ClusterState {
        let id = |i: usize| NodeId::new(format!("{i:0>width$}", width = MAX_NODE_ID_BYTES));
        let address = |i: usize| format!("{i:0>width$}", width = MAX_ADDRESS_BYTES);
        let member = |i: usize| Member {
            node: id(i),
            address: address(i),
            cluster_address: address(i + 1),
            wanted_claim: u32::MAX,
            generation: u64::MAX,
            version: u64::MAX,
            transfers_epoch: u64::MAX,
            transfers_done: (0..partitions).collect(),
            leaving: true,
        };
        let mut s = ClusterState::new(u64::MAX, member(0), partitions, 3, 2, 2).unwrap();
        for i in 1..MAX_MEMBERS {
            s.members.insert(id(i), member(i));
        }
        s.removed = (MAX_MEMBERS..MAX_MEMBERS + MAX_REMOVED).map(id).collect();
        s.ring.current = Ring::from_owners((0..partitions as usize).map(id).collect()).unwrap();
        s.ring.target = Some(Ring::from_owners((0..partitions as usize).rev().map(id).collect()).unwrap());
        s.ring.epoch = u64::MAX;
        s.ring.target_epoch = u64::MAX;
        let heir =
            |i: usize| Staged { version: u64::MAX, author: id(i), change: Some(Change::Replace { by: id(i + 1) }) };
        s.plan = StagedPlan {
            changes: (0..MAX_MEMBERS + MAX_REMOVED).map(|i| (id(i), heir(i))).collect(),
            commit: (u64::MAX, id(0)),
            applied: (u64::MAX, id(1)),
        };
        s.departures = (0..MAX_MEMBERS + MAX_REMOVED)
            .map(|i| (id(i), Departure { done: true, by: Some(id(i + 1)), claim: u32::MAX }))
            .collect();
        s.certificate_names = (0..MAX_MEMBERS).map(|i| (id(i), "c".repeat(MAX_CERTIFICATE_NAME_BYTES))).collect();
        s.security = true;
        // Admin is granted on `*` only, so the longest scope carries the rest.
        let half = MAX_SCOPE_BYTES / 2;
        let grant = Grant {
            permissions: Permission::ALL.into_iter().filter(|p| *p != Permission::Admin).collect(),
            scope: Scope::Bucket("t".repeat(half - 1), "b".repeat(half)),
        };
        s.tokens = (0..MAX_TOKENS)
            .map(|i| {
                let name = format!("{i:0>width$}", width = MAX_TOKEN_NAME_BYTES);
                let record = TokenRecord {
                    name: name.clone(),
                    hash: [0xff; 32],
                    grants: vec![grant.clone(); MAX_GRANTS],
                    expires_at_ms: Some(u64::MAX),
                    revoked: true,
                    stamp: (u64::MAX, id(i)),
                };
                (name, record)
            })
            .collect();
        let props = largest_props();
        s.buckets.types = (0..MAX_TYPES)
            .map(|i| {
                let name = format!("{i:0>width$}", width = MAX_NAME_BYTES);
                (name, TypeRecord { props: props.clone(), active: true, stamp: (u64::MAX, id(i)) })
            })
            .collect();
        s.buckets.buckets = (0..MAX_BUCKETS)
            .map(|i| {
                let name = format!("{i:0>width$}", width = MAX_NAME_BYTES).into_bytes();
                ((name.clone(), name), BucketRecord { props: props.clone(), stamp: (u64::MAX, id(i % MAX_MEMBERS)) })
            })
            .collect();
        s
    }

    /// Properties at their bound, every one set (n_val 1: legal in any
    /// cluster).
    fn largest_props() -> PropsPatch {
        use crate::core::bucket::{MAX_EXTRA_NAME_BYTES, MAX_EXTRA_VALUE_BYTES, QuorumParam};
        let mut p = PropsPatch {
            n_val: Some(1),
            allow_mult: Some(false),
            last_write_wins: Some(false),
            r: Some(QuorumParam::Quorum),
            w: Some(QuorumParam::Quorum),
            dw: Some(QuorumParam::Quorum),
            rw: Some(QuorumParam::Quorum),
            pr: Some(QuorumParam::Quorum),
            pw: Some(QuorumParam::Quorum),
            notfound_ok: Some(false),
            basic_quorum: Some(false),
            young_vclock: Some(u64::MAX),
            old_vclock: Some(u64::MAX),
            small_vclock: Some(u64::MAX),
            big_vclock: Some(u64::MAX),
            extra: Default::default(),
        };
        // Fill with unknown properties up to the bound.
        for i in 0.. {
            let left = MAX_PROPS_BYTES - p.to_json().to_string().len();
            let name = format!("{i:x>width$}", width = MAX_EXTRA_NAME_BYTES);
            // "name":"value", : the name, 6 bytes of punctuation, the value.
            let Some(room) = left.checked_sub(MAX_EXTRA_NAME_BYTES + 6).filter(|r| *r > 0) else { break };
            let value = "v".repeat(room.min(MAX_EXTRA_VALUE_BYTES - 2));
            p.extra.insert(name, format!("\"{value}\""));
        }
        assert!(p.to_json().to_string().len() <= MAX_PROPS_BYTES);
        p
    }

    #[test]
    fn tokens_travel_and_bad_ones_are_refused() {
        let me = Member::new(NodeId::new("a"), "a:1".into(), "a:2".into(), 8, 5);
        let mut s = ClusterState::new(42, me, 8, 3, 2, 2).unwrap();
        s.security = true;
        let grants = vec![Grant::parse_short("read,write:default/photos").unwrap()];
        crate::core::security::create(&mut s.tokens, &NodeId::new("a"), "photos", [3; 32], grants, Some(9)).unwrap();
        assert_eq!(state_from_pb(state_to_pb(&s)).unwrap(), s);
        let bad_tokens: [fn(&mut pb::Token); 6] = [
            |t| t.hash = t.hash.slice(..31),
            |t| t.name = "n".repeat(MAX_TOKEN_NAME_BYTES + 1),
            |t| t.name = "bad name".into(),
            |t| t.grants[0].permissions.push("root".into()),
            |t| t.grants[0].scope = "a/b/c".into(),
            |t| t.grants = vec![t.grants[0].clone(); MAX_GRANTS + 1],
        ];
        for spoil in bad_tokens {
            let mut bad = state_to_pb(&s);
            spoil(&mut bad.tokens[0]);
            assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        let mut bad = state_to_pb(&s);
        bad.tokens.push(bad.tokens[0].clone());
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "one name twice");
    }

    #[test]
    fn bucket_types_and_props_travel_and_bad_ones_are_refused() {
        let me = Member::new(NodeId::new("a"), "a:1".into(), "a:2".into(), 8, 5);
        let mut s = ClusterState::new(42, me, 8, 3, 2, 2).unwrap();
        let a = NodeId::new("a");
        let props = PropsPatch::from_body(br#"{"props":{"n_val":2,"r":"one","custom":[1]}}"#).unwrap();
        s.buckets.create_type(&a, "t", props.clone(), 3).unwrap();
        s.buckets.activate_type(&a, "t").unwrap();
        s.buckets.set_bucket(&a, b"t", b"\xff/b", &props, 3).unwrap();
        assert_eq!(state_from_pb(state_to_pb(&s)).unwrap(), s);
        let bad_types: [fn(&mut pb::BucketType); 5] = [
            |t| t.name = "default".into(),
            |t| t.name = "a b".into(),
            |t| t.props = "not json".into(),
            |t| t.props = r#"{"n_val":4}"#.into(),
            |t| t.editor = "e".repeat(MAX_NODE_ID_BYTES + 1),
        ];
        for spoil in bad_types {
            let mut bad = state_to_pb(&s);
            spoil(&mut bad.bucket_types[0]);
            assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        let bad_buckets: [fn(&mut pb::BucketProps); 4] = [
            |b| b.bucket = vec![b'b'; MAX_NAME_BYTES + 1].into(),
            |b| b.props = r#"{"allow_mult":"perhaps"}"#.into(),
            |b| b.props = format!(r#"{{"x":"{}"}}"#, "v".repeat(MAX_PROPS_BYTES)),
            |b| b.props = "[]".into(),
        ];
        for spoil in bad_buckets {
            let mut bad = state_to_pb(&s);
            spoil(&mut bad.bucket_props[0]);
            assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        let mut bad = state_to_pb(&s);
        bad.bucket_props.push(bad.bucket_props[0].clone());
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "one bucket twice");
        let mut bad = state_to_pb(&s);
        bad.bucket_types = vec![bad.bucket_types[0].clone(); MAX_TYPES + 1];
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "too many types");
    }

    #[test]
    fn the_largest_legal_state_fits_the_computed_limit_and_the_limit_fits_the_ceiling() {
        use prost::Message;
        for partitions in [1, 64, 1024] {
            let s = largest_state(partitions);
            let state = state_to_pb(&s);
            let encoded = state.encoded_len();
            let bound = largest_state_bytes(partitions);
            assert!(encoded <= bound, "{partitions} partitions: {encoded} bytes > {bound}");
            // An upper bound, but a close one: limits stay meaningful.
            assert!(bound - encoded < bound / 10 + 4096, "{partitions} partitions: {encoded} of {bound}");
            let up = pb::GetStateResponse { state: Some(state), up: s.members.keys().map(|n| n.to_string()).collect() };
            assert!(up.encoded_len() <= largest_message_bytes(partitions));
            // Once (it parses 65,536 bucket records): the partition count
            // changes nothing a check looks at.
            if partitions == 1024 {
                let state = up.state.expect("set above");
                assert_eq!(state_from_pb(state).unwrap(), s, "the largest legal state is accepted");
            }
        }
        assert!(largest_message_bytes(MAX_PARTITIONS) <= MESSAGE_CEILING_BYTES);
        assert!(largest_message_bytes(MAX_PARTITIONS * 2) > MESSAGE_CEILING_BYTES, "MAX_PARTITIONS could be larger");
    }

    #[test]
    fn ids_addresses_and_counts_beyond_their_bounds_are_invalid_arguments() {
        let me = Member::new(NodeId::new("a"), "a:1".into(), "a:2".into(), 8, 5);
        let s = ClusterState::new(42, me.clone(), 8, 3, 2, 2).unwrap();
        let long = |n: usize| "x".repeat(n);
        let bad_members = [
            pb::Member { node: long(MAX_NODE_ID_BYTES + 1), ..member_to_pb(&me) },
            pb::Member { address: long(MAX_ADDRESS_BYTES + 1), ..member_to_pb(&me) },
            pb::Member { cluster_address: long(MAX_ADDRESS_BYTES + 1), ..member_to_pb(&me) },
        ];
        for m in bad_members {
            let status = member_from_pb(m).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("at most"), "{}", status.message());
        }
        assert!(member_from_pb(pb::Member { node: long(MAX_NODE_ID_BYTES), ..member_to_pb(&me) }).is_ok());

        let mut bad = state_to_pb(&s);
        bad.removed = vec!["r".into(); MAX_REMOVED + 1];
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut bad = state_to_pb(&s);
        bad.members = (0..=MAX_MEMBERS)
            .map(|i| member_to_pb(&Member::new(NodeId::new(format!("n{i}")), "h:1".into(), "h:2".into(), 8, 1)))
            .collect();
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut bad = state_to_pb(&s);
        bad.ring.as_mut().unwrap().author = long(MAX_NODE_ID_BYTES + 1);
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut bad = state_to_pb(&s);
        bad.members[0].transfers_done = vec![8];
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut bad = state_to_pb(&s);
        bad.certificate_names.insert("a".into(), long(MAX_CERTIFICATE_NAME_BYTES + 1));
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut bad = state_to_pb(&s);
        bad.certificate_names = (0..=MAX_MEMBERS).map(|i| (format!("n{i}"), "c".into())).collect();
        assert_eq!(state_from_pb(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        // A binding of a node that is no member is dropped, not kept.
        let mut stray = state_to_pb(&s);
        stray.certificate_names.insert("a".into(), "node-a".into());
        stray.certificate_names.insert("zz".into(), "stranger".into());
        let names = state_from_pb(stray).unwrap().certificate_names;
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec![(NodeId::new("a"), "node-a".to_owned())]);
    }
}
