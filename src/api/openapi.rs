//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the
//! handlers' `#[utoipa::path]` attributes and the views' `ToSchema`
//! derives, with the problem document and the bearer scheme.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{json, ApiError};

/// An RFC 9457 problem document, as every 4xx and 5xx answer carries it
/// (`application/problem+json`). Its fields never echo a refused value.
#[derive(ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)]
pub struct ProblemSchema {
    /// `urn:carbon-ledger:problem:<slug>`; docs/problems.md lists them.
    #[schema(rename = "type")]
    type_uri: String,
    title: String,
    status: u16,
    detail: String,
    /// JSON Pointer to the offending request field.
    field: Option<String>,
}

/// One behaviour event. Fields the service does not collect are refused,
/// naming the field; `data` holds the kind's fields (see
/// `GET /v1/methodology`).
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub struct EventSchema {
    /// The platform's id of this event, for idempotent retries.
    #[schema(min_length = 1, max_length = 128)]
    event_id: String,
    /// The platform's own id of the person; pseudonymized on arrival.
    #[schema(min_length = 1, max_length = 128)]
    subject: String,
    /// A behaviour kind of the methodology.
    kind: String,
    /// RFC 3339 date-time; kept to the day.
    #[schema(format = DateTime)]
    occurred_at: String,
    /// Kept to the city.
    region: Option<String>,
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

/// A batch of events (at most 1,000).
#[derive(Serialize, ToSchema)]
#[schema(as = EventBatch)]
#[allow(dead_code)]
pub struct EventBatchSchema {
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<EventSchema>,
}

/// `POST /v1/events` takes one event or a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EventsBody {
    One(EventSchema),
    Batch(EventBatchSchema),
}

/// A consent grant.
#[derive(ToSchema)]
#[schema(as = ConsentGrant)]
#[allow(dead_code)]
pub struct ConsentGrantSchema {
    /// The notice version shown to the person (must be current).
    notice_version: u32,
    /// The kinds covered; absent for every kind, now and later.
    kinds: Option<Vec<String>>,
}

/// A redemption.
#[derive(ToSchema)]
#[schema(as = RedemptionRequest)]
#[allow(dead_code)]
pub struct RedemptionRequestSchema {
    /// Points to spend, 1 to 1,000,000,000, at most the balance.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    points: i64,
    /// The platform's own id of the redemption: a retry with the same one
    /// and the same body gets the original receipt. 1 to 128 bytes.
    #[schema(min_length = 1, max_length = 128)]
    reference: String,
    /// At most 200 bytes.
    #[schema(max_length = 200)]
    description: Option<String>,
}

/// Moving points to the person's linked account on another platform.
#[derive(ToSchema)]
#[schema(as = TransferRequest)]
#[allow(dead_code)]
pub struct TransferRequestSchema {
    /// Points to move, 1 to 1,000,000,000, at most the balance.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    points: i64,
    /// The platform's own id of the transfer: a retry with the same one and
    /// the same body gets the original receipt. 1 to 128 bytes.
    #[schema(min_length = 1, max_length = 128)]
    reference: String,
}

/// Redeeming a link code the other platform issued.
#[derive(ToSchema)]
#[schema(as = LinkRequest)]
#[allow(dead_code)]
pub struct LinkRequestSchema {
    /// The code, as the person carries it.
    code: String,
}

/// Per-event receipts.
#[derive(ToSchema)]
#[schema(as = Receipts)]
#[allow(dead_code)]
pub struct ReceiptsSchema {
    #[schema(value_type = Vec<Object>)]
    receipts: Vec<serde_json::Value>,
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "carbon-ledger", description = "Privacy-preserving accounting for personal carbon accounts"),
    paths(
        super::events::post_events,
        super::subjects::account,
        super::subjects::erase,
        super::subjects::records,
        super::export::export,
        super::consents::list,
        super::consents::grant,
        super::consents::withdraw,
        super::consents::purposes,
        super::audit::checkpoint,
        super::audit::public_key,
        super::audit::entries,
        super::audit::inclusion,
        super::audit::consistency,
        super::audit::reductions,
        super::meta::methodology,
        super::meta::healthz,
        super::meta::readyz,
        super::points::redeem,
        super::points::refund,
        super::points::list,
        super::points::transfer,
        super::links::issue_code,
        super::links::redeem,
        super::links::unlink,
        super::links::linked_account,
        super::console_links::issue,
        super::metrics::scrape,
        openapi_json,
    ),
    components(schemas(
        ProblemSchema,
        EventSchema,
        EventBatchSchema,
        ConsentGrantSchema,
        RedemptionRequestSchema,
        LinkRequestSchema,
        TransferRequestSchema
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "events", description = "Recording behaviours"),
        (name = "subjects", description = "A platform's view of its users: accounts, records, consents, export, erasure"),
        (name = "points", description = "Redeeming and refunding a person's points"),
        (name = "links", description = "Linking a person's accounts across platforms, with consent on both sides"),
        (name = "audit", description = "Verification of the hash-chained audit log"),
        (name = "operations", description = "Health, metrics and this description"),
    )
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json() -> Response {
    json(StatusCode::OK, document())
}

/// The documentation page's policy: everything from this origin, nothing
/// inline except the data: images Swagger UI draws its icons with.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                        connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/docs`: Swagger UI over `/openapi.json`, its assets compiled into the
/// binary (nothing is fetched at build or run time), under a strict CSP.
pub fn docs<S: Clone + Send + Sync + 'static>() -> Router<S> {
    use utoipa_swagger_ui::{Config, SwaggerUi};
    Router::from(SwaggerUi::new("/docs").config(Config::new(["/openapi.json"])))
        .layer(axum::middleware::map_response(docs_headers))
}

/// The viewer answers a missing file with a bare 404 and a failure with
/// its error text: both become problem documents here.
async fn docs_headers(response: Response) -> Response {
    let mut response = match response.status() {
        StatusCode::NOT_FOUND => ApiError::NotFound("no such documentation file".into()).into_response(),
        s if s.is_server_error() => ApiError::Internal("documentation viewer failed".into()).into_response(),
        _ => response,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves, with every method, is described.
    #[test]
    fn every_routed_path_is_in_the_document() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut routes = 0;
        for (path, method) in super::super::route_table() {
            routes += 1;
            let op = &paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is routed but not in the OpenAPI document"))
                [method.as_str().to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} is routed but not in the OpenAPI document"
            );
            assert!(op["responses"].is_object());
        }
        let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |m| m.len())).sum();
        assert_eq!(documented, routes, "the document describes no route the router lacks");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["type"].is_object());
    }
}
