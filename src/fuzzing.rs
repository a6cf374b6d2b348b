//! Entry points for the fuzz targets in `fuzz/` (not a public API): the code
//! that takes untrusted bytes — the strict JSON extractor, the event parser
//! behind `POST /v1/events`, the audit entry decoder — each run exactly as
//! the service runs it, with the invariants a target checks. Every function
//! panics when an invariant breaks, which is what a fuzzer reports.

use std::sync::OnceLock;

use serde_json::Value;
use time::OffsetDateTime;

use crate::api::{parse_body, parse_strict, Parsed};
use crate::audit::AuditEntry;
use crate::policy::PolicySet;

/// The shipped policies, loaded once: loading is not what is fuzzed.
fn policies() -> &'static PolicySet {
    static POLICIES: OnceLock<PolicySet> = OnceLock::new();
    POLICIES.get_or_init(|| PolicySet::load(None).expect("the shipped policies load"))
}

/// A fixed "now", so a crash found once reproduces: 2026-11-21T00:00:00Z.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_219_200).expect("a valid time")
}

/// The strict JSON extractor: on any input it answers without panicking,
/// and agrees with plain `serde_json` except that it refuses an object with
/// a key twice (which serde_json would silently resolve to the last value).
pub fn strict_json(bytes: &[u8]) {
    let strict = parse_strict(bytes);
    let plain = serde_json::from_slice::<Value>(bytes);
    match (&strict, &plain) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "strict and plain parses differ"),
        (Ok(_), Err(e)) => panic!("strict accepted what serde_json refuses: {e}"),
        (Err(e), Ok(_)) => assert!(
            e.to_string().contains("appears twice in one object"),
            "strict refused valid JSON for another reason than a repeated key: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
}

/// The batch request body → domain events, as `POST /v1/events` does before
/// it reaches the store: no panic, every refusal a 4xx problem, one slot per
/// event, and every accepted event minimized (a day within the acceptance
/// window, a known kind).
pub fn batch_body(bytes: &[u8]) {
    let Ok(body) = parse_strict(bytes) else { return };
    let policies = policies();
    let methodology = &policies.methodology;
    match parse_body(body, methodology, now()) {
        Err(e) => {
            let problem = e.problem();
            assert!((400..500).contains(&problem.status), "{} for {e}", problem.status);
        }
        Ok(Parsed { slots, items, batch }) => {
            assert!(batch || slots.len() == 1, "a single event has one slot");
            assert!(slots.len() <= crate::api::MAX_BATCH_EVENTS);
            let mut next = 0;
            for (_, slot) in &slots {
                match slot {
                    Ok(i) => {
                        assert_eq!(*i, next, "items are indexed in order");
                        next += 1;
                    }
                    Err(problem) => {
                        assert_eq!(problem.status, 422);
                        assert!(problem.field.is_some(), "a field problem names its field");
                    }
                }
            }
            assert_eq!(next, items.len(), "every item has its slot");
            for item in &items {
                assert!(methodology.kinds.contains_key(item.record.kind()));
            }
        }
    }
}

/// The audit entry decoder: no panic on any bytes, and the encoding is
/// canonical — whatever decodes encodes back to the same bytes, and decoding
/// that gives the same entry (decode(encode(x)) == x).
pub fn audit_entry(bytes: &[u8]) {
    let Ok(entry) = AuditEntry::decode(bytes) else { return };
    let encoded = entry.encode();
    assert_eq!(encoded, bytes, "one entry, one encoding");
    assert_eq!(
        AuditEntry::decode(&encoded).as_ref(),
        Ok(&entry),
        "decode(encode(x)) == x"
    );
    // The JSON view the API serves of every entry.
    let _ = entry.to_json();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_good_and_bad_input() {
        strict_json(br#"{"a": [1, 2.5, "x", null, true]}"#);
        strict_json(br#"{"a": 1, "a": 2}"#);
        strict_json(b"\xff");
        batch_body(
            br#"{"events": [{"event_id": "e1", "subject": "u1", "kind": "clean_plate",
            "occurred_at": "2026-11-20T12:00:00+08:00"}, {"event_id": 5}]}"#,
        );
        batch_body(br#"{"event_id": "e1"}"#);
        batch_body(br#"{"events": []}"#);
        for entry in crate::audit::entry::tests::samples() {
            audit_entry(&entry.encode());
        }
        audit_entry(&[1, 2, 3]);
    }
}
