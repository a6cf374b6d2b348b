//! `POST /v1/subjects/{id}/console-links`: a single-use link that opens the
//! person's privacy center (see `crate::console`). The platform has
//! authenticated its user and hands them the link; the service never learns
//! who they are.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::extract::{Caller, Subject};
use super::{json, ApiError, AppState};
use crate::store::{Purpose, CONSOLE_IDLE_MINUTES, CONSOLE_LINK_MINUTES, CONSOLE_MAX_MINUTES};

#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/console-links",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A single-use console link, shown once: its token opens a session within valid_minutes", body = Object),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    super::subjects::no_query(query)?;
    let link = state
        .store
        .issue_console_link(&caller.access(Purpose::Accounting), &subject)
        .await?;
    let expires_at = super::rfc3339(link.expires_at)?;
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "path": format!("/console/open/{}", link.token),
            "token": link.token,
            "expires_at": expires_at,
            "valid_minutes": CONSOLE_LINK_MINUTES,
            "session_idle_minutes": CONSOLE_IDLE_MINUTES,
            "session_max_minutes": CONSOLE_MAX_MINUTES,
            "audit_seq": link.audit_seq,
        }),
    ))
}
