//! Routes anyone may call: health and the methodology in force.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{json, AppState};

pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// The methodology in force, with every factor's source and the digest of
/// the loaded policy set.
pub async fn methodology(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "policy_digest": state.store.policies().digest.to_string(),
            "methodology": state.store.policies().methodology,
        }),
    )
}
