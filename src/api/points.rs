//! Points routes: redeem, refund and list a person's redemptions. The
//! account (`subjects.rs`) shows the balance and what expires when.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{Caller, JsonBody, Subject};
use super::{json, ApiError, AppState};
use crate::domain::{escape_pointer, scrub, FieldError};
use crate::store::{Purpose, Redemption, RedemptionRequest, RedemptionStatus, StoreError, Transfer, TransferRequest};

/// A redemption as returned: the receipt of a redemption or refund, and a
/// line of the listing.
#[derive(Serialize)]
pub struct RedemptionView {
    redemption_id: String,
    reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    points: i64,
    redeemed_on: String,
    /// The balance the redemption left.
    balance_after: i64,
    audit_seq: u64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<RefundView>,
}

#[derive(Serialize)]
struct RefundView {
    refunded_on: String,
    balance_after: i64,
    audit_seq: u64,
}

impl From<&Redemption> for RedemptionView {
    fn from(r: &Redemption) -> Self {
        let refund = match r.status {
            RedemptionStatus::Redeemed => None,
            RedemptionStatus::Refunded { on, audit_seq, balance } => Some(RefundView {
                refunded_on: on.to_string(),
                balance_after: balance,
                audit_seq,
            }),
        };
        Self {
            redemption_id: hex::encode(r.redemption_id),
            reference: r.reference.clone(),
            description: r.description.clone(),
            points: r.points,
            redeemed_on: r.day.to_string(),
            balance_after: r.balance,
            audit_seq: r.audit_seq,
            status: if refund.is_some() { "refunded" } else { "redeemed" },
            refund,
        }
    }
}

/// The `points` and `reference` fields redemptions and transfers share.
fn points_and_reference(map: &serde_json::Map<String, Value>) -> Result<(i64, String), FieldError> {
    let points = map
        .get("points")
        .ok_or_else(|| FieldError::missing("/points"))?
        .as_i64()
        .filter(|p| *p > 0)
        .ok_or_else(|| FieldError::invalid("/points", "must be a positive whole number of points"))?;
    let reference = map
        .get("reference")
        .ok_or_else(|| FieldError::missing("/reference"))?
        .as_str()
        .ok_or_else(|| FieldError::invalid("/reference", "must be the platform's reference, a string"))?
        .to_owned();
    Ok((points, reference))
}

/// `{"points": N, "reference": "...", "description": "..."}`.
fn redemption_body(body: &Value) -> Result<RedemptionRequest, FieldError> {
    let Value::Object(map) = body else {
        return Err(FieldError::invalid(
            "",
            "must be an object: {\"points\": N, \"reference\": \"...\", \"description\": \"...\"}",
        ));
    };
    if let Some(other) = map
        .keys()
        .find(|k| !["points", "reference", "description"].contains(&k.as_str()))
    {
        return Err(FieldError::not_collected(format!("/{}", escape_pointer(other))));
    }
    let (points, reference) = points_and_reference(map)?;
    let description = match map.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(FieldError::invalid("/description", "must be a string")),
    };
    Ok(RedemptionRequest {
        points,
        reference,
        description,
    })
}

/// `POST /v1/subjects/{id}/redemptions`: 201 with the receipt; a retry
/// with the same reference and body gets the original receipt with 200.
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/redemptions",
    tag = "points",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    request_body(content = super::openapi::RedemptionRequestSchema, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Redeemed: the receipt", body = Object),
        (status = 200, description = "A retry of the same redemption: the original receipt", body = Object),
        (status = 409, description = "Not enough points, or the reference was used with another body", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn redeem(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut body = body;
    let parsed = redemption_body(&body);
    scrub(&mut body);
    let request = parsed?;
    let (redemption, replayed) = state
        .store
        .redeem(&caller.access(Purpose::Rewards), &subject, &request)
        .await?;
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json(status, &RedemptionView::from(&redemption)))
}

/// `POST /v1/subjects/{id}/redemptions/{reference}/refund`: reverses the
/// redemption with a credit line; a retry returns the same refund.
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/redemptions/{reference}/refund",
    tag = "points",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("reference" = String, Path, description = "The platform's reference of the redemption"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Refunded by a reversing line (a retry returns the same)", body = Object),
        (status = 404, description = "No such redemption or subject", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    Path(params): Path<std::collections::HashMap<String, String>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    super::subjects::no_query(query)?;
    let reference = params
        .get("reference")
        .ok_or_else(|| ApiError::Internal("route has no {reference} parameter".into()))?;
    let redemption = state
        .store
        .refund(&caller.access(Purpose::Rewards), &subject, reference)
        .await?;
    Ok(json(StatusCode::OK, &RedemptionView::from(&redemption)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// `GET /v1/subjects/{id}/redemptions?limit=N`: newest first.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/redemptions",
    tag = "points",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("limit" = Option<u32>, Query, description = "At most this many (up to 1000)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The person's redemptions, newest first", body = Object),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed(format!("query string: {}", e.body_text())))?;
    let redemptions = state
        .store
        .redemptions(
            &caller.access(Purpose::Accounting),
            &subject,
            query.limit.unwrap_or(100),
        )
        .await?;
    let views: Vec<RedemptionView> = redemptions.iter().map(RedemptionView::from).collect();
    Ok(json(StatusCode::OK, &json!({ "redemptions": views })))
}

/// A transfer's receipt, for the sending platform.
#[derive(Serialize)]
struct TransferView {
    transfer_id: String,
    link_id: String,
    points: i64,
    transferred_on: String,
    /// The sending account's balance after it.
    balance_after: i64,
    audit_seq: u64,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        Self {
            transfer_id: hex::encode(t.transfer_id),
            link_id: hex::encode(t.link_id),
            points: t.points,
            transferred_on: t.day.to_string(),
            balance_after: t.balance,
            audit_seq: t.audit_seq,
        }
    }
}

/// `{"points": N, "reference": "..."}`.
fn transfer_body(body: &Value) -> Result<TransferRequest, FieldError> {
    let Value::Object(map) = body else {
        return Err(FieldError::invalid(
            "",
            "must be an object: {\"points\": N, \"reference\": \"...\"}",
        ));
    };
    if let Some(other) = map.keys().find(|k| !["points", "reference"].contains(&k.as_str())) {
        return Err(FieldError::not_collected(format!("/{}", escape_pointer(other))));
    }
    let (points, reference) = points_and_reference(map)?;
    Ok(TransferRequest { points, reference })
}

/// `POST /v1/subjects/{id}/links/{link}/transfers`: moves points from this
/// platform's account to the person's linked account on the other (201); a
/// retry with the same reference and body gets the original receipt (200).
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/links/{link}/transfers",
    tag = "points",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("link" = String, Path, description = "The link id (32 hex digits)"),
    ),
    request_body(content = super::openapi::TransferRequestSchema, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Moved: the sending side's receipt", body = Object),
        (status = 200, description = "A retry of the same transfer: the original receipt", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or either account has not consented to interconnection or rewards", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No such link on this account, or no data held on this subject", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 409, description = "Not enough points, or the reference was used with another body", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn transfer(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    Path(params): Path<std::collections::HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut link_id = [0u8; 16];
    let parsed = params
        .get("link")
        .is_some_and(|l| hex::decode_to_slice(l, &mut link_id).is_ok());
    if !parsed {
        return Err(StoreError::LinkNotFound.into());
    }
    let mut body = body;
    let request = transfer_body(&body);
    scrub(&mut body);
    let request = request?;
    let (transfer, replayed) = state
        .store
        .transfer_points(&caller.access(Purpose::Rewards), &subject, link_id, &request)
        .await?;
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json(status, &TransferView::from(&transfer)))
}
