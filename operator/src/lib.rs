//! wasp-operator: reconciles `WhatsAppSession` resources into isolated session pods.
//!
//! `run` wires the parts: an admin server (metrics, health), a Redis subscription that turns the
//! session pods' state announcements into reconciles, and — while this replica holds the leader
//! Lease — the controller (`controller`) and the stale-session sweeper (`sweeper`).
#![forbid(unsafe_code)]

pub mod acl;
pub mod backoff;
pub mod cleanup;
pub mod config;
pub mod controller;
pub mod error;
pub mod events;
pub mod keys;
pub mod listing;
pub mod metrics;
pub mod pod_cache;
pub mod pod_resources;
pub mod resources;
pub mod stale;
pub mod status;
pub mod sweeper;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::runtime::events::Reporter;

use crate::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasp_common::admin::AdminPort;
use wasp_common::keys::STATE_CHANGED_CHANNEL;
use wasp_common::session_state::SessionRef;
use wasp_common::shutdown;
use wasp_crds::WhatsAppSession;

pub use config::Config;

use crate::controller::Term;
use crate::metrics::Metrics;

/// Shutdown budgets, together well inside the chart's 30 s `terminationGracePeriodSeconds`:
/// in-flight reconciles finish, the leader lease is released (the next leader starts at once
/// instead of after the lease's duration), the admin port closes.
const CONTROLLER_DRAIN: Duration = Duration::from_secs(10);
const LEASE_RELEASE: Duration = Duration::from_secs(5);
const ADMIN_DRAIN: Duration = Duration::from_secs(3);

/// Errors that stop the operator (a reconcile's errors never do).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
    #[error("--redis-acl per-session: {0}")]
    RedisUrl(#[from] wasp_common::acl::UrlError),
    #[error("--webhook-key must be 32 bytes, hex or base64")]
    WebhookKey,
}

/// A handle to the running operator's observable state (used by tests and benchmarks).
#[derive(Clone)]
pub struct Handle {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub identity: String,
}

impl Handle {
    pub fn new(config: &Config) -> Self {
        Self {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
            identity: config.identity.clone().unwrap_or_else(default_identity),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "wasp-operator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Runs until `shutdown` fires. The admin server listens on `admin` (port 0 in tests).
pub async fn run(
    config: Config,
    client: Client,
    admin: TcpListener,
    handle: Handle,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let webhooks = webhooks::WebhookSettings {
        secrets: match &config.webhook_key {
            Some(k) if !k.trim().is_empty() => Some(wasp_common::webhooks::SecretBox::new(
                wasp_common::crypto::MasterKey::parse(k).map_err(|_| RunError::WebhookKey)?,
            )),
            _ => None,
        },
        policy: config.webhook_policy.policy(),
    };
    let redis_client = redis::Client::open(config.redis_url.as_str())?;
    let redis = redis::aio::ConnectionManager::new(redis_client.clone()).await?;

    let session_users = match config.redis_acl {
        config::RedisAcl::PerSession => Some(Arc::new(acl::SessionUsers::new(&config.redis_url)?)),
        config::RedisAcl::Shared => {
            warn!(
                "session pods share the Redis credentials (--redis-acl shared): a compromised pod can reach every user's data"
            );
            None
        }
    };

    let metrics = handle.metrics.clone();
    let admin_port = AdminPort::new(move || metrics.encode(), handle.ready.clone());
    let admin_task = tokio::spawn(admin_port.serve(admin, shutdown.clone()));

    let (triggers, _) = broadcast::channel(4096);
    tokio::spawn(forward_state_changes(
        redis_client,
        config.namespace.clone(),
        triggers.clone(),
        shutdown.clone(),
    ));

    let reporter = Reporter {
        controller: resources::FIELD_MANAGER.into(),
        instance: Some(handle.identity.clone()),
    };
    let term = || Term {
        client: client.clone(),
        namespace: config.namespace.clone(),
        redis: redis.clone(),
        settings: resources::PodSettings::from(&config),
        keys: keys::KeyCache::new(
            client.clone(),
            &config.master_key_secret,
            &config.master_key_secret_key,
            handle.metrics.master_key_reads.clone(),
        ),
        session_users: session_users.clone(),
        resync: config.resync(),
        stale_default: config.stale_timeout(),
        cleanup_interval: config.cleanup_interval(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        metrics: handle.metrics.clone(),
        triggers: triggers.clone(),
        concurrency: config.concurrency,
        webhooks: webhooks.clone(),
    };
    handle.ready.store(true, Ordering::Relaxed);

    if !config.leader_election {
        handle.metrics.leader.set(1);
        controller::run_term(term(), shutdown.clone()).await;
    } else {
        let duration = config.lease_duration_seconds.max(3);
        let build = || {
            LeaseManagerBuilder::new(client.clone(), &config.lease_name)
                .with_namespace(config.lease_namespace())
                .with_identity(&handle.identity)
                .with_duration(duration)
                .with_grace((duration / 3).max(1))
                .build()
        };
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client.clone(), &config.lease_namespace());
        info!(identity = %handle.identity, lease = %config.lease_name, "waiting for leadership");
        'election: loop {
            let (mut leading, task) = build().await?.watch().await;
            loop {
                // A waiting candidate's manager sleeps until the holder's lease would expire,
                // even when the holder released it on a clean stop (a rolling upgrade):
                // restarted, it takes the free lease at once.
                tokio::select! {
                    _ = shutdown.cancelled() => { task.abort(); break 'election }
                    changed = leading.wait_for(|l| *l) => if changed.is_err() { task.abort(); break 'election },
                    _ = lease_released(&leases, &config.lease_name), if !*leading.borrow() => {
                        info!(identity = %handle.identity, "the leader released the lease; taking it");
                        task.abort();
                        continue 'election;
                    }
                }
                info!(identity = %handle.identity, "leading: controller started");
                handle.metrics.leader.set(1);
                let term_stop = shutdown.child_token();
                let mut lost = leading.clone();
                let stop = term_stop.clone();
                let watch_loss = tokio::spawn(async move {
                    let _ = lost.wait_for(|l| !*l).await;
                    stop.cancel();
                });
                // Cancelling a reconcile midway is safe (each one is idempotent), so a drain
                // that hangs is dropped after its budget: the lease is still released in time.
                shutdown::drain(
                    "controller",
                    &term_stop,
                    CONTROLLER_DRAIN,
                    controller::run_term(term(), term_stop.clone()),
                )
                .await;
                watch_loss.abort();
                handle.metrics.leader.set(0);
                handle.metrics.forget_all();
                if shutdown.is_cancelled() {
                    info!(identity = %handle.identity, "shutting down: controller stopped");
                    task.abort();
                    break 'election;
                }
                warn!(identity = %handle.identity, "lost leadership: controller stopped");
            }
        }
        // Released now, not when the manager's task would next wake (up to the lease's
        // duration): the next leader starts at once. Releasing checks that we hold it.
        let release = async {
            match build().await {
                Ok(manager) => manager.release().await,
                Err(e) => Err(e),
            }
        };
        match shutdown::bounded("leader lease release", LEASE_RELEASE, release).await {
            Some(Ok(())) => {
                info!(identity = %handle.identity, "shutting down: leader lease released")
            }
            Some(Err(e)) => warn!(error = %e, "could not release the leader lease"),
            None => {}
        }
    }
    handle.metrics.leader.set(0);
    shutdown.cancel();
    if let Some(served) = shutdown::bounded("admin server", ADMIN_DRAIN, admin_task).await {
        served.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// Resolves once Lease `name` has no holder (its holder released it), polled every second with
/// the `get` the operator's Role already allows.
async fn lease_released(leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>, name: &str) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(lease)) = leases.get_opt(name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .is_none_or(str::is_empty)
        {
            return;
        }
    }
}

/// Subscribes to the session pods' state announcements and forwards them as reconcile triggers,
/// resubscribing after Redis outages.
async fn forward_state_changes(
    client: redis::Client,
    namespace: Option<String>,
    triggers: broadcast::Sender<ObjectRef<WhatsAppSession>>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(STATE_CHANGED_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                failures = 0;
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => match m { Some(m) => m, None => break },
                    };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let Some(r) = SessionRef::from_payload(&payload) else {
                        continue;
                    };
                    if namespace.as_ref().is_none_or(|ns| *ns == r.namespace) {
                        let _ = triggers.send(ObjectRef::new(&r.name).within(&r.namespace));
                    }
                }
                warn!("state-change subscription ended; resubscribing");
            }
            Err(e) => {
                failures += 1;
                warn!(error = %e, failures, "cannot subscribe to session state changes");
            }
        }
        let delay = backoff::delay(failures.max(1), rand::random());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay.min(Duration::from_secs(10))) => {}
        }
    }
}
