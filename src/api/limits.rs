//! Per-tenant rate limits and quotas: a token bucket for requests and one
//! for events (a batch of 500 costs 500), refilled continuously. A spent
//! budget is answered with 429 problem JSON and `Retry-After`.
//!
//! The limits come from a TOML file (`serve --limits FILE`):
//!
//! ```toml
//! [default]                 # every tenant without a section of its own
//! requests_per_second = 50
//! request_burst = 100
//! events_per_minute = 60000
//! event_burst = 5000
//!
//! [tenant.3]                # tenant id 3, as `tenant add` printed it
//! requests_per_second = 200
//! ```
//!
//! A rate of 0 (or a field left out) leaves that budget unlimited. Without
//! a file no tenant is limited; the bounded concurrency of `detach` still
//! sheds overload with 503.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

use super::{ApiError, AppState};
use crate::domain::TenantId;

/// One tenant's budgets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(default)]
    pub requests_per_second: f64,
    /// Requests allowed at once after a quiet spell [default: 2 s worth].
    #[serde(default)]
    pub request_burst: Option<f64>,
    #[serde(default)]
    pub events_per_minute: f64,
    /// Events allowed at once after a quiet spell [default: 10 s worth, at
    /// least one full batch].
    #[serde(default)]
    pub event_burst: Option<f64>,
}

impl TenantLimits {
    fn request_bucket(&self) -> Option<Rate> {
        Rate::new(
            self.requests_per_second,
            self.request_burst.unwrap_or(self.requests_per_second * 2.0),
        )
    }

    fn event_bucket(&self) -> Option<Rate> {
        let per_second = self.events_per_minute / 60.0;
        let burst = self
            .event_burst
            .unwrap_or((per_second * 10.0).max(super::MAX_BATCH_EVENTS as f64));
        Rate::new(per_second, burst)
    }
}

/// The limits file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub default: TenantLimits,
    /// By tenant id (TOML keys are strings).
    #[serde(default)]
    pub tenant: HashMap<String, TenantLimits>,
}

impl LimitsConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(bad) = config.tenant.keys().find(|k| k.parse::<i64>().is_err()) {
            return Err(format!("[tenant.{bad}]: tenants are named by their numeric id"));
        }
        for limits in std::iter::once(&config.default).chain(config.tenant.values()) {
            let values = [
                limits.requests_per_second,
                limits.request_burst.unwrap_or(1.0),
                limits.events_per_minute,
                limits.event_burst.unwrap_or(1.0),
            ];
            if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err("rates and bursts must be finite and not negative".into());
            }
            if limits.request_burst.is_some_and(|b| b < 1.0) || limits.event_burst.is_some_and(|b| b < 1.0) {
                return Err("a burst must allow at least one".into());
            }
        }
        Ok(config)
    }

    fn for_tenant(&self, tenant: TenantId) -> &TenantLimits {
        self.tenant.get(&tenant.get().to_string()).unwrap_or(&self.default)
    }
}

#[derive(Clone, Copy, Debug)]
struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    fn new(per_second: f64, burst: f64) -> Option<Self> {
        (per_second > 0.0).then_some(Self {
            per_second,
            burst: burst.max(1.0),
        })
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes `cost` tokens, or says in how many whole seconds enough will
    /// be there. A cost above the burst needs a full bucket, so a large
    /// batch is slowed, never refused forever.
    fn take(&mut self, rate: Rate, cost: f64, now: Instant) -> Result<(), u64> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + refill).min(rate.burst);
        self.at = now;
        let cost = cost.min(rate.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(((cost - self.tokens) / rate.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[derive(Debug, Default)]
struct TenantBuckets {
    requests: Option<Bucket>,
    events: Option<Bucket>,
}

/// Every tenant's buckets. The map holds one entry per tenant that has
/// authenticated, so it is bounded by the tenant table.
#[derive(Debug, Default)]
pub struct Limits {
    config: LimitsConfig,
    buckets: Mutex<HashMap<TenantId, TenantBuckets>>,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, tenant: TenantId, budget: &'static str, cost: usize) -> Result<(), ApiError> {
        let limits = self.config.for_tenant(tenant);
        let rate = match budget {
            "requests" => limits.request_bucket(),
            _ => limits.event_bucket(),
        };
        let Some(rate) = rate else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| ApiError::Internal("rate limit table poisoned".into()))?;
        let entry = buckets.entry(tenant).or_default();
        let bucket = match budget {
            "requests" => &mut entry.requests,
            _ => &mut entry.events,
        };
        bucket
            .get_or_insert_with(|| Bucket::full(rate, now))
            .take(rate, cost as f64, now)
            .map_err(|retry_after| ApiError::RateLimited { budget, retry_after })
    }
}

impl AppState {
    /// Charges one request to the tenant's request budget.
    pub(super) fn charge_request(&self, tenant: TenantId) -> Result<(), ApiError> {
        self.counted(self.limits.take(tenant, "requests", 1))
    }

    /// Charges `events` to the tenant's event budget.
    pub(super) fn charge_events(&self, tenant: TenantId, events: usize) -> Result<(), ApiError> {
        self.counted(self.limits.take(tenant, "events", events))
    }

    fn counted(&self, result: Result<(), ApiError>) -> Result<(), ApiError> {
        if let Err(ApiError::RateLimited { budget, .. }) = &result {
            self.metrics.observe_rate_limited(budget);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let rate = Rate::new(2.0, 3.0).unwrap();
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert_eq!(b.take(rate, 1.0, t0), Ok(()));
        }
        assert_eq!(b.take(rate, 1.0, t0), Err(1));
        // Half a second at 2/s buys one.
        assert_eq!(b.take(rate, 1.0, t0 + Duration::from_millis(500)), Ok(()));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(rate, 3.0, later), Ok(()));
        assert_eq!(b.take(rate, 1.0, later), Err(1));
        // A cost above the burst waits for a full bucket.
        assert_eq!(b.take(rate, 10.0, later), Err(2));
    }

    #[test]
    fn tenants_have_their_own_budgets_and_overrides() {
        let config = LimitsConfig::parse(
            "[default]\nrequests_per_second = 1\nrequest_burst = 1\n[tenant.7]\nrequests_per_second = 100\n",
        )
        .unwrap();
        let limits = Limits::new(config);
        let (a, b, big) = (TenantId::new(1), TenantId::new(2), TenantId::new(7));
        assert!(limits.take(a, "requests", 1).is_ok());
        assert!(matches!(
            limits.take(a, "requests", 1),
            Err(ApiError::RateLimited {
                budget: "requests",
                retry_after: 1
            })
        ));
        assert!(limits.take(b, "requests", 1).is_ok(), "another tenant is not slowed");
        for _ in 0..150 {
            assert!(limits.take(big, "requests", 1).is_ok());
        }
        // No event budget configured: unlimited.
        assert!(limits.take(a, "events", 1_000_000).is_ok());
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(LimitsConfig::parse("[default]\nrequests_per_second = -1\n").is_err());
        assert!(LimitsConfig::parse("[default]\nrequest_burst = 0.5\nrequests_per_second = 1\n").is_err());
        assert!(LimitsConfig::parse("[default]\nrequests_per_secnd = 1\n").is_err());
        assert_eq!(LimitsConfig::parse("").unwrap(), LimitsConfig::default());
    }
}
