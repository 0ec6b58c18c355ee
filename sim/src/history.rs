//! History sync after pairing, as a WhatsApp phone does it: right after a companion is
//! linked, the phone uploads its chat history in chunks — each a zlib-compressed
//! `wa::HistorySync` encrypted as `MediaType::History` media (`/mms/md-msg-hist`) — and
//! tells the companion about each with a peer E2E message carrying
//! `protocol_message { type: HISTORY_SYNC_NOTIFICATION, history_sync_notification }`.
//!
//! What the phone has to tell is a [`HistoryPlan`] (how many chats, messages per chat, who
//! with); the messages are generated chunk by chunk, so a large plan is never held encoded in
//! memory at once, and the phone waits for the device to acknowledge earlier notifications
//! before it sends more (a device that is offline is not flooded).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wacore::download::MediaType;
use waproto::whatsapp as wa;

use crate::sim::{Sim, SimError, now_secs};
use crate::world::DeviceAddr;

/// What a phone's history holds. Chat `i` is with `contacts[i]` (phone numbers of simulated
/// contacts) while there are any, else with a generated number; each chat has
/// `messages_per_chat` texts from both sides, in the past.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPlan {
    pub chats: u32,
    pub messages_per_chat: u32,
    #[serde(default)]
    pub contacts: Vec<String>,
    /// Messages per history chunk (one blob and one notification each); 0 picks
    /// [`DEFAULT_CHUNK_MESSAGES`].
    #[serde(default)]
    pub chunk_messages: u32,
}

pub const DEFAULT_CHUNK_MESSAGES: u32 = 500;
/// The most messages a plan may hold.
pub const MAX_MESSAGES: u64 = 1_000_000;
/// History notifications a device may have unacknowledged before the phone waits.
const WINDOW: usize = 2;

/// How far a device's history sync got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryProgress {
    pub phone: String,
    pub device: u16,
    /// Notifications sent.
    pub chunks: u32,
    /// Messages in them.
    pub messages: u64,
    /// Every chunk was sent and acknowledged by the device.
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A chat partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub phone: String,
    pub name: String,
    pub lid: Option<String>,
}

/// The phone's own identity, for push names and `from_me` messages.
#[derive(Debug, Clone)]
pub struct Own {
    pub phone: String,
    pub push_name: String,
}

/// One chunk to send.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub sync_type: wa::message::HistorySyncType,
    pub chunk_order: u32,
    pub progress: u32,
    pub messages: u64,
    pub oldest_ts: Option<i64>,
    pub history: wa::HistorySync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Every chat with its newest message.
    Bootstrap,
    /// The push names of every partner (and the phone's own).
    PushName,
    /// The older messages, chat by chat.
    Recent,
    Done,
}

/// Generates a plan's chunks one at a time: INITIAL_BOOTSTRAP (every conversation with its
/// newest message), PUSH_NAME, then RECENT (the older messages), each with its own
/// `chunk_order` from 1 and `progress` up to 100.
pub struct HistoryGen {
    plan: HistoryPlan,
    partners: Vec<Partner>,
    own: Own,
    /// Makes message ids unique to this history.
    seed: u64,
    now: u64,
    phase: Phase,
    chunk_order: u32,
    /// Bootstrap: next chat. Recent: (chat, message) cursor.
    chat: u32,
    message: u32,
}

impl HistoryGen {
    /// `partners` are the simulated contacts named by the plan (in order); other chats get
    /// generated partners.
    pub fn new(plan: HistoryPlan, partners: Vec<Partner>, own: Own, seed: u64) -> Self {
        let mut plan = plan;
        if plan.chunk_messages == 0 {
            plan.chunk_messages = DEFAULT_CHUNK_MESSAGES;
        }
        let phase = if plan.chats == 0 || plan.messages_per_chat == 0 {
            Phase::Done
        } else {
            Phase::Bootstrap
        };
        Self {
            plan,
            partners,
            own,
            seed,
            now: now_secs(),
            phase,
            chunk_order: 0,
            chat: 0,
            message: 0,
        }
    }

    pub fn total_messages(&self) -> u64 {
        u64::from(self.plan.chats) * u64::from(self.plan.messages_per_chat)
    }

    fn partner(&self, chat: u32) -> Partner {
        self.partners
            .get(chat as usize)
            .cloned()
            .unwrap_or_else(|| {
                let phone = format!("1777{:07}", chat + 1);
                Partner {
                    name: format!("History Person {}", chat + 1),
                    phone,
                    lid: None,
                }
            })
    }

    /// Chat `chat`'s newest message is an hour older than chat `chat - 1`'s; messages in a
    /// chat are ten minutes apart.
    fn timestamp(&self, chat: u32, message: u32) -> u64 {
        let newest = self.now.saturating_sub(3600 * (u64::from(chat) + 1));
        newest.saturating_sub(600 * u64::from(self.plan.messages_per_chat - 1 - message))
    }

    /// Message `message` (0 = oldest) of chat `chat`: odd ones are the phone's own.
    fn web_message(&self, chat: u32, message: u32, partner: &Partner) -> wa::HistorySyncMsg {
        let from_me = message % 2 == 1;
        let jid = format!("{}@s.whatsapp.net", partner.phone);
        let text = if from_me {
            format!(
                "history {}/{} from me to {}",
                chat + 1,
                message + 1,
                partner.name
            )
        } else {
            format!("history {}/{} from {}", chat + 1, message + 1, partner.name)
        };
        wa::HistorySyncMsg {
            message: buffa::MessageField::some(wa::WebMessageInfo {
                key: buffa::MessageField::some(wa::MessageKey {
                    remote_jid: Some(jid),
                    from_me: Some(from_me),
                    id: Some(message_id(self.seed, chat, message)),
                    participant: None,
                }),
                message: buffa::MessageField::some(wa::Message {
                    conversation: Some(text),
                    ..Default::default()
                }),
                message_timestamp: Some(self.timestamp(chat, message)),
                status: Some(if from_me {
                    wa::web_message_info::Status::READ
                } else {
                    wa::web_message_info::Status::DELIVERY_ACK
                }),
                push_name: if from_me {
                    Some(self.own.push_name.clone())
                } else {
                    Some(partner.name.clone())
                },
                ..Default::default()
            }),
            msg_order_id: Some(u64::from(message) + 1),
        }
    }

    fn conversation(
        &self,
        chat: u32,
        partner: &Partner,
        messages: Vec<wa::HistorySyncMsg>,
    ) -> wa::Conversation {
        let newest = self.timestamp(chat, self.plan.messages_per_chat - 1);
        wa::Conversation {
            id: format!("{}@s.whatsapp.net", partner.phone),
            messages,
            last_msg_timestamp: Some(newest),
            conversation_timestamp: Some(newest),
            unread_count: Some(0),
            display_name: Some(partner.name.clone()),
            pn_jid: Some(format!("{}@s.whatsapp.net", partner.phone)),
            lid_jid: partner.lid.as_ref().map(|l| format!("{l}@lid")),
            ..Default::default()
        }
    }

    fn progress(done: u64, total: u64) -> u32 {
        (done * 100)
            .checked_div(total)
            .map_or(100, |p| p.min(100) as u32)
    }

    fn chunk(
        &mut self,
        sync_type: wa::history_sync::HistorySyncType,
        messages: u64,
        oldest: Option<u64>,
        progress: u32,
        history: wa::HistorySync,
    ) -> Chunk {
        self.chunk_order += 1;
        let mut history = history;
        history.sync_type = sync_type;
        history.chunk_order = Some(self.chunk_order);
        history.progress = Some(progress);
        let notification_type = match sync_type {
            wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP => {
                wa::message::HistorySyncType::INITIAL_BOOTSTRAP
            }
            wa::history_sync::HistorySyncType::PUSH_NAME => wa::message::HistorySyncType::PUSH_NAME,
            _ => wa::message::HistorySyncType::RECENT,
        };
        Chunk {
            sync_type: notification_type,
            chunk_order: self.chunk_order,
            progress,
            messages,
            oldest_ts: oldest.map(|t| t as i64),
            history,
        }
    }

    /// The next chunk, or `None` when the history is complete.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        use wa::history_sync::HistorySyncType as T;
        let per_chunk = self.plan.chunk_messages;
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Bootstrap => {
                    let first = self.chat;
                    let last = (first + per_chunk).min(self.plan.chats);
                    let mut conversations = Vec::with_capacity((last - first) as usize);
                    let mut mappings = Vec::new();
                    for chat in first..last {
                        let partner = self.partner(chat);
                        let newest = self.plan.messages_per_chat - 1;
                        conversations.push(self.conversation(
                            chat,
                            &partner,
                            vec![self.web_message(chat, newest, &partner)],
                        ));
                        if let Some(lid) = &partner.lid {
                            mappings.push(wa::PhoneNumberToLIDMapping {
                                pn_jid: Some(format!("{}@s.whatsapp.net", partner.phone)),
                                lid_jid: Some(format!("{lid}@lid")),
                            });
                        }
                    }
                    let oldest = conversations
                        .iter()
                        .filter_map(|c| c.messages.first())
                        .filter_map(|m| m.message.as_option())
                        .filter_map(|m| m.message_timestamp)
                        .min();
                    self.chat = last;
                    let progress = Self::progress(u64::from(last), u64::from(self.plan.chats));
                    let history = wa::HistorySync {
                        conversations,
                        phone_number_to_lid_mappings: mappings,
                        ..Default::default()
                    };
                    let chunk = self.chunk(
                        T::INITIAL_BOOTSTRAP,
                        u64::from(last - first),
                        oldest,
                        progress,
                        history,
                    );
                    if last == self.plan.chats {
                        self.phase = Phase::PushName;
                        self.chunk_order = 0;
                    }
                    return Some(chunk);
                }
                Phase::PushName => {
                    let mut pushnames: Vec<wa::Pushname> = (0..self.plan.chats)
                        .map(|chat| {
                            let p = self.partner(chat);
                            wa::Pushname {
                                id: Some(format!("{}@s.whatsapp.net", p.phone)),
                                pushname: Some(p.name),
                            }
                        })
                        .collect();
                    pushnames.push(wa::Pushname {
                        id: Some(format!("{}@s.whatsapp.net", self.own.phone)),
                        pushname: Some(self.own.push_name.clone()),
                    });
                    let history = wa::HistorySync {
                        pushnames,
                        ..Default::default()
                    };
                    let chunk = self.chunk(T::PUSH_NAME, 0, None, 100, history);
                    self.phase = Phase::Recent;
                    self.chunk_order = 0;
                    self.chat = 0;
                    self.message = 0;
                    return Some(chunk);
                }
                Phase::Recent => {
                    // Every message but each chat's newest, chat by chat.
                    let older = self.plan.messages_per_chat - 1;
                    let total = u64::from(self.plan.chats) * u64::from(older);
                    if total == 0 {
                        self.phase = Phase::Done;
                        continue;
                    }
                    let mut conversations: Vec<wa::Conversation> = Vec::new();
                    let mut count = 0u32;
                    let mut oldest: Option<u64> = None;
                    while count < per_chunk && self.chat < self.plan.chats {
                        let partner = self.partner(self.chat);
                        let take = (older - self.message).min(per_chunk - count);
                        let msgs: Vec<_> = (self.message..self.message + take)
                            .map(|m| self.web_message(self.chat, m, &partner))
                            .collect();
                        let ts = self.timestamp(self.chat, self.message);
                        oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
                        conversations.push(self.conversation(self.chat, &partner, msgs));
                        count += take;
                        self.message += take;
                        if self.message == older {
                            self.chat += 1;
                            self.message = 0;
                        }
                    }
                    let sent = u64::from(self.chat) * u64::from(older) + u64::from(self.message);
                    let progress = Self::progress(sent, total);
                    let history = wa::HistorySync {
                        conversations,
                        ..Default::default()
                    };
                    let chunk = self.chunk(T::RECENT, u64::from(count), oldest, progress, history);
                    if self.chat == self.plan.chats {
                        self.phase = Phase::Done;
                    }
                    return Some(chunk);
                }
            }
        }
    }
}

/// A history message's id: 32 upper-case hex digits, as an Android phone's.
pub fn message_id(seed: u64, chat: u32, message: u32) -> String {
    format!("{seed:016X}{chat:08X}{message:08X}")
}

/// zlib, as WhatsApp compresses history blobs.
pub fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

impl Sim {
    /// Sets what `phone`'s history holds; every device linked from now on gets it right
    /// after pairing. A plan with no chats (or no messages) turns history sync off.
    pub fn set_history(&self, phone: &str, plan: HistoryPlan) -> Result<(), SimError> {
        let total = u64::from(plan.chats) * u64::from(plan.messages_per_chat);
        if total > MAX_MESSAGES {
            return Err(SimError::BadRequest(format!(
                "a history of {total} messages is over the {MAX_MESSAGES} the simulator makes"
            )));
        }
        let mut w = self.world();
        for c in &plan.contacts {
            if !w.contacts.contains_key(c) {
                return Err(SimError::NotFound(format!("contact {c}")));
            }
        }
        let account = w
            .accounts
            .get_mut(phone)
            .ok_or_else(|| SimError::NotFound(format!("phone {phone}")))?;
        account.history = (total > 0).then_some(plan);
        drop(w);
        self.notify_changed();
        Ok(())
    }

    pub fn history_plan(&self, phone: &str) -> Option<HistoryPlan> {
        self.world().accounts.get(phone)?.history.clone()
    }

    /// How far each device's history sync got (devices of `phone`).
    pub fn history_progress(&self, phone: &str) -> Vec<HistoryProgress> {
        self.world()
            .history
            .values()
            .filter(|p| p.phone == phone)
            .cloned()
            .collect()
    }

    /// Starts sending `addr`'s account history to the newly linked device, if it has a plan.
    pub(crate) fn start_history(self: &Arc<Self>, addr: &DeviceAddr) {
        let (plan, partners, own) = {
            let mut w = self.world();
            let Some(account) = w.accounts.get(&addr.phone) else {
                return;
            };
            let Some(plan) = account.history.clone() else {
                return;
            };
            let own = Own {
                phone: account.phone.clone(),
                push_name: account.push_name.clone(),
            };
            let partners = plan
                .contacts
                .iter()
                .take(plan.chats as usize)
                .filter_map(|c| w.contacts.get(c))
                .map(|c| Partner {
                    phone: c.phone.clone(),
                    name: c.name.clone(),
                    lid: Some(c.lid.clone()),
                })
                .collect::<Vec<_>>();
            w.history.insert(
                addr.clone(),
                HistoryProgress {
                    phone: addr.phone.clone(),
                    device: addr.device,
                    ..Default::default()
                },
            );
            (plan, partners, own)
        };
        let seed = {
            use rand::RngExt as _;
            crate::crypto::new_rng().random::<u64>()
        };
        let generator = HistoryGen::new(plan, partners, own, seed);
        let weak = Arc::downgrade(self);
        let addr = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = send_history(weak.clone(), &addr, generator).await {
                warn!(?addr, "history sync stopped: {e}");
                if let Some(sim) = weak.upgrade() {
                    if let Some(p) = sim.world().history.get_mut(&addr) {
                        p.error = Some(e.to_string());
                    }
                    sim.notify_changed();
                }
            }
        });
    }
}

/// How long the phone waits between checks of the device's acknowledgements (it also wakes
/// on every change).
const ACK_POLL: Duration = Duration::from_secs(5);

/// Waits until the device has fewer than `window` of `sent` unacknowledged; `false` when the
/// device or the simulator is gone.
async fn wait_acked(sim: &Weak<Sim>, addr: &DeviceAddr, sent: &[String], window: usize) -> bool {
    loop {
        let Some(strong) = sim.upgrade() else {
            return false;
        };
        let state = strong
            .wait_for(ACK_POLL, |w| {
                let Some(dev) = w.device(addr) else {
                    return Some(false);
                };
                if dev.removed {
                    return Some(false);
                }
                let pending = dev.offline.items().filter(|q| sent.contains(&q.id)).count();
                (pending < window).then_some(true)
            })
            .await;
        if let Some(alive) = state {
            return alive;
        }
    }
}

async fn send_history(
    sim: Weak<Sim>,
    addr: &DeviceAddr,
    mut generator: HistoryGen,
) -> Result<(), SimError> {
    let total = generator.total_messages();
    info!(?addr, messages = total, "phone starts the history sync");
    let mut outstanding: Vec<String> = Vec::new();
    while let Some(chunk) = generator.next_chunk() {
        if !wait_acked(&sim, addr, &outstanding, WINDOW).await {
            return Ok(());
        }
        let Some(strong) = sim.upgrade() else {
            return Ok(());
        };
        let messages = chunk.messages;
        let id = strong.send_history_chunk(addr, chunk).await?;
        outstanding.push(id);
        let mut w = strong.world();
        // Only the notifications still queued for the device matter from now on.
        if let Some(dev) = w.device(addr) {
            let queued: std::collections::HashSet<&str> =
                dev.offline.items().map(|q| q.id.as_str()).collect();
            outstanding.retain(|id| queued.contains(id.as_str()));
        }
        if let Some(p) = w.history.get_mut(addr) {
            p.chunks += 1;
            p.messages += messages;
        }
        drop(w);
        strong.notify_changed();
    }
    if !wait_acked(&sim, addr, &outstanding, 1).await {
        return Ok(());
    }
    if let Some(strong) = sim.upgrade() {
        if let Some(p) = strong.world().history.get_mut(addr) {
            p.done = true;
        }
        strong.notify_changed();
        info!(?addr, "history sync complete");
    }
    Ok(())
}

impl Sim {
    /// Compresses, encrypts and stores one chunk, and queues its notification for the device
    /// (a peer message from the phone, Signal-encrypted by the phone's identity).
    async fn send_history_chunk(
        &self,
        addr: &DeviceAddr,
        chunk: Chunk,
    ) -> Result<String, SimError> {
        let encoded = waproto::codec::history_sync_to_vec(&chunk.history);
        drop(chunk.history);
        let compressed = tokio::task::spawn_blocking(move || compress(&encoded))
            .await
            .map_err(|e| SimError::Media(e.to_string()))?
            .map_err(|e| SimError::Media(e.to_string()))?;
        let stored = self.store_media(compressed, MediaType::History).await?;
        let notification = wa::message::HistorySyncNotification {
            file_sha256: Some(stored.file_sha256.to_vec()),
            file_length: Some(stored.file_length),
            media_key: Some(stored.media_key.to_vec()),
            file_enc_sha256: Some(stored.file_enc_sha256.to_vec()),
            direct_path: Some(stored.direct_path.clone()),
            sync_type: Some(chunk.sync_type),
            chunk_order: Some(chunk.chunk_order),
            progress: Some(chunk.progress),
            oldest_msg_in_chunk_timestamp_sec: chunk.oldest_ts,
            ..Default::default()
        };
        let msg = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::HISTORY_SYNC_NOTIFICATION),
                history_sync_notification: buffa::MessageField::some(notification),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.phone_send_to_device(addr, &msg).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn own() -> Own {
        Own {
            phone: "15550001111".into(),
            push_name: "Me".into(),
        }
    }

    fn plan(chats: u32, messages: u32, chunk: u32) -> HistoryPlan {
        HistoryPlan {
            chats,
            messages_per_chat: messages,
            contacts: vec![],
            chunk_messages: chunk,
        }
    }

    fn all(mut g: HistoryGen) -> Vec<Chunk> {
        std::iter::from_fn(|| g.next_chunk()).collect()
    }

    #[test]
    fn chunks_cover_every_message_once_in_whatsapps_order() {
        let partners = vec![Partner {
            phone: "16660001".into(),
            name: "Alice".into(),
            lid: Some("100000000000009".into()),
        }];
        let chunks = all(HistoryGen::new(plan(7, 4, 5), partners, own(), 42));
        use wa::message::HistorySyncType as T;
        let kinds: Vec<_> = chunks
            .iter()
            .map(|c| (c.sync_type, c.chunk_order))
            .collect();
        // 7 chats' newest messages in chunks of 5; push names; 21 older messages in 5 chunks.
        assert_eq!(
            kinds,
            vec![
                (T::INITIAL_BOOTSTRAP, 1),
                (T::INITIAL_BOOTSTRAP, 2),
                (T::PUSH_NAME, 1),
                (T::RECENT, 1),
                (T::RECENT, 2),
                (T::RECENT, 3),
                (T::RECENT, 4),
                (T::RECENT, 5),
            ]
        );
        assert_eq!(
            chunks.iter().map(|c| c.progress).collect::<Vec<_>>(),
            vec![71, 100, 100, 23, 47, 71, 95, 100]
        );
        let mut ids = std::collections::BTreeSet::new();
        for c in &chunks {
            let n: usize = c
                .history
                .conversations
                .iter()
                .map(|c| c.messages.len())
                .sum();
            assert_eq!(n as u64, c.messages);
            assert!(n <= 5);
            for conv in &c.history.conversations {
                for m in &conv.messages {
                    let info = m.message.as_option().unwrap();
                    assert!(ids.insert(info.key.id.clone().unwrap()));
                    assert_eq!(info.key.remote_jid.as_deref(), Some(conv.id.as_str()));
                }
            }
        }
        assert_eq!(ids.len(), 28);
        // The first chat is Alice's, with her LID mapped in the first chunk.
        let first = &chunks[0].history;
        assert_eq!(first.conversations[0].id, "16660001@s.whatsapp.net");
        assert_eq!(first.phone_number_to_lid_mappings.len(), 1);
        assert_eq!(chunks[2].history.pushnames.len(), 8);
        // A plan of nothing sends nothing; one message per chat has no RECENT part.
        assert!(all(HistoryGen::new(plan(0, 5, 5), vec![], own(), 1)).is_empty());
        let single = all(HistoryGen::new(plan(3, 1, 0), vec![], own(), 1));
        assert_eq!(single.len(), 2);
    }

    #[test]
    fn the_library_reads_what_the_phone_writes() {
        let chunks = all(HistoryGen::new(plan(3, 2, 10), vec![], own(), 7));
        for chunk in chunks {
            let compressed =
                compress(&waproto::codec::history_sync_to_vec(&chunk.history)).unwrap();
            let result = wacore::history_sync::process_history_sync(
                compressed.clone(),
                Some("15550001111"),
                true,
            )
            .unwrap();
            assert_eq!(
                result.conversations_processed,
                chunk.history.conversations.len()
            );
            if chunk.sync_type == wa::message::HistorySyncType::PUSH_NAME {
                assert_eq!(result.own_pushname.as_deref(), Some("Me"));
            }
            let lazy = wacore::types::events::LazyHistorySync::new(
                result.compressed_bytes.unwrap(),
                result.decompressed_size,
                chunk.history.sync_type as i32,
                chunk.history.chunk_order,
                chunk.history.progress,
            );
            let decoded = lazy.get().expect("decodes");
            assert_eq!(decoded, &chunk.history);
        }
    }
}
