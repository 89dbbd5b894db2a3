//! Real `vinzclortho` processes for integration tests: start on port 0, wait
//! for the readiness line (with a deadline), kill -9, restart on the same
//! data directory. Every process is killed when its handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vinzclortho");
const READY_PREFIX: &str = "vinzclortho listening on http://";
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct NodeProc {
    child: Child,
    /// HOST:PORT of the HTTP API.
    pub http: String,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl NodeProc {
    /// Starts a node with `args` plus `--data-dir`; waits until it serves.
    pub fn start(data_dir: &Path, args: &[&str]) -> NodeProc {
        Self::try_start(data_dir, args, &[]).unwrap_or_else(|e| panic!("node did not start: {e}"))
    }

    pub fn try_start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<NodeProc, String> {
        std::fs::create_dir_all(data_dir).unwrap();
        let stderr_path = data_dir.with_extension("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--data-dir").arg(data_dir).stdout(Stdio::piped()).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn vinzclortho");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(http) => return Ok(NodeProc { child, http, data_dir: data_dir.to_owned(), stderr_path }),
                Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                        return Err(format!("exited with {status}: {log}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err("no readiness line before the deadline".into());
                    }
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `timeout` for exit.
    pub fn signal_and_wait(mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never waits forever.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}
