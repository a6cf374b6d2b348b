//! The clock, read once per operation: the day an operation writes, the day
//! behaviours are counted on, and the retention cut-offs all come from one
//! reading, so an operation that runs across midnight cannot mix two days.

use time::{OffsetDateTime, UtcOffset};

use crate::domain::Day;

#[derive(Clone, Copy, Debug)]
pub(super) struct Today {
    /// The clock's reading, for cut-offs measured in time.
    pub now: OffsetDateTime,
    /// 00:00 UTC of the day, in Unix seconds: the only time the store
    /// writes. Finer write times would stand in for the behaviour's time
    /// when platforms report in real time.
    pub start: i64,
    /// The day in the methodology's zone: the day behaviours count on.
    pub day: Day,
}

impl Today {
    pub fn new(now: OffsetDateTime, zone: UtcOffset) -> Self {
        let seconds = now.unix_timestamp();
        Self {
            now,
            start: seconds - seconds.rem_euclid(86_400),
            day: Day::from_date(now.to_offset(zone).date()),
        }
    }

    /// The UTC day of `start`.
    pub fn utc_day(&self) -> Day {
        Day::from_date(self.now.to_offset(UtcOffset::UTC).date())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{datetime, offset};

    use super::*;

    #[test]
    fn one_reading_gives_the_write_day_and_the_counting_day() {
        // 01:30 on the 25th in +08:00 is still the 24th in UTC.
        let today = Today::new(datetime!(2024-07-24 17:30 UTC), offset!(+8));
        assert_eq!(today.day.to_string(), "2024-07-25");
        assert_eq!(today.utc_day().to_string(), "2024-07-24");
        assert_eq!(today.start, datetime!(2024-07-24 00:00 UTC).unix_timestamp());
    }
}
