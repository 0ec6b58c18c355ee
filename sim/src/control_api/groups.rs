//! Group routes: create and list groups, and contacts sending to them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use buffa::Message as _;
use serde::{Deserialize, Serialize};

use super::{ApiResult, Sent};
use crate::groups::GroupInfo;
use crate::sim::{Sim, SimError};

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1/groups", get(list).post(create))
        .route("/v1/groups/{group}", get(one))
        .route("/v1/groups/{group}/send", post(send))
}

/// `POST /v1/groups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateGroup {
    /// The account that creates (and is superadmin of) the group.
    pub owner: String,
    pub subject: String,
    /// Members besides the owner: contacts' (or other accounts') phone numbers or LIDs.
    #[serde(default)]
    pub participants: Vec<String>,
}

/// `POST /v1/groups/{group}/send`: a member contact sends `text`, or `message` (standard
/// base64 of an encoded `wa::Message`), to the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendGroup {
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

async fn create(State(sim): State<Arc<Sim>>, Json(req): Json<CreateGroup>) -> ApiResult<GroupInfo> {
    Ok(Json(sim.create_group(
        &req.owner,
        &req.subject,
        &req.participants,
    )?))
}

async fn list(State(sim): State<Arc<Sim>>) -> Json<Vec<GroupInfo>> {
    Json(sim.groups())
}

async fn one(State(sim): State<Arc<Sim>>, Path(group): Path<String>) -> ApiResult<GroupInfo> {
    Ok(Json(sim.group(&group).ok_or_else(|| {
        SimError::NotFound(format!("group {group}"))
    })?))
}

async fn send(
    State(sim): State<Arc<Sim>>,
    Path(group): Path<String>,
    Json(req): Json<SendGroup>,
) -> ApiResult<Sent> {
    let id = match (req.text, req.message) {
        (Some(text), None) => {
            sim.contact_send_group_text(&req.contact, &group, &text)
                .await?
        }
        (None, Some(b64)) => {
            let bytes = data_encoding::BASE64
                .decode(b64.as_bytes())
                .map_err(|e| SimError::BadRequest(format!("message is not base64: {e}")))?;
            let msg = waproto::whatsapp::Message::decode_from_slice(&bytes)
                .map_err(|e| SimError::BadRequest(format!("message is not a wa.Message: {e}")))?;
            sim.contact_send_group_message(&req.contact, &group, &msg)
                .await?
        }
        _ => {
            return Err(
                SimError::BadRequest("give exactly one of `text` and `message`".into()).into(),
            );
        }
    };
    Ok(Json(Sent { id }))
}
