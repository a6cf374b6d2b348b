//! The person's privacy center, served under `/console`: server-rendered
//! pages in Chinese and English that work without JavaScript. A platform
//! that has authenticated its user asks `POST /v1/subjects/{id}/console-links`
//! for a single-use link; opening it burns the token, starts a short
//! session (a `__Host-` cookie) and redirects to a URL without the token.
//! Handlers are thin: every read and change goes through the store's one
//! door, with the session (which names the person by pseudonym only) as
//! the subject.

pub mod i18n;
pub mod layout;
mod pages;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Extension, Form, Router};
use serde::Deserialize;

use crate::api::detach::Slot;
use crate::api::export::Format;
use crate::api::{ApiError, AppState};
use crate::policy::{Language, Purpose};
use crate::store::{ConsoleSession, Kinds, StoreError, CONSOLE_MAX_MINUTES};
use i18n::Text;

/// The session cookie. `__Host-`: the browser keeps it only if it is
/// Secure, has no Domain and has Path=/, so no sibling host can plant one.
pub const SESSION_COOKIE: &str = "__Host-cl_session";
/// The language the person chose with the switch.
pub const LANG_COOKIE: &str = "cl_lang";

/// The stylesheet, in the binary: `serve` needs no files beside it.
const CSS: &str = include_str!("../../assets/console.css");

/// The console's routes, nested under `/console` by `api::router`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/open/{token}", get(open))
        .route("/account", get(account))
        .route("/records", get(records))
        .route("/consents", get(consents))
        .route("/consents/{purpose}", axum::routing::post(change_consent))
        .route("/accesses", get(accesses))
        .route("/export", get(export_page))
        .route("/export/data.json", get(export_json))
        .route("/export/records.csv", get(export_csv))
        .route("/erase", get(erase_page).post(erase))
        .route("/assets/console.css", get(css))
        .fallback(not_found)
        .layer(middleware::from_fn(layout::security_headers))
}

/// The query every page takes: the language switch, and a cursor where a
/// page has more.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    lang: Option<String>,
    cursor: Option<String>,
}

/// The page's language: the switch (`?lang=`), then the cookie it set,
/// then `Accept-Language`.
pub struct Lang(pub Language);

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("lang="))
                .find_map(Language::parse)
        });
        let from_cookie = || cookie(&parts.headers, LANG_COOKIE).and_then(|v| Language::parse(&v));
        let language = from_query.or_else(from_cookie).unwrap_or_else(|| {
            Language::negotiate(parts.headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()))
        });
        Ok(Lang(language))
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether the client asked for JSON (an API client, not a browser).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") || v.contains("application/problem+json"))
}

/// What a request in a session has: the session, its language and whether
/// errors go out as JSON.
pub struct Ctx {
    pub session: ConsoleSession,
    pub language: Language,
    pub json: bool,
}

impl Ctx {
    fn t(&self) -> &'static Text {
        i18n::text(self.language)
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Lang(language) = Lang::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|e| match e {});
        let json = wants_json(&parts.headers);
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(failure(
                language,
                json,
                StoreError::ConsoleSessionInvalid,
                parts.uri.path(),
            ));
        };
        match state.store.console_session(&id).await {
            Ok(session) => Ok(Ctx {
                session,
                language,
                json,
            }),
            Err(e) => Err(failure(language, json, e, parts.uri.path())),
        }
    }
}

/// A refusal or failure: a plain page for browsers, problem JSON for API
/// clients. Nothing in it comes from the request but its language.
fn failure(language: Language, json: bool, e: StoreError, path: &str) -> Response {
    let e = match e {
        // A session whose person was erased since is simply over.
        StoreError::SubjectNotFound => StoreError::ConsoleSessionInvalid,
        e => e,
    };
    let t = i18n::text(language);
    let (title, text) = match &e {
        StoreError::ConsoleLinkInvalid => (t.link_invalid_title, t.link_invalid),
        StoreError::ConsoleSessionInvalid => (t.session_invalid_title, t.session_invalid),
        _ => (t.failed_title, t.failed),
    };
    let api = ApiError::Store(e);
    if json {
        return api.into_response();
    }
    let status = StatusCode::from_u16(api.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %api, "console request failed");
    }
    let mut response = layout::message(language, t, status, title, text, path);
    if matches!(api, ApiError::Store(StoreError::ConsoleSessionInvalid)) {
        clear_session(&mut response);
    }
    response
}

/// The `Set-Cookie` that removes the session cookie.
fn clear_session(response: &mut Response) {
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("__Host-cl_session=; Secure; HttpOnly; Path=/; SameSite=Lax; Max-Age=0"),
    );
}

/// Remembers a language chosen with the switch.
fn with_lang_cookie(mut response: Response, query: &PageQuery) -> Response {
    if let Some(language) = query.lang.as_deref().and_then(Language::parse) {
        let value = format!(
            "{LANG_COOKIE}={}; Path=/console; SameSite=Lax; Max-Age=31536000",
            language.as_str()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A 303 to a page of the console.
fn see_other(location: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

/// `GET /console/open/{token}`: burns the token, starts the session and
/// redirects to the account page. The token is in no response, no log line
/// (logs show the route template) and no later URL.
async fn open(
    State(state): State<AppState>,
    Lang(language): Lang,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let json = wants_json(&headers);
    match state.store.open_console_link(&token).await {
        Ok((id, _)) => {
            let mut response = see_other("/console/account");
            // Lax, not Strict: the link is followed from the platform's
            // app or site, a cross-site navigation, and the redirect's
            // target must see the cookie.
            let cookie = format!(
                "{SESSION_COOKIE}={id}; Secure; HttpOnly; Path=/; SameSite=Lax; Max-Age={}",
                CONSOLE_MAX_MINUTES * 60
            );
            match HeaderValue::from_str(&cookie) {
                Ok(value) => {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                    response
                }
                Err(_) => ApiError::Internal("session cookie".into()).into_response(),
            }
        }
        Err(e) => failure(language, json, e, "/console/open"),
    }
}

async fn account(State(state): State<AppState>, ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    let access = ctx.session.access(Purpose::Accounting);
    match state.store.account(&access, &ctx.session).await {
        Ok(account) => with_lang_cookie(pages::account(&ctx, state.store.policies(), &account), &q),
        Err(e) => failure(ctx.language, ctx.json, e, "/console/account"),
    }
}

/// Records shown per page.
const RECORDS_PER_PAGE: u32 = 20;

async fn records(State(state): State<AppState>, ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    let cursor = q.cursor.as_deref().and_then(crate::api::views::parse_cursor);
    let access = ctx.session.access(Purpose::Accounting);
    match state
        .store
        .records(&access, &ctx.session, RECORDS_PER_PAGE, cursor)
        .await
    {
        Ok(page) => with_lang_cookie(
            pages::records(&ctx, state.store.policies(), &page, cursor.is_some()),
            &q,
        ),
        Err(e) => failure(ctx.language, ctx.json, e, "/console/records"),
    }
}

async fn consents(State(state): State<AppState>, ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    let access = ctx.session.access(Purpose::Accounting);
    match state.store.consents(&access, &ctx.session).await {
        Ok(held) => with_lang_cookie(pages::consents(&ctx, state.store.policies(), &held), &q),
        Err(e) => failure(ctx.language, ctx.json, e, "/console/consents"),
    }
}

/// The fields of every state-changing form.
#[derive(Deserialize)]
pub struct ChangeForm {
    csrf: String,
    /// For consents: `grant` or `withdraw`.
    #[serde(default)]
    action: Option<String>,
    /// The language the notice was shown in.
    #[serde(default)]
    lang: Option<String>,
}

/// A state-changing form is taken only from this site: the browser says so
/// (`Origin` naming this host, or `Sec-Fetch-Site: same-origin`), and the
/// form carries the session's token. Either alone would do against most
/// attacks; both leave none that a same-site cookie does not already stop.
fn same_origin(headers: &HeaderMap, ctx: &Ctx, form: &ChangeForm) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                == Some(host)
        }
        _ => false,
    };
    let fetch_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin");
    let token_ok = constant_time_eq(form.csrf.as_bytes(), ctx.session.csrf.as_bytes());
    (origin_ok || fetch_ok) && token_ok
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refused(ctx: &Ctx, path: &str) -> Response {
    let t = ctx.t();
    if ctx.json {
        return crate::api::Problem::new(
            StatusCode::FORBIDDEN,
            "console-csrf",
            "Cross-site request refused",
            "a console form must be sent from the console's own pages; nothing was changed",
        )
        .into_response();
    }
    layout::message(ctx.language, t, StatusCode::FORBIDDEN, t.refused_title, t.refused, path)
}

async fn change_consent(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(purpose): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Response {
    if !same_origin(&headers, &ctx, &form) {
        return refused(&ctx, "/console/consents");
    }
    let Some(purpose) = Purpose::parse(&purpose) else {
        return failure(
            ctx.language,
            ctx.json,
            StoreError::Invalid("no such purpose".into()),
            "/console/consents",
        );
    };
    let access = ctx.session.access(purpose);
    let shown_in = form.lang.as_deref().and_then(Language::parse).unwrap_or(ctx.language);
    let result = match form.action.as_deref() {
        Some("grant") => {
            let version = state.store.policies().consent.get(purpose).notice_version;
            state
                .store
                .grant_consent_in(&access, &ctx.session, version, Kinds::All, Some(shown_in))
                .await
        }
        Some("withdraw") => state.store.withdraw_consent(&access, &ctx.session).await,
        _ => Err(StoreError::Invalid("action is grant or withdraw".into())),
    };
    match result {
        Ok(_) => see_other("/console/consents"),
        Err(e) => failure(ctx.language, ctx.json, e, "/console/consents"),
    }
}

async fn accesses(State(state): State<AppState>, ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    let access = ctx.session.access(Purpose::Accounting);
    match state.store.subject_accesses(&access, &ctx.session).await {
        Ok(list) => with_lang_cookie(pages::accesses(&ctx, &list), &q),
        Err(e) => failure(ctx.language, ctx.json, e, "/console/accesses"),
    }
}

async fn export_page(ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    with_lang_cookie(pages::export(&ctx), &q)
}

async fn export_json(state: State<AppState>, slot: Extension<Slot>, ctx: Ctx) -> Response {
    download(
        state,
        slot,
        ctx,
        Format::Json,
        "attachment; filename=\"carbon-account.json\"",
    )
    .await
}

async fn export_csv(state: State<AppState>, slot: Extension<Slot>, ctx: Ctx) -> Response {
    download(
        state,
        slot,
        ctx,
        Format::Csv,
        "attachment; filename=\"carbon-records.csv\"",
    )
    .await
}

/// The API's export, streamed the same way, as a download.
async fn download(
    State(state): State<AppState>,
    Extension(slot): Extension<Slot>,
    ctx: Ctx,
    format: Format,
    disposition: &'static str,
) -> Response {
    let access = ctx.session.access(Purpose::Accounting);
    match state.store.open_export(&access, &ctx.session).await {
        Ok(export) => {
            let mut response = crate::api::export::respond(state, slot, export, format);
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
            response
        }
        Err(e) => failure(ctx.language, ctx.json, e, "/console/export"),
    }
}

async fn erase_page(ctx: Ctx, Query(q): Query<PageQuery>) -> Response {
    with_lang_cookie(pages::erase(&ctx), &q)
}

/// Erases the person and shows the receipt; the erasure ends every session
/// and link of theirs.
async fn erase(State(state): State<AppState>, ctx: Ctx, headers: HeaderMap, Form(form): Form<ChangeForm>) -> Response {
    if !same_origin(&headers, &ctx, &form) {
        return refused(&ctx, "/console/erase");
    }
    let access = ctx.session.access(Purpose::Accounting);
    let receipt = match state.store.erase_subject(&access, &ctx.session).await {
        Ok(receipt) => receipt,
        Err(e) => return failure(ctx.language, ctx.json, e, "/console/erase"),
    };
    // The erasure ended every session and link of the person with it.
    let mut response = pages::erased(&ctx, &receipt);
    clear_session(&mut response);
    response
}

async fn css() -> Response {
    let mut response = CSS.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

async fn not_found(Lang(language): Lang, headers: HeaderMap) -> Response {
    if wants_json(&headers) {
        return ApiError::NotFound("no such console page".into()).into_response();
    }
    let t = i18n::text(language);
    layout::message(
        language,
        t,
        StatusCode::NOT_FOUND,
        t.not_found_title,
        t.not_found,
        "/console/account",
    )
}
