//! `carbon-ledger compliance records`: the record of processing activities
//! (GDPR Art. 30) and the inputs of a personal information protection
//! impact assessment (PIPL Art. 55–56), built from the policy files in
//! force. Everything that can change with a policy file is read from it;
//! what is fixed by the code (the key hierarchy, the coarsening of days
//! and places) is stated here, beside the code that does it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::policy::{DataClass, PolicySet};

/// The record, as JSON (`--format json`) or Markdown.
#[derive(Debug, Serialize)]
pub struct ProcessingRecord {
    /// BLAKE3 digest of the policy set, as the audit log records at load.
    pub policy_digest: String,
    pub methodology_version: String,
    pub controller: &'static str,
    pub processor: &'static str,
    pub data_subjects: &'static str,
    pub purposes: Vec<PurposeRecord>,
    /// Kept for every behaviour, whatever its kind.
    pub fields_of_every_record: Vec<String>,
    pub data_per_kind: Vec<KindRecord>,
    pub other_data: Vec<&'static str>,
    pub retention: Vec<RetentionRecord>,
    pub recipients: Vec<RecipientRecord>,
    pub security_measures: Vec<&'static str>,
    pub cross_border_transfer: &'static str,
    /// Why a day-and-city record is not 行踪轨迹 (PIPL Art. 28).
    pub sensitive_data: &'static str,
    pub impact_assessment: Vec<Assessment>,
}

#[derive(Debug, Serialize)]
pub struct PurposeRecord {
    pub purpose: &'static str,
    pub title: String,
    pub title_zh: String,
    pub notice_version: u32,
    pub necessary: bool,
    pub legal_basis: &'static str,
    pub retention_class: String,
    pub retention_days: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct KindRecord {
    pub kind: String,
    pub title: String,
    /// Beyond the fields of every record.
    pub fields: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RetentionRecord {
    pub class: &'static str,
    pub days: u32,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct RecipientRecord {
    pub role: &'static str,
    pub description: String,
    pub may: Vec<&'static str>,
    pub personal_data: bool,
}

#[derive(Debug, Serialize)]
pub struct Assessment {
    pub question: &'static str,
    pub answer: String,
}

const CONTROLLER: &str = "Each platform (tenant) that reports its users' behaviours is the controller \
(personal information handler) of its users' data: it decides to collect it, shows the notices, records \
the consents and answers its users. It is named in every export.";

const PROCESSOR: &str = "The operator of this service processes on the platforms' behalf (an entrusted \
party under PIPL Art. 21, a processor under GDPR Art. 28), only as the policy files below allow.";

const DATA_SUBJECTS: &str = "People who use a platform's carbon account and consent to `accounting`; \
nobody is recorded before consenting.";

const OTHER_DATA: &[&str] = &[
    "the platform's user id: never stored; turned on arrival into a keyed pseudonym, per platform",
    "consents in force and their history: purpose, notice version, kinds, the language the notice was shown in, the day",
    "ledger lines: kind, variant, day, grams of CO2e and points per pseudonymous reference, and their sums \
     per reference, day, kind and variant for the daily caps, kept and deleted with them",
    "keyed hashes of event ids and of each event's content, against double counting",
    "the audit log: pseudonymous references, kinds of access, counts and credits; no identifier of a person",
];

const SECURITY: &[&str] = &[
    "pseudonymization: user ids become keyed BLAKE3 pseudonyms (key HKDF-SHA256 \"carbon-ledger/v1/pseudonym\" \
     from the root key), per platform, so one person at two platforms is not linkable",
    "encryption at rest: every record sealed with AES-256-GCM under a key derived per person \
     (HKDF-SHA256 of the root key with the person's random 32-byte salt, \"carbon-ledger/v1/record/k{version}\"), \
     bound to the record and the person",
    "separation of keys: salts in a key store apart from the records; the root key in neither database",
    "erasure by crypto-shredding: deleting the salt makes every copy of the person's records unreadable, backups included",
    "access control by role (`policies/access.toml`) in the data access layer; auditors never get personal data",
    "every write of personal data appended to a BLAKE3 hash chain and Merkle tree in the same transaction, and every \
     read before anything read is returned, with Ed25519-signed checkpoints (key HKDF-SHA256 \
     \"carbon-ledger/v1/audit-signing\")",
    "minimization at the door: fields the methodology does not need are refused; times kept to the day, places to the city, \
     quantities to a bucket",
    "key material zeroized on drop; API keys stored only as hashes",
];

const CROSS_BORDER: &str = "None. The service sends personal data to no one: it is stored in the databases the \
operator deploys and leaves them only through the platform's own API calls. A deployment that puts the \
databases, or their backups, outside the country where the data was collected makes a transfer the \
operator must assess itself (PIPL Art. 38–40, GDPR Chapter V).";

const SENSITIVE: &str = "A record says that a person took, for example, a bus ride in a given city on a given \
day. It has no time of day, no route, no stop, no station, no district and no coordinates, and at most one \
city per behaviour: it cannot place the person at a point, trace a movement or tell where they live or work. \
行踪轨迹 (whereabouts, sensitive personal information under PIPL Art. 28) is information that locates a person \
and follows their movements; a day and a city do neither, and say little more than that the person uses a \
city's carbon-account programme, so this service does not treat them as whereabouts. Should a regulator or \
the platform judge otherwise (for example for a small city, or a long series of days in several cities), \
what follows is PIPL Art. 29–30: a separate consent for that processing (the per-kind `accounting` consent \
already lets a person refuse transit rides alone), a notice of its necessity and its impact on the person, \
and an impact assessment beforehand (Art. 55), kept three years (Art. 56). The platform may also report \
rides without a region, which the service accepts.";

impl ProcessingRecord {
    pub fn from_policies(policies: &PolicySet) -> Self {
        let days = |class: &str| {
            DataClass::ALL
                .iter()
                .find(|c| c.as_str() == class)
                .map(|c| policies.retention.days(*c))
        };
        let purposes = policies
            .consent
            .purposes
            .iter()
            .map(|(purpose, p)| PurposeRecord {
                purpose: purpose.as_str(),
                title: p.title.clone(),
                title_zh: p.title_zh.clone(),
                notice_version: p.notice_version,
                necessary: p.necessary,
                legal_basis:
                    "consent (PIPL Art. 13(1)(1), GDPR Art. 6(1)(a)), given per purpose under the notice version shown",
                retention_class: p.retention.clone(),
                retention_days: days(&p.retention),
            })
            .collect();
        let m = &policies.methodology;
        let data_per_kind = m
            .kinds
            .iter()
            .map(|(kind, rule)| {
                let mut fields = Vec::new();
                if let Some(v) = &rule.variants {
                    let values: Vec<&str> = v.values.keys().map(String::as_str).collect();
                    fields.push(format!("{}: one of {}", v.field, values.join(", ")));
                }
                if let Some(q) = &rule.quantity {
                    fields.push(format!(
                        "{}: rounded down to a multiple of {} {} (at most {})",
                        q.field, q.bucket, q.base_unit, q.max
                    ));
                }
                KindRecord {
                    kind: kind.clone(),
                    title: rule.title.clone(),
                    fields,
                }
            })
            .collect();
        let retention = DataClass::ALL
            .iter()
            .map(|c| RetentionRecord {
                class: c.as_str(),
                days: policies.retention.days(*c),
                reason: policies.retention.classes[c].reason.clone(),
            })
            .collect();
        let recipients = policies
            .access
            .roles
            .iter()
            .map(|(role, r)| {
                let mut may: Vec<&'static str> = r.actions.iter().map(|p| p.describe()).collect();
                may.dedup();
                RecipientRecord {
                    role: role.as_str(),
                    description: r.description.clone(),
                    may,
                    personal_data: r.actions.iter().any(|p| p.is_personal()),
                }
            })
            .collect();
        let accounting_days = days("records").unwrap_or_default();
        let impact_assessment = vec![
            Assessment {
                question: "Are the purpose and the means lawful, proper and necessary? (PIPL Art. 56(1))",
                answer: format!(
                    "Each purpose needs its own consent; only `accounting` is necessary for an account. Only the fields \
                     methodology {} needs are accepted, coarsened before storage; records are kept {accounting_days} days.",
                    m.version
                ),
            },
            Assessment {
                question: "What is the impact on the person's rights and interests, and the risks? (PIPL Art. 56(2))",
                answer: "Low: no sensitive personal information is processed (see above), no automated decision with legal \
                         effect is made (points are credits by a published table), and data is pseudonymous and sealed. \
                         The main risk is a platform's key misused to read its own users' accounts; every such read is \
                         logged and `carbon-ledger audit accesses` lists whom it touched."
                    .to_owned(),
            },
            Assessment {
                question: "Are the security measures lawful, effective and proportionate to the risk? (PIPL Art. 56(3))",
                answer: "See the security measures; each is tested (docs/compliance.md maps them to their tests)."
                    .to_owned(),
            },
        ];
        Self {
            policy_digest: policies.digest.to_string(),
            methodology_version: m.version.clone(),
            controller: CONTROLLER,
            processor: PROCESSOR,
            data_subjects: DATA_SUBJECTS,
            purposes,
            fields_of_every_record: vec![
                "kind: the behaviour kind".to_owned(),
                format!("day: the calendar day in UTC{}, no time of day", m.utc_offset),
                "region: the city (a GB/T 2260 code cut to its city), only if the platform reports one".to_owned(),
                format!(
                    "methodology version, grams of CO2e and points, computed under {}",
                    m.version
                ),
            ],
            data_per_kind,
            other_data: OTHER_DATA.to_vec(),
            retention,
            recipients,
            security_measures: SECURITY.to_vec(),
            cross_border_transfer: CROSS_BORDER,
            sensitive_data: SENSITIVE,
            impact_assessment,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the record serializes")
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# Record of processing activities\n");
        let _ = writeln!(
            w,
            "Generated by `carbon-ledger compliance records` from the policy files in force \
             (GDPR Art. 30; inputs of a PIPL Art. 55–56 impact assessment). Do not edit: \
             regenerate it when a policy file changes.\n"
        );
        let _ = writeln!(
            w,
            "- Policy digest: `{}` (recorded in the audit log at every load)",
            self.policy_digest
        );
        let _ = writeln!(w, "- Methodology: `{}`\n", self.methodology_version);
        let _ = writeln!(
            w,
            "## Controller and processor\n\n{}\n\n{}\n",
            self.controller, self.processor
        );
        let _ = writeln!(w, "## Data subjects\n\n{}\n", self.data_subjects);
        let _ = writeln!(w, "## Purposes\n");
        let _ = writeln!(
            w,
            "| purpose | title | 标题 | notice version | necessary | retention |\n|---|---|---|---|---|---|"
        );
        for p in &self.purposes {
            let days = p.retention_days.map_or_else(String::new, |d| format!("{d} days"));
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} (`{}`) |",
                p.purpose,
                p.title,
                p.title_zh,
                p.notice_version,
                if p.necessary { "yes" } else { "no" },
                days,
                p.retention_class
            );
        }
        if let Some(p) = self.purposes.first() {
            let _ = writeln!(w, "\nLegal basis of every purpose: {}.\n", p.legal_basis);
        }
        let _ = writeln!(w, "## Personal data kept\n\nEvery behaviour record keeps:\n");
        for f in &self.fields_of_every_record {
            let _ = writeln!(w, "- {f}");
        }
        let _ = writeln!(w, "\nand, per kind:\n\n| kind | what | further fields |\n|---|---|---|");
        for k in &self.data_per_kind {
            let fields = if k.fields.is_empty() {
                "none".to_owned()
            } else {
                k.fields.join("; ")
            };
            let _ = writeln!(w, "| `{}` | {} | {} |", k.kind, k.title, fields);
        }
        let _ = writeln!(w, "\nBeside the records:\n");
        for d in &self.other_data {
            let _ = writeln!(w, "- {d}");
        }
        let _ = writeln!(w, "\n## Retention\n\n| data | days | why |\n|---|---|---|");
        for r in &self.retention {
            let _ = writeln!(w, "| `{}` | {} | {} |", r.class, r.days, r.reason);
        }
        let _ = writeln!(
            w,
            "\n## Recipients by role\n\n| role | who | may | personal data |\n|---|---|---|---|"
        );
        for r in &self.recipients {
            let may = if r.may.is_empty() {
                "nothing over the API".to_owned()
            } else {
                r.may.join(", ")
            };
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} |",
                r.role,
                r.description,
                may,
                if r.personal_data {
                    "yes, its own users' only"
                } else {
                    "never"
                }
            );
        }
        let _ = writeln!(w, "\n## Security measures\n");
        for m in &self.security_measures {
            let _ = writeln!(w, "- {m}");
        }
        let _ = writeln!(w, "\n## Cross-border transfer\n\n{}\n", self.cross_border_transfer);
        let _ = writeln!(w, "## Sensitive personal information\n\n{}\n", self.sensitive_data);
        let _ = writeln!(w, "## Impact assessment inputs (PIPL Art. 56)\n");
        for a in &self.impact_assessment {
            let _ = writeln!(w, "- **{}** {}", a.question, a.answer);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
        for name in [
            "access.toml",
            "consent.toml",
            "methodology.toml",
            "points.toml",
            "retention.toml",
        ] {
            std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
        }
        dir
    }

    #[test]
    fn the_record_follows_the_policies() {
        let policies = PolicySet::load(None).unwrap();
        let record = ProcessingRecord::from_policies(&policies);
        assert_eq!(record.policy_digest, policies.digest.to_string());
        assert_eq!(record.purposes.len(), 4);
        assert_eq!(record.data_per_kind.len(), policies.methodology.kinds.len());
        let cycling = record.data_per_kind.iter().find(|k| k.kind == "cycling").unwrap();
        assert!(cycling.fields[0].contains("multiple of 100 m"), "{:?}", cycling.fields);
        // PIPL Art. 28-30: the record says why a day and a city are not
        // whereabouts, and what follows if they were.
        assert!(record.sensitive_data.contains("行踪轨迹") && record.sensitive_data.contains("Art. 29"));
        let auditor = record.recipients.iter().find(|r| r.role == "auditor").unwrap();
        assert!(!auditor.personal_data);
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["retention"][0]["class"], "records");
        assert_eq!(json["retention"][0]["days"], 730);
        assert!(record.to_markdown().contains("| `records` | 730 |"));
    }

    #[test]
    fn a_changed_retention_period_changes_the_record() {
        let dir = shipped_copy();
        let before = ProcessingRecord::from_policies(&PolicySet::load(Some(dir.path())).unwrap());
        let path = dir.path().join("retention.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("days = 730", "days = 365", 1)).unwrap();
        let after = ProcessingRecord::from_policies(&PolicySet::load(Some(dir.path())).unwrap());
        assert_ne!(before.policy_digest, after.policy_digest);
        let records = |r: &ProcessingRecord| r.retention.iter().find(|c| c.class == "records").unwrap().days;
        assert_eq!((records(&before), records(&after)), (730, 365));
        let accounting = after.purposes.iter().find(|p| p.purpose == "accounting").unwrap();
        assert_eq!(accounting.retention_days, Some(365));
        let markdown = after.to_markdown();
        assert!(markdown.contains("| `records` | 365 |") && !markdown.contains("| `records` | 730 |"));
        assert!(markdown.contains(&after.policy_digest));
    }
}
