//! Routes anyone may call: health and the methodology in force.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{json, AppState};

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The service is up", body = Object),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// The methodology in force, with every factor's source and the digest of
/// the loaded policy set.
#[utoipa::path(
    get,
    path = "/v1/methodology",
    tag = "operations",
    responses(
        (status = 200, description = "The methodology in force, with sources and the policy digest", body = Object),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn methodology(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "policy_digest": state.store.policies().digest.to_string(),
            "methodology": state.store.policies().methodology,
        }),
    )
}
