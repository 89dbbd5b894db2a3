//! The membership service (gossip, join, state) over gRPC: its server, its
//! client calls, and the conversion of cluster state to and from protobuf.

use std::sync::Arc;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::membership_pb as pb;
use super::membership_pb::membership_client::MembershipClient;
use super::peers::PeerChannel;
use crate::core::context::ClusterSecret;
use crate::core::key::NodeId;
use crate::core::membership::{ClusterState, Member, PROTOCOL_VERSION, RingState};
use crate::core::ring::Ring;
use crate::error::HasErrorCode;
use crate::membership::{Membership, MembershipError};
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

fn to_status(e: MembershipError) -> Status {
    Status::new(e.code().grpc_code(), e.to_string())
}

#[tonic::async_trait]
impl pb::membership_server::Membership for MembershipService {
    async fn gossip(&self, request: Request<pb::GossipRequest>) -> Result<Response<pb::GossipResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        let theirs = state_from_pb(request.state.ok_or_else(|| Status::invalid_argument("gossip without a state"))?)?;
        self.membership.merge(&theirs).map_err(|e| {
            tracing::warn!(from = %request.from, error = %e, "refused gossip");
            to_status(e)
        })?;
        Ok(Response::new(pb::GossipResponse { state: Some(state_to_pb(&self.membership.snapshot())) }))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        let member = member_from_pb(request.member.ok_or_else(|| Status::invalid_argument("join without a member"))?)?;
        tracing::info!(node = %member.node, address = %member.address, cluster_address = %member.cluster_address, "node joins");
        let state = self.membership.admit(member).map_err(to_status)?;
        let cluster_secret = self.secret.as_bytes().to_vec().into();
        Ok(Response::new(pb::JoinResponse { state: Some(state_to_pb(&state)), cluster_secret }))
    }

    async fn get_state(&self, _: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let state = self.membership.snapshot();
        let up = state.members.keys().filter(|n| self.membership.is_up(n)).map(|n| n.to_string()).collect();
        Ok(Response::new(pb::GetStateResponse { state: Some(state_to_pb(&state)), up }))
    }
}

/// Push-pull gossip with one peer: sends our state, returns theirs.
pub async fn gossip(channel: PeerChannel, from: &NodeId, state: &ClusterState) -> Result<ClusterState, Status> {
    let request = pb::GossipRequest {
        protocol_version: PROTOCOL_VERSION,
        from: from.to_string(),
        state: Some(state_to_pb(state)),
    };
    let reply = observed("Membership/Gossip", MembershipClient::new(channel).gossip(request)).await?.into_inner();
    state_from_pb(reply.state.ok_or_else(|| Status::invalid_argument("gossip reply without a state"))?)
}

/// Asks a member to admit `member`; returns the cluster's state and secret.
pub async fn join(channel: Channel, member: &Member) -> Result<(ClusterState, ClusterSecret), Status> {
    let request = pb::JoinRequest { protocol_version: PROTOCOL_VERSION, member: Some(member_to_pb(member)) };
    let reply = observed("Membership/Join", MembershipClient::new(channel).join(request)).await?.into_inner();
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
    let members =
        p.members.into_iter().map(|m| member_from_pb(m).map(|m| (m.node.clone(), m))).collect::<Result<_, _>>()?;
    Ok(ClusterState {
        cluster_id: p.cluster_id,
        n_val,
        r,
        w,
        members,
        removed: p.removed.into_iter().map(NodeId::new).collect(),
        ring: RingState {
            epoch: ring.epoch,
            author: NodeId::new(ring.author),
            current,
            target,
            target_epoch: ring.target_epoch,
        },
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
    }
}
