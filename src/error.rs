//! One small vocabulary of error kinds, mapped once to HTTP and once to gRPC.
//!
//! Each module keeps its own `thiserror` enum that says what went wrong in its
//! own terms and implements [`HasErrorCode`]; the HTTP and gRPC edges only
//! ever look at the code (`api::error`, `rpc::status::error_status`).
//! Messages of client errors (4xx) go back to the client verbatim, and so do
//! those of the server errors a client can act on (503 unavailable, 507 out
//! of space); the details of internal errors (500) are logged, and the client
//! gets a generic line.

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed: bad parameter, bad context, bad body.
    BadRequest,
    /// No usable credential: missing, malformed, unknown, expired or revoked
    /// (client security, `core::security`).
    Unauthorized,
    /// A valid credential without the grant the request needs.
    Forbidden,
    NotFound,
    /// The request conflicts with the key's or the cluster's state (too many
    /// siblings, a claim that would leave no owner).
    Conflict,
    PayloadTooLarge,
    UriTooLong,
    /// A conditional request's condition does not hold (`If-Match`,
    /// `If-None-Match: *` on a write, `If-Unmodified-Since`).
    PreconditionFailed,
    /// A write's Content-Type is not a media type.
    UnsupportedMediaType,
    /// A feature of Riak's API this store does not have (MapReduce, search,
    /// data types other than counters).
    NotImplemented,
    /// Not enough replicas answered (quorum not met, peers down, timeout).
    Unavailable,
    /// A replica's disk is full.
    InsufficientStorage,
    /// A bug or an unexpected I/O failure.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::PreconditionFailed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotImplemented,
        ErrorCode::Unavailable,
        ErrorCode::InsufficientStorage,
        ErrorCode::Internal,
    ];

    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::BadRequest => tonic::Code::InvalidArgument,
            ErrorCode::Unauthorized => tonic::Code::Unauthenticated,
            ErrorCode::Forbidden => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::Conflict => tonic::Code::FailedPrecondition,
            ErrorCode::PayloadTooLarge | ErrorCode::UriTooLong => tonic::Code::OutOfRange,
            ErrorCode::PreconditionFailed => tonic::Code::FailedPrecondition,
            ErrorCode::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorCode::NotImplemented => tonic::Code::Unimplemented,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::InsufficientStorage => tonic::Code::ResourceExhausted,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// Server-side failures whose details are logged rather than returned.
    pub fn is_internal(self) -> bool {
        self == ErrorCode::Internal
    }
}

/// Implemented by every module error so the edges can map it.
pub trait HasErrorCode: std::error::Error {
    fn code(&self) -> ErrorCode;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_an_error_status() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            assert!(status.is_client_error() || status.is_server_error(), "{code:?}");
            assert_ne!(code.grpc_code(), tonic::Code::Ok);
            assert_eq!(code.is_internal(), status == StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}
