//! The coarse record: the only form a behaviour takes after minimization,
//! and the only input the methodology accepts. It has no public
//! constructor and no public deserializer: `minimize` builds one from a
//! raw event (in this module's parent), and the access layer re-reads one
//! it sealed (`decode`). No other code can make one, so no finer-grained
//! data can reach a computation or storage (invariant 2).

use serde::{Deserialize, Serialize, Serializer};

use super::day::Day;

/// A behaviour, minimized: the day, the kind, the variant, the quantity
/// rounded down to the methodology's bucket and the city.
///
/// Outside the crate, JSON cannot become one:
///
/// ```compile_fail
/// let record: carbon_ledger::domain::CoarseRecord =
///     serde_json::from_str(r#"{"kind":"walking","day":19928}"#).unwrap();
/// ```
///
/// nor can fields:
///
/// ```compile_fail
/// let day = carbon_ledger::domain::Day::from_days(19_928).unwrap();
/// let record = carbon_ledger::domain::CoarseRecord::new("walking".into(), None, day, None, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CoarseRecord {
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    day: Day,
    /// In the kind's base unit, rounded down to the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<u64>,
    /// City-level administrative code.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

/// The sealed plaintext's layout, for `decode` alone: a `Deserialize` on
/// `CoarseRecord` itself would let any code build one from JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    kind: String,
    #[serde(default)]
    variant: Option<String>,
    day: Day,
    #[serde(default)]
    quantity: Option<u64>,
    #[serde(default)]
    region: Option<String>,
}

impl CoarseRecord {
    /// For `minimize` only.
    pub(super) fn new(
        kind: String,
        variant: Option<String>,
        day: Day,
        quantity: Option<u64>,
        region: Option<String>,
    ) -> Self {
        Self {
            kind,
            variant,
            day,
            quantity,
            region,
        }
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    pub fn day(&self) -> Day {
        self.day
    }

    pub fn quantity(&self) -> Option<u64> {
        self.quantity
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The plaintext that gets sealed.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a coarse record serializes")
    }

    /// Re-reads a record the access layer sealed and has just opened.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let Sealed {
            kind,
            variant,
            day,
            quantity,
            region,
        } = serde_json::from_slice(bytes).ok()?;
        Some(Self::new(kind, variant, day, quantity, region))
    }
}

/// An amount of CO2e in milligrams. Kept as an integer so sums are exact;
/// shown to clients in grams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Milligrams(pub i64);

impl Milligrams {
    pub fn grams(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for Milligrams {
    /// Whole grams serialize as integers (144, not 144.0).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.grams())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_reads_back_and_nothing_else_does() {
        let day = Day::from_days(19_928).unwrap();
        let record = CoarseRecord::new("cycling".into(), None, day, Some(2300), Some("510500".into()));
        assert_eq!(CoarseRecord::decode(&record.encode()), Some(record));
        // A field the record does not have is refused, not dropped.
        assert_eq!(
            CoarseRecord::decode(br#"{"kind":"cycling","day":19928,"route":"No. 7"}"#),
            None
        );
    }

    #[test]
    fn grams_serialize_as_integers_when_whole() {
        assert_eq!(serde_json::to_string(&Milligrams(144_000)).unwrap(), "144");
        assert_eq!(serde_json::to_string(&Milligrams(8_200)).unwrap(), "8.2");
    }
}
