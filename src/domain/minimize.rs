//! Minimization: a raw event becomes a `CoarseRecord` — the day, the kind,
//! the variant, the quantity rounded down to the methodology's bucket and
//! the region cut to the city — and nothing else survives.

use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::coarse::CoarseRecord;
use super::day::Day;
use super::event::{escape_pointer, FieldError, RawEvent};
use super::methodology::Methodology;

/// How far in the future an event's time may lie (clock skew between the
/// platform and us).
const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

pub fn minimize(raw: &RawEvent, methodology: &Methodology, now: OffsetDateTime) -> Result<CoarseRecord, FieldError> {
    let Some(rule) = methodology.kinds.get(&raw.kind) else {
        return Err(FieldError::invalid(
            "/kind",
            format!(
                "is not a behaviour kind of methodology {}; GET /v1/methodology lists them",
                methodology.version
            ),
        ));
    };

    if raw.occurred_at > now + MAX_FUTURE_SKEW {
        return Err(FieldError::invalid("/occurred_at", "lies in the future"));
    }
    let offset = methodology.offset();
    let day = Day::from_date(raw.occurred_at.to_offset(offset).date());
    let today = Day::from_date(now.to_offset(offset).date());
    if today.days() - day.days() > i32::from(methodology.accept_days) {
        return Err(FieldError::invalid(
            "/occurred_at",
            format!(
                "is older than the {} days within which events are accepted",
                methodology.accept_days
            ),
        ));
    }

    let region = raw.region.as_deref().map(|r| city_of(r)).transpose()?;

    let accepted: Vec<&str> = rule.accepted_fields().collect();
    if let Some(unknown) = raw.data.0.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(FieldError::not_collected(format!("/data/{}", escape_pointer(unknown))));
    }

    let quantity = match &rule.quantity {
        None => None,
        Some(q) => {
            let pointer = format!("/data/{}", q.field);
            let value = raw.data.0.get(&q.field).ok_or_else(|| FieldError::missing(&pointer))?;
            let amount = value.as_f64().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                FieldError::invalid(&pointer, format!("must be a non-negative number of {}", q.base_unit))
            })?;
            if amount > q.max as f64 {
                return Err(FieldError::invalid(
                    &pointer,
                    format!("must be at most {} {}", q.max, q.base_unit),
                ));
            }
            // Round down to the bucket: conservative, and the finest grain kept.
            Some((amount / q.bucket as f64).floor() as u64 * q.bucket)
        }
    };

    let variant = match &rule.variants {
        None => None,
        Some(v) => {
            let pointer = format!("/data/{}", v.field);
            let allowed = || v.values.keys().cloned().collect::<Vec<_>>().join(", ");
            match raw.data.0.get(&v.field) {
                None => return Err(FieldError::missing(&pointer)),
                Some(Value::String(s)) if v.values.contains_key(s) => Some(s.clone()),
                Some(_) => return Err(FieldError::invalid(&pointer, format!("must be one of: {}", allowed()))),
            }
        }
    };

    Ok(CoarseRecord::new(raw.kind.clone(), variant, day, quantity, region))
}

/// Cuts a 6-digit administrative division code (GB/T 2260) to its city:
/// `510502` (a district of Luzhou) becomes `510500`.
fn city_of(code: &str) -> Result<String, FieldError> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::invalid(
            "/region",
            "must be a 6-digit administrative division code (GB/T 2260)",
        ));
    }
    Ok(format!("{}00", &code[..4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_event;
    use crate::policy::default_methodology;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-07-25 12:00 +08:00);

    fn raw(kind: &str, data: Value) -> RawEvent {
        parse_event(json!({
            "event_id": "e", "subject": "s", "kind": kind,
            "occurred_at": "2024-07-24T23:30:00+08:00", "region": "510502", "data": data
        }))
        .unwrap()
    }

    #[test]
    fn keeps_day_city_and_bucket_only() {
        let m = default_methodology();
        let r = minimize(&raw("cycling", json!({"distance_m": 2371.5})), &m, NOW).unwrap();
        assert_eq!(r.day().to_string(), "2024-07-24");
        assert_eq!(r.region(), Some("510500"));
        assert_eq!(r.quantity(), Some(2300));
        let plain = String::from_utf8(r.encode()).unwrap();
        assert!(!plain.contains("2371") && !plain.contains("510502"), "{plain}");
    }

    #[test]
    fn day_is_taken_in_the_policy_time_zone() {
        let m = default_methodology();
        let mut e = raw("clean_plate", json!({}));
        e.occurred_at = datetime!(2024-07-24 17:00 UTC); // 01:00 on the 25th in +08:00
        assert_eq!(minimize(&e, &m, NOW).unwrap().day().to_string(), "2024-07-25");
    }

    #[test]
    fn refuses_fields_the_kind_does_not_collect() {
        let m = default_methodology();
        let err = minimize(&raw("transit_ride", json!({"mode": "bus", "route": "No. 7"})), &m, NOW).unwrap_err();
        assert_eq!(err, FieldError::not_collected("/data/route"));
        assert!(!err.message().contains("No. 7"));
    }

    #[test]
    fn validates_kind_variant_quantity_region_and_time() {
        let m = default_methodology();
        let field = |e: RawEvent| minimize(&e, &m, NOW).unwrap_err().field;
        assert_eq!(field(raw("teleport", json!({}))), "/kind");
        assert_eq!(field(raw("transit_ride", json!({"mode": "rocket"}))), "/data/mode");
        assert_eq!(field(raw("transit_ride", json!({}))), "/data/mode");
        assert_eq!(field(raw("walking", json!({"steps": -1}))), "/data/steps");
        assert_eq!(field(raw("walking", json!({"steps": "many"}))), "/data/steps");
        assert_eq!(field(raw("walking", json!({"steps": 1e12}))), "/data/steps");
        let mut e = raw("clean_plate", json!({}));
        e.region = Some(zeroize::Zeroizing::new("Luzhou".into()));
        assert_eq!(field(e), "/region");
        let mut e = raw("clean_plate", json!({}));
        e.occurred_at = datetime!(2024-05-01 12:00 +08:00);
        assert_eq!(field(e), "/occurred_at");
        let mut e = raw("clean_plate", json!({}));
        e.occurred_at = datetime!(2024-07-27 12:00 +08:00);
        assert_eq!(field(e), "/occurred_at");
    }
}
