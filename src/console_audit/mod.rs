//! The auditor's console: public, server-rendered pages (no login, no
//! script) that show the audit log's signed checkpoints and check them on
//! the server, say which key and which checkpoint each result depends on,
//! and hand out self-contained proof files for offline checking.
//!
//! Handlers are thin: they read through the store's public audit paths,
//! which return hashes, pseudonymous entries and suppressed aggregates only.

pub mod i18n;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use crate::api::{ApiError, AppState};
use crate::audit::checkpoint::{Checkpoint, NoteVerifier};
use crate::audit::merkle::{self, Hash};
use crate::audit::proof::ProofFile;
use crate::audit::AuditEntry;
use crate::store::{ReductionReport, StoredCheckpoint};
use i18n::Lang;

/// How many checkpoints the history shows and checks.
const HISTORY: u32 = 30;
/// How long a whole-log recomputation is reused: a public page must not
/// let every visitor start one.
const WHOLE_LOG_TTL: Duration = Duration::from_secs(2);

const CSS: &str = include_str!("../../assets/console-audit.css");

/// The console's routes, under `/console/audit`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/audit", get(overview))
        .route("/console/audit/entries", get(lookup))
        .route("/console/audit/entries/{seq}", get(entry))
        .route("/console/audit/entries/{seq}/proof", get(proof))
        .route("/console/audit/console-audit.css", get(css))
        .layer(Extension(Arc::new(WholeLogCache::default())))
        .layer(middleware::map_response(security_headers))
}

/// Every response, errors included, gets the strict headers.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    crate::console::layout::set_page_headers(h);
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

#[derive(Deserialize)]
struct LookupQuery {
    seq: Option<String>,
    lang: Option<String>,
}

fn lang_of(q: Option<&str>, headers: &HeaderMap) -> Lang {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    Lang::pick(q, accept)
}

fn html(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    response
}

async fn css() -> Response {
    let mut response = (StatusCode::OK, CSS).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

/// The result of one check, with what it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    Failed(String),
    NotChecked(String),
}

/// One checkpoint of the history, checked.
pub struct CheckedCheckpoint {
    pub stored: StoredCheckpoint,
    pub parsed: Option<Checkpoint>,
    pub signature: Outcome,
    /// Against the next older checkpoint shown; `None` for the oldest.
    pub consistency: Option<Outcome>,
}

/// The whole log recomputed, once per [`WHOLE_LOG_TTL`] at most.
#[derive(Clone, Debug)]
pub enum WholeLog {
    Verified { entries: u64, checkpoints: usize },
    Failed { seq: u64, reason: String },
    Unavailable(String),
}

#[derive(Default)]
struct WholeLogCache(tokio::sync::Mutex<Option<(Instant, WholeLog)>>);

impl WholeLogCache {
    /// One recomputation at a time; callers meanwhile wait for its result.
    async fn get(&self, state: &AppState) -> WholeLog {
        let mut slot = self.0.lock().await;
        if let Some((at, result)) = slot.as_ref() {
            if at.elapsed() < WHOLE_LOG_TTL {
                return result.clone();
            }
        }
        let result = match state.store.verify_audit(&[]).await {
            Ok(Ok(log)) => WholeLog::Verified {
                entries: log.entries,
                checkpoints: log.checkpoints,
            },
            Ok(Err(e)) => WholeLog::Failed {
                seq: e.seq,
                reason: e.reason,
            },
            Err(e) => {
                tracing::warn!(error = %e, "the auditor console could not recompute the log");
                WholeLog::Unavailable("the log could not be read".into())
            }
        };
        *slot = Some((Instant::now(), result.clone()));
        result
    }
}

/// What the overview shows.
pub struct Overview {
    pub vkey: String,
    pub history: Vec<CheckedCheckpoint>,
    pub whole_log: WholeLog,
    pub report: ReductionReport,
}

fn verifier_of(state: &AppState) -> Result<NoteVerifier, ApiError> {
    NoteVerifier::from_vkey(&state.store.audit_public_key()).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Checks a stored note against the published key.
fn check_note(verifier: &NoteVerifier, stored: &StoredCheckpoint) -> (Option<Checkpoint>, Outcome) {
    match verifier.verify(&stored.note, verifier.name()) {
        Ok(cp) if cp.size == stored.size => (Some(cp), Outcome::Verified),
        Ok(cp) => (
            Some(cp),
            Outcome::Failed("the signed size differs from the size it is stored under".into()),
        ),
        // Still parsed, unverified, so the history can show what it claims.
        Err(e) => {
            let body = stored.note.split_once("\n\n").map(|(body, _)| format!("{body}\n"));
            (
                body.and_then(|b| Checkpoint::parse_body(&b).ok()),
                Outcome::Failed(e.to_string()),
            )
        }
    }
}

async fn overview(
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<WholeLogCache>>,
    headers: HeaderMap,
    q: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let lang = lang_of(q.ok().and_then(|Query(q)| q.lang).as_deref(), &headers);
    let verifier = verifier_of(&state)?;
    let stored = state.store.stored_checkpoints(HISTORY).await?;
    let mut history: Vec<CheckedCheckpoint> = stored
        .into_iter()
        .map(|s| {
            let (parsed, signature) = check_note(&verifier, &s);
            CheckedCheckpoint {
                stored: s,
                parsed,
                signature,
                consistency: None,
            }
        })
        .collect();
    // Newest first: each checkpoint against the next older one.
    for i in 0..history.len().saturating_sub(1) {
        let outcome = match (&history[i + 1].parsed, &history[i].parsed) {
            (Some(old), Some(new)) => match state.store.public_consistency_proof(old.size, new.size).await {
                Ok(proof) => match merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof) {
                    Ok(()) => Outcome::Verified,
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                Err(e) => Outcome::Failed(format!("no consistency proof: {e}")),
            },
            _ => Outcome::NotChecked("a checkpoint does not parse".into()),
        };
        history[i].consistency = Some(outcome);
    }
    let whole_log = cache.get(&state).await;
    let report = state.store.public_reductions(0, 999_912).await?;
    let page = Overview {
        vkey: verifier.vkey(),
        history,
        whole_log,
        report,
    };
    Ok(html(view::overview(lang, &page)))
}

/// The lookup form's target: a redirect to the entry's own address.
async fn lookup(q: Result<Query<LookupQuery>, axum::extract::rejection::QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|_| ApiError::Malformed("the query must be seq and lang".into()))?;
    let seq: u64 = q
        .seq
        .as_deref()
        .map(str::trim)
        .and_then(|s| s.parse().ok())
        .filter(|&s| s >= 1)
        .ok_or_else(|| ApiError::Malformed("seq must be an entry number, 1 or more".into()))?;
    let lang = match q.lang.as_deref() {
        Some("en") => "?lang=en",
        Some("zh-CN") => "?lang=zh-CN",
        _ => "",
    };
    let location = format!("/console/audit/entries/{seq}{lang}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

fn parse_seq(seq: &str) -> Result<u64, ApiError> {
    seq.parse::<u64>()
        .ok()
        .filter(|&s| s >= 1)
        .ok_or_else(|| ApiError::Malformed("the entry number must be 1 or more".into()))
}

/// One entry with everything its checks need.
pub struct EntryPage {
    pub seq: u64,
    pub vkey: String,
    /// The canonical bytes and the decoding, unless retention emptied them.
    pub json: Option<serde_json::Value>,
    pub checkpoint: Option<(StoredCheckpoint, Outcome)>,
    pub leaf: Outcome,
    pub decode: Outcome,
    pub inclusion: Outcome,
    pub path: Vec<Hash>,
    /// The root the checkpoint claims, base64.
    pub root: String,
}

async fn entry_page(state: &AppState, seq: u64) -> Result<(EntryPage, Option<ProofFile>), ApiError> {
    let verifier = verifier_of(state)?;
    let stored = state
        .store
        .public_audit_entry(seq)
        .await?
        .ok_or_else(|| ApiError::NotFound("the log has no entry with this number".into()))?;
    let latest = state.store.stored_checkpoints(1).await?.into_iter().next();
    let mut page = EntryPage {
        seq,
        vkey: verifier.vkey(),
        json: None,
        checkpoint: None,
        leaf: Outcome::NotChecked("retention emptied the entry".into()),
        decode: Outcome::NotChecked("retention emptied the entry".into()),
        inclusion: Outcome::NotChecked("no signed checkpoint covers the entry yet".into()),
        path: Vec::new(),
        root: String::new(),
    };
    // Recomputed from the stored bytes, not taken from the leaf column: an
    // altered entry must fail here even if its row's hashes were left alone.
    let leaf = stored.entry.as_ref().map(|(bytes, _)| merkle::leaf_hash(bytes));
    if let Some((bytes, _)) = &stored.entry {
        page.leaf = if leaf == Some(stored.leaf_hash) {
            Outcome::Verified
        } else {
            Outcome::Failed(format!("entry {seq}'s bytes do not hash to its stored leaf hash"))
        };
        // The store decoded it already; decode again strictly from the bytes
        // shown, so what the page says is what the proof file carries.
        page.decode = match AuditEntry::decode(bytes) {
            Ok(e) if e.seq == seq => {
                page.json = Some(e.to_json());
                Outcome::Verified
            }
            Ok(e) => Outcome::Failed(format!("the entry names itself entry {}", e.seq)),
            Err(e) => Outcome::Failed(e.to_string()),
        };
    }
    let mut file = None;
    if let Some(cp) = latest {
        let (parsed, signature) = check_note(&verifier, &cp);
        if let Some(p) = &parsed {
            page.root = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, p.root);
        }
        if let Some(parsed) = parsed.filter(|p| p.size >= seq) {
            let (_, path) = state.store.public_inclusion_proof(seq - 1, parsed.size).await?;
            if let Some(leaf) = leaf {
                page.inclusion = match merkle::verify_inclusion(&leaf, seq - 1, parsed.size, &path, &parsed.root) {
                    Ok(()) if signature == Outcome::Verified => Outcome::Verified,
                    Ok(()) => {
                        Outcome::Failed("the path leads to the root, but the checkpoint's signature fails".into())
                    }
                    Err(e) => Outcome::Failed(format!("entry {seq} is not in the signed tree: {e}")),
                };
                if let Some((bytes, _)) = &stored.entry {
                    file = Some(ProofFile {
                        vkey: verifier.vkey(),
                        entry: bytes.clone(),
                        index: seq - 1,
                        path: path.clone(),
                        note: cp.note.clone(),
                    });
                }
            }
            page.path = path;
        }
        page.checkpoint = Some((cp, signature));
    }
    Ok((page, file))
}

async fn entry(
    State(state): State<AppState>,
    Path(seq): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let lang = lang_of(q.ok().and_then(|Query(q)| q.lang).as_deref(), &headers);
    let seq = parse_seq(&seq)?;
    let (page, file) = entry_page(&state, seq).await?;
    Ok(html(view::entry(lang, &page, file.is_some())))
}

/// The proof file, as stored: if the log was altered, the file fails
/// offline as the page does online.
async fn proof(State(state): State<AppState>, Path(seq): Path<String>) -> Result<Response, ApiError> {
    let seq = parse_seq(&seq)?;
    let (_, file) = entry_page(&state, seq).await?;
    let file = file.ok_or_else(|| {
        ApiError::NotFound("no proof for this entry: it is emptied or no signed checkpoint covers it yet".into())
    })?;
    let mut response = (StatusCode::OK, file.render()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let disposition = format!("attachment; filename=\"audit-proof-{seq}.txt\"");
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}
