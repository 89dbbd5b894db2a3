//! Errors at the HTTP edge: one type, built from any module error through its
//! [`ErrorCode`], rendered as a status code and a one-line text body.

use std::any::Any;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, HasErrorCode};

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: HasErrorCode> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError { code: e.code(), message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let body = if self.code.is_internal() {
            // Details stay in the log; the client learns only that it failed.
            tracing::error!(error = %self.message, "request failed");
            "internal error; the node's log has the details\n".to_owned()
        } else {
            format!("{}\n", self.message)
        };
        let mut response = (status, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
        // RFC 6750: a 401 names the scheme the client should use.
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such resource: {method} {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = format!("method {method} is not allowed on {}\n", uri.path());
    (StatusCode::METHOD_NOT_ALLOWED, body).into_response()
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::new(ErrorCode::Internal, format!("handler panicked: {what}")).into_response()
}
