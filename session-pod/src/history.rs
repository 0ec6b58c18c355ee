//! The chat history the phone sends after linking (history-sync notifications), into the store
//! as the storage policy allows: `all` stores it, `contactsOnly` only the whitelisted contacts'
//! chats, `none` nothing (the notifications are then not even downloaded). Bounded per chat and
//! in total, and streamed: the library's `HistorySyncStream` inflates one conversation at a time
//! on a blocking thread, each conversation's newest messages cross a bounded channel to the
//! store, so a large history never sits decoded in memory (peers: waha#1826, 8–25 GB).
//!
//! History messages are stored, not announced: whatsapp-web.js emits no `message` event for
//! them either; `/chats` and `/messages` show them, and the session log says how many came.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use waproto::whatsapp as wa;
use wasp_common::model::{Message, MessageParts, Wid};
use whatsapp_rust::proto_helpers::MessageExt as _;

use crate::config::StoragePolicy;
use crate::media::{MediaRef, inbound_media};
use crate::session::Session;

/// How much history a session keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Newest messages kept per chat.
    pub per_chat: usize,
    /// Messages kept in all, per linking (0: history is not fetched at all).
    pub total: usize,
}

/// A history message, in the model, with its media reference if it has one.
pub type HistoryMessage = (Message, Option<MediaRef>);

/// The chat a history conversation is: its phone-number id when WhatsApp names one (pure).
pub fn conversation_chat(conv: &wa::Conversation) -> Option<Wid> {
    let id = Wid::parse(&conv.id).ok()?;
    if id.is_lid()
        && let Some(pn) = conv.pn_jid.as_deref().and_then(|p| Wid::parse(p).ok())
    {
        return Some(pn);
    }
    Some(id)
}

/// The newest `limit` chat messages of a conversation, oldest first, as the model (pure).
/// Protocol messages, stubs and anything without text or media are left out.
pub fn conversation_messages(
    conv: &wa::Conversation,
    own: Option<&Wid>,
    limit: usize,
) -> Vec<HistoryMessage> {
    let Some(chat) = conversation_chat(conv) else {
        return Vec::new();
    };
    let mut out: Vec<HistoryMessage> = Vec::new();
    for info in conv.messages.iter().filter_map(|m| m.message.as_option()) {
        let Some(msg) = info.message.as_option() else {
            continue;
        };
        let key = &info.key;
        let Some(id) = key.id.as_deref().filter(|i| !i.is_empty()) else {
            continue;
        };
        let media = inbound_media(msg);
        let text = msg.text_content().or_else(|| msg.get_caption());
        if text.is_none() && media.is_none() {
            continue;
        }
        let from_me = key.from_me.unwrap_or(false);
        let author = if chat.is_group() && !from_me {
            key.participant
                .as_deref()
                .or(info.participant.as_deref())
                .and_then(|p| Wid::parse(p).ok())
        } else {
            None
        };
        let kind = media.as_ref().map_or("chat", |(r, _)| r.kind.as_str());
        let mut m = Message::new(MessageParts {
            id,
            chat: &chat,
            own,
            author: author.as_ref(),
            from_me,
            body: text.unwrap_or_default(),
            kind,
            timestamp: i64::try_from(info.message_timestamp.unwrap_or(0)).unwrap_or(0),
            has_media: media.is_some(),
            has_quoted_msg: false,
            push_name: if from_me {
                ""
            } else {
                info.push_name.as_deref().unwrap_or_default()
            },
        });
        if let Some((r, _)) = &media {
            m = m.with_media(&r.mimetype, r.filename.as_deref(), r.size);
        }
        out.push((m, media.map(|(r, _)| r)));
    }
    // Newest first, keep `limit`, store oldest first.
    out.sort_by_key(|m| std::cmp::Reverse(m.0.timestamp));
    out.truncate(limit);
    out.reverse();
    out
}

/// What one history chunk gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkReport {
    pub conversations: usize,
    pub stored: usize,
    pub skipped_chats: usize,
}

/// Conversations handed from the decoder to the store at a time.
const CHANNEL_DEPTH: usize = 4;

impl Session {
    /// Stores one history-sync chunk as the policy and limits allow. `budget` counts what this
    /// linking may still store.
    pub async fn store_history(
        &self,
        own: Option<Wid>,
        compressed: bytes::Bytes,
        decompressed_size: usize,
        budget: Arc<AtomicUsize>,
    ) -> ChunkReport {
        let mut report = ChunkReport::default();
        if self.settings.storage_policy == StoragePolicy::None {
            return report;
        }
        // One chunk at a time bounds what is decoded at once to one conversation.
        let _one_chunk = self.history_gate.lock().await;
        let per_chat = self.settings.history.per_chat;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<HistoryMessage>>(CHANNEL_DEPTH);
        let decoder_budget = budget.clone();
        let decoder = tokio::task::spawn_blocking(move || {
            let mut stream =
                wacore::history_sync::HistorySyncStream::new(&compressed, decompressed_size as u64);
            let mut conversations = 0usize;
            loop {
                if decoder_budget.load(Ordering::Relaxed) == 0 {
                    break;
                }
                match stream.next_conversation() {
                    Ok(Some(conv)) => {
                        conversations += 1;
                        let msgs = conversation_messages(&conv, own.as_ref(), per_chat);
                        drop(conv);
                        if !msgs.is_empty() && tx.blocking_send(msgs).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "history sync chunk unreadable");
                        break;
                    }
                }
            }
            conversations
        });
        while let Some(msgs) = rx.recv().await {
            let Some(first) = msgs.first() else { continue };
            if self.settings.storage_policy == StoragePolicy::ContactsOnly {
                let who = first
                    .0
                    .author
                    .as_deref()
                    .unwrap_or(first.0.chat_id.as_str());
                let known = match Wid::parse(who).ok().as_ref().and_then(Wid::phone_digits) {
                    Some(p) => self.store.is_contact(p).await.unwrap_or(false),
                    None => false,
                };
                if !known {
                    report.skipped_chats += 1;
                    continue;
                }
            }
            for (m, media) in msgs {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                if let Some(r) = &media
                    && let Err(e) = self.keep_media_ref(m.key(), r).await
                {
                    tracing::warn!(error = %e, "history: media reference not stored");
                }
                match self.store.put_history(&m).await {
                    Ok(crate::store::StoreOutcome::New) => report.stored += 1,
                    Ok(crate::store::StoreOutcome::Duplicate) => {}
                    Err(e) => tracing::warn!(error = %e, "history: message not stored"),
                }
            }
        }
        report.conversations = decoder.await.unwrap_or(0);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buffa::MessageField;

    fn info(id: &str, from_me: bool, ts: u64, text: &str) -> wa::HistorySyncMsg {
        wa::HistorySyncMsg {
            message: MessageField::some(wa::WebMessageInfo {
                key: MessageField::some(wa::MessageKey {
                    remote_jid: Some("41790000001@s.whatsapp.net".into()),
                    from_me: Some(from_me),
                    id: Some(id.into()),
                    ..Default::default()
                }),
                message: MessageField::some(wa::Message {
                    conversation: Some(text.into()),
                    ..Default::default()
                }),
                message_timestamp: Some(ts),
                push_name: Some("Ana".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn conv(id: &str, msgs: Vec<wa::HistorySyncMsg>) -> wa::Conversation {
        wa::Conversation {
            id: id.into(),
            messages: msgs,
            ..Default::default()
        }
    }

    #[test]
    fn a_conversation_keeps_its_newest_messages_oldest_first() {
        let me = Wid::parse("41790000009@c.us").unwrap();
        let c = conv(
            "41790000001@s.whatsapp.net",
            vec![
                info("C", false, 30, "third"),
                info("A", true, 10, "first"),
                info("B", false, 20, "second"),
            ],
        );
        let all = conversation_messages(&c, Some(&me), 10);
        let bodies: Vec<&str> = all.iter().map(|(m, _)| m.body.as_str()).collect();
        assert_eq!(bodies, ["first", "second", "third"]);
        assert_eq!(all[0].0.from, "41790000009@c.us", "own message");
        assert_eq!(all[1].0.from, "41790000001@c.us");
        assert_eq!(all[1].0.push_name, "Ana");
        assert_eq!(all[0].0.chat_id, "41790000001@c.us");
        let newest = conversation_messages(&c, Some(&me), 2);
        let bodies: Vec<&str> = newest.iter().map(|(m, _)| m.body.as_str()).collect();
        assert_eq!(bodies, ["second", "third"]);
    }

    #[test]
    fn protocol_messages_are_no_history_and_lid_chats_use_the_phone() {
        let mut empty = info("P", false, 5, "");
        if let Some(m) = empty.message.as_option_mut() {
            m.message = MessageField::some(wa::Message::default());
        }
        let c = conv("41790000001@s.whatsapp.net", vec![empty]);
        assert!(conversation_messages(&c, None, 10).is_empty());
        let mut lid = conv("123456789012345@lid", vec![info("X", false, 1, "hi")]);
        lid.pn_jid = Some("41790000002@s.whatsapp.net".into());
        assert_eq!(
            conversation_chat(&lid).map(|w| w.serialized).as_deref(),
            Some("41790000002@c.us")
        );
        assert!(conversation_chat(&conv("not a jid", vec![])).is_none());
    }
}
