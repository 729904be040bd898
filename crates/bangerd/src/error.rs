//! Errors as the API returns them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_api::{ErrorBody, ErrorKind, OPERATION_HEADER};

/// A failure that becomes an [`ErrorBody`] on the wire.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(kind, message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Wraps an error with its whole cause chain.
    pub fn from_error(kind: ErrorKind, error: &(dyn std::error::Error + 'static)) -> Self {
        Self(ErrorBody::from_error(kind, error))
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// Adds a cause under the message.
    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.0.causes.push(cause.into());
        self
    }

    pub fn with_operation(mut self, operation: &str) -> Self {
        self.0
            .operation
            .get_or_insert_with(|| operation.to_string());
        self
    }

    /// Puts a context message on top; the old message becomes the first cause.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let old = std::mem::replace(&mut self.0.message, message.into());
        self.0.causes.insert(0, old);
        self
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        // An ApiError wrapped in anyhow keeps its kind and hint.
        if let Some(api) = error.downcast_ref::<ApiError>() {
            return ApiError(api.0.clone());
        }
        let mut body = ErrorBody::new(ErrorKind::Internal, error.to_string());
        body.causes = error.chain().skip(1).map(|c| c.to_string()).collect();
        ApiError(body)
    }
}

impl From<banger_store::StoreError> for ApiError {
    fn from(error: banger_store::StoreError) -> Self {
        ApiError::from_error(ErrorKind::Internal, &error)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let operation = self.0.operation.clone();
        let mut response = (status, axum::Json(self.0)).into_response();
        if let Some(value) = operation.and_then(|op| HeaderValue::from_str(&op).ok()) {
            response.headers_mut().insert(OPERATION_HEADER, value);
        }
        response
    }
}
