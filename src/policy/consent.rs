//! `policies/consent.toml`: the purposes personal data is processed for.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The purposes this service processes personal data for. The set is fixed
/// by what the code does; the policy file gives each its notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Record behaviours and compute reductions; necessary for an account.
    Accounting,
    /// Award and redeem points.
    Rewards,
    /// Link accounts across platforms.
    Interconnection,
    /// Inclusion in aggregate reports.
    Statistics,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Accounting,
        Purpose::Rewards,
        Purpose::Interconnection,
        Purpose::Statistics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Accounting => "accounting",
            Purpose::Rewards => "rewards",
            Purpose::Interconnection => "interconnection",
            Purpose::Statistics => "statistics",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Stable byte for the audit log's binary encoding.
    pub fn code(self) -> u8 {
        match self {
            Purpose::Accounting => 1,
            Purpose::Rewards => 2,
            Purpose::Interconnection => 3,
            Purpose::Statistics => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The languages every notice is given in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Language {
    /// Simplified Chinese.
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::ZhCn, Language::En];

    /// The BCP 47 tag, as stored and audited.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }

    /// Exactly one of the tags `as_str` gives.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The language an `Accept-Language` header asks for: the supported
    /// range with the highest weight (any `zh` range is Chinese), English
    /// when it names neither or is absent.
    pub fn negotiate(header: Option<&str>) -> Self {
        let mut best: Option<(u16, Language)> = None;
        for range in header.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            let weight = (weight.clamp(0.0, 1.0) * 1000.0) as u16;
            let language = if tag == "zh" || tag.starts_with("zh-") {
                Language::ZhCn
            } else if tag == "en" || tag.starts_with("en-") {
                Language::En
            } else {
                continue;
            };
            // Weight 0 means "not this one"; ties go to the earlier range.
            if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, language));
            }
        }
        best.map_or(Language::En, |(_, l)| l)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposePolicy {
    pub title: String,
    /// The title in Simplified Chinese.
    pub title_zh: String,
    /// The text the platform shows the person.
    pub notice: String,
    /// The same notice in Simplified Chinese, under the same version.
    pub notice_zh: String,
    /// Raised whenever the notice changes; older consents stop counting.
    pub notice_version: u32,
    /// Whether the account cannot exist without it.
    pub necessary: bool,
    /// The retention class (retention.toml) of the data held for it.
    pub retention: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentPolicy {
    pub purposes: BTreeMap<Purpose, PurposePolicy>,
}

impl ConsentPolicy {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: ConsentPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        for purpose in Purpose::ALL {
            let Some(p) = policy.purposes.get(&purpose) else {
                return Err(format!("purpose {purpose} is missing"));
            };
            if p.notice.trim().is_empty() || p.title.trim().is_empty() {
                return Err(format!("purpose {purpose} has no notice"));
            }
            if p.notice_zh.trim().is_empty() || p.title_zh.trim().is_empty() {
                return Err(format!(
                    "purpose {purpose} has no notice in Chinese (title_zh, notice_zh)"
                ));
            }
            if p.notice_version == 0 {
                return Err(format!("purpose {purpose}: notice_version starts at 1"));
            }
            if p.retention.trim().is_empty() {
                return Err(format!("purpose {purpose} has no retention"));
            }
        }
        if !policy.purposes[&Purpose::Accounting].necessary {
            return Err("purpose accounting is necessary for an account".into());
        }
        Ok(policy)
    }

    pub fn get(&self, purpose: Purpose) -> &PurposePolicy {
        // `from_toml` refuses a file without every purpose.
        &self.purposes[&purpose]
    }
}

impl PurposePolicy {
    /// The title and notice in `language`.
    pub fn text(&self, language: Language) -> (&str, &str) {
        match language {
            Language::ZhCn => (&self.title_zh, &self.notice_zh),
            Language::En => (&self.title, &self.notice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Language;

    #[test]
    fn accept_language_picks_the_weightiest_supported_range() {
        for (header, want) in [
            (None, Language::En),
            (Some(""), Language::En),
            (Some("zh"), Language::ZhCn),
            (Some("zh-CN,zh;q=0.9,en;q=0.8"), Language::ZhCn),
            (Some("ZH-hans"), Language::ZhCn),
            (Some("en-GB, zh;q=0.5"), Language::En),
            (Some("fr, zh;q=0.3"), Language::ZhCn),
            (Some("en;q=0.2, zh;q=0.7"), Language::ZhCn),
            (Some("zh;q=0, en;q=0.1"), Language::En),
            (Some("de"), Language::En),
            (Some("zh;q=bogus"), Language::ZhCn),
        ] {
            assert_eq!(Language::negotiate(header), want, "{header:?}");
        }
    }
}
