//! The OpenAPI 3 document, generated from the handlers' annotations. `api/openapi.json` is the
//! committed copy; a test fails when it is stale (`UPDATE_OPENAPI=1 cargo test -p wasp-api`
//! rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::{admin, proxy, session};
use crate::stream::event::ClientEvent;
use crate::stream::{sse, ws};
use crate::view;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasp-api",
        description = "Authenticated gateway to per-user WhatsApp Web sessions. Seed 003 routes \
                       as they are, seed 000 routes under /api as aliases. Every route but \
                       /health needs `Authorization: Bearer <JWT>` (the event streams also \
                       take `?token=`); errors are JSON `{error, message}`."
    ),
    paths(
        session::health,
        session::status,
        session::status_alias,
        session::connect,
        session::connect_alias,
        session::disconnect,
        session::diagnostics,
        proxy::chats,
        proxy::messages,
        proxy::send,
        proxy::chat_by_phone,
        proxy::logs,
        proxy::contact_add,
        proxy::contacts,
        proxy::contact_remove,
        admin::sessions,
        admin::sessions_alias,
        admin::cleanup_stats,
        ws::websocket,
        sse::qr_events,
    ),
    components(schemas(
        ErrorBody,
        view::HealthResponse,
        view::SessionStatus,
        view::ConnectResponse,
        view::SessionList,
        view::CleanupStats,
        view::Diagnostics,
        view::SendRequest,
        view::ContactAddRequest,
        view::SuccessResponse,
        wasp_common::model::Message,
        wasp_common::model::MessageKey,
        wasp_common::model::Chat,
        wasp_common::model::Wid,
        wasp_common::model::IdInput,
        wasp_common::control::SendResponse,
        wasp_common::control::ChatByPhone,
        wasp_common::control::Contact,
        wasp_common::control::LogEntry,
        ClientEvent,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "session", description = "The caller's WhatsApp session"),
        (name = "messaging", description = "Chats and messages, served by the caller's session pod"),
        (name = "monitoring", description = "Health, logs, diagnostics"),
        (name = "admin", description = "Admin role required"),
        (name = "events", description = "Live events (WebSocket; Server-Sent Events under seed-000)"),
        (name = "seed-000", description = "Aliases for clients of seed 000"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let current = super::document();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == current,
            "api/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p wasp-api openapi`"
        );
    }
}
