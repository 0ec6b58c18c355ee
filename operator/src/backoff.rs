//! Retry delays after a failed reconcile: exponential per object, capped, with jitter so that
//! many sessions failing together (Redis down) do not retry in lockstep.

use std::time::Duration;

const BASE: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(300);

/// Delay before retry number `failures` (1 = first failure); `jitter` in [0, 1) adds up to 25 %.
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = BASE.saturating_mul(1u32 << exp).min(MAX);
    raw.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(delay(4, 0.0), Duration::from_secs(4));
        assert_eq!(delay(50, 0.0), MAX);
        assert_eq!(delay(u32::MAX, 0.99).as_secs(), 374);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        assert_eq!(delay(1, 1.0), Duration::from_millis(625));
        assert!(delay(3, 0.5) > delay(3, 0.0));
    }
}
