//! One error type for the HTTP API. Every error leaves as RFC 9457 problem
//! JSON that says what was wrong; internal causes are logged, never
//! returned, and no error text carries a subject id or a refused value.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{FieldError, FieldProblem};
use crate::policy::Purpose;
use crate::store::StoreError;

/// A problem document (RFC 9457).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// JSON Pointer to the offending field of the request, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying, sent as `Retry-After` (429 and 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// An event refused because the person has not consented.
    pub fn consent_required(purpose: Purpose, kind: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "consent-required",
            "Consent required",
            format!(
                "the person has not consented to purpose {purpose} for kind {kind} under the current notice; \
                 record their consent with PUT /v1/subjects/{{id}}/consents/{purpose}"
            ),
        )
    }

    pub fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:carbon-ledger:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// The problem for one refused field; `prefix` locates the event in a batch.
    pub fn for_field(err: &FieldError, prefix: &str) -> Self {
        let (slug, title) = match err.problem {
            FieldProblem::NotCollected => ("field-not-collected", "Field not collected"),
            FieldProblem::Missing => ("missing-field", "Missing field"),
            FieldProblem::Invalid(_) => ("invalid-field", "Invalid field"),
        };
        let field = format!("{prefix}{}", err.field);
        let detail = FieldError {
            field: field.clone(),
            problem: err.problem.clone(),
        }
        .message();
        Self {
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, serde_json::to_vec(&self).unwrap_or_default()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match (self.retry_after, status) {
            (Some(secs), _) => Some(secs),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("invalid field")]
    Field(FieldError),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every slot for work in flight stayed taken (see `detach`).
    #[error("overloaded")]
    Overloaded,
    /// A per-tenant budget ran out (see `limits`).
    #[error("rate limited ({budget})")]
    RateLimited { budget: &'static str, retry_after: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => Problem::new(
                S::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "a valid API key is required: send it as 'Authorization: Bearer <key>'",
            ),
            ApiError::NotFound(what) => Problem::new(S::NOT_FOUND, "not-found", "Not found", what.clone()),
            ApiError::MethodNotAllowed => Problem::new(S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "this route does not accept that method"),
            ApiError::Malformed(why) => Problem::new(S::BAD_REQUEST, "malformed-request", "Malformed request", why.clone()),
            ApiError::Field(err) => Problem::for_field(err, ""),
            ApiError::TooLarge(why) => Problem::new(S::PAYLOAD_TOO_LARGE, "too-large", "Request too large", why.clone()),
            ApiError::Store(e) => match e {
                StoreError::Forbidden(what) => Problem::new(S::FORBIDDEN, "forbidden", "Forbidden", format!("this key's role may not {what}")),
                StoreError::SubjectNotFound => Problem::new(S::NOT_FOUND, "subject-not-found", "Subject not found", "no data is held on this subject for this platform"),
                StoreError::Conflict(why) => Problem::new(S::CONFLICT, "conflict", "Conflict", why.clone()),
                StoreError::InsufficientPoints { .. } => {
                    Problem::new(S::CONFLICT, "insufficient-points", "Insufficient points", e.to_string())
                }
                StoreError::ReferenceReused => Problem::new(
                    S::CONFLICT,
                    "redemption-reference-reused",
                    "Redemption reference reused",
                    "this reference was used for a redemption with other points or description; \
                     a retry must repeat the original request",
                ),
                StoreError::RedemptionNotFound => Problem::new(
                    S::NOT_FOUND,
                    "redemption-not-found",
                    "Redemption not found",
                    "no redemption with this reference is held on this subject for this platform",
                ),
                StoreError::StaleNotice { .. } => {
                    Problem::new(S::CONFLICT, "stale-notice", "Notice version is not current", e.to_string())
                }
                StoreError::Invalid(why) => Problem::new(S::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request", why.clone()),
                StoreError::Busy(what) => Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Service overloaded",
                    format!("too many {what} are in progress; retry after a second"),
                ),
                StoreError::OutcomeUnknown => Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "outcome-unknown",
                    "Outcome unknown",
                    "the write was interrupted and may or may not have committed; retry it (events are idempotent by event_id)",
                ),
                StoreError::KeyRotated => Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the root key was just rotated and this server was catching up; nothing was done: retry shortly",
                ),
                StoreError::Integrity => Problem::new(
                    S::INTERNAL_SERVER_ERROR,
                    "record-integrity",
                    "Record integrity failure",
                    "a stored record failed its integrity check; nothing was returned and the operator has been alerted",
                ),
                StoreError::ConsentRequired { purpose, other_side } => Problem::new(
                    S::FORBIDDEN,
                    "consent-required",
                    "Consent required",
                    if *other_side {
                        format!("the account that issued the link code has not consented to purpose {purpose} under the current notice; nothing was linked")
                    } else {
                        format!("the person has not consented to purpose {purpose} under the current notice; record their consent with PUT /v1/subjects/{{id}}/consents/{purpose}")
                    },
                ),
                StoreError::LinkCodeInvalid => Problem::new(
                    S::UNPROCESSABLE_ENTITY,
                    "link-code-invalid",
                    "Link code not valid",
                    "the link code is unknown, already used or expired; nothing was linked; ask the other platform for a new code",
                ),
                StoreError::ConsoleLinkInvalid => Problem::new(
                    S::NOT_FOUND,
                    "console-link-invalid",
                    "Console link not valid",
                    "this console link is unknown, already used or expired; nothing was opened; ask the platform for a new link",
                ),
                StoreError::ConsoleSessionInvalid => Problem::new(
                    S::UNAUTHORIZED,
                    "console-session-invalid",
                    "Console session not open",
                    "no console session is open (it ended, was idle too long or is over an hour old); open a new link from the platform",
                ),
                StoreError::LinkNotFound => Problem::new(
                    S::NOT_FOUND,
                    "link-not-found",
                    "Link not found",
                    "this account has no link by that id (it may have been unlinked already)",
                ),
                e if e.is_unavailable() && !e.is_busy() => Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the database is unreachable or not accepting writes (a failover may be under way); \
                     retry shortly (events are idempotent by event_id)",
                ),
                e if e.is_busy() => Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the database is busy; retry shortly",
                ),
                _ => internal(),
            },
            ApiError::Overloaded => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
                "too many requests are in progress; retry after a second",
            ),
            ApiError::RateLimited { budget, retry_after } => Problem {
                retry_after: Some(*retry_after),
                ..Problem::new(
                    S::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    format!("this platform's {budget} budget is spent for now; retry after {retry_after} s"),
                )
            },
            ApiError::Internal(_) => internal(),
        }
    }
}

fn internal() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the request failed inside the service; nothing was committed",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            // The cause goes to the operator's log, not to the client.
            tracing::error!(error = %self, "request failed");
        }
        problem.into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Field(e)
    }
}
