//! The service's error answers: `{"error": "<one line naming the field>"}` with a status, and how an
//! engine error maps to one.

use crate::mechanism::parse_json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llm_auction_engine::EngineError;
use llm_auction_engine::served::DEADLINE;
use serde_json::json;

/// An error answer: a status and a one-line message.
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with `message`.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::new(status_of(&e), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The status of an auction's error: the caller's input 400, a deadline 504, a cancellation 503,
/// a remote server 502, anything else 500.
pub(crate) fn status_of(e: &EngineError) -> StatusCode {
    match e.root() {
        EngineError::Aborted(r) if r == DEADLINE => StatusCode::GATEWAY_TIMEOUT,
        EngineError::Aborted(_) => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Remote { .. } => StatusCode::BAD_GATEWAY,
        _ if e.is_caller_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body as UTF-8 text (a body over the limit: its rejection's status, 413).
pub(crate) fn body_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad("body: not UTF-8"))
}

/// One JSON value of type `T`, errors naming the field.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    parse_json(text).map_err(|e| ApiError::bad(format!("{e:#}")))
}
