//! What a node takes from the world outside its logic: the wall clock,
//! randomness, a place to run blocking work, and where its metrics go.
//!
//! A running node uses the real ones ([`Env::real`]); the deterministic
//! simulator (`tests/sim.rs`) hands each simulated node a clock that follows
//! the simulated time (with its own skew), a random source seeded from the
//! run's seed and [`Blocking::Inline`], so that one seed replays one run
//! exactly, and a metrics recorder of its own (every node of a simulated
//! cluster runs on one thread, where the process-wide recorder would mix
//! them). A node spawns its tasks through [`Env::spawn`], so that they
//! record into its recorder. Everything here is chosen once, at the composition root
//! (`node`), and passed down; nothing below reads the system clock or a
//! thread-local random source by itself. (Durations and timeouts use
//! `tokio::time`, which the simulator's runtime controls already.)

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Milliseconds since the Unix epoch, on this node's clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where random numbers come from: the thread's OS-seeded generator, or one
/// seeded generator a whole simulated run draws from in a fixed order.
#[derive(Clone, Default)]
pub enum Entropy {
    #[default]
    System,
    Seeded(Arc<Mutex<StdRng>>),
}

impl Entropy {
    pub fn seeded(seed: u64) -> Entropy {
        Entropy::Seeded(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    /// Runs `f` with the generator.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        match self {
            Entropy::System => f(&mut rand::rng()),
            Entropy::Seeded(rng) => f(&mut *rng.lock().expect("entropy lock")),
        }
    }

    pub fn u64(&self) -> u64 {
        self.with(|rng| rng.next_u64())
    }

    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut out = [0; N];
        self.with(|rng| rng.fill_bytes(&mut out));
        out
    }
}

/// How blocking work (a store call that may wait for the disk, a partition
/// scan) runs: on tokio's blocking pool, or inline on the calling task. The
/// simulator runs it inline: pool threads would finish in an order no seed
/// controls, and its stores never block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocking {
    #[default]
    Pool,
    Inline,
}

#[derive(Debug, thiserror::Error)]
#[error("a blocking task failed: {0}")]
pub struct BlockingFailed(String);

impl Blocking {
    /// Runs `f` and returns its result.
    pub async fn run<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, BlockingFailed> {
        match self {
            Blocking::Inline => Ok(f()),
            Blocking::Pool => tokio::task::spawn_blocking(f).await.map_err(|e| BlockingFailed(e.to_string())),
        }
    }
}

/// A metrics recorder a node records into instead of the process-wide one.
pub type Recorder = Arc<dyn metrics::Recorder + Send + Sync>;

/// A node's outside world, chosen at the composition root.
#[derive(Clone)]
pub struct Env {
    pub clock: Clock,
    pub entropy: Entropy,
    pub blocking: Blocking,
    /// `None`: the process-wide recorder.
    pub recorder: Option<Recorder>,
}

impl Env {
    /// The system clock, OS randomness, tokio's blocking pool and the
    /// process-wide metrics recorder.
    pub fn real() -> Env {
        Env { clock: Arc::new(system_clock), entropy: Entropy::System, blocking: Blocking::Pool, recorder: None }
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Spawns a task of this node: its metrics go to the node's recorder.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.recorder {
            // A running node: no wrapper, no extra allocation per task.
            None => tokio::spawn(task),
            Some(_) => tokio::spawn(self.scoped(task)),
        }
    }

    /// `task`, recording its metrics into this node's recorder while it runs.
    pub fn scoped<F: Future>(&self, task: F) -> Recorded<F> {
        Recorded { task: Box::pin(task), recorder: self.recorder.clone() }
    }

    /// Runs `f` recording into this node's recorder.
    pub fn recorded<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.recorder {
            Some(recorder) => metrics::with_local_recorder(&**recorder, f),
            None => f(),
        }
    }
}

/// A future whose metrics go to one node's recorder (see [`Env::scoped`]).
pub struct Recorded<F> {
    task: Pin<Box<F>>,
    recorder: Option<Recorder>,
}

impl<F: Future> Future for Recorded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        match &this.recorder {
            Some(recorder) => metrics::with_local_recorder(&**recorder, || this.task.as_mut().poll(cx)),
            None => this.task.as_mut().poll(cx),
        }
    }
}

impl Default for Env {
    fn default() -> Env {
        Env::real()
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entropy = match self.entropy {
            Entropy::System => "system",
            Entropy::Seeded(_) => "seeded",
        };
        f.debug_struct("Env").field("entropy", &entropy).field("blocking", &self.blocking).finish_non_exhaustive()
    }
}
