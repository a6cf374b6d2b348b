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
        state.charge_request(actor.tenant)?;
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
        let parsed = parse_strict(&bytes).map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")));
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        Ok(JsonBody(parsed?))
    }
}

/// A refused query string, said without echoing what it held: unknown
/// parameters are answered with the ones the route accepts, values of the
/// wrong type without the value.
pub fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = e.body_text();
    let message = if text.contains("unknown field") {
        match text.rsplit_once("expected ") {
            Some((_, expected)) => format!("query string: an unknown parameter; expected {expected}"),
            None => "query string: this route takes no query parameters".to_owned(),
        }
    } else if let Some(pos) = text.find("missing field").or_else(|| text.find("duplicate field")) {
        // Names one of the route's own parameters.
        format!("query string: {}", &text[pos..])
    } else {
        "query string: a parameter's value is not of the expected type".to_owned()
    };
    ApiError::Malformed(message)
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

/// Parses JSON refusing duplicate object keys at any depth. serde_json keeps
/// the last of two equal keys silently, so `{"data": {"route": ...},
/// "data": {}}` would slip a refused field past every check (and free it
/// unscrubbed). Errors name the key, never a value.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<serde_json::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<serde_json::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<serde_json::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_strict;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_strict(br#"{"a": 1, "b": [1, {"c": "x"}]}"#).is_ok());
        let err = parse_strict(br#"{"data": {"route": "No. 7"}, "data": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"data\" appears twice") && !err.contains("No. 7"),
            "{err}"
        );
        assert!(parse_strict(br#"{"events": [{"d": {"x": 1, "x": 2}}]}"#).is_err());
        assert!(parse_strict(br#"{"a": 1} trailing"#).is_err());
    }
}
