//! wasp-api against a real kube-apiserver and Redis (the wasp-e2e harness): authentication on
//! every route, admin refusals, bad input, connect/status/disconnect through real
//! WhatsAppSession resources, user isolation, and the cross-cutting layers. No operator runs here:
//! the test writes the session status the operator would. Session-pod calls go to a recording fake.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use data_encoding::BASE64URL_NOPAD;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasp_api::pods::{PodApi, PodCall, PodError, PodTarget};
use wasp_api::{Config, run_with_pods};
use wasp_crds::{DesiredState, WhatsAppSession, names::session_name};
use wasp_e2e::{TestEnv, eventually};

const SECRET: &str = "integration-secret-integration-secret";
const WAIT: Duration = Duration::from_secs(20);

/// Records what reached "the pod" and answers with it.
#[derive(Default)]
struct FakePods {
    calls: Mutex<Vec<(String, String, PodCall)>>,
}

impl PodApi for FakePods {
    fn call<'a>(
        &'a self,
        target: &'a PodTarget,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        let answer = fake_answer(&call);
        self.calls
            .lock()
            .unwrap()
            .push((target.user_id.clone(), target.endpoint.clone(), call));
        Box::pin(async move { Ok(answer) })
    }
}

/// A message of the shared model, as a pod would answer it.
fn sent_message(chat: &str, body: &str) -> wasp_common::model::Message {
    let chat = wasp_common::model::Wid::parse(chat).unwrap();
    wasp_common::model::Message::new(wasp_common::model::MessageParts {
        id: "m1",
        chat: &chat,
        own: None,
        author: None,
        from_me: true,
        body,
        kind: "chat",
        timestamp: now(),
        has_media: false,
        has_quoted_msg: false,
        push_name: "",
    })
}

/// What the fake pod answers: the control contract's type of each call, nearly empty.
fn fake_answer(call: &PodCall) -> Value {
    match call {
        PodCall::Send { to, body, .. } => {
            json!({"success": true, "message": sent_message(to, body)})
        }
        PodCall::Edit { body, .. } => {
            json!({"success": true, "message": sent_message("41791234567@c.us", body)})
        }
        PodCall::Revoke { .. } => {
            json!({"success": true, "message": sent_message("41791234567@c.us", "")})
        }
        PodCall::React {
            message_id, emoji, ..
        } => json!({"success": true, "reaction": {
            "id": {"fromMe": true, "remote": "41791234567@c.us", "id": "r1",
                   "_serialized": "true_41791234567@c.us_r1"},
            "reaction": emoji,
            "msgId": {"fromMe": true, "remote": "41791234567@c.us", "id": "m1",
                      "_serialized": message_id},
            "senderId": "41791234568@c.us", "timestamp": now(), "orphan": 0, "read": true, "ack": 1
        }}),
        PodCall::Seen { chat } => json!({"success": true, "chatId": chat, "read": 0}),
        PodCall::ChatState { .. } => Value::Null,
        PodCall::Group { group } => json!({
            "id": {"server": "g.us", "user": group.trim_end_matches("@g.us"), "_serialized": group},
            "subject": "Clinic", "creation": 0, "participants": [], "announce": false, "restrict": false
        }),
        PodCall::Number { phone } => json!({"number": phone, "exists": false, "id": null}),
        PodCall::ProfilePicture { .. } => json!({"url": null}),
        PodCall::Chats { .. } => json!({"chats": []}),
        PodCall::ChatByPhone { phone } => {
            json!({"chatId": format!("{phone}@c.us"), "phone": phone, "exists": false})
        }
        PodCall::AddContact { phone, name } => json!({
            "phone": phone, "mobileNo": format!("+{phone}"),
            "name": name.clone().unwrap_or_default(), "addedAt": 0
        }),
        PodCall::Messages { .. } | PodCall::Logs { .. } | PodCall::Contacts => json!([]),
        PodCall::RemoveContact { .. } => Value::Null,
        PodCall::Status | PodCall::Connect | PodCall::Logout => json!({
            "phase": "Connected", "reconnectCount": 0, "updatedAt": "2026-01-01T00:00:00Z"
        }),
    }
}

struct TestApi {
    base: String,
    admin_base: String,
    ns: String,
    client: Client,
    http: reqwest::Client,
    pods: Arc<FakePods>,
    stop: CancellationToken,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn token(sub: &str) -> String {
    sign(&json!({"sub": sub, "exp": now() + 600}), SECRET)
}

fn admin_token(sub: &str) -> String {
    sign(
        &json!({"sub": sub, "exp": now() + 600, "role": "admin"}),
        SECRET,
    )
}

fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn alg_none(sub: &str) -> String {
    let b64 = |v: Value| BASE64URL_NOPAD.encode(v.to_string().as_bytes());
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": sub, "exp": now() + 600, "role": "admin"}))
    )
}

impl TestApi {
    async fn start(extra: &[&str]) -> Result<Self> {
        Self::start_with(extra, false).await
    }

    /// With `real_pods`, session pods are called over HTTP as in production (`wasp_api::run`);
    /// otherwise calls go to the recording fake.
    async fn start_with(extra: &[&str], real_pods: bool) -> Result<Self> {
        let api = Self::start_unready(extra, real_pods).await?;
        let http = api.http.clone();
        let ready = format!("{}/readyz", api.admin_base);
        eventually(WAIT, || async {
            let r = http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .context("API never became ready")?;
        Ok(api)
    }

    /// Starts the API without waiting for its session cache to sync.
    async fn start_unready(extra: &[&str], real_pods: bool) -> Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "wasp_api=info".into()))
            .try_init();
        let env = TestEnv::get();
        let client = env.kube_client().await?;
        env.install_crds(&client).await?;
        let ns = env.namespace("api").await?;
        let redis = env.redis_url();
        let mut args = vec![
            "wasp-api",
            "--namespace",
            &ns,
            "--redis-url",
            &redis,
            "--jwt-secret",
            SECRET,
            "--allowed-origins",
            "http://crm.example",
        ];
        if !extra.contains(&"--rate-limit-burst") {
            args.extend_from_slice(&[
                "--rate-limit-per-second",
                "1000",
                "--rate-limit-burst",
                "1000",
            ]);
        }
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let admin_base = format!("http://{}", admin.local_addr()?);
        let pods = Arc::new(FakePods::default());
        let stop = CancellationToken::new();
        tokio::spawn({
            let (client, pods, stop) = (client.clone(), pods.clone(), stop.clone());
            async move {
                let result = if real_pods {
                    wasp_api::run(config, client, listener, admin, stop).await
                } else {
                    run_with_pods(config, client, listener, admin, pods, stop).await
                };
                if let Err(e) = result {
                    panic!("wasp-api failed: {e}");
                }
            }
        });
        Ok(Self {
            base,
            admin_base,
            ns,
            client,
            http: reqwest::Client::new(),
            pods,
            stop,
        })
    }

    fn sessions(&self) -> Api<WhatsAppSession> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("{path}: {status} body is not JSON: {text:?}"))?;
        Ok((status, json))
    }

    async fn get(&self, path: &str, user: &str) -> Result<(StatusCode, Value)> {
        self.call(
            Method::GET,
            path,
            Some(&format!("Bearer {}", token(user))),
            None,
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        self.call(
            Method::POST,
            path,
            Some(&format!("Bearer {}", token(user))),
            body,
        )
        .await
    }

    /// Writes the status the operator would, and waits until the API's cache shows the phase.
    async fn set_status(&self, user: &str, status: Value) -> Result<()> {
        let phase = status["phase"].as_str().unwrap_or_default().to_owned();
        self.sessions()
            .patch_status(
                &session_name(user),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await?;
        eventually(WAIT, || async {
            let (_, s) = self.get("/status", user).await.ok()?;
            (s["phase"] == phase.as_str()).then_some(())
        })
        .await
        .with_context(|| format!("status of {user} never showed {phase}"))?;
        Ok(())
    }

    /// `POST /connect` and wait until the cache has the resource.
    async fn connect(&self, user: &str) -> Result<()> {
        let (code, body) = self.post("/connect", user, None).await?;
        anyhow::ensure!(code == StatusCode::OK, "connect: {code} {body}");
        eventually(WAIT, || async {
            let (_, s) = self.get("/status", user).await.ok()?;
            (s["phase"] != "NotFound").then_some(())
        })
        .await?;
        Ok(())
    }
}

/// Every route but `/health`, with a body where it needs one.
fn protected_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    let send = json!({"chatId": "41791234567@c.us", "message": "hi"});
    let contact = json!({"mobileNo": "+41791234567", "name": "Ann"});
    vec![
        (Method::GET, "/status", None),
        (Method::POST, "/connect", None),
        (Method::POST, "/disconnect", None),
        (Method::GET, "/chats", None),
        (Method::GET, "/messages/41791234567@c.us?limit=50", None),
        (Method::POST, "/send", Some(send)),
        (Method::GET, "/messages/41791234567@c.us/3EB0AB/media", None),
        (Method::GET, "/chat-by-phone?phone=%2B41791234567", None),
        (Method::GET, "/logs?limit=10", None),
        (
            Method::POST,
            "/react",
            Some(json!({"messageId": "true_41791234567@c.us_3EB0AB", "emoji": "👍"})),
        ),
        (
            Method::POST,
            "/messages/true_41791234567@c.us_3EB0AB/edit",
            Some(json!({"body": "fixed"})),
        ),
        (
            Method::DELETE,
            "/messages/true_41791234567@c.us_3EB0AB",
            None,
        ),
        (Method::POST, "/chats/41791234567@c.us/seen", None),
        (Method::POST, "/chats/41791234567@c.us/typing", None),
        (Method::POST, "/chats/41791234567@c.us/recording", None),
        (Method::POST, "/chats/41791234567@c.us/clear-state", None),
        (Method::GET, "/groups/120363000000000001@g.us", None),
        (Method::GET, "/contacts/+41791234567/exists", None),
        (
            Method::GET,
            "/contacts/41791234567@c.us/profile-picture",
            None,
        ),
        (Method::GET, "/diagnostics", None),
        (Method::GET, "/admin/sessions", None),
        (Method::GET, "/api/whatsapp/status", None),
        (Method::POST, "/api/whatsapp/connect", None),
        (Method::POST, "/api/whatsapp/contact/add", Some(contact)),
        (Method::GET, "/api/whatsapp/contacts", None),
        (Method::DELETE, "/api/whatsapp/contact/+41791234567", None),
        (Method::GET, "/api/whatsapp/sessions/active", None),
        (Method::GET, "/api/admin/cleanup-stats", None),
        (Method::GET, "/", None),
        (Method::GET, "/api/whatsapp/qr", None),
        (Method::GET, "/webhooks", None),
        (
            Method::PUT,
            "/webhooks",
            Some(json!({"url": "https://crm.example.com/hook"})),
        ),
        (Method::DELETE, "/webhooks", None),
        (Method::GET, "/admin/webhooks/dead-letters?userId=u", None),
        (
            Method::POST,
            "/admin/webhooks/dead-letters/replay?userId=u",
            None,
        ),
    ]
}

/// The list above covers every route of the OpenAPI document but `/health`, so a new route
/// cannot escape the authentication test.
#[test]
fn protected_routes_cover_the_openapi_document() {
    use utoipa::OpenApi as _;
    let doc = wasp_api::openapi::ApiDoc::openapi();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() && path != "/health" {
                documented.push(format!("{method} {path}"));
            }
        }
    }
    let mut tested: Vec<String> = protected_routes()
        .iter()
        .map(|(m, p, _)| {
            let path = p.split('?').next().unwrap_or(p);
            let path = if path.ends_with("/media") {
                "/messages/{chatId}/{messageId}/media"
            } else if path.ends_with("/edit") {
                "/messages/{messageId}/edit"
            } else if let Some(rest) = path.strip_prefix("/chats/") {
                match rest.rsplit_once('/').map(|(_, verb)| verb) {
                    Some("seen") => "/chats/{chatId}/seen",
                    Some("typing") => "/chats/{chatId}/typing",
                    Some("recording") => "/chats/{chatId}/recording",
                    _ => "/chats/{chatId}/clear-state",
                }
            } else if path.starts_with("/groups/") {
                "/groups/{groupId}"
            } else if path.ends_with("/exists") {
                "/contacts/{number}/exists"
            } else if path.ends_with("/profile-picture") {
                "/contacts/{contactId}/profile-picture"
            } else if path.starts_with("/messages/") {
                "/messages/{chatId}"
            } else if path.starts_with("/api/whatsapp/contact/+") {
                "/api/whatsapp/contact/{mobileNo}"
            } else {
                path
            };
            format!("{m} {path}")
        })
        .collect();
    documented.sort();
    tested.sort();
    assert_eq!(documented, tested);
}

const ADMIN_ROUTES: [&str; 4] = [
    "/admin/sessions",
    "/api/whatsapp/sessions/active",
    "/api/admin/cleanup-stats",
    "/admin/webhooks/dead-letters?userId=u",
];

#[tokio::test]
async fn every_route_but_health_refuses_missing_and_bad_tokens() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let (code, body) = api.call(Method::GET, "/health", None, None).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    let expired = sign(
        &json!({"sub": "u", "exp": now() - 3600, "role": "admin"}),
        SECRET,
    );
    let wrong_key = sign(
        &json!({"sub": "u", "exp": now() + 600, "role": "admin"}),
        "not-the-secret-not-the-secret!!",
    );
    let no_exp = sign(&json!({"sub": "u", "role": "admin"}), SECRET);
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("empty bearer", Some("Bearer ".into())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("wrong key", Some(format!("Bearer {wrong_key}"))),
        ("no exp", Some(format!("Bearer {no_exp}"))),
        ("alg none", Some(format!("Bearer {}", alg_none("u")))),
        ("seed UserId header", Some("UserId u".into())),
        ("raw token as user id", Some("Bearer u".into())),
        ("basic auth", Some("Basic dTpw".into())),
    ];
    for (method, path, body) in protected_routes() {
        for (what, auth) in &bad {
            let (code, json) = api
                .call(method.clone(), path, auth.as_deref(), body.clone())
                .await?;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}: {json}"
            );
            assert_eq!(json["error"], "unauthorized", "{method} {path} with {what}");
            assert!(json["message"].is_string());
        }
    }
    // Nothing was created by refused requests.
    let list = api.sessions().list(&Default::default()).await?;
    assert!(list.items.is_empty(), "{:?}", list.items);
    Ok(())
}

/// Seed 003's main app: tokens signed with `JWT_SECRET` or `SUPABASE_JWT_SECRET`, and its
/// README's example payload without `exp` once `JWT_REQUIRE_EXP=false`.
#[tokio::test]
async fn seed_003_tokens_with_either_secret_and_without_exp_when_allowed() -> Result<()> {
    const SUPABASE: &str = "supabase-secret-supabase-secret-!!";
    let example = json!({"sub": "user-123", "email": "doctor@clinic.com", "iat": 1234567890});
    let bearer = |claims: &Value, secret: &str| format!("Bearer {}", sign(claims, secret));

    // Defaults: both secrets work, a token without `exp` does not.
    let api = TestApi::start(&["--supabase-jwt-secret", SUPABASE]).await?;
    for secret in [SECRET, SUPABASE] {
        let claims = json!({"sub": "user-123", "exp": now() + 600});
        let (code, body) = api
            .call(Method::GET, "/status", Some(&bearer(&claims, secret)), None)
            .await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["userId"], "user-123");
    }
    let (code, body) = api
        .call(
            Method::GET,
            "/status",
            Some(&bearer(&example, SUPABASE)),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["message"], "token has no expiry");
    drop(api);

    let api = TestApi::start(&[
        "--supabase-jwt-secret",
        SUPABASE,
        "--jwt-require-exp",
        "false",
    ])
    .await?;
    for secret in [SECRET, SUPABASE] {
        let auth = bearer(&example, secret);
        let (code, body) = api
            .call(Method::POST, "/connect", Some(&auth), None)
            .await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (code, body) = api.call(Method::GET, "/status", Some(&auth), None).await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["userId"], "user-123");
    }
    assert_eq!(
        api.sessions()
            .get(&session_name("user-123"))
            .await?
            .spec
            .user_id,
        "user-123"
    );
    // Still refused: another key, an `exp` in the past, `alg: none`.
    let expired = json!({"sub": "user-123", "exp": now() - 3600});
    for (what, auth) in [
        (
            "wrong key",
            bearer(&example, "not-the-secret-not-the-secret!!"),
        ),
        ("expired", bearer(&expired, SUPABASE)),
        ("alg none", format!("Bearer {}", alg_none("user-123"))),
    ] {
        let (code, body) = api.call(Method::GET, "/status", Some(&auth), None).await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn admin_routes_refuse_non_admins() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    for path in ADMIN_ROUTES {
        let (code, body) = api.get(path, "plain-user").await?;
        assert_eq!(code, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
        let (code, body) = api
            .call(
                Method::GET,
                path,
                Some(&format!("Bearer {}", admin_token("boss"))),
                None,
            )
            .await?;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn connect_creates_the_session_and_status_follows_the_resource() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let user = "doctor@clinic.com";
    let (code, before) = api.get("/status", user).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(before["phase"], "NotFound");
    assert_eq!(before["status"], "disconnected");

    let (code, body) = api.post("/connect", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    let cr = api.sessions().get(&session_name(user)).await?;
    assert_eq!(cr.spec.user_id, user);
    assert_eq!(cr.spec.desired_state, DesiredState::Connected);
    let managers: Vec<_> = cr
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"wasp-api".to_owned()), "{managers:?}");
    // The default DEFAULT_STORAGE_POLICY: seed 003 stores every message.
    assert_eq!(cr.spec.storage.policy, wasp_crds::StoragePolicy::All);

    eventually(WAIT, || async {
        let (_, s) = api.get("/status", user).await.ok()?;
        (s["phase"] == "Pending").then_some(())
    })
    .await?;
    api.set_status(
        user,
        json!({"phase": "Connected", "phoneNumber": "41791234567", "pushName": "Dr Ann", "endpoint": "127.0.0.9:8080"}),
    )
    .await?;
    for path in ["/status", "/api/whatsapp/status"] {
        let (code, s) = api.get(path, user).await?;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(s["status"], "connected", "{path}");
        assert_eq!(s["isConnected"], true);
        assert_eq!(s["phoneNumber"], "41791234567");
        assert_eq!(s["displayName"], "Dr Ann");
        assert_eq!(s["userId"], user);
    }
    let (code, d) = api.get("/diagnostics", user).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(d["podReachable"], true);
    assert!(d.get("sessionsByPhase").is_none());

    // Seed 003: disconnect logs the device out through its pod, then stops the pod.
    let (code, body) = api.post("/disconnect", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "logged out and disconnecting");
    let cr = api.sessions().get(&session_name(user)).await?;
    assert_eq!(cr.spec.desired_state, DesiredState::Disconnected);
    let logouts = |api: &TestApi| {
        api.pods
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, e, c)| u == user && e == "127.0.0.9:8080" && *c == PodCall::Logout)
            .count()
    };
    assert_eq!(logouts(&api), 1);
    // The seed-000 alias connects again.
    let (code, _) = api.post("/api/whatsapp/connect", user, None).await?;
    assert_eq!(code, StatusCode::OK);
    let cr = api.sessions().get(&session_name(user)).await?;
    assert_eq!(cr.spec.desired_state, DesiredState::Connected);
    // `logout=false` keeps the pairing: no logout call.
    let (code, body) = api.post("/disconnect?logout=false", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "disconnecting; the pairing is kept");
    assert_eq!(logouts(&api), 1);
    let (code, body) = api.post("/disconnect?logout=maybe", user, None).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    // With no pod to ask, the API removes the auth state itself (and only the auth state).
    api.post("/connect", user, None).await?;
    api.set_status(user, json!({"phase": "Starting", "endpoint": null}))
        .await?;
    let keys = wasp_common::keys::UserKeys::for_user(user);
    let mut redis = redis::Client::open(TestEnv::get().redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let auth_key = format!("{}device", keys.auth_prefix());
    redis::pipe()
        .set(&auth_key, "sealed")
        .set(keys.state(), "{}")
        .query_async::<()>(&mut redis)
        .await?;
    let (code, body) = api.post("/disconnect", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("pairing was removed"),
        "{body}"
    );
    let (auth, state): (Option<String>, Option<String>) = redis::pipe()
        .get(&auth_key)
        .get(keys.state())
        .query_async(&mut redis)
        .await?;
    assert_eq!((auth, state.is_some()), (None, true));

    // Disconnect without a session creates nothing.
    let (code, body) = api.post("/disconnect", "nobody", None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        api.sessions()
            .get_opt(&session_name("nobody"))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn users_never_reach_each_others_sessions() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let (alice, bob) = ("alice", "bob");
    api.connect(alice).await?;
    api.set_status(
        alice,
        json!({"phase": "Connected", "endpoint": "127.0.0.7:8080"}),
    )
    .await?;

    let (_, s) = api.get("/status", bob).await?;
    assert_eq!(s["phase"], "NotFound");
    assert_eq!(s["userId"], bob);
    for path in ["/chats", "/logs", "/messages/41791234567@c.us"] {
        let (code, body) = api.get(path, bob).await?;
        assert_eq!(code, StatusCode::CONFLICT, "{path}: {body}");
        assert_eq!(body["error"], "session_not_found");
        assert_eq!(body["phase"], "NotFound");
    }
    let (code, body) = api
        .post(
            "/send",
            bob,
            Some(json!({"chatId": "41791234567@c.us", "message": "x"})),
        )
        .await?;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(api.pods.calls.lock().unwrap().is_empty());

    // Alice reaches her own pod, with her normalised input.
    let (code, body) = api
        .post(
            "/send",
            alice,
            Some(json!({"chatId": "41791234567@c.us", "message": "hello"})),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let calls = api.pods.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![(
            alice.to_owned(),
            "127.0.0.7:8080".to_owned(),
            PodCall::Send {
                to: "41791234567@c.us".into(),
                body: "hello".into(),
                quoted: None,
                idempotency_key: None,
            }
        )]
    );

    // A resource named after Bob but holding another user id is not Bob's.
    let mut forged = WhatsAppSession::for_user(bob);
    forged.spec.user_id = alice.into();
    api.sessions().create(&Default::default(), &forged).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, s) = api.get("/status", bob).await?;
    assert_eq!(s["phase"], "NotFound", "{s}");

    // Admins see sessions by user; users do not see the list.
    let (code, list) = api
        .call(
            Method::GET,
            "/admin/sessions?all=true",
            Some(&format!("Bearer {}", admin_token("root"))),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::OK);
    let users: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["userId"].as_str())
        .collect();
    assert!(users.contains(&alice), "{list}");
    Ok(())
}

#[tokio::test]
async fn sessions_that_are_not_ready_get_json_naming_the_phase() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let user = "carol";
    api.connect(user).await?;
    let (code, body) = api.get("/chats", user).await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "session_not_ready");
    assert_eq!(body["phase"], "Pending");

    api.set_status(
        user,
        json!({"phase": "AwaitingScan", "endpoint": "127.0.0.8:8080"}),
    )
    .await?;
    let (code, body) = api.get("/chat-by-phone?phone=%2B41791234567", user).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "session_awaiting_scan");
    assert_eq!(body["phase"], "AwaitingScan");
    let (code, _) = api.get("/chats", user).await?;
    assert_eq!(code, StatusCode::OK, "reads reach a running pod");

    api.set_status(user, json!({"phase": "Starting", "endpoint": null}))
        .await?;
    let resp = api
        .http
        .get(format!("{}/chats", api.base))
        .bearer_auth(token(user))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await?;
    assert_eq!(body["phase"], "Starting");

    let (code, _) = api.post("/disconnect", user, None).await?;
    assert_eq!(code, StatusCode::OK);
    eventually(WAIT, || async {
        let (code, body) = api.get("/chats", user).await.ok()?;
        (code == StatusCode::CONFLICT && body["error"] == "session_disconnected").then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_4xx_json_answer_never_5xx() -> Result<()> {
    let api = TestApi::start(&["--max-file-size", "1kb"]).await?;
    let user = "dave";
    api.connect(user).await?;
    api.set_status(
        user,
        json!({"phase": "Connected", "endpoint": "127.0.0.6:8080"}),
    )
    .await?;
    let bearer = format!("Bearer {}", token(user));
    let admin = format!("Bearer {}", admin_token("root"));
    // `/send` takes a base64 file of MAX_FILE_SIZE: its limit is a third larger plus 16 KiB.
    let big_send = "x".repeat(wasp_api::routes::media::json_send_limit(1024) + 1);
    // method, path, body, content type, expected error code and status
    type Case<'a> = (
        Method,
        String,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/messages/not-a-chat".into(),
            None,
            None,
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/messages/abc@c.us".into(),
            None,
            None,
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/messages/41791234567@c.us?limit=0".into(),
            None,
            None,
            "invalid_limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/messages/41791234567@c.us?limit=abc".into(),
            None,
            None,
            "invalid_query",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/messages/41791234567@c.us?limit=-1".into(),
            None,
            None,
            "invalid_query",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/logs?limit=100000".into(),
            None,
            None,
            "invalid_limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/chat-by-phone?phone=abc".into(),
            None,
            None,
            "invalid_phone",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/chat-by-phone?phone=0791234567".into(),
            None,
            None,
            "invalid_phone",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/chat-by-phone".into(),
            None,
            None,
            "invalid_query",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{not json"),
            Some("application/json"),
            "invalid_json",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{\"chatId\": 5}"),
            Some("application/json"),
            "invalid_json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{\"chatId\": \"41791234567@c.us\", \"message\": \" \"}"),
            Some("application/json"),
            "invalid_message",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{\"chatId\": \"nope\", \"message\": \"hi\"}"),
            Some("application/json"),
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("chatId=1"),
            Some("text/plain"),
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/send".into(),
            Some(big_send.as_str()),
            Some("application/json"),
            "payload_too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/api/whatsapp/contact/add".into(),
            Some("{\"mobileNo\": \"12\"}"),
            Some("application/json"),
            "invalid_phone",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/whatsapp/contact/add".into(),
            Some("{\"name\": \"x\"}"),
            Some("application/json"),
            "invalid_json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/messages/%FF%FE".into(),
            None,
            None,
            "invalid_path",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{\"chatId\": \"41791234567@c.us\", \"message\": 5}"),
            Some("application/json"),
            "invalid_json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/send".into(),
            Some("{\"chatId\": \"41791234567@c.us\", \"message\": \"hi\"}"),
            None,
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/react".into(),
            Some("{\"messageId\": \"3EB0AB\", \"emoji\": \"x\"}"),
            Some("application/json"),
            "invalid_message_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/messages/41791234567@c.us/edit".into(),
            Some("{\"body\": \"x\"}"),
            Some("application/json"),
            "invalid_message_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/messages/41791234567@c.us".into(),
            None,
            None,
            "invalid_message_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/chats/nope/seen".into(),
            None,
            None,
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/chats/nope/typing".into(),
            None,
            None,
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/groups/41791234567@c.us".into(),
            None,
            None,
            "invalid_group_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/contacts/0791234567/exists".into(),
            None,
            None,
            "invalid_phone",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/contacts/abc@c.us/profile-picture".into(),
            None,
            None,
            "invalid_chat_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/send".into(),
            Some(
                "{\"chatId\": \"41791234567@c.us\", \"message\": \"hi\", \"quotedMessageId\": \"AB\"}",
            ),
            Some("application/json"),
            "invalid_message_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/no/such/route".into(),
            None,
            None,
            "not_found",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/status".into(),
            None,
            None,
            "method_not_allowed",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, ctype, code, status) in cases {
        let mut req = api
            .http
            .request(method.clone(), format!("{}{path}", api.base))
            .header("authorization", &bearer);
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        if let Some(ctype) = ctype {
            req = req.header("content-type", ctype);
        }
        let resp = req.send().await?;
        let got = resp.status();
        let text = resp.text().await?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: {got} not JSON: {text}"))?;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(code)),
            "{method} {path}: {json}"
        );
    }
    let (code, body) = api
        .call(Method::GET, "/admin/sessions?all=maybe", Some(&admin), None)
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        api.pods.calls.lock().unwrap().is_empty(),
        "bad input reached the pod"
    );
    Ok(())
}

#[tokio::test]
async fn cleanup_stats_come_from_the_operators_redis_hash() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let redis = redis::Client::open(TestEnv::get().redis_url())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("HSET")
        .arg(wasp_common::keys::CLEANUP_STATS)
        .arg(&[
            "totalStopped",
            "5",
            "lastStopped",
            "1",
            "lastRunAt",
            "2026-01-02T03:04:05Z",
            "runs",
            "9",
        ])
        .query_async(&mut conn)
        .await?;
    let (code, body) = api
        .call(
            Method::GET,
            "/api/admin/cleanup-stats",
            Some(&format!("Bearer {}", admin_token("root"))),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"totalStopped": 5, "lastStopped": 1, "lastRunAt": "2026-01-02T03:04:05Z", "runs": 9})
    );
    Ok(())
}

#[tokio::test]
async fn cors_request_ids_rate_limits_metrics_and_docs() -> Result<()> {
    let api = TestApi::start(&["--rate-limit-per-second", "1", "--rate-limit-burst", "3"]).await?;
    // CORS: the allowed origin gets headers, another does not.
    let pre = api
        .http
        .request(Method::OPTIONS, format!("{}/status", api.base))
        .header("origin", "http://crm.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await?;
    assert_eq!(
        pre.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("http://crm.example")
    );
    let other = api
        .http
        .get(format!("{}/health", api.base))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // Request ids: generated, or the caller's kept.
    let r = api.http.get(format!("{}/health", api.base)).send().await?;
    assert!(r.headers().get("x-request-id").is_some());
    let r = api
        .http
        .get(format!("{}/health", api.base))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(r.headers().get("x-request-id").unwrap(), "abc-123");

    // Rate limit per user: eve's burst is used up, frank is unaffected.
    let mut limited = None;
    for _ in 0..10 {
        let resp = api
            .http
            .get(format!("{}/status", api.base))
            .bearer_auth(token("eve"))
            .send()
            .await?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            limited = Some(resp.json::<Value>().await?);
            break;
        }
    }
    assert_eq!(
        limited.context("never rate limited")?["error"],
        "rate_limited"
    );
    let (code, _) = api.get("/status", "frank").await?;
    assert_eq!(code, StatusCode::OK);

    // Metrics on the admin port, by route template.
    let metrics = api
        .http
        .get(format!("{}/metrics", api.admin_base))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("wasp_api_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/status\""), "{metrics}");
    assert!(metrics.contains("wasp_api_rate_limited_total"), "{metrics}");
    assert!(!metrics.contains("\"eve"), "no user ids in metrics");
    let healthz = api
        .http
        .get(format!("{}/healthz", api.admin_base))
        .send()
        .await?;
    assert_eq!(healthz.status(), StatusCode::OK);

    // OpenAPI and its UI.
    let doc: Value = api
        .http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await?
        .json()
        .await?;
    assert!(doc["paths"]["/messages/{chatId}"].is_object());
    let docs = api.http.get(format!("{}/docs", api.base)).send().await?;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await?.to_lowercase().contains("<html"));
    Ok(())
}

#[tokio::test]
async fn requests_racing_the_first_cache_sync_all_get_answers() -> Result<()> {
    let api = TestApi::start_unready(&[], false).await?;
    let started = std::time::Instant::now();
    let calls = (0..16).map(|i| {
        let (http, base) = (api.http.clone(), api.base.clone());
        async move {
            http.get(format!("{base}/status"))
                .bearer_auth(token(&format!("racer-{i}")))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    for status in futures::future::join_all(calls).await {
        assert_eq!(status?, StatusCode::OK);
    }
    // All woke on the sync, none waited for the 10 s upstream timeout.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// A stand-in session pod speaking the control API (`wasp_common::control`): checks the bearer
/// token, records requests, answers like the pod (errors as `{"error": {"code", "message"}}`).
async fn fake_pod(token: &'static str) -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    use axum::http::HeaderMap;
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let authorized = move |h: &HeaderMap| {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
    };
    let unauthorized = || {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": "unauthorized", "message": "wrong token"}})),
        )
    };
    let app = axum::Router::new()
        .route(
            wasp_common::control::CONNECT_PATH,
            axum::routing::post({
                let seen = seen.clone();
                move |h: HeaderMap| async move {
                    if !authorized(&h) {
                        return unauthorized();
                    }
                    seen.lock().unwrap().push(json!({"connect": true}));
                    (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"phase": "Starting"})))
                }
            }),
        )
        .route(
            wasp_common::control::SEND_PATH,
            axum::routing::post({
                let seen = seen.clone();
                move |h: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    if !authorized(&h) {
                        return unauthorized();
                    }
                    seen.lock().unwrap().push(body.clone());
                    let to = body["to"].as_str().unwrap_or_default();
                    let text = body["body"].as_str().unwrap_or_default();
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"success": true, "message": sent_message(to, text)})),
                    )
                }
            }),
        )
        .route(
            wasp_common::control::CHATS_PATH,
            axum::routing::get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return unauthorized();
                }
                (
                    axum::http::StatusCode::CONFLICT,
                    axum::Json(json!({"error": {"code": "not_connected", "message": "not connected to WhatsApp"}})),
                )
            }),
        )
        .route(
            wasp_common::control::MESSAGES_PATH,
            axum::routing::get(
                move |h: HeaderMap,
                      axum::extract::Path(chat): axum::extract::Path<String>,
                      axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    if !authorized(&h) {
                        return unauthorized();
                    }
                    // The limit comes back as the body, so the test sees what arrived.
                    let limit = q.get("limit").cloned().unwrap_or_default();
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!([sent_message(&chat, &limit)])),
                    )
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr.to_string(), seen))
}

async fn control_secret(api: &TestApi, user: &str, token: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let session = session_name(user);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{session}-control"),
            "labels": {
                "wasp.dev/session": session,
                "wasp.dev/user-hash": wasp_common::user_hash(user),
            },
        },
        "stringData": {"token": token},
    }))?;
    Api::<Secret>::namespaced(api.client.clone(), &api.ns)
        .create(&Default::default(), &secret)
        .await?;
    Ok(())
}

#[tokio::test]
async fn pod_routes_reach_the_pod_with_its_control_token() -> Result<()> {
    let api = TestApi::start_with(&[], true).await?;
    let (endpoint, seen) = fake_pod("tok-grace").await?;
    let grace = "grace@clinic.com";
    api.connect(grace).await?;
    control_secret(&api, grace, "tok-grace").await?;
    api.set_status(grace, json!({"phase": "Connected", "endpoint": endpoint}))
        .await?;

    // The token arrives through the Secret watch: retry until the send goes through.
    let body = eventually(WAIT, || async {
        let (code, body) = api
            .post(
                "/send",
                grace,
                Some(json!({"chatId": "41791234567@c.us", "message": "hello"})),
            )
            .await
            .ok()?;
        (code == StatusCode::OK).then_some(body)
    })
    .await?;
    assert_eq!(body["success"], true);
    assert_eq!(body["message"]["to"], "41791234567@c.us");
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(json!({"to": "41791234567@c.us", "body": "hello"}))
    );
    let (code, body) = api
        .get("/messages/41791234567@s.whatsapp.net?limit=7", grace)
        .await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body[0]["chatId"], "41791234567@c.us");
    assert_eq!(body[0]["body"], "7");
    // The pod's refusal passes through as the API's JSON, naming the phase.
    let (code, body) = api.get("/chats", grace).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "session_not_connected");
    assert_eq!(body["phase"], "Connected");

    // Connect on a logged-out session with a running pod asks the pod to start again (new QR).
    api.set_status(grace, json!({"phase": "LoggedOut", "endpoint": endpoint}))
        .await?;
    let (code, body) = api.post("/connect", grace, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(json!({"connect": true}))
    );

    // A session whose Secret holds a token the pod refuses: 502, no detail.
    let henry = "henry";
    api.connect(henry).await?;
    control_secret(&api, henry, "tok-wrong").await?;
    api.set_status(henry, json!({"phase": "Connected", "endpoint": endpoint}))
        .await?;
    let body = eventually(WAIT, || async {
        let (code, body) = api.get("/messages/41791234567@c.us", henry).await.ok()?;
        (code == StatusCode::BAD_GATEWAY).then_some(body)
    })
    .await?;
    assert_eq!(body["error"], "session_error");
    assert!(!body.to_string().contains("tok-"), "{body}");

    // No Secret yet, or nobody listening: 503 session_not_ready.
    let ivy = "ivy";
    api.connect(ivy).await?;
    api.set_status(ivy, json!({"phase": "Connected", "endpoint": endpoint}))
        .await?;
    let (code, body) = api.get("/chats", ivy).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("session_not_ready"))
    );
    control_secret(&api, ivy, "tok-ivy").await?;
    api.set_status(
        ivy,
        json!({"phase": "Connected", "endpoint": "127.0.0.1:9"}),
    )
    .await?;
    let body = eventually(WAIT, || async {
        let (code, body) = api.get("/chats", ivy).await.ok()?;
        (code == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await?;
    assert_eq!(body["error"], "session_not_ready");
    Ok(())
}

/// `DEFAULT_STORAGE_POLICY` is the policy of the sessions the API creates; it survives the
/// API's later applies, and never overrides a policy a platform team set.
#[tokio::test]
async fn sessions_the_api_creates_get_the_default_storage_policy_and_keep_others() -> Result<()> {
    use wasp_crds::StoragePolicy;
    let api = TestApi::start(&["--default-storage-policy", "contactsOnly"]).await?;
    let policy = |name: String| {
        let sessions = api.sessions();
        async move { Ok::<_, anyhow::Error>(sessions.get(&name).await?.spec.storage.policy) }
    };

    let user = "whitelist@clinic.example";
    api.connect(user).await?;
    assert_eq!(
        policy(session_name(user)).await?,
        StoragePolicy::ContactsOnly
    );
    // The API's next applies (disconnect, connect) send only userId and desiredState: the
    // default is not dropped back to the CRD's `all`.
    let (code, body) = api.post("/disconnect?logout=false", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    api.connect(user).await?;
    assert_eq!(
        policy(session_name(user)).await?,
        StoragePolicy::ContactsOnly
    );

    // A platform team changes it (as `kubectl edit` / `kubectl patch` would): connect keeps it.
    api.sessions()
        .patch(
            &session_name(user),
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(&json!({"spec": {"storage": {"policy": "none"}}})),
        )
        .await?;
    api.post("/disconnect?logout=false", user, None).await?;
    api.connect(user).await?;
    assert_eq!(policy(session_name(user)).await?, StoragePolicy::None);

    // A session a platform team created with its own policy keeps it when the user connects.
    let ops = "ops-made@clinic.example";
    let mut s = WhatsAppSession::for_user(ops);
    s.metadata.name = Some("ops-made".into());
    s.spec.desired_state = DesiredState::Disconnected;
    s.spec.storage.policy = StoragePolicy::All;
    api.sessions()
        .create(
            &kube::api::PostParams {
                field_manager: Some("kubectl-create".into()),
                ..Default::default()
            },
            &s,
        )
        .await?;
    eventually(WAIT, || async {
        let (_, s) = api.get("/status", ops).await.ok()?;
        (s["sessionName"] == "ops-made").then_some(())
    })
    .await?;
    api.connect(ops).await?;
    let cr = api.sessions().get("ops-made").await?;
    assert_eq!(cr.spec.desired_state, DesiredState::Connected);
    assert_eq!(cr.spec.storage.policy, StoragePolicy::All);
    Ok(())
}

/// A session a platform team created with kubectl under its own name is the user's session: the
/// API reads it and patches it, and never creates a second one for the same user.
#[tokio::test]
async fn a_kubectl_made_session_under_any_name_is_the_users_session() -> Result<()> {
    let api = TestApi::start(&[]).await?;
    let user = "dr.meier@clinic.example";
    let mut s = WhatsAppSession::for_user(user);
    s.metadata.name = Some("dr-meier".into());
    s.spec.desired_state = DesiredState::Disconnected;
    api.sessions()
        .create(&kube::api::PostParams::default(), &s)
        .await?;
    api.sessions()
        .patch_status(
            "dr-meier",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Disconnected"}})),
        )
        .await?;
    eventually(WAIT, || async {
        let (_, s) = api.get("/status", user).await.ok()?;
        (s["sessionName"] == "dr-meier").then_some(())
    })
    .await
    .context("the API never showed the kubectl-made session")?;
    let (code, body) = api.post("/connect", user, None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["session"]["sessionName"], "dr-meier");
    let list = api.sessions().list(&Default::default()).await?;
    let names: Vec<_> = list.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["dr-meier"], "no second session for the same user");
    assert_eq!(list.items[0].spec.desired_state, DesiredState::Connected);
    // Another user never sees it.
    let (_, other) = api.get("/status", "dr.other@clinic.example").await?;
    assert_eq!(other["phase"], "NotFound");
    Ok(())
}
