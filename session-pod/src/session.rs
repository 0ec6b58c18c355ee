//! The connection supervisor: one `whatsapp-rust` client at a time, under the user's lease, with
//! our reconnect policy (the client's own auto-reconnect is off), the session-state record kept
//! current, and inbound messages committed to Redis before the client acks them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wacore::types::events::{Event, InboundMessage};
use wasp_common::events::{self as ev, Kind};
use wasp_common::session_state::{
    ErrorReason, SessionPhase, SessionRef, SessionState, write_state,
};
use whatsapp_rust::bot::Bot;
use whatsapp_rust::client::Client;
use whatsapp_rust::proto_helpers::MessageExt as _;
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

use crate::auth_store::RedisAuthStore;
use crate::backoff::{Decision, ReconnectPolicy};
use crate::config::{PairingMethod, StoragePolicy};
use crate::lease::{self, Lease};
use crate::metrics::Metrics;
use crate::qr::RenderedQr;
use crate::store::{Keep, Store, StoreOutcome};
use wasp_common::model::{self, Message, MessageParts, Wid};

/// Chats whose first-send gate is remembered before idle gates are forgotten.
const MAX_SEND_GATES: usize = 4096;

/// The client version announced when not talking to the real WhatsApp (no sw.js fetch).
pub const FIXED_CLIENT_VERSION: (u32, u32, u32) = (2, 3000, 1_023_868_855);

/// What the control API asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Run,
    Stop,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub user_id: String,
    pub session: SessionRef,
    pub whatsapp_url: String,
    pub pairing_method: PairingMethod,
    pub pairing_phone: Option<String>,
    pub storage_policy: StoragePolicy,
    pub max_media_bytes: u64,
    pub history: crate::history::HistoryLimits,
    pub policy: ReconnectPolicy,
    pub lease_ttl: Duration,
    pub holder: String,
    pub admission: crate::admission::AdmissionPolicy,
}

/// State shared by the supervisor, the client callbacks and the control API.
pub struct Session {
    pub settings: SessionSettings,
    pub conn: ConnectionManager,
    pub store: Store,
    pub auth: RedisAuthStore,
    pub metrics: Arc<Metrics>,
    state: Mutex<SessionState>,
    qr: Mutex<Option<RenderedQr>>,
    pair_code: Mutex<Option<String>>,
    client: Mutex<Option<Arc<Client>>>,
    desired: watch::Sender<Desired>,
    lease_token: Mutex<Option<u64>>,
    /// Per chat: whether a send to it has succeeded (so the client holds a Signal session
    /// with the recipient's devices). See [`Session::send_text`].
    first_sends: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    /// Only the lease holder writes the state record and status events: a process waiting
    /// for the lease must not overwrite the holder's record.
    holds_lease: AtomicBool,
    pub redis_ok: Arc<AtomicBool>,
    /// History messages this process may still store (the total limit).
    history_budget: Arc<std::sync::atomic::AtomicUsize>,
    /// One history chunk decoded at a time: the library hands chunks over concurrently.
    pub(crate) history_gate: tokio::sync::Mutex<()>,
}

/// Signals from the client's callbacks to the supervisor of the current attempt.
#[derive(Debug)]
enum Signal {
    Connected,
    PairSuccess,
    LoggedOut(String),
    Replaced,
    /// WhatsApp refuses this session until something changes (a ban, an outdated client):
    /// reconnecting would not help and may prolong a ban. Category and message.
    Fatal(&'static str, String),
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("not connected to WhatsApp")]
    NotConnected,
    #[error("send failed: {0}")]
    Send(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("state: {0}")]
    State(#[from] wasp_common::session_state::StateError),
    #[error("building the client: {0}")]
    Build(String),
    #[error("auth store: {0}")]
    Auth(String),
}

impl SessionError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Send(_) => "send",
            Self::Store(_) | Self::Redis(_) | Self::State(_) | Self::Auth(_) => "redis",
            Self::Build(_) => "build",
        }
    }
}

impl Session {
    pub fn new(
        settings: SessionSettings,
        conn: ConnectionManager,
        store: Store,
        auth: RedisAuthStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let settings_history_total = settings.history.total;
        Arc::new(Self {
            settings,
            conn,
            store,
            auth,
            metrics,
            state: Mutex::new(SessionState::new(
                SessionPhase::Starting,
                jiff::Timestamp::now(),
            )),
            qr: Mutex::new(None),
            pair_code: Mutex::new(None),
            client: Mutex::new(None),
            desired: watch::Sender::new(Desired::Run),
            lease_token: Mutex::new(None),
            first_sends: Mutex::new(HashMap::new()),
            holds_lease: AtomicBool::new(false),
            redis_ok: Arc::new(AtomicBool::new(false)),
            history_budget: Arc::new(std::sync::atomic::AtomicUsize::new(settings_history_total)),
            history_gate: tokio::sync::Mutex::new(()),
        })
    }

    #[allow(clippy::unwrap_used)] // poisoned only if a holder panicked
    pub fn state(&self) -> SessionState {
        self.state.lock().unwrap().clone()
    }

    #[allow(clippy::unwrap_used)]
    pub fn qr(&self) -> Option<RenderedQr> {
        self.qr.lock().unwrap().clone()
    }

    #[allow(clippy::unwrap_used)]
    pub fn pair_code(&self) -> Option<String> {
        self.pair_code.lock().unwrap().clone()
    }

    /// Publishes the QR and pairing code this session is showing (if any) on the live channel
    /// only: on a new code, and when a consumer asks (`codes_wanted_channel`).
    pub async fn publish_codes(&self) {
        if let Some(r) = self.qr() {
            let _ = self
                .store
                .publish_only(Kind::Qr(ev::Qr {
                    code: r.qr,
                    svg: r.qr_svg,
                    data_url: r.qr_data_url,
                }))
                .await;
        }
        if let Some(code) = self.pair_code() {
            let _ = self
                .store
                .publish_only(Kind::PairingCode(ev::PairingCode {
                    code,
                    phone: self.settings.pairing_phone.clone().unwrap_or_default(),
                }))
                .await;
        }
    }

    #[allow(clippy::unwrap_used)]
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().unwrap().clone()
    }

    #[allow(clippy::unwrap_used)]
    pub fn lease_token(&self) -> Option<u64> {
        *self.lease_token.lock().unwrap()
    }

    /// `/readyz`: Redis is reachable, and this process holds the user's lease or has been asked
    /// not to run. A process restarted after a kill -9 waits for the dead one's lease to expire;
    /// Ready meanwhile would let the operator believe the dead process's `Connected` record.
    pub fn is_ready(&self) -> bool {
        ready(
            self.redis_ok.load(Ordering::Relaxed),
            self.holds_lease.load(Ordering::Relaxed),
            *self.desired.borrow(),
        )
    }

    pub fn desire(&self, d: Desired) {
        self.desired.send_replace(d);
    }

    /// Updates the record, writes it for the operator and emits a `status` event.
    #[allow(clippy::unwrap_used)]
    pub async fn update(&self, f: impl FnOnce(&mut SessionState)) {
        let (snapshot, changed_phase) = {
            let mut s = self.state.lock().unwrap();
            let before = s.phase;
            f(&mut s);
            s.updated_at = jiff::Timestamp::now();
            s.lease_token = *self.lease_token.lock().unwrap();
            (s.clone(), before != s.phase)
        };
        if !self.holds_lease.load(Ordering::Relaxed) {
            return;
        }
        let mut conn = self.conn.clone();
        if let Err(e) = write_state(
            &mut conn,
            &self.settings.session,
            &self.settings.user_id,
            &snapshot,
        )
        .await
        {
            tracing::warn!(error = %e, "writing the session state record");
        }
        if changed_phase {
            tracing::info!(phase = ?snapshot.phase, "session phase");
            let _ = self
                .store
                .emit(Kind::Status(ev::Status {
                    phase: format!("{:?}", snapshot.phase),
                    detail: snapshot.last_error.clone().unwrap_or_default(),
                    reconnect_count: snapshot.reconnect_count,
                }))
                .await;
        }
    }

    async fn set_phase(&self, phase: SessionPhase, error: Option<String>) {
        self.update(|s| {
            s.phase = phase;
            if error.is_some() {
                s.last_error = error;
            }
            if phase != SessionPhase::Connected {
                s.connected_at = None;
            }
        })
        .await;
    }

    async fn log(&self, level: &str, event_type: &str, message: &str) {
        if let Err(e) = self.store.log(level, event_type, message).await {
            tracing::warn!(error = %e, "writing a session log line");
        }
    }

    /// The gate of a chat's first send (created on first use).
    #[allow(clippy::unwrap_used)]
    fn first_send_gate(&self, chat: &str) -> Arc<tokio::sync::Mutex<bool>> {
        let mut gates = self.first_sends.lock().unwrap();
        if gates.len() >= MAX_SEND_GATES && !gates.contains_key(chat) {
            // Forgetting costs one serialized send per chat, nothing else.
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        gates.entry(chat.to_owned()).or_default().clone()
    }

    /// Sends a text message (a reply when `quoted` names a stored message of this chat) under
    /// `message_id` if given, and records it (store + `message` event, `fromMe`).
    pub async fn send_text(
        &self,
        to: &Wid,
        text: &str,
        quoted: Option<&Message>,
        message_id: Option<String>,
    ) -> Result<Message, SessionError> {
        let mut proto = waproto::whatsapp::Message {
            conversation: Some(text.to_owned()),
            ..Default::default()
        };
        if let Some(q) = quoted {
            self.quote(&mut proto, q);
        }
        let (client, id) = self.send_proto(to, proto, message_id).await?;
        let mut m = self.own_message(&client, to, &id, text, "chat");
        if let Some(q) = quoted {
            m.has_quoted_msg = true;
            m.quoted_msg_id = Some(q.id.serialized.clone());
        }
        self.record_sent(&m).await?;
        Ok(m)
    }

    /// Makes `proto` a reply to `quoted`.
    pub(crate) fn quote(&self, proto: &mut waproto::whatsapp::Message, quoted: &Message) {
        use whatsapp_rust::proto_helpers::MessageExt as _;
        let own_jid = self
            .client()
            .and_then(|c| c.pn())
            .map(|j| j.to_non_ad_string());
        proto.set_context_info(crate::conversation::quote_context(
            quoted,
            own_jid.as_deref(),
        ));
    }

    /// The connected client, or [`SessionError::NotConnected`].
    pub(crate) fn connected_client(&self) -> Result<Arc<Client>, SessionError> {
        let client = self.client().ok_or(SessionError::NotConnected)?;
        if !client.is_connected() || !client.is_logged_in() {
            return Err(SessionError::NotConnected);
        }
        Ok(client)
    }

    /// Sends `msg` to `to`; the client it went through and the message id.
    ///
    /// The first send to a chat goes alone; concurrent sends to that chat wait for it. The
    /// client (whatsapp-rust 0.7, `ensure_sessions_inner`) checks for a Signal session
    /// without a lock, so N concurrent first sends each fetch a prekey bundle and each
    /// replace the session the previous one built: the recipient then gets `pkmsg`s of N
    /// different sessions. WhatsApp copes with a few (a recipient keeps 40 old session
    /// states), but every fetch burns one of the recipient's one-time prekeys, and past 40
    /// the earliest messages no longer decrypt. Once one send has succeeded the session
    /// exists and later sends run concurrently.
    pub(crate) async fn send_proto(
        &self,
        to: &Wid,
        msg: waproto::whatsapp::Message,
        message_id: Option<String>,
    ) -> Result<(Arc<Client>, String), SessionError> {
        let client = self.connected_client()?;
        let jid: whatsapp_rust::Jid = to
            .protocol_jid()
            .parse()
            .map_err(|_| SessionError::Send(format!("bad jid {to}")))?;
        let gate = self.first_send_gate(&jid.to_non_ad_string());
        let mut first = Some(gate.lock_owned().await);
        if first.as_deref() == Some(&true) {
            first = None;
        }
        let mut options = whatsapp_rust::send::SendOptions::default();
        if let Some(id) = message_id {
            options = options.with_message_id(id);
        }
        let res = client
            .send_message_with_options(jid.clone(), msg, options)
            .await
            .map_err(|e| SessionError::Send(e.to_string()))?;
        if let Some(mut done) = first {
            *done = true;
        }
        self.metrics.messages_out.inc();
        Ok((client, res.message_id))
    }

    /// The model of an own message just sent.
    pub(crate) fn own_message(
        &self,
        client: &Client,
        to: &Wid,
        id: &str,
        body: &str,
        kind: &str,
    ) -> Message {
        let own = own_wid(client);
        Message::new(MessageParts {
            id,
            chat: to,
            own: own.as_ref(),
            author: None,
            from_me: true,
            body,
            kind,
            timestamp: jiff::Timestamp::now().as_second(),
            has_media: false,
            has_quoted_msg: false,
            push_name: "",
        })
    }

    /// Stores (per the storage policy) and announces an own message just sent.
    pub(crate) async fn record_sent(&self, m: &Message) -> Result<(), SessionError> {
        let keep = Keep {
            store: self.settings.storage_policy != StoragePolicy::None,
            emit: true,
        };
        self.store.put_message(m, keep).await?;
        self.touch_activity().await;
        Ok(())
    }

    async fn touch_activity(&self) {
        self.update(|s| s.last_activity = Some(jiff::Timestamp::now()))
            .await;
    }

    /// Commits one batch of inbound messages (the durability hook): on `Err` nothing is acked.
    /// Returns the groups seen for the first time (their metadata is fetched after the ack).
    async fn commit_inbound(
        &self,
        client: &Client,
        batch: &[InboundMessage],
    ) -> Result<Vec<Wid>, SessionError> {
        let own = own_wid(client);
        let mut new_groups = Vec::new();
        for m in batch {
            let info = &m.info;
            let src = &info.source;
            if let Some(change) = crate::conversation::classify(&m.message) {
                let (chat, author) = chat_and_author(client, src).await;
                self.commit_change(client, info, &change, &chat, author.as_ref())
                    .await?;
                continue;
            }
            let media = crate::media::inbound_media(&m.message);
            let text = m.message.text_content().or_else(|| m.message.get_caption());
            // Protocol traffic (key shares, sender-key distribution, …) is no chat message.
            if text.is_none() && info.media_type.is_empty() && media.is_none() {
                continue;
            }
            let (chat, author) = chat_and_author(client, src).await;
            if chat.is_group()
                && !new_groups.contains(&chat)
                && !self.store.has_group(&chat.serialized).await?
            {
                new_groups.push(chat.clone());
            }
            let quoted = match crate::conversation::context_of(&m.message) {
                Some(ctx) => Some(quoted_key(client, &chat, ctx).await),
                None => None,
            };
            let kind = match &media {
                Some((r, _)) => r.kind.as_str(),
                None => model::message_type(text.is_some(), &info.media_type, &info.r#type),
            };
            let mut message = Message::new(MessageParts {
                id: info.id.as_str(),
                chat: &chat,
                own: own.as_ref(),
                author: author.as_ref(),
                from_me: src.is_from_me,
                body: text.unwrap_or_default(),
                kind,
                timestamp: info.timestamp.timestamp(),
                has_media: model::message::type_has_media(kind),
                has_quoted_msg: quoted.is_some(),
                push_name: &info.push_name,
            });
            message.quoted_msg_id = quoted;
            if let Some((r, _)) = &media {
                message = message.with_media(&r.mimetype, r.filename.as_deref(), r.size);
            }
            let keep = self
                .keep_for(src.is_from_me, author.as_ref().unwrap_or(&chat))
                .await?;
            if keep.store
                && let Some((r, _)) = &media
            {
                // Before the message: a message stored is one whose media can be fetched.
                self.keep_media_ref(message.key(), r).await?;
            }
            let outcome = self.store.put_message(&message, keep).await?;
            match outcome {
                StoreOutcome::Duplicate => {
                    self.metrics.messages_in_duplicate.inc();
                }
                StoreOutcome::New if !keep.store => {
                    self.metrics.messages_not_stored.inc();
                    if self.settings.storage_policy == StoragePolicy::ContactsOnly {
                        self.log(
                            "info",
                            "message_not_stored",
                            &format!(
                                "message {} from a sender not in contacts: not stored",
                                message.id.id
                            ),
                        )
                        .await;
                    }
                }
                StoreOutcome::New => {
                    self.metrics.messages_in.inc();
                }
            }
        }
        if !batch.is_empty() {
            self.touch_activity().await;
        }
        Ok(new_groups)
    }

    /// Whether and how what `sender` sent enters the store and the event stream (the storage
    /// policy; the whitelist holds phone numbers, so a group message counts by its author).
    pub(crate) async fn keep_for(&self, from_me: bool, sender: &Wid) -> Result<Keep, SessionError> {
        Ok(match self.settings.storage_policy {
            StoragePolicy::All => Keep {
                store: true,
                emit: true,
            },
            StoragePolicy::None => Keep {
                store: false,
                emit: true,
            },
            StoragePolicy::ContactsOnly => {
                let known = from_me
                    || match sender.phone_digits() {
                        Some(p) => self.store.is_contact(p).await?,
                        None => false,
                    };
                Keep {
                    store: known,
                    emit: known,
                }
            }
        })
    }

    /// Lands a reaction, edit or revoke that arrived as a message (from a contact, or from
    /// this user's phone).
    async fn commit_change(
        &self,
        client: &Client,
        info: &wacore::types::message::MessageInfo,
        change: &crate::conversation::Change,
        chat: &Wid,
        author: Option<&Wid>,
    ) -> Result<(), SessionError> {
        use crate::conversation::{Actor, target_key};
        let src = &info.source;
        let own = own_wid(client);
        let actor = Actor {
            is_me: src.is_from_me,
            wid: if src.is_from_me {
                own.clone().unwrap_or_else(|| chat.clone())
            } else {
                author.cloned().unwrap_or_else(|| chat.clone())
            },
        };
        let keep = self.keep_for(actor.is_me, &actor.wid).await?;
        if !keep.emit {
            self.metrics.messages_not_stored.inc();
            return Ok(());
        }
        let (participant, participant_is_me) = match &change.target().participant {
            Some(p) => match p.parse::<whatsapp_rust::Jid>() {
                Ok(jid) => (
                    Some(canonical_wid(client, &jid, None).await),
                    is_own_jid(client, &jid),
                ),
                Err(_) => (None, false),
            },
            None => (None, false),
        };
        let key = target_key(
            chat,
            change.target(),
            &actor,
            participant.as_ref(),
            participant_is_me,
        );
        let change_key = model::MessageKey::new(
            actor.is_me,
            &chat.serialized,
            &info.id,
            author
                .filter(|_| chat.is_group() && !actor.is_me)
                .map(|a| a.serialized.as_str()),
        );
        let (_, outcome) = self
            .land_change(change, &key, &change_key, &actor, own.as_ref(), keep.emit)
            .await?;
        if outcome == crate::store::changes::ChangeOutcome::Duplicate {
            self.metrics.messages_in_duplicate.inc();
        } else {
            self.metrics.messages_in.inc();
        }
        Ok(())
    }

    /// A contact is typing, recording or stopped: a live `chat_state` event (by the storage
    /// policy, as its messages would be).
    async fn on_chat_presence(
        &self,
        client: &Client,
        u: &wacore::types::events::ChatPresenceUpdate,
    ) {
        use wacore::types::presence::{ChatPresence, ChatPresenceMedia};
        let src = &u.source;
        if src.is_from_me {
            return;
        }
        let (chat, author) = chat_and_author(client, src).await;
        let sender = author.clone().unwrap_or_else(|| chat.clone());
        match self.keep_for(false, &sender).await {
            Ok(k) if k.emit => {}
            _ => return,
        }
        let state = match (&u.state, &u.media) {
            (ChatPresence::Composing, ChatPresenceMedia::Audio) => model::ChatStateKind::Recording,
            (ChatPresence::Composing, _) => model::ChatStateKind::Typing,
            (ChatPresence::Paused, _) => model::ChatStateKind::Paused,
        };
        let event = model::ChatState {
            chat_id: chat.serialized,
            author: author.map(|a| a.serialized),
            state,
        };
        if let Err(e) = self
            .store
            .publish_only(Kind::ChatState(ev::Json::of(&event)))
            .await
        {
            tracing::warn!(error = %e, "publishing a chat state");
        }
    }

    /// A receipt for own messages raises their ack (`message_ack`).
    async fn on_receipt(&self, client: &Client, r: &wacore::types::events::Receipt) {
        let Some(ack) = ack_of(&r.r#type) else {
            return;
        };
        let src = &r.source;
        if src.is_group {
            // Per-member receipts of group messages: wwebjs's ack of a group message needs all
            // members; left for the groups work.
            return;
        }
        let chat = canonical_wid(client, &src.chat, src.sender_alt.as_ref()).await;
        let own = own_wid(client);
        for id in &r.message_ids {
            let key = model::MessageKey::new(true, &chat.serialized, id.as_str(), None);
            let fallback = || {
                let mut m = Message::new(MessageParts {
                    id: id.as_str(),
                    chat: &chat,
                    own: own.as_ref(),
                    author: None,
                    from_me: true,
                    body: "",
                    kind: "chat",
                    timestamp: r.timestamp.timestamp(),
                    has_media: false,
                    has_quoted_msg: false,
                    push_name: "",
                });
                m.ack = ack;
                m
            };
            if let Err(e) = self
                .store
                .raise_ack(&chat.serialized, &key.serialized, ack, fallback)
                .await
            {
                tracing::warn!(error = %e, "recording a receipt");
            }
        }
    }

    /// Reports a connection or message error: `error` event and session log; a connection
    /// error is also recorded in the state record (`errorReason`, for the resource's status).
    async fn report_error(&self, reason: ErrorReason, category: &str, message: &str) {
        tracing::warn!(category, message, "session error");
        if reason.is_connection() {
            self.update(|s| s.set_error(reason, message)).await;
        }
        let _ = self
            .store
            .emit(Kind::Error(ev::Error {
                category: category.to_owned(),
                message: message.to_owned(),
            }))
            .await;
        self.log("error", category, message).await;
    }
}

/// The own account's id (`<phone>@c.us`), once logged in.
fn own_wid(client: &Client) -> Option<Wid> {
    client
        .pn()
        .map(|j| Wid::from_protocol(j.user.as_str(), j.server.as_str()))
}

/// A JID as a chat id (device dropped).
fn wid_of(jid: &whatsapp_rust::Jid) -> Wid {
    Wid::from_protocol(jid.user.as_str(), jid.server.as_str())
}

/// A user's id by phone number when it is known: a LID becomes `<phone>@c.us` through the
/// stanza's alternate address or the client's LID↔phone mapping; else it stays `…@lid`.
async fn canonical_wid(
    client: &Client,
    jid: &whatsapp_rust::Jid,
    alt: Option<&whatsapp_rust::Jid>,
) -> Wid {
    let alt = alt.filter(|a| a.is_pn()).map(wid_of);
    let mapped = if jid.is_lid() && alt.is_none() {
        client
            .get_lid_pn_entry(jid)
            .await
            .ok()
            .flatten()
            .map(|e| e.phone_number.to_string())
    } else {
        None
    };
    resolve_wid(wid_of(jid), alt, mapped.as_deref())
}

/// A message's chat (1:1: the other side, by phone number when known) and, in a group, the
/// author of a message of others.
async fn chat_and_author(
    client: &Client,
    src: &wacore::types::message::MessageSource,
) -> (Wid, Option<Wid>) {
    let chat = if src.is_group {
        wid_of(&src.chat)
    } else {
        let other_alt = if src.is_from_me {
            src.recipient_alt.as_ref()
        } else {
            src.sender_alt.as_ref()
        };
        canonical_wid(client, &src.chat, other_alt).await
    };
    let author = if src.is_group && !src.is_from_me {
        Some(canonical_wid(client, &src.sender, src.sender_alt.as_ref()).await)
    } else {
        None
    };
    (chat, author)
}

/// Whether a JID names this user (its phone number or its LID).
pub(crate) fn is_own_jid(client: &Client, jid: &whatsapp_rust::Jid) -> bool {
    let user = jid.user.as_str();
    client.pn().is_some_and(|p| p.user.as_str() == user)
        || client.lid().is_some_and(|l| l.user.as_str() == user)
}

/// The stored key of the message a reply quotes.
async fn quoted_key(client: &Client, chat: &Wid, ctx: &waproto::whatsapp::ContextInfo) -> String {
    let id = ctx.stanza_id.as_deref().unwrap_or_default();
    let participant = ctx
        .participant
        .as_deref()
        .and_then(|p| p.parse::<whatsapp_rust::Jid>().ok());
    let from_me = participant.as_ref().is_some_and(|p| is_own_jid(client, p));
    let author = match (&participant, chat.is_group() && !from_me) {
        (Some(p), true) => Some(canonical_wid(client, p, None).await.serialized),
        _ => None,
    };
    model::MessageKey::new(from_me, &chat.serialized, id, author.as_deref()).serialized
}

/// The phone-number form of `id` when it is a LID and the phone is known (the stanza's
/// alternate phone-number address first, then the client's mapping); else `id` (pure).
pub fn resolve_wid(id: Wid, alt_pn: Option<Wid>, mapped_phone: Option<&str>) -> Wid {
    if !id.is_lid() {
        return id;
    }
    if let Some(alt) = alt_pn.filter(|a| a.phone_digits().is_some()) {
        return alt;
    }
    match mapped_phone.and_then(|p| Wid::phone(p).ok()) {
        Some(w) => w,
        None => id,
    }
}

/// whatsapp-web.js's ack for a receipt of an own message; `None` for receipts that are not.
fn ack_of(t: &wacore::types::presence::ReceiptType) -> Option<i8> {
    use wacore::types::presence::ReceiptType as R;
    match t {
        R::Delivered => Some(model::ack::DEVICE),
        R::Read => Some(model::ack::READ),
        R::Played => Some(model::ack::PLAYED),
        R::ServerError => Some(model::ack::ERROR),
        _ => None,
    }
}

struct Hook(Arc<Session>);

#[async_trait::async_trait]
impl whatsapp_rust::InboundDurabilityHook for Hook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let new_groups = self.0.commit_inbound(&client, batch).await.map_err(|e| {
            self.0.metrics.store_errors.inc();
            // WhatsApp redelivers the unacked messages only on a new connection: reconnect.
            self.0.auth.fault();
            tracing::warn!(error = %e, "inbound commit failed; messages stay unacked");
            anyhow::anyhow!("inbound commit failed: {}", e.category())
        })?;
        if !new_groups.is_empty() {
            let session = self.0.clone();
            tokio::spawn(async move {
                for g in new_groups {
                    if let Err(e) = session.refresh_group(&client, &g).await {
                        tracing::warn!(error = %e, "fetching a new group's metadata");
                    }
                }
            });
        }
        Ok(())
    }
}

/// Handles one client event (runs on the client's event tasks).
async fn on_event(
    session: Arc<Session>,
    client: Arc<Client>,
    event: Arc<Event>,
    signals: mpsc::UnboundedSender<Signal>,
) {
    match &*event {
        Event::PairingQrCode(q) => match crate::qr::render(&q.code) {
            Ok(r) => {
                #[allow(clippy::unwrap_used)]
                {
                    *session.qr.lock().unwrap() = Some(r.clone());
                }
                session.set_phase(SessionPhase::AwaitingScan, None).await;
                session.publish_codes().await;
            }
            Err(e) => tracing::warn!(error = %e, "rendering the QR code"),
        },
        Event::PairingCode(p) => {
            #[allow(clippy::unwrap_used)]
            {
                *session.pair_code.lock().unwrap() = Some(p.code.clone());
            }
            session.set_phase(SessionPhase::AwaitingScan, None).await;
            session.publish_codes().await;
        }
        Event::HistorySync(lazy) => {
            let report = session
                .store_history(
                    own_wid(&client),
                    lazy.compressed_bytes().clone(),
                    lazy.decompressed_size(),
                    session.history_budget.clone(),
                )
                .await;
            session
                .log(
                    "info",
                    "history_sync",
                    &format!(
                        "history chunk {} ({}%): {} conversations, {} messages stored, {} chats not in contacts",
                        lazy.chunk_order().unwrap_or(0),
                        lazy.progress().unwrap_or(0),
                        report.conversations,
                        report.stored,
                        report.skipped_chats
                    ),
                )
                .await;
        }
        Event::PairSuccess(_) => {
            // Let this client follow the 515 that comes next itself: the same client then runs
            // the first login's initial app-state sync. Off again once connected.
            client.enable_auto_reconnect.store(true, Ordering::Relaxed);
            let _ = signals.send(Signal::PairSuccess);
            session
                .log("info", "paired", "the phone linked this device")
                .await;
        }
        Event::Connected(_) => {
            client.enable_auto_reconnect.store(false, Ordering::Relaxed);
            let client = session.client();
            let phone = client
                .as_ref()
                .and_then(|c| c.pn())
                .map(|j| j.user.to_string());
            let push_name = client.as_ref().map(|c| c.push_name()).unwrap_or_default();
            #[allow(clippy::unwrap_used)]
            {
                *session.qr.lock().unwrap() = None;
                *session.pair_code.lock().unwrap() = None;
            }
            session.metrics.connected.set(1);
            let now = jiff::Timestamp::now();
            session
                .update(|s| {
                    s.phase = SessionPhase::Connected;
                    s.phone_number = phone.clone();
                    s.push_name = (!push_name.is_empty()).then(|| push_name.clone());
                    s.connected_at = Some(now);
                    s.clear_error();
                })
                .await;
            let _ = session
                .store
                .emit(Kind::Ready(ev::Ready {
                    phone: phone.clone().unwrap_or_default(),
                    push_name,
                    jid: client
                        .and_then(|c| c.pn())
                        .map(|j| j.to_string())
                        .unwrap_or_default(),
                }))
                .await;
            let _ = signals.send(Signal::Connected);
            if let Some(c) = session.client() {
                let session = session.clone();
                tokio::spawn(async move { session.sync_groups(&c).await });
            }
            // The login's peak (pairing, prekeys, offline messages) is freed within seconds; give
            // it back then rather than at the next renewal, up to half a lease TTL later.
            tokio::spawn(async {
                crate::wake_timer::sleep(TRIM_AFTER_LOGIN).await;
                wasp_malloc::release_free_memory();
            });
        }
        Event::Disconnected(d) => {
            session.metrics.connected.set(0);
            let _ = session
                .store
                .emit(Kind::Disconnected(ev::Disconnected {
                    reason: format!("{:?}", d.reason),
                }))
                .await;
        }
        Event::LoggedOut(l) => {
            let _ = signals.send(Signal::LoggedOut(format!("{:?}", l.reason)));
        }
        Event::StreamReplaced(_) => {
            let _ = signals.send(Signal::Replaced);
        }
        Event::Receipt(r) => session.on_receipt(&client, r).await,
        Event::ChatPresence(u) => session.on_chat_presence(&client, u).await,
        Event::ClientOutdated(_) => {
            let message = "WhatsApp refused this client version as outdated";
            let _ = signals.send(Signal::Fatal("client_outdated", message.into()));
            session
                .report_error(ErrorReason::ClientOutdated, "client_outdated", message)
                .await;
        }
        Event::TemporaryBan(b) => {
            let message = format!(
                "WhatsApp banned this account temporarily ({:?}) for {} s",
                b.code,
                b.expire.num_seconds()
            );
            let _ = signals.send(Signal::Fatal("temporary_ban", message.clone()));
            session
                .report_error(ErrorReason::TemporaryBan, "temporary_ban", &message)
                .await;
        }
        Event::ConnectFailure(f) => {
            let message = format!(
                "WhatsApp refused the connection ({:?}){}",
                f.reason,
                f.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            session
                .report_error(ErrorReason::ConnectFailed, "connect_failure", &message)
                .await;
        }
        Event::UndecryptableMessage(u) => {
            let message = format!(
                "a message ({}) from {} could not be decrypted",
                u.info.id,
                u.info.source.sender.to_non_ad_string()
            );
            session
                .report_error(
                    ErrorReason::UndecryptableMessage,
                    "undecryptable_message",
                    &message,
                )
                .await;
        }
        _ => {}
    }
}

/// The next signal that ends a session rather than a run (a logout, a refusal); pending
/// forever if none comes (the channel's senders outlive the run).
async fn final_signal(rx: &mut mpsc::UnboundedReceiver<Signal>) -> Signal {
    loop {
        match rx.recv().await {
            Some(s @ (Signal::LoggedOut(_) | Signal::Fatal(..))) => return s,
            Some(_) => {}
            None => std::future::pending().await,
        }
    }
}

/// How one client run ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Stopped by us (shutdown, disconnect, lease lost).
    Cancelled,
    LoggedOut(String),
    /// WhatsApp refuses the session ([`Signal::Fatal`]).
    Fatal(&'static str, String),
    /// Ended on its own; `connected` if it got as far as Connected, `restart` after pairing.
    Ended {
        connected: bool,
        restart: bool,
    },
}

/// Holds the lease and renews it; `lost` fires when it is no longer ours.
struct LeaseGuard {
    lease: Lease,
    lost: CancellationToken,
    renew: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    async fn release(self, session: &Session) {
        self.renew.abort();
        session.holds_lease.store(false, Ordering::Relaxed);
        #[allow(clippy::unwrap_used)]
        {
            *session.lease_token.lock().unwrap() = None;
        }
        if let Err(e) = lease::release(&mut session.conn.clone(), &self.lease).await {
            tracing::warn!(error = %e, "releasing the lease");
        }
    }
}

/// How long after a login its freed memory goes back to the kernel (`Event::Connected`).
const TRIM_AFTER_LOGIN: Duration = Duration::from_secs(5);

async fn acquire_lease(session: &Arc<Session>, stop: &CancellationToken) -> Option<LeaseGuard> {
    let ttl = session.settings.lease_ttl;
    let mut logged_wait = false;
    loop {
        match lease::try_acquire(
            &mut session.conn.clone(),
            &session.settings.user_id,
            &session.settings.holder,
            ttl,
        )
        .await
        {
            Ok(Some(lease)) => {
                session.redis_ok.store(true, Ordering::Relaxed);
                tracing::info!(token = lease.token, "lease acquired");
                #[allow(clippy::unwrap_used)]
                {
                    *session.lease_token.lock().unwrap() = Some(lease.token);
                }
                session.holds_lease.store(true, Ordering::Relaxed);
                // The record names the new token at once: until then it is the previous
                // holder's, which the operator no longer believes (SessionState::is_current).
                let state = session.state();
                session.update(|s| *s = state).await;
                let lost = CancellationToken::new();
                let renew = tokio::spawn(renew_loop(session.clone(), lease.clone(), lost.clone()));
                return Some(LeaseGuard { lease, lost, renew });
            }
            Ok(None) => {
                session.redis_ok.store(true, Ordering::Relaxed);
                if !logged_wait {
                    tracing::info!("another process holds this user's lease; waiting");
                    logged_wait = true;
                }
            }
            Err(e) => {
                session.redis_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "acquiring the lease");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(ttl / 10) => {}
        }
    }
}

async fn renew_loop(session: Arc<Session>, lease: Lease, lost: CancellationToken) {
    let ttl = session.settings.lease_ttl;
    let mut last_ok = tokio::time::Instant::now();
    let mut failed = false;
    loop {
        let fence_at = last_ok + lease::fence_after(ttl);
        let until_fence = fence_at.saturating_duration_since(tokio::time::Instant::now());
        crate::wake_timer::sleep(lease::renew_after(ttl, failed, until_fence)).await;
        // Bounded by the fence: a renewal Redis never answers must not keep the socket past it.
        let renewed = tokio::time::timeout_at(
            fence_at,
            lease::renew(&mut session.conn.clone(), &lease, ttl),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "no answer before the fence",
            )))
        });
        match renewed {
            Ok(true) => {
                session.redis_ok.store(true, Ordering::Relaxed);
                last_ok = tokio::time::Instant::now();
                failed = false;
                // Awake anyway: give the allocator's free pages back now (see
                // `RELEASE_FREE_MEMORY_EVERY`), not on a timer of its own.
                wasp_malloc::release_free_memory();
            }
            Ok(false) => {
                session.holds_lease.store(false, Ordering::Relaxed);
                tracing::warn!("lease lost to another holder; dropping the socket");
                lost.cancel();
                return;
            }
            Err(e) => {
                session.redis_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "renewing the lease");
                failed = true;
                // Fence ourselves before the lease can have expired for others.
                if tokio::time::Instant::now() >= fence_at {
                    session.holds_lease.store(false, Ordering::Relaxed);
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

async fn build_bot(
    session: &Arc<Session>,
    signals: mpsc::UnboundedSender<Signal>,
) -> Result<Bot, SessionError> {
    session.auth.reopen().await;
    let backend: Arc<dyn Backend> = Arc::new(session.auth.clone());
    let handler_session = session.clone();
    let mut builder = Bot::builder()
        .with_backend_arc(backend)
        .with_transport_factory(
            TokioWebSocketTransportFactory::new().with_url(session.settings.whatsapp_url.clone()),
        )
        .with_http_client(crate::http::ReqwestHttp::new(
            &session.settings.whatsapp_url,
        ))
        .with_runtime(crate::runtime::PodRuntime)
        .with_inbound_durability_hook(Hook(session.clone()))
        .on_event(move |event, client: Arc<Client>| {
            let session = handler_session.clone();
            let signals = signals.clone();
            async move { on_event(session, client, event, signals).await }
        });
    if session.settings.whatsapp_url != crate::config::DEFAULT_WHATSAPP_URL {
        builder = builder.with_version(FIXED_CLIENT_VERSION);
    }
    if session.settings.history.total == 0 || session.settings.storage_policy == StoragePolicy::None
    {
        // Nothing of it would be kept: do not even download it.
        builder = builder.skip_history_sync();
    }
    if session.settings.pairing_method == PairingMethod::PairingCode
        && let Some(phone) = &session.settings.pairing_phone
    {
        let digits = wasp_common::phone::normalize_phone(phone)
            .map_err(|e| SessionError::Build(e.to_string()))?;
        builder = builder.with_pair_code(whatsapp_rust::pair_code::PairCodeOptions {
            phone_number: digits,
            ..Default::default()
        });
    }
    builder
        .build()
        .await
        .map_err(|e| SessionError::Build(e.to_string()))
}

/// One client run: until it ends by itself or `cancel` fires.
async fn run_attempt(
    session: &Arc<Session>,
    cancel: &CancellationToken,
    signals_tx: mpsc::UnboundedSender<Signal>,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
) -> Result<Outcome, SessionError> {
    let bot = build_bot(session, signals_tx).await?;
    let mut handle = bot.spawn();
    let client = handle.client();
    client.enable_auto_reconnect.store(false, Ordering::Relaxed);
    #[allow(clippy::unwrap_used)]
    {
        *session.client.lock().unwrap() = Some(client.clone());
    }
    let mut connected = false;
    let mut restart = false;
    let outcome = loop {
        tokio::select! {
            _ = &mut handle => break None,
            // A write failed (Redis unreachable): end this run, so that what it left
            // unacknowledged is redelivered to a new client (see `RedisAuthStore::fault`).
            _ = session.auth.faulted() => {
                tracing::warn!("auth state not persisted: dropping the socket to reconnect");
                client.disconnect().await;
                let _ = (&mut handle).await;
                break None;
            }
            _ = cancel.cancelled() => {
                // Graceful: flushes pending commits and device state, closes the socket.
                client.disconnect().await;
                let _ = (&mut handle).await;
                break Some(Outcome::Cancelled);
            }
            Some(sig) = signals.recv() => match sig {
                Signal::Connected => connected = true,
                Signal::PairSuccess => restart = true,
                Signal::LoggedOut(reason) => {
                    client.disconnect().await;
                    let _ = (&mut handle).await;
                    break Some(Outcome::LoggedOut(reason));
                }
                Signal::Fatal(category, message) => {
                    client.disconnect().await;
                    let _ = (&mut handle).await;
                    break Some(Outcome::Fatal(category, message));
                }
                Signal::Replaced => {
                    session
                        .log(
                            "warn",
                            "stream_replaced",
                            "stream replaced by another connection",
                        )
                        .await;
                }
            },
        }
    };
    #[allow(clippy::unwrap_used)]
    {
        *session.client.lock().unwrap() = None;
    }
    session.metrics.connected.set(0);
    if let Some(o) = outcome {
        return Ok(o);
    }
    // Signals already dispatched when the run loop ended.
    while let Ok(sig) = signals.try_recv() {
        match sig {
            Signal::Connected => connected = true,
            Signal::PairSuccess => restart = true,
            Signal::LoggedOut(reason) => return Ok(Outcome::LoggedOut(reason)),
            Signal::Fatal(category, message) => return Ok(Outcome::Fatal(category, message)),
            Signal::Replaced => {}
        }
    }
    Ok(Outcome::Ended { connected, restart })
}

async fn on_logged_out(session: &Arc<Session>, reason: &str) {
    session.auth.close().await;
    let mut conn = session.conn.clone();
    match wasp_common::purge::purge_own_auth(&mut conn, &session.settings.user_id).await {
        Ok(n) => tracing::info!(keys = n, "logged out: auth state purged"),
        Err(e) => tracing::warn!(error = %e, "purging auth state after logout"),
    }
    let _ = session
        .store
        .emit(Kind::LoggedOut(ev::LoggedOut {
            reason: reason.to_owned(),
        }))
        .await;
    session
        .log("warn", "logged_out", &format!("logged out: {reason}"))
        .await;
    session
        .update(|s| {
            s.phase = SessionPhase::LoggedOut;
            s.connected_at = None;
            s.phone_number = None;
            s.push_name = None;
            s.set_error(ErrorReason::LoggedOut, format!("logged out: {reason}"));
        })
        .await;
}

/// WhatsApp refuses the session (a ban, an outdated client): Failed, and no reconnect until
/// the user connects again.
async fn on_refused(session: &Arc<Session>, category: &str, message: String) {
    tracing::warn!(category, "WhatsApp refuses the session; not reconnecting");
    session.set_phase(SessionPhase::Failed, Some(message)).await;
    session.desire(Desired::Stop);
}

/// Logs out from WhatsApp (control API / operator finalizer) and purges the auth state.
pub async fn logout(session: &Arc<Session>) {
    // The logout IQ first, on the live socket: stopping first raced it (the run's own
    // disconnect won and the phone kept the device). The reconnect back-off is longer than
    // the step from here to `Stop`.
    if let Some(client) = session.client() {
        client.logout().await;
    }
    session.desire(Desired::Stop);
    on_logged_out(session, "requested").await;
}

/// Whether the auth state holds a paired device (its next connect is a login, not a pairing).
async fn paired(session: &Session) -> bool {
    use wacore::store::traits::DeviceStore as _;
    matches!(session.auth.load().await, Ok(Some(d)) if d.pn.is_some())
}

/// Readiness from what the process knows (see [`Session::is_ready`]).
pub fn ready(redis_ok: bool, holds_lease: bool, desired: Desired) -> bool {
    redis_ok && (holds_lease || desired != Desired::Run)
}

/// The supervisor. Returns when `shutdown` fires.
pub async fn supervise(session: Arc<Session>, shutdown: CancellationToken) {
    let mut desired = session.desired.subscribe();
    let mut failures: u32 = 0;
    let mut lease: Option<LeaseGuard> = None;
    let mut resealed = false;
    let mut after_pairing = false;
    session.set_phase(SessionPhase::Starting, None).await;
    'outer: loop {
        // Wait until asked to run.
        while *desired.borrow_and_update() != Desired::Run {
            if let Some(l) = lease.take() {
                l.release(&session).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                r = desired.changed() => if r.is_err() { break 'outer },
            }
            failures = 0;
        }
        if lease.is_none() {
            lease = acquire_lease(&session, &shutdown).await;
            if lease.is_none() {
                break;
            }
            if !resealed {
                // Master-key rotation, eagerly: the client rewrites only rows it changes, so
                // identity keys, prekeys and idle sessions would otherwise stay under the old
                // key for good, and it could never be retired.
                match session.auth.reseal_stale().await {
                    Ok(r) => {
                        resealed = true;
                        if r.resealed > 0 || r.unreadable > 0 {
                            tracing::info!(
                                resealed = r.resealed,
                                current = r.current,
                                unreadable = r.unreadable,
                                "auth state re-sealed with the current master key"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "re-sealing the auth state (retried at the next lease)")
                    }
                }
            }
        }
        let Some(guard) = lease.as_ref() else { break };
        let cancel = CancellationToken::new();
        let watcher = {
            let cancel = cancel.clone();
            let shutdown = shutdown.clone();
            let lost = guard.lost.clone();
            let mut desired = session.desired.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = lost.cancelled() => {}
                    _ = desired.wait_for(|d| *d != Desired::Run) => {}
                }
                cancel.cancel();
            })
        };
        // A paired device's login waits for its slot in the fleet's admission bucket (not a
        // new pairing, nor the login that follows one: see `admission`).
        if !after_pairing && paired(&session).await {
            let wait = crate::admission::wait_for_slot(
                &mut session.conn.clone(),
                &session.settings.admission,
            )
            .await;
            tracing::debug!(?wait, "admission slot");
            if !wait.is_zero() {
                tracing::info!(?wait, "login paced by the admission bucket");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        after_pairing = false;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result = if cancel.is_cancelled() {
            Ok(Outcome::Cancelled)
        } else {
            run_attempt(&session, &cancel, tx, &mut rx).await
        };
        watcher.abort();
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "client run failed");
                Outcome::Ended {
                    connected: false,
                    restart: false,
                }
            }
        };
        tracing::info!(?outcome, "client run ended");
        match outcome {
            Outcome::LoggedOut(reason) => {
                on_logged_out(&session, &reason).await;
                session.desire(Desired::Stop);
                continue;
            }
            Outcome::Fatal(category, message) => {
                on_refused(&session, category, message).await;
                continue;
            }
            Outcome::Cancelled => {
                if shutdown.is_cancelled() {
                    break;
                }
                if guard.lost.is_cancelled() {
                    if let Some(l) = lease.take() {
                        l.renew.abort();
                    }
                    session.holds_lease.store(false, Ordering::Relaxed);
                    session
                        .set_phase(SessionPhase::Reconnecting, Some("lease lost".into()))
                        .await;
                    continue;
                }
                if *session.desired.borrow() == Desired::Stop
                    && session.state().phase != SessionPhase::LoggedOut
                {
                    session.set_phase(SessionPhase::Disconnected, None).await;
                }
                continue;
            }
            Outcome::Ended { connected, restart } => {
                if restart {
                    after_pairing = true;
                    continue;
                }
                if connected {
                    failures = 0;
                }
                failures += 1;
                match session
                    .settings
                    .policy
                    .decide(failures, rand::random::<f64>())
                {
                    Decision::GiveUp => {
                        session
                            .set_phase(
                                SessionPhase::Failed,
                                Some(format!("gave up after {} reconnect attempts", failures - 1)),
                            )
                            .await;
                        session.desire(Desired::Stop);
                        continue;
                    }
                    Decision::Retry { attempt, delay } => {
                        session.metrics.reconnects.inc();
                        session
                            .update(|s| {
                                s.phase = SessionPhase::Reconnecting;
                                s.reconnect_count += 1;
                                s.connected_at = None;
                            })
                            .await;
                        tracing::info!(attempt, ?delay, "reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                            _ = desired.wait_for(|d| *d != Desired::Run) => {}
                            // The ended run's last signals can come after it ended.
                            sig = final_signal(&mut rx) => match sig {
                                Signal::LoggedOut(reason) => {
                                    on_logged_out(&session, &reason).await;
                                    session.desire(Desired::Stop);
                                }
                                Signal::Fatal(category, message) => {
                                    on_refused(&session, category, message).await;
                                }
                                _ => {}
                            },
                        }
                    }
                }
            }
        }
    }
    // The last record and the lease's release, bounded: with Redis away they cannot be written,
    // and the lease expires by itself (the operator then stops believing the record).
    let last_writes = async {
        let phase = session.state().phase;
        if matches!(
            phase,
            SessionPhase::Connected | SessionPhase::AwaitingScan | SessionPhase::Reconnecting
        ) {
            session.set_phase(SessionPhase::Disconnected, None).await;
        }
        if let Some(l) = lease.take() {
            l.release(&session).await;
        }
    };
    if tokio::time::timeout(LAST_WRITES, last_writes)
        .await
        .is_err()
    {
        tracing::warn!(
            "Redis unreachable at shutdown: the state record and lease are left to expire"
        );
    }
}

/// How long a stopping pod tries to record its state and release its lease.
const LAST_WRITES: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn wid(s: &str) -> Wid {
        Wid::parse(s).unwrap()
    }

    #[test]
    fn lid_chats_resolve_to_the_phone_number_when_it_is_known() {
        let lid = wid("100000012345678@lid");
        let pn = wid("41790000001@c.us");
        assert_eq!(resolve_wid(lid.clone(), Some(pn.clone()), None), pn);
        assert_eq!(resolve_wid(lid.clone(), None, Some("41790000001")), pn);
        assert_eq!(
            resolve_wid(lid.clone(), Some(pn.clone()), Some("41790000002")),
            pn,
            "the stanza's own address wins"
        );
        assert_eq!(
            resolve_wid(lid.clone(), None, None),
            lid,
            "unknown: stays a LID"
        );
        assert_eq!(resolve_wid(lid.clone(), None, Some("not-a-number")), lid);
        assert_eq!(resolve_wid(lid.clone(), Some(wid("1@lid")), None), lid);
        let group = wid("120363000000000001@g.us");
        assert_eq!(
            resolve_wid(group.clone(), Some(pn), None),
            group,
            "only LIDs move"
        );
    }

    #[test]
    fn ready_only_with_redis_and_the_lease_or_asked_to_stop() {
        assert!(ready(true, true, Desired::Run));
        // Restarted after a kill -9: the dead process's lease has not expired yet.
        assert!(!ready(true, false, Desired::Run));
        assert!(
            ready(true, false, Desired::Stop),
            "stopped on request: still serves"
        );
        assert!(!ready(false, true, Desired::Run));
        assert!(!ready(false, false, Desired::Stop));
    }

    #[test]
    fn receipts_map_to_whatsapp_web_js_acks() {
        use wacore::types::presence::ReceiptType as R;
        assert_eq!(ack_of(&R::Delivered), Some(model::ack::DEVICE));
        assert_eq!(ack_of(&R::Read), Some(model::ack::READ));
        assert_eq!(ack_of(&R::Played), Some(model::ack::PLAYED));
        assert_eq!(ack_of(&R::ServerError), Some(model::ack::ERROR));
        assert_eq!(
            ack_of(&R::ReadSelf),
            None,
            "the user's own reads are not acks"
        );
        assert_eq!(ack_of(&R::Retry), None);
    }
}
