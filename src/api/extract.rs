//! Extractors that fail with problem JSON: the bearer key, the JSON body and
//! the subject path parameter.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use zeroize::Zeroize;

use super::{ApiError, AppState};
use crate::domain::SubjectId;
use crate::store::{Access, Actor, Purpose};

/// The authenticated caller. Handlers never parse headers.
pub struct Caller(pub Actor);

impl Caller {
    pub fn access(&self, purpose: Purpose) -> Access {
        Access::new(self.0, purpose)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
        let value = value.to_str().map_err(|_| ApiError::Unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized);
        }
        let actor = state
            .store
            .authenticate(token.trim())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(actor))
    }
}

/// A request body parsed as JSON. The raw bytes are zeroized once parsed:
/// they may hold fields the service refuses to keep.
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge(format!("the request body exceeds {} bytes", super::MAX_BODY_BYTES))
            }
            other => ApiError::Malformed(format!("the request body could not be read: {}", other.body_text())),
        })?;
        let parsed =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")));
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        Ok(JsonBody(parsed?))
    }
}

/// The `{id}` path parameter as a subject id. Invalid ids are refused
/// without echoing them.
pub struct Subject(pub SubjectId);

impl<S: Send + Sync> FromRequestParts<S> for Subject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::Malformed("the path parameters are not valid UTF-8".into()))?;
        let id = params
            .remove("id")
            .ok_or_else(|| ApiError::Internal("route has no {id} parameter".into()))?;
        SubjectId::parse(id).map(Subject).ok_or_else(|| {
            ApiError::Malformed("the subject id must be 1 to 128 bytes without control characters".into())
        })
    }
}
