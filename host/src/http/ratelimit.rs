//! Per-token POST rate limit: a token bucket per (tenant, user), per node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::access::Caller;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Token buckets keyed by caller.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// `rate` per second sustained, `burst` at once.
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: rate as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for a client-token caller; the admin token and
    /// anonymous callers (refused elsewhere) are not limited here.
    pub fn check(&self, caller: &Caller, metrics: &Metrics) -> Result<(), ApiError> {
        let Caller::User(c) = caller else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets
            .entry((c.tenant.clone(), c.sub.clone()))
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        metrics.rate_limited.inc();
        let wait = ((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64;
        Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this token; retry in {wait}s"),
        )
        .retry_after(wait))
    }
}
