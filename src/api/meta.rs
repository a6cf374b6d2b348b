//! Routes anyone may call: health and the methodology in force.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{json, AppState, Problem};

/// Liveness: the process answers. It says nothing of the database, so a
/// failover never gets healthy servers restarted.
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

/// Readiness: the database accepts writes now. A load balancer sends
/// traffic only to ready servers; during a failover every server answers
/// 503 until its pool has found the new primary.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database accepts writes", body = Object),
        (status = 503, description = "The database does not accept writes now", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => json(StatusCode::OK, &json!({"status": "ready"})),
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            "the database is unreachable or not accepting writes; retry shortly",
        )
        .into_response(),
    }
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
