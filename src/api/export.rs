//! `GET /v1/subjects/{id}/export`: everything held on the person, as JSON
//! (`docs/export.schema.json`) or, with `?format=csv`, the records as CSV.
//!
//! Streamed: the store hands out pages from a read snapshot whose access is
//! already logged, and a task of its own renders each page and sends it
//! through a small channel to the socket, so memory stays flat whatever
//! the person's size. The task, not the client, decides when the snapshot
//! ends: a client that hangs up or stops reading ends it at the next page
//! (after `STALL` without reading, or `DEADLINE` in all).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::detach::Slot;
use super::extract::{Caller, Subject};
use super::points::RedemptionView;
use super::views::export::{ConsentEventView, Controller, Factors, LedgerLineView, Processing, RecordWithFactor};
use super::views::{ConsentView, PointsView, RecordView, EXPORT_FORMAT};
use super::{ApiError, AppState};
use crate::store::{ExportSession, Purpose, Store, StoreError};

/// A client that reads nothing for this long is cut off.
const STALL: Duration = Duration::from_secs(30);
/// No export holds its snapshot longer than this.
const DEADLINE: Duration = Duration::from_secs(300);
/// Rendered pages waiting for the socket.
const QUEUED_PAGES: usize = 2;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    format: Option<String>,
}

#[derive(Clone, Copy)]
pub(crate) enum Format {
    Json,
    Csv,
}

#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/export",
    tag = "subjects",
    params(
        ("id" = String, Path, description = "The platform's own id of the person, 1 to 128 bytes", example = "u-1"),
        ("format" = Option<String>, Query, description = "json (the default) or csv"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Everything held on the person, streamed", content_type = "application/json", body = Object),
        (status = 400, description = "Malformed request (bad JSON, query or path)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "No data is held on this subject for this platform", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not do this", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 429, description = "This platform's rate budget is spent (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the database is busy (see Retry-After)", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 500, description = "Failed inside the service; nothing was committed", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    Extension(slot): Extension<Slot>,
    caller: Caller,
    Subject(subject): Subject,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(super::extract::query_error)?;
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(_) => return Err(ApiError::Malformed("format is json (the default) or csv".into())),
    };
    // Refusals (role, unknown or erased person) answer here, as problems;
    // once this returns, the read is logged and the body starts.
    let session = state
        .store
        .open_export(&caller.access(Purpose::Accounting), &subject)
        .await?;
    Ok(respond(state, slot, session, format))
}

/// Streams an opened export (its read already logged) as the response body;
/// the console's download uses it too.
pub(crate) fn respond(state: AppState, slot: Slot, session: ExportSession, format: Format) -> Response {
    let (pages, body) = mpsc::channel::<Page>(QUEUED_PAGES);
    tokio::spawn(async move {
        stream(state.store.clone(), session, format, pages).await;
        // The request's work ends with its stream.
        drop(slot);
    });
    // The body ends cleanly only on `Page::End`: a stream cut short (a stalled
    // client, a failure, a panic) ends with an error, so the client sees a
    // broken response, never a complete-looking truncated one.
    let body = futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.recv().await {
            Some(Page::Data(bytes)) => Some((Ok(bytes), Some(body))),
            Some(Page::End) => None,
            None => Some((Err(std::io::Error::other("the export was cut short")), None)),
        }
    });
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// What the producer sends the response body.
enum Page {
    Data(Bytes),
    /// Everything was sent.
    End,
}

/// Why streaming stopped early.
enum Stop {
    /// The client hung up, stopped reading, or took too long.
    Client,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// Sends rendered pages to the response body, with the limits above.
struct Pages {
    out: mpsc::Sender<Page>,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Pages {
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if Instant::now() > self.deadline {
            return Err(Stop::Client);
        }
        let page = Bytes::from(std::mem::take(&mut self.buf));
        self.out
            .send_timeout(Page::Data(page), STALL)
            .await
            .map_err(|_| Stop::Client)
    }

    /// Marks the body complete.
    async fn end(&mut self) -> Result<(), Stop> {
        self.flush().await?;
        self.out.send_timeout(Page::End, STALL).await.map_err(|_| Stop::Client)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        serde_json::to_writer(&mut self.buf, value)
            .map_err(|e| Stop::Store(StoreError::Corrupt(format!("export rendering: {e}"))))
    }
}

async fn stream(store: Arc<Store>, mut session: ExportSession, format: Format, out: mpsc::Sender<Page>) {
    let mut pages = Pages {
        out,
        buf: Vec::with_capacity(64 * 1024),
        deadline: Instant::now() + DEADLINE,
    };
    let result = match format {
        Format::Json => json(&store, &mut session, &mut pages).await,
        Format::Csv => csv(&store, &mut session, &mut pages).await,
    };
    // Cut short, the body ends with an error when `pages` is dropped.
    match result {
        Ok(()) | Err(Stop::Client) => {}
        Err(Stop::Store(e)) => tracing::error!(error = %e, "export failed while streaming"),
    }
    drop(pages);
    if let Err(e) = session.close().await {
        tracing::warn!(error = %e, "closing an export snapshot failed");
    }
}

async fn json(store: &Store, session: &mut ExportSession, pages: &mut Pages) -> Result<(), Stop> {
    let methodology = &store.policies().methodology;
    let h = &session.header;
    pages.push(b"{\"format\":");
    pages.json(EXPORT_FORMAT)?;
    pages.push(b",\"generated_on\":");
    pages.json(&h.generated_on.to_string())?;
    pages.push(b",\"controller\":");
    pages.json(&Controller::new(h))?;
    pages.push(b",\"consents\":");
    let consents: Vec<ConsentView> = h.consents.iter().map(|c| ConsentView::new(c, methodology)).collect();
    pages.json(&consents)?;
    pages.push(b",\"consent_history\":");
    let history: Vec<ConsentEventView> = h
        .consent_history
        .iter()
        .map(|e| ConsentEventView::new(e, methodology))
        .collect();
    pages.json(&history)?;
    pages.push(b",\"links\":");
    let links: Vec<serde_json::Value> = h
        .links
        .iter()
        .map(|l| serde_json::json!({"link_id": hex::encode(l.link_id), "platform": l.platform, "linked_on": l.linked_on.to_string()}))
        .collect();
    pages.json(&links)?;
    pages.push(b",\"records\":[");
    let mut factors = Factors::default();
    let mut first = true;
    loop {
        let records = session.next_records(store).await?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            if !std::mem::take(&mut first) {
                pages.push(b",");
            }
            pages.json(&RecordWithFactor {
                record: RecordView::from(record),
                factor: factors.of(&session.header, record),
            })?;
        }
        pages.flush().await?;
    }
    let h = &session.header;
    pages.push(b"],\"ledger\":{\"reduction_g\":");
    pages.json(&h.reduction)?;
    pages.push(b",\"points_balance\":");
    pages.json(&h.points_balance)?;
    pages.push(b",\"entries\":[");
    let mut first = true;
    loop {
        let lines = session.next_ledger_lines().await?;
        if lines.is_empty() {
            break;
        }
        for line in &lines {
            if !std::mem::take(&mut first) {
                pages.push(b",");
            }
            pages.json(&LedgerLineView::from(line))?;
        }
        pages.flush().await?;
    }
    pages.push(b"]},\"points\":{\"summary\":");
    pages.json(&PointsView::from(&session.header.points))?;
    pages.push(b",\"redemptions\":[");
    let mut first = true;
    loop {
        let redemptions = session.next_redemptions().await?;
        if redemptions.is_empty() {
            break;
        }
        for redemption in &redemptions {
            if !std::mem::take(&mut first) {
                pages.push(b",");
            }
            pages.json(&RedemptionView::from(redemption))?;
        }
        pages.flush().await?;
    }
    pages.push(b"],\"transfers\":[");
    let mut first = true;
    loop {
        let transfers = session.next_transfers().await?;
        if transfers.is_empty() {
            break;
        }
        for transfer in &transfers {
            if !std::mem::take(&mut first) {
                pages.push(b",");
            }
            pages.json(&TransferLineView::from(transfer))?;
        }
        pages.flush().await?;
    }
    pages.push(b"]},\"audit_entries\":[");
    let mut first = true;
    loop {
        let entries = session.next_audit_entries().await?;
        if entries.is_empty() {
            break;
        }
        for entry in &entries {
            if !std::mem::take(&mut first) {
                pages.push(b",");
            }
            pages.json(&entry.to_json())?;
        }
        pages.flush().await?;
    }
    pages.push(b"],\"processing\":");
    pages.json(&Processing::new(store.policies(), &session.header))?;
    pages.push(b"}");
    pages.end().await
}

async fn csv(store: &Store, session: &mut ExportSession, pages: &mut Pages) -> Result<(), Stop> {
    pages.push(b"record_id,day,kind,variant,quantity,region,reduction_g,points,methodology_version,capped\r\n");
    loop {
        let records = session.next_records(store).await?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            let r = RecordView::from(r);
            let grams = serde_json::to_string(&r.reduction_g).unwrap_or_default();
            let fields = [
                r.record_id.as_str(),
                r.day.as_str(),
                r.kind.as_str(),
                r.variant.as_deref().unwrap_or_default(),
                &r.quantity.map(|q| q.to_string()).unwrap_or_default(),
                r.region.as_deref().unwrap_or_default(),
                &grams,
                &r.points.to_string(),
                r.methodology_version.as_str(),
                if r.capped { "true" } else { "false" },
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    pages.push(b",");
                }
                pages.push(csv_field(field).as_bytes());
            }
            pages.push(b"\r\n");
        }
        pages.flush().await?;
    }
    pages.end().await
}

/// RFC 4180 quoting.
fn csv_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\"")).into()
    } else {
        field.into()
    }
}

/// One side of a transfer of points between the person's linked accounts.
#[derive(serde::Serialize)]
struct TransferLineView {
    transfer_id: String,
    direction: &'static str,
    points: i64,
    on: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_on: Option<String>,
    balance_after: i64,
    audit_seq: u64,
}

impl From<&crate::store::TransferLine> for TransferLineView {
    fn from(t: &crate::store::TransferLine) -> Self {
        Self {
            transfer_id: hex::encode(t.transfer_id),
            direction: if t.received { "in" } else { "out" },
            points: t.points,
            on: t.day.to_string(),
            expires_on: t.expires_on.map(|d| d.to_string()),
            balance_after: t.balance,
            audit_seq: t.audit_seq,
        }
    }
}
