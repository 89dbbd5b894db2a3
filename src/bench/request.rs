//! One request of a worker and what came of it, whatever the target: the
//! vocabulary `target` (REST, etcd) and `redis` (RESP) both speak, so neither
//! needs the other's types.

use bytes::Bytes;
use http::header::HeaderValue;

use super::check::Outcome;
use super::workload::Op;

/// One request of a worker.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub op: Op,
    pub key: &'a str,
    /// The value of a write.
    pub value: Bytes,
    /// Vinz Clortho's causal context from the last read or write of the key.
    pub context: Option<HeaderValue>,
}

/// An answered request. Contexts are Vinz Clortho's; other targets have none.
#[derive(Debug, Clone)]
pub enum Reply {
    Value(Bytes, Option<HeaderValue>),
    Siblings(Vec<Bytes>, Option<HeaderValue>),
    NotFound(Option<HeaderValue>),
    Done(Option<HeaderValue>),
}

impl Reply {
    pub fn context(&self) -> Option<&HeaderValue> {
        match self {
            Reply::Value(_, c) | Reply::Siblings(_, c) | Reply::NotFound(c) | Reply::Done(c) => c.as_ref(),
        }
    }
}

/// A request that got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("status {0}: {1}")]
    Status(u16, String),
    #[error("no answer within the timeout")]
    Timeout,
    /// Nothing was sent: the connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection broke while the request was in flight.
    #[error("connection failed: {0}")]
    Connection(String),
    /// An answer this client does not understand.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// Redis answered with an error reply.
    #[error("error reply: {0}")]
    Rejected(String),
    /// A Vinz Clortho node shutting down refused the request before acting
    /// on it (a 503 with `x-vinzclortho-shutting-down`).
    #[error("the node is shutting down: {0}")]
    ShuttingDown(String),
}

impl Failure {
    /// A non-success answer: its status and the start of its body (every
    /// HTTP target's, so none needs another's module for it).
    pub fn status(status: http::StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        Failure::Status(status.as_u16(), text.trim().to_owned())
    }

    /// The name errors are counted under.
    pub fn kind(&self) -> String {
        match self {
            Failure::Status(code, _) => format!("status {code}"),
            Failure::Timeout => "timeout".into(),
            Failure::Connect(_) => "connect".into(),
            Failure::Connection(_) => "connection".into(),
            Failure::Protocol(_) => "protocol".into(),
            Failure::Rejected(_) => "error reply".into(),
            Failure::ShuttingDown(_) => "shutting down".into(),
        }
    }

    /// Whether `--failover` sends the request on to the next node: the node
    /// did nothing with it (a refused connection, a node shutting down), or
    /// the connection broke before an answer (see [`Failure::may_have_acted`]).
    pub fn fails_over(&self) -> bool {
        matches!(self, Failure::Connect(_) | Failure::ShuttingDown(_) | Failure::Connection(_))
    }

    /// Whether a write that failed so, and was then sent to another node,
    /// may have landed on the first one too.
    pub fn may_have_acted(&self) -> bool {
        self.outcome() == Outcome::Unknown
    }

    /// What a failed write may have done: a 4xx, a refused connection or an
    /// error reply stored nothing; anything else may have.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Status(code, _) if (400..500).contains(code) => Outcome::Refused,
            Failure::Connect(_) | Failure::Rejected(_) | Failure::ShuttingDown(_) => Outcome::Refused,
            _ => Outcome::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_whether_a_write_may_have_landed() {
        assert_eq!(Failure::Status(409, String::new()).outcome(), Outcome::Refused);
        assert_eq!(Failure::Status(503, String::new()).outcome(), Outcome::Unknown);
        assert_eq!(Failure::Connect("refused".into()).outcome(), Outcome::Refused);
        assert_eq!(Failure::Timeout.outcome(), Outcome::Unknown);
        assert_eq!(Failure::Connection("reset".into()).outcome(), Outcome::Unknown);
        assert_eq!(Failure::Status(503, String::new()).kind(), "status 503");
        assert_eq!(Failure::ShuttingDown("a".into()).outcome(), Outcome::Refused);
    }

    #[test]
    fn failover_retries_what_a_node_did_not_answer_and_says_what_may_have_landed() {
        for f in [Failure::Connect("refused".into()), Failure::ShuttingDown("a".into())] {
            assert!(f.fails_over() && !f.may_have_acted(), "{f}");
        }
        let broken = Failure::Connection("closed before the answer".into());
        assert!(broken.fails_over() && broken.may_have_acted());
        for f in [Failure::Status(503, String::new()), Failure::Timeout, Failure::Status(400, String::new())] {
            assert!(!f.fails_over(), "{f}: the node answered, or may still act");
        }
    }
}
