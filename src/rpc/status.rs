//! Errors across the wire, both ways.
//!
//! Every gRPC server of ours answers an error with [`error_status`]: the one
//! code vocabulary of `crate::error`, mapped once, with the details of
//! internal errors logged here and never sent (as the HTTP edge does in
//! `api::error`). Replica calls (`From<ReplicaError>`), partition transfers
//! and membership calls all go through it. A client turns the `Status` of a
//! replica call back into a
//! [`ReplicaError`] so that the coordinator, and then the HTTP edge, answer as
//! if the error had happened locally: a remote "too many siblings" is still a
//! 409, a remote full disk still a 507. A status that says the peer did not
//! answer (connect failure, timeout, reset) becomes
//! [`ReplicaError::Unreachable`]: the quorum logic treats that node as down.
//! So does a refusal by the peer's identity check (`identity`): whoever
//! answers at that address is not the node the call was meant for, so that
//! node was not reached, and the write does not count a copy there.

use tonic::{Code, Status};

use super::identity;
use crate::core::key::NodeId;
use crate::error::{ErrorCode, HasErrorCode};
use crate::replica::ReplicaError;

/// What a caller sees instead of an internal error's details.
const INTERNAL_MESSAGE: &str = "internal error on the answering node; details are in its log";

/// The status a server of ours answers `error` with: the gRPC code of its
/// [`ErrorCode`], and its message, except for an internal error (a failed
/// disk, a bug), whose details stay in this node's log: they name paths and
/// records that are none of the caller's business.
pub fn error_status<E: HasErrorCode + ?Sized>(error: &E) -> Status {
    let code = error.code();
    if code.is_internal() {
        tracing::error!(error = %error, "call failed; the caller gets a generic message");
        return Status::new(code.grpc_code(), INTERNAL_MESSAGE);
    }
    Status::new(code.grpc_code(), error.to_string())
}

/// Lets replica and transfer servers answer with `?`.
impl From<ReplicaError> for Status {
    fn from(error: ReplicaError) -> Status {
        error_status(&error)
    }
}

/// The error a failed call to `node` means to this node.
pub fn replica_error_from_status(node: &NodeId, status: Status) -> ReplicaError {
    if status.code() == Code::Aborted
        && let Some(epoch) =
            status.metadata().get(super::replica_server::RING_EPOCH_HEADER).and_then(|v| v.to_str().ok()?.parse().ok())
    {
        return ReplicaError::StaleRing { node: node.clone(), epoch };
    }
    if identity::is_refusal(&status) {
        return ReplicaError::Unreachable { node: node.clone(), reason: status_reason(&status), maybe_applied: false };
    }
    if is_transport_failure(&status) {
        let maybe_applied = !could_not_connect(&status);
        return ReplicaError::Unreachable { node: node.clone(), reason: status_reason(&status), maybe_applied };
    }
    ReplicaError::Remote {
        node: node.clone(),
        code: error_code_from_grpc(status.code()),
        message: status.message().into(),
    }
}

/// True when the status says the peer gave no usable answer, rather than
/// that it answered with an error.
///
/// `Unknown` is what tonic reports for transport failures it cannot classify
/// ("service was not ready", an unexpected h2 error); our servers never send
/// it. A status carrying a `source` was built on this side from a transport
/// error: statuses decoded from a peer's trailers have none.
fn is_transport_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown)
        || std::error::Error::source(status).is_some()
}

/// True when the status says no connection could be made, so the call
/// never reached the peer: a refused or failed connect, found as an I/O
/// error in the source chain, or by tonic's message for a connect error
/// (tonic keeps only the message of those).
fn could_not_connect(status: &Status) -> bool {
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable | ErrorKind::HostUnreachable
            )
        {
            return true;
        }
        source = error.source();
    }
    status.message().contains("tcp connect error")
}

fn status_reason(status: &Status) -> String {
    let message = if status.message().is_empty() { status.code().description() } else { status.message() };
    match std::error::Error::source(status) {
        Some(source) => format!("{message}: {source}"),
        None => message.to_owned(),
    }
}

/// The inverse of [`ErrorCode::grpc_code`]. Lossy where that mapping is not
/// one to one (`UriTooLong` comes back as `PayloadTooLarge`); codes our
/// servers never send count as internal errors of the peer.
pub fn error_code_from_grpc(code: Code) -> ErrorCode {
    match code {
        Code::InvalidArgument => ErrorCode::BadRequest,
        Code::NotFound => ErrorCode::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => ErrorCode::Conflict,
        Code::OutOfRange => ErrorCode::PayloadTooLarge,
        Code::ResourceExhausted => ErrorCode::InsufficientStorage,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorCode::Unavailable,
        // Client credentials are checked at the HTTP edge only; a peer
        // refusing a node-to-node call is not the client's fault.
        Code::Ok
        | Code::Unknown
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    fn node() -> NodeId {
        NodeId::new("127.0.0.1:8001")
    }

    #[test]
    fn replica_errors_become_statuses() {
        // (error, expected gRPC code, message sent to the peer contains)
        let cases = [
            (ReplicaError::TooManySiblings { count: 3, limit: 2 }, Code::FailedPrecondition, "3 siblings"),
            (ReplicaError::Storage(StorageError::NoSpace("disk".into())), Code::ResourceExhausted, "out of space"),
            (ReplicaError::UnknownNode(node()), Code::Unavailable, "127.0.0.1:8001"),
            (ReplicaError::Storage(StorageError::Io("secret path".into())), Code::Internal, INTERNAL_MESSAGE),
            (ReplicaError::Storage(StorageError::Corrupt("secret".into())), Code::Internal, INTERNAL_MESSAGE),
            (
                ReplicaError::Remote { node: node(), code: ErrorCode::BadRequest, message: "bad".into() },
                Code::InvalidArgument,
                "bad",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(message), "{:?} lacks {message:?}", status.message());
            assert!(!status.message().contains("secret"), "internal details leaked: {:?}", status.message());
        }
    }

    #[test]
    fn statuses_become_replica_errors() {
        // (code the peer answered, expected error code; None = unreachable)
        let cases = [
            (Code::InvalidArgument, Some(ErrorCode::BadRequest)),
            (Code::NotFound, Some(ErrorCode::NotFound)),
            (Code::FailedPrecondition, Some(ErrorCode::Conflict)),
            (Code::Aborted, Some(ErrorCode::Conflict)),
            (Code::OutOfRange, Some(ErrorCode::PayloadTooLarge)),
            (Code::ResourceExhausted, Some(ErrorCode::InsufficientStorage)),
            (Code::Internal, Some(ErrorCode::Internal)),
            (Code::Unimplemented, Some(ErrorCode::Internal)),
            (Code::DataLoss, Some(ErrorCode::Internal)),
            (Code::Unavailable, None),
            (Code::DeadlineExceeded, None),
            (Code::Cancelled, None),
            (Code::Unknown, None),
        ];
        for (code, expected) in cases {
            let error = replica_error_from_status(&node(), Status::new(code, "why"));
            match (expected, &error) {
                (Some(expected), ReplicaError::Remote { node: n, code: got, message }) => {
                    assert_eq!((n, *got, message.as_str()), (&node(), expected, "why"), "{code:?}");
                    assert_eq!(error.code(), expected);
                }
                (None, ReplicaError::Unreachable { node: n, reason, .. }) => {
                    assert_eq!((n, reason.as_str()), (&node(), "why"), "{code:?}");
                    assert_eq!(error.code(), ErrorCode::Unavailable);
                }
                _ => panic!("{code:?} became {error:?}"),
            }
        }
    }

    #[test]
    fn an_identity_refusal_is_unreachable_not_a_conflict() {
        let refusal = identity::Refusal::WrongNode { expected: NodeId::new("other"), got: node().to_string() };
        let error = replica_error_from_status(&node(), refusal.to_status());
        match &error {
            ReplicaError::Unreachable { reason, .. } => assert!(reason.contains("meant for node"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// A local transport error wrapping a status, as hyper and h2 errors do.
    #[derive(Debug)]
    struct Wrapped(Status);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connection reset")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_status_built_from_a_local_transport_error_is_unreachable() {
        // Internal on its own would be the peer's answer; with a source it
        // was made here from a broken connection.
        let status = Status::from_error(Box::new(Wrapped(Status::internal("h2 protocol error"))));
        assert_eq!(status.code(), Code::Internal);
        let error = replica_error_from_status(&node(), status);
        assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let error = replica_error_from_status(&node(), Status::from_error(Box::new(io)));
        assert!(matches!(error, ReplicaError::Unreachable { .. }), "{error:?}");
    }

    /// Every code survives the trip server -> wire -> client, except where
    /// gRPC has no distinct code (`UriTooLong`) and `Unavailable`, which a
    /// client cannot tell from a dead peer and reports as unreachable.
    /// Client credentials (`Unauthorized`, `Forbidden`) are checked at the
    /// HTTP edge and never cross between nodes: a peer that answers with
    /// them is a server-side fault, not the client's.
    #[test]
    fn error_codes_round_trip_through_grpc() {
        for code in ErrorCode::ALL {
            if matches!(code, ErrorCode::Unauthorized | ErrorCode::Forbidden) {
                assert_eq!(error_code_from_grpc(code.grpc_code()), ErrorCode::Internal);
                continue;
            }
            let back = error_code_from_grpc(code.grpc_code());
            // Riak API refusals made at the HTTP edge: they never cross
            // between nodes, and map to the nearest code of the same class.
            let expected = match code {
                ErrorCode::UriTooLong => ErrorCode::PayloadTooLarge,
                ErrorCode::PreconditionFailed => ErrorCode::Conflict,
                ErrorCode::UnsupportedMediaType => ErrorCode::BadRequest,
                ErrorCode::NotImplemented => ErrorCode::Internal,
                _ => code,
            };
            assert_eq!(back, expected, "{code:?}");
            assert_eq!(back.http_status().as_u16() / 100, code.http_status().as_u16() / 100, "{code:?}");
        }
    }
}
