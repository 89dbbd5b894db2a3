//! Replica calls multiplexed on one `Replica/Calls` stream per peer.
//!
//! A unary gRPC call costs HEADERS frames both ways (HPACK encoding and
//! decoding), an HTTP/2 stream, trailers and a task on the server: under load
//! that framing cost more CPU than the store operation it carried
//! (docs/performance.md). On an open stream a call is one DATA frame each
//! way. Each peer gets one stream, opened on the first call and again after
//! it breaks or the peer moved to another address. Every call has an id, a
//! slot in `pending` and the caller's own deadline; answers are matched by
//! id, in any order.
//!
//! A stream belongs to a node id, not to an address: it is opened with that
//! id in its headers (`identity`), so a process that answers at the address
//! for another node refuses it, and two node ids at one address never share
//! a stream (one physical replica must not answer for two).
//!
//! When the stream breaks (the peer restarted, the connection died, its
//! keepalive timed out), every call waiting on it fails as a transport
//! failure, as unary calls on a broken connection would, and the next call
//! opens a new stream. A peer that does not know the method (an older
//! version) answers `Unimplemented`; the caller then falls back to unary
//! calls for that address.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::pb;
use super::pb::call_request::Call;
use super::pb::call_response::Result as CallResult;
use super::pb::replica_client::ReplicaClient as RawClient;
use super::peers::{MAX_MESSAGE_BYTES, PeerChannel, Unsupported};
use crate::core::key::NodeId;
use crate::env::Env;

/// Requests queued for one stream before callers wait (HTTP/2 flow control
/// holds the rest back when the peer reads slowly).
const QUEUE: usize = 1024;

/// The answer to one call: the peer's result (which may be a `CallError`),
/// or the status of a stream that failed before it answered.
pub type Answer = Result<CallResult, Status>;

/// How long a peer without `Replica/Calls` is called with unary calls
/// before the stream is tried again (it may have been upgraded).
const UNARY_ONLY_FOR: Duration = Duration::from_secs(60);

/// How this node calls each peer, by node id, with the address it was at.
pub struct CallStreams {
    streams: Mutex<HashMap<NodeId, (String, Arc<Stream>)>>,
    /// Peers that answered `Unimplemented` to `Replica/Calls` (an older
    /// version): called unary for [`UNARY_ONLY_FOR`].
    unary_only: Unsupported,
}

impl Default for CallStreams {
    fn default() -> CallStreams {
        CallStreams { streams: Mutex::default(), unary_only: Unsupported::new(UNARY_ONLY_FOR) }
    }
}

/// Where a call to a peer goes.
pub enum Route {
    Stream(Arc<Stream>),
    Unary,
}

impl CallStreams {
    /// The stream to `node` at `address` (a new one over `channel()` when
    /// there is none, it broke, or the node moved), or `Unary` for a peer
    /// without the method.
    pub fn route<E>(
        &self,
        node: &NodeId,
        address: &str,
        env: &Env,
        channel: impl FnOnce() -> Result<PeerChannel, E>,
    ) -> Result<Route, E> {
        // The live stream first: one lock per call on the hot path. A peer
        // recorded as unary-only has no stream (`unsupported_by` drops it).
        let mut streams = self.streams.lock().expect("call streams lock");
        if let Some((at, stream)) = streams.get(node)
            && at == address
            && !stream.broken.load(Ordering::Acquire)
        {
            return Ok(Route::Stream(Arc::clone(stream)));
        }
        if self.unary_only.recently(node, address) {
            return Ok(Route::Unary);
        }
        let stream = Stream::open(channel()?, env);
        streams.insert(node.clone(), (address.to_owned(), Arc::clone(&stream)));
        Ok(Route::Stream(stream))
    }

    /// `node` at `address` answered `Unimplemented`: call it unary for a while.
    pub fn unsupported_by(&self, node: &NodeId, address: &str) {
        self.unary_only.record(node, address);
        self.streams.lock().expect("call streams lock").remove(node);
    }
}

/// One open `Replica/Calls` stream.
pub struct Stream {
    outgoing: mpsc::Sender<pb::CallRequest>,
    /// Ordered, so that a broken stream fails its calls in one order
    /// (the simulator replays a seed exactly).
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    /// Set once the peer has accepted the stream (it serves the method).
    accepted: AtomicBool,
    /// Set once the stream has ended; the next call opens a new one.
    broken: AtomicBool,
    /// Why it ended (for the calls that find it closed).
    failure: Mutex<Option<Status>>,
}

impl Stream {
    /// Sends `call` on this stream and waits at most `deadline` for its answer.
    pub async fn call(&self, call: Call, traceparent: String, deadline: Duration) -> Answer {
        let (id, answer) = self.register()?;
        // Forgets the slot however this call ends (answer, timeout, or the
        // caller dropping it).
        let _slot = Slot { stream: self, id };
        let request = pb::CallRequest { id, traceparent, call: Some(call) };
        let exchange = async {
            self.outgoing.send(request).await.map_err(|_| self.closed())?;
            answer.await.map_err(|_| self.closed())?
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(format!("no answer within {deadline:?}"))),
        }
    }

    /// Whether the peer has accepted the stream: a call sent before that
    /// may come back `Unimplemented` from an older peer.
    pub fn accepted(&self) -> bool {
        self.accepted.load(Ordering::Acquire)
    }

    fn open(channel: PeerChannel, env: &Env) -> Arc<Stream> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stream = Arc::new(Stream {
            outgoing: tx,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        env.spawn(drive(Arc::downgrade(&stream), channel, rx));
        stream
    }

    fn register(&self) -> Result<(u64, oneshot::Receiver<Answer>), Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().expect("pending lock");
        // `fail` sets `broken` before it drains `pending` under this lock:
        // a slot added after the drain would never be answered.
        if self.broken.load(Ordering::Acquire) {
            return Err(self.closed());
        }
        pending.insert(id, tx);
        Ok((id, rx))
    }

    fn answer(&self, response: pb::CallResponse) {
        let waiting = self.pending.lock().expect("pending lock").remove(&response.id);
        // No slot: the caller gave up (timeout) or it is a stray id.
        if let Some(waiting) = waiting {
            let answer = response.result.ok_or_else(|| Status::internal("call response without a result"));
            let _ = waiting.send(answer);
        }
    }

    /// Marks the stream ended and fails every call still waiting on it.
    fn fail(&self, status: Status) {
        self.broken.store(true, Ordering::Release);
        *self.failure.lock().expect("failure lock") = Some(status.clone());
        let waiting: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("pending lock")).into_values().collect();
        for tx in waiting {
            let _ = tx.send(Err(status.clone()));
        }
    }

    fn closed(&self) -> Status {
        self.failure.lock().expect("failure lock").clone().unwrap_or_else(|| Status::unavailable("call stream closed"))
    }
}

struct Slot<'a> {
    stream: &'a Stream,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.stream.pending.lock().expect("pending lock").remove(&self.id);
    }
}

/// Runs one stream: opens it, hands each answer to its caller, and fails
/// the waiting calls when it ends. Holds the stream weakly: once no caller
/// and no pool holds it, the request side closes and the peer ends it.
async fn drive(stream: Weak<Stream>, channel: PeerChannel, requests: mpsc::Receiver<pb::CallRequest>) {
    let mut client = RawClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let status = match client.calls(ReceiverStream::new(requests)).await {
        Ok(response) => {
            match stream.upgrade() {
                Some(stream) => stream.accepted.store(true, Ordering::Release),
                None => return,
            }
            let mut answers = response.into_inner();
            loop {
                match answers.next().await {
                    Some(Ok(response)) => match stream.upgrade() {
                        Some(stream) => stream.answer(response),
                        None => return,
                    },
                    Some(Err(status)) => break status,
                    None => break Status::unavailable("the peer ended the call stream"),
                }
            }
        }
        Err(status) => status,
    };
    if let Some(stream) = stream.upgrade() {
        stream.fail(status);
    }
}

/// True when `status` says the peer does not serve `Replica/Calls`.
pub fn unsupported(status: &Status) -> bool {
    status.code() == Code::Unimplemented
}
