//! The OpenAPI 3 document, generated from the handlers' annotations. `api/openapi.json` is the
//! committed copy; a test fails when it is stale (`UPDATE_OPENAPI=1 cargo test -p wasp-api`
//! rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::{admin, conversation, media, proxy, session};
use crate::stream::event::ClientEvent;
use crate::stream::{sse, ws};
use crate::view;
use crate::webhooks::routes as webhooks;

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
        media::send,
        media::download,
        conversation::react,
        conversation::edit,
        conversation::revoke,
        conversation::seen,
        conversation::typing,
        conversation::recording,
        conversation::clear_state,
        conversation::group,
        conversation::number_exists,
        conversation::profile_picture,
        proxy::chat_by_phone,
        proxy::logs,
        proxy::contact_add,
        proxy::contacts,
        proxy::contact_remove,
        admin::sessions,
        admin::sessions_alias,
        admin::cleanup_stats,
        webhooks::list,
        webhooks::put,
        webhooks::delete,
        webhooks::dead_letters,
        webhooks::replay,
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
        view::SendBody,
        view::SendText,
        view::SendMedia,
        view::SendForm,
        view::MediaInput,
        view::MediaFormat,
        view::FileBytes,
        view::ContactAddRequest,
        view::SuccessResponse,
        view::ReactBody,
        view::EditBody,
        crate::webhooks::model::WebhookRequest,
        crate::webhooks::model::WebhookView,
        crate::webhooks::model::WebhookCreated,
        crate::webhooks::model::WebhookList,
        crate::webhooks::model::Delivery,
        crate::webhooks::model::DeliveryError,
        crate::webhooks::model::DeadLetter,
        webhooks::DeadLetterList,
        webhooks::ReplayResponse,
        wasp_common::model::Message,
        wasp_common::model::MessageKey,
        wasp_common::model::Chat,
        wasp_common::model::Wid,
        wasp_common::model::IdInput,
        wasp_common::control::SendResponse,
        wasp_common::control::ChatByPhone,
        wasp_common::control::Contact,
        wasp_common::control::LogEntry,
        wasp_common::control::ReactResponse,
        wasp_common::control::SeenResponse,
        wasp_common::control::NumberCheck,
        wasp_common::control::ProfilePicture,
        wasp_common::model::Reaction,
        wasp_common::model::GroupMetadata,
        wasp_common::model::GroupParticipant,
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

/// Where the document says less than the routes do: request or response bodies without a schema
/// (`{}`, also nested, after following `$ref`s), and answers without content. Empty when the
/// document is complete.
pub fn incomplete_operations(doc: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return vec!["no paths".into()];
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, c) in content {
                    empty_schemas(
                        doc,
                        &c["schema"],
                        &format!("{at} request {media}"),
                        &mut problems,
                        0,
                    );
                }
            }
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                let content = response["content"].as_object().filter(|c| !c.is_empty());
                match content {
                    // Protocol switches and empty answers have no body to describe.
                    None if ["101", "204", "304"].contains(&status.as_str()) => {}
                    None => problems.push(format!("{at} {status}: no content")),
                    Some(content) => {
                        for (media, c) in content {
                            empty_schemas(
                                doc,
                                &c["schema"],
                                &format!("{at} {status} {media}"),
                                &mut problems,
                                0,
                            );
                        }
                    }
                }
            }
        }
    }
    problems
}

/// Pushes every place under `schema` that says nothing (`{}` or missing), following `$ref`s.
fn empty_schemas(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    at: &str,
    problems: &mut Vec<String>,
    depth: usize,
) {
    use serde_json::Value;
    // Deep enough for any real document, and a guard against recursive schemas.
    if depth > 32 {
        return;
    }
    let Some(obj) = schema.as_object() else {
        if !schema.is_boolean() || schema == &Value::Bool(true) {
            problems.push(format!("{at}: no schema"));
        }
        return;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
        match target {
            Some(t) => empty_schemas(doc, t, &format!("{at} → {r}"), problems, depth + 1),
            None => problems.push(format!("{at}: unresolved {r}")),
        }
        return;
    }
    const SAYS_SOMETHING: [&str; 10] = [
        "type",
        "oneOf",
        "anyOf",
        "allOf",
        "enum",
        "const",
        "properties",
        "items",
        "not",
        "$ref",
    ];
    if !SAYS_SOMETHING.iter().any(|k| obj.contains_key(*k)) {
        problems.push(format!("{at}: empty schema"));
        return;
    }
    for (name, sub) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        empty_schemas(doc, sub, &format!("{at}.{name}"), problems, depth + 1);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = obj.get(key).filter(|v| v.is_object()) {
            empty_schemas(doc, sub, &format!("{at}[{key}]"), problems, depth + 1);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, sub) in obj
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            empty_schemas(doc, sub, &format!("{at}.{key}[{i}]"), problems, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every operation's request and response bodies have a schema that says something, and
    /// every answer but a protocol switch has content (issue 9, item 8).
    #[test]
    fn every_operation_documents_its_bodies() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let problems = incomplete_operations(&doc);
        assert!(
            problems.is_empty(),
            "the OpenAPI document is incomplete:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn incomplete_operations_are_found_also_behind_refs_and_nested() {
        let doc = json!({
            "paths": {
                "/a": {"get": {"responses": {
                    "200": {"content": {"application/json": {"schema": {}}}},
                    "400": {"description": "no body"},
                    "101": {"description": "switch"}
                }}},
                "/b": {"post": {
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/B"}}}},
                    "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}}}}
                }},
                "/ok": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {
                    "type": "array", "items": {"type": "string"}
                }}}}}}}
            },
            "components": {"schemas": {
                "B": {"type": "object", "properties": {"data": {"description": "anything"}, "n": {"type": "integer"}}}
            }}
        });
        let problems = incomplete_operations(&doc);
        assert_eq!(
            problems,
            vec![
                "GET /a 200 application/json: empty schema",
                "GET /a 400: no content",
                "POST /b request application/json → #/components/schemas/B.data: empty schema",
                "POST /b 200 application/json: unresolved #/components/schemas/Missing",
            ]
        );
    }

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
