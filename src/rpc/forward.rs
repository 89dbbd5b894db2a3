//! The Forward gRPC service: a node that holds no replica of a key forwards
//! a client write whole to one that does (`Coordinator::write`), and this
//! service has the local coordinator coordinate it as if a client had sent
//! it here, never forwarding it again. Thin: admit, convert, coordinate,
//! convert back.
//!
//! Admission is a replica call's (`replica_server`): a call past its
//! deadline is dropped, and one planned on a ring older than this node's is
//! refused with ABORTED and this node's epoch, so the forwarder catches up
//! and plans again (it may turn out to be a replica itself). The identity
//! layer admits only members (`identity::policy`: every method not listed
//! there is a member's); a node that leaves the cluster between that check
//! and planning the write refuses it as that layer would, so the forwarder
//! coordinates it itself instead of failing it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::convert::{clock_from_pb, key_from_pb, mutation_from_pb, object_to_pb, required};
use super::identity::Refusal;
use super::pb;
use super::pb::forward_server::{Forward, ForwardServer};
use super::replica_server::Admission;
use super::status::error_status;
use crate::coordinator::{Coordinator, CoordinatorError, ForwardedError, QuorumParam, Topology, WriteOptions};
use crate::env::Env;
use crate::telemetry::metrics;

pub struct ForwardService {
    coordinator: Arc<Coordinator>,
    admission: Admission,
    env: Env,
}

/// The service, with the node's message size limits.
pub fn server(
    coordinator: Arc<Coordinator>,
    ring: Arc<dyn Topology>,
    env: &Env,
    max_message_bytes: usize,
) -> ForwardServer<ForwardService> {
    let admission = Admission::new(Some(ring), env.clock.clone());
    ForwardServer::new(ForwardService { coordinator, admission, env: env.clone() })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The answer to a forwarded write that failed. One this node refused
/// before starting it because it left (or was removed) after the identity
/// layer let the call in is answered as that layer now would, so the
/// forwarder knows nothing was done and coordinates the write itself.
pub fn forwarded_error_status(error: ForwardedError) -> Status {
    match error {
        ForwardedError::NotStarted(CoordinatorError::Removed { node }) => {
            let refusal = Refusal::Removed { node };
            metrics::rpc_refused(refusal.reason());
            refusal.to_status()
        }
        e => error_status(&e),
    }
}

fn quorum_param(value: &str, name: &str) -> Result<QuorumParam, Status> {
    if value.is_empty() {
        return Ok(QuorumParam::Default);
    }
    value.parse().map_err(|e| Status::invalid_argument(format!("{name}: {e}")))
}

#[async_trait]
impl Forward for ForwardService {
    async fn write(&self, request: Request<pb::ForwardedWrite>) -> Result<Response<pb::ForwardedReply>, Status> {
        let received = Instant::now();
        let pb::ForwardedWrite { write, w, pw } = request.into_inner();
        let pb::CoordinateRequest { key, context, mutation, caller, .. } = required(write, "write")?;
        // Without a deadline the forwarder is not waiting on anything this
        // node could honour: refuse rather than guess.
        let caller = required(caller, "write.caller")?;
        if caller.timeout_ms == 0 {
            return Err(Status::invalid_argument("a forwarded write must carry its caller's timeout"));
        }
        self.admission.check(Some(&caller), received)?;
        let key = key_from_pb(required(key, "write.key")?);
        let mutation = mutation_from_pb(mutation)?;
        let options = WriteOptions { w: quorum_param(&w, "w")?, pw: quorum_param(&pw, "pw")? };
        let deadline = received + Duration::from_millis(caller.timeout_ms);
        let coordinator = Arc::clone(&self.coordinator);
        let context = clock_from_pb(&context);
        // In its own task: a forwarder that hangs up must not cancel a write
        // half way (stamped here, not yet sent to the others).
        let write = self
            .env
            .spawn(async move { coordinator.write_forwarded(&key, &context, mutation, options, deadline).await });
        let reply = write
            .await
            .map_err(|e| Status::internal(format!("the forwarded write's task failed: {e}")))?
            .map_err(forwarded_error_status)?;
        Ok(Response::new(pb::ForwardedReply {
            object: Some(object_to_pb(&reply.object)),
            fallbacks: reply.fallbacks as u32,
        }))
    }
}
