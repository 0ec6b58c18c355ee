//! When to try again and who delivers: exponential back-off with full jitter, `Retry-After`,
//! the give-up rule, and which replica owns an endpoint (rendezvous hashing over the live
//! replicas, so endpoints spread over replicas and move only when a replica comes or goes).
//! Pure.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// The longest `Retry-After` honoured.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Retry timing (operator settings).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first retry's ceiling; doubles per attempt.
    pub base: Duration,
    /// The ceiling of any one wait.
    pub max: Duration,
    /// Give up on an event this long after it happened (then it goes to the dead letters).
    pub max_age: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1 failed so far): "full jitter",
    /// uniform in `[ceiling/2, ceiling]` (`unit` ∈ [0, 1) is the random draw), so that many
    /// endpoints failing together do not retry together. A `Retry-After` from the receiver
    /// wins (within an hour; the maximum age still applies).
    pub fn wait(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(RETRY_AFTER_CAP);
        }
        let exp = 1u32 << attempt.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(exp).min(self.max);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Whether an event that happened `age` ago is given up on instead of tried again after
    /// `wait`.
    pub fn give_up(&self, age: Duration, wait: Duration) -> bool {
        age.saturating_add(wait) > self.max_age
    }
}

/// `Retry-After`: seconds, or an HTTP date (relative to `now_unix`).
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value)
        .ok()?
        .timestamp()
        .as_second();
    Some(Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64
    ))
}

/// The replica that should deliver to `endpoint` among `replicas` (highest random weight).
pub fn owner<'a>(endpoint: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas
        .iter()
        .max_by_key(|r| {
            let digest = Sha256::new()
                .chain_update(r.as_bytes())
                .chain_update([0])
                .chain_update(endpoint.as_bytes())
                .finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(first), r.as_str())
        })
        .map(String::as_str)
}

/// Why an attempt failed, as a metric label.
pub fn reason_for_status(status: u16) -> &'static str {
    match status {
        408 | 429 => "throttled",
        400..=499 => "status_4xx",
        _ => "status_5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_with_jitter_and_honours_retry_after() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(b.wait(1, 0.0, None), Duration::from_millis(500));
        assert_eq!(b.wait(1, 0.999_999, None).as_millis(), 999);
        assert_eq!(b.wait(3, 0.0, None), Duration::from_secs(2));
        assert_eq!(b.wait(30, 1.0, None), Duration::from_secs(60), "capped");
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(120))),
            Duration::from_secs(120),
            "the receiver knows best, beyond the back-off's ceiling too"
        );
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600),
            "within an hour"
        );
        assert!(!b.give_up(Duration::from_secs(3000), Duration::from_secs(60)));
        assert!(b.give_up(Duration::from_secs(3590), Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(
            parse_retry_after(" 120 ", 0),
            Some(Duration::from_secs(120))
        );
        let now = 1_445_412_480; // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn endpoints_spread_over_replicas_and_move_only_when_their_owner_goes() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let endpoints: Vec<String> = (0..300).map(|i| format!("h{i}/api")).collect();
        let owners: Vec<&str> = endpoints
            .iter()
            .map(|e| owner(e, &three).unwrap())
            .collect();
        for r in ["a", "b", "c"] {
            let n = owners.iter().filter(|o| **o == r).count();
            assert!((60..=140).contains(&n), "{r} owns {n} of 300");
        }
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        for (e, before) in endpoints.iter().zip(&owners) {
            let after = owner(e, &two).unwrap();
            if *before != "b" {
                assert_eq!(after, *before, "{e} moved though its owner stayed");
            }
        }
        assert_eq!(owner("x", &[]), None);
    }
}
