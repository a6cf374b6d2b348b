//! The methodology: behaviour kinds, the fields each accepts, how each is
//! coarsened, its reduction factor, points and daily caps, with the
//! published source of every figure. Loaded from `policies/methodology.toml`.
//!
//! Figures are credits per behaviour unit (never mixed with absolute
//! emission factors in one factor). Arithmetic is integer milligrams,
//! rounded down: conservative, and exact when summed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::UtcOffset;

use super::coarse::{CoarseRecord, Milligrams};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Methodology {
    /// Every record keeps the version it was computed under; a new version
    /// never changes past results.
    pub version: String,
    pub title: String,
    pub description: String,
    /// The time zone days are taken in, as a fixed offset such as `+08:00`.
    pub utc_offset: String,
    /// How many days late an event may be reported.
    pub accept_days: u16,
    pub kinds: BTreeMap<String, KindRule>,
    #[serde(skip)]
    offset: Option<UtcOffset>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRule {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<QuantityRule>,
    /// The credit when the kind has no variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<Credit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<VariantRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<DailyCap>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityRule {
    /// The event's `data` field carrying the quantity, e.g. `distance_m`.
    pub field: String,
    /// The unit the platform reports in, e.g. `m`.
    pub base_unit: String,
    /// The unit factors are given per, e.g. `km`...
    pub unit: String,
    /// ...and how many base units make one, e.g. 1000.
    pub unit_size: u64,
    /// Quantities are rounded down to a multiple of this before storage.
    pub bucket: u64,
    /// Larger reports are refused as implausible.
    pub max: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantRule {
    /// The event's `data` field naming the variant, e.g. `mode`.
    pub field: String,
    pub values: BTreeMap<String, Credit>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    pub g_per_unit: f64,
    pub points_per_unit: u32,
    /// Where the gram figure was published, or `none published; illustrative`.
    pub source: String,
    pub points_source: String,
    /// Variant-level cap (kind-level caps sit on the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<DailyCap>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyCap {
    /// Credited events per person and day; later ones are recorded at zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u32>,
    /// Credited grams per person and day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g: Option<f64>,
    pub source: String,
}

/// What a person already has credited on one day, for cap arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DailyUsage {
    pub kind_events: i64,
    pub kind_mg: i64,
    pub variant_events: i64,
    pub variant_mg: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub reduction: Milligrams,
    pub points: i64,
    /// A daily cap reduced the credit.
    pub capped: bool,
}

fn mg(g: f64) -> i64 {
    (g * 1000.0).round() as i64
}

impl Methodology {
    /// Parses and validates a methodology file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut m: Methodology = toml::from_str(text).map_err(|e| e.to_string())?;
        m.offset = Some(
            parse_offset(&m.utc_offset)
                .ok_or_else(|| format!("utc_offset {:?} must look like +08:00", m.utc_offset))?,
        );
        m.validate()?;
        Ok(m)
    }

    pub fn offset(&self) -> UtcOffset {
        self.offset.unwrap_or(UtcOffset::UTC)
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if self.version.is_empty() || self.version.len() > 64 || self.version.chars().any(char::is_whitespace) {
            return Err("version must be 1 to 64 characters without spaces".into());
        }
        if self.kinds.is_empty() {
            return Err("a methodology needs at least one kind".into());
        }
        for (name, kind) in &self.kinds {
            let at = |what: &str| format!("kinds.{name}: {what}");
            if !name_ok(name) {
                return Err(at("kind names are lower_snake_case"));
            }
            if let Some(q) = &kind.quantity {
                if !name_ok(&q.field) || q.unit_size == 0 || q.bucket == 0 || q.max < q.bucket || q.max > 1 << 40 {
                    return Err(at(
                        "quantity needs a snake_case field, unit_size and bucket > 0, bucket <= max <= 2^40",
                    ));
                }
            }
            match (&kind.credit, &kind.variants) {
                (Some(c), None) => {
                    if c.daily_cap.is_some() {
                        return Err(at("put the daily_cap of a kind without variants on the kind"));
                    }
                    check_credit(c).map_err(|e| at(&e))?;
                }
                (None, Some(v)) => {
                    if !name_ok(&v.field) || v.values.is_empty() {
                        return Err(at("variants need a snake_case field and at least one value"));
                    }
                    if kind.quantity.as_ref().is_some_and(|q| q.field == v.field) {
                        return Err(at("the quantity and variant fields must differ"));
                    }
                    for (value, c) in &v.values {
                        if !name_ok(value) {
                            return Err(at("variant values are lower_snake_case"));
                        }
                        check_credit(c).map_err(|e| at(&format!("{value}: {e}")))?;
                    }
                }
                _ => return Err(at("give exactly one of credit or variants")),
            }
            if let Some(cap) = &kind.daily_cap {
                check_cap(cap).map_err(|e| at(&e))?;
            }
            // The largest credit one event can earn must stay far inside i64.
            let (max, unit_size) = kind.quantity.as_ref().map_or((1, 1), |q| (q.max, q.unit_size));
            let credits = kind
                .credit
                .iter()
                .chain(kind.variants.iter().flat_map(|v| v.values.values()));
            for c in credits {
                let largest_mg = mg(c.g_per_unit) as f64 * max as f64 / unit_size as f64;
                let largest_points = f64::from(c.points_per_unit) * max as f64 / unit_size as f64;
                if largest_mg > 1e15 || largest_points > 1e12 {
                    return Err(at(
                        "a single event could earn more than 10^12 g or 10^12 points: lower max or the factor",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Credit for one coarse record given what the person already has that
    /// day. `None` when the record's kind is not in this methodology.
    pub fn assess(&self, record: &CoarseRecord, usage: &DailyUsage) -> Option<Assessment> {
        let kind = self.kinds.get(record.kind())?;
        let credit = match (&kind.credit, &kind.variants, record.variant()) {
            (Some(c), None, None) => c,
            (None, Some(v), Some(name)) => v.values.get(name)?,
            _ => return None,
        };
        let (amount, unit_size) = match (&kind.quantity, record.quantity()) {
            (Some(q), Some(amount)) => (amount, q.unit_size),
            (None, None) => (1, 1),
            _ => return None,
        };
        let scale = |per_unit: i64| (i128::from(per_unit) * i128::from(amount) / i128::from(unit_size)) as i64;
        let mut reduction = scale(mg(credit.g_per_unit));
        let mut points = scale(i64::from(credit.points_per_unit));

        let caps = [
            (kind.daily_cap.as_ref(), usage.kind_events, usage.kind_mg),
            (credit.daily_cap.as_ref(), usage.variant_events, usage.variant_mg),
        ];
        let mut capped = false;
        for (cap, events, used_mg) in caps {
            let Some(cap) = cap else { continue };
            if cap.events.is_some_and(|max| events >= i64::from(max)) {
                return Some(Assessment {
                    reduction: Milligrams(0),
                    points: 0,
                    capped: true,
                });
            }
            if let Some(max_g) = cap.g {
                let room = (mg(max_g) - used_mg).max(0);
                if reduction > room {
                    points = if reduction == 0 {
                        0
                    } else {
                        (i128::from(points) * i128::from(room) / i128::from(reduction)) as i64
                    };
                    reduction = room;
                    capped = true;
                }
            }
        }
        Some(Assessment {
            reduction: Milligrams(reduction),
            points,
            capped,
        })
    }
}

impl KindRule {
    /// The `data` fields an event of this kind may carry.
    pub fn accepted_fields(&self) -> impl Iterator<Item = &str> {
        self.quantity
            .iter()
            .map(|q| q.field.as_str())
            .chain(self.variants.iter().map(|v| v.field.as_str()))
    }
}

fn check_credit(c: &Credit) -> Result<(), String> {
    if !c.g_per_unit.is_finite() || c.g_per_unit < 0.0 || c.g_per_unit > 1e6 {
        return Err("g_per_unit must be between 0 and 1e6".into());
    }
    if c.source.trim().is_empty() || c.points_source.trim().is_empty() {
        return Err(
            "every factor names its source and points_source (say \"none published; illustrative\" if so)".into(),
        );
    }
    c.daily_cap.as_ref().map_or(Ok(()), check_cap)
}

fn check_cap(cap: &DailyCap) -> Result<(), String> {
    if cap.events.is_none() && cap.g.is_none() {
        return Err("a daily_cap limits events, g or both".into());
    }
    if cap.g.is_some_and(|g| !g.is_finite() || g < 0.0) {
        return Err("daily_cap.g must be a non-negative number".into());
    }
    if cap.source.trim().is_empty() {
        return Err("a daily_cap names its source".into());
    }
    Ok(())
}

fn parse_offset(s: &str) -> Option<UtcOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{minimize, parse_event};
    use crate::policy::default_methodology;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;

    fn record(kind: &str, data: serde_json::Value) -> CoarseRecord {
        let raw = parse_event(json!({"event_id": "e", "subject": "s", "kind": kind,
            "occurred_at": "2024-07-25T08:00:00+08:00", "data": data}))
        .unwrap();
        minimize(&raw, &default_methodology(), datetime!(2024-07-25 12:00 +08:00)).unwrap()
    }

    fn assess(r: &CoarseRecord, usage: DailyUsage) -> Assessment {
        default_methodology().assess(r, &usage).unwrap()
    }

    /// The figures Luzhou's Green Bud Points publishes (People's Daily, 2024).
    #[test]
    fn reproduces_luzhou_published_figures() {
        let plate = assess(&record("clean_plate", json!({})), DailyUsage::default());
        assert_eq!((plate.reduction, plate.points), (Milligrams(144_000), 5));
        let bus = assess(&record("transit_ride", json!({"mode": "bus"})), DailyUsage::default());
        assert_eq!((bus.reduction, bus.points), (Milligrams(80_000), 10));
        let walk = assess(&record("walking", json!({"steps": 1234})), DailyUsage::default());
        assert_eq!((walk.reduction, walk.points), (Milligrams(16_400), 2));
        let clothes = assess(
            &record("clothes_recycling", json!({"weight_g": 2000})),
            DailyUsage::default(),
        );
        assert_eq!((clothes.reduction, clothes.points), (Milligrams(2_560_000), 60));
    }

    #[test]
    fn metro_rides_past_five_a_day_earn_nothing() {
        let metro = record("transit_ride", json!({"mode": "metro"}));
        let fifth = assess(
            &metro,
            DailyUsage {
                variant_events: 4,
                kind_events: 4,
                ..Default::default()
            },
        );
        assert!(!fifth.capped && fifth.points > 0);
        let sixth = assess(
            &metro,
            DailyUsage {
                variant_events: 5,
                kind_events: 5,
                ..Default::default()
            },
        );
        assert_eq!((sixth.reduction, sixth.points, sixth.capped), (Milligrams(0), 0, true));
    }

    #[test]
    fn walking_is_capped_at_296_g_a_day() {
        let walk = record("walking", json!({"steps": 20000}));
        let a = assess(&walk, DailyUsage::default());
        assert_eq!(a.reduction, Milligrams(296_000));
        assert!(a.capped);
        let b = assess(
            &walk,
            DailyUsage {
                kind_mg: 296_000,
                kind_events: 1,
                ..Default::default()
            },
        );
        assert_eq!((b.reduction, b.points), (Milligrams(0), 0));
    }

    #[test]
    fn every_factor_names_a_source() {
        let m = default_methodology();
        for kind in m.kinds.values() {
            let credits: Vec<&Credit> = kind
                .credit
                .iter()
                .chain(kind.variants.iter().flat_map(|v| v.values.values()))
                .collect();
            assert!(!credits.is_empty());
            for c in credits {
                assert!(!c.source.is_empty() && !c.points_source.is_empty());
            }
        }
    }

    #[test]
    fn factors_that_could_overflow_are_refused() {
        let base = include_str!("../../policies/methodology.toml");
        let huge = base.replacen(
            "unit_size = 1000, bucket = 100, max = 50000 }\ncredit = { g_per_unit = 1280",
            "unit_size = 1, bucket = 1, max = 1099511627776 }\ncredit = { g_per_unit = 900000",
            1,
        );
        assert_ne!(huge, base, "the test edits the clothes factor");
        let refused = Methodology::from_toml(&huge).unwrap_err();
        assert!(refused.contains("10^12"), "{refused}");
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let base = include_str!("../../policies/methodology.toml");
        assert!(Methodology::from_toml(&base.replace("utc_offset = \"+08:00\"", "utc_offset = \"CST\"")).is_err());
        assert!(Methodology::from_toml(&format!("{base}\nsurprise = 1\n")).is_err());
        let err = Methodology::from_toml(&base.replacen("points_source = \"Luzhou", "points_source = \" \"\n#", 1))
            .unwrap_err();
        assert!(err.contains("source"), "{err}");
    }

    proptest! {
        /// Credits never exceed a cap, are never negative, and grow with the
        /// quantity.
        #[test]
        fn credits_respect_caps_and_monotonicity(steps in 0u64..100_000, more in 0u64..100_000, used in 0i64..400_000) {
            let m = default_methodology();
            let usage = DailyUsage { kind_mg: used, kind_events: 1, ..Default::default() };
            let a = m.assess(&record("walking", json!({"steps": steps})), &usage).unwrap();
            let b = m.assess(&record("walking", json!({"steps": steps + more})), &usage).unwrap();
            prop_assert!(a.reduction.0 >= 0 && a.points >= 0);
            prop_assert!(a.reduction.0 + used <= 296_000.max(used));
            prop_assert!(b.reduction >= a.reduction && b.points >= a.points);
        }
    }
}
