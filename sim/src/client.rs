//! A small client for the control API, for tests and scripts.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::contacts::Addressing;
use crate::control_api::{
    ApiError, CreateContact, CreatePhone, Info, InjectSocketFault, Millis, PairCode, Scan,
    SendMedia, SendText, Sent, Toggle,
};
use crate::faults::SocketFault;
use crate::sim::{ContactInfo, DeviceInfo, PhoneInfo, SocketInfo};
use crate::world::{DeviceAddr, ReceiptSeen, ReceivedText};

mod groups;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("simulator answered {status}: {message}")]
    Api { status: u16, message: String },
}

#[derive(Debug, Clone)]
pub struct SimClient {
    base: String,
    http: reqwest::Client,
}

impl SimClient {
    /// `base` is the control API's URL, e.g. `http://127.0.0.1:8481`.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let message = match resp.json::<ApiError>().await {
            Ok(e) => e.error,
            Err(e) => e.to_string(),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub(crate) async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get("/v1/info").await
    }

    pub async fn create_phone(
        &self,
        phone: Option<&str>,
        push_name: Option<&str>,
    ) -> Result<PhoneInfo, ClientError> {
        let body = CreatePhone {
            phone: phone.map(str::to_owned),
            push_name: push_name.map(str::to_owned),
        };
        self.post("/v1/phones", &body).await
    }

    pub async fn phones(&self) -> Result<Vec<PhoneInfo>, ClientError> {
        self.get("/v1/phones").await
    }

    pub async fn contacts(&self) -> Result<Vec<ContactInfo>, ClientError> {
        self.get("/v1/contacts").await
    }

    pub async fn scan_qr(&self, phone: &str, qr: &str) -> Result<DeviceAddr, ClientError> {
        self.post(
            &format!("/v1/phones/{phone}/scan"),
            &Scan { qr: qr.to_owned() },
        )
        .await
    }

    pub async fn enter_pair_code(
        &self,
        phone: &str,
        code: &str,
    ) -> Result<DeviceAddr, ClientError> {
        self.post(
            &format!("/v1/phones/{phone}/pair-code"),
            &PairCode {
                code: code.to_owned(),
            },
        )
        .await
    }

    pub async fn remove_device(&self, phone: &str, device: u16) -> Result<(), ClientError> {
        self.call(
            self.http
                .delete(format!("{}/v1/phones/{phone}/devices/{device}", self.base)),
        )
        .await
    }

    /// Sets what `phone`'s history holds; devices linked afterwards get it after pairing.
    pub async fn set_history(
        &self,
        phone: &str,
        plan: &crate::history::HistoryPlan,
    ) -> Result<(), ClientError> {
        self.call(
            self.http
                .put(format!("{}/v1/phones/{phone}/history", self.base))
                .json(plan),
        )
        .await
    }

    /// `phone`'s history plan and each device's history-sync progress.
    pub async fn history(
        &self,
        phone: &str,
    ) -> Result<crate::control_api::HistoryStatus, ClientError> {
        self.get(&format!("/v1/phones/{phone}/history")).await
    }

    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.get("/v1/devices").await
    }

    /// The admission log (every accepted login) from `since_ms` (Unix ms), in time order.
    pub async fn admissions(
        &self,
        since_ms: i64,
    ) -> Result<Vec<crate::world::Admission>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Log {
            admissions: Vec<crate::world::Admission>,
        }
        let log: Log = self
            .get(&format!("/v1/admissions?since_ms={since_ms}"))
            .await?;
        Ok(log.admissions)
    }

    /// One linked device of `phone`, if the simulator has it (also once removed).
    pub async fn device(
        &self,
        phone: &str,
        device: u16,
    ) -> Result<Option<DeviceInfo>, ClientError> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .find(|d| d.phone == phone && d.device == device))
    }

    pub async fn sockets(&self) -> Result<Vec<SocketInfo>, ClientError> {
        self.get("/v1/sockets").await
    }

    pub async fn create_contact(
        &self,
        phone: Option<&str>,
        name: Option<&str>,
    ) -> Result<ContactInfo, ClientError> {
        let body = CreateContact {
            phone: phone.map(str::to_owned),
            name: name.map(str::to_owned),
        };
        self.post("/v1/contacts", &body).await
    }

    /// The contact sends `text` to every device of `to`'s account; returns the message id.
    pub async fn contact_send(
        &self,
        contact: &str,
        to: &str,
        text: &str,
    ) -> Result<String, ClientError> {
        self.contact_send_as(contact, to, text, Addressing::Pn)
            .await
    }

    /// [`SimClient::contact_send`] with the contact addressed by phone number or by LID.
    pub async fn contact_send_as(
        &self,
        contact: &str,
        to: &str,
        text: &str,
        addressing: Addressing,
    ) -> Result<String, ClientError> {
        let body = SendText {
            to: to.to_owned(),
            text: text.to_owned(),
            addressing,
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/send"), &body)
            .await?;
        Ok(sent.id)
    }

    /// Waits (server-side, up to `timeout`) until the contact received `min` messages.
    pub async fn contact_received(
        &self,
        contact: &str,
        min: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedText>, ClientError> {
        self.get(&format!(
            "/v1/contacts/{contact}/received?min={min}&timeout_ms={}",
            timeout.as_millis()
        ))
        .await
    }

    /// The contact sends `media` to every device of `to`'s account; returns the message id.
    pub async fn contact_send_media(
        &self,
        contact: &str,
        to: &str,
        media: &crate::media::ContactMedia,
    ) -> Result<String, ClientError> {
        let body = SendMedia {
            to: to.to_owned(),
            kind: media.kind,
            mimetype: media.mimetype.clone(),
            filename: media.filename.clone(),
            caption: media.caption.clone(),
            data: data_encoding::BASE64.encode(&media.data),
        };
        let sent: Sent = self
            .post(&format!("/v1/contacts/{contact}/media"), &body)
            .await?;
        Ok(sent.id)
    }

    /// The decrypted media the contact received in message `id`, and its mimetype.
    pub async fn contact_received_media(
        &self,
        contact: &str,
        id: &str,
    ) -> Result<(Vec<u8>, String), ClientError> {
        let resp = self
            .http
            .get(format!("{}/v1/contacts/{contact}/media/{id}", self.base))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let message = match resp.json::<ApiError>().await {
                Ok(e) => e.error,
                Err(e) => e.to_string(),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        let mimetype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((resp.bytes().await?.to_vec(), mimetype))
    }

    /// A new media auth token: requests with the old one get 401 until clients refresh
    /// their `media_conn`.
    pub async fn rotate_media_auth(&self) -> Result<(), ClientError> {
        self.post("/v1/faults/rotate-media-auth", &()).await
    }

    pub async fn contact_receipts(&self, contact: &str) -> Result<Vec<ReceiptSeen>, ClientError> {
        self.get(&format!("/v1/contacts/{contact}/receipts")).await
    }

    /// Iqs the simulator had no specific answer for; empty when the simulation covered
    /// everything a client asked.
    pub async fn unhandled_iqs(&self) -> Result<Vec<String>, ClientError> {
        self.get("/v1/unhandled-iqs").await
    }

    pub async fn inject(
        &self,
        phone: &str,
        device: u16,
        fault: SocketFault,
    ) -> Result<(), ClientError> {
        let body = InjectSocketFault {
            phone: phone.to_owned(),
            device,
            fault,
        };
        self.post("/v1/faults/socket", &body).await
    }

    pub async fn refuse_connections(&self, d: Duration) -> Result<(), ClientError> {
        self.post(
            "/v1/faults/refuse",
            &Millis {
                millis: d.as_millis() as u64,
            },
        )
        .await
    }

    /// Refuses every login with `failure` (`None` clears it): a temporary ban is reason 402
    /// with a code and an expiry, an outdated client reason 405.
    pub async fn login_failure(
        &self,
        failure: Option<crate::faults::LoginFailure>,
    ) -> Result<(), ClientError> {
        self.post(
            "/v1/faults/login-failure",
            &crate::control_api::SetLoginFailure { failure },
        )
        .await
    }

    /// Rotates the server's static Noise key (clients resume through XXfallback).
    pub async fn rotate_server_key(&self) -> Result<(), ClientError> {
        self.post("/v1/faults/rotate-server-key", &()).await
    }

    /// While on, devices' receipts and acks are lost: what they got stays queued.
    pub async fn ignore_acks(&self, on: bool) -> Result<(), ClientError> {
        self.post("/v1/faults/ignore-acks", &Toggle { on }).await
    }

    pub async fn delay_frames(&self, d: Duration) -> Result<(), ClientError> {
        self.post(
            "/v1/faults/delay",
            &Millis {
                millis: d.as_millis() as u64,
            },
        )
        .await
    }
}
