//! Reconnect policy (seed `MAX_RECONNECT_ATTEMPTS`, `RECONNECT_INTERVAL`): exponential from the
//! base interval, capped, with "equal jitter" (half fixed, half random) so a fleet of pods that
//! lost WhatsApp together does not reconnect in lockstep. Pure: the caller supplies the random.

use std::time::Duration;

/// Never wait longer than this between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub max_attempts: u32,
    pub base: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then attempt number `attempt` (1-based).
    Retry { attempt: u32, delay: Duration },
    /// Past the maximum: the session is Failed.
    GiveUp,
}

impl ReconnectPolicy {
    /// What to do after `failures` consecutive failed attempts (≥ 1); `unit` in `[0, 1)`.
    pub fn decide(&self, failures: u32, unit: f64) -> Decision {
        if failures > self.max_attempts {
            return Decision::GiveUp;
        }
        let exp = failures.saturating_sub(1).min(16);
        let full = self.base.saturating_mul(1u32 << exp).min(MAX_DELAY);
        let half = full / 2;
        let jitter = half.mul_f64(unit.clamp(0.0, 1.0));
        Decision::Retry {
            attempt: failures,
            delay: half + jitter,
        }
    }
}

/// Wait between attempts to reach Redis at start (down, restarting, or refusing this pod's
/// user until the operator re-creates it): 250 ms doubling to 4 s, equal jitter. Waiting in the
/// process costs a timer; exiting would cost a process start per attempt, and a thousand pods
/// doing that after a node restart keep two cores busy (docs/benchmarks.md, "The fleet").
pub fn redis_retry_delay(failures: u32, unit: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(4);
    let full = Duration::from_millis(250 << exp);
    let half = full / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> ReconnectPolicy {
        ReconnectPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1000),
        }
    }

    #[test]
    fn grows_exponentially_with_bounded_jitter_then_gives_up() {
        assert_eq!(
            p().decide(1, 0.0),
            Decision::Retry {
                attempt: 1,
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(
            p().decide(1, 0.999_999),
            Decision::Retry {
                attempt: 1,
                delay: Duration::from_micros(999_999) + Duration::from_nanos(500)
            }
        );
        let Decision::Retry { delay, .. } = p().decide(3, 0.5) else {
            panic!()
        };
        assert_eq!(delay, Duration::from_millis(3000));
        assert_eq!(p().decide(4, 0.5), Decision::GiveUp);
    }

    #[test]
    fn capped() {
        let big = ReconnectPolicy {
            max_attempts: 100,
            base: Duration::from_secs(60),
        };
        let Decision::Retry { delay, .. } = big.decide(90, 1.0) else {
            panic!()
        };
        assert!(delay <= MAX_DELAY);
    }

    #[test]
    fn redis_retries_start_quick_and_stay_within_four_seconds() {
        assert_eq!(redis_retry_delay(1, 0.0), Duration::from_millis(125));
        assert_eq!(redis_retry_delay(1, 1.0), Duration::from_millis(250));
        assert_eq!(redis_retry_delay(3, 0.5), Duration::from_millis(750));
        for failures in [5, 6, 100, u32::MAX] {
            assert_eq!(redis_retry_delay(failures, 1.0), Duration::from_secs(4));
            assert_eq!(redis_retry_delay(failures, 0.0), Duration::from_secs(2));
        }
    }
}
