//! The console's HTML: server-rendered, escaped by maud, no script, no
//! inline style (the CSP forbids both).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use maud::{html, Markup, DOCTYPE};

use super::i18n::{Lang, Text};
use super::{CheckedCheckpoint, EntryPage, Outcome, Overview, WholeLog};
use crate::domain::Milligrams;

fn shell(lang: Lang, title: &str, path: &str, body: Markup) -> String {
    let t = lang.text();
    let other = match lang {
        Lang::ZhCn => Lang::En,
        Lang::En => Lang::ZhCn,
    };
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/console/audit/console-audit.css";
            }
            body {
                header {
                    nav aria-label=(t.switch_label) {
                        a href={ (path) "?lang=" (other.tag()) } lang=(other.tag()) hreflang=(other.tag()) { (t.other_language) }
                    }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

fn badge(t: &Text, outcome: &Outcome) -> Markup {
    match outcome {
        Outcome::Verified => html! { span.badge.ok data-check="verified" { "✓ " (t.verified) } },
        Outcome::Failed(why) => html! {
            span.badge.fail data-check="failed" { "✗ " (t.failed) }
            " " span.why { (why) }
        },
        Outcome::NotChecked(why) => html! {
            span.badge.none data-check="not-checked" { "– " (t.not_checked) }
            " " span.why { (why) }
        },
    }
}

/// The root a checkpoint claims (whether or not its signature verified).
fn root_of(cp: &CheckedCheckpoint) -> String {
    cp.parsed
        .as_ref()
        .map_or_else(|| "?".into(), |p| STANDARD.encode(p.root))
}

fn grams(mg: Milligrams) -> String {
    if mg.0 % 1000 == 0 {
        (mg.0 / 1000).to_string()
    } else {
        format!("{:.3}", mg.grams())
    }
}

fn month(m: i64) -> String {
    format!("{:04}-{:02}", m / 100, m % 100)
}

fn day(unix: i64) -> String {
    crate::domain::Day::from_days(unix.div_euclid(86_400)).map_or_else(|| "?".into(), |d| d.to_string())
}

/// The log size at each checkpoint, oldest first, as a line drawn on the
/// server: an image with a text alternative, no script.
fn chart(t: &Text, history: &[CheckedCheckpoint]) -> Markup {
    let points: Vec<u64> = history.iter().rev().map(|c| c.stored.size).collect();
    let (w, h, pad) = (600.0_f64, 160.0_f64, 24.0_f64);
    let max = points.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if points.len() > 1 {
        (w - 2.0 * pad) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let x = pad + step * i as f64;
            let y = h - pad - (h - 2.0 * pad) * size as f64 / max;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let summary = format!(
        "{}: {}",
        t.chart_label,
        points.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    );
    html! {
        svg.chart role="img" aria-labelledby="chart-title" viewBox={ "0 0 " (w) " " (h) } xmlns="http://www.w3.org/2000/svg" {
            title id="chart-title" { (summary) }
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) stroke="#555" stroke-width="1" {}
            line x1=(pad) y1=(pad) x2=(pad) y2=(h - pad) stroke="#555" stroke-width="1" {}
            text x="2" y=(pad - 6.0) fill="#222" font-size="12" { (max as u64) }
            text x="2" y=(h - 6.0) fill="#222" font-size="12" { "0" }
            @if coords.len() > 1 {
                polyline points=(coords.join(" ")) fill="none" stroke="#0b5d1e" stroke-width="2" {}
            }
            @for c in &coords {
                @let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
                circle cx=(x) cy=(y) r="3" fill="#0b5d1e" {}
            }
        }
    }
}

pub fn overview(lang: Lang, page: &Overview) -> String {
    let t = lang.text();
    let latest = page.history.first();
    let body = html! {
        h1 { (t.title) }
        p.lead { (t.lead) }
        section aria-labelledby="latest" {
            h2 id="latest" { (t.latest_checkpoint) }
            @match latest {
                None => p { (t.no_checkpoint) },
                Some(cp) => {
                    p #signature-result { (t.signature_check) ": " (badge(t, &cp.signature)) }
                    pre.note #checkpoint { (cp.stored.note) }
                    (depends(t, &page.vkey, Some((cp.stored.size, root_of(cp)))))
                }
            }
        }
        section aria-labelledby="whole" {
            h2 id="whole" { (t.whole_log) }
            p { (t.whole_log_check) }
            @match &page.whole_log {
                WholeLog::Verified { entries, checkpoints } => p #whole-log-result {
                    (badge(t, &Outcome::Verified)) " " (entries) " " (t.whole_log_ok) (checkpoints)
                },
                WholeLog::Failed { seq, reason } => div #whole-log-result role="alert" {
                    p { (badge(t, &Outcome::Failed(format!("audit entry {seq}: {reason}")))) }
                    p { (t.failing_entry) ": " a href={ "/console/audit/entries/" (seq) "?lang=" (lang.tag()) } { "#" (seq) } }
                },
                WholeLog::Unavailable(why) => p #whole-log-result { (badge(t, &Outcome::NotChecked(why.clone()))) },
            }
            p.small { (t.where_checked) " " (t.whole_log_fresh) }
        }
        section aria-labelledby="lookup" {
            h2 id="lookup" { (t.lookup) }
            form method="get" action="/console/audit/entries" {
                input type="hidden" name="lang" value=(lang.tag());
                label for="seq" { (t.entry_number) }
                " "
                input #seq type="number" name="seq" min="1" required inputmode="numeric";
                " "
                button type="submit" { (t.show) }
            }
        }
        section aria-labelledby="growth" {
            h2 id="growth" { (t.size_over_time) }
            (chart(t, &page.history))
        }
        section aria-labelledby="history" {
            h2 id="history" { (t.history) }
            p { (t.history_note) }
            div.scroll {
                table #history-table {
                    thead { tr {
                        th scope="col" { (t.size) }
                        th scope="col" { (t.signed_on) }
                        th scope="col" { (t.root) }
                        th scope="col" { (t.signature) }
                        th scope="col" { (t.consistency) }
                    } }
                    tbody {
                        @for cp in &page.history {
                            tr {
                                td { (cp.stored.size) }
                                td { (day(cp.stored.issued_on)) }
                                td { code { (root_of(cp)) } }
                                td { (badge(t, &cp.signature)) }
                                td { @match &cp.consistency {
                                    Some(o) => (badge(t, o)),
                                    None => (t.first_checkpoint),
                                } }
                            }
                        }
                    }
                }
            }
            (depends(t, &page.vkey, None))
        }
        section aria-labelledby="totals" {
            h2 id="totals" { (t.totals) }
            p { (t.totals_note) (page.report.min_cell_people) }
            @if page.report.cells.is_empty() && page.report.suppressed.is_empty() {
                p { (t.no_totals) }
            } @else {
                div.scroll {
                    table #totals-table {
                        thead { tr {
                            th scope="col" { (t.tenant) }
                            th scope="col" { (t.kind) }
                            th scope="col" { (t.month) }
                            th scope="col" { (t.events) }
                            th scope="col" { (t.reduction_g) }
                            th scope="col" { (t.points) }
                        } }
                        tbody {
                            @for c in &page.report.cells {
                                tr {
                                    td { (c.tenant) } td { (c.kind) } td { (month(c.month)) }
                                    td { (c.totals.events) } td { (grams(c.totals.reduction)) } td { (c.totals.points) }
                                }
                            }
                            @for s in &page.report.suppressed {
                                tr.suppressed {
                                    td { (s.tenant) }
                                    td colspan="2" { (t.suppressed) " (" (t.suppressed_cells) ": " (s.cells) ")" }
                                    td { (s.totals.events) } td { (grams(s.totals.reduction)) } td { (s.totals.points) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    shell(lang, t.title, "/console/audit", body)
}

fn depends(t: &Text, vkey: &str, checkpoint: Option<(u64, String)>) -> Markup {
    html! {
        dl.depends {
            dt { (t.checked_against) }
            dd { (t.key) ": " code { (vkey) } }
            @if let Some((size, root)) = checkpoint {
                dd { (t.checkpoint) ": " (size) ", " code { (root) } }
            }
        }
    }
}

pub fn entry(lang: Lang, page: &EntryPage, downloadable: bool) -> String {
    let t = lang.text();
    let title = format!("{} #{}", t.entry_title, page.seq);
    let path = format!("/console/audit/entries/{}", page.seq);
    let body = html! {
        p { a href={ "/console/audit?lang=" (lang.tag()) } { "← " (t.back) } }
        h1 { (title) }
        section aria-labelledby="decoded" {
            h2 id="decoded" { (t.decoded) }
            @match &page.json {
                Some(json) => pre #entry-json { (serde_json::to_string_pretty(json).unwrap_or_default()) },
                None => p { (t.emptied) },
            }
        }
        section aria-labelledby="checks" {
            h2 id="checks" { (t.checks) }
            ul.checks {
                @if let Some((_, sig)) = &page.checkpoint {
                    li #check-signature { (t.signature_check) ": " (badge(t, sig)) }
                }
                li #check-leaf { (t.leaf_check) ": " (badge(t, &page.leaf)) }
                li #check-decode { (t.decode_check) ": " (badge(t, &page.decode)) }
                li #check-inclusion { (t.inclusion_check) ": " (badge(t, &page.inclusion)) }
            }
            p.small { (t.where_checked) }
            @match &page.checkpoint {
                Some((cp, _)) => {
                    (depends(t, &page.vkey, Some((cp.size, page.root.clone()))))
                    pre.note { (cp.note) }
                },
                None => p { (t.not_covered) },
            }
        }
        @if !page.path.is_empty() {
            section aria-labelledby="path" {
                h2 id="path" { (t.path) }
                ol.path { @for h in &page.path { li { code { (STANDARD.encode(h)) } } } }
            }
        }
        @if downloadable {
            p {
                a.button #download href={ (path) "/proof" } download={ "audit-proof-" (page.seq) ".txt" } { (t.download) }
            }
            p.small { code { (t.download_note) } }
        }
    };
    shell(lang, &title, &path, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredCheckpoint;

    fn checked(size: u64) -> CheckedCheckpoint {
        CheckedCheckpoint {
            stored: StoredCheckpoint {
                size,
                note: format!("<origin>\n{size}\n"),
                issued_on: 0,
            },
            parsed: None,
            signature: Outcome::Failed("<b>".into()),
            consistency: None,
        }
    }

    /// The chart draws any number of checkpoints, none included, and text
    /// from the database is escaped.
    #[test]
    fn the_chart_and_history_render_for_any_length_and_escape() {
        for n in [0, 1, 2, 40] {
            let history: Vec<CheckedCheckpoint> = (0..n).rev().map(|i| checked(i * 3)).collect();
            let page = Overview {
                vkey: "k+00000000+AQ==".into(),
                history,
                whole_log: WholeLog::Verified {
                    entries: 0,
                    checkpoints: 0,
                },
                report: crate::store::ReductionReport {
                    min_cell_people: 5,
                    cells: Vec::new(),
                    suppressed: Vec::new(),
                },
            };
            for lang in [Lang::En, Lang::ZhCn] {
                let html = overview(lang, &page);
                assert!(html.contains("<svg"));
                assert!(!html.contains("<b>") && !html.contains("<origin>"), "escaped");
                assert_eq!(html.matches("<circle").count(), n as usize);
            }
        }
    }
}
