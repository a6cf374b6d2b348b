//! A platform's view of one of its users: account totals and coarse records.

use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Caller, Subject};
use super::{json, ApiError, AppState};
use crate::store::{parse_cursor, Purpose};

pub async fn account(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
) -> Result<Response, ApiError> {
    let account = state
        .store
        .account(&caller.access(Purpose::Accounting), &subject)
        .await?;
    Ok(json(StatusCode::OK, &account))
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
    Ok(json(StatusCode::OK, &page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    format: Option<String>,
}

/// `GET /v1/subjects/{id}/export`: everything held on the person, as JSON
/// (`docs/export.schema.json`) or, with `?format=csv`, the records as CSV.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed(format!("query string: {}", e.body_text())))?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::Malformed("format is json (the default) or csv".into())),
    };
    let export = state
        .store
        .export(&caller.access(Purpose::Accounting), &subject)
        .await?;
    if !csv {
        return Ok(json(StatusCode::OK, &export));
    }
    let mut out =
        String::from("record_id,day,kind,variant,quantity,region,reduction_g,points,methodology_version,capped\r\n");
    for r in &export.records {
        let r = &r.record;
        let grams = serde_json::to_string(&r.reduction_g).unwrap_or_default();
        let fields = [
            r.record_id.clone(),
            r.day.clone(),
            r.kind.clone(),
            r.variant.clone().unwrap_or_default(),
            r.quantity.map(|q| q.to_string()).unwrap_or_default(),
            r.region.clone().unwrap_or_default(),
            grams,
            r.points.to_string(),
            r.methodology_version.clone(),
            r.capped.to_string(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}

/// Destructive routes take no query string: `?dry_run=1` must not be
/// mistaken for a harmless request.
pub(super) fn no_query(query: Option<String>) -> Result<(), ApiError> {
    match query {
        Some(q) if !q.is_empty() => Err(ApiError::Malformed("this route takes no query parameters".into())),
        _ => Ok(()),
    }
}

/// RFC 4180 quoting.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
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
    Ok(json(StatusCode::OK, &receipt))
}
