//! Background work, off the request path: gossip, data movement, hinted
//! handoff, anti-entropy, tombstone reaping and certificate reloads. Each
//! service is a [`Worker`]: `work` does one unit and says whether more is
//! waiting, `wait_for_work` sleeps until there may be some. [`spawn`] runs
//! it until the node's one cancellation token fires.

pub mod anti_entropy;
pub mod certificates;
pub mod gossip;
pub mod handoff;
pub mod hints;
pub mod reaper;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Did something; call `work` again right away.
    Busy,
    /// Nothing to do until `wait_for_work` returns.
    Idle,
}

#[async_trait]
pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    async fn work(&mut self) -> WorkerState;
    async fn wait_for_work(&mut self);
}

/// Runs `worker` as a task of the node `env` belongs to.
pub fn spawn(mut worker: impl Worker, cancel: CancellationToken, env: &Env) -> JoinHandle<()> {
    env.spawn(async move {
        let name = worker.name();
        tracing::debug!(worker = name, "worker started");
        loop {
            let state = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                state = worker.work() => state,
            };
            if state == WorkerState::Idle {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = worker.wait_for_work() => {}
                }
            }
        }
        tracing::debug!(worker = name, "worker stopped");
    })
}
