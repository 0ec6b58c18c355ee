//! The operator against a real kube-apiserver + controller-manager (v1.20) and a real Redis. The
//! test plays kubelet where a pod must look Running, and plays the session pod by writing the
//! session-state record into Redis. Each test has its own namespace and its own operator(s).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasp_common::keys::{CLEANUP_STATS, UserKeys};
use wasp_common::session_state::{SessionRef, write_state};
use wasp_common::{SessionPhase, SessionState};
use wasp_crds::conditions::{self, is_true};
use wasp_crds::{DesiredState, PairingMethod, Phase, WhatsAppSession, labels};
use wasp_e2e::{TestEnv, eventually, mark_pod_running};
use wasp_operator::{Config, Handle};

const WAIT: Duration = Duration::from_secs(30);

struct Operator {
    handle: Handle,
    admin: std::net::SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Operator {
    async fn start(client: &Client, ns: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with(client, ns, &TestEnv::get().redis_url(), extra).await
    }

    /// With a Redis of the test's own (one it restarts).
    async fn start_with(
        client: &Client,
        ns: &str,
        redis_url: &str,
        extra: &[&str],
    ) -> Result<Self> {
        // Operator logs show up with a failing test's output (RUST_LOG overrides the level).
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "wasp_operator=info".into());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(filter)
            .try_init();
        let mut args = vec![
            "wasp-operator",
            "--namespace",
            ns,
            "--redis-url",
            redis_url,
            "--session-image",
            "wasp/session-pod:test",
        ];
        if !extra.contains(&"--leader-election") {
            args.extend_from_slice(&["--leader-election", "false"]);
        }
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = listener.local_addr()?;
        let handle = Handle::new(&config);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (client, handle, stop) = (client.clone(), handle.clone(), stop.clone());
            async move {
                if let Err(e) = wasp_operator::run(config, client, listener, handle, stop).await {
                    panic!("operator failed: {e}");
                }
            }
        });
        Ok(Self {
            handle,
            admin,
            stop,
            task,
        })
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .context("operator did not stop")??;
        Ok(())
    }
}

/// The master key of every test namespace (the operator reads it; pods get keyrings).
const MASTER_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// The master-key Secret the operator reads by default (`wasp-master-key`, key `masterKey`).
fn master_secret(current: &str, previous: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([("masterKey".to_owned(), current.to_owned())]);
    if let Some(p) = previous {
        data.insert("previousMasterKeys".into(), p.into());
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("wasp-master-key".into()),
            ..Default::default()
        },
        string_data: Some(data),
        ..Default::default()
    }
}

async fn setup(prefix: &str) -> Result<(Client, String)> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    env.install_crds(&client).await?;
    let ns = env.namespace(prefix).await?;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &master_secret(MASTER_KEY, None))
        .await?;
    Ok((client, ns))
}

async fn redis() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(TestEnv::get().redis_url())?;
    Ok(client.get_multiplexed_async_connection().await?)
}

fn unique_user(tag: &str) -> String {
    format!("{tag}-{:x}@clinic.example", rand::random::<u64>())
}

async fn create_session(api: &Api<WhatsAppSession>, user: &str) -> Result<WhatsAppSession> {
    Ok(api
        .create(&PostParams::default(), &WhatsAppSession::for_user(user))
        .await?)
}

async fn wait_pod(pods: &Api<Pod>, name: &str) -> Result<Pod> {
    Ok(eventually(WAIT, || async { pods.get_opt(name).await.ok().flatten() }).await?)
}

async fn wait_status(
    api: &Api<WhatsAppSession>,
    name: &str,
    check: impl Fn(&WhatsAppSession) -> bool,
) -> Result<WhatsAppSession> {
    let found = eventually(WAIT, || async {
        let s = api.get_opt(name).await.ok().flatten()?;
        check(&s).then_some(s)
    })
    .await;
    match found {
        Ok(s) => Ok(s),
        Err(e) => {
            let last = api.get_opt(name).await?.map(|s| s.status);
            anyhow::bail!("{e}; last status of {name}: {last:?}")
        }
    }
}

fn phase(s: &WhatsAppSession) -> Option<Phase> {
    s.status.as_ref().and_then(|st| st.phase)
}

/// Plays the session pod: writes its state record and announces it.
async fn publish_state(ns: &str, session: &WhatsAppSession, state: SessionState) -> Result<()> {
    let mut conn = redis().await?;
    let r = SessionRef {
        namespace: ns.into(),
        name: session.name_any(),
    };
    write_state(&mut conn, &r, &session.spec.user_id, &state).await?;
    Ok(())
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let all = events.list(&ListParams::default()).await?;
    Ok(all
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

async fn has_event(client: &Client, ns: &str, name: &str, reason: &str, type_: &str) -> bool {
    events_for(client, ns, name).await.is_ok_and(|evs| {
        evs.iter()
            .any(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some(type_))
    })
}

/// Waits until the object `name` has an Event `reason` of `type_`.
async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    type_: &str,
) -> Result<()> {
    eventually(WAIT, || async {
        has_event(client, ns, name, reason, type_)
            .await
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn creates_owned_pod_and_secret_and_serves_metrics() -> Result<()> {
    let (client, ns) = setup("op-create").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let user = unique_user("create");
    let created = create_session(&sessions, &user).await?;
    let name = created.name_any();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_pod(&pods, &name).await?;
    let owner = &pod.owner_references()[0];
    assert_eq!(owner.uid, created.uid().unwrap());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        pod.labels()[labels::USER_HASH],
        wasp_common::user_hash(&user)
    );
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("wasp/session-pod:test")
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get(&format!("{name}-control")).await?;
    assert_eq!(secret.owner_references()[0].uid, created.uid().unwrap());
    assert_eq!(secret.data.unwrap()["token"].0.len(), 43);

    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Starting)).await?;
    assert!(s.finalizers().contains(&labels::FINALIZER.to_owned()));
    let st = s.status.unwrap();
    assert_eq!(st.pod_name.as_deref(), Some(name.as_str()));
    assert_eq!(st.observed_generation, s.metadata.generation);
    assert!(!is_true(&st.conditions, conditions::READY));

    // Metrics are updated as the reconcile that wrote this status returns: wait for them.
    let metrics_url = format!("http://{}/metrics", op.admin);
    let body = eventually(WAIT, || async {
        let body = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        body.contains("wasp_operator_sessions{phase=\"Starting\"} 1")
            .then_some(body)
    })
    .await?;
    assert!(body.contains("wasp_operator_reconciles_total"), "{body}");
    assert!(!body.contains(&user), "no per-user labels");
    assert_eq!(
        reqwest::get(format!("http://{}/readyz", op.admin))
            .await?
            .status(),
        200
    );
    op.stop().await
}

fn env_var<'a>(pod: &'a Pod, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    pod.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
}

/// The keyring in a session's control Secret, as its pod would read it.
async fn keyring_of(secrets: &Api<Secret>, name: &str) -> Result<String> {
    let secret = secrets.get(&format!("{name}-control")).await?;
    let data = secret.data.context("control Secret without data")?;
    Ok(String::from_utf8(
        data.get("userKeys").context("no userKeys")?.0.clone(),
    )?)
}

/// Issue 14 (blast radius of one user): the pod gets its user's keyring from its own Secret and
/// nothing of the master-key Secret; the keyring opens what the master key seals for that user
/// (and nothing of another user); a rotation re-derives the keyring and replaces the pod.
#[tokio::test]
async fn session_pods_get_only_their_users_keyring_and_a_rotation_rolls_them() -> Result<()> {
    use wasp_common::crypto::{AuthCipher, MasterKey, SealedWith, key_id};
    const NEW_KEY: &str = "4343434343434343434343434343434343434343434343434343434343434343";
    let (client, ns) = setup("op-keys").await?;
    let started = std::time::Instant::now();
    let op = Operator::start(&client, &ns, &["--resync-seconds", "1"]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let user = unique_user("keys");
    let name = create_session(&sessions, &user).await?.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pod = wait_pod(&pods, &name).await?;

    let (old, new) = (MasterKey::parse(MASTER_KEY)?, MasterKey::parse(NEW_KEY)?);
    // No reference to the master-key Secret, no master key under any name.
    let env = pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    for e in &env {
        let r = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref());
        assert!(
            r.is_none_or(|r| r.name != "wasp-master-key"),
            "{} reads the master-key Secret",
            e.name
        );
        assert!(!e.name.contains("MASTER"), "{}", e.name);
        assert!(e.value.as_deref() != Some(MASTER_KEY), "{}", e.name);
    }
    let keys_ref = env_var(&pod, "WASP_USER_KEYS")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .context("WASP_USER_KEYS from a Secret")?;
    assert_eq!(
        (keys_ref.name.as_str(), keys_ref.key.as_str()),
        (format!("{name}-control").as_str(), "userKeys")
    );
    let ids = |pod: &Pod| env_var(pod, "WASP_USER_KEY_IDS").and_then(|e| e.value.clone());
    assert_eq!(ids(&pod), Some(key_id(&old).to_string()));

    // The keyring opens what the master key sealed for this user, and nothing of another's.
    let ring = keyring_of(&secrets, &name).await?;
    assert!(!ring.contains(MASTER_KEY));
    let pod_cipher = AuthCipher::from_keyring(&ring)?;
    let sealed = AuthCipher::with_previous(&old, &[], &user).seal(b"aad", b"auth row")?;
    assert_eq!(pod_cipher.open(b"aad", &sealed)?, b"auth row");
    let others = AuthCipher::new(&old, "another-user").seal(b"aad", b"auth row")?;
    assert!(pod_cipher.open(b"aad", &others).is_err());
    let token = secrets.get(&format!("{name}-control")).await?.data.unwrap()["token"].clone();

    // Rotation: new current key, the old one previous. The operator re-derives (within the key
    // cache's 10 s), patches the Secret and replaces the pod.
    secrets
        .replace(
            "wasp-master-key",
            &PostParams::default(),
            &master_secret(NEW_KEY, Some(MASTER_KEY)),
        )
        .await?;
    let first = pod.uid().unwrap();
    let second = eventually(Duration::from_secs(45), || async {
        let p = pods.get_opt(&name).await.ok().flatten()?;
        (p.uid().unwrap() != first && p.metadata.deletion_timestamp.is_none()).then_some(p)
    })
    .await?;
    assert_eq!(
        ids(&second),
        Some(format!("{},{}", key_id(&new), key_id(&old)))
    );
    let ring = keyring_of(&secrets, &name).await?;
    let rotated = AuthCipher::from_keyring(&ring)?;
    // Old values open and are marked for re-sealing; new ones are sealed under the new key.
    assert_eq!(
        rotated.open_checked(b"aad", &sealed)?,
        (b"auth row".to_vec(), SealedWith::Stale)
    );
    let resealed = rotated.seal(b"aad", b"auth row")?;
    assert_eq!(
        AuthCipher::new(&new, &user).open(b"aad", &resealed)?,
        b"auth row"
    );
    // The control token is the one the API already uses.
    assert_eq!(
        secrets.get(&format!("{name}-control")).await?.data.unwrap()["token"],
        token
    );

    // Old key dropped: the keyring and the pod follow again.
    secrets
        .replace(
            "wasp-master-key",
            &PostParams::default(),
            &master_secret(NEW_KEY, None),
        )
        .await?;
    let second_uid = second.uid().unwrap();
    let third = eventually(Duration::from_secs(45), || async {
        let p = pods.get_opt(&name).await.ok().flatten()?;
        (p.uid().unwrap() != second_uid && p.metadata.deletion_timestamp.is_none()).then_some(p)
    })
    .await?;
    assert_eq!(ids(&third), Some(key_id(&new).to_string()));
    let only_new = AuthCipher::from_keyring(&keyring_of(&secrets, &name).await?)?;
    assert!(!only_new.has_previous());
    assert!(only_new.open(b"aad", &sealed).is_err());

    // Many reconciles (one a second), few reads of the master-key Secret: one per 10 s.
    let body = reqwest::get(format!("http://{}/metrics", op.admin))
        .await?
        .text()
        .await?;
    let counter = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    let reads = counter("wasp_operator_master_key_reads_total");
    let reconciles = counter("wasp_operator_reconciles_total");
    let bound = (started.elapsed().as_secs_f64() / 10.0).ceil() + 1.0;
    assert!(
        reads >= 3.0 && reads <= bound,
        "{reads} reads, at most {bound}"
    );
    assert!(
        reconciles > 2.0 * reads,
        "{reconciles} reconciles, {reads} reads"
    );
    op.stop().await
}

/// Without its master-key Secret the operator creates no pod, says why in the status and one
/// Warning event, and goes on once the Secret exists.
#[tokio::test]
async fn a_missing_master_key_secret_is_reported_and_then_recovered() -> Result<()> {
    let (client, ns) = setup("op-nokey").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .delete("wasp-master-key", &DeleteParams::default())
        .await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let name = create_session(&sessions, &unique_user("nokey"))
        .await?
        .name_any();
    let s = wait_status(&sessions, &name, |s| {
        s.status
            .as_ref()
            .and_then(|st| st.last_error.as_deref())
            .is_some_and(|e| e.contains("wasp-master-key") && e.contains("not found"))
    })
    .await?;
    assert_eq!(phase(&s), Some(Phase::Pending));
    wait_event(&client, &ns, &name, "MasterKeyUnavailable", "Warning").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    assert!(pods.get_opt(&name).await?.is_none());

    secrets
        .create(&PostParams::default(), &master_secret(MASTER_KEY, None))
        .await?;
    wait_pod(&pods, &name).await?;
    wait_status(&sessions, &name, |s| {
        phase(s) == Some(Phase::Starting)
            && s.status.as_ref().is_some_and(|st| st.last_error.is_none())
    })
    .await?;
    op.stop().await
}

#[tokio::test]
async fn running_pod_and_session_state_give_connected_status_with_endpoint() -> Result<()> {
    let (client, ns) = setup("op-connected").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let session = create_session(&sessions, &unique_user("connected")).await?;
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_pod(&pods, &name).await?;

    mark_pod_running(&client, &ns, &name, "127.0.0.42").await?;
    let mut state = SessionState::new(SessionPhase::Connected, Timestamp::now());
    state.phone_number = Some("41791234567".into());
    state.push_name = Some("Dr. Meier".into());
    state.connected_at = Some(Timestamp::now());
    publish_state(&ns, &session, state).await?;

    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Connected)).await?;
    let st = s.status.unwrap();
    assert_eq!(st.endpoint.as_deref(), Some("127.0.0.42:8080"));
    assert_eq!(st.phone_number.as_deref(), Some("41791234567"));
    assert_eq!(st.push_name.as_deref(), Some("Dr. Meier"));
    for c in [conditions::READY, conditions::PAIRED, conditions::POD_READY] {
        assert!(is_true(&st.conditions, c), "{c}: {:?}", st.conditions);
    }
    wait_event(&client, &ns, &name, "SessionConnected", "Normal").await?;

    // The phone disconnects: the session pod reports Reconnecting, the status follows.
    let mut state = SessionState::new(SessionPhase::Reconnecting, Timestamp::now());
    state.reconnect_count = 1;
    publish_state(&ns, &session, state).await?;
    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Reconnecting)).await?;
    assert_eq!(s.status.as_ref().unwrap().reconnect_count, 1);
    assert!(!is_true(&s.status.unwrap().conditions, conditions::READY));
    op.stop().await
}

#[tokio::test]
async fn spec_change_deletes_the_old_pod_before_the_new_one_exists() -> Result<()> {
    let (client, ns) = setup("op-replace").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let session = create_session(&sessions, &unique_user("replace")).await?;
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = wait_pod(&pods, &name).await?.uid().unwrap();

    // Record every pod event from now on; the pod count must never exceed one.
    let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let recorder = tokio::spawn(async move {
        let mut live: HashSet<String> = HashSet::new();
        let mut max_live = 0;
        let mut log = Vec::new();
        while let Some(Ok(ev)) = stream.next().await {
            match ev {
                WatchEvent::Apply(p) | WatchEvent::InitApply(p)
                    if p.metadata.deletion_timestamp.is_none() =>
                {
                    let uid = p.uid().unwrap();
                    if live.insert(uid.clone()) {
                        log.push(format!("+{uid}"));
                    }
                }
                WatchEvent::Apply(p) | WatchEvent::InitApply(p) | WatchEvent::Delete(p) => {
                    let uid = p.uid().unwrap();
                    if live.remove(&uid) {
                        log.push(format!("-{uid}"));
                    }
                }
                _ => {}
            }
            max_live = max_live.max(live.len());
            if log.len() >= 3 {
                break;
            }
        }
        (max_live, log)
    });
    wait_pod(&pods, &name).await?;

    let patch = json!({ "spec": { "reconnect": { "maxAttempts": 9 } } });
    sessions
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let second = eventually(WAIT, || async {
        let p = pods.get_opt(&name).await.ok().flatten()?;
        (p.uid().unwrap() != first && p.metadata.deletion_timestamp.is_none()).then_some(p)
    })
    .await?;
    let env = second.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "MAX_RECONNECT_ATTEMPTS" && e.value.as_deref() == Some("9"))
    );

    let (max_live, log) = tokio::time::timeout(WAIT, recorder).await??;
    assert_eq!(max_live, 1, "two pods at once: {log:?}");
    assert_eq!(
        log,
        vec![
            format!("+{first}"),
            format!("-{first}"),
            format!("+{}", second.uid().unwrap())
        ]
    );
    op.stop().await
}

#[tokio::test]
async fn desired_disconnected_removes_the_pod_and_connected_brings_it_back() -> Result<()> {
    let (client, ns) = setup("op-desired").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let name = create_session(&sessions, &unique_user("desired"))
        .await?
        .name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_pod(&pods, &name).await?;

    let stop = json!({ "spec": { "desiredState": "disconnected" } });
    sessions
        .patch(&name, &PatchParams::default(), &Patch::Merge(&stop))
        .await?;
    eventually(WAIT, || async {
        pods.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await?;
    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Disconnected)).await?;
    assert_eq!(s.status.unwrap().endpoint, None);

    let start = json!({ "spec": { "desiredState": "connected" } });
    sessions
        .patch(&name, &PatchParams::default(), &Patch::Merge(&start))
        .await?;
    wait_pod(&pods, &name).await?;
    op.stop().await
}

/// Stands in for the session pod's control API (until the session pod exists): records the
/// method, path and bearer token of every request.
async fn control_api_recorder() -> Result<(
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, String)>,
)> {
    use axum::extract::Request;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |req: Request| {
        let tx = tx.clone();
        async move {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = tx.send((req.method().to_string(), req.uri().path().to_owned(), token));
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, rx))
}

#[tokio::test]
async fn deleting_the_session_logs_out_purges_the_users_redis_keys_and_releases_it() -> Result<()> {
    let (client, ns) = setup("op-delete").await?;
    let (control_port, mut calls) = control_api_recorder().await?;
    let port_arg = control_port.to_string();
    let op = Operator::start(&client, &ns, &["--session-control-port", &port_arg]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let user = unique_user("delete");
    let other = unique_user("bystander");
    let session = create_session(&sessions, &user).await?;
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_pod(&pods, &name).await?;
    mark_pod_running(&client, &ns, &name, "127.0.0.1").await?;
    let expected_endpoint = format!("127.0.0.1:{control_port}");
    wait_status(&sessions, &name, |s| {
        s.finalizers().contains(&labels::FINALIZER.to_owned())
            && s.status.as_ref().and_then(|st| st.endpoint.as_deref())
                == Some(expected_endpoint.as_str())
    })
    .await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let control = secrets.get(&format!("{name}-control")).await?;
    let control_token = String::from_utf8(control.data.unwrap()["token"].0.clone())?;

    let mut conn = redis().await?;
    let (mine, theirs) = (UserKeys::for_user(&user), UserKeys::for_user(&other));
    let _: () = redis::pipe()
        .set(format!("{}identity", mine.auth_prefix()), "secret-bytes")
        .set(format!("{}session:1", mine.auth_prefix()), "x")
        .cmd("XADD")
        .arg(mine.events())
        .arg("*")
        .arg("type")
        .arg("ready")
        .set(theirs.state(), "{}")
        .query_async(&mut conn)
        .await?;

    sessions.delete(&name, &DeleteParams::default()).await?;
    eventually(WAIT, || async {
        sessions.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await?;

    // The session pod was told to log out, with this session's own control token.
    let (method, path, auth) = tokio::time::timeout(WAIT, calls.recv())
        .await?
        .context("no logout call")?;
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", wasp_common::control::LOGOUT_PATH)
    );
    assert_eq!(auth, format!("Bearer {control_token}"));

    let left: Vec<String> = redis::cmd("KEYS")
        .arg(mine.scan_pattern())
        .query_async(&mut conn)
        .await?;
    assert!(left.is_empty(), "user keys left: {left:?}");
    let kept: Option<String> = redis::cmd("GET")
        .arg(theirs.state())
        .query_async(&mut conn)
        .await?;
    assert_eq!(
        kept.as_deref(),
        Some("{}"),
        "another user's keys must survive"
    );
    assert!(pods.get_opt(&name).await?.is_none());
    op.stop().await
}

#[tokio::test]
async fn an_operator_restarted_mid_flight_converges() -> Result<()> {
    let (client, ns) = setup("op-restart").await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(&client, &ns, &[]).await?;
    let mut names = Vec::new();
    for i in 0..6 {
        names.push(
            create_session(&sessions, &unique_user(&format!("restart{i}")))
                .await?
                .name_any(),
        );
    }
    // Stop while it is still working through them.
    wait_pod(&pods, &names[0]).await?;
    op.stop().await?;

    // While it is down: one pod vanishes, one spec changes, one session is created, one deleted.
    let _ = pods.delete(&names[0], &DeleteParams::default()).await;
    let patch = json!({ "spec": { "reconnect": { "baseIntervalMs": 777 } } });
    sessions
        .patch(&names[1], &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    names.push(
        create_session(&sessions, &unique_user("restart-late"))
            .await?
            .name_any(),
    );
    sessions.delete(&names[2], &DeleteParams::default()).await?;
    let deleted = names.remove(2);

    let op = Operator::start(&client, &ns, &[]).await?;
    for name in &names {
        wait_status(&sessions, name, |s| phase(s) == Some(Phase::Starting)).await?;
        wait_pod(&pods, name).await?;
    }
    let changed = eventually(WAIT, || async {
        let p = pods.get_opt(&names[1]).await.ok().flatten()?;
        let env = p.spec.as_ref()?.containers[0].env.clone()?;
        env.iter()
            .any(|e| e.name == "RECONNECT_INTERVAL" && e.value.as_deref() == Some("777"))
            .then_some(p)
    })
    .await?;
    assert!(changed.metadata.deletion_timestamp.is_none());
    eventually(WAIT, || async {
        sessions
            .get_opt(&deleted)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    assert_eq!(
        pods.list(&ListParams::default()).await?.items.len(),
        names.len()
    );
    op.stop().await
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_writes_and_the_other_takes_over() -> Result<()> {
    let (client, ns) = setup("op-leader").await?;
    let lease_args = ["--leader-election", "true", "--lease-duration-seconds", "3"];
    let a = Operator::start(&client, &ns, &lease_args).await?;
    let b = Operator::start(&client, &ns, &lease_args).await?;
    eventually(WAIT, || async {
        (a.handle.is_leader() || b.handle.is_leader()).then_some(())
    })
    .await?;
    let (leader, follower) = if a.handle.is_leader() { (a, b) } else { (b, a) };

    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = create_session(&sessions, &unique_user("leader"))
        .await?
        .name_any();
    wait_pod(&pods, &first).await?;
    wait_status(&sessions, &first, |s| phase(s) == Some(Phase::Starting)).await?;
    // The counter moves when a reconcile returns, just after its status write.
    eventually(WAIT, || async {
        (leader.handle.metrics.reconciles.get() > 0).then_some(())
    })
    .await?;
    assert_eq!(
        follower.handle.metrics.reconciles.get(),
        0,
        "a follower must not reconcile"
    );
    assert!(!follower.handle.is_leader());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get("wasp-operator").await?;
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(leader.handle.identity.as_str())
    );

    leader.stop().await?;
    eventually(WAIT, || async { follower.handle.is_leader().then_some(()) }).await?;
    let second = create_session(&sessions, &unique_user("follower"))
        .await?
        .name_any();
    wait_pod(&pods, &second).await?;
    eventually(WAIT, || async {
        (follower.handle.metrics.reconciles.get() > 0).then_some(())
    })
    .await?;
    follower.stop().await
}

/// A rolling upgrade stops the leader cleanly: it releases the Lease, and the waiting replica
/// leads within seconds, not after the lease's duration (30 s here).
#[tokio::test]
async fn a_cleanly_stopped_leader_hands_over_at_once() -> Result<()> {
    let (client, ns) = setup("op-handover").await?;
    let lease_args = [
        "--leader-election",
        "true",
        "--lease-duration-seconds",
        "30",
    ];
    let a = Operator::start(&client, &ns, &lease_args).await?;
    eventually(WAIT, || async { a.handle.is_leader().then_some(()) }).await?;
    let b = Operator::start(&client, &ns, &lease_args).await?;
    // b has seen a valid lease held by a and waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.handle.is_leader());
    let t0 = std::time::Instant::now();
    a.stop().await?;
    let stopped = t0.elapsed();
    eventually(WAIT, || async { b.handle.is_leader().then_some(()) }).await?;
    let took = t0.elapsed();
    eprintln!("handover: leader stopped in {stopped:?}, the other leads after {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the follower took {took:?} (the lease lasts 30 s)"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get("wasp-operator").await?;
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(b.handle.identity.as_str())
    );
    b.stop().await
}

#[tokio::test]
async fn a_malformed_session_gets_a_warning_and_others_keep_reconciling() -> Result<()> {
    let (client, ns) = setup("op-malformed").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let mut bad = WhatsAppSession::for_user(&unique_user("malformed"));
    bad.spec.pairing.method = PairingMethod::PairingCode; // without a phone number
    let bad = sessions
        .create(&PostParams::default(), &bad)
        .await?
        .name_any();
    let good = create_session(&sessions, &unique_user("wellformed"))
        .await?
        .name_any();

    wait_pod(&pods, &good).await?;
    let s = wait_status(&sessions, &bad, |s| phase(s) == Some(Phase::Failed)).await?;
    assert!(
        s.status
            .unwrap()
            .last_error
            .unwrap()
            .contains("phoneNumber")
    );
    wait_event(&client, &ns, &bad, "SessionFailed", "Warning").await?;
    assert!(
        pods.get_opt(&bad).await?.is_none(),
        "no pod for a malformed session"
    );

    // Fixing it lets it proceed.
    let fix = json!({ "spec": { "pairing": { "phoneNumber": "+41 79 123 45 67" } } });
    sessions
        .patch(&bad, &PatchParams::default(), &Patch::Merge(&fix))
        .await?;
    wait_pod(&pods, &bad).await?;
    op.stop().await
}

#[tokio::test]
async fn stale_sessions_are_switched_to_disconnected_and_reported() -> Result<()> {
    let (client, ns) = setup("op-stale").await?;
    let op = Operator::start(
        &client,
        &ns,
        &[
            "--session-cleanup-interval-ms",
            "200",
            "--stale-connection-timeout-ms",
            "1000",
        ],
    )
    .await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let waiting = create_session(&sessions, &unique_user("stale")).await?;
    let connected = create_session(&sessions, &unique_user("busy")).await?;
    for s in [&waiting, &connected] {
        wait_pod(&pods, &s.name_any()).await?;
        mark_pod_running(&client, &ns, &s.name_any(), "127.0.0.43").await?;
    }
    publish_state(
        &ns,
        &waiting,
        SessionState::new(SessionPhase::AwaitingScan, Timestamp::now()),
    )
    .await?;
    publish_state(
        &ns,
        &connected,
        SessionState::new(SessionPhase::Connected, Timestamp::now()),
    )
    .await?;

    let name = waiting.name_any();
    let s = wait_status(&sessions, &name, |s| {
        s.spec.desired_state == DesiredState::Disconnected
    })
    .await?;
    assert_eq!(phase(&s).map(|p| p != Phase::Connected), Some(true));
    eventually(WAIT, || async {
        pods.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await?;
    wait_event(&client, &ns, &name, "StaleSessionStopped", "Normal").await?;
    let mut conn = redis().await?;
    let stats: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(CLEANUP_STATS)
        .query_async(&mut conn)
        .await?;
    assert!(stats["totalStopped"].parse::<u64>()? >= 1, "{stats:?}");
    assert!(op.handle.metrics.stale_cleanups.get() >= 1);

    // The connected session is left alone.
    let busy = sessions.get(&connected.name_any()).await?;
    assert_eq!(busy.spec.desired_state, DesiredState::Connected);
    assert!(pods.get_opt(&connected.name_any()).await?.is_some());
    op.stop().await
}

/// The session pod reports a ban: the status says Failed with the ban as the Ready reason and in
/// `lastError`, a `TemporaryBan` Warning is published once (not again when the same ban is
/// reported again), and connecting again clears it.
#[tokio::test]
async fn a_reported_ban_shows_in_the_status_and_as_one_warning_event() -> Result<()> {
    use wasp_common::ErrorReason;
    let (client, ns) = setup("op-ban").await?;
    let op = Operator::start(&client, &ns, &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let session = create_session(&sessions, &unique_user("banned")).await?;
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_pod(&pods, &name).await?;
    mark_pod_running(&client, &ns, &name, "127.0.0.44").await?;
    let mut connected = SessionState::new(SessionPhase::Connected, Timestamp::now());
    connected.phone_number = Some("41791234567".into());
    publish_state(&ns, &session, connected.clone()).await?;
    wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Connected)).await?;

    let ready_reason = |s: &WhatsAppSession| {
        s.status.as_ref().and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == conditions::READY)
                .map(|c| c.reason.clone())
        })
    };
    let mut banned = SessionState::new(SessionPhase::Reconnecting, Timestamp::now());
    banned.phone_number = Some("41791234567".into());
    banned.set_error(
        ErrorReason::TemporaryBan,
        "101: you sent too many messages; banned for 2h",
    );
    publish_state(&ns, &session, banned.clone()).await?;
    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Failed)).await?;
    assert_eq!(ready_reason(&s).as_deref(), Some("TemporaryBan"));
    let st = s.status.as_ref().unwrap();
    assert_eq!(
        st.last_error.as_deref(),
        Some("101: you sent too many messages; banned for 2h")
    );
    assert!(!is_true(&st.conditions, conditions::READY));
    assert!(is_true(&st.conditions, conditions::PAIRED));
    let bans = || async {
        let evs = events_for(&client, &ns, &name).await.ok()?;
        let bans: Vec<Event> = evs
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("TemporaryBan"))
            .collect();
        (!bans.is_empty()).then_some(bans)
    };
    let found = eventually(WAIT, bans).await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].type_.as_deref(), Some("Warning"));
    let note = found[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("Connected -> Failed") && note.contains("banned for 2h"),
        "{note}"
    );

    // The same ban reported again (the pod's retry count moved): no second event.
    banned.reconnect_count = 3;
    banned.updated_at = Timestamp::now();
    publish_state(&ns, &session, banned).await?;
    wait_status(&sessions, &name, |s| {
        s.status.as_ref().is_some_and(|st| st.reconnect_count == 3)
    })
    .await?;
    let found = eventually(WAIT, bans).await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].series.is_none(), "published again: {found:?}");

    // Connected again: the reason and the error are gone.
    publish_state(&ns, &session, connected).await?;
    let s = wait_status(&sessions, &name, |s| phase(s) == Some(Phase::Connected)).await?;
    assert_eq!(ready_reason(&s).as_deref(), Some("Connected"));
    assert_eq!(s.status.unwrap().last_error, None);
    op.stop().await
}

/// Each session pod's own Redis user (issue 14): made before the pod exists, handed to it in its
/// control Secret (its `REDIS_URL`), allowed only its user's keys; made again when Redis
/// restarts (ACL users made at run time are in no append-only file); deleted with the session.
#[tokio::test]
async fn each_session_gets_its_own_redis_user_kept_across_redis_restarts_and_deleted_with_it()
-> Result<()> {
    let (client, ns) = setup("op-acl").await?;
    let mut server = wasp_e2e::redis_server::RedisServer::start()?;
    let op = Operator::start_with(&client, &ns, &server.url(), &[]).await?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let (user, other) = (unique_user("acl"), unique_user("acl-other"));
    let name = create_session(&sessions, &user).await?.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_pod(&pods, &name).await?;

    let url_ref = env_var(&pod, "REDIS_URL")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .context("REDIS_URL from a Secret")?;
    assert_eq!(
        (url_ref.name.as_str(), url_ref.key.as_str()),
        (format!("{name}-control").as_str(), "redisUrl")
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let data = secrets.get(&format!("{name}-control")).await?.data.unwrap();
    let url = String::from_utf8(data["redisUrl"].0.clone())?;
    let acl_user = wasp_common::acl::session_user_name(&user);
    assert!(url.starts_with(&format!("redis://{acl_user}:")), "{url}");

    let (mine, theirs) = (UserKeys::for_user(&user), UserKeys::for_user(&other));
    let as_pod = redis::Client::open(url.as_str())?;
    let mut conn = as_pod.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("SET")
        .arg(mine.state())
        .arg("{}")
        .query_async(&mut conn)
        .await?;
    let refused = redis::cmd("GET")
        .arg(theirs.state())
        .query_async::<Option<String>>(&mut conn)
        .await
        .expect_err("another user's key");
    assert_eq!(refused.code(), Some("NOPERM"), "{refused}");

    // Redis restarts empty: the operator sees the new run id and makes the user again.
    server.restart()?;
    let t0 = std::time::Instant::now();
    eventually(WAIT, || async {
        let mut c = as_pod.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    })
    .await?;
    eprintln!(
        "session user back {:?} after the Redis restart",
        t0.elapsed()
    );

    let mut admin = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    assert!(wasp_common::acl::user_exists(&mut admin, &acl_user).await?);
    sessions.delete(&name, &DeleteParams::default()).await?;
    eventually(WAIT, || async {
        sessions.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await?;
    assert!(
        !wasp_common::acl::user_exists(&mut admin, &acl_user).await?,
        "the session's Redis user outlived it"
    );
    let e = as_pod
        .get_multiplexed_async_connection()
        .await
        .err()
        .context("the deleted user still authenticates")?;
    assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
    op.stop().await
}

/// A Redis that refuses ACL changes: in per-session mode no pod starts (it would need a user it
/// cannot get) and a Warning event names the fallback; with `--redis-acl shared` the pod gets
/// the shared Secret, and a Warning event says what that costs.
#[tokio::test]
async fn a_redis_that_refuses_acl_changes_gets_a_warning_and_shared_is_the_explicit_fallback()
-> Result<()> {
    let (client, ns) = setup("op-noacl").await?;
    let server = wasp_e2e::redis_server::RedisServer::start()?;
    // A managed Redis's typical grant: everything but ACL administration.
    let mut admin = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("tenant")
        .arg(&["on", ">tenant-pw", "~*", "&*", "+@all", "-acl"][..])
        .query_async(&mut admin)
        .await?;
    let url = wasp_common::acl::with_credentials(&server.url(), "tenant", "tenant-pw")?;
    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let op = Operator::start_with(&client, &ns, &url, &[]).await?;
    let name = create_session(&sessions, &unique_user("noacl"))
        .await?
        .name_any();
    wait_event(&client, &ns, &name, "RedisUserFailed", "Warning").await?;
    assert!(
        pods.get_opt(&name).await?.is_none(),
        "a pod started without its Redis user"
    );
    op.stop().await?;

    let op = Operator::start_with(&client, &ns, &url, &["--redis-acl", "shared"]).await?;
    let pod = wait_pod(&pods, &name).await?;
    let url_ref = env_var(&pod, "REDIS_URL")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .context("REDIS_URL from a Secret")?;
    assert_eq!(
        (url_ref.name.as_str(), url_ref.key.as_str()),
        ("wasp-redis", "url")
    );
    wait_event(&client, &ns, &name, "SharedRedisCredentials", "Warning").await?;
    op.stop().await
}
