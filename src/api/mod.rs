//! The HTTP API: routing, authentication, request logging and thin handlers
//! that call the domain and the access layer.

mod audit;
mod consents;
mod console_links;
pub(crate) mod detach;
mod events;
pub(crate) mod export;
mod extract;
pub mod limits;
mod links;
mod meta;
pub mod metrics;
pub mod openapi;
mod points;
pub mod problem;
mod subjects;
pub(crate) mod views;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use futures_util::FutureExt;
use serde::Serialize;

use crate::store::Store;
pub use problem::{ApiError, Problem};

/// The largest request body accepted: a full batch of 1,000 events fits
/// with room to spare.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// The most events one request may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;

pub use detach::{InFlight, MAX_IN_FLIGHT};
pub use limits::{Limits, LimitsConfig};
pub use metrics::Metrics;
// For `crate::fuzzing`: the untrusted-input paths, without their handlers.
pub(crate) use events::{parse_body, Parsed};
pub(crate) use extract::parse_strict;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// The work of requests in flight, which their clients cannot cancel.
    pub in_flight: Arc<InFlight>,
    pub metrics: Arc<Metrics>,
    /// Per-tenant rate limits and quotas.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// A state with fresh metrics and no per-tenant limits.
    pub fn new(store: Arc<Store>) -> Self {
        Self::with(store, Arc::new(Metrics::new()), Limits::default())
    }

    pub fn with(store: Arc<Store>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            store,
            in_flight: Arc::new(InFlight::default()),
            metrics,
            limits: Arc::new(limits),
        }
    }
}

/// One route: its path template, its method, and the handler for them.
type Route = (&'static str, Method, MethodRouter<AppState>);

/// `route!(GET "/path" => handler)`: the method is written once, so the
/// table cannot name one method and route another.
macro_rules! route {
    ($method:ident $path:literal => $handler:path) => {
        ($path, Method::$method, on(MethodFilter::$method, $handler))
    };
}

/// Every route, in one place: the router is built from it and the OpenAPI
/// test holds the document to it.
fn routes() -> Vec<Route> {
    vec![
        route!(POST "/v1/events" => events::post_events),
        route!(GET "/v1/subjects/{id}/account" => subjects::account),
        route!(DELETE "/v1/subjects/{id}" => subjects::erase),
        route!(GET "/v1/subjects/{id}/records" => subjects::records),
        route!(GET "/v1/subjects/{id}/export" => export::export),
        route!(POST "/v1/subjects/{id}/redemptions" => points::redeem),
        route!(GET "/v1/subjects/{id}/redemptions" => points::list),
        route!(POST "/v1/subjects/{id}/redemptions/{reference}/refund" => points::refund),
        route!(GET "/v1/subjects/{id}/consents" => consents::list),
        route!(PUT "/v1/subjects/{id}/consents/{purpose}" => consents::grant),
        route!(DELETE "/v1/subjects/{id}/consents/{purpose}" => consents::withdraw),
        route!(POST "/v1/subjects/{id}/link-codes" => links::issue_code),
        route!(POST "/v1/subjects/{id}/links" => links::redeem),
        route!(DELETE "/v1/subjects/{id}/links/{link}" => links::unlink),
        route!(GET "/v1/subjects/{id}/linked-account" => links::linked_account),
        route!(POST "/v1/subjects/{id}/links/{link}/transfers" => points::transfer),
        route!(POST "/v1/subjects/{id}/console-links" => console_links::issue),
        route!(GET "/v1/consent/purposes" => consents::purposes),
        route!(GET "/v1/audit/checkpoint" => audit::checkpoint),
        route!(GET "/v1/audit/public-key" => audit::public_key),
        route!(GET "/v1/audit/entries" => audit::entries),
        route!(GET "/v1/audit/proofs/inclusion" => audit::inclusion),
        route!(GET "/v1/audit/proofs/consistency" => audit::consistency),
        route!(GET "/v1/reports/reductions" => audit::reductions),
        route!(GET "/v1/methodology" => meta::methodology),
        route!(GET "/healthz" => meta::healthz),
        route!(GET "/readyz" => meta::readyz),
        route!(GET "/metrics" => metrics::scrape),
        route!(GET "/openapi.json" => openapi::openapi_json),
    ]
}

/// A moment as RFC 3339 text, for expiry times in answers.
fn rfc3339(at: time::OffsetDateTime) -> Result<String, ApiError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(format!("formatting a time: {e}")))
}

/// The routed paths and methods.
pub fn route_table() -> Vec<(&'static str, Method)> {
    routes().into_iter().map(|(path, method, _)| (path, method)).collect()
}

pub fn router(state: AppState) -> Router {
    // Routes on one path merge into one method router.
    let router = routes()
        .into_iter()
        .fold(Router::new(), |router, (path, _, handler)| router.route(path, handler));
    router
        .merge(openapi::docs())
        // The auditor's console: public pages under /console/audit.
        .merge(crate::console_audit::router())
        .nest("/console", crate::console::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::observe))
        .layer(middleware::from_fn(catch_panic))
        // Outermost: everything below runs to its end in a task of its own.
        .layer(middleware::from_fn_with_state(state.in_flight.clone(), detach::detach))
        .with_state(state)
}

/// A panic in a handler becomes a 500 problem instead of a dropped
/// connection. The transaction it was in is rolled back on drop.
async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::Internal("handler panicked".into()).into_response(),
    }
}

/// A JSON response with a status.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => ApiError::Internal(format!("response serialization: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    /// A panic in a handler reaches the client as a 500 problem document,
    /// not as a dropped connection.
    #[tokio::test]
    async fn a_panicking_handler_answers_with_a_problem() {
        let app = Router::new()
            .route("/boom", axum::routing::get(boom))
            .layer(middleware::from_fn(catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let response = reqwest::get(format!("http://{addr}/boom")).await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["type"], "urn:carbon-ledger:problem:internal");
        assert!(
            !body.to_string().contains("a bug"),
            "the panic message stays in the server"
        );
    }
}
