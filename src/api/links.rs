//! Linking a person's accounts across platforms: link codes, links, the
//! consolidated view. Every route acts for the `interconnection` purpose;
//! the store checks the consent of both sides.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::extract::{Caller, JsonBody, Subject};
use super::{json, ApiError, AppState};
use crate::domain::{escape_pointer, scrub, Milligrams};
use crate::store::{LinkView, Purpose, StoreError, Totals, LINK_CODE_MINUTES};

/// `POST /v1/subjects/{id}/link-codes`: a single-use code the person
/// carries to the other platform. Shown once; only its keyed hash is kept.
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/link-codes",
    tag = "links",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A single-use link code, shown once", body = Object),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn issue_code(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    super::subjects::no_query(query)?;
    let code = state
        .store
        .issue_link_code(&caller.access(Purpose::Interconnection), &subject)
        .await?;
    let expires_at = super::rfc3339(code.expires_at)?;
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "code": code.code,
            "expires_at": expires_at,
            "valid_minutes": LINK_CODE_MINUTES,
            "audit_seq": code.audit_seq,
        }),
    ))
}

/// The body of a redemption: `{"code": "..."}` and nothing else.
fn code_of(body: &Value) -> Result<Zeroizing<String>, crate::domain::FieldError> {
    use crate::domain::FieldError;
    let Value::Object(map) = body else {
        return Err(FieldError::invalid("", "must be an object: {\"code\": \"...\"}"));
    };
    if let Some(other) = map.keys().find(|k| *k != "code") {
        return Err(FieldError::not_collected(format!("/{}", escape_pointer(other))));
    }
    let code = map.get("code").ok_or_else(|| FieldError::missing("/code"))?;
    code.as_str()
        .map(|c| Zeroizing::new(c.to_owned()))
        .ok_or_else(|| FieldError::invalid("/code", "must be the link code as a string"))
}

#[derive(Serialize)]
struct LinkBody {
    link_id: String,
    /// The other platform's public name.
    platform: String,
    linked_on: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_seq: Option<u64>,
    /// Only in the consolidated view: whether the other side's totals are
    /// included (false once it no longer consents to interconnection).
    #[serde(skip_serializing_if = "Option::is_none")]
    consolidated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totals: Option<TotalsBody>,
}

#[derive(Serialize)]
struct TotalsBody {
    events: i64,
    reduction_g: Milligrams,
    points: i64,
}

impl From<&Totals> for TotalsBody {
    fn from(t: &Totals) -> Self {
        Self {
            events: t.events,
            reduction_g: t.reduction,
            points: t.points,
        }
    }
}

impl LinkBody {
    fn new(link: &LinkView, audit_seq: Option<u64>, consolidated: Option<bool>) -> Self {
        Self {
            link_id: hex::encode(link.link_id),
            platform: link.platform.clone(),
            linked_on: link.linked_on.to_string(),
            audit_seq,
            consolidated,
            totals: link.totals.as_ref().map(TotalsBody::from),
        }
    }
}

/// `POST /v1/subjects/{id}/links {"code"}`: links the caller's account with
/// the account that issued the code.
#[utoipa::path(
    post,
    path = "/v1/subjects/{id}/links",
    tag = "links",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    request_body(content = super::openapi::LinkRequestSchema, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Linked", body = Object),
        (status = 409, description = "Already linked with that platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "The code is not valid (unknown, used or expired), or a field is invalid", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
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
    let code = code_of(&body);
    scrub(&mut body);
    let code = code?;
    let (link, audit_seq) = state
        .store
        .redeem_link_code(&caller.access(Purpose::Interconnection), &subject, &code)
        .await?;
    Ok(json(StatusCode::CREATED, &LinkBody::new(&link, Some(audit_seq), None)))
}

/// `DELETE /v1/subjects/{id}/links/{link}`: unlinks at once, on both sides.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}/links/{link}",
    tag = "links",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("link" = String, Path, description = "The link id (32 hex digits)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Unlinked on both sides", body = Object),
        (status = 404, description = "No such link on this account", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn unlink(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    Path(params): Path<std::collections::HashMap<String, String>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    super::subjects::no_query(query)?;
    let mut link_id = [0u8; 16];
    let parsed = params
        .get("link")
        .is_some_and(|l| hex::decode_to_slice(l, &mut link_id).is_ok());
    if !parsed {
        return Err(StoreError::LinkNotFound.into());
    }
    let audit_seq = state
        .store
        .unlink(&caller.access(Purpose::Interconnection), &subject, link_id)
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({"link_id": hex::encode(link_id), "unlinked": true, "audit_seq": audit_seq}),
    ))
}

/// `GET /v1/subjects/{id}/linked-account`: this platform's figures, only
/// totals of each linked account, and the sum.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/linked-account",
    tag = "links",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This account's totals, each linked account's totals, and the sum", body = Object),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn linked_account(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
) -> Result<Response, ApiError> {
    let view = state
        .store
        .linked_account(&caller.access(Purpose::Interconnection), &subject)
        .await?;
    let links: Vec<LinkBody> = view
        .links
        .iter()
        .map(|l| LinkBody::new(l, None, Some(l.totals.is_some())))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "own": TotalsBody::from(&view.own),
            "linked": links,
            "total": TotalsBody::from(&view.total),
        }),
    ))
}
