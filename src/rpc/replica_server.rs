//! The Replica gRPC service: the network face of [`Replica`], so that a
//! coordinator on another node can read, stamp and merge keys this node
//! holds. Thin on purpose: convert, call the replica, convert back. All the
//! logic is in `replica` and `core::object`.
//!
//! Each operation comes two ways: as a unary method (tools, older peers) and
//! as a message on a `Calls` stream (coordinators). Both run the same
//! function below, so they cannot answer differently.
//!
//! Before a call runs, [`Admission`] checks what its `Caller` says:
//! * its deadline: a call found past it is dropped, not applied. After a
//!   pause (SIGSTOP, a stalled VM) a node reads calls whose coordinators
//!   answered their clients long ago; applying a stamp then would add a
//!   duplicate sibling of a write another replica stamped in its place.
//!   The wall-clock deadline catches what queued during the pause (allowing
//!   [`CLOCK_SKEW_ALLOWANCE`] of clock difference between nodes), the
//!   relative one what queued here.
//! * its ring (epoch and hash): a coordinator behind this node's ring, or on
//!   another ring of the same epoch, may count holders that no longer hold
//!   the key ([`RingView::serves`]); it is refused with ABORTED and this
//!   node's epoch, catches up and tries again.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures::stream::{Stream, StreamExt};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::convert::{
    clock_from_pb, digest_to_pb, key_from_pb, mutation_from_pb, object_from_pb, object_to_pb, required,
};
use super::pb;
use super::pb::call_request::Call;
use super::pb::call_response::Result as CallResult;
use super::pb::replica_server::Replica as ReplicaRpc;
use crate::coordinator::{RingView, Topology};
use crate::core::digest::Digest;
use crate::env::Clock;
use crate::replica::{Replica, ReplicaError};
use crate::telemetry::{metrics, propagation};

/// How far apart two nodes' clocks may be before wall-clock deadlines drop
/// calls that are still awaited. NTP keeps real clusters well inside it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(1);

/// The metadata that carries a replica's ring epoch with an ABORTED refusal.
pub const RING_EPOCH_HEADER: &str = "vc-ring-epoch";

/// Decides whether a call may run (see the module comment).
#[derive(Clone)]
pub(super) struct Admission {
    ring: Option<Arc<dyn Topology>>,
    /// This node's wall clock, for deadlines on the caller's.
    clock: Clock,
}

impl Admission {
    pub(super) fn new(ring: Option<Arc<dyn Topology>>, clock: Clock) -> Admission {
        Admission { ring, clock }
    }

    pub(super) fn check(&self, caller: Option<&pb::Caller>, received: Instant) -> Result<(), Status> {
        let Some(caller) = caller else { return Ok(()) };
        let now_unix_ms = (self.clock)();
        let past_wall = caller.deadline_unix_ms != 0
            && now_unix_ms > caller.deadline_unix_ms.saturating_add(CLOCK_SKEW_ALLOWANCE.as_millis() as u64);
        let past_queue = caller.timeout_ms != 0 && received.elapsed() > Duration::from_millis(caller.timeout_ms);
        if past_wall || past_queue {
            metrics::replica_call_dropped("expired");
            return Err(ReplicaError::Expired.into());
        }
        if let Some(ring) = &self.ring {
            let view: Arc<RingView> = ring.view();
            if !view.serves(caller.ring_epoch, caller.ring_hash) {
                metrics::replica_call_dropped("stale_ring");
                return Err(stale_ring(&view));
            }
        }
        Ok(())
    }
}

pub(super) fn stale_ring(view: &RingView) -> Status {
    let mut status = Status::aborted(format!(
        "the call was planned on an older ring, or another ring of the same epoch; this node's ring epoch is {} \
         (ring {:016x}): catch up and retry",
        view.epoch, view.ring_hash
    ));
    if let Ok(value) = view.epoch.to_string().parse() {
        status.metadata_mut().insert(RING_EPOCH_HEADER, value);
    }
    status
}

/// Calls of one stream being served at once. A caller with more in flight
/// waits for answers before this side reads on (HTTP/2 flow control).
pub const STREAM_CALLS_IN_FLIGHT: usize = 256;

/// The largest message either side puts on a `Calls` stream. A message is
/// sent whole before the next one on the same stream, so a large one would
/// delay every call behind it; unary calls (their own HTTP/2 streams) are
/// interleaved frame by frame instead.
pub const STREAM_MESSAGE_MAX_BYTES: usize = 64 * 1024;

/// The longest `MergeRequest.hint_target` taken: node ids are at most 64
/// bytes (real ones are 16 hex digits).
const HINT_TARGET_MAX_BYTES: usize = 64;

pub struct ReplicaService {
    replica: Arc<Replica>,
    admission: Admission,
    /// Cancelled when the node stops: open `Calls` streams finish the calls
    /// they started and end, so that the server's graceful shutdown (which
    /// waits for every open stream) is not held up by its peers.
    stop: CancellationToken,
}

impl ReplicaService {
    pub fn new(replica: Arc<Replica>, stop: CancellationToken) -> ReplicaService {
        // Deadlines are read on the node's clock, the replica's.
        let clock = replica.env().clock.clone();
        ReplicaService { replica, admission: Admission { ring: None, clock }, stop }
    }

    /// Refuses calls planned on a ring older than `ring`'s view.
    pub fn with_fence(mut self, ring: Option<Arc<dyn Topology>>) -> ReplicaService {
        self.admission.ring = ring;
        self
    }
}

async fn get(
    replica: &Arc<Replica>,
    admission: &Admission,
    request: pb::GetRequest,
) -> Result<pb::GetResponse, Status> {
    let received = Instant::now();
    let pb::GetRequest { partition, key, with_history, caller, digest } = request;
    admission.check(caller.as_ref(), received)?;
    let key = key_from_pb(required(key, "key")?);
    let object = match with_history {
        true => replica.effective(partition, key).await?,
        false => replica.get(partition, key).await?,
    };
    Ok(match digest {
        true => pb::GetResponse { object: None, digest: Some(digest_to_pb(&Digest::of(&object))) },
        false => pb::GetResponse { object: Some(object_to_pb(&object)), digest: None },
    })
}

async fn coordinate(
    replica: &Arc<Replica>,
    admission: &Admission,
    request: pb::CoordinateRequest,
) -> Result<pb::CoordinateResponse, Status> {
    let received = Instant::now();
    let pb::CoordinateRequest { partition, key, context, mutation, caller } = request;
    admission.check(caller.as_ref(), received)?;
    let key = key_from_pb(required(key, "key")?);
    let mutation = mutation_from_pb(mutation)?;
    let object = replica.coordinate(partition, key, clock_from_pb(&context), mutation).await?;
    Ok(pb::CoordinateResponse { object: Some(object_to_pb(&object)) })
}

async fn merge(
    replica: &Arc<Replica>,
    admission: &Admission,
    request: pb::MergeRequest,
) -> Result<pb::MergeResponse, Status> {
    let received = Instant::now();
    let pb::MergeRequest { partition, key, object, hint_target, caller } = request;
    admission.check(caller.as_ref(), received)?;
    let key = key_from_pb(required(key, "key")?);
    let object = object_from_pb(required(object, "object")?)?;
    if hint_target.is_empty() {
        replica.merge(partition, key, object).await?;
    } else {
        if hint_target.len() > HINT_TARGET_MAX_BYTES {
            return Err(Status::invalid_argument(format!(
                "hint_target is {} bytes long, above the limit of {HINT_TARGET_MAX_BYTES} (a node id)",
                hint_target.len()
            )));
        }
        replica.merge_hinted(partition, key, object, crate::core::key::NodeId::new(hint_target)).await?;
    }
    Ok(pb::MergeResponse {})
}

async fn reap(
    replica: &Arc<Replica>,
    admission: &Admission,
    request: pb::ReapRequest,
) -> Result<pb::ReapResponse, Status> {
    let received = Instant::now();
    let pb::ReapRequest { partition, key, clock, caller } = request;
    admission.check(caller.as_ref(), received)?;
    let key = key_from_pb(required(key, "key")?);
    if clock.is_empty() {
        return Err(Status::invalid_argument("reap without a clock: only a tombstone is reaped"));
    }
    let reaped = replica.reap(partition, key, clock_from_pb(&clock)).await?;
    Ok(pb::ReapResponse { reaped })
}

/// At most this many actors in one Prune call (a clock's entries are far
/// fewer; a larger list is a bad peer).
const PRUNE_ACTORS_MAX: usize = 1024;

async fn prune(
    replica: &Arc<Replica>,
    admission: &Admission,
    request: pb::PruneRequest,
) -> Result<pb::PruneResponse, Status> {
    let received = Instant::now();
    let pb::PruneRequest { partition, key, clock, actors, caller } = request;
    admission.check(caller.as_ref(), received)?;
    let key = key_from_pb(required(key, "key")?);
    let clock = clock_from_pb(&clock);
    if clock.is_empty() || actors.is_empty() {
        return Err(Status::invalid_argument("prune without a clock or without actors: nothing to prune"));
    }
    if actors.len() > PRUNE_ACTORS_MAX {
        return Err(Status::invalid_argument(format!(
            "prune of {} actors, above the limit of {PRUNE_ACTORS_MAX}",
            actors.len()
        )));
    }
    let pruned = replica.prune(partition, key, clock, actors).await?;
    Ok(pb::PruneResponse { pruned })
}

/// One call from a stream: its own span (a child of the caller's, when
/// traces are exported) and the same per-method metrics as a unary call.
async fn serve_call(replica: Arc<Replica>, admission: Admission, request: pb::CallRequest) -> pb::CallResponse {
    let pb::CallRequest { id, traceparent, call } = request;
    let method = match &call {
        Some(Call::Get(_)) => "Replica/Get",
        Some(Call::Coordinate(_)) => "Replica/Coordinate",
        Some(Call::Merge(_)) => "Replica/Merge",
        Some(Call::Reap(_)) => "Replica/Reap",
        Some(Call::Prune(_)) => "Replica/Prune",
        None => "Replica/Calls",
    };
    let span = tracing::info_span!(target: crate::telemetry::RPC_SPANS, "grpc.server", otel.kind = "server", rpc.method = method);
    propagation::set_parent_from_traceparent(&span, &traceparent);
    let started = Instant::now();
    let result = async {
        match call {
            // Repeating a read is harmless: a large answer is asked for again,
            // unary, rather than sent down the stream.
            Some(Call::Get(r)) => get(&replica, &admission, r).await.map(|answer| {
                if answer.encoded_len() > STREAM_MESSAGE_MAX_BYTES {
                    CallResult::UseUnary(pb::UseUnary {})
                } else {
                    CallResult::Get(answer)
                }
            }),
            Some(Call::Coordinate(r)) => coordinate(&replica, &admission, r).await.map(CallResult::Coordinate),
            Some(Call::Merge(r)) => merge(&replica, &admission, r).await.map(CallResult::Merge),
            Some(Call::Reap(r)) => reap(&replica, &admission, r).await.map(CallResult::Reap),
            Some(Call::Prune(r)) => prune(&replica, &admission, r).await.map(CallResult::Prune),
            None => Err(Status::invalid_argument("call request without a call")),
        }
    }
    .instrument(span)
    .await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::grpc_server(method, metrics::code_name(code), started.elapsed().as_secs_f64());
    let result = result.unwrap_or_else(|status| {
        let ring_epoch =
            status.metadata().get(RING_EPOCH_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        CallResult::Error(pb::CallError {
            code: status.code() as i32,
            message: status.message().to_owned(),
            ring_epoch,
        })
    });
    pb::CallResponse { id, result: Some(result) }
}

/// Serves one `Calls` stream: reads requests while fewer than
/// [`STREAM_CALLS_IN_FLIGHT`] are running (beyond that, HTTP/2 flow control
/// holds the caller back), runs each as its own task, so that one busy peer's
/// calls use every core, and sends each answer as soon as it is ready. The
/// answer stream ends once reading has stopped and every call is answered.
async fn serve_calls(
    replica: Arc<Replica>,
    admission: Admission,
    mut incoming: Streaming<pb::CallRequest>,
    answers: mpsc::Sender<Result<pb::CallResponse, Status>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(STREAM_CALLS_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        // Biased (a fixed polling order) so that a simulated run replays.
        let request = tokio::select! {
            biased;
            // Shutting down: answer what is running, take nothing new. The
            // caller sees the stream end and opens a new one elsewhere.
            () = stop.cancelled() => return,
            message = incoming.next() => match message {
                Some(Ok(request)) => request,
                // The caller closed its side (answer what is running, then
                // end), or the stream broke (nobody is left to answer).
                None | Some(Err(_)) => return,
            },
        };
        let (replica, admission, answers) = (Arc::clone(&replica), admission.clone(), answers.clone());
        let env = replica.env().clone();
        env.spawn(async move {
            let answer = serve_call(replica, admission, request).await;
            // A closed channel: the caller is gone.
            let _ = answers.send(Ok(answer)).await;
            drop(slot);
        });
    }
}

type CallStream = Pin<Box<dyn Stream<Item = Result<pb::CallResponse, Status>> + Send>>;

#[async_trait]
impl ReplicaRpc for ReplicaService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        get(&self.replica, &self.admission, request.into_inner()).await.map(Response::new)
    }

    async fn coordinate(
        &self,
        request: Request<pb::CoordinateRequest>,
    ) -> Result<Response<pb::CoordinateResponse>, Status> {
        coordinate(&self.replica, &self.admission, request.into_inner()).await.map(Response::new)
    }

    async fn merge(&self, request: Request<pb::MergeRequest>) -> Result<Response<pb::MergeResponse>, Status> {
        merge(&self.replica, &self.admission, request.into_inner()).await.map(Response::new)
    }

    async fn reap(&self, request: Request<pb::ReapRequest>) -> Result<Response<pb::ReapResponse>, Status> {
        reap(&self.replica, &self.admission, request.into_inner()).await.map(Response::new)
    }

    async fn prune(&self, request: Request<pb::PruneRequest>) -> Result<Response<pb::PruneResponse>, Status> {
        prune(&self.replica, &self.admission, request.into_inner()).await.map(Response::new)
    }

    type CallsStream = CallStream;

    async fn calls(&self, request: Request<Streaming<pb::CallRequest>>) -> Result<Response<CallStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_CALLS_IN_FLIGHT);
        self.replica.env().spawn(serve_calls(
            Arc::clone(&self.replica),
            self.admission.clone(),
            request.into_inner(),
            tx,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
