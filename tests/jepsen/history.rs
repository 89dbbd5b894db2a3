//! What the workload did and saw: one record per operation.

use std::collections::BTreeMap;
use std::time::Duration;

/// How an operation ended, from the client's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged. For reads: the values returned (empty = not found).
    Ok(Vec<String>),
    /// Refused before anything could be applied (4xx): certainly not applied.
    Failed,
    /// Timed out, connection lost, or 5xx: may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A PUT of `value`, with the context of a read that returned `seen`
    /// (empty and no context for a blind write). `after_delete`: that read
    /// found a tombstone, so the context also covers what a delete saw.
    Write {
        value: String,
        seen: Vec<String>,
        after_delete: bool,
    },
    /// A DELETE with the context of a read that returned `seen`.
    Delete {
        seen: Vec<String>,
    },
    Read,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub node: usize,
    pub key: String,
    pub kind: Kind,
    /// Since the start of the run.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
    /// Fallbacks that took part, from the answer's
    /// `X-VinzClortho-Fallbacks` (0 without an answer): with one, R + W > N
    /// no longer promises that reads see the write (sloppy quorum).
    pub fallbacks: usize,
}

/// The `X-VinzClortho-Fallbacks` header of an answer (0 when absent).
pub const FALLBACKS_HEADER: &str = "x-vinzclortho-fallbacks";

pub fn fallbacks_of(value: Option<&str>) -> usize {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A fault window, for the report and for excusing checks it may break.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub name: String,
    pub start: Duration,
    pub end: Duration,
    /// Faults that may legitimately lose a replica's data (a wiped disk,
    /// a restored snapshot, a power loss).
    pub loses_data: bool,
    /// A membership change (claim, join, replacement): from the request
    /// until every node saw the ring settle, plus the sweep that follows.
    pub membership: bool,
    /// Nodes cut off from the majority, if any (for availability figures).
    pub minority: Vec<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<FaultWindow>,
    /// The converged value set of every key after healing.
    pub final_state: BTreeMap<String, Vec<String>>,
}

/// The values of a read answered 300, by the load generator's parser of
/// our `multipart/mixed` bodies (nothing for a body it cannot parse, which
/// the checker then sees as a read of no value). Both workloads use it.
pub fn multipart_values(content_type: &str, body: &str) -> Vec<String> {
    vinzclortho::bench::target::multipart_values(content_type, body.as_bytes())
        .map(|values| values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
        .unwrap_or_default()
}
