//! The API key: with `--api-key-env`, every route but the playground page itself needs
//! `Authorization: Bearer <key>`. Keys are compared in constant time (as SHA-256 digests, so the
//! length does not leak either) and never logged.

use super::AppState;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Refuses requests without the key (401).
pub(crate) async fn require_key(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &st.api_key {
        let page = req.method() == axum::http::Method::GET && req.uri().path() == "/";
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = Sha256::digest(given.as_bytes())
            .ct_eq(&Sha256::digest(key.as_bytes()))
            .into();
        if !ok && !page {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (send Authorization: Bearer <key>)",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}
