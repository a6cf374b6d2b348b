//! `policies/points.toml`: expiry of points and the reports' smallest cell.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Date, Month};

use crate::domain::Day;

/// The longest expiry period a platform may set: ten years.
pub const MAX_EXPIRY_MONTHS: u32 = 120;
/// Ten years of days, leap days included.
pub const MAX_EXPIRY_DAYS: u32 = 3653;

/// How long earned points stay spendable. `None` of both: never expire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryPolicy {
    pub months: Option<u32>,
    pub days: Option<u32>,
}

impl ExpiryPolicy {
    fn check(&self, whose: &str) -> Result<(), String> {
        match (self.months, self.days) {
            (Some(_), Some(_)) => Err(format!("{whose}: set months or days, not both")),
            (Some(m), None) if m == 0 || m > MAX_EXPIRY_MONTHS => Err(format!(
                "{whose}: months must be between 1 and {MAX_EXPIRY_MONTHS} (at most ten years)"
            )),
            (None, Some(d)) if d == 0 || d > MAX_EXPIRY_DAYS => Err(format!(
                "{whose}: days must be between 1 and {MAX_EXPIRY_DAYS} (at most ten years)"
            )),
            _ => Ok(()),
        }
    }

    /// The day on which points credited on `earned` expire, if they do:
    /// spendable up to the day before.
    pub fn expires_on(&self, earned: Day) -> Option<Day> {
        if let Some(days) = self.days {
            return Day::from_days(i64::from(earned.days()) + i64::from(days));
        }
        let months = self.months?;
        let d = earned.date();
        let index = d.year() * 12 + (d.month() as i32 - 1) + months as i32;
        let (year, month) = (
            index.div_euclid(12),
            Month::try_from((index.rem_euclid(12) + 1) as u8).ok()?,
        );
        // The 31st plus one month is the last day of the shorter month.
        let day = d.day().min(month.length(year));
        Date::from_calendar_date(year, month, day).ok().map(Day::from_date)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsPolicy {
    pub notice_days: u32,
    pub report_min_people: u32,
    #[serde(default)]
    pub default: ExpiryPolicy,
    /// Per platform, by tenant name.
    #[serde(default)]
    pub platforms: BTreeMap<String, ExpiryPolicy>,
}

impl PointsPolicy {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: PointsPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        if !(30..=366).contains(&policy.notice_days) {
            return Err("notice_days must be between 30 and 366".into());
        }
        if !(2..=1000).contains(&policy.report_min_people) {
            return Err("report_min_people must be between 2 and 1000".into());
        }
        policy.default.check("default")?;
        for (name, p) in &policy.platforms {
            p.check(&format!("platforms.{name}"))?;
        }
        Ok(policy)
    }

    /// The expiry period of points earned on the platform named `tenant`.
    pub fn expiry_for(&self, tenant: &str) -> ExpiryPolicy {
        self.platforms.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether any platform's points expire at all.
    pub fn any_expiry(&self) -> bool {
        self.default != ExpiryPolicy::default() || self.platforms.values().any(|p| *p != ExpiryPolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        let d = Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap();
        Day::from_date(d)
    }

    #[test]
    fn the_shipped_policy_expires_nothing() {
        let p = PointsPolicy::from_toml(include_str!("../../policies/points.toml")).unwrap();
        assert_eq!(p.expiry_for("anyone").expires_on(day("2024-01-31")), None);
        assert!(!p.any_expiry());
    }

    #[test]
    fn periods_end_on_the_same_day_of_the_month_or_the_last() {
        let m = ExpiryPolicy {
            months: Some(1),
            days: None,
        };
        assert_eq!(m.expires_on(day("2024-01-31")), Some(day("2024-02-29")));
        assert_eq!(m.expires_on(day("2024-12-15")), Some(day("2025-01-15")));
        let d = ExpiryPolicy {
            months: None,
            days: Some(10),
        };
        assert_eq!(d.expires_on(day("2024-02-25")), Some(day("2024-03-06")));
    }

    #[test]
    fn more_than_ten_years_is_refused() {
        let base = "notice_days = 30\nreport_min_people = 5\n";
        assert!(PointsPolicy::from_toml(&format!("{base}[platforms.a]\nmonths = 120\n")).is_ok());
        let err = PointsPolicy::from_toml(&format!("{base}[platforms.a]\nmonths = 121\n")).unwrap_err();
        assert!(err.contains("at most ten years"), "{err}");
        let err = PointsPolicy::from_toml(&format!("{base}[default]\ndays = 4000\n")).unwrap_err();
        assert!(err.contains("at most ten years"), "{err}");
        assert!(PointsPolicy::from_toml(&format!("{base}[default]\ndays = 1\nmonths = 1\n")).is_err());
        assert!(PointsPolicy::from_toml("notice_days = 7\nreport_min_people = 5\n").is_err());
    }
}
