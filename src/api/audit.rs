//! Routes for auditors (and platforms, for their own entries): signed
//! checkpoints, entries, inclusion and consistency proofs, the public key,
//! and reduction reports.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::Caller;
use super::views::{EntryView, ReportView};
use super::{json, ApiError, AppState};
use crate::store::{parse_month, Purpose};

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(super::extract::query_error)
}

fn text(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET /v1/audit/checkpoint`: a signed note (C2SP tlog-checkpoint) covering
/// every entry committed before the request.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoint",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A signed checkpoint (C2SP note)", content_type = "text/plain", body = String),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn checkpoint(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    state.store.may_read_audit(&caller.access(Purpose::Accounting))?;
    Ok(text(state.store.checkpoint().await?))
}

/// `GET /v1/audit/public-key`: the checkpoint verifier key (C2SP vkey).
#[utoipa::path(
    get,
    path = "/v1/audit/public-key",
    tag = "audit",
    responses(
        (status = 200, description = "The checkpoint verifier key (C2SP vkey)", content_type = "text/plain", body = String),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn public_key(State(state): State<AppState>) -> Response {
    text(format!("{}\n", state.store.audit_public_key()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    from: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/audit/entries?from=&limit=`: entries from sequence number
/// `from` (default 1), at most `limit` (default 100, at most 1000).
#[utoipa::path(
    get,
    path = "/v1/audit/entries",
    tag = "audit",
    params(
        ("from" = Option<u64>, Query, description = "First sequence number [default 1]"),
        ("limit" = Option<u32>, Query, description = "Entries per page [default 100]"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of audit entries", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "Out of range", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryResult<EntriesQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let entries = state
        .store
        .audit_page(
            &caller.access(Purpose::Accounting),
            q.from.unwrap_or(1),
            q.limit.unwrap_or(100),
        )
        .await?;
    let next = entries.last().map(|e| e.seq + 1);
    let entries: Vec<EntryView> = entries.iter().map(EntryView::from).collect();
    Ok(json(StatusCode::OK, &json!({ "entries": entries, "next_from": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: u64,
}

/// `GET /v1/audit/proofs/inclusion?index=&size=`: leaf `index` (entry
/// `index + 1`) in the tree of `size` entries (RFC 9162 §2.1.3).
#[utoipa::path(
    get,
    path = "/v1/audit/proofs/inclusion",
    tag = "audit",
    params(
        ("index" = u64, Query, description = "The entry's sequence number"),
        ("size" = u64, Query, description = "The tree size"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An inclusion proof", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "Out of range", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryResult<InclusionQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (leaf, proof) = state
        .store
        .inclusion_proof(&caller.access(Purpose::Accounting), q.index, q.size)
        .await?;
    let proof: Vec<String> = proof.iter().map(hex::encode).collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "index": q.index, "size": q.size, "leaf_hash": hex::encode(leaf), "proof": proof }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/audit/proofs/consistency?from=&to=` (RFC 9162 §2.1.4).
#[utoipa::path(
    get,
    path = "/v1/audit/proofs/consistency",
    tag = "audit",
    params(
        ("from" = u64, Query, description = "The older tree size"),
        ("to" = u64, Query, description = "The newer tree size"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A consistency proof", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "Out of range", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryResult<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let proof = state
        .store
        .consistency_proof(&caller.access(Purpose::Accounting), q.from, q.to)
        .await?;
    let proof: Vec<String> = proof.iter().map(hex::encode).collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "from": q.from, "to": q.to, "proof": proof }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/reports/reductions?from=YYYY-MM&to=YYYY-MM`.
#[utoipa::path(
    get,
    path = "/v1/reports/reductions",
    tag = "audit",
    params(
        ("from" = Option<String>, Query, description = "First month, YYYY-MM"),
        ("to" = Option<String>, Query, description = "Last month, YYYY-MM"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Aggregate reductions, small cells suppressed", body = super::views::ReportView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn reductions(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryResult<ReportQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let month = |s: Option<String>, default: i64, name: &str| match s {
        None => Ok(default),
        Some(s) => parse_month(&s).ok_or_else(|| ApiError::Malformed(format!("{name} must be a month as YYYY-MM"))),
    };
    let (from, to) = (month(q.from, 0, "from")?, month(q.to, 999_912, "to")?);
    // The reconciliation accounting owes auditors, not statistics beyond
    // it: every recorded behaviour counts (docs/points.md).
    let report = state
        .store
        .reductions(&caller.access(Purpose::Accounting), from, to)
        .await?;
    Ok(json(StatusCode::OK, &ReportView::from(&report)))
}
