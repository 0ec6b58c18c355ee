//! Long sleeps that wake the process once.
//!
//! An idle session pod spends its CPU on wakeups (docs/benchmarks.md, "The fleet"), and tokio's
//! timer wheel fires a sleep of more than 4.096 s in up to three: its driver wakes at the start
//! of the deadline's 4.096 s slot, again at the start of its 64 ms slot, each time only to move
//! the timer down a level, and then at the deadline. A `timerfd` is one kernel timer, one
//! readiness event on the pod's epoll, one wakeup. Shorter sleeps stay on tokio's wheel: they
//! cascade at most once, and the fd's syscalls would cost more than they save.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// From here on a sleep goes to a `timerfd` (tokio's level-2 slots are 64² ms).
pub const LONG_SLEEP: Duration = Duration::from_millis(4096);

/// Sleeps for `d`: on a one-shot `timerfd` when `d` is at least [`LONG_SLEEP`], else (or if the
/// kernel refuses a timer) on tokio's wheel.
pub async fn sleep(d: Duration) {
    if d >= LONG_SLEEP
        && let Ok(timer) = armed(d)
        && timer.readable().await.is_ok()
    {
        return;
    }
    tokio::time::sleep(d).await;
}

/// A one-shot monotonic timer expiring after `d`, registered with the runtime's reactor.
fn armed(d: Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let value = Timespec::try_from(d).map_err(|_| std::io::Error::other("sleep too long"))?;
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: zero,
            it_value: value,
        },
    )?;
    // Deprecated for types whose `as_raw_fd` may change or close under the registration (its
    // replacement is `unsafe`, which the workspace forbids); an `OwnedFd` moved into the
    // `AsyncFd` is open and the same fd until the `AsyncFd` drops it.
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, Interest::READABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_sleep_on_a_timerfd_lasts_its_duration() {
        let fd = armed(Duration::from_millis(150)).expect("timerfd");
        let t0 = Instant::now();
        let _ready = fd.readable().await.expect("readable");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(150), "woke early: {took:?}");
        assert!(took < Duration::from_secs(2), "woke late: {took:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleep_returns_after_at_least_its_duration_on_either_path() {
        for d in [Duration::from_millis(30), LONG_SLEEP] {
            let t0 = Instant::now();
            sleep(d).await;
            let took = t0.elapsed();
            assert!(took >= d, "{d:?} woke after {took:?}");
            assert!(
                took < d + Duration::from_secs(2),
                "{d:?} woke after {took:?}"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_sleep_is_cancelled_with_its_future() {
        // Cancelled as a `select!` cancels the keepalive's sleep: the fd is closed with it.
        let r =
            tokio::time::timeout(Duration::from_millis(50), sleep(Duration::from_secs(30))).await;
        assert!(r.is_err());
    }
}
