//! Graceful shutdown: SIGTERM (what Kubernetes sends) or Ctrl-C cancels one token that every
//! part of a binary watches.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. Call from inside the runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs `work` to its end, except that once `stop` is cancelled it gets only `budget` more: a
/// drain that hangs (a request the apiserver never answers) must not hold the process until
/// the kubelet's SIGKILL, and the steps after it (releasing a lease) must still run. `None`
/// when the budget ran out; `work` is dropped then, and the overrun is logged under `step`.
pub async fn drain<T>(
    step: &str,
    stop: &CancellationToken,
    budget: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(budget).await;
    };
    tokio::select! {
        done = work => Some(done),
        () = deadline => overran(step, budget),
    }
}

/// [`drain`] for a step that runs only after the stop: `budget` from now.
pub async fn bounded<T>(step: &str, budget: Duration, work: impl Future<Output = T>) -> Option<T> {
    match tokio::time::timeout(budget, work).await {
        Ok(done) => Some(done),
        Err(_) => overran(step, budget),
    }
}

fn overran<T>(step: &str, budget: Duration) -> Option<T> {
    tracing::warn!(
        step,
        budget_ms = budget.as_millis() as u64,
        "shutdown step overran its budget; abandoned"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use tokio::time::{Instant, sleep};

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_in_time_gives_its_result() {
        let stop = CancellationToken::new();
        stop.cancel();
        let got = drain("x", &stop, Duration::from_secs(5), async {
            sleep(Duration::from_secs(4)).await;
            7
        })
        .await;
        assert_eq!(got, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_starts_at_the_stop_not_before() {
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let cancel = stop.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(60)).await;
            cancel.cancel();
        });
        let got = drain("x", &stop, Duration::from_secs(5), pending::<()>()).await;
        assert_eq!(got, None);
        assert_eq!(t0.elapsed(), Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_after_the_stop_gets_its_budget_from_now() {
        let t0 = Instant::now();
        assert_eq!(
            bounded("x", Duration::from_secs(3), pending::<()>()).await,
            None
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(
            bounded("x", Duration::from_secs(3), async { 1 }).await,
            Some(1)
        );
    }
}
