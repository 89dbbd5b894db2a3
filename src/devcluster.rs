//! `vinzclortho dev-cluster`: a local cluster of real node processes on one
//! machine, for trying things out. Node 0 creates (or, on a later run,
//! resumes) the cluster; the others join it through node 0. The nodes run
//! until Ctrl-C or SIGTERM, which is passed on to each of them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Args)]
pub struct DevClusterArgs {
    /// Number of nodes
    #[arg(short = 'n', long, default_value_t = 3)]
    pub nodes: u16,
    /// Host every node listens on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// HTTP port of node 0; node i uses this + i (and the cluster port is the
    /// HTTP port + 1000)
    #[arg(long, default_value_t = 8880)]
    pub base_port: u16,
    /// Partitions of a new cluster
    #[arg(short = 'p', long, default_value_t = 64)]
    pub partitions: u32,
    /// Parent of the nodes' data directories (node0, node1, ...)
    #[arg(long, default_value = "vinzclortho-data/dev-cluster")]
    pub data_dir: PathBuf,
    /// Storage engine of every node
    #[arg(long, default_value = "rocksdb")]
    pub storage: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    #[error("cannot start node {index}: {reason}")]
    Start { index: u16, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub async fn run(args: DevClusterArgs, shutdown: impl Future<Output = ()>) -> Result<(), DevClusterError> {
    if args.nodes == 0 || args.base_port.checked_add(args.nodes + 1000).is_none() {
        return Err(DevClusterError::Invalid(format!(
            "{} nodes from port {} do not fit in the port range",
            args.nodes, args.base_port
        )));
    }
    let exe = std::env::current_exe().map_err(|e| DevClusterError::Invalid(e.to_string()))?;
    let seed = format!("{}:{}", args.host, args.base_port + 1000);
    let mut children = Vec::new();
    for index in 0..args.nodes {
        let address = format!("{}:{}", args.host, args.base_port + index);
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["-a", &address, "-p", &args.partitions.to_string(), "--storage", &args.storage])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node{index}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if index > 0 {
            cmd.args(["-j", &seed]);
        }
        let mut child = cmd.spawn().map_err(|e| DevClusterError::Start { index, reason: e.to_string() })?;
        wait_ready(&mut child).await.map_err(|reason| DevClusterError::Start { index, reason })?;
        eprintln!("dev-cluster: node {index} serves http://{address}");
        children.push(child);
    }
    eprintln!(
        "dev-cluster: {} nodes up. Try:\n  curl -i -X PUT -d testvalue http://{host}:{port}/store/testkey\n  \
         curl -i http://{host}:{last}/store/testkey\n  curl -s http://{host}:{port}/admin/status\n\
         Ctrl-C stops the cluster; data stays in {dir}.",
        args.nodes,
        host = args.host,
        port = args.base_port,
        last = args.base_port + args.nodes - 1,
        dir = args.data_dir.display()
    );
    shutdown.await;
    eprintln!("dev-cluster: stopping");
    for child in &children {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on a child we spawned and still own.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    Ok(())
}

/// Waits for the node's readiness line (or its exit) for up to a minute.
async fn wait_ready(child: &mut Child) -> Result<(), String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("vinzclortho listening on") {
                return Ok(());
            }
        }
        Err("the node exited before it was ready (see its log above)".to_owned())
    };
    let result = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .unwrap_or_else(|_| Err("not ready after 60 s".to_owned()));
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    result
}
