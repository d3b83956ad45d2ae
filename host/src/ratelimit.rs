//! Per-token POST rate limit: a GCRA bucket per (tenant, user), per node, on
//! `governor`'s keyed limiter.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Buckets kept before the ones that are full again are forgotten.
const MAX_BUCKETS: usize = 100_000;

/// Rate limits keyed by (tenant, user).
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<(String, String)>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// `rate` per second sustained, `burst` at once (each at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        RateLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of the (tenant, user) `key`; a request without one
    /// (the admin token, anonymous callers refused elsewhere) is not limited.
    pub fn check(&self, key: Option<(&str, &str)>, metrics: &Metrics) -> Result<(), ApiError> {
        let Some((tenant, user)) = key else {
            return Ok(());
        };
        if self.limiter.len() >= MAX_BUCKETS {
            // A bucket that has refilled is the same as a new one.
            self.limiter.retain_recent();
        }
        let refused = match self
            .limiter
            .check_key(&(tenant.to_string(), user.to_string()))
        {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        metrics.rate_limited.inc();
        let wait = refused.wait_time_from(self.clock.now());
        let wait = wait.as_secs_f64().ceil().max(1.0) as u64;
        Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this token; retry in {wait}s"),
        )
        .retry_after(wait))
    }
}
