//! The composition root: builds a node from its config, top to bottom.
//!
//! storage -> node metadata (actor, partitions) -> membership (ring) ->
//! replica -> replica client -> coordinator -> HTTP router -> serve until
//! `shutdown` resolves. Listeners and the shutdown future are passed in, so
//! tests bind port 0 and stop nodes when they like.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::api::{self, Api, Limits, NodeInfo};
use crate::config::{Config, StorageKind};
use crate::coordinator::{Coordinator, LocalReplicas, QuorumSettings};
use crate::core::key::NodeId;
use crate::membership::{Membership, MembershipError};
use crate::replica::Replica;
use crate::storage::meta::{self, MetaError};
use crate::storage::{MemoryStore, RocksOptions, RocksStore, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Membership(#[from] MembershipError),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A node's wired-up parts, before any socket.
pub struct App {
    pub router: Router,
    pub api: Arc<Api>,
}

pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    Ok(match config.storage {
        StorageKind::Memory => Arc::new(MemoryStore::new()),
        StorageKind::Rocksdb => {
            Arc::new(RocksStore::open(&config.data_dir, &RocksOptions { sync_writes: config.sync_writes })?)
        }
    })
}

/// Wires a node around `store`; `node` is the name it is known by.
pub fn build(config: &Config, node: NodeId, store: Arc<dyn Store>) -> Result<App, NodeError> {
    let meta = meta::load_or_init(&*store, config.partitions, crate::config::DEFAULT_PARTITIONS, rand::random())?;
    let membership =
        Arc::new(Membership::open(node.clone(), config.cluster_address.clone(), meta.partitions, Arc::clone(&store))?);
    let replica = Arc::new(Replica::new(Arc::clone(&store), meta.actor, config.siblings));
    let replicas = Arc::new(LocalReplicas::new(node, replica));
    let settings = QuorumSettings { n_val: config.n_val, r: config.r, w: config.w, timeout: config.request_timeout };
    let coordinator = Arc::new(Coordinator::new(Arc::clone(&membership), replicas, settings));
    let api = Arc::new(Api {
        coordinator,
        membership,
        store,
        limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
        info: NodeInfo { cluster_address: config.cluster_address.clone(), partitions: meta.partitions },
    });
    Ok(App { router: api::router(Arc::clone(&api)), api })
}

/// Binds the HTTP address from the config.
pub async fn bind(config: &Config) -> Result<TcpListener, NodeError> {
    TcpListener::bind(&config.address)
        .await
        .map_err(|e| NodeError::Listen { address: config.address.clone(), reason: e.to_string() })
}

/// Runs a node on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    if let Some(join) = &config.join {
        return Err(NodeError::Unsupported(format!(
            "-j {join}: joining a cluster is not available in this version; start without -j for a single-node cluster"
        )));
    }
    let local: SocketAddr = listener.local_addr().map_err(NodeError::Serve)?;
    let node = NodeId::new(advertised(&config.address, local));
    let store = open_store(&config)?;
    let app = build(&config, node.clone(), store)?;
    tracing::info!(
        %node,
        cluster_address = %config.cluster_address,
        partitions = app.api.info.partitions,
        storage = app.api.store.engine(),
        data_dir = %config.data_dir.display(),
        "node started"
    );
    // One line on stdout for scripts and tests that wait for readiness.
    println!("vinzclortho listening on http://{node}");
    axum::serve(listener, app.router).with_graceful_shutdown(shutdown).await.map_err(NodeError::Serve)?;
    tracing::info!(%node, "node stopped");
    Ok(())
}

/// The name a node advertises: the configured address, except that port 0
/// becomes the port the OS picked.
fn advertised(configured: &str, bound: SocketAddr) -> String {
    match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => configured.to_owned(),
    }
}
