//! Per-user rate limit (GCRA, `governor`), keyed by the authenticated user id, so one noisy user
//! cannot starve the others on a replica.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct UserRateLimiter {
    inner: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl UserRateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
        Self {
            inner: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the user is over the limit.
    pub fn check(&self, user_id: &str) -> Result<(), Duration> {
        self.inner
            .check_key(&user_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose buckets are full again (call periodically).
    pub fn housekeeping(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_their_own_budget() {
        let limiter = UserRateLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(limiter.check("alice").is_ok());
        }
        let wait = limiter.check("alice").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("bob").is_ok());
        limiter.housekeeping();
    }
}
