//! A platform's view of one of its users: account totals and coarse records.

use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::extract::{Caller, Subject};
use super::views::{parse_cursor, AccountView, ErasureReceiptView, RecordPageView};
use super::{json, ApiError, AppState};
use crate::store::Purpose;

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

pub async fn records(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed(format!("query string: {}", e.body_text())))?;
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
