//! Idempotent sends: the caller's `Idempotency-Key` claims a record in the user's Redis
//! namespace before anything is sent, and the first answer is kept under it for 24 h, so a
//! retry — also one after a kill -9 of this process — gets the same answer and sends nothing.
//!
//! A send runs under a message id derived from the key: if this process dies between the send
//! and keeping the answer, the retry (after the claim expires) sends again under the same id,
//! which WhatsApp and its clients treat as the same message.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::session::Session;
use crate::store::StoreError;

/// How long a claim stands without an answer: past it the sender is presumed gone.
pub const PENDING_SECS: u64 = 60;
/// How long a first answer is kept.
pub const KEEP_SECS: u64 = 24 * 3600;

/// The record a key claims: hex SHA-256 of the user and the key (pure; the key itself may be
/// anything the caller chose and is never stored).
pub fn record_of(user_hash: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(user_hash.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    data_encoding::HEXLOWER.encode(&h.finalize())
}

/// The message id a key's send goes under: a WhatsApp Web style id (`3EB0` and 16 hex digits)
/// (pure).
pub fn message_id_of(record: &str) -> String {
    format!("3EB0{}", record[..16].to_ascii_uppercase())
}

/// What an existing record means for a new request with its key (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The first answer.
    Answer(String),
    /// This process is sending under the key right now.
    InProgress,
    /// Another process claimed it and is gone (a restart): send again.
    Abandoned,
}

pub fn read_record(record: &str, owner: &str) -> Seen {
    match record.strip_prefix("pending:") {
        Some(o) if o == owner => Seen::InProgress,
        Some(_) => Seen::Abandoned,
        None => Seen::Answer(record.to_owned()),
    }
}

/// Why an idempotent send did not answer.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError<E> {
    #[error("a request with this Idempotency-Key is still in progress")]
    InProgress,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the first answer under this key is unreadable: {0}")]
    Unreadable(serde_json::Error),
    #[error(transparent)]
    Inner(E),
}

impl Session {
    /// Runs `send` once per idempotency key (no key: every time). `send` gets the message id
    /// to send under.
    pub async fn idempotent<T, E, F, Fut>(
        &self,
        key: Option<&str>,
        send: F,
    ) -> Result<T, IdempotencyError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(key) = key else {
            return send(None).await.map_err(IdempotencyError::Inner);
        };
        let record = record_of(&wasp_common::user_hash(&self.settings.user_id), key);
        let owner = self.settings.holder.as_str();
        if let Some(existing) = self
            .store
            .claim_idempotency(&record, owner, PENDING_SECS)
            .await?
        {
            match read_record(&existing, owner) {
                Seen::Answer(a) => {
                    return serde_json::from_str(&a).map_err(IdempotencyError::Unreadable);
                }
                Seen::InProgress => return Err(IdempotencyError::InProgress),
                Seen::Abandoned => {
                    tracing::info!("resuming a send whose process is gone");
                    self.store
                        .take_over_idempotency(&record, owner, PENDING_SECS)
                        .await?;
                }
            }
        }
        match send(Some(message_id_of(&record))).await {
            Ok(answer) => {
                let json = serde_json::to_string(&answer).map_err(IdempotencyError::Unreadable)?;
                self.store
                    .finish_idempotency(&record, &json, KEEP_SECS)
                    .await?;
                Ok(answer)
            }
            Err(e) => {
                // Nothing was sent (or WhatsApp refused it): the caller may retry the key.
                if let Err(re) = self.store.release_idempotency(&record).await {
                    tracing::warn!(error = %re, "releasing an idempotency claim");
                }
                Err(IdempotencyError::Inner(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_per_user_and_key_and_ids_look_like_whatsapp_webs() {
        let a = record_of("u1", "order-17");
        assert_eq!(a, record_of("u1", "order-17"));
        assert_ne!(a, record_of("u2", "order-17"));
        assert_ne!(a, record_of("u1", "order-18"));
        let id = message_id_of(&a);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("3EB0"));
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        );
    }

    #[test]
    fn a_record_reads_as_answer_in_progress_or_abandoned() {
        assert_eq!(read_record("pending:me", "me"), Seen::InProgress);
        assert_eq!(read_record("pending:gone", "me"), Seen::Abandoned);
        assert_eq!(
            read_record("{\"a\":1}", "me"),
            Seen::Answer("{\"a\":1}".into())
        );
    }
}
