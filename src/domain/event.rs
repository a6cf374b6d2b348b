//! Parsing of one behaviour event as a platform sends it. Parsing refuses
//! fields the service does not collect and never copies a value into an
//! error: errors name the field, not what was in it.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::ids::{EventId, SubjectId};

/// The fields of an event envelope. Anything else is refused.
const ENVELOPE_FIELDS: [&str; 6] = ["event_id", "subject", "kind", "occurred_at", "region", "data"];

/// An event as received, before minimization. It exists only in memory for
/// the length of one request; strings it holds are zeroized on drop, and its
/// `Debug` shows only the kind.
pub struct RawEvent {
    pub event_id: EventId,
    pub subject: SubjectId,
    pub kind: String,
    pub occurred_at: OffsetDateTime,
    pub region: Option<Zeroizing<String>>,
    pub data: Scrubbed,
}

impl std::fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The kind-specific part of an event, zeroized on drop.
#[derive(Default)]
pub struct Scrubbed(pub Map<String, Value>);

impl std::fmt::Debug for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrubbed(<redacted>)")
    }
}

impl Drop for Scrubbed {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            scrub(value);
        }
    }
}

/// Overwrites every string in a JSON value, so refused or dropped input does
/// not linger in freed memory.
pub fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

/// Why a field was refused. Never carries the refused value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// The service does not collect this field.
    NotCollected,
    Missing,
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the field, e.g. `/data/route`.
    pub field: String,
    pub problem: FieldProblem,
}

impl FieldError {
    pub fn not_collected(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::NotCollected,
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::Missing,
        }
    }

    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::Invalid(why.into()),
        }
    }

    pub fn message(&self) -> String {
        match &self.problem {
            FieldProblem::NotCollected => format!(
                "field {} is not collected by this service; remove it (only the data the methodology needs is accepted)",
                self.field
            ),
            FieldProblem::Missing => format!("field {} is required", self.field),
            FieldProblem::Invalid(why) => format!("field {} {}", self.field, why),
        }
    }
}

/// The event id of an event that may otherwise be invalid, so that its
/// receipt can still name it.
pub fn event_id_of(value: &Value) -> Option<String> {
    value
        .get("event_id")?
        .as_str()
        .filter(|s| EventId::parse((*s).to_owned()).is_some())
        .map(str::to_owned)
}

pub fn parse_event(value: Value) -> Result<RawEvent, FieldError> {
    let mut value = value;
    let result = parse_object(&mut value);
    scrub(&mut value);
    result
}

fn take_string(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, FieldError> {
    match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(mut other) => {
            scrub(&mut other);
            Err(FieldError::invalid(format!("/{name}"), "must be a string"))
        }
    }
}

fn parse_object(value: &mut Value) -> Result<RawEvent, FieldError> {
    let Value::Object(map) = value else {
        return Err(FieldError::invalid("", "must be a JSON object (one event)"));
    };
    if let Some(unknown) = map.keys().find(|k| !ENVELOPE_FIELDS.contains(&k.as_str())) {
        return Err(FieldError::not_collected(format!("/{}", escape_pointer(unknown))));
    }
    let event_id = take_string(map, "event_id")?.ok_or_else(|| FieldError::missing("/event_id"))?;
    let event_id = EventId::parse(event_id)
        .ok_or_else(|| FieldError::invalid("/event_id", "must be 1 to 128 bytes without control characters"))?;
    let subject = take_string(map, "subject")?.ok_or_else(|| FieldError::missing("/subject"))?;
    let subject = SubjectId::parse(subject)
        .ok_or_else(|| FieldError::invalid("/subject", "must be 1 to 128 bytes without control characters"))?;
    let kind = take_string(map, "kind")?.ok_or_else(|| FieldError::missing("/kind"))?;
    let occurred_at = take_string(map, "occurred_at")?.ok_or_else(|| FieldError::missing("/occurred_at"))?;
    let occurred_at = Zeroizing::new(occurred_at);
    let occurred_at = OffsetDateTime::parse(&occurred_at, &Rfc3339).map_err(|_| {
        FieldError::invalid(
            "/occurred_at",
            "must be an RFC 3339 date-time, e.g. 2024-07-25T08:30:00+08:00",
        )
    })?;
    let region = take_string(map, "region")?.map(Zeroizing::new);
    let data = match map.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(mut other) => {
            scrub(&mut other);
            return Err(FieldError::invalid("/data", "must be an object"));
        }
    };
    Ok(RawEvent {
        event_id,
        subject,
        kind,
        occurred_at,
        region,
        data: Scrubbed(data),
    })
}

/// RFC 6901 escaping of one reference token.
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "event_id": "e1", "subject": "u1", "kind": "clean_plate",
            "occurred_at": "2024-07-25T12:00:00+08:00", "data": {}
        })
    }

    #[test]
    fn parses_a_valid_envelope() {
        let raw = parse_event(event()).unwrap();
        assert_eq!(raw.kind, "clean_plate");
        assert_eq!(raw.event_id.as_str(), "e1");
    }

    #[test]
    fn refuses_unknown_envelope_fields_by_name_without_value() {
        let mut v = event();
        v["gps"] = json!("30.88,105.44");
        let err = parse_event(v).unwrap_err();
        assert_eq!(err, FieldError::not_collected("/gps"));
        assert!(!err.message().contains("30.88"));
    }

    #[test]
    fn names_missing_and_invalid_fields() {
        let mut v = event();
        v.as_object_mut().unwrap().remove("subject");
        assert_eq!(parse_event(v).unwrap_err().field, "/subject");
        let mut v = event();
        v["occurred_at"] = json!("yesterday");
        assert_eq!(parse_event(v).unwrap_err().field, "/occurred_at");
        assert_eq!(parse_event(json!([1])).unwrap_err().field, "");
    }

    #[test]
    fn debug_shows_no_values() {
        let mut v = event();
        v["region"] = json!("510502");
        v["data"] = json!({"distance_m": 4321});
        let text = format!("{:?}", parse_event(v).unwrap());
        for secret in ["510502", "4321", "u1", "2024-07-25", "e1"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn scrub_overwrites_strings() {
        let mut v = json!({"a": ["secret"], "b": {"c": "secret"}});
        scrub(&mut v);
        assert!(!v.to_string().contains("secret"));
    }
}
