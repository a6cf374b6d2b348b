//! Property test: random sequences of grants, withdrawals, events, reads,
//! clock advances and sweeps, against the real access layer and a simple
//! model of what consent and retention allow. After every step the service
//! and the model agree on what is stored and what is readable.

use std::collections::{BTreeMap, BTreeSet};

use carbon_ledger::domain::{minimize, parse_event, Role, SubjectId, TenantId};
use carbon_ledger::policy::DataClass;
use carbon_ledger::store::{Access, Actor, IngestItem, IngestOutcome, Kinds, Purpose, StoreError};
use proptest::prelude::*;
use serde_json::json;
use sqlx::Row;
use time::Duration;

use crate::helpers::{event, retention_days, Backend, TestApp};

const SUBJECTS: [&str; 3] = ["ann", "ben", "cai"];
const KINDS: [&str; 2] = ["clothes_recycling", "clean_plate"];

#[derive(Clone, Debug)]
enum Op {
    /// Consent to accounting for all kinds (`None`) or one.
    Grant {
        subject: usize,
        kind: Option<usize>,
    },
    Withdraw {
        subject: usize,
    },
    Ingest {
        subject: usize,
        kind: usize,
        days_ago: i64,
    },
    Read {
        subject: usize,
    },
    Advance {
        days: i64,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize, proptest::option::of(0..2usize)).prop_map(|(subject, kind)| Op::Grant { subject, kind }),
        1 => (0..3usize).prop_map(|subject| Op::Withdraw { subject }),
        5 => (0..3usize, 0..2usize, 0..20i64).prop_map(|(subject, kind, days_ago)| Op::Ingest { subject, kind, days_ago }),
        2 => (0..3usize).prop_map(|subject| Op::Read { subject }),
        1 => prop_oneof![0..40i64, 300..800i64].prop_map(|days| Op::Advance { days }),
        1 => Just(Op::Sweep),
    ]
}

/// What the rules say is held.
#[derive(Default, Debug)]
struct Model {
    today: i64,
    /// The retention periods, in days, of records and of ledger entries.
    record_days: i64,
    ledger_days: i64,
    known: BTreeSet<usize>,
    consent: BTreeMap<usize, Option<usize>>,
    /// (subject, kind, day) of each stored record.
    records: Vec<(usize, usize, i64)>,
    /// (subject, kind, day) of each behaviour's ledger entry.
    ledger: Vec<(usize, usize, i64)>,
}

impl Model {
    fn covers(&self, subject: usize, kind: usize) -> bool {
        self.consent
            .get(&subject)
            .is_some_and(|k| k.is_none_or(|only| only == kind))
    }

    fn purge_uncovered(&mut self, subject: usize) {
        let keep = |m: &Model, s: usize, k: usize| s != subject || m.covers(s, k);
        let records: Vec<_> = self
            .records
            .iter()
            .copied()
            .filter(|&(s, k, _)| keep(self, s, k))
            .collect();
        let ledger: Vec<_> = self
            .ledger
            .iter()
            .copied()
            .filter(|&(s, k, _)| keep(self, s, k))
            .collect();
        (self.records, self.ledger) = (records, ledger);
    }

    fn visible_records(&self, subject: usize) -> usize {
        self.records
            .iter()
            .filter(|&&(s, _, d)| s == subject && d >= self.today - self.record_days)
            .count()
    }

    fn visible_events(&self, subject: usize) -> i64 {
        self.ledger
            .iter()
            .filter(|&&(s, _, d)| s == subject && d >= self.today - self.ledger_days)
            .count() as i64
    }

    /// What a retention sweep leaves.
    fn sweep(&mut self) {
        let (today, record_days, ledger_days) = (self.today, self.record_days, self.ledger_days);
        self.records.retain(|&(_, _, d)| d >= today - record_days);
        self.ledger.retain(|&(_, _, d)| d >= today - ledger_days);
    }
}

async fn run(app: TestApp, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let access = Access::new(
        Actor {
            tenant: TenantId::new(1),
            role: Role::Platform,
        },
        Purpose::Accounting,
    );
    let store = app.store.clone();
    let subject = |i: usize| SubjectId::parse(SUBJECTS[i].to_owned()).unwrap();
    let offset = store.policies().methodology.offset();
    let today = carbon_ledger::domain::Day::from_date(app.clock_now().to_offset(offset).date());
    let mut model = Model {
        today: i64::from(today.days()),
        record_days: retention_days(DataClass::Records),
        ledger_days: retention_days(DataClass::LedgerEntries),
        ..Model::default()
    };
    let mut counter = 0;
    for op in ops {
        match op {
            Op::Grant { subject: s, kind } => {
                let kinds = kind.map_or(Kinds::All, |k| Kinds::Only([KINDS[k].to_owned()].into()));
                store.grant_consent(&access, &subject(s), 1, kinds).await.unwrap();
                model.known.insert(s);
                model.consent.insert(s, kind);
                model.purge_uncovered(s);
            }
            Op::Withdraw { subject: s } => match store.withdraw_consent(&access, &subject(s)).await {
                Err(StoreError::SubjectNotFound) => prop_assert!(!model.known.contains(&s)),
                other => {
                    let change = other.unwrap();
                    prop_assert_eq!(change.changed, model.consent.remove(&s).is_some());
                    model.purge_uncovered(s);
                }
            },
            Op::Ingest {
                subject: s,
                kind,
                days_ago,
            } => {
                counter += 1;
                let at = app.clock_now() - Duration::days(days_ago);
                let mut e = event(&format!("e{counter}"), SUBJECTS[s], KINDS[kind], json!({}));
                if KINDS[kind] == "clothes_recycling" {
                    e["data"] = json!({"weight_g": 1000});
                }
                e["occurred_at"] = json!(at.format(&time::format_description::well_known::Rfc3339).unwrap());
                let raw = parse_event(e).unwrap();
                let record = minimize(&raw, &store.policies().methodology, app.clock_now()).unwrap();
                let day = i64::from(record.day().days());
                let outcome = store
                    .ingest(
                        &access,
                        vec![IngestItem {
                            event_id: raw.event_id,
                            subject: raw.subject,
                            record,
                        }],
                    )
                    .await
                    .unwrap();
                if model.covers(s, kind) {
                    prop_assert!(matches!(outcome[0], IngestOutcome::Recorded(_)), "{:?}", outcome);
                    model.records.push((s, kind, day));
                    model.ledger.push((s, kind, day));
                } else {
                    prop_assert!(
                        matches!(outcome[0], IngestOutcome::ConsentRequired { .. }),
                        "{:?}",
                        outcome
                    );
                }
            }
            Op::Read { subject: s } => {
                let result = store.records(&access, &subject(s), 1000, None).await;
                prop_assert_eq!(
                    matches!(result, Err(StoreError::SubjectNotFound)),
                    !model.known.contains(&s)
                );
            }
            Op::Advance { days } => {
                app.clock.advance(Duration::days(days));
                model.today += days;
            }
            Op::Sweep => {
                store.sweep_retention().await.unwrap();
                model.sweep();
            }
        }
        // After every step, every known subject reads as the model says.
        for &s in &model.known {
            let page = store.records(&access, &subject(s), 1000, None).await.unwrap();
            prop_assert_eq!(
                page.records.len(),
                model.visible_records(s),
                "records of {}",
                SUBJECTS[s]
            );
            let account = store.account(&access, &subject(s)).await.unwrap();
            prop_assert_eq!(account.events, model.visible_events(s), "account of {}", SUBJECTS[s]);
        }
    }
    // Stored, not only readable: the rows left match what the model holds
    // (expired rows may remain until a sweep, so sweep first).
    store.sweep_retention().await.unwrap();
    model.sweep();
    let db = app.raw_ledger().await;
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM records")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    prop_assert_eq!(stored as usize, model.records.len());
    prop_assert!(store.verify_audit(&[]).await.unwrap().is_ok());
    Ok(())
}

fn check(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        rt.block_on(async {
            let app = TestApp::spawn(backend).await.expect("the engine is configured");
            run(app, ops).await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn service_and_model_agree_sqlite() {
    check(Backend::Sqlite, 24);
}

#[test]
fn service_and_model_agree_postgres() {
    if crate::helpers::postgres_url().is_none() {
        crate::helpers::postgres_not_configured();
        return;
    }
    check(Backend::Postgres, 12);
}
