//! Consent routes: the purposes and their notices, and a platform recording
//! its users' consents.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::extract::{Caller, JsonBody, Subject};
use super::views::{ConsentChangeView, ConsentView};
use super::{json, ApiError, AppState};
use crate::domain::{escape_pointer, scrub, FieldError, Methodology};
use crate::policy::{DataClass, Language, Purpose};
use crate::store::Kinds;

/// `GET /v1/consent/purposes`: what a platform shows before asking, in
/// the language `Accept-Language` asks for (Simplified Chinese for `zh`,
/// English otherwise). Both languages share each purpose's notice version.
#[utoipa::path(
    get,
    path = "/v1/consent/purposes",
    tag = "subjects",
    params(
        ("Accept-Language" = Option<String>, Header, description = "zh (any zh-*) for Simplified Chinese; English otherwise"),
    ),
    responses(
        (status = 200, description = "The consent purposes and their notices, in the language asked for", body = Object),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
/// `GET /v1/consent/purposes`: what a platform shows before asking, in
/// the language `Accept-Language` asks for (Simplified Chinese for `zh`,
/// English otherwise). Both languages share each purpose's notice version.
pub async fn purposes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let language = Language::negotiate(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()));
    let policies = state.store.policies();
    let purposes: Vec<Value> = policies
        .consent
        .purposes
        .iter()
        .map(|(purpose, p)| {
            let retention_days = DataClass::ALL
                .iter()
                .find(|c| c.as_str() == p.retention)
                .map(|c| policies.retention.days(*c));
            let (title, notice) = p.text(language);
            json!({
                "purpose": purpose,
                "title": title,
                "notice": notice,
                "notice_version": p.notice_version,
                "necessary": p.necessary,
                "retention_days": retention_days,
            })
        })
        .collect();
    let mut response = json(StatusCode::OK, &json!({ "language": language, "purposes": purposes }));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(language.as_str()));
    headers.insert(header::VARY, HeaderValue::from_static("accept-language"));
    response
}

fn purpose_of(params: &std::collections::HashMap<String, String>) -> Result<Purpose, ApiError> {
    params
        .get("purpose")
        .and_then(|p| Purpose::parse(p))
        .ok_or_else(|| ApiError::NotFound("no such consent purpose; GET /v1/consent/purposes lists them".into()))
}

/// The body of a grant: `{"notice_version": N, "kinds": [...], "language":
/// "zh-CN"}`, the kinds checked against the methodology in force; the
/// language the notice was shown in is optional, so older clients work.
fn grant_body(body: &Value, methodology: &Methodology) -> Result<(u32, Kinds, Option<Language>), FieldError> {
    let Value::Object(map) = body else {
        return Err(FieldError::invalid(
            "",
            "must be an object: {\"notice_version\": N, \"kinds\": [...], \"language\": \"zh-CN\" or \"en\"}",
        ));
    };
    if let Some(other) = map
        .keys()
        .find(|k| !["notice_version", "kinds", "language"].contains(&k.as_str()))
    {
        return Err(FieldError::not_collected(format!("/{}", escape_pointer(other))));
    }
    let notice_version = map
        .get("notice_version")
        .ok_or_else(|| FieldError::missing("/notice_version"))?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            FieldError::invalid(
                "/notice_version",
                "must be the notice version shown, a positive integer",
            )
        })?;
    let kinds = match map.get("kinds") {
        None | Some(Value::Null) => Kinds::All,
        Some(Value::Array(items)) => {
            let mut kinds = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let kind = item
                    .as_str()
                    .filter(|k| methodology.kinds.contains_key(*k))
                    .ok_or_else(|| {
                        FieldError::invalid(
                            format!("/kinds/{i}"),
                            "is not a behaviour kind of the methodology in force; GET /v1/methodology lists them",
                        )
                    })?;
                kinds.insert(kind.to_owned());
            }
            Kinds::Only(kinds)
        }
        Some(_) => return Err(FieldError::invalid("/kinds", "must be an array of kind names")),
    };
    let language = match map.get("language") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().and_then(Language::parse).ok_or_else(|| {
            FieldError::invalid(
                "/language",
                "must be the language the notice was shown in: \"zh-CN\" or \"en\"",
            )
        })?),
    };
    Ok((notice_version, kinds, language))
}

#[utoipa::path(
    put,
    path = "/v1/subjects/{id}/consents/{purpose}",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("purpose" = String, Path, description = "A consent purpose (GET /v1/consent/purposes)", example = "rewards"),
    ),
    request_body(content = super::openapi::ConsentGrantSchema, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The consent as recorded", body = super::views::ConsentChangeView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No such purpose", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 409, description = "The notice version is not current", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "A field is refused, missing or invalid", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    Path(params): Path<std::collections::HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let purpose = purpose_of(&params)?;
    let mut body = body;
    let parsed = grant_body(&body, &state.store.policies().methodology);
    // Refused or not, the submitted body is overwritten before it is freed.
    scrub(&mut body);
    let (notice_version, kinds, language) = parsed?;
    let change = state
        .store
        .grant_consent_in(&caller.access(purpose), &subject, notice_version, kinds, language)
        .await?;
    Ok(json(StatusCode::OK, &ConsentChangeView::from(&change)))
}

#[utoipa::path(
    delete,
    path = "/v1/subjects/{id}/consents/{purpose}",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("purpose" = String, Path, description = "A consent purpose (GET /v1/consent/purposes)", example = "rewards"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The withdrawal and what it deleted", body = super::views::ConsentChangeView),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No such purpose or subject", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
    Path(params): Path<std::collections::HashMap<String, String>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    super::subjects::no_query(query)?;
    let purpose = purpose_of(&params)?;
    let change = state.store.withdraw_consent(&caller.access(purpose), &subject).await?;
    Ok(json(StatusCode::OK, &ConsentChangeView::from(&change)))
}

#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/consents",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Current consents with their notice versions", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Subject(subject): Subject,
) -> Result<Response, ApiError> {
    let consents = state
        .store
        .consents(&caller.access(Purpose::Accounting), &subject)
        .await?;
    let methodology = &state.store.policies().methodology;
    let consents: Vec<ConsentView> = consents.iter().map(|c| ConsentView::new(c, methodology)).collect();
    Ok(json(StatusCode::OK, &json!({ "consents": consents })))
}
