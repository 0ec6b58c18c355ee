//! Control routes for conversing contacts (merged into `control_api::router`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ChatState, ChatStateSeen, ProfilePictureInfo, ReadKind};
use crate::control_api::{ApiResult, ReceivedQuery, Sent};
use crate::sim::Sim;

/// `POST /v1/contacts/{phone}/reply`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactReply {
    pub to: String,
    pub quoted_id: String,
    pub text: String,
}

/// `POST /v1/contacts/{phone}/react` (empty `emoji` removes the reaction)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactReact {
    pub to: String,
    pub target_id: String,
    pub emoji: String,
}

/// `POST /v1/contacts/{phone}/edit`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactEdit {
    pub to: String,
    pub target_id: String,
    pub text: String,
}

/// `POST /v1/contacts/{phone}/revoke`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactRevoke {
    pub to: String,
    pub target_id: String,
}

/// `POST /v1/contacts/{phone}/read`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactRead {
    pub to: String,
    pub ids: Vec<String>,
    #[serde(default)]
    pub kind: ReadKind,
}

/// `POST /v1/contacts/{phone}/chatstate`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendChatState {
    pub to: String,
    pub state: ChatState,
}

/// `PUT /v1/contacts/{phone}/picture`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPicture {
    pub present: bool,
}

/// `POST /v1/contacts/{phone}/chatstate` answers how many live devices got it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reached {
    pub devices: usize,
}

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1/contacts/{phone}/reply", post(reply))
        .route("/v1/contacts/{phone}/react", post(react))
        .route("/v1/contacts/{phone}/edit", post(edit))
        .route("/v1/contacts/{phone}/revoke", post(revoke))
        .route("/v1/contacts/{phone}/read", post(read))
        .route("/v1/contacts/{phone}/chatstate", post(chatstate))
        .route("/v1/contacts/{phone}/chatstates", get(chatstates))
        .route(
            "/v1/contacts/{phone}/picture",
            get(picture).put(set_picture),
        )
}

async fn reply(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<ContactReply>,
) -> ApiResult<Sent> {
    let id = sim
        .contact_reply(&phone, &r.to, &r.quoted_id, &r.text)
        .await?;
    Ok(Json(Sent { id }))
}

async fn react(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<ContactReact>,
) -> ApiResult<Sent> {
    let id = sim
        .contact_react(&phone, &r.to, &r.target_id, &r.emoji)
        .await?;
    Ok(Json(Sent { id }))
}

async fn edit(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<ContactEdit>,
) -> ApiResult<Sent> {
    let id = sim
        .contact_edit(&phone, &r.to, &r.target_id, &r.text)
        .await?;
    Ok(Json(Sent { id }))
}

async fn revoke(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<ContactRevoke>,
) -> ApiResult<Sent> {
    let id = sim.contact_revoke(&phone, &r.to, &r.target_id).await?;
    Ok(Json(Sent { id }))
}

async fn read(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<ContactRead>,
) -> ApiResult<()> {
    sim.contact_read(&phone, &r.to, &r.ids, r.kind)?;
    Ok(Json(()))
}

async fn chatstate(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<SendChatState>,
) -> ApiResult<Reached> {
    let devices = sim.contact_chatstate(&phone, &r.to, r.state)?;
    Ok(Json(Reached { devices }))
}

/// Long-polls until the contact got `min` chat states (or the timeout passed).
async fn chatstates(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Query(q): Query<ReceivedQuery>,
) -> ApiResult<Vec<ChatStateSeen>> {
    let min = q.min.unwrap_or(0);
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(0).min(120_000));
    sim.wait_for(timeout, |w| {
        w.conversation
            .contacts
            .get(&phone)
            .filter(|l| l.chatstates.len() >= min)
            .map(|_| ())
    })
    .await;
    Ok(Json(sim.contact_chatstates(&phone)?))
}

async fn picture(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
) -> ApiResult<Option<ProfilePictureInfo>> {
    Ok(Json(sim.contact_picture(&phone)?))
}

async fn set_picture(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(r): Json<SetPicture>,
) -> ApiResult<()> {
    sim.set_contact_picture(&phone, r.present)?;
    Ok(Json(()))
}
