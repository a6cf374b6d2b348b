//! The HTTP API: routing, authentication, request logging and thin handlers
//! that call the domain and the access layer.

mod audit;
mod consents;
mod detach;
mod events;
mod export;
mod extract;
mod meta;
pub mod problem;
mod subjects;
mod views;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
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
// For `crate::fuzzing`: the untrusted-input paths, without their handlers.
pub(crate) use events::{parse_body, Parsed};
pub(crate) use extract::parse_strict;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// The work of requests in flight, which their clients cannot cancel.
    pub in_flight: Arc<InFlight>,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            in_flight: Arc::new(InFlight::default()),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(events::post_events))
        .route("/v1/subjects/{id}/account", get(subjects::account))
        .route("/v1/subjects/{id}", delete(subjects::erase))
        .route("/v1/subjects/{id}/records", get(subjects::records))
        .route("/v1/subjects/{id}/export", get(export::export))
        .route("/v1/subjects/{id}/consents", get(consents::list))
        .route(
            "/v1/subjects/{id}/consents/{purpose}",
            put(consents::grant).delete(consents::withdraw),
        )
        .route("/v1/consent/purposes", get(consents::purposes))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/audit/entries", get(audit::entries))
        .route("/v1/audit/proofs/inclusion", get(audit::inclusion))
        .route("/v1/audit/proofs/consistency", get(audit::consistency))
        .route("/v1/reports/reductions", get(audit::reductions))
        .route("/v1/methodology", get(meta::methodology))
        .route("/healthz", get(meta::healthz))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(catch_panic))
        // Outermost: everything below runs to its end in a task of its own.
        .layer(middleware::from_fn_with_state(state.in_flight.clone(), detach::detach))
        .with_state(state)
}

/// Logs each request by its route template, never its path: paths carry
/// subject ids.
async fn log_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", |m| m.as_str())
        .to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
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
            .route("/boom", get(boom))
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
