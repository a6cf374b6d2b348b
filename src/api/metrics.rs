//! Prometheus metrics: requests by route template and status, latency,
//! events recorded and rejected by reason, the audit log's size and how far
//! its signed checkpoints lag, background runs.
//!
//! Labels are closed sets chosen by the code — route templates, methods,
//! statuses, problem slugs, outcomes — never anything a request carries:
//! no subject id, pseudonym, tenant key or tenant name can become a label,
//! and the number of series stays bounded whatever clients send.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::domain::Role;

/// The exposition format `prometheus-client` writes (OpenMetrics text, which
/// Prometheus scrapes natively).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template (`/v1/subjects/{id}/account`), never the path.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    /// recorded, duplicate or rejected.
    outcome: &'static str,
    /// The problem slug of a rejection (`consent-required`, ...); empty otherwise.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// requests or events: which per-tenant budget ran out.
    budget: &'static str,
}

/// Every metric of one server process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    events: Family<EventLabels, Counter>,
    sweeps: Family<OutcomeLabels, Counter>,
    checkpoints: Family<OutcomeLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    shed: Counter,
    audit_entries: Gauge,
    audit_unsigned: Gauge,
    checkpoint_age: Gauge,
    in_flight: Gauge,
    /// When this process last signed (or confirmed) a checkpoint.
    last_checkpoint: Mutex<Option<Instant>>,
    started: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("carbon_ledger");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let events = Family::<EventLabels, Counter>::default();
        let sweeps = Family::<OutcomeLabels, Counter>::default();
        let checkpoints = Family::<OutcomeLabels, Counter>::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        let shed = Counter::default();
        let audit_entries = Gauge::default();
        let audit_unsigned = Gauge::default();
        let checkpoint_age = Gauge::default();
        let in_flight = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            latency.clone(),
        );
        registry.register(
            "events",
            "Events by outcome (recorded, duplicate, rejected) and rejection reason",
            events.clone(),
        );
        registry.register("retention_sweeps", "Retention sweeper runs by outcome", sweeps.clone());
        registry.register(
            "audit_checkpoint_runs",
            "Periodic checkpoint signing runs by outcome",
            checkpoints.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429 by the per-tenant budget that ran out",
            rate_limited.clone(),
        );
        registry.register(
            "shed_requests",
            "Requests refused with 503 because every slot for work stayed taken",
            shed.clone(),
        );
        registry.register("audit_log_entries", "Entries in the audit log", audit_entries.clone());
        registry.register(
            "audit_entries_unsigned",
            "Audit entries not yet covered by a signed checkpoint",
            audit_unsigned.clone(),
        );
        registry.register(
            "audit_checkpoint_age_seconds",
            "Seconds since this process last signed or confirmed a checkpoint (since start if never)",
            checkpoint_age.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests whose work is under way",
            in_flight.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            events,
            sweeps,
            checkpoints,
            rate_limited,
            shed,
            audit_entries,
            audit_unsigned,
            checkpoint_age,
            in_flight,
            last_checkpoint: Mutex::new(None),
            started: Instant::now(),
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one event's outcome; `problem_type` is the rejection's problem
    /// type URI, whose slug becomes the reason.
    pub fn observe_event(&self, outcome: &'static str, problem_type: Option<&str>) {
        let reason = problem_type
            .map(|t| t.rsplit(':').next().unwrap_or(t).to_owned())
            .unwrap_or_default();
        self.events.get_or_create(&EventLabels { outcome, reason }).inc();
    }

    pub fn observe_sweep(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.sweeps.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn observe_checkpoint(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.checkpoints.get_or_create(&OutcomeLabels { outcome }).inc();
        if ok {
            if let Ok(mut last) = self.last_checkpoint.lock() {
                *last = Some(Instant::now());
            }
        }
    }

    pub fn observe_rate_limited(&self, budget: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { budget }).inc();
    }

    /// The exposition text, gauges set from `audit` (entries, entries
    /// covered by the latest checkpoint) and the in-flight counts.
    pub fn render(&self, audit: Option<(u64, u64)>, in_flight: u64, shed_total: u64) -> String {
        if let Some((entries, signed)) = audit {
            self.audit_entries.set(entries as i64);
            self.audit_unsigned.set(entries.saturating_sub(signed) as i64);
        }
        let since = self
            .last_checkpoint
            .lock()
            .ok()
            .and_then(|last| *last)
            .unwrap_or(self.started);
        self.checkpoint_age.set(since.elapsed().as_secs() as i64);
        self.in_flight.set(in_flight as i64);
        // A counter only goes up: add what was shed since the last scrape.
        let seen = self.shed.get();
        if shed_total > seen {
            self.shed.inc_by(shed_total - seen);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Records every answered request by route template, and logs it. Paths
/// carry subject ids, so neither the log nor a label ever shows one.
pub(super) async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", |m| m.as_str())
        .to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(method.as_str(), &route, response.status(), elapsed);
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        elapsed_ms = elapsed.as_millis() as u64,
        "request"
    );
    response
}

/// `GET /metrics`, for operators' and auditors' keys only: the figures carry
/// no personal data, but how busy each route is is nobody else's business.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus/OpenMetrics text exposition", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No valid API key", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
        (status = 403, description = "The key's role is neither admin nor auditor", body = super::openapi::ProblemSchema, content_type = "application/problem+json"),
    )
)]
pub async fn scrape(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if !matches!(caller.0.role, Role::Admin | Role::Auditor) {
        return Err(ApiError::Store(crate::store::StoreError::Forbidden("read metrics")));
    }
    let audit = match state.store.audit_size().await {
        Ok(sizes) => Some(sizes),
        Err(e) => {
            tracing::warn!(error = %e, "reading the audit log size for metrics failed");
            None
        }
    };
    let body = state
        .metrics
        .render(audit, state.in_flight.in_use() as u64, state.in_flight.shed_count());
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_names_route_templates_and_reasons() {
        let m = Metrics::new();
        m.observe_request(
            "GET",
            "/v1/subjects/{id}/account",
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.observe_event("rejected", Some("urn:carbon-ledger:problem:consent-required"));
        m.observe_sweep(true);
        let text = m.render(Some((10, 7)), 2, 1);
        assert!(text.contains(
            r#"carbon_ledger_http_requests_total{method="GET",route="/v1/subjects/{id}/account",status="200"} 1"#
        ));
        assert!(text.contains(r#"carbon_ledger_events_total{outcome="rejected",reason="consent-required"} 1"#));
        assert!(text.contains("carbon_ledger_audit_log_entries 10"));
        assert!(text.contains("carbon_ledger_audit_entries_unsigned 3"));
        assert!(text.contains(r#"carbon_ledger_retention_sweeps_total{outcome="ok"} 1"#));
        assert!(text.contains("carbon_ledger_shed_requests_total 1"));
        assert!(text.contains("carbon_ledger_http_request_duration_seconds_bucket"));
        // The shed counter follows the total, not the number of scrapes.
        assert!(m.render(None, 0, 1).contains("carbon_ledger_shed_requests_total 1"));
    }
}
