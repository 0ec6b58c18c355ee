//! Waiting for the world to reach a state, instead of sleeping.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Resource};
use tokio::time::{Instant, sleep, timeout};

/// How often [`eventually`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A wait ran out of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub after: Duration,
    pub what: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.after, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value; gives up
/// with [`TimedOut`] after `limit`. `check` runs at least once, and each call is itself bounded by
/// the remaining time.
///
/// ```no_run
/// # async fn f(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) -> anyhow::Result<()> {
/// use std::time::Duration;
/// let gone = wasp_e2e::eventually(Duration::from_secs(30), || async {
///     pods.get_opt("p").await.ok()?.is_none().then_some(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(v)) = timeout(remaining.max(POLL_INTERVAL), check()).await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                after: start.elapsed(),
                what: "a condition (eventually)".into(),
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// Watches object `name` through `api` until `condition` holds (kube-runtime's `await_condition`:
/// one watch, no polling) and returns the object as it was then (`None` if the condition held for
/// a missing object, e.g. [`kube::runtime::wait::conditions::is_deleted`]). Gives up after `limit`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    condition: impl Condition<K>,
) -> anyhow::Result<Option<K>>
where
    K: Resource + Clone + Debug + Send + serde::de::DeserializeOwned + 'static,
{
    let what = format!("{name} ({})", std::any::type_name::<K>());
    match timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(TimedOut { after: limit, what }.into()),
    }
}

/// Waits until `GET url` answers 2xx (a server's `/readyz`), at most `limit`.
pub async fn http_ready(url: &str, limit: Duration) -> Result<(), TimedOut> {
    let http = reqwest::Client::new();
    eventually(limit, || async {
        let r = http.get(url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
}
