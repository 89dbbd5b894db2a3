//! Vinz Clortho: a Dynamo-style distributed key-value store.
//!
//! # Layout
//!
//! * [`core`]: pure logic, no I/O: keys, version vectors and siblings
//!   (`vclock`, `object`), the context token, the ring, quorum accounting,
//!   anti-entropy's hash trees (`tictac`), a certificate's name (`x509`),
//!   covering sets for listings (`coverage`), secondary-index terms and
//!   queries (`index`).
//! * [`storage`]: the `Store` trait, RocksDB and in-memory engines, the
//!   versioned on-disk format, each replica's secondary index.
//! * [`replica`]: what a node does with a key it holds (Riak's vnode), and
//!   what a call to it carries and how it can fail (`replica::call`).
//! * [`coordinator`]: one client operation -> replica calls -> a quorum
//!   decision, through the `ReplicaClient` trait; listings and 2i queries
//!   over a covering set (`coordinator::coverage`).
//! * [`membership`]: the members and the ring as this node sees them.
//! * [`api`]: the HTTP edge (axum); [`https`] serves it, over TLS when the
//!   node has an HTTP certificate.
//! * [`rpc`]: the gRPC edge (tonic); protobuf types live only there; mutual
//!   TLS between nodes (`rpc::tls`).
//! * [`config`], [`telemetry`], [`error`]: settings, logging, error codes.
//! * [`node`]: the composition root. What a node takes from outside (clock,
//!   randomness, blocking work: [`env`]; how peers are reached:
//!   `rpc::peers::Connector`) is passed in as a `node::Host`, so the
//!   deterministic simulator (`tests/sim.rs`) runs the same nodes.
//! * [`watched`]: a watched value whose waiters wake in order.
//! * [`services`]: background workers (gossip, handoff, hinted handoff,
//!   anti-entropy, certificate reloads).
//! * [`devcluster`]: `vinzclortho dev-cluster`, a local multi-process cluster.
//! * [`bench`]: `vinzclortho bench`, the load generator and its checks.
//! * [`admin_cli`]: `vinzclortho admin`, the operator's CLI (an HTTP client
//!   of `/admin/...`).
//! * [`certs`]: `vinzclortho certs`, the cluster CA and node certificates.
//! * [`http_client`]: the tools' HTTP client (plain or HTTPS with `--cacert`),
//!   and a starting node's, to find a member's cluster port from its HTTP port.
//! * [`cli`]: the command line: the node's flags and the tools' subcommands.
//!
//! Dependencies point one way, down this list's layers: `core` uses no other
//! module, `storage` only `core` and `error`, the replica role nothing above
//! it, only the binary uses the tools. `tests/architecture.rs` holds the
//! allowed edges and fails on any other, and on any cycle.
//!
//! # A PUT, top to bottom
//!
//! 1. `api::store::put_value` parses the key, the context token and `?w=`,
//!    reads the body within the size limit.
//! 2. `coordinator::Coordinator::put` finds the key's partition and
//!    preference list on the ring and asks one replica of the key to stamp
//!    the write (`ReplicaClient::coordinate`): `rpc::replica_client` calls
//!    this node's replica in process, or another node's over gRPC
//!    (`rpc::replica_server` on the other side).
//! 3. `replica::Replica::coordinate` locks the key, reads the stored object,
//!    applies `core::object::Object::update` (drop what the context covers,
//!    add the value under a fresh dot) and writes it back through
//!    `storage::Store::put` (RocksDB: `storage::rocks`).
//! 4. The coordinator sends the new object to the other replicas
//!    (`ReplicaClient::merge` -> `Replica::merge` -> `Object::merge`) and
//!    answers once W of them acknowledged (`core::quorum::Quorum`).
//!
//! A GET asks all N replicas (`ReplicaClient::get`), merges the first R
//! answers (`core::quorum::ReadQuorum`), answers, and repairs stale replicas
//! in the background.

pub mod admin_cli;
pub mod api;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod core;
pub mod devcluster;
pub mod env;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod http_client;
pub mod https;
pub mod membership;
pub mod node;
pub mod replica;
pub mod rpc;
pub mod services;
pub mod storage;
pub mod telemetry;
pub mod watched;
