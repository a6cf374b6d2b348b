//! `POST /v1/events`: one event, or `{"events": [...]}` with up to 1,000.
//! Each event is parsed and minimized on its own, so a bad one is rejected
//! with a problem naming its field while the others are recorded; the valid
//! ones are recorded in one transaction.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::extract::{Caller, JsonBody};
use super::{json, ApiError, AppState, Problem, MAX_BATCH_EVENTS};
use crate::domain::{escape_pointer, event_id_of, minimize, parse_event, scrub, Methodology, Milligrams};
use crate::store::{CountedElsewhere, IngestItem, IngestOutcome, Purpose, Receipt, StoreError};

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Recorded,
    Duplicate,
    Rejected,
}

#[derive(Serialize)]
struct ReceiptView {
    /// Echoed from the request so the platform can match receipts.
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reduction_g: Option<Milligrams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methodology_version: Option<String>,
    /// A daily cap reduced the credit.
    #[serde(skip_serializing_if = "Option::is_none")]
    capped: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_seq: Option<u64>,
    /// The part of the behaviour a linked account on another platform had
    /// reported already: counted there, not here.
    #[serde(skip_serializing_if = "Option::is_none")]
    counted_elsewhere: Option<CountedElsewhereView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
}

#[derive(Serialize)]
struct CountedElsewhereView {
    reduction_g: Milligrams,
    points: i64,
    note: &'static str,
}

impl From<CountedElsewhere> for CountedElsewhereView {
    fn from(e: CountedElsewhere) -> Self {
        Self {
            reduction_g: e.reduction,
            points: e.points,
            note: "a linked account on another platform reported the same behaviour (same kind, day and variant) \
                   first; a reduction is claimed once (DB11/T 3043-2024), so this part is counted there, not here",
        }
    }
}

impl ReceiptView {
    fn accepted(event_id: Option<String>, status: Status, r: Receipt) -> Self {
        Self {
            event_id,
            status,
            record_id: Some(r.record_id.to_string()),
            reduction_g: Some(r.reduction),
            points: Some(r.points),
            methodology_version: Some(r.methodology_version),
            capped: Some(r.capped),
            audit_seq: Some(r.audit_seq),
            counted_elsewhere: r.counted_elsewhere.map(CountedElsewhereView::from),
            problem: None,
        }
    }

    fn rejected(event_id: Option<String>, problem: Problem) -> Self {
        Self {
            event_id,
            status: Status::Rejected,
            record_id: None,
            reduction_g: None,
            points: None,
            methodology_version: None,
            capped: None,
            audit_seq: None,
            counted_elsewhere: None,
            problem: Some(problem),
        }
    }
}

#[derive(Serialize)]
struct Receipts {
    receipts: Vec<ReceiptView>,
}

/// Splits the body into events; `true` when it was a batch.
fn events_of(body: Value) -> Result<(Vec<Value>, bool), ApiError> {
    let mut map = match body {
        Value::Object(map) => map,
        mut other => {
            scrub(&mut other);
            return Err(ApiError::Malformed(
                "the body must be one event object or {\"events\": [...]}".into(),
            ));
        }
    };
    if !map.contains_key("events") {
        return Ok((vec![Value::Object(map)], false));
    }
    if let Some(other) = map.keys().find(|k| *k != "events").cloned() {
        let mut body = Value::Object(map);
        scrub(&mut body);
        return Err(crate::domain::FieldError::not_collected(format!("/{}", escape_pointer(&other))).into());
    }
    match map.remove("events") {
        Some(Value::Array(events)) if events.is_empty() => Err(ApiError::Malformed("the batch holds no events".into())),
        Some(Value::Array(mut events)) if events.len() > MAX_BATCH_EVENTS => {
            events.iter_mut().for_each(scrub);
            Err(ApiError::TooLarge(format!(
                "a batch holds at most {MAX_BATCH_EVENTS} events; split it"
            )))
        }
        Some(Value::Array(events)) => Ok((events, true)),
        Some(mut other) => {
            scrub(&mut other);
            Err(crate::domain::FieldError::invalid("/events", "must be an array of events").into())
        }
        None => Err(crate::domain::FieldError::missing("/events").into()),
    }
}

/// Each slot of a request: the event id to echo, and either an index into
/// the items to record or the event's rejection.
pub(crate) type Slot = (Option<String>, Result<usize, Problem>);

/// A request body taken apart before anything touches the store.
pub(crate) struct Parsed {
    pub slots: Vec<Slot>,
    pub items: Vec<IngestItem>,
    /// The body was `{"events": [...]}`.
    pub batch: bool,
}

/// Splits, parses and minimizes the events of a body: pure, so the fuzz
/// targets (`crate::fuzzing`) run exactly what the handler runs.
pub(crate) fn parse_body(body: Value, methodology: &Methodology, now: OffsetDateTime) -> Result<Parsed, ApiError> {
    let (events, batch) = events_of(body)?;
    let mut slots: Vec<Slot> = Vec::with_capacity(events.len());
    let mut items = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let echo = event_id_of(&event);
        let prefix = if batch {
            format!("/events/{index}")
        } else {
            String::new()
        };
        let parsed = parse_event(event).and_then(|raw| {
            let record = minimize(&raw, methodology, now)?;
            Ok(IngestItem {
                event_id: raw.event_id,
                subject: raw.subject,
                record,
            })
        });
        match parsed {
            Ok(item) => {
                slots.push((echo, Ok(items.len())));
                items.push(item);
            }
            Err(field) => slots.push((echo, Err(Problem::for_field(&field, &prefix)))),
        }
    }
    Ok(Parsed { slots, items, batch })
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = super::openapi::EventsBody, content_type = "application/json", description = "One event, or {\"events\": [...]} with up to 1,000"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The single event was recorded", body = super::openapi::ReceiptsSchema),
        (status = 200, description = "A batch (or a retry): one receipt per event", body = super::openapi::ReceiptsSchema),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The role may not record, or the person has not consented", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 409, description = "The event id was used before for other content", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 413, description = "The body or the batch is too large", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 422, description = "A field is refused, missing or invalid", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn post_events(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // The role first: a caller who may not record learns nothing about why
    // its payload would have been refused.
    state.store.may(
        &caller.access(Purpose::Accounting),
        crate::policy::Permission::RecordEvents,
    )?;
    let methodology = &state.store.policies().methodology;
    let Parsed { slots, items, batch } = parse_body(body, methodology, state.store.now())?;
    state.charge_events(caller.0.tenant, slots.len())?;

    if !batch {
        if let Some((_, Err(problem))) = slots.first() {
            state.metrics.observe_event("rejected", Some(&problem.type_uri));
            return Ok(problem.clone().into_response());
        }
    }

    let outcomes = match state.store.ingest(&caller.access(Purpose::Accounting), items).await {
        // This server had not seen a root key rotation; nothing was
        // written. It catches up now, so the client's retry goes through.
        Err(StoreError::KeyRotated) => {
            if let Err(e) = state.store.refresh_keyring().await {
                tracing::error!(error = %e, "checking the root key versions failed");
            }
            return Err(StoreError::KeyRotated.into());
        }
        outcomes => outcomes?,
    };
    let mut any_recorded = false;
    let receipts: Vec<ReceiptView> = slots
        .into_iter()
        .map(|(echo, slot)| match slot {
            Ok(i) => match outcomes[i].clone() {
                IngestOutcome::Recorded(r) => {
                    any_recorded = true;
                    ReceiptView::accepted(echo, Status::Recorded, r)
                }
                IngestOutcome::Duplicate(r) => ReceiptView::accepted(echo, Status::Duplicate, r),
                IngestOutcome::ConsentRequired { purpose, kind } => {
                    ReceiptView::rejected(echo, Problem::consent_required(purpose, &kind))
                }
                IngestOutcome::EventIdReused => ReceiptView::rejected(
                    echo,
                    Problem::new(
                        StatusCode::CONFLICT,
                        "event-id-reused",
                        "Event id reused",
                        "this event id was sent before with different content; every event needs an id of its own \
                         (a retry must repeat the event exactly)",
                    ),
                ),
            },
            Err(problem) => ReceiptView::rejected(echo, problem),
        })
        .collect();
    for receipt in &receipts {
        let outcome = match receipt.status {
            Status::Recorded => "recorded",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
        };
        let reason = receipt.problem.as_ref().map(|p| p.type_uri.as_str());
        state.metrics.observe_event(outcome, reason);
    }
    // A single event answers like a resource: 201 when recorded, its
    // problem when refused. Batches and retries answer 200 with a receipt
    // per event.
    if !batch {
        if let Some(ReceiptView {
            problem: Some(problem), ..
        }) = receipts.first()
        {
            return Ok(problem.clone().into_response());
        }
    }
    let status = if !batch && any_recorded {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &Receipts { receipts }))
}
