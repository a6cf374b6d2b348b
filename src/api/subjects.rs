//! A platform's view of one of its users: account totals and coarse records.

use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::extract::{Caller, Subject};
use super::views::{parse_cursor, AccountView, ErasureReceiptView, RecordPageView};
use super::{json, ApiError, AppState};
use crate::store::Purpose;

#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/account",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Totals by kind and month, points balance", body = super::views::AccountView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn account(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
) -> Result<Response, ApiError> {
    let account = state
        .store
        .account(&caller.access(Purpose::Accounting), &subject)
        .await?;
    Ok(json(StatusCode::OK, &AccountView::from(&account)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/records",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("limit" = Option<u32>, Query, description = "Records per page (at most 500)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Coarse records within retention, newest first", body = super::views::RecordPageView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn records(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(super::extract::query_error)?;
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| ApiError::Malformed("cursor is not one this service issued".into()))?)
        }
    };
    let page = state
        .store
        .records(
            &caller.access(Purpose::Accounting),
            &subject,
            query.limit.unwrap_or(50),
            cursor,
        )
        .await?;
    Ok(json(StatusCode::OK, &RecordPageView::from(&page)))
}

/// Destructive routes take no query string: `?dry_run=1` must not be
/// mistaken for a harmless request.
pub(super) fn no_query(query: Option<String>) -> Result<(), ApiError> {
    match query {
        Some(q) if !q.is_empty() => Err(ApiError::Malformed("this route takes no query parameters".into())),
        _ => Ok(()),
    }
}

/// `DELETE /v1/subjects/{id}`: erasure by crypto-shredding; returns the
/// erasure receipt.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Erased by crypto-shredding; the erasure receipt", body = super::views::ErasureReceiptView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_query(query)?;
    let receipt = state
        .store
        .erase_subject(&caller.access(Purpose::Accounting), &subject)
        .await?;
    Ok(json(StatusCode::OK, &ErasureReceiptView::from(&receipt)))
}
