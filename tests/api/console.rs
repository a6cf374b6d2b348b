//! The person's privacy center: console links and sessions. Single use,
//! expiry by the service's clock, binding to one tenant and one person,
//! CSRF refused, the security headers on every response, and no external
//! id in any response, URL or cookie.

use time::Duration;

use carbon_ledger::domain::Role;
use carbon_ledger::store::{Access, Actor, Purpose, StoreError};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{event, TestApp};

on_both_engines!(
    a_link_opens_one_session_once,
    links_and_sessions_expire,
    sessions_are_bound_to_their_tenant_and_person,
    forms_from_elsewhere_are_refused,
    no_external_id_leaves_the_service,
    erasure_from_the_console_ends_the_session,
);

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Records a clean plate for `subject` (144 g, 5 points).
async fn seed(app: &TestApp, subject: &str) {
    let mut e = event(&format!("{subject}-plate"), subject, "clean_plate", json!({}));
    e.as_object_mut().unwrap().remove("data");
    let (status, body) = app.post_enrolled(&e).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["receipts"][0]["points"], 5, "{body}");
}

async fn mint(app: &TestApp, key: &str, subject: &str) -> (StatusCode, Value) {
    app.send(
        app.client
            .post(app.url(&format!("/v1/subjects/{subject}/console-links")))
            .bearer_auth(key),
    )
    .await
}

/// Mints a link and returns its path.
async fn link(app: &TestApp, subject: &str) -> String {
    let (status, body) = mint(app, &app.key, subject).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["path"].as_str().unwrap().to_owned()
}

fn assert_security_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

/// Opens the link; returns the session cookie's value.
async fn open(app: &TestApp, path: &str) -> String {
    let response = browser().get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_security_headers(response.headers());
    assert_eq!(response.headers()[LOCATION], "/console/account");
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "a __Host- cookie names no domain: {cookie}");
    let value = cookie
        .strip_prefix("__Host-cl_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    assert!(!path.contains(&value), "the session id is not the token");
    value
}

/// GETs a console page in the session; returns status, headers and body.
async fn page(app: &TestApp, session: &str, path: &str) -> (StatusCode, HeaderMap, String) {
    let response = browser()
        .get(app.url(path))
        .header("cookie", format!("__Host-cl_session={session}"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

/// The session's form token, from a page that has a form.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn a_link_opens_one_session_once(app: TestApp) {
    seed(&app, "u-c1").await;
    let path = link(&app, "u-c1").await;
    let session = open(&app, &path).await;
    let (status, headers, html) = page(&app, &session, "/console/account?lang=en").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_security_headers(&headers);
    assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains("id=\"reduction-g\">144"), "{html}");
    assert!(html.contains("id=\"points-balance\">5"), "{html}");
    assert!(!html.contains("<script"), "no script at all");

    // Used: a plain page says so, and nothing else happens.
    let again = browser().get(app.url(&path)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_security_headers(again.headers());
    assert!(again.headers().get(SET_COOKIE).is_none());
    assert!(again.text().await.unwrap().contains("<html"));
    // API clients get a problem document.
    let (status, body) = app
        .send(browser().get(app.url(&path)).header("accept", "application/json"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "urn:carbon-ledger:problem:console-link-invalid");
    // Forged tokens likewise.
    for forged in ["/console/open/AAAA", "/console/open/x", &format!("{path}A")] {
        let (status, _) = app
            .send(browser().get(app.url(forged)).header("accept", "application/json"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{forged}");
    }
    // No cookie, or a made-up one: no session.
    let (status, _, _) = page(&app, "made-up", "/console/account").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .send(
            browser()
                .get(app.url("/console/records"))
                .header("accept", "application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "urn:carbon-ledger:problem:console-session-invalid");

    // Each page is an audited read; the link and the opening are logged.
    let entries = app.audit_entries(0, 1000).await.unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| carbon_ledger::store::audit_kind_of(&e.action))
        .collect();
    assert!(
        kinds.contains(&"console_link_issued") && kinds.contains(&"console_opened") && kinds.contains(&"read_account"),
        "{kinds:?}"
    );
}

async fn links_and_sessions_expire(app: TestApp) {
    seed(&app, "u-c2").await;
    // A link not opened within 10 minutes is dead.
    let path = link(&app, "u-c2").await;
    app.clock.advance(Duration::seconds(10 * 60 + 1));
    let (status, _) = app
        .send(browser().get(app.url(&path)).header("accept", "application/json"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Idle for 15 minutes: over. Each request moves the idle limit on.
    let session = open(&app, &link(&app, "u-c2").await).await;
    for _ in 0..3 {
        app.clock.advance(Duration::seconds(14 * 60));
        assert_eq!(page(&app, &session, "/console/account").await.0, StatusCode::OK);
    }
    app.clock.advance(Duration::seconds(15 * 60 + 1));
    assert_eq!(
        page(&app, &session, "/console/account").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Never beyond an hour, however busy.
    let session = open(&app, &link(&app, "u-c2").await).await;
    for _ in 0..4 {
        app.clock.advance(Duration::seconds(14 * 60));
        assert_eq!(page(&app, &session, "/console/records").await.0, StatusCode::OK);
    }
    app.clock.advance(Duration::seconds(5 * 60));
    let (status, _, html) = page(&app, &session, "/console/records").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<html"), "a plain page for browsers");
}

async fn sessions_are_bound_to_their_tenant_and_person(app: TestApp) {
    seed(&app, "u-c3").await;
    // Another person of the same platform, with more behaviours.
    seed(&app, "u-c3-other").await;
    let mut ride = event("u-c3-other-ride", "u-c3-other", "transit_ride", json!({"mode": "bus"}));
    ride["data"] = json!({"mode": "bus"});
    assert!(app.post_events(&ride).await.0.is_success());

    let session = open(&app, &link(&app, "u-c3").await).await;
    let (_, _, html) = page(&app, &session, "/console/account?lang=en").await;
    assert!(
        html.contains("id=\"reduction-g\">144"),
        "only this person's figures: {html}"
    );

    // Another platform knows no such person, and an auditor may not ask.
    let other = app.add_tenant("elsewhere", Role::Platform).await;
    let (status, _) = mint(&app, &other, "u-c3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let (status, _) = mint(&app, &auditor, "u-c3").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // In the store, a session refuses to act for another tenant.
    let held = app.store.console_session(&session).await.unwrap();
    let (other_tenant, _) = app.store.add_tenant("third", Role::Platform).await.unwrap();
    let foreign = Access::new(
        Actor {
            tenant: other_tenant,
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    assert!(matches!(
        app.store.account(&foreign, &held).await,
        Err(StoreError::Forbidden(_))
    ));
}

async fn forms_from_elsewhere_are_refused(app: TestApp) {
    seed(&app, "u-c4").await;
    let session = open(&app, &link(&app, "u-c4").await).await;
    let (_, _, html) = page(&app, &session, "/console/consents").await;
    let csrf = csrf_of(&html);
    let host = app.addr.to_string();
    let post = |origin: Option<String>, fetch_site: Option<&'static str>, token: String| {
        let mut request = browser()
            .post(app.url("/console/consents/rewards"))
            .header("cookie", format!("__Host-cl_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={token}&action=withdraw&lang=en"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = fetch_site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    for (origin, site, token) in [
        (None, None, csrf.clone()),
        (Some("http://evil.example".to_owned()), Some("cross-site"), csrf.clone()),
        (Some(format!("http://{host}")), None, "wrong".to_owned()),
        (None, Some("same-origin"), String::new()),
    ] {
        let response = post(origin, site, token).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_security_headers(response.headers());
    }
    let (_, consents) = app.get("/v1/subjects/u-c4/consents").await;
    assert!(
        consents.to_string().contains("rewards"),
        "nothing was withdrawn: {consents}"
    );
    // From the page itself: taken, at once.
    let response = post(Some(format!("http://{host}")), Some("same-origin"), csrf.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, consents) = app.get("/v1/subjects/u-c4/consents").await;
    let purposes: Vec<&str> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purpose"].as_str())
        .collect();
    assert!(!purposes.contains(&"rewards"), "{consents}");
    // And the language the notice was shown in is kept with the consent.
    let response = browser()
        .post(app.url("/console/consents/rewards"))
        .header("cookie", format!("__Host-cl_session={session}"))
        .header("origin", format!("http://{host}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&action=grant&lang=zh-CN"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, consents) = app.get("/v1/subjects/u-c4/consents").await;
    assert!(consents.to_string().contains("zh-CN"), "{consents}");
}

async fn no_external_id_leaves_the_service(app: TestApp) {
    let id = "ext-7f3a9c1e-person";
    seed(&app, id).await;
    let (_, minted) = mint(&app, &app.key, id).await;
    let path = minted["path"].as_str().unwrap().to_owned();
    assert!(!path.contains(id));
    let response = browser().get(app.url(&path)).send().await.unwrap();
    for (_, value) in response.headers() {
        assert!(!value.to_str().unwrap_or("").contains(id));
    }
    let session = open(&app, &link(&app, id).await).await;
    for p in [
        "/console/account",
        "/console/records",
        "/console/consents",
        "/console/accesses",
        "/console/export",
        "/console/erase",
        "/console/export/data.json",
        "/console/export/records.csv",
    ] {
        let (status, headers, body) = page(&app, &session, p).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        assert!(!body.contains(id), "{p}");
        for (_, value) in &headers {
            assert!(!value.to_str().unwrap_or("").contains(id), "{p}");
        }
    }
    let stored = app.stored_bytes().await;
    assert!(
        !stored.windows(id.len()).any(|w| w == id.as_bytes()),
        "the id is stored nowhere"
    );
}

async fn erasure_from_the_console_ends_the_session(app: TestApp) {
    seed(&app, "u-c5").await;
    let session = open(&app, &link(&app, "u-c5").await).await;
    let unopened = link(&app, "u-c5").await;
    let (_, _, html) = page(&app, &session, "/console/erase?lang=en").await;
    assert!(html.contains("cannot be undone"), "the confirmation says what happens");
    let response = browser()
        .post(app.url("/console/erase"))
        .header("cookie", format!("__Host-cl_session={session}"))
        .header("origin", format!("http://{}", app.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf_of(&html)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    assert!(response.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let receipt = response.text().await.unwrap();
    assert!(receipt.contains("id=\"receipt\""), "{receipt}");
    // The session, and every other link of the person, are over.
    assert_eq!(
        page(&app, &session, "/console/account").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .send(browser().get(app.url(&unopened)).header("accept", "application/json"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/subjects/u-c5/account").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An erasure the platform asks for ends the person's sessions too, and
    // leaves no console row behind.
    seed(&app, "u-c6").await;
    let session = open(&app, &link(&app, "u-c6").await).await;
    let _unopened = link(&app, "u-c6").await;
    let (status, _) = app
        .send(app.client.delete(app.url("/v1/subjects/u-c6")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page(&app, &session, "/console/account").await.0,
        StatusCode::UNAUTHORIZED
    );
    let db = app.raw_ledger().await;
    for table in ["console_sessions", "console_tokens"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}
