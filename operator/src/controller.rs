//! The reconcile loop: observe (resource, cached pod, session state in Redis) → build (pure, in
//! `resources`) → apply (create/delete children) → status (pure, in `status`). All Kubernetes and
//! Redis IO of a reconcile lives here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use redis::aio::ConnectionManager;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wasp_common::session_state::read_state_and_lease;
use wasp_crds::validate::validate_spec;
use wasp_crds::{DesiredState, WhatsAppSession, labels::FINALIZER};

use crate::acl::SessionUsers;
use crate::error::{Error, Result};
use crate::events::Recorder;
use crate::keys::{KeyCache, KeyProblem, MasterKeys};
use crate::metrics::Metrics;
use crate::pod_cache::{CachedPod, PodCache};
use crate::resources::{self, FIELD_MANAGER, PodCredentials, PodSettings};
use crate::status::{Observed, PodView, compute_status, transition};
use crate::webhooks::WebhookSettings;
use crate::{backoff, cleanup, sweeper};

/// How long a finalizer waits between checks that the session pod is gone.
const CLEANUP_RECHECK: Duration = Duration::from_secs(1);

/// How soon a session whose master keys are unavailable is looked at again (the key cache
/// reads the Secret at most once per `keys::KEYS_TTL` however many sessions wait).
const KEYS_RECHECK: Duration = crate::keys::KEYS_TTL;

/// Shared by every reconcile of one leadership term.
pub struct Context {
    pub client: Client,
    pub namespace: Option<String>,
    pub redis: ConnectionManager,
    pub pods: PodCache,
    pub settings: PodSettings,
    /// The master keys, per namespace: only the operator holds them.
    pub keys: KeyCache,
    /// The session pods' own Redis users; `None` with shared Redis credentials.
    pub session_users: Option<Arc<SessionUsers>>,
    pub resync: Duration,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub webhooks: WebhookSettings,
    failures: Mutex<HashMap<ObjectRef<SessionMeta>, u32>>,
}

impl Context {
    /// The sessions this operator watches (one namespace, or all).
    pub fn sessions_api(&self) -> Api<WhatsAppSession> {
        api(&self.client, self.namespace.as_deref())
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Everything a leadership term runs with, built by `lib::run`.
pub struct Term {
    pub client: Client,
    pub namespace: Option<String>,
    pub redis: ConnectionManager,
    pub settings: PodSettings,
    pub keys: KeyCache,
    pub session_users: Option<Arc<SessionUsers>>,
    pub resync: Duration,
    pub stale_default: Duration,
    pub cleanup_interval: Duration,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub triggers: tokio::sync::broadcast::Sender<ObjectRef<WhatsAppSession>>,
    /// Reconciles running at once (bounds memory and API load when thousands of sessions change).
    pub concurrency: u16,
    pub webhooks: WebhookSettings,
}

/// What the controller caches of a session: its metadata, reduced to its name and namespace.
/// Each reconcile GETs the session itself, so a cached session costs a few hundred bytes instead
/// of ≈ 1.9 KiB (spec, status, conditions; docs/benchmarks.md, "Run 4"); the sweeper and the
/// ACL keeper page through the API when they run.
pub type SessionMeta = PartialObjectMeta<WhatsAppSession>;

/// Keeps of a session's metadata only what names it (the controller's key). Without a
/// resourceVersion or uid, the scheduler's and the cache's keys are two short strings.
fn slim_meta(m: &mut SessionMeta) {
    m.types = None;
    m.metadata = ObjectMeta {
        name: m.metadata.name.take(),
        namespace: m.metadata.namespace.take(),
        ..ObjectMeta::default()
    };
}

/// The controller's key of a session named by an announcement or a pod's owner reference.
fn meta_ref(r: ObjectRef<WhatsAppSession>) -> ObjectRef<SessionMeta> {
    let key = ObjectRef::new(&r.name);
    match r.namespace {
        Some(ns) => key.within(&ns),
        None => key,
    }
}

/// Watch settings of both caches: small list pages keep the peak of an initial list (a response
/// body and its decoded objects at once) low when there are thousands of sessions.
fn list_config() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

/// Runs the controller (and the stale-session sweeper) until `stop` fires.
pub async fn run_term(term: Term, stop: CancellationToken) {
    let ns = term.namespace.as_deref();
    // Metadata-only list and watch requests (`Api<PartialObjectMeta<_>>`).
    let sessions: Api<SessionMeta> = api(&term.client, ns);
    let pods_api: Api<Pod> = api(&term.client, ns);

    // One cache of the owned pods, shared by the controller's trigger and the reconciler, that
    // keeps only what the reconciler reads of a pod; the sessions' cache drops managedFields. At
    // thousands of sessions the caches are most of the operator's memory.
    let (pods, pod_events) =
        crate::pod_cache::watch(pods_api, list_config().labels(&resources::owned_selector()));
    let (sessions_cache, writer) = reflector::store();
    let session_events = reflector::reflector(
        writer,
        watcher(sessions, list_config())
            .default_backoff()
            .modify(slim_meta),
    )
    .applied_objects();

    // Session pods announce state changes through Redis; each announcement reconciles one object.
    let external = futures::stream::unfold(term.triggers.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(r) => return Some((meta_ref(r), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });

    let ctx = Arc::new(Context {
        client: term.client.clone(),
        namespace: term.namespace.clone(),
        redis: term.redis,
        pods,
        settings: term.settings,
        keys: term.keys,
        session_users: term.session_users,
        resync: term.resync,
        recorder: term.recorder,
        metrics: term.metrics,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
        webhooks: term.webhooks,
        failures: Mutex::default(),
    });

    let controller = Controller::for_stream(session_events, sessions_cache)
        .with_config(controller::Config::default().concurrency(term.concurrency))
        .reconcile_on(pod_events.map(meta_ref))
        .reconcile_on(external)
        .graceful_shutdown_on({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        });
    let acl_keeper = tokio::spawn(crate::acl::keep_after_restarts(ctx.clone(), stop.clone()));
    let sweeper = tokio::spawn(sweeper::sweep(
        ctx.clone(),
        term.stale_default,
        term.cleanup_interval,
        stop.clone(),
    ));

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "reconcile request failed");
            }
        })
        .await;
    stop.cancel();
    let _ = sweeper.await;
    let _ = acl_keeper.await;
}

async fn reconcile(meta: Arc<SessionMeta>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = fetch_and_reconcile(&meta, &ctx).await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(meta.as_ref()));
    }
    result
}

/// Reads the session the cache names (a quorum read: never older than the event that triggered
/// this reconcile) and reconciles it; one deleted meanwhile needs nothing more.
async fn fetch_and_reconcile(meta: &SessionMeta, ctx: &Context) -> Result<Action> {
    let ns = meta
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(ctx.client.clone(), &ns);
    match sessions.get_opt(&meta.name_any()).await? {
        Some(session) => reconcile_inner(&session, ctx).await,
        None => Ok(Action::await_change()),
    }
}

fn error_policy(session: Arc<SessionMeta>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(session.as_ref());
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff::delay(failures, rand::random::<f64>());
    warn!(session = %session.name_any(), namespace = ?session.namespace(), category = error.category(), error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(session: &WhatsAppSession, ctx: &Context) -> Result<Action> {
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = session.name_any();
    let sessions: Api<WhatsAppSession> = Api::namespaced(ctx.client.clone(), &ns);

    if session.metadata.deletion_timestamp.is_some() {
        if !session.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(Action::await_change());
        }
        if !cleanup::finalize(session, ctx).await? {
            return Ok(Action::requeue(CLEANUP_RECHECK));
        }
        remove_finalizer(&sessions, session).await?;
        ctx.metrics.forget_session(&ns, &name);
        info!(session = %name, namespace = %ns, "session deleted: device logged out, data purged");
        return Ok(Action::await_change());
    }

    let session = if session.finalizers().iter().any(|f| f == FINALIZER) {
        session.clone()
    } else {
        add_finalizer(&sessions, session).await?
    };

    // Every reconcile waits on a watch channel, not on kube-runtime 5's `Store::wait_until_ready`
    // (which woke only the last of concurrent waiters: a flaky restart test once).
    ctx.pods.wait_until_ready().await;
    debug!(session = %name, generation = ?session.metadata.generation, "reconciling");
    let problems = validate_spec(&session.spec);
    let cached = ctx.pods.get(&ns, &resources::pod_name(&session));
    // The master keys are read only for a session that wants a pod (a stopped one needs none).
    let keys = if problems.is_empty() && session.spec.desired_state == DesiredState::Connected {
        Some(ctx.keys.get(&ns).await?)
    } else {
        None
    };
    let key_problem: Option<KeyProblem> = keys.clone().and_then(Result::err);
    let pod = match (&keys, problems.is_empty()) {
        (Some(Err(_)), _) | (_, false) => cached.map(|p| p.view),
        (Some(Ok(keys)), true) => {
            let redis_url = session_redis_user(&session, keys, ctx).await?;
            apply_pod(&session, cached.as_ref(), Some((keys, redis_url)), ctx).await?
        }
        (None, true) => apply_pod(&session, cached.as_ref(), None, ctx).await?,
    };

    let webhooks =
        crate::webhooks::sync(&ctx.client, &ctx.redis, &ctx.webhooks, &session, &ns).await?;
    let mut redis = ctx.redis.clone();
    let (state, lease_token) = read_state_and_lease(&mut redis, &session.spec.user_id).await?;
    let observed = Observed {
        webhooks,
        session: &session,
        pod,
        state,
        lease_token,
        problems,
        key_problem: key_problem.clone(),
        control_port: ctx.settings.control_port,
        now: Time(Timestamp::now()),
    };
    let status = compute_status(&observed);
    if session.status.as_ref() != Some(&status) {
        let body = json!({ "apiVersion": "wasp.dev/v1alpha1", "kind": "WhatsAppSession", "status": status });
        sessions
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    if let Some(t) = transition(session.status.as_ref(), &status) {
        publish(
            ctx,
            &session,
            if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            &t.reason,
            "Reconcile",
            t.note,
        )
        .await;
    }
    if let Some(phase) = status.phase {
        ctx.metrics.set_phase(&ns, &name, phase);
    }
    if let Some(problem) = key_problem {
        warn!(session = %name, namespace = %ns, %problem, "master keys unavailable; the session pod is left as it is");
        return Ok(Action::requeue(KEYS_RECHECK.min(ctx.resync)));
    }
    Ok(Action::requeue(ctx.resync))
}

/// Creates or updates the session's own Redis user (per-session credentials) and returns the
/// URL its pod uses; `None` with shared credentials. A Redis that refuses (not an admin, ACLs
/// forbidden, older than 7) gets a Warning event saying what to do.
async fn session_redis_user(
    session: &WhatsAppSession,
    keys: &MasterKeys,
    ctx: &Context,
) -> Result<Option<String>> {
    let Some(users) = ctx.session_users.as_ref() else {
        return Ok(None);
    };
    let mut redis = ctx.redis.clone();
    match users.ensure(&mut redis, &session.spec.user_id, keys).await {
        Ok(url) => Ok(Some(url)),
        Err(e) => {
            let note = format!(
                "cannot create the session's Redis user ({e}); the operator's Redis credentials must allow ACL SETUSER on Redis 7+, or run the operator with --redis-acl shared (chart: operator.redisAcl: shared)"
            );
            publish(
                ctx,
                session,
                EventType::Warning,
                "RedisUserFailed",
                "Reconcile",
                note,
            )
            .await;
            Err(e)
        }
    }
}

/// Brings the pod in line with the spec and the master keys (`None` only when the pod is not
/// wanted); returns what the operator now sees of the pod (or `None`). `creds`: the master keys and the pod's
/// Redis URL (with per-session users).
async fn apply_pod(
    session: &WhatsAppSession,
    cached: Option<&CachedPod>,
    creds: Option<(&MasterKeys, Option<String>)>,
    ctx: &Context,
) -> Result<Option<PodView>> {
    let keys = creds.as_ref().map(|(k, _)| *k);
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let wanted = session.spec.desired_state == DesiredState::Connected;
    match cached {
        Some(pod) if pod.view.terminating => Ok(Some(pod.view.clone())),
        Some(pod) if !wanted => {
            delete_pod(&pods, pod).await?;
            Ok(None)
        }
        Some(pod) => {
            let keys = keys.ok_or(Error::MissingField("master keys"))?;
            let desired = resources::session_pod(session, &ctx.settings, &keys.ids())?;
            if pod.spec_hash.as_deref() == resources::pod_spec_hash(&desired) {
                debug!(pod = %pod.view.name, "pod up to date");
                return Ok(Some(pod.view.clone()));
            }
            // Replace: the new pod has the same name, so it cannot exist before the old is gone.
            info!(pod = %pod.view.name, namespace = %ns, "session spec changed; replacing pod");
            delete_pod(&pods, pod).await?;
            Ok(Some(pod.view.clone()))
        }
        None if !wanted => Ok(None),
        None => {
            let (keys, redis_url) = creds.ok_or(Error::MissingField("master keys"))?;
            // Auth tables written before the table index existed join it (a pod's own Redis
            // user may not SCAN to find them).
            wasp_common::purge::index_auth_tables(&mut ctx.redis.clone(), &session.spec.user_id)
                .await?;
            if redis_url.is_none() {
                publish(ctx, session, EventType::Warning, "SharedRedisCredentials", "CreatePod",
                    "the session pod gets the shared Redis credentials (operator --redis-acl shared): a compromised pod can reach every user's data".into()).await;
            }
            // The Secret holds the keyring (and Redis URL) before a pod that reads it exists.
            let creds = PodCredentials {
                keyring: keys.keyring(&session.spec.user_id),
                redis_url,
            };
            ensure_control_secret(session, &creds, ctx).await?;
            let desired = resources::session_pod(session, &ctx.settings, &keys.ids())?;
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match pods.create(&params, &desired).await {
                Ok(pod) => {
                    info!(pod = %pod.name_any(), namespace = %ns, "session pod created");
                    Ok(Some(PodView::of(&pod)))
                }
                // The cache lagged behind: the pod exists (maybe still terminating).
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(pods
                    .get_opt(&resources::pod_name(session))
                    .await?
                    .as_ref()
                    .map(PodView::of)),
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn delete_pod(pods: &Api<Pod>, pod: &CachedPod) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(&pod.view.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the control Secret (a random token and `creds`) once; an existing one keeps its
/// token (it is in use) and gets those of `creds` it holds other values of (a master-key
/// rotation, a switch to per-session Redis users, a Secret made before either existed). Called
/// before each pod creation, so a pod always starts with what its spec names.
async fn ensure_control_secret(
    session: &WhatsAppSession,
    creds: &PodCredentials,
    ctx: &Context,
) -> Result<()> {
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = resources::control_secret(session, &resources::random_token(), creds)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let name = resources::control_secret_name(session);
    let existing = secrets.get(&name).await?;
    let stale = resources::stale_credentials(&existing, creds);
    if stale.is_empty() {
        return Ok(());
    }
    // A merge patch of those keys: the token next to them is left as it is.
    let data: serde_json::Map<String, serde_json::Value> = stale
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                data_encoding::BASE64.encode(v.as_bytes()).into(),
            )
        })
        .collect();
    secrets
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&json!({ "data": data })),
        )
        .await?;
    let keys: Vec<&str> = stale.iter().map(|(k, _)| *k).collect();
    info!(secret = %name, namespace = %ns, ?keys, "control Secret updated (master keys or Redis user changed)");
    Ok(())
}

async fn add_finalizer(
    api: &Api<WhatsAppSession>,
    session: &WhatsAppSession,
) -> Result<WhatsAppSession> {
    // A JSON patch with a test on resourceVersion: never clobbers a concurrent edit.
    let patch = if session.finalizers().is_empty() {
        json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": session.resource_version() },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }
        ])
    } else {
        json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": session.resource_version() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    Ok(api
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?)
}

async fn remove_finalizer(api: &Api<WhatsAppSession>, session: &WhatsAppSession) -> Result<()> {
    let Some(index) = session.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{index}") }
    ]))?;
    match api
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Publishes a Kubernetes Event about the session; failures are logged, never fatal.
pub async fn publish(
    ctx: &Context,
    session: &WhatsAppSession,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        warn!(session = %session.name_any(), error = %e, "could not publish event");
    }
}
