//! The simulated network: every gRPC call between simulated nodes, and every
//! message frame of its streams, crosses it, and it decides each one's fate
//! from the run's seed: delivered after a delay, delayed by a retransmit,
//! or lost with the connection reset; links can be cut one way or both,
//! and a paused node's traffic waits until it resumes.
//!
//! A node's server is the real one (`rpc::server::in_process`: identity
//! checks, size limits, codecs); only the bytes' path is simulated. A call
//! is addressed by cluster address, as in a real node, so a restarted node
//! (a new incarnation) answers at the address of the old one, and whatever
//! the old incarnation still had in flight is cut.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use vinzclortho::env::Env;
use vinzclortho::rpc::peers::{Connection, ConnectionError, Connector, PeerError, Purpose};

/// How messages fare on a healthy link.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    /// Per message: delivered after `delay_ms.0..=delay_ms.1`.
    pub delay_ms: (u64, u64),
    /// Per message, in millionths: lost, and the connection with it.
    pub loss_ppm: u32,
    /// Per message, in millionths: lost once and retransmitted (TCP): a
    /// delay of 200 ms to 1 s.
    pub retransmit_ppm: u32,
}

impl Weather {
    pub const CALM: Weather = Weather { delay_ms: (0, 2), loss_ppm: 0, retransmit_ppm: 2_000 };
}

struct Host {
    incarnation: u64,
    /// `None` while the process starts (it may already call out).
    server: Option<(Connection, Env)>,
}

struct State {
    hosts: BTreeMap<String, Host>,
    /// (from, to) cluster addresses whose messages do not arrive.
    cut: BTreeSet<(String, String)>,
    /// Paused nodes: their messages, both ways, wait until then.
    paused: BTreeMap<String, Instant>,
    weather: Weather,
}

pub struct Net {
    state: Mutex<State>,
    rng: Arc<Mutex<StdRng>>,
    pub messages: std::sync::atomic::AtomicU64,
    /// With `SIM_TRACE`: one line per message, to find where two runs part.
    pub trace: Mutex<Vec<String>>,
    tracing: bool,
}

/// What happens to one message.
enum Fate {
    Arrives(Duration),
    /// Cut or lost: fails after this long (a reset, or a timeout).
    Fails(Duration, &'static str),
}

fn reset(reason: &str) -> Status {
    Status::unavailable(format!("simulated network: {reason}"))
}

impl Net {
    pub fn new(rng: Arc<Mutex<StdRng>>) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(State {
                hosts: BTreeMap::new(),
                cut: BTreeSet::new(),
                paused: BTreeMap::new(),
                weather: Weather::CALM,
            }),
            rng,
            messages: Default::default(),
            trace: Mutex::default(),
            tracing: std::env::var("SIM_TRACE").is_ok(),
        })
    }

    /// A process starts at `address` as `incarnation`: it may call out, and
    /// calls to it are refused until it serves.
    pub fn boot(&self, address: &str, incarnation: u64) {
        self.state.lock().unwrap().hosts.insert(address.to_owned(), Host { incarnation, server: None });
    }

    /// `address` now answers with `server`.
    /// `address` now answers with `server`, whose work records into `env`'s
    /// metrics recorder (the server runs in its callers' tasks).
    pub fn serve(&self, address: &str, incarnation: u64, server: Connection, env: Env) {
        if let Some(host) = self.state.lock().unwrap().hosts.get_mut(address)
            && host.incarnation == incarnation
        {
            host.server = Some((server, env));
        }
    }

    /// Nothing answers at `address` any more (the process died).
    pub fn unregister(&self, address: &str) {
        self.state.lock().unwrap().hosts.remove(address);
    }

    pub fn cut(&self, from: &str, to: &str) {
        self.state.lock().unwrap().cut.insert((from.to_owned(), to.to_owned()));
    }

    pub fn uncut(&self, from: &str, to: &str) {
        self.state.lock().unwrap().cut.remove(&(from.to_owned(), to.to_owned()));
    }

    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut.clear();
        state.paused.clear();
        state.weather = Weather::CALM;
    }

    pub fn set_weather(&self, weather: Weather) {
        self.state.lock().unwrap().weather = weather;
    }

    pub fn pause(&self, address: &str, until: Instant) {
        self.state.lock().unwrap().paused.insert(address.to_owned(), until);
    }

    pub fn resume(&self, address: &str) {
        self.state.lock().unwrap().paused.remove(address);
    }

    fn alive(state: &State, address: &str, incarnation: u64) -> bool {
        state.hosts.get(address).is_some_and(|h| h.incarnation == incarnation)
    }

    /// Decides one message's fate, from `from` (as `from_inc`) to `to` (as
    /// `to_inc`, when known), drawing from the run's random source.
    fn fate(&self, from: &str, from_inc: u64, to: &str, to_inc: Option<u64>) -> (Fate, Option<Instant>) {
        self.messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.tracing {
            let line = format!("{:?} {from}#{from_inc} -> {to}#{to_inc:?}", Instant::now());
            self.trace.lock().unwrap().push(line);
        }
        let state = self.state.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let held = [from, to].iter().filter_map(|a| state.paused.get(*a).copied()).max();
        if !Net::alive(&state, from, from_inc) {
            return (Fate::Fails(Duration::ZERO, "the sender is gone"), None);
        }
        if let Some(inc) = to_inc
            && !Net::alive(&state, to, inc)
        {
            return (Fate::Fails(Duration::ZERO, "connection reset: the peer is gone"), None);
        }
        if state.cut.contains(&(from.to_owned(), to.to_owned())) {
            // Nothing comes back: the caller notices by its own timeout, or
            // by the keepalive of a connection (a few seconds).
            return (Fate::Fails(Duration::from_millis(rng.random_range(1_000..6_000)), "timed out (cut)"), held);
        }
        let w = state.weather;
        if w.loss_ppm > 0 && rng.random_range(0..1_000_000) < w.loss_ppm {
            return (Fate::Fails(Duration::from_millis(rng.random_range(0..50)), "connection reset (loss)"), held);
        }
        let mut delay = Duration::from_millis(rng.random_range(w.delay_ms.0..=w.delay_ms.1));
        if w.retransmit_ppm > 0 && rng.random_range(0..1_000_000) < w.retransmit_ppm {
            delay += Duration::from_millis(rng.random_range(200..1_000));
        }
        (Fate::Arrives(delay), held)
    }

    fn server(&self, address: &str) -> Option<(u64, Connection, Env)> {
        let state = self.state.lock().unwrap();
        state.hosts.get(address).and_then(|h| {
            let (server, env) = h.server.clone()?;
            Some((h.incarnation, server, env))
        })
    }
}

/// Waits out a message's fate; `Err` if it does not arrive.
async fn travel(fate: Fate, held: Option<Instant>) -> Result<(), Status> {
    if let Some(until) = held {
        tokio::time::sleep_until(until).await;
    }
    match fate {
        Fate::Arrives(delay) => {
            tokio::time::sleep(delay).await;
            Ok(())
        }
        Fate::Fails(after, reason) => {
            tokio::time::sleep(after).await;
            Err(reset(reason))
        }
    }
}

/// How one node incarnation connects to the others.
pub struct SimConnector {
    pub net: Arc<Net>,
    pub from: String,
    pub incarnation: u64,
    /// Unary connections time out like tonic's endpoint timeout.
    pub request_timeout: Duration,
}

impl Connector for SimConnector {
    fn connect(&self, cluster_address: &str, purpose: Purpose) -> Result<Connection, PeerError> {
        let link = Link {
            net: Arc::clone(&self.net),
            from: self.from.clone(),
            from_inc: self.incarnation,
            to: cluster_address.to_owned(),
            timeout: (purpose == Purpose::Unary).then_some(self.request_timeout),
        };
        Ok(BoxCloneSyncService::new(link))
    }
}

#[derive(Clone)]
struct Link {
    net: Arc<Net>,
    from: String,
    from_inc: u64,
    to: String,
    timeout: Option<Duration>,
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl Service<Request> for Link {
    type Response = Response;
    type Error = ConnectionError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ConnectionError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let link = self.clone();
        let call = async move {
            let Some((to_inc, server, env)) = link.net.server(&link.to) else {
                // Nobody listens there: refused at once, as TCP does.
                let refused =
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "simulated: connection refused");
                return Err(ConnectionError::new(refused));
            };
            if link.net.tracing {
                link.net.trace.lock().unwrap().push(format!("call {}", request.uri().path()));
            }
            let (fate, held) = link.net.fate(&link.from, link.from_inc, &link.to, Some(to_inc));
            travel(fate, held).await.map_err(ConnectionError::new)?;
            let (parts, body) = request.into_parts();
            let body = SimBody::new(body, &link.net, (&link.from, link.from_inc), (&link.to, to_inc));
            let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
            let response = env.scoped(server.oneshot(request)).await?;
            let (fate, held) = link.net.fate(&link.to, to_inc, &link.from, Some(link.from_inc));
            travel(fate, held).await.map_err(ConnectionError::new)?;
            let (parts, body) = response.into_parts();
            let body = SimBody::new(body, &link.net, (&link.to, to_inc), (&link.from, link.from_inc));
            Ok(http::Response::from_parts(parts, tonic::body::Body::new(body)))
        };
        let timeout = self.timeout;
        Box::pin(async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .unwrap_or_else(|_| Err(ConnectionError::new(Status::cancelled("request timed out")))),
                None => call.await,
            }
        })
    }
}

/// A message body on its way: each frame meets its own fate, in order.
struct SimBody {
    inner: tonic::body::Body,
    net: Arc<Net>,
    from: (String, u64),
    to: (String, u64),
    /// A frame waiting out its delay.
    in_flight: Option<(Frame<Bytes>, Pin<Box<Sleep>>)>,
    /// A frame that will not arrive: the stream fails once this fires.
    failing: Option<(Status, Pin<Box<Sleep>>)>,
}

impl SimBody {
    fn new(inner: tonic::body::Body, net: &Arc<Net>, from: (&str, u64), to: (&str, u64)) -> SimBody {
        SimBody {
            inner,
            net: Arc::clone(net),
            from: (from.0.to_owned(), from.1),
            to: (to.0.to_owned(), to.1),
            in_flight: None,
            failing: None,
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some((_, sleep)) = &mut this.failing {
            ready!(sleep.as_mut().poll(cx));
            let (status, _) = this.failing.take().expect("checked");
            return Poll::Ready(Some(Err(status)));
        }
        if let Some((_, sleep)) = &mut this.in_flight {
            ready!(sleep.as_mut().poll(cx));
            let (frame, _) = this.in_flight.take().expect("checked");
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => frame,
        };
        let (fate, held) = this.net.fate(&this.from.0, this.from.1, &this.to.0, Some(this.to.1));
        let base = held.unwrap_or_else(Instant::now).max(Instant::now());
        match fate {
            Fate::Arrives(delay) => this.in_flight = Some((frame, Box::pin(tokio::time::sleep_until(base + delay)))),
            Fate::Fails(after, reason) => {
                this.failing = Some((reset(reason), Box::pin(tokio::time::sleep_until(base + after))))
            }
        }
        // Poll again so the new sleep registers this task's waker.
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.in_flight.is_none() && self.failing.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
