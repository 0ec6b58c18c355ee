//! The public router: state, routes, and the layers every request passes (request id, trace,
//! CORS, body limit, metrics, JSON 404/405).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi as _;
use utoipa_scalar::{Scalar, Servable as _};

use crate::auth::extract::AuthContext;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openapi::ApiDoc;
use crate::pods::PodApi;
use crate::redis_conn::Redis;
use crate::routes::{admin, conversation, media, proxy, session};
use crate::sessions::Sessions;
use crate::stream::hub::Hub;
use crate::stream::{sse, ws};
use crate::webhooks::routes as webhooks;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState {
    pub auth: AuthContext,
    pub sessions: Sessions,
    pub redis: Arc<Redis>,
    pub pods: Arc<dyn PodApi>,
    pub hub: Hub,
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Largest media file a send takes (`MAX_FILE_SIZE`).
    pub max_file_size: usize,
    pub started: Instant,
    /// Ends long-lived streams (WebSocket, SSE) when the API stops.
    pub shutdown: CancellationToken,
}

impl FromRef<AppState> for AuthContext {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.metrics.clone()
    }
}

pub struct HttpSettings {
    pub allowed_origins: Vec<String>,
    pub max_body: usize,
}

pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let api = Router::new()
        .route("/", get(ws::websocket))
        .route("/api/whatsapp/qr", get(sse::qr_events))
        .route("/health", get(session::health))
        .route("/status", get(session::status))
        .route("/connect", post(session::connect))
        .route("/disconnect", post(session::disconnect))
        .route("/diagnostics", get(session::diagnostics))
        .route("/chats", get(proxy::chats))
        // One template per position (axum's router): `{chat_id}` is a message id for DELETE
        // and `/edit`.
        .route(
            "/messages/{chat_id}",
            get(proxy::messages).delete(conversation::revoke),
        )
        .route("/messages/{chat_id}/edit", post(conversation::edit))
        .route("/react", post(conversation::react))
        .route("/chats/{chat_id}/seen", post(conversation::seen))
        .route("/chats/{chat_id}/typing", post(conversation::typing))
        .route("/chats/{chat_id}/recording", post(conversation::recording))
        .route(
            "/chats/{chat_id}/clear-state",
            post(conversation::clear_state),
        )
        .route("/groups/{group_id}", get(conversation::group))
        .route(
            "/contacts/{contact}/exists",
            get(conversation::number_exists),
        )
        .route(
            "/contacts/{contact}/profile-picture",
            get(conversation::profile_picture),
        )
        .route(
            "/send",
            // A base64 file is a third larger than the file.
            post(media::send).layer(DefaultBodyLimit::max(media::json_send_limit(
                settings.max_body,
            ))),
        )
        .route(
            "/messages/{chat_id}/{message_id}/media",
            get(media::download),
        )
        .route("/chat-by-phone", get(proxy::chat_by_phone))
        .route("/logs", get(proxy::logs))
        .route("/admin/sessions", get(admin::sessions))
        .route(
            "/webhooks",
            get(webhooks::list)
                .put(webhooks::put)
                .delete(webhooks::delete),
        )
        .route("/admin/webhooks/dead-letters", get(webhooks::dead_letters))
        .route(
            "/admin/webhooks/dead-letters/replay",
            post(webhooks::replay),
        )
        .route("/api/whatsapp/status", get(session::status_alias))
        .route("/api/whatsapp/connect", post(session::connect_alias))
        .route("/api/whatsapp/contact/add", post(proxy::contact_add))
        .route("/api/whatsapp/contacts", get(proxy::contacts))
        .route(
            "/api/whatsapp/contact/{mobile_no}",
            axum::routing::delete(proxy::contact_remove),
        )
        .route("/api/whatsapp/sessions/active", get(admin::sessions_alias))
        .route("/api/admin/cleanup-stats", get(admin::cleanup_stats))
        .route("/openapi.json", get(openapi_json))
        .merge(crate::console::routes())
        .route_layer(middleware::from_fn_with_state(
            state.auth.metrics.clone(),
            track,
        ))
        .with_state(state)
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    api.layer(DefaultBodyLimit::max(settings.max_body))
        .layer(cors(&settings.allowed_origins))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                // The path only: a query string may one day carry a token.
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, user = tracing::field::Empty)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::Rejected {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed on this route".into(),
    }
}

async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// `ALLOWED_ORIGINS`: a list of origins (with credentials), `*` (any origin, no credentials), or
/// nothing (no cross-origin access).
pub fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .collect();
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            REQUEST_ID,
            HeaderName::from_static(crate::validate::IDEMPOTENCY_KEY),
        ])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    if origins.contains(&"*") {
        return base.allow_origin(Any);
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if list.is_empty() {
        return CorsLayer::new();
    }
    base.allow_origin(AllowOrigin::list(list))
        .allow_credentials(true)
}

#[cfg(test)]
mod tests {
    //! The router itself, served on a loopback port with nothing behind it (no apiserver, no
    //! Redis, no pods): its route table builds, and what is refused before any session lookup
    //! (no token, bad input) is refused as JSON.
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;
    use serde_json::Value;

    use super::*;
    use crate::Config;

    const SECRET: &str = "router-test-secret-router-test-secret";

    fn token() -> String {
        let exp = jiff::Timestamp::now().as_second() + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "ann", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// Serves the router as `run_with_pods` builds it (pods not wired; Kubernetes and Redis
    /// unreachable) and answers its base URL.
    async fn serve(stop: &CancellationToken) -> String {
        let config = Config::try_parse_from([
            "wasp-api",
            "--jwt-secret",
            SECRET,
            "--redis-url",
            "redis://127.0.0.1:1",
            "--webhook-dispatch",
            "false",
            "--upstream-timeout-ms",
            "200",
        ])
        .unwrap();
        let kube_config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(kube_config).unwrap();
        let metrics = Arc::new(Metrics::new());
        let timeout = config.upstream_timeout();
        let sessions = Sessions::start(client, &config.namespace, timeout, stop.clone());
        let redis = Arc::new(Redis::new(&config.redis_url, timeout).unwrap());
        let hub = Hub::start(redis.clone(), metrics.clone(), timeout, stop.clone());
        let webhooks =
            crate::start_webhooks(&config, &redis, &hub, &sessions, &metrics, stop).unwrap();
        let state = AppState {
            auth: AuthContext {
                authenticator: crate::auth::Authenticator::from_config(&config),
                limiter: Arc::new(crate::ratelimit::UserRateLimiter::new(1000, 1000)),
                metrics,
            },
            sessions,
            redis,
            pods: Arc::new(crate::pods::NotWired),
            hub,
            webhooks,
            max_file_size: 1024,
            started: Instant::now(),
            shutdown: stop.clone(),
        };
        let settings = HttpSettings {
            allowed_origins: Vec::new(),
            max_body: 1024,
        };
        let app = router(state, &settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        base
    }

    /// (method, path, JSON body, extra header) → (status, `error` code).
    type Case = (
        reqwest::Method,
        &'static str,
        Option<&'static str>,
        Option<(&'static str, &'static str)>,
        u16,
        &'static str,
    );

    #[tokio::test]
    async fn conversation_routes_refuse_bad_input_and_missing_tokens_as_json() {
        use reqwest::Method as M;
        let stop = CancellationToken::new();
        let base = serve(&stop).await;
        let http = reqwest::Client::new();
        let key = "true_41791234567@c.us_3EB0AB";
        let react_ok = r#"{"messageId": "true_41791234567@c.us_3EB0AB", "emoji": "👍"}"#;
        let bad_key = Some(("idempotency-key", "has space"));
        let cases: Vec<Case> = vec![
            (
                M::POST,
                "/react",
                Some(r#"{"messageId": "3EB0AB", "emoji": "👍"}"#),
                None,
                400,
                "invalid_message_id",
            ),
            (
                M::POST,
                "/react",
                Some(r#"{"messageId": "true_41791234567@c.us_3EB0AB", "emoji": "ok"}"#),
                None,
                400,
                "invalid_reaction",
            ),
            (
                M::POST,
                "/react",
                Some(r#"{"emoji": "👍"}"#),
                None,
                422,
                "invalid_json",
            ),
            (M::POST, "/react", Some("{nope"), None, 400, "invalid_json"),
            (
                M::POST,
                "/react",
                Some(react_ok),
                bad_key,
                400,
                "invalid_idempotency_key",
            ),
            (
                M::POST,
                "/messages/41791234567@c.us/edit",
                Some(r#"{"body": "x"}"#),
                None,
                400,
                "invalid_message_id",
            ),
            (
                M::POST,
                "/messages/true_41791234567@c.us_3EB0AB/edit",
                Some(r#"{"body": " "}"#),
                None,
                400,
                "invalid_message",
            ),
            (
                M::POST,
                "/messages/true_41791234567@c.us_3EB0AB/edit",
                Some(r#"{"text": "x"}"#),
                None,
                422,
                "invalid_json",
            ),
            (
                M::POST,
                "/messages/true_41791234567@c.us_3EB0AB/edit",
                Some(r#"{"body": "x"}"#),
                bad_key,
                400,
                "invalid_idempotency_key",
            ),
            (
                M::DELETE,
                "/messages/41791234567@c.us",
                None,
                None,
                400,
                "invalid_message_id",
            ),
            (
                M::DELETE,
                "/messages/true_nope_X",
                None,
                None,
                400,
                "invalid_message_id",
            ),
            (
                M::POST,
                "/chats/nope/seen",
                None,
                None,
                400,
                "invalid_chat_id",
            ),
            (
                M::POST,
                "/chats/abc@c.us/typing",
                None,
                None,
                400,
                "invalid_chat_id",
            ),
            (
                M::POST,
                "/chats/abc@c.us/recording",
                None,
                None,
                400,
                "invalid_chat_id",
            ),
            (
                M::POST,
                "/chats/abc@c.us/clear-state",
                None,
                None,
                400,
                "invalid_chat_id",
            ),
            (
                M::GET,
                "/groups/41791234567@c.us",
                None,
                None,
                400,
                "invalid_group_id",
            ),
            (M::GET, "/groups/nope", None, None, 400, "invalid_group_id"),
            (
                M::GET,
                "/contacts/0791234567/exists",
                None,
                None,
                400,
                "invalid_phone",
            ),
            (
                M::GET,
                "/contacts/abc/exists",
                None,
                None,
                400,
                "invalid_phone",
            ),
            (
                M::GET,
                "/contacts/abc@c.us/profile-picture",
                None,
                None,
                400,
                "invalid_chat_id",
            ),
            (
                M::POST,
                "/send",
                Some(
                    r#"{"chatId": "41791234567@c.us", "message": "hi", "quotedMessageId": "3EB0AB"}"#,
                ),
                None,
                400,
                "invalid_message_id",
            ),
            (
                M::POST,
                "/send",
                Some(r#"{"chatId": "41791234567@c.us", "message": "hi"}"#),
                bad_key,
                400,
                "invalid_idempotency_key",
            ),
            (
                M::POST,
                "/send",
                Some(
                    r#"{"chatId": "41791234567@c.us", "media": {"mimetype": "image/png", "data": "aGk="}, "quotedMessageId": "x"}"#,
                ),
                None,
                400,
                "invalid_message_id",
            ),
            (M::PUT, "/react", None, None, 405, "method_not_allowed"),
        ];
        for (method, path, body, header, status, code) in cases {
            let mut req = http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(token());
            if let Some(body) = body {
                req = req.header("content-type", "application/json").body(body);
            }
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            let resp = req.send().await.unwrap();
            let got = resp.status().as_u16();
            let json: Value = resp.json().await.unwrap();
            assert_eq!(
                (got, json["error"].as_str()),
                (status, Some(code)),
                "{method} {path}: {json}"
            );
        }
        // A multipart form's quotedMessageId is checked like the JSON field.
        let form = "--XX\r\nContent-Disposition: form-data; name=\"chatId\"\r\n\r\n41791234567@c.us\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"quotedMessageId\"\r\n\r\nnot-a-key\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhi\r\n--XX--\r\n";
        let resp = http
            .post(format!("{base}/send"))
            .bearer_auth(token())
            .header("content-type", "multipart/form-data; boundary=XX")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["error"], "invalid_message_id");

        // No token: 401 JSON on every new route, whatever the input.
        let edit = format!("/messages/{key}/edit");
        let delete = format!("/messages/{key}");
        for (method, path) in [
            (M::POST, "/react"),
            (M::POST, edit.as_str()),
            (M::DELETE, delete.as_str()),
            (M::POST, "/chats/41791234567@c.us/seen"),
            (M::POST, "/chats/41791234567@c.us/typing"),
            (M::POST, "/chats/41791234567@c.us/recording"),
            (M::POST, "/chats/41791234567@c.us/clear-state"),
            (M::GET, "/groups/120363000000000001@g.us"),
            (M::GET, "/contacts/+41791234567/exists"),
            (M::GET, "/contacts/41791234567@c.us/profile-picture"),
        ] {
            let resp = http
                .request(method.clone(), format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(react_ok)
                .send()
                .await
                .unwrap();
            let got = resp.status().as_u16();
            let json: Value = resp.json().await.unwrap();
            assert_eq!(
                (got, json["error"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path}: {json}"
            );
        }
        stop.cancel();
    }
}
