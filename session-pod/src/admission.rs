//! Fleet-wide login pacing. Before a paired device logs in to WhatsApp (every reconnect, and a
//! restarted process's first connect) the pod reserves a slot in one shared bucket in Redis
//! ([`wasp_common::keys::ADMISSION`]), so that a restart storm — every pod killed at once, or
//! the node agent restarted — reaches WhatsApp at no more than `rate` logins per second after
//! an initial `burst`. A fresh pairing (no device yet) and the login right after a pairing are
//! not paced: the user is looking at the screen, and WhatsApp does not see a login storm there.
//!
//! The bucket is a GCRA (generic cell rate algorithm) with reservations: one number, the
//! "theoretical arrival time" (TAT). A request at `now` is granted the slot
//! `max(now, max(TAT, now) − (burst − 1)·T)` (T = 1/rate) and moves the TAT on by T. Each caller
//! learns its own slot in one round trip and sleeps until it: no polling, no herd of retries,
//! the spacing exact whatever the number of pods. Redis' own clock (`TIME`) is the only clock,
//! so pods' clock skew does not matter. The math is [`reserve`] (pure, unit-tested); the Lua
//! script is its transcription.
//!
//! Jitter: a central scheduler needs none on the granted slot (jitter would only let two slots
//! land together). It is used where there is no scheduler: when the script fails (Redis
//! unreachable or the ACL does not grant the key), the pod waits a random `[0, fallback)`.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// The longest slot wait a pod accepts: the key is shared, so a bad value in it (a bug, or a
/// compromised pod writing it) must not keep the fleet offline for longer.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// What a pod is told: the rate (logins per second, fleet-wide; 0 = unpaced) and the burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionPolicy {
    pub rate: f64,
    pub burst: u32,
}

impl AdmissionPolicy {
    pub fn enabled(&self) -> bool {
        self.rate.is_finite() && self.rate > 0.0
    }

    /// The emission interval T in milliseconds (≥ 1).
    pub fn interval_ms(&self) -> u64 {
        ((1000.0 / self.rate).ceil() as u64).max(1)
    }

    /// The wait when the bucket cannot be consulted: random within the time the fleet's
    /// burst would take at the rate (at least one second).
    pub fn fallback_delay(&self, unit: f64) -> Duration {
        let span = Duration::from_millis(self.interval_ms() * u64::from(self.burst.max(1)))
            .max(Duration::from_secs(1));
        span.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// One reservation in the bucket: given the stored TAT (`None`: no key), `now`, the interval
/// and the burst (all milliseconds but the burst), returns `(wait, new_tat)`.
pub fn reserve(tat: Option<u64>, now: u64, interval: u64, burst: u32) -> (u64, u64) {
    let tat = tat.unwrap_or(0).max(now);
    let tolerance = interval.saturating_mul(u64::from(burst.max(1)) - 1);
    let at = tat.saturating_sub(tolerance).max(now);
    (at - now, tat + interval)
}

/// The Lua transcription of [`reserve`]: KEYS[1] the bucket, ARGV interval (ms), burst. The
/// key expires once its TAT is past (an idle fleet leaves nothing behind). Returns the wait (ms).
pub const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if burst < 1 then burst = 1 end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local at = tat - interval * (burst - 1)
if at < now then at = now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', new_tat - now + 1000))
return at - now
";

/// Asks the bucket for a slot; the wait until it (Redis' clock).
pub async fn request(
    conn: &mut ConnectionManager,
    policy: &AdmissionPolicy,
) -> redis::RedisResult<Duration> {
    let ms: u64 = redis::Script::new(SCRIPT)
        .key(wasp_common::keys::ADMISSION)
        .arg(policy.interval_ms())
        .arg(policy.burst.max(1))
        .invoke_async(conn)
        .await?;
    Ok(Duration::from_millis(ms))
}

/// The wait before a paced login: the bucket's answer, or the jittered fallback.
pub async fn wait_for_slot(conn: &mut ConnectionManager, policy: &AdmissionPolicy) -> Duration {
    if !policy.enabled() {
        return Duration::ZERO;
    }
    match request(conn, policy).await {
        Ok(d) => d.min(MAX_WAIT),
        Err(e) => {
            let d = policy.fallback_delay(rand::random::<f64>());
            tracing::warn!(error = %e, delay = ?d, "admission bucket unavailable; jittered wait instead");
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants for `n` requests all made at `now`, starting from an empty bucket.
    fn storm(n: usize, now: u64, interval: u64, burst: u32) -> Vec<u64> {
        let mut tat = None;
        (0..n)
            .map(|_| {
                let (wait, t) = reserve(tat, now, interval, burst);
                tat = Some(t);
                now + wait
            })
            .collect()
    }

    #[test]
    fn a_burst_passes_at_once_then_one_per_interval() {
        let at = storm(6, 1_000, 200, 3);
        assert_eq!(at, vec![1_000, 1_000, 1_000, 1_200, 1_400, 1_600]);
    }

    #[test]
    fn burst_one_is_strict_spacing() {
        assert_eq!(storm(3, 0, 100, 1), vec![0, 100, 200]);
        assert_eq!(storm(3, 0, 100, 0), vec![0, 100, 200]);
    }

    #[test]
    fn an_idle_bucket_refills_and_a_lone_login_is_not_delayed() {
        let (_, tat) = reserve(None, 0, 100, 2);
        let (_, tat) = reserve(Some(tat), 0, 100, 2);
        let (wait, tat) = reserve(Some(tat), 0, 100, 2);
        assert_eq!(wait, 100);
        // Long after: the stored TAT is in the past, the full burst is back.
        let (w1, tat) = reserve(Some(tat), 10_000, 100, 2);
        let (w2, _) = reserve(Some(tat), 10_000, 100, 2);
        assert_eq!((w1, w2), (0, 0));
    }

    #[test]
    fn no_window_exceeds_burst_plus_rate() {
        // 1,000 pods at 7 logins/s, burst 5, asking at scattered times.
        let p = AdmissionPolicy {
            rate: 7.0,
            burst: 5,
        };
        let interval = p.interval_ms();
        let mut tat = None;
        let mut grants = Vec::new();
        for i in 0..1000u64 {
            let now = i * 3 % 997;
            let (wait, t) = reserve(tat, now, interval, p.burst);
            tat = Some(t);
            grants.push(now + wait);
        }
        grants.sort_unstable();
        for (i, &start) in grants.iter().enumerate() {
            let inside = grants[i..]
                .iter()
                .take_while(|&&g| g < start + 1000)
                .count();
            assert!(
                inside as u32 <= p.burst + 7,
                "{inside} in the second from {start}"
            );
        }
    }

    #[test]
    fn interval_and_fallback() {
        let p = AdmissionPolicy {
            rate: 3.0,
            burst: 10,
        };
        assert_eq!(p.interval_ms(), 334);
        assert!(p.enabled());
        assert!(
            !AdmissionPolicy {
                rate: 0.0,
                burst: 1
            }
            .enabled()
        );
        assert_eq!(p.fallback_delay(0.0), Duration::ZERO);
        assert_eq!(p.fallback_delay(1.0), Duration::from_millis(3340));
        let fast = AdmissionPolicy {
            rate: 1000.0,
            burst: 1,
        };
        assert_eq!(fast.fallback_delay(0.5), Duration::from_millis(500));
    }
}
