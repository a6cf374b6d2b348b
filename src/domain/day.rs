use std::fmt;

use time::{Date, Month};

/// A calendar day, as days since 1970-01-01. The finest time the ledger keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(i32);

impl Day {
    pub fn from_date(date: Date) -> Self {
        Self(
            date.to_julian_day()
                - Date::from_calendar_date(1970, Month::January, 1)
                    .unwrap()
                    .to_julian_day(),
        )
    }

    pub fn from_days(days: i64) -> Option<Self> {
        let days = i32::try_from(days).ok()?;
        Date::from_julian_day(days.checked_add(2_440_588)?).ok()?;
        Some(Self(days))
    }

    pub fn days(self) -> i32 {
        self.0
    }

    pub fn date(self) -> Date {
        Date::from_julian_day(self.0 + 2_440_588).expect("Day holds a valid date")
    }

    /// The month as `YYYYMM`, the account's grouping key.
    pub fn month(self) -> i32 {
        let d = self.date();
        d.year() * 100 + d.month() as i32
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.date();
        write!(f, "{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
    }
}

/// Formats a `YYYYMM` month key as `YYYY-MM`.
pub fn month_label(month: i64) -> String {
    format!("{:04}-{:02}", month / 100, month % 100)
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.days())
    }
}

impl<'de> serde::Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let days = i64::deserialize(d)?;
        Day::from_days(days).ok_or_else(|| serde::de::Error::custom("day out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn epoch_and_round_trip() {
        assert_eq!(Day::from_date(date!(1970 - 01 - 01)).days(), 0);
        let d = Day::from_date(date!(2024 - 07 - 25));
        assert_eq!(d.to_string(), "2024-07-25");
        assert_eq!(d.month(), 202407);
        assert_eq!(Day::from_days(d.days() as i64), Some(d));
        assert_eq!(month_label(202407), "2024-07");
    }
}
