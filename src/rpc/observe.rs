//! Server side of gRPC observability, as one tower layer around every
//! service: a span per call whose parent is the caller's trace context (so
//! replica work on this node joins the client's trace), and a metric per
//! call by method and status code.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

use crate::telemetry::{metrics, propagation};

#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

/// "/vinzclortho.replica.v1.Replica/Get" -> "Replica/Get".
fn method_name(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => format!("{}/{method}", service.rsplit('.').next().unwrap_or(service)),
        None => path.to_owned(),
    }
}

impl<S, B, R> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_name(request.uri().path());
        let span = tracing::info_span!(target: crate::telemetry::RPC_SPANS, "grpc.server", otel.kind = "server", rpc.method = %method);
        propagation::set_parent_from_headers(&span, request.headers());
        // The clone that was made ready handles this call (tower's rule).
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let call = {
            let _entered = span.enter();
            ready.call(request)
        };
        Box::pin(
            async move {
                let response = call.await;
                // Errors travel in the headers ("trailers-only"); a success
                // has no grpc-status header yet (it comes in the trailers).
                let code = match &response {
                    Ok(r) => r.headers().get("grpc-status").map(code_label).unwrap_or("OK"),
                    Err(_) => "UNKNOWN",
                };
                metrics::grpc_server(method, code, started.elapsed().as_secs_f64());
                response
            }
            .instrument(span),
        )
    }
}

fn code_label(value: &http::HeaderValue) -> &'static str {
    let code = value.to_str().ok().and_then(|v| v.parse::<i32>().ok()).unwrap_or(2);
    metrics::code_name(tonic::Code::from_i32(code))
}

#[cfg(test)]
mod tests {
    use super::method_name;

    #[test]
    fn method_names_drop_the_package() {
        assert_eq!(method_name("/vinzclortho.replica.v1.Replica/Get"), "Replica/Get");
        assert_eq!(method_name("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_name("/odd"), "odd");
    }
}
