//! wasp-api: the authenticated gateway between CRM/ERP clients and their users' WhatsApp session
//! pods. See `docs/api.md`.
#![forbid(unsafe_code)]
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod console;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod pods;
pub mod ratelimit;
pub mod redis_conn;
pub mod routes;
pub mod routing;
pub mod sessions;
pub mod stats;
pub mod stream;
pub mod validate;
pub mod view;
pub mod webhooks;

use axum::serve::ListenerExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use app::{AppState, HttpSettings};
use auth::Authenticator;
use auth::extract::AuthContext;
use metrics::Metrics;
use pods::{HttpPods, PodApi};
use ratelimit::UserRateLimiter;
use redis_conn::Redis;
use sessions::Sessions;
use stream::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid REDIS_URL: {0}")]
    RedisUrl(#[from] redis::RedisError),
    #[error("webhook settings: {0}")]
    Webhooks(String),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the API on `listener` and the admin port on `admin` until `shutdown`; session pods are
/// called over HTTP with the control tokens of their Secrets.
pub async fn run(
    config: Config,
    client: kube::Client,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let tokens = pods::Tokens::start(client.clone(), &config.namespace, shutdown.clone());
    let pods = Arc::new(HttpPods::new(tokens, config.upstream_timeout()));
    run_with_pods(config, client, listener, admin, pods, shutdown).await
}

/// Checks the webhook settings and, unless this replica only serves, starts its dispatcher.
fn start_webhooks(
    config: &Config,
    redis: &Arc<Redis>,
    hub: &Hub,
    sessions: &Sessions,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<webhooks::WebhookConfig, RunError> {
    let flags = &config.webhooks;
    let policy = Arc::new(flags.policy());
    let globals =
        webhooks::parse_globals(&flags.global_webhooks, &policy).map_err(RunError::Webhooks)?;
    let lookup = webhooks::resolve::parse_servers(&flags.webhook_dns_servers)
        .and_then(|s| webhooks::resolve::Lookup::new(&s))
        .map_err(|e| RunError::Webhooks(format!("WEBHOOK_DNS_SERVERS: {e}")))?;
    let secrets = match flags
        .webhook_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
    {
        Some(k) => Some(webhooks::store::SecretBox::new(
            wasp_common::crypto::MasterKey::parse(k).map_err(|_| {
                RunError::Webhooks("WASP_WEBHOOK_KEY is not 32 bytes of hex or base64".into())
            })?,
        )),
        None => None,
    };
    if flags.webhook_dispatch {
        let sender = webhooks::deliver::Sender::new(
            policy.clone(),
            lookup.clone(),
            Duration::from_millis(flags.webhook_timeout_ms.max(100)),
        )
        .map_err(|e| RunError::Webhooks(e.to_string()))?;
        let (redis, hub, sessions, metrics) = (
            redis.clone(),
            hub.clone(),
            sessions.clone(),
            metrics.clone(),
        );
        // Without a key, a replica still delivers the global webhooks; users' stay shut.
        let user_secrets = secrets.clone();
        let timing = flags.timing();
        let globals = Arc::new(globals);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = loop {
                match redis.conn().await {
                    Ok(c) => break c,
                    Err(_) => tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    },
                }
            };
            let me = format!("{:016x}", rand::random::<u64>());
            webhooks::dispatcher::Dispatcher {
                store: webhooks::store::Store {
                    conn,
                    timeout: redis.timeout(),
                },
                hub,
                sessions,
                sender,
                secrets: user_secrets,
                globals,
                metrics,
                timing,
                me,
            }
            .run(shutdown)
            .await;
        });
    }
    Ok(webhooks::WebhookConfig {
        policy,
        lookup,
        secrets,
    })
}

/// [`run`] with a given way of calling session pods (tests use fakes).
pub async fn run_with_pods(
    config: Config,
    client: kube::Client,
    listener: TcpListener,
    admin: TcpListener,
    pods: Arc<dyn PodApi>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let timeout = config.upstream_timeout();
    let metrics = Arc::new(Metrics::new());
    let limiter = Arc::new(UserRateLimiter::new(
        config.rate_limit_per_second,
        config.rate_limit_burst,
    ));
    let sessions = Sessions::start(client, &config.namespace, timeout, shutdown.clone())
        .with_default_storage_policy(config.default_storage_policy);
    let redis = Arc::new(Redis::new(&config.redis_url, timeout)?);
    let hub = Hub::start(redis.clone(), metrics.clone(), timeout, shutdown.clone());
    let webhooks = start_webhooks(&config, &redis, &hub, &sessions, &metrics, &shutdown)?;
    let state = AppState {
        auth: AuthContext {
            authenticator: Authenticator::from_config(&config),
            limiter: limiter.clone(),
            metrics: metrics.clone(),
        },
        sessions: sessions.clone(),
        redis: redis.clone(),
        pods,
        hub,
        webhooks,
        max_file_size: config.max_file_size,
        started: Instant::now(),
        shutdown: shutdown.clone(),
    };
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => limiter.housekeeping(),
                }
            }
        }
    });
    let settings = HttpSettings {
        allowed_origins: config.allowed_origins.clone(),
        max_body: config.max_file_size,
    };
    let router = app::router(state, &settings);
    let admin_router =
        wasp_common::admin::AdminPort::new(move || metrics.encode(), sessions.ready_flag())
            .router();
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        admin = ?admin.local_addr().ok(),
        namespace = %config.namespace,
        "wasp-api serving"
    );
    // Small frames (events, JSON answers) leave at once: no Nagle delay behind a previous one.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let public = axum::serve(listener, router).with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.cancelled().await }
    });
    let admin = axum::serve(admin, admin_router).with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.cancelled().await }
    });
    let (a, b) = tokio::join!(public, admin);
    a?;
    b?;
    Ok(())
}
