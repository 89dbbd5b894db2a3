//! The command line: the node's flags ([`NodeArgs`], which config merges
//! with the environment and the config file) and one subcommand per tool.
//! It sits above config and the tools, so that neither the server's settings
//! nor anything else in the server depends on `bench` or `devcluster`.

use clap::{Parser, Subcommand};

use crate::admin_cli::AdminArgs;
use crate::bench::BenchArgs;
use crate::certs::CertsArgs;
use crate::config::NodeArgs;
use crate::devcluster::DevClusterArgs;

#[derive(Debug, Parser)]
#[command(
    name = "vinzclortho",
    version,
    about = "Vinz Clortho: a Dynamo-style distributed key-value store.",
    long_about = "Vinz Clortho: a Dynamo-style distributed key-value store.\n\n\
        Without a subcommand, starts a node (same as `vinzclortho serve`):\n  \
        vinzclortho -a 127.0.0.1:8880 -p 64\n\n\
        Every option can also be set with a VINZCLORTHO_* environment variable \
        or in a TOML file given with --config (keys are the long option names \
        with underscores: n_val = 3). Flags beat the environment, which beats \
        the file.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node (the default when no subcommand is given).
    Serve(Box<NodeArgs>),
    /// Start a local cluster of several node processes on this machine.
    DevCluster(DevClusterArgs),
    /// Drive a cluster (or etcd, or Redis) with a workload and report
    /// throughput and latency; --check verifies every read.
    Bench(Box<BenchArgs>),
    /// Ask a running cluster about itself and change it, through any node's
    /// HTTP API: status, members, ring, claims, preference lists, backups.
    Admin(AdminArgs),
    /// Create the cluster's CA and node certificates for mutual TLS between
    /// nodes (--tls-ca, --tls-cert, --tls-key).
    Certs(CertsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_subcommand_is_the_same_as_no_subcommand() {
        let cli = Cli::try_parse_from(["vinzclortho", "serve", "-a", "127.0.0.1:1"]).unwrap();
        match cli.command {
            Some(Command::Serve(args)) => assert_eq!(args.address.as_deref(), Some("127.0.0.1:1")),
            other => panic!("{other:?}"),
        }
    }
}
