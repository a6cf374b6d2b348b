//! The person's pages, drawn from what the store returned. Every string
//! comes from `i18n`; everything else is data, escaped by maud.

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::layout::{self, Nav};
use super::Ctx;
use crate::policy::PolicySet;
use crate::store::{audit_kind_of, Account, Consent, ErasureReceipt, RecordPage, SubjectAccess};

fn ok(ctx: &Ctx, nav: Nav, title: &str, path: &str, body: Markup) -> Response {
    layout::respond(
        StatusCode::OK,
        layout::page(ctx.language, ctx.t(), nav, title, path, body),
    )
}

/// Grams, without a needless fraction.
fn grams(mg: i64) -> String {
    if mg % 1000 == 0 {
        format!("{}", mg / 1000)
    } else {
        format!("{:.3}", mg as f64 / 1000.0)
    }
}

fn month_label(yyyymm: i64) -> String {
    format!("{}-{:02}", yyyymm / 100, yyyymm % 100)
}

/// The kind's title in the methodology (the methodology is in English).
fn kind_title<'a>(policies: &'a PolicySet, kind: &'a str) -> &'a str {
    policies.methodology.kinds.get(kind).map_or(kind, |k| k.title.as_str())
}

/// The published sources of a kind's figures (each variant's, if any).
fn kind_sources(policies: &PolicySet, kind: &str) -> Vec<(String, String)> {
    let Some(rule) = policies.methodology.kinds.get(kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(c) = &rule.credit {
        out.push((c.source.clone(), c.points_source.clone()));
    }
    if let Some(v) = &rule.variants {
        for c in v.values.values() {
            let pair = (c.source.clone(), c.points_source.clone());
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    out
}

/// A bar chart of grams by month, drawn here as SVG: numbers only, so it
/// needs no escaping and no script.
fn month_chart(ctx: &Ctx, account: &Account) -> Markup {
    let t = ctx.t();
    let months = &account.by_month;
    let max = months.iter().map(|(_, m)| m.reduction.0).max().unwrap_or(0).max(1);
    let (bar_w, gap, height, top, bottom) = (48i64, 16i64, 160i64, 20i64, 24i64);
    let width = (months.len() as i64).max(1) * (bar_w + gap) + gap;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-labelledby=\"chart-title\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" xmlns=\"http://www.w3.org/2000/svg\">",
        height + top + bottom,
        height + top + bottom
    );
    svg.push_str(&format!(
        "<title id=\"chart-title\">{}</title>",
        maud::html! { (t.chart_label) }.into_string()
    ));
    for (i, (month, totals)) in months.iter().enumerate() {
        let h = (totals.reduction.0 * height / max).max(1);
        let x = gap + i as i64 * (bar_w + gap);
        let y = top + height - h;
        svg.push_str(&format!(
            "<rect class=\"bar\" x=\"{x}\" y=\"{y}\" width=\"{bar_w}\" height=\"{h}\"></rect>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + bar_w / 2,
            y - 4,
            grams(totals.reduction.0),
            x + bar_w / 2,
            top + height + 16,
            month_label(*month)
        ));
    }
    svg.push_str("</svg>");
    layout::trusted(svg)
}

pub fn account(ctx: &Ctx, policies: &PolicySet, account: &Account) -> Response {
    let t = ctx.t();
    let p = &account.points;
    let body = html! {
        dl.figures {
            div { dt { (t.reduction) } dd #reduction-g { (grams(account.reduction.0)) " " span.unit { (t.grams) } } }
            div { dt { (t.balance) } dd #points-balance { (p.balance) " " span.unit { (t.points) } } }
            div { dt { (t.earned) } dd #points-earned { (p.earned) } }
            div { dt { (t.spent) } dd #points-spent { (p.spent) } }
            div { dt { (t.expired) } dd { (p.expired) } }
            div { dt { (t.events) } dd #events { (account.events) } }
        }
        h2 { (t.expiring) }
        @if p.expiring.is_empty() {
            p { (t.expiring_none) }
        } @else {
            ul {
                @for e in &p.expiring {
                    li { (e.points) " " (t.points) " — " (t.expiring_on) " " (e.on.to_string()) }
                }
            }
        }
        h2 { (t.by_month) }
        @if account.by_month.is_empty() {
            p { (t.no_data) }
        } @else {
            (month_chart(ctx, account))
            table {
                caption.visually-hidden { (t.by_month) }
                thead { tr { th scope="col" { (t.month) } th scope="col" { (t.reduction) " (" (t.grams) ")" } th scope="col" { (t.points) } } }
                tbody {
                    @for (month, totals) in &account.by_month {
                        tr { th scope="row" { (month_label(*month)) } td { (grams(totals.reduction.0)) } td { (totals.points) } }
                    }
                }
            }
        }
        h2 { (t.by_kind) }
        @if account.by_kind.is_empty() {
            p { (t.no_data) }
        } @else {
            table {
                thead { tr { th scope="col" { (t.kind) } th scope="col" { (t.events) } th scope="col" { (t.reduction) " (" (t.grams) ")" } th scope="col" { (t.points) } th scope="col" { (t.source) } th scope="col" { (t.points_source) } } }
                tbody {
                    @for (kind, totals) in &account.by_kind {
                        @let sources = kind_sources(policies, kind);
                        tr {
                            th scope="row" { (kind_title(policies, kind)) }
                            td { (totals.events) }
                            td { (grams(totals.reduction.0)) }
                            td { (totals.points) }
                            td { @for (s, _) in &sources { (s) br; } }
                            td { @for (_, s) in &sources { (s) br; } }
                        }
                    }
                }
            }
        }
        h2 { (t.methodology) }
        p { (t.methodology_version) ": " strong #methodology-version { (policies.methodology.version) } " — " (policies.methodology.title) }
    };
    ok(ctx, Nav::Account, t.account_title, "/console/account", body)
}

pub fn records(ctx: &Ctx, policies: &PolicySet, page: &RecordPage, paged: bool) -> Response {
    let t = ctx.t();
    let body = html! {
        @if page.records.is_empty() {
            p { (t.no_data) }
        } @else {
            table #records {
                thead { tr {
                    th scope="col" { (t.day) } th scope="col" { (t.kind) } th scope="col" { (t.quantity) }
                    th scope="col" { (t.region) } th scope="col" { (t.reduction) " (" (t.grams) ")" }
                    th scope="col" { (t.points) } th scope="col" { (t.methodology_version) }
                } }
                tbody {
                    @for r in &page.records {
                        tr {
                            td { (r.record.day().to_string()) }
                            th scope="row" { (kind_title(policies, r.record.kind())) @if let Some(v) = r.record.variant() { " (" (v) ")" } }
                            td { @if let Some(q) = r.record.quantity() { (q) } }
                            td { @if let Some(region) = r.record.region() { (region) } }
                            td { (grams(r.reduction.0)) }
                            td { (r.points) }
                            td { (r.methodology_version) }
                        }
                    }
                }
            }
        }
        nav.actions aria-label=(t.records_title) {
            @if paged { a href="/console/records" { (t.newest) } }
            @if let Some((day, id)) = page.next {
                a href={ "/console/records?cursor=" (day.days()) "." (id.to_string()) } { (t.older) }
            }
        }
    };
    ok(ctx, Nav::Records, t.records_title, "/console/records", body)
}

pub fn consents(ctx: &Ctx, policies: &PolicySet, held: &[Consent]) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.consents_intro) }
        @for (purpose, policy) in &policies.consent.purposes {
            @let (title, notice) = policy.text(ctx.language);
            @let granted = held.iter().any(|c| c.purpose == *purpose && c.current);
            @let id = format!("purpose-{purpose}");
            section.consent aria-labelledby=(id) id={ "consent-" (purpose) } {
                h2 #(id) { (title) }
                p.notice { (notice) }
                p { (t.notice_version) ": " (policy.notice_version) }
                p {
                    @if granted {
                        span.status-granted data-state="granted" { (t.granted) }
                    } @else {
                        span.status-not data-state="not-granted" { (t.not_granted) }
                    }
                }
                form method="post" action={ "/console/consents/" (purpose) } {
                    input type="hidden" name="csrf" value=(ctx.session.csrf);
                    input type="hidden" name="lang" value=(ctx.language.as_str());
                    @if granted {
                        button.secondary type="submit" name="action" value="withdraw" { (t.withdraw) " — " (title) }
                    } @else {
                        button type="submit" name="action" value="grant" { (t.grant) " — " (title) }
                    }
                }
            }
        }
    };
    ok(ctx, Nav::Consents, t.consents_title, "/console/consents", body)
}

pub fn accesses(ctx: &Ctx, list: &[SubjectAccess]) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.accesses_intro) }
        table #accesses {
            thead { tr { th scope="col" { (t.when) } th scope="col" { (t.who) } th scope="col" { (t.what) } th scope="col" { (t.entry) } } }
            tbody {
                @for a in list {
                    tr {
                        td { (utc(a.entry.at)) }
                        td { @if a.by_own_platform { (t.by_own_platform) } @else if a.entry.actor.is_some() { (t.by_other_platform) } @else { (t.by_operator) } }
                        th scope="row" { (super::i18n::access_kind(ctx.language, audit_kind_of(&a.entry.action))) }
                        td { "#" (a.entry.seq) }
                    }
                }
            }
        }
    };
    ok(ctx, Nav::Accesses, t.accesses_title, "/console/accesses", body)
}

/// The day of an audit entry: entries keep the day only, never the time.
fn utc(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

pub fn export(ctx: &Ctx) -> Response {
    let t = ctx.t();
    let body = html! {
        p { (t.export_intro) }
        ul {
            li { a #export-json href="/console/export/data.json" download { (t.export_json) } }
            li { a #export-csv href="/console/export/records.csv" download { (t.export_csv) } }
        }
    };
    ok(ctx, Nav::Export, t.export_title, "/console/export", body)
}

pub fn erase(ctx: &Ctx) -> Response {
    let t = ctx.t();
    let body = html! {
        ul { @for line in t.erase_what { li { (line) } } }
        form method="post" action="/console/erase" {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            div.actions {
                button.danger #erase-confirm type="submit" { (t.erase_confirm) }
                a href="/console/account" { (t.erase_cancel) }
            }
        }
    };
    ok(ctx, Nav::Erase, t.erase_title, "/console/erase", body)
}

pub fn erased(ctx: &Ctx, receipt: &ErasureReceipt) -> Response {
    let t = ctx.t();
    let c = &receipt.counts;
    let purged = u64::from(c.records)
        + u64::from(c.ledger_entries)
        + u64::from(c.idempotency_keys)
        + u64::from(c.consents)
        + u64::from(c.consent_history);
    let body = html! {
        p { (t.erased_intro) }
        dl.receipt #receipt {
            dt { (t.erased_on) } dd #erased-on { (receipt.erased_on.to_string()) }
            dt { (t.audit_seq) } dd #erasure-seq { (receipt.audit_seq) }
            dt { (t.purged) } dd { (purged) }
        }
        p { strong { (t.session_ended) } }
    };
    layout::respond(
        StatusCode::OK,
        layout::page(ctx.language, t, Nav::None, t.erased_title, "/console/erase", body),
    )
}
