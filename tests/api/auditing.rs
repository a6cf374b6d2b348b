//! The audit log as auditors see it: signed checkpoints, proofs, the
//! offline verifier, tampering named online and offline, and reports that
//! reconcile with the log.

use std::path::Path;
use std::process::Command;

use carbon_ledger::audit::checkpoint::NoteVerifier;
use carbon_ledger::audit::merkle::{verify_consistency, verify_inclusion};
use carbon_ledger::audit::offline::verify_dir;
use carbon_ledger::audit::{Action, AuditEntry, ReadScope};
use carbon_ledger::domain::{Role, TenantId};
use carbon_ledger::store::{Access, Actor, Purpose};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{batch, event, TestApp};

fn auditor() -> Access {
    Access::new(
        Actor {
            tenant: TenantId::new(99),
            role: Role::Auditor,
        },
        Purpose::Statistics,
    )
}

/// A log of a couple of dozen entries: consents, records, reads.
async fn some_history(app: &TestApp) {
    for (i, subject) in ["ada", "bo", "cy"].iter().enumerate() {
        let events = (0..4)
            .map(|n| event(&format!("h{i}-{n}"), subject, "paperless_bill", json!({})))
            .collect();
        app.post_enrolled(&batch(events)).await;
        app.get(&format!("/v1/subjects/{subject}/account")).await;
    }
}

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"));
    c.env_remove("CARBON_LEDGER_POLICIES");
    c
}

/// `audit verify` online (with a checkpoint the auditor kept) and offline
/// (on a fresh export): both must fail, naming `entry`.
fn assert_both_name(app: &TestApp, kept: &Path, entry: u64) {
    let kept = kept.to_str().unwrap();
    let out = app.cli(&["audit", "verify", "--checkpoint", kept]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "online verify passed: {text}");
    assert!(text.contains(&format!("audit entry {entry}:")), "online: {text}");

    let dir = tempfile::tempdir().unwrap();
    let export = app.cli(&["audit", "export", "--out", dir.path().to_str().unwrap()]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let out = binary()
        .args([
            "audit",
            "verify",
            "--from",
            dir.path().to_str().unwrap(),
            "--checkpoint",
            kept,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "offline verify passed: {text}");
    assert!(text.contains(&format!("audit entry {entry}:")), "offline: {text}");
}

/// Sets up a log, has the auditor keep a checkpoint, applies `tamper`, and
/// checks both verifiers name `entry`.
async fn tampered(app: TestApp, tamper: &str, entry: u64) {
    some_history(&app).await;
    let note = app.store.checkpoint().await.unwrap();
    let kept = app.dir.path().join("kept.note");
    std::fs::write(&kept, &note).unwrap();
    // Untampered, both verifiers pass.
    let out = app.cli(&["audit", "verify", "--checkpoint", kept.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let db = app.raw_ledger().await;
    let head: i64 = sqlx::query("SELECT seq FROM audit_head")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert!(head > 20);
    let exec = |sql: String| {
        let db = db.clone();
        async move { sqlx::query(&sql).execute(&db).await.unwrap() }
    };
    match tamper {
        "alter" => {
            let bytes: Vec<u8> = sqlx::query("SELECT entry FROM audit_log WHERE seq = 10")
                .fetch_one(&db)
                .await
                .unwrap()
                .get(0);
            let mut forged = bytes.clone();
            let last = forged.len() - 1;
            forged[last - 9] ^= 0x01;
            sqlx::query("UPDATE audit_log SET entry = $1 WHERE seq = 10")
                .bind(forged)
                .execute(&db)
                .await
                .unwrap();
        }
        "delete" => {
            exec("DELETE FROM audit_log WHERE seq = 10".into()).await;
        }
        "swap" => {
            exec("UPDATE audit_log SET seq = -10 WHERE seq = 10".into()).await;
            exec("UPDATE audit_log SET seq = 10 WHERE seq = 11".into()).await;
            exec("UPDATE audit_log SET seq = 11 WHERE seq = -10".into()).await;
        }
        "insert" => {
            // Shift entries 10.. up by one and slip a well-formed entry in.
            exec("UPDATE audit_log SET seq = -(seq + 1) WHERE seq >= 10".into()).await;
            exec("UPDATE audit_log SET seq = -seq WHERE seq < 0".into()).await;
            let model: Vec<u8> = sqlx::query("SELECT entry FROM audit_log WHERE seq = 9")
                .fetch_one(&db)
                .await
                .unwrap()
                .get(0);
            let mut forged = AuditEntry::decode(&model).unwrap();
            forged.seq = 10;
            let bytes = forged.encode();
            let leaf = carbon_ledger::audit::merkle::leaf_hash(&bytes);
            sqlx::query("INSERT INTO audit_log (seq, entry, leaf_hash, chain_hash, at) VALUES (10, $1, $2, $3, 0)")
                .bind(bytes)
                .bind(leaf.to_vec())
                .bind(vec![0u8; 32])
                .execute(&db)
                .await
                .unwrap();
            exec(format!("UPDATE audit_head SET seq = {}", head + 1)).await;
        }
        "truncate" => {
            // Cut the last three entries, move the head back, forget the
            // larger checkpoints and re-sign: the database agrees with itself.
            let new_head = head - 3;
            let chain: Vec<u8> = sqlx::query("SELECT chain_hash FROM audit_log WHERE seq = $1")
                .bind(new_head)
                .fetch_one(&db)
                .await
                .unwrap()
                .get(0);
            exec(format!("DELETE FROM audit_log WHERE seq > {new_head}")).await;
            sqlx::query("UPDATE audit_head SET seq = $1, chain_hash = $2")
                .bind(new_head)
                .bind(chain)
                .execute(&db)
                .await
                .unwrap();
            exec(format!("DELETE FROM audit_checkpoints WHERE size > {new_head}")).await;
            exec("DELETE FROM audit_nodes".into()).await;
            // Rebuild the tree nodes from the leaves, as a careful forger would.
            let leaves: Vec<Vec<u8>> = sqlx::query("SELECT leaf_hash FROM audit_log ORDER BY seq")
                .fetch_all(&db)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut nodes = std::collections::HashMap::new();
            for (i, leaf) in leaves.iter().enumerate() {
                nodes.insert(
                    carbon_ledger::audit::merkle::NodeId::leaf(i as u64),
                    <[u8; 32]>::try_from(leaf.as_slice()).unwrap(),
                );
                for id in carbon_ledger::audit::merkle::nodes_completed_by_append(i as u64) {
                    let (l, r) = id.children().unwrap();
                    let h = carbon_ledger::audit::merkle::node_hash(&nodes[&l], &nodes[&r]);
                    nodes.insert(id, h);
                    sqlx::query("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")
                        .bind(i64::from(id.level))
                        .bind(id.index as i64)
                        .bind(h.to_vec())
                        .execute(&db)
                        .await
                        .unwrap();
                }
            }
            let out = app.cli(&["audit", "checkpoint"]);
            assert!(
                out.status.success(),
                "re-signing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Without the kept checkpoint the forgery is consistent.
            let alone = app.cli(&["audit", "verify"]);
            assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stdout));
            assert_both_name(&app, &kept, new_head as u64 + 1);
            return;
        }
        other => panic!("{other}"),
    }
    assert_both_name(&app, &kept, entry);
}

async fn altering_one_byte_is_named(app: TestApp) {
    tampered(app, "alter", 10).await;
}
async fn deleting_an_entry_is_named(app: TestApp) {
    tampered(app, "delete", 10).await;
}
async fn swapping_two_entries_is_named(app: TestApp) {
    tampered(app, "swap", 10).await;
}
async fn inserting_an_entry_is_named(app: TestApp) {
    tampered(app, "insert", 10).await;
}
async fn truncating_and_re_signing_is_caught_by_a_kept_checkpoint(app: TestApp) {
    tampered(app, "truncate", 0).await;
}

async fn every_proof_up_to_64_entries_verifies_and_forgeries_do_not(app: TestApp) {
    some_history(&app).await;
    while (app.audit_entries(0, 1000).await.unwrap().len() as u64) < 64 {
        app.get("/v1/subjects/ada/records").await;
    }
    let a = auditor();
    let roots: Vec<[u8; 32]> = {
        let mut roots = Vec::new();
        for size in 0..=64u64 {
            roots.push(app.store.tree_root(&a, size).await.unwrap());
        }
        roots
    };
    for size in 1..=64u64 {
        for index in 0..size {
            let (leaf, proof) = app.store.inclusion_proof(&a, index, size).await.unwrap();
            verify_inclusion(&leaf, index, size, &proof, &roots[size as usize]).unwrap();
            if !proof.is_empty() {
                let mut forged = proof.clone();
                forged[0][0] ^= 1;
                assert!(verify_inclusion(&leaf, index, size, &forged, &roots[size as usize]).is_err());
            }
            if size < 64 {
                assert!(
                    verify_inclusion(&leaf, index, size, &proof, &roots[size as usize + 1]).is_err(),
                    "wrong root"
                );
            }
        }
    }
    for new in 0..=64u64 {
        for old in 0..=new {
            let proof = app.store.consistency_proof(&a, old, new).await.unwrap();
            verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &proof).unwrap();
            if old > 0 && old < new {
                let mut forged = proof.clone();
                let last = forged.len() - 1;
                forged[last][31] ^= 1;
                assert!(verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &forged).is_err());
                assert!(verify_consistency(old, new, &roots[old as usize - 1], &roots[new as usize], &proof).is_err());
            }
        }
    }
}

async fn checkpoints_and_proofs_over_http(app: TestApp) {
    some_history(&app).await;
    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let (status, _) = app.send(app.client.get(app.url("/v1/audit/checkpoint"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let note = app
        .client
        .get(app.url("/v1/audit/checkpoint"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(note.headers()["content-type"], "text/plain; charset=utf-8");
    let note = note.text().await.unwrap();
    let vkey = app
        .client
        .get(app.url("/v1/audit/public-key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let verifier = NoteVerifier::from_vkey(vkey.trim()).unwrap();
    let origin = verifier.name().to_owned();
    assert!(
        origin.starts_with("carbon-ledger/") && origin.ends_with("/audit/blake3-v1"),
        "{origin}"
    );
    let cp = verifier.verify(&note, &origin).unwrap();
    let entries = app.audit_entries(0, 1000).await.unwrap();
    assert_eq!(
        cp.size,
        entries.len() as u64,
        "covers every entry committed before the request"
    );
    // An unknown extra signature line is ignored; an altered body is not.
    let unknown = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 68]);
    let extra = format!("{note}— someone-else {unknown}\n");
    assert!(verifier.verify(&extra, &origin).is_ok());
    let altered = note.replacen(&format!("\n{}\n", cp.size), &format!("\n{}\n", cp.size + 1), 1);
    assert!(verifier.verify(&altered, &origin).is_err());

    let (status, proof) = app
        .get_as(
            &auditor,
            &format!("/v1/audit/proofs/inclusion?index=3&size={}", cp.size),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    let hashes = |v: &Value| -> Vec<[u8; 32]> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect()
    };
    let leaf: [u8; 32] = hex::decode(proof["leaf_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    verify_inclusion(&leaf, 3, cp.size, &hashes(&proof["proof"]), &cp.root).unwrap();
    let (status, body) = app
        .get_as(
            &auditor,
            &format!("/v1/audit/proofs/inclusion?index=0&size={}", cp.size + 100),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app.get_as(&auditor, "/v1/audit/proofs/consistency?from=3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Auditors read every entry; a platform only the ones it made.
    let (_, all) = app.get_as(&auditor, "/v1/audit/entries?limit=1000").await;
    assert_eq!(all["entries"].as_array().unwrap().len() as u64, cp.size);
    let (_, own) = app.get("/v1/audit/entries?limit=1000").await;
    let own = own["entries"].as_array().unwrap();
    assert!(!own.is_empty() && own.len() < all["entries"].as_array().unwrap().len());
    // Three people, each with two consents, four records and a read.
    assert_eq!(own.len(), 21, "{own:?}");
    assert!(own.iter().all(|e| e["decoded"]["actor_tenant"] == 1));
}

async fn after_an_erasure_the_log_verifies_and_names_nobody(app: TestApp) {
    some_history(&app).await;
    let (root, _) = carbon_ledger::crypto::RootKey::load_or_create(&app.root_key_file).unwrap();
    let pseudonym = root.pseudonym_key().pseudonymize(
        TenantId::new(1),
        &carbon_ledger::domain::SubjectId::parse("bo".into()).unwrap(),
    );
    let (keys_db, table) = app.raw_keys().await;
    let ledger_ref: Vec<u8> = sqlx::query(&format!("SELECT ledger_ref FROM {table} WHERE subject = $1"))
        .bind(pseudonym.as_bytes().to_vec())
        .fetch_one(&keys_db)
        .await
        .unwrap()
        .get(0);
    app.send(app.client.delete(app.url("/v1/subjects/bo")).bearer_auth(&app.key))
        .await;

    let dir = tempfile::tempdir().unwrap();
    app.store.export_audit(dir.path()).await.unwrap();
    let report = verify_dir(dir.path(), None, &[], false).unwrap();
    assert!(report.entries > 20);
    let bytes = std::fs::read(dir.path().join("entries.bin")).unwrap();
    // (The id itself has no field to go in: entries are typed.)
    for (what, needle) in [
        ("pseudonym", pseudonym.as_bytes().to_vec()),
        ("ledger reference", ledger_ref),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
            "the log holds the {what}"
        );
    }
    app.store.verify_audit(&[]).await.unwrap().unwrap();

    // Pinned to the key the auditor holds, the export verifies; pinned to
    // another key under the same name, it does not.
    let held = app.store.audit_public_key();
    assert!(verify_dir(dir.path(), Some(&held), &[], false).is_ok());
    let other = carbon_ledger::audit::checkpoint::NoteSigner::from_seed(app.store.audit_origin(), &[9; 32]).vkey();
    assert!(verify_dir(dir.path(), Some(&other), &[], false).is_err());
}

/// A read, grant or event racing an erasure: once the erasure's tombstone
/// is written, even with the key not yet deleted, nothing more is read or
/// written for the person.
async fn nothing_touches_a_person_whose_erasure_has_begun(app: TestApp) {
    app.post_enrolled(&event("e1", "eve", "clean_plate", json!({}))).await;
    let (keys_db, table) = app.raw_keys().await;
    let key_id: Vec<u8> = sqlx::query(&format!("SELECT key_id FROM {table}"))
        .fetch_one(&keys_db)
        .await
        .unwrap()
        .get(0);
    let db = app.raw_ledger().await;
    sqlx::query("INSERT INTO erasures (key_id, erased_on) VALUES ($1, 0)")
        .bind(key_id)
        .execute(&db)
        .await
        .unwrap();
    let entries = app.audit_entries(0, 1000).await.unwrap().len();

    for path in [
        "/v1/subjects/eve/account",
        "/v1/subjects/eve/records",
        "/v1/subjects/eve/consents",
        "/v1/subjects/eve/export",
    ] {
        let (status, _) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = app.post_events(&event("e2", "eve", "clean_plate", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let url = app.url("/v1/subjects/eve/consents/statistics");
    let (status, _) = app
        .send(
            app.client
                .put(url)
                .bearer_auth(&app.key)
                .json(&json!({"notice_version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        app.audit_entries(0, 1000).await.unwrap().len(),
        entries,
        "nothing logged for her"
    );
}

/// A forger who appends a well-formed, correctly chained entry about a
/// person after their erasure is caught online too, at that entry.
async fn an_entry_about_an_erased_person_is_named_online(app: TestApp) {
    some_history(&app).await;
    let (status, receipt) = app
        .send(app.client.delete(app.url("/v1/subjects/bo")).bearer_auth(&app.key))
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    app.erasures_purged().await;
    let erasure_seq = receipt["audit_seq"].as_u64().unwrap();
    let erasure = app.audit_entries(erasure_seq - 1, 1).await.unwrap().remove(0);
    let Action::SubjectErased { subject, .. } = erasure.action else {
        panic!("{erasure:?}")
    };
    app.store.verify_audit(&[]).await.unwrap().expect("the log verifies");

    let db = app.raw_ledger().await;
    let head = sqlx::query("SELECT seq, chain_hash FROM audit_head")
        .fetch_one(&db)
        .await
        .unwrap();
    let head_seq: i64 = head.get(0);
    let head_hash: [u8; 32] = head.get::<Vec<u8>, _>(1).try_into().unwrap();
    let forged = AuditEntry {
        seq: head_seq as u64 + 1,
        at: erasure.at,
        actor: erasure.actor,
        action: Action::SubjectRead {
            subject,
            scope: ReadScope::Account,
            items: 1,
        },
    }
    .encode();
    let leaf = carbon_ledger::audit::merkle::leaf_hash(&forged);
    let chain = carbon_ledger::audit::chain::chain_hash(&head_hash, &leaf);
    sqlx::query("INSERT INTO audit_log (seq, entry, leaf_hash, chain_hash, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(head_seq + 1)
        .bind(forged)
        .bind(leaf.to_vec())
        .bind(chain.to_vec())
        .bind(erasure.at)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1, chain_hash = $2")
        .bind(head_seq + 1)
        .bind(chain.to_vec())
        .execute(&db)
        .await
        .unwrap();

    let err = app.store.verify_audit(&[]).await.unwrap().unwrap_err();
    assert_eq!(err.seq, head_seq as u64 + 1, "{err}");
    assert_eq!(err.reason, "an entry for an audit reference after its erasure entry");
}

async fn reports_reconcile_with_the_log(app: TestApp) {
    // Two platforms; cells large and small (by people: six eat clean
    // plates, two walk).
    let events: Vec<Value> = (0..12)
        .map(|i| event(&format!("r{i}"), &format!("u{}", i % 6), "clean_plate", json!({})))
        .collect();
    app.post_enrolled(&batch(events)).await;
    app.post_enrolled(&batch(vec![
        event("w1", "u0", "walking", json!({"steps": 4000})),
        event("w2", "u1", "walking", json!({"steps": 600})),
    ]))
    .await;
    let other = app.add_tenant("wuhan", Role::Platform).await;
    for i in 0..6 {
        app.consent_as(&other, &format!("v{i}"), &["accounting", "rewards"])
            .await;
        app.post_events_as(
            &other,
            &event(
                &format!("x{i}"),
                &format!("v{i}"),
                "transit_ride",
                json!({"mode": "metro"}),
            ),
        )
        .await;
    }
    // An erasure removes the person, not the reductions already reported.
    app.send(app.client.delete(app.url("/v1/subjects/u3")).bearer_auth(&app.key))
        .await;

    let auditor = app.add_tenant("auditor", Role::Auditor).await;
    let (status, report) = app.get_as(&auditor, "/v1/reports/reductions").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let dir = tempfile::tempdir().unwrap();
    app.store.export_audit(dir.path()).await.unwrap();
    let log = verify_dir(dir.path(), None, &[], false).unwrap();

    let grams = |v: &Value| (v.as_f64().unwrap() * 1000.0).round() as i64;
    let mut from_report = std::collections::BTreeMap::new();
    for cell in report["cells"].as_array().unwrap() {
        let month = cell["month"].as_str().unwrap().replace('-', "").parse::<i64>().unwrap();
        let key = (
            cell["tenant"].as_i64().unwrap(),
            cell["kind"].as_str().unwrap().to_owned(),
            month,
        );
        let t = &log.totals[&key];
        assert_eq!(
            (t.events, t.reduction_mg, t.points),
            (
                cell["events"].as_i64().unwrap(),
                grams(&cell["reduction_g"]),
                cell["points"].as_i64().unwrap()
            ),
            "{key:?}"
        );
        *from_report.entry(key.0).or_insert((0, 0, 0)) = {
            let e = from_report.get(&key.0).copied().unwrap_or((0, 0, 0));
            (e.0 + t.events, e.1 + t.reduction_mg, e.2 + t.points)
        };
    }
    for s in report["suppressed"].as_array().unwrap() {
        let tenant = s["tenant"].as_i64().unwrap();
        let e = from_report.get(&tenant).copied().unwrap_or((0, 0, 0));
        from_report.insert(
            tenant,
            (
                e.0 + s["events"].as_i64().unwrap(),
                e.1 + grams(&s["reduction_g"]),
                e.2 + s["points"].as_i64().unwrap(),
            ),
        );
    }
    let mut from_log = std::collections::BTreeMap::new();
    for ((tenant, _, _), t) in &log.totals {
        let e: (i64, i64, i64) = from_log.get(tenant).copied().unwrap_or((0, 0, 0));
        from_log.insert(*tenant, (e.0 + t.events, e.1 + t.reduction_mg, e.2 + t.points));
    }
    assert_eq!(from_report, from_log, "per-tenant totals reconcile");
    assert!(report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["kind"] == "clean_plate" && c["events"] == 12));
    assert!(
        !report["suppressed"].as_array().unwrap().is_empty(),
        "the small walking cell is suppressed"
    );

    // A platform sees its own cells only.
    let (_, own) = app
        .get_as(&other, "/v1/reports/reductions?from=2000-01&to=2999-12")
        .await;
    let own_cells = own["cells"].as_array().unwrap();
    assert_eq!(own_cells.len(), 1, "its six metro rides: {own}");
    assert_eq!(own_cells[0]["events"], 6, "{own}");
    assert!(own_cells.iter().all(|c| c["tenant"] == own["cells"][0]["tenant"]));
    let (status, _) = app.get_as(&other, "/v1/reports/reductions?from=2024").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

on_both_engines!(
    altering_one_byte_is_named,
    deleting_an_entry_is_named,
    swapping_two_entries_is_named,
    inserting_an_entry_is_named,
    truncating_and_re_signing_is_caught_by_a_kept_checkpoint,
    every_proof_up_to_64_entries_verifies_and_forgeries_do_not,
    checkpoints_and_proofs_over_http,
    after_an_erasure_the_log_verifies_and_names_nobody,
    an_entry_about_an_erased_person_is_named_online,
    reports_reconcile_with_the_log,
    nothing_touches_a_person_whose_erasure_has_begun,
);
