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
use crate::routes::{admin, media, proxy, session};
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
        .route("/messages/{chat_id}", get(proxy::messages))
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
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID])
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
