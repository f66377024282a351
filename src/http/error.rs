//! Every error the API answers with, and the one place they become HTTP responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::domain::ServiceError;

/// A request that ends in an error response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain outcome (auth, ownership, validation, conflicts, …).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The Content-Type gate (plain-text body, as the original).
    #[error("Unsupported Media Type")]
    UnsupportedMediaType,
    /// No such path.
    #[error("Not found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: String,
    },
    /// A route that needs an id was called without one (`Missing account_id`, …).
    #[error("Missing {0}")]
    MissingPathId(&'static str),
    /// A malformed request: bad paging, invalid JSON, wrongly typed fields.
    #[error("{0}")]
    BadRequest(String),
    /// The body exceeds `http.max_body_bytes`.
    #[error("Request body too large")]
    PayloadTooLarge,
    /// `event_data` exceeds `security.max_event_data_bytes`.
    #[error("event_data too large")]
    EventDataTooLarge,
}

/// The JSON error body `{"Error": message}`.
fn error_body(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    super::response::json(status, &json!({ "Error": message }))
}

impl ApiError {
    /// This error as the domain's, to travel with an operation that reports it only after
    /// authenticating on another node (the guard order puts authentication first).
    pub fn deferred(self) -> ServiceError {
        match self {
            ApiError::Service(e) => e,
            ApiError::BadRequest(message) => ServiceError::BadRequest(message),
            e @ (ApiError::PayloadTooLarge | ApiError::EventDataTooLarge) => {
                ServiceError::TooLarge(e.to_string())
            }
            other => ServiceError::Internal(format!("not a request error: {other}")),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Service(e) => match e {
                ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
                ServiceError::UsernameTaken | ServiceError::Conflict(_) => StatusCode::CONFLICT,
                ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                ServiceError::TooManyKeyResets { .. }
                | ServiceError::TooManyAuthFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Unavailable { .. } | ServiceError::NotServedHere { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ServiceError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            },
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MissingPathId(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge | ApiError::EventDataTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
        }
    }

    /// The response: `{"Error": ...}` JSON except for the original's two framework answers.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        match self {
            ApiError::UnsupportedMediaType => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"Unsupported Media Type")));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            ApiError::MethodNotAllowed { allow } => {
                let mut r = super::response::json(
                    status,
                    &json!({ "message": "The method is not allowed for the requested URL." }),
                );
                if let Ok(allow) = HeaderValue::from_str(&allow) {
                    r.headers_mut().insert(ALLOW, allow);
                }
                r
            }
            ApiError::Service(ServiceError::Internal(detail)) => {
                tracing::error!(error = %detail, "internal error");
                error_body(status, "Internal server error")
            }
            ApiError::Service(ref e @ ServiceError::InsufficientStorage(ref detail)) => {
                tracing::warn!(error = %detail, "write refused: storage failed");
                error_body(status, &e.to_string())
            }
            ApiError::Service(
                ref e @ (ServiceError::TooManyKeyResets { retry_after_secs }
                | ServiceError::TooManyAuthFailures { retry_after_secs }
                | ServiceError::Unavailable {
                    retry_after_secs, ..
                }),
            ) => {
                let mut r = error_body(status, &e.to_string());
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
            ApiError::Service(ref e @ ServiceError::NotServedHere { .. }) => {
                let mut r = error_body(status, &e.to_string());
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            other => error_body(status, &other.to_string()),
        }
    }
}
