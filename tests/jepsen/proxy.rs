//! A userspace TCP proxy in front of every node's cluster port, for delay
//! and jitter on links (this kernel has no `netem`). Nodes advertise the
//! proxy's address (`--cluster-advertise`), so all node-to-node traffic into
//! node i passes through proxy i; its delay is 0 until a fault sets it.
//! Bytes keep their order: jitter never reorders a TCP stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Default)]
struct Link {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

pub struct Proxy {
    /// Owns every proxied connection; they end when it is dropped.
    _runtime: tokio::runtime::Runtime,
    links: Vec<Arc<Link>>,
    /// What node i advertises: the proxy's listening address for it.
    pub addresses: Vec<String>,
}

impl Proxy {
    /// Listens on `ip` (ports picked by the OS), one port per target.
    pub fn start(ip: &str, targets: &[String]) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut links = Vec::new();
        let mut addresses = Vec::new();
        for target in targets {
            let link = Arc::new(Link::default());
            let listener = runtime.block_on(TcpListener::bind(format!("{ip}:0"))).expect("proxy listener");
            addresses.push(listener.local_addr().unwrap().to_string());
            runtime.spawn(accept(listener, target.clone(), Arc::clone(&link)));
            links.push(link);
        }
        Proxy { _runtime: runtime, links, addresses }
    }

    /// Delays traffic to and from node `i` by `delay_ms` plus up to
    /// `jitter_ms` of random extra, per chunk, each way.
    pub fn set_delay(&self, i: usize, delay_ms: u64, jitter_ms: u64) {
        self.links[i].delay_ms.store(delay_ms, Ordering::Relaxed);
        self.links[i].jitter_ms.store(jitter_ms, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        for i in 0..self.links.len() {
            self.set_delay(i, 0, 0);
        }
    }
}

async fn accept(listener: TcpListener, target: String, link: Arc<Link>) {
    while let Ok((client, _)) = listener.accept().await {
        let (target, link) = (target.clone(), Arc::clone(&link));
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, Arc::clone(&link)));
            tokio::spawn(pipe(server_read, client_write, link));
        });
    }
}

/// Copies one direction, holding each chunk until its delivery time.
async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, link: Arc<Link>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = link.delay_ms.load(Ordering::Relaxed);
        let jitter = link.jitter_ms.load(Ordering::Relaxed);
        let extra = if jitter > 0 { rand::rng().random_range(0..=jitter) } else { 0 };
        let at = (Instant::now() + Duration::from_millis(delay + extra)).max(last);
        last = at;
        if tx.send((at, buffer[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
