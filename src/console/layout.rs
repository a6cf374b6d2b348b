//! The page shell every console page shares (header, language switch,
//! navigation, footer) and the security headers every console response
//! carries.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::i18n::Text;
use crate::policy::Language;

/// No script, no inline style, no frames, no form posting elsewhere: the
/// pages need nothing else, and an injected tag can do nothing with it.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every console page carries, the person's and the
/// auditor's: the CSP above, no referrer, no sniffing, no framing.
pub fn set_page_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Sets the console's security headers on every response under
/// `/console`, errors included; a person's pages are never cached.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set_page_headers(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Which navigation entry a page is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Account,
    Records,
    Consents,
    Accesses,
    Export,
    Erase,
    /// A page outside a session (errors, the receipt).
    None,
}

/// A whole page: `title`, then `body` inside `<main>`. `path` is the page's
/// own path, for the language switch.
pub fn page(language: Language, t: &Text, nav: Nav, title: &str, path: &str, body: Markup) -> Markup {
    let items = [
        (Nav::Account, "/console/account", t.nav_account),
        (Nav::Records, "/console/records", t.nav_records),
        (Nav::Consents, "/console/consents", t.nav_consents),
        (Nav::Accesses, "/console/accesses", t.nav_accesses),
        (Nav::Export, "/console/export", t.nav_export),
        (Nav::Erase, "/console/erase", t.nav_erase),
    ];
    html! {
        (DOCTYPE)
        html lang=(t.lang_attr) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.site_title) }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { (t.skip_to_content) }
                header.site {
                    p.brand { (t.site_title) }
                    nav aria-label=(t.language_label) {
                        ul.langs {
                            @for l in Language::ALL {
                                li {
                                    @let name = match l { Language::ZhCn => "中文", Language::En => "English" };
                                    @if l == language {
                                        span aria-current="true" lang=(l.as_str()) { (name) }
                                    } @else {
                                        a href={ (path) "?lang=" (l.as_str()) } lang=(l.as_str()) hreflang=(l.as_str()) { (name) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if nav != Nav::None {
                    nav.main aria-label=(t.nav_label) {
                        ul {
                            @for (n, href, label) in items {
                                li {
                                    @if n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer.site { p { (t.footer) } }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A plain page that says one thing (a refused link, an ended session).
pub fn message(language: Language, t: &Text, status: StatusCode, title: &str, text: &str, path: &str) -> Response {
    respond(
        status,
        page(language, t, Nav::None, title, path, html! { p { (text) } }),
    )
}

/// Markup already safe (an SVG this module drew from numbers).
pub fn trusted(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}
