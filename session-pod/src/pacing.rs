//! Per-session send pacing (GCRA, `governor`): at most so many messages a minute with a burst,
//! the first defence against a ban for bulk sending. Off unless configured.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct Pacing {
    limiter: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl Pacing {
    /// `per_minute` 0: no limit. `burst` 0: the same as `per_minute`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::direct(Quota::per_minute(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.limiter.is_some()
    }

    /// `Err(wait)` when a send now would go past the limit (and counts nothing then).
    pub fn check(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1 (pure).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_lets_everything_through() {
        let p = Pacing::new(0, 0);
        assert!(!p.is_on());
        assert!((0..1000).all(|_| p.check().is_ok()));
    }

    #[test]
    fn a_burst_past_the_limit_is_refused_with_a_wait() {
        let p = Pacing::new(6, 3);
        assert!((0..3).all(|_| p.check().is_ok()));
        let wait = p.check().unwrap_err();
        // 6 a minute: one every 10 s.
        assert!(
            wait <= Duration::from_secs(10) && wait > Duration::from_secs(8),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 10);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(4)), 4);
    }
}
