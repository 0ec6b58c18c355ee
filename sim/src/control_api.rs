//! HTTP/JSON control API (loopback only): drive the simulated phones and contacts, inspect
//! devices and sockets, inject faults. See `docs/simulator.md` for the endpoint list.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::history::{HistoryPlan, HistoryProgress};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::faults::SocketFault;
use crate::pairing::PairingError;
use crate::sim::{Sim, SimError};
use crate::world::DeviceAddr;

pub mod groups;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/phones", get(list_phones).post(create_phone))
        .route("/v1/phones/{phone}/scan", post(scan))
        .route("/v1/phones/{phone}/pair-code", post(pair_code))
        .route("/v1/phones/{phone}/devices/{device}", delete(remove_device))
        .route(
            "/v1/phones/{phone}/history",
            get(get_history).put(put_history),
        )
        .route("/v1/devices", get(devices))
        .route("/v1/sockets", get(sockets))
        .route("/v1/admissions", get(admissions))
        .route("/v1/contacts", get(list_contacts).post(create_contact))
        .route("/v1/contacts/{phone}/send", post(contact_send))
        .route("/v1/contacts/{phone}/received", get(contact_received))
        .route("/v1/contacts/{phone}/receipts", get(contact_receipts))
        .route(
            "/v1/contacts/{phone}/media",
            // Base64 of up to the media server's cap.
            post(contact_send_media).layer(DefaultBodyLimit::max(
                crate::media::MAX_UPLOAD / 3 * 4 + 64 * 1024,
            )),
        )
        .route("/v1/contacts/{phone}/media/{id}", get(contact_media))
        .route("/v1/unhandled-iqs", get(unhandled_iqs))
        .route("/v1/faults/socket", post(socket_fault))
        .route("/v1/faults/refuse", post(refuse))
        .route("/v1/faults/login-failure", post(login_failure))
        .route("/v1/faults/delay", post(delay))
        .route("/v1/faults/ignore-acks", post(ignore_acks))
        .route("/v1/faults/rotate-server-key", post(rotate_server_key))
        .route("/v1/faults/rotate-media-auth", post(rotate_media_auth))
        .merge(crate::conversation::routes())
        .merge(groups::routes())
        .with_state(sim)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Info {
    pub root_public_key: String,
    pub server_static_public_key: String,
    /// `https://host:port` of the media server (empty before it listens).
    #[serde(default)]
    pub media_url: String,
}

/// `POST /v1/contacts/{phone}/media`: the contact sends media to every device of `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMedia {
    pub to: String,
    pub kind: crate::media::MediaKind,
    pub mimetype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The plaintext, standard base64.
    pub data: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreatePhone {
    pub phone: Option<String>,
    pub push_name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateContact {
    pub phone: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Scan {
    pub qr: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PairCode {
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SendText {
    pub to: String,
    pub text: String,
    /// `pn` (default) or `lid`: how the contact is named as the sender.
    #[serde(default)]
    pub addressing: crate::contacts::Addressing,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Sent {
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReceivedQuery {
    /// Wait until at least this many messages were received…
    pub min: Option<usize>,
    /// …for at most this long.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InjectSocketFault {
    pub phone: String,
    pub device: u16,
    pub fault: SocketFault,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Millis {
    pub millis: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

pub(crate) struct Failure(StatusCode, String);

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        let status = match &e {
            SimError::NotFound(_) | SimError::NotConnected(_) => StatusCode::NOT_FOUND,
            SimError::Exists(_) => StatusCode::CONFLICT,
            SimError::Pairing(PairingError::UnknownRef(_) | PairingError::UnknownPhone(_)) => {
                StatusCode::NOT_FOUND
            }
            SimError::Pairing(_) | SimError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, Failure>;

async fn info(State(sim): State<Arc<Sim>>) -> Json<Info> {
    let hex = data_encoding::HEXLOWER;
    Json(Info {
        root_public_key: hex.encode(&sim.root_public_key()),
        server_static_public_key: hex.encode(&sim.server_identity().static_pub),
        media_url: sim
            .media()
            .host()
            .map(|h| format!("https://{h}"))
            .unwrap_or_default(),
    })
}

async fn list_phones(State(sim): State<Arc<Sim>>) -> Json<Vec<crate::sim::PhoneInfo>> {
    Json(sim.phones())
}

async fn create_phone(
    State(sim): State<Arc<Sim>>,
    Json(req): Json<CreatePhone>,
) -> ApiResult<crate::sim::PhoneInfo> {
    Ok(Json(sim.create_phone(req.phone, req.push_name)?))
}

async fn scan(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(req): Json<Scan>,
) -> ApiResult<DeviceAddr> {
    Ok(Json(sim.scan_qr(&phone, &req.qr)?))
}

async fn pair_code(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(req): Json<PairCode>,
) -> ApiResult<DeviceAddr> {
    Ok(Json(sim.enter_pair_code(&phone, &req.code).await?))
}

async fn remove_device(
    State(sim): State<Arc<Sim>>,
    Path((phone, device)): Path<(String, u16)>,
) -> ApiResult<()> {
    sim.remove_device(&DeviceAddr { phone, device })?;
    Ok(Json(()))
}

/// `GET /v1/phones/{phone}/history`: the phone's plan and each device's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryStatus {
    pub plan: Option<HistoryPlan>,
    pub devices: Vec<HistoryProgress>,
}

async fn put_history(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(plan): Json<HistoryPlan>,
) -> ApiResult<()> {
    sim.set_history(&phone, plan)?;
    Ok(Json(()))
}

async fn get_history(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
) -> ApiResult<HistoryStatus> {
    if !sim.phones().iter().any(|p| p.phone == phone) {
        return Err(SimError::NotFound(format!("phone {phone}")).into());
    }
    Ok(Json(HistoryStatus {
        plan: sim.history_plan(&phone),
        devices: sim.history_progress(&phone),
    }))
}

async fn devices(State(sim): State<Arc<Sim>>) -> Json<Vec<crate::sim::DeviceInfo>> {
    Json(sim.devices())
}

async fn sockets(State(sim): State<Arc<Sim>>) -> Json<Vec<crate::sim::SocketInfo>> {
    Json(sim.sockets())
}

#[derive(serde::Deserialize)]
struct Since {
    #[serde(default)]
    since_ms: i64,
    #[serde(default)]
    window_ms: Option<i64>,
}

/// The admission log (`?since_ms=` Unix ms) and, with `?window_ms=`, the most logins seen in
/// any window of that length.
async fn admissions(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<Since>,
) -> Json<serde_json::Value> {
    let log = sim.admissions(q.since_ms);
    let max = q
        .window_ms
        .map(|w| crate::world::max_in_window(&log, w.max(1)));
    Json(serde_json::json!({ "admissions": log, "max_in_window": max }))
}

async fn list_contacts(State(sim): State<Arc<Sim>>) -> Json<Vec<crate::sim::ContactInfo>> {
    Json(sim.contacts())
}

async fn create_contact(
    State(sim): State<Arc<Sim>>,
    Json(req): Json<CreateContact>,
) -> ApiResult<crate::sim::ContactInfo> {
    Ok(Json(sim.create_contact(req.phone, req.name)?))
}

async fn contact_send(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(req): Json<SendText>,
) -> ApiResult<Sent> {
    let id = sim
        .contact_send_text_as(&phone, &req.to, &req.text, req.addressing)
        .await?;
    Ok(Json(Sent { id }))
}

/// Long-polls until the contact received `min` messages (or the timeout passed), then
/// returns everything it received.
async fn contact_received(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Query(q): Query<ReceivedQuery>,
) -> ApiResult<Vec<crate::world::ReceivedText>> {
    let min = q.min.unwrap_or(0);
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(0).min(120_000));
    sim.wait_for(timeout, |w| {
        w.contacts
            .get(&phone)
            .filter(|c| c.received.len() >= min)
            .map(|_| ())
    })
    .await;
    Ok(Json(sim.contact_received(&phone)?))
}

async fn contact_send_media(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(req): Json<SendMedia>,
) -> ApiResult<Sent> {
    let data = data_encoding::BASE64
        .decode(req.data.as_bytes())
        .map_err(|e| SimError::BadRequest(format!("data is not base64: {e}")))?;
    let media = crate::media::ContactMedia {
        kind: req.kind,
        data,
        mimetype: req.mimetype,
        filename: req.filename,
        caption: req.caption,
    };
    let id = sim.contact_send_media(&phone, &req.to, media).await?;
    Ok(Json(Sent { id }))
}

/// The decrypted bytes of the media the contact received in message `id`, with the
/// mimetype the message declared.
async fn contact_media(
    State(sim): State<Arc<Sim>>,
    Path((phone, id)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let received = sim.contact_received(&phone)?;
    let media = received
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.media.clone())
        .ok_or_else(|| SimError::NotFound(format!("media message {id}")))?;
    if let Some(e) = media.error {
        return Err(Failure(StatusCode::BAD_GATEWAY, e));
    }
    let bytes = sim
        .contact_received_media(&phone, &id)
        .ok_or_else(|| SimError::NotFound(format!("the bytes of media message {id}")))?;
    let mimetype = if media.mimetype.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        media.mimetype
    };
    Ok(([(axum::http::header::CONTENT_TYPE, mimetype)], bytes).into_response())
}

async fn contact_receipts(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
) -> ApiResult<Vec<crate::world::ReceiptSeen>> {
    Ok(Json(sim.contact_receipts(&phone)?))
}

async fn unhandled_iqs(State(sim): State<Arc<Sim>>) -> Json<Vec<String>> {
    Json(sim.unhandled_iqs())
}

async fn socket_fault(
    State(sim): State<Arc<Sim>>,
    Json(req): Json<InjectSocketFault>,
) -> ApiResult<()> {
    sim.inject(
        &DeviceAddr {
            phone: req.phone,
            device: req.device,
        },
        req.fault,
    )?;
    Ok(Json(()))
}

async fn refuse(State(sim): State<Arc<Sim>>, Json(req): Json<Millis>) -> Json<()> {
    sim.refuse_connections_for(Duration::from_millis(req.millis));
    Json(())
}

/// `{"failure": {"reason": "402", "code": 101, "expire": 3600}}` refuses every login so;
/// `{"failure": null}` clears it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetLoginFailure {
    pub failure: Option<crate::faults::LoginFailure>,
}

async fn login_failure(State(sim): State<Arc<Sim>>, Json(req): Json<SetLoginFailure>) -> Json<()> {
    sim.set_login_failure(req.failure);
    Json(())
}

async fn rotate_media_auth(State(sim): State<Arc<Sim>>) -> Json<()> {
    sim.rotate_media_auth();
    Json(())
}

async fn rotate_server_key(State(sim): State<Arc<Sim>>) -> ApiResult<()> {
    sim.rotate_server_key()?;
    Ok(Json(()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Toggle {
    pub on: bool,
}

async fn ignore_acks(State(sim): State<Arc<Sim>>, Json(req): Json<Toggle>) -> Json<()> {
    sim.set_ignore_acks(req.on);
    Json(())
}

async fn delay(State(sim): State<Arc<Sim>>, Json(req): Json<Millis>) -> Json<()> {
    sim.set_frame_delay(Duration::from_millis(req.millis));
    Json(())
}
