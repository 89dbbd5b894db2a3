//! Serving the HTTP API: plain HTTP, or HTTPS only when the node has an HTTP
//! certificate (`--http-tls-cert`, `--http-tls-key`).
//!
//! With TLS, connections come from `rpc::tls::accept`, the accept loop the
//! cluster port uses: each handshake runs in a task of its own with a
//! timeout, so a client that connects and stalls never holds up the next
//! accept, and a refused one is logged and counted
//! (`vinzclortho_http_tls_handshake_failures_total{reason}`). Every
//! handshake takes the certificate current at that moment, so a rotated
//! certificate (reloaded by `services::certificates`) applies to new
//! connections without a restart. There is no plaintext fallback on a TLS
//! port: a plain HTTP request gets a TLS alert and a closed connection.
//! axum's own server loop serves what the handshakes yield (HTTP/1.1, or
//! HTTP/2 when the client chose it by ALPN), with its graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::rpc::tls::{self, HttpTls, Port};

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish: over TLS with `tls`, plain HTTP without.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<HttpTls>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?;
            axum::serve(listener, router).with_graceful_shutdown(shutdown).await
        }
    }
}

/// Connections past their TLS handshake, as axum's server takes them. The
/// accept loop stops when this is dropped (the server stopped).
pub struct TlsListener {
    handshaken: mpsc::Receiver<TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Arc<HttpTls>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let handshaken = tls::accept(listener, Port::Http, move || tls.server_config());
        Ok(TlsListener { handshaken, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(stream) => {
                let remote = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                (stream, remote)
            }
            // The accept loop ends only when this listener is dropped; until
            // then there is always a next connection to wait for.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
