//! The HTTP edge's part of a clean shutdown (`node::run`, on SIGTERM).
//!
//! From [`Drain::begin`] on, every request that arrives (`/ping` included,
//! so a load balancer's health check fails at once) is answered 503 with
//! [`SHUTTING_DOWN_HEADER`] before anything runs: nothing was read, written
//! or forwarded, so a client may send it, a write included, to another node.
//! Requests already in flight run to their end; [`Drain::drained`] completes
//! when none is left. Every answer from then on says `Connection: close`
//! (HTTP/1.1), so clients do not reuse a connection to a node that is about
//! to close it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Version};
use tokio::sync::Notify;

use super::AppState;
use super::error::ApiError;
use crate::error::ErrorCode;

/// On a 503: the node is shutting down and did nothing with the request.
pub const SHUTTING_DOWN_HEADER: &str = "x-vinzclortho-shutting-down";

#[derive(Debug, Default)]
pub struct Drain {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// New requests are refused from now on.
    pub fn begin(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.idle.notify_waiters();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Requests admitted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Completes once [`Drain::begin`] was called and no admitted request is
    /// left.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check: a last request that ends between
            // the check and the wait still wakes us.
            idle.as_mut().enable();
            if self.stopping() && self.in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Admits a request, unless the node is shutting down. Counted first and
    /// checked after (both sequentially consistent), so that a request
    /// racing [`Drain::begin`] is either refused or seen by
    /// [`Drain::drained`], never neither.
    fn admit(&self) -> Option<Admitted<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(self);
        (!self.stopping()).then_some(admitted)
    }
}

/// One admitted request; uncounted when dropped (finished, or cancelled
/// because its client went away).
struct Admitted<'a>(&'a Drain);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.stopping() {
            self.0.idle.notify_waiters();
        }
    }
}

/// The middleware around every route.
pub async fn layer(State(api): State<AppState>, request: Request, next: Next) -> Response {
    let version = request.version();
    let mut response = match api.drain.admit() {
        Some(_admitted) => next.run(request).await,
        None => {
            let mut response = ApiError::new(
                ErrorCode::Unavailable,
                "this node is shutting down and did not act on the request; send it to another node",
            )
            .into_response();
            response.headers_mut().insert(SHUTTING_DOWN_HEADER, HeaderValue::from_static("true"));
            response
        }
    };
    // HTTP/2 has no Connection header (its streams end with the server's
    // GOAWAY); on HTTP/1.x it keeps the client off a closing connection.
    if api.drain.stopping() && version <= Version::HTTP_11 {
        response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
