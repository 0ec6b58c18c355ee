//! wasp-session-pod: one user's WhatsApp Web session. See `docs/session-pod.md`.
#![forbid(unsafe_code)]

pub mod actions;
pub mod admission;
pub mod api;
pub mod auth_store;
pub mod backoff;
pub mod config;
pub mod conversation;
pub mod history;
pub mod http;
pub mod idempotency;
pub mod lease;
pub mod media;
pub mod metrics;
pub mod pacing;
pub mod qr;
pub mod runtime;
pub mod session;
pub mod store;
pub mod wake_timer;

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wasp_common::keys::UserKeys;
use wasp_common::session_state::SessionRef;

pub use config::Config;

/// The bound sockets (port 0 in tests).
pub struct Listeners {
    pub control: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Redis calls fail within seconds while Redis is away, instead of waiting for a reconnect
/// (the defaults have no timeouts): the supervisor retries by its own policy, and a SIGTERM
/// during an outage is not held up by the last writes.
fn redis_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(2)
        .set_max_delay(1000)
}

/// Connects to Redis, retrying (`backoff::redis_retry_delay`) until it answers and accepts
/// this pod's credentials, or `None` once `shutdown` fires: a SIGTERM meanwhile must still stop
/// the pod at once (a kubelet would otherwise wait out the grace period and SIGKILL it).
async fn connect_redis(
    client: &redis::Client,
    shutdown: &CancellationToken,
) -> Option<redis::aio::ConnectionManager> {
    let mut failures = 0u32;
    loop {
        let attempt =
            redis::aio::ConnectionManager::new_with_config(client.clone(), redis_config());
        let error = tokio::select! {
            conn = attempt => match conn {
                Ok(conn) => {
                    if failures > 0 {
                        tracing::info!(failures, "Redis reachable");
                    }
                    return Some(conn);
                }
                Err(e) => e,
            },
            _ = shutdown.cancelled() => return None,
        };
        failures += 1;
        let delay = backoff::redis_retry_delay(failures, rand::random::<f64>());
        // The first failure is worth a line; the rest repeat it.
        if failures == 1 {
            tracing::warn!(error = %error, "Redis not reachable yet: waiting for it (not ready meanwhile)");
        } else {
            tracing::debug!(error = %error, failures, ?delay, "Redis still not reachable");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// How often the allocator's free pages go back to the kernel when no session runs. glibc
/// keeps what was freed, so without this an idle pod stays at the size of its busiest moment
/// (pairing, a history sync, a burst of sends). While a session runs, the lease renewal trims
/// every `lease_ttl / 2` (15 s) in the same wakeup (`session::renew_loop`), and once 5 s after
/// each login: a timer of its own woke each of a thousand idle pods more often, a visible share
/// of the fleet's idle CPU.
const RELEASE_FREE_MEMORY_EVERY: Duration = Duration::from_secs(60);

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Publishes the current QR/pairing code again whenever a consumer asks on the user's
/// `codes_wanted_channel` (wasp-api does when a client of this user subscribes), reconnecting
/// to Redis as needed.
async fn answer_codes_wanted(
    client: redis::Client,
    keys: UserKeys,
    session: Arc<session::Session>,
) {
    use futures::StreamExt as _;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(keys.codes_wanted_channel()).await.is_ok() {
                    let mut asks = pubsub.on_message();
                    while asks.next().await.is_some() {
                        session.publish_codes().await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "codes-wanted listener: Redis unavailable"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the pod until `shutdown` fires: then closes the socket cleanly (flushing pending
/// commits), releases the lease, records the state and stops the servers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    config.validate()?;
    let cipher = config.cipher()?;
    if cfg!(feature = "insecure-sim") {
        tracing::warn!(
            url = %config.whatsapp_url,
            "built with insecure-sim: the WhatsApp certificate chain is NOT verified; only loopback URLs are allowed"
        );
    }
    let client = redis::Client::open(config.redis_url.as_str())?;
    // The admin port answers from the start: live while the pod waits for Redis, ready only
    // once its session runs and is ready.
    let metrics = Arc::new(metrics::Metrics::default());
    let registry = Arc::new(metrics.registry());
    let running: Arc<std::sync::OnceLock<Arc<session::Session>>> = Arc::default();
    let servers_stop = CancellationToken::new();
    let admin = wasp_common::admin::AdminPort::with_readiness(
        move || {
            let mut out = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            out
        },
        {
            let running = running.clone();
            move || running.get().is_some_and(|s| s.is_ready())
        },
    )
    .router();
    let admin_task = tokio::spawn({
        let stop = servers_stop.clone();
        async move {
            axum::serve(listeners.admin, admin)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    let Some(conn) = connect_redis(&client, &shutdown).await else {
        tracing::info!("stopped before Redis was reachable");
        servers_stop.cancel();
        return match admin_task.await {
            Ok(r) => Ok(r?),
            Err(e) => {
                tracing::warn!(error = %e, "admin server task");
                Ok(())
            }
        };
    };
    tracing::info!(
        key_id = cipher.current_key_id(),
        key_ids = ?cipher.key_ids(),
        "auth-state keys"
    );
    let auth = auth_store::RedisAuthStore::new(conn.clone(), cipher, &config.user_id);
    let store = store::Store::new(conn.clone(), &config.user_id, config.events_maxlen);
    let settings = session::SessionSettings {
        user_id: config.user_id.clone(),
        session: SessionRef {
            namespace: config.session_namespace.clone(),
            name: config.session_name.clone(),
        },
        whatsapp_url: config.whatsapp_url.clone(),
        pairing_method: config.pairing_method,
        pairing_phone: config.pairing_phone.clone(),
        storage_policy: config.storage_policy,
        max_media_bytes: config.max_file_size as u64,
        history: history::HistoryLimits {
            per_chat: config.history_per_chat,
            total: config.history_max_messages,
        },
        policy: backoff::ReconnectPolicy {
            max_attempts: config.max_reconnect_attempts,
            base: Duration::from_millis(config.reconnect_interval.max(1)),
        },
        lease_ttl: Duration::from_millis(config.lease_ttl_ms.max(1000)),
        admission: admission::AdmissionPolicy {
            rate: config.admission_rate,
            burst: config.admission_burst,
        },
        holder: lease::holder_name(
            config.pod_uid.as_deref(),
            &config.session_name,
            rand::random::<u64>(),
        ),
    };
    let session = session::Session::new(settings, conn, store.clone(), auth, metrics);
    session
        .redis_ok
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Set once, here: the admin port's readiness reads it.
    let _ = running.set(session.clone());

    let control = api::control_router(api::AppState {
        session: session.clone(),
        token: api::ControlToken(Arc::from(config.control_token.as_str())),
        pacing: Arc::new(pacing::Pacing::new(
            config.send_rate_per_minute,
            config.send_burst,
        )),
    });
    let control_task = tokio::spawn({
        let stop = servers_stop.clone();
        async move {
            // Small JSON answers: no Nagle delay on the control API.
            let listener = listeners.control.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, control)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    let retention_task = (config.retention_days > 0).then(|| {
        let store = store.clone();
        let days = i64::from(config.retention_days);
        tokio::spawn(async move {
            loop {
                let cutoff = jiff::Timestamp::now().as_millisecond() - days * 86_400_000;
                match store.apply_retention(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention"),
                }
                crate::wake_timer::sleep(RETENTION_EVERY).await;
            }
        })
    });

    let release_task = tokio::spawn(async {
        loop {
            crate::wake_timer::sleep(RELEASE_FREE_MEMORY_EVERY).await;
            wasp_malloc::release_free_memory();
        }
    });
    let codes_task = tokio::spawn(answer_codes_wanted(
        client,
        UserKeys::for_user(&config.user_id),
        session.clone(),
    ));

    session::supervise(session, shutdown).await;

    codes_task.abort();
    release_task.abort();
    if let Some(t) = retention_task {
        t.abort();
    }
    servers_stop.cancel();
    for task in [control_task, admin_task] {
        match task.await {
            Ok(r) => r?,
            Err(e) => tracing::warn!(error = %e, "server task"),
        }
    }
    Ok(())
}
