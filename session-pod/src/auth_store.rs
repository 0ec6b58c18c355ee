//! The client's auth state (`whatsapp-rust`'s `Backend` traits) in Redis, encrypted.
//!
//! Layout: one Redis hash per table, `wasp:{<hash>}:auth:<table>`, field = the row's id (JIDs,
//! prekey ids, message ids: addresses, never key material), value = [`AuthCipher::seal`] of the
//! row with `<redis key> NUL <field>` as associated data — a value copied to another row, table
//! or user fails to open. Batches are one pipelined `HSET`. Everything of the user's auth state
//! is under `UserKeys::auth_prefix`; every table written is listed in `UserKeys::auth_tables`
//! (added in the same pipeline as the write), which is how the pod finds its per-group tables
//! and purges on logout: its Redis user may not SCAN.
//!
//! Read-modify-write operations (token merges, msg-secret merges, the LID ⇄ phone index) run
//! under one in-process lock; the single-socket lease guarantees one process per user.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::Device;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore, TcTokenEntry,
    merge_msg_secret_expiry, merge_msg_secret_message_ts,
};
use wasp_common::crypto::AuthCipher;
use wasp_common::keys::UserKeys;

/// Tables (suffixes of the auth prefix).
mod t {
    pub const IDENTITY: &str = "identity";
    pub const SESSION: &str = "session";
    pub const PREKEY: &str = "prekey";
    pub const SIGNED_PREKEY: &str = "signed-prekey";
    pub const SENDER_KEY: &str = "sender-key";
    pub const SYNC_KEY: &str = "sync-key";
    pub const META: &str = "meta";
    pub const VERSION: &str = "app-version";
    pub const MUTATION_MAC: &str = "mutation-mac:";
    pub const SK_DEVICES: &str = "sk-devices:";
    pub const LID: &str = "lid";
    pub const PN: &str = "pn";
    pub const BASE_KEY: &str = "base-key";
    pub const DEVICES: &str = "devices";
    pub const GROUP_META: &str = "group-meta";
    pub const TC_TOKEN: &str = "tc-token";
    pub const SENT: &str = "sent";
    pub const PENDING: &str = "pending-inbound";
    pub const MSG_SECRET: &str = "msg-secret";
    pub const DEVICE: &str = "device";
    /// wasp's own: what downloading a message's media needs (media key, path, hashes), by
    /// message key. Here because it is key material: sealed, re-sealed on rotation, purged
    /// on logout with the rest.
    pub const MEDIA: &str = "media";
}

/// The most value bytes one write request carries. A Redis connection's write buffer grows to
/// its largest request and keeps that size for the pod's life: the pairing's ~800 prekeys in
/// one `HSET` left 107 KiB in every idle pod's heap (docs/benchmarks.md).
const MAX_WRITE_BYTES: usize = 8 * 1024;

const LATEST_SYNC_KEY: &str = "latest-sync-key-id";
const DEVICE_FIELD: &str = "device";

fn db_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// A write refused because an earlier write of this client run failed ([`RedisAuthStore::fault`]).
#[derive(Debug, thiserror::Error)]
#[error("auth store fenced after a failed write: the client must reconnect")]
pub struct Fenced;

fn ser_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Serialization(Box::new(e))
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn join(parts: &[&str]) -> String {
    parts.join("|")
}

/// `i64 (big endian) ‖ payload`.
fn with_ts(ts: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn split_ts(v: &[u8]) -> Result<(i64, &[u8])> {
    if v.len() < 8 {
        return Err(StoreError::Validation("timestamped row too short".into()));
    }
    let (ts, rest) = v.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(ts);
    Ok((i64::from_be_bytes(a), rest))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MsgSecretRow {
    secret: Vec<u8>,
    expires_at: i64,
    message_ts: i64,
}

/// What [`RedisAuthStore::reseal_stale`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealReport {
    /// Rows already sealed with the current key.
    pub current: usize,
    /// Rows re-sealed with the current key.
    pub resealed: usize,
    /// Rows no configured key opens (left as they are).
    pub unreadable: usize,
}

/// The encrypted Redis `Backend` of one user.
#[derive(Clone)]
pub struct RedisAuthStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    cipher: AuthCipher,
    prefix: String,
    /// `UserKeys::auth_tables`.
    tables: String,
    rmw: Mutex<()>,
    /// `true` while writes are accepted. Writes hold the read side; `close` takes the write
    /// side, so once it returns no write is in flight and none will start: a purge after it
    /// cannot be undone by a task the client library left running (seen: its device-list
    /// record written after a logout purge).
    open: tokio::sync::RwLock<bool>,
    /// Set by [`RedisAuthStore::fault`]; cleared by [`RedisAuthStore::reopen`].
    faulted: tokio::sync::watch::Sender<bool>,
}

impl RedisAuthStore {
    pub fn new(conn: ConnectionManager, cipher: AuthCipher, user_id: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                cipher,
                prefix: UserKeys::for_user(user_id).auth_prefix(),
                tables: UserKeys::for_user(user_id).auth_tables(),
                rmw: Mutex::new(()),
                open: tokio::sync::RwLock::new(true),
                faulted: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Stops accepting writes, waiting for those in flight (before purging on logout).
    pub async fn close(&self) {
        *self.inner.open.write().await = false;
    }

    /// Accepts writes again (a new client run, e.g. pairing after a logout, or a reconnect
    /// after [`RedisAuthStore::fault`]).
    pub async fn reopen(&self) {
        *self.inner.open.write().await = true;
        self.inner.faulted.send_replace(false);
    }

    /// Fences the store for the rest of this client run: every later write fails (with
    /// [`Fenced`]) without reaching Redis, until [`RedisAuthStore::reopen`]. Called on the first
    /// failed write (Redis unreachable, e.g. restarting) and when the inbound commit failed.
    ///
    /// Why: the client library then leaves the message unacknowledged, but its Signal session
    /// in memory has already moved past it, and WhatsApp redelivers only on a new connection.
    /// Once Redis is back, the next message's Signal flush would persist that advance, and
    /// the redelivered copy could no longer be decrypted: lost (seen in the chart's Redis
    /// restart test). Fenced, nothing of this run persists any more; the supervisor drops the
    /// socket ([`RedisAuthStore::faulted`]) and reconnects with a new client that reads the
    /// state as last committed, so the redelivered message decrypts and is stored once.
    pub fn fault(&self) {
        if !self.inner.faulted.send_replace(true) {
            tracing::warn!("an auth-state write failed: fencing this client run");
        }
    }

    /// Resolves once [`RedisAuthStore::fault`] fenced the current client run.
    pub async fn faulted(&self) {
        let mut rx = self.inner.faulted.subscribe();
        let _ = rx.wait_for(|f| *f).await;
    }

    /// `Err` once fenced.
    fn writable(&self) -> Result<()> {
        if *self.inner.faulted.borrow() {
            return Err(db_err(Fenced));
        }
        Ok(())
    }

    /// A write's Redis error: fences the run (see [`RedisAuthStore::fault`]).
    fn write_err(&self, e: redis::RedisError) -> StoreError {
        self.fault();
        db_err(e)
    }

    fn key(&self, table: &str) -> String {
        format!("{}{table}", self.inner.prefix)
    }

    fn aad(key: &str, field: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(key.len() + 1 + field.len());
        a.extend_from_slice(key.as_bytes());
        a.push(0);
        a.extend_from_slice(field.as_bytes());
        a
    }

    fn seal(&self, key: &str, field: &str, plain: &[u8]) -> Result<Vec<u8>> {
        self.inner
            .cipher
            .seal(&Self::aad(key, field), plain)
            .map_err(ser_err)
    }

    fn open(&self, key: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.inner
            .cipher
            .open(&Self::aad(key, field), sealed)
            .map_err(ser_err)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    async fn get(&self, table: &str, field: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(table);
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&key)
            .arg(field)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)?;
        raw.map(|r| self.open(&key, field, &r)).transpose()
    }

    async fn get_many(&self, table: &str, fields: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(table);
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(fields)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)?;
        raw.into_iter()
            .zip(fields)
            .map(|(r, f)| r.map(|r| self.open(&key, f, &r)).transpose())
            .collect()
    }

    async fn get_all(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let key = self.key(table);
        let raw: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)?;
        raw.into_iter()
            .map(|(f, v)| {
                let plain = self.open(&key, &f, &v)?;
                Ok((f, plain))
            })
            .collect()
    }

    async fn fields(&self, table: &str) -> Result<Vec<String>> {
        redis::cmd("HKEYS")
            .arg(self.key(table))
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)
    }

    async fn put(&self, table: &str, field: &str, plain: &[u8]) -> Result<()> {
        self.put_many(table, std::iter::once((field.to_owned(), plain.to_vec())))
            .await
    }

    /// `HSET key f1 v1 f2 v2 …`, in requests of at most [`MAX_WRITE_BYTES`] of values each,
    /// sent one after another. Each request is atomic, the batch is not; the library's batches
    /// are independent rows (prekeys, sessions per address), and a failed request fences the
    /// store as any failed write does.
    async fn put_many(
        &self,
        table: &str,
        rows: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<()> {
        let open = self.inner.open.read().await;
        if !*open {
            return Ok(());
        }
        self.writable()?;
        let key = self.key(table);
        let mut requests: Vec<(redis::Cmd, usize)> = Vec::new();
        for (field, plain) in rows {
            let sealed = self.seal(&key, &field, &plain)?;
            let size = field.len() + sealed.len();
            match requests.last_mut() {
                Some((hset, bytes)) if *bytes < MAX_WRITE_BYTES => {
                    hset.arg(field).arg(sealed);
                    *bytes += size;
                }
                _ => {
                    let mut hset = redis::cmd("HSET");
                    hset.arg(&key).arg(field).arg(sealed);
                    requests.push((hset, size));
                }
            }
        }
        for (i, (hset, _)) in requests.into_iter().enumerate() {
            let mut pipe = redis::pipe();
            if i == 0 {
                // The table's name goes into the index with its first row (and again with each
                // write: SADD of a member already there is a no-op, cheaper than asking first).
                pipe.cmd("SADD").arg(&self.inner.tables).arg(table).ignore();
            }
            pipe.add_command(hset).ignore();
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    async fn del(&self, table: &str, fields: &[String]) -> Result<u32> {
        if fields.is_empty() {
            return Ok(0);
        }
        self.writable()?;
        redis::cmd("HDEL")
            .arg(self.key(table))
            .arg(fields)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.write_err(e))
    }

    async fn del_key(&self, table: &str) -> Result<()> {
        self.writable()?;
        redis::pipe()
            .cmd("UNLINK")
            .arg(self.key(table))
            .ignore()
            .cmd("SREM")
            .arg(&self.inner.tables)
            .arg(table)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.write_err(e))
    }

    async fn get_json<T: DeserializeOwned>(&self, table: &str, field: &str) -> Result<Option<T>> {
        self.get(table, field)
            .await?
            .map(|v| serde_json::from_slice(&v).map_err(ser_err))
            .transpose()
    }

    fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(v).map_err(ser_err)
    }

    /// Records, sealed, what downloading the media of message `message_key` needs.
    pub async fn put_media_ref(&self, message_key: &str, plain: &[u8]) -> Result<()> {
        self.put(t::MEDIA, message_key, plain).await
    }

    /// What [`RedisAuthStore::put_media_ref`] recorded for `message_key`.
    pub async fn media_ref(&self, message_key: &str) -> Result<Option<Vec<u8>>> {
        self.get(t::MEDIA, message_key).await
    }

    /// Master-key rotation: re-seals, with the current key, every row a previous key (or the
    /// current one under the legacy id) sealed. Each row is replaced only if it still holds
    /// the value read (compare-and-set in Lua), so a concurrent write is never undone. Rows
    /// no configured key opens are left as they are and counted. Call it under the lease,
    /// before a client runs; a no-op without previous keys.
    pub async fn reseal_stale(&self) -> Result<ResealReport> {
        let mut report = ResealReport::default();
        if !self.inner.cipher.has_previous() {
            return Ok(report);
        }
        let cas = redis::Script::new(
            "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
               redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end return 0",
        );
        let mut conn = self.conn();
        for key in self.table_keys("").await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, rows): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(db_err)?;
                for (field, sealed) in rows {
                    let aad = Self::aad(&key, &field);
                    match self.inner.cipher.open_checked(&aad, &sealed) {
                        Ok((_, wasp_common::crypto::SealedWith::Current)) => report.current += 1,
                        Ok((plain, wasp_common::crypto::SealedWith::Stale)) => {
                            let fresh = self.inner.cipher.seal(&aad, &plain).map_err(ser_err)?;
                            let replaced: i32 = cas
                                .key(&key)
                                .arg(&field)
                                .arg(&sealed)
                                .arg(fresh)
                                .invoke_async(&mut conn)
                                .await
                                .map_err(db_err)?;
                            if replaced == 1 {
                                report.resealed += 1;
                            }
                        }
                        Err(e) => {
                            report.unreadable += 1;
                            tracing::warn!(table = %key.trim_start_matches(&self.inner.prefix), error = %e, "auth row opens with no configured master key");
                        }
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(report)
    }

    /// Keys of the tables whose name starts with `table_prefix` (per-group tables), from the
    /// table index.
    async fn table_keys(&self, table_prefix: &str) -> Result<Vec<String>> {
        let tables: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&self.inner.tables)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)?;
        Ok(tables
            .iter()
            .filter(|t| t.starts_with(table_prefix))
            .map(|t| self.key(t))
            .collect())
    }
}

fn arr32(v: &[u8]) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| StoreError::Validation(format!("expected 32 bytes, got {}", v.len())))
}

#[async_trait]
impl SignalStore for RedisAuthStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put(t::IDENTITY, address, &key).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_many(
            t::IDENTITY,
            identities.iter().map(|(a, k)| (a.to_string(), k.to_vec())),
        )
        .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.get(t::IDENTITY, address)
            .await?
            .map(|v| arr32(&v))
            .transpose()
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.del(t::IDENTITY, &[address.to_owned()]).await.map(drop)
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.get(t::SESSION, address).await?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(t::SESSION, address, session).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_many(
            t::SESSION,
            sessions.iter().map(|(a, s)| (a.to_string(), s.to_vec())),
        )
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.del(t::SESSION, &[address.to_owned()]).await.map(drop)
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        redis::cmd("HEXISTS")
            .arg(self.key(t::SESSION))
            .arg(address)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let matches = |addr: &str| {
            addr.strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
        };
        Ok(self.fields(t::SESSION).await?.iter().any(|f| matches(f))
            || self.fields(t::IDENTITY).await?.iter().any(|f| matches(f)))
    }

    async fn store_prekey(&self, id: u32, record: &[u8], _uploaded: bool) -> Result<()> {
        self.put(t::PREKEY, &id.to_string(), record).await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], _uploaded: bool) -> Result<()> {
        self.put_many(
            t::PREKEY,
            keys.iter().map(|(id, r)| (id.to_string(), r.to_vec())),
        )
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self.get(t::PREKEY, &id.to_string()).await?.map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let fields: Vec<String> = ids.iter().map(u32::to_string).collect();
        let rows = self.get_many(t::PREKEY, &fields).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, r)| r.map(|r| (*id, Bytes::from(r))))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, _ids: &[u32]) -> Result<()> {
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.del(t::PREKEY, &[id.to_string()]).await.map(drop)
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        Ok(self
            .fields(t::PREKEY)
            .await?
            .iter()
            .filter_map(|f| f.parse::<u32>().ok())
            .max()
            .unwrap_or(0))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put(t::SIGNED_PREKEY, &id.to_string(), record).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get(t::SIGNED_PREKEY, &id.to_string()).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        Ok(self
            .get_all(t::SIGNED_PREKEY)
            .await?
            .into_iter()
            .filter_map(|(f, v)| f.parse().ok().map(|id| (id, v)))
            .collect())
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.del(t::SIGNED_PREKEY, &[id.to_string()])
            .await
            .map(drop)
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(t::SENDER_KEY, address, record).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_many(
            t::SENDER_KEY,
            sender_keys.iter().map(|(a, r)| (a.to_string(), r.to_vec())),
        )
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get(t::SENDER_KEY, address).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.del(t::SENDER_KEY, &[address.to_owned()])
            .await
            .map(drop)
    }
}

#[async_trait]
impl AppSyncStore for RedisAuthStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.get_json(t::SYNC_KEY, &hex(key_id)).await
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.put(t::SYNC_KEY, &hex(key_id), &Self::json(&key)?)
            .await?;
        self.put(t::META, LATEST_SYNC_KEY, key_id).await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self
            .get_json::<HashState>(t::VERSION, name)
            .await?
            .unwrap_or_default())
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put(t::VERSION, name, &Self::json(&state)?).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.put_many(
            &format!("{}{name}", t::MUTATION_MAC),
            mutations
                .iter()
                .map(|m| (hex(&m.index_mac), m.value_mac.clone())),
        )
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(&format!("{}{name}", t::MUTATION_MAC), &hex(index_mac))
            .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let fields: Vec<String> = index_macs.iter().map(|m| hex(m)).collect();
        let rows = self
            .get_many(&format!("{}{name}", t::MUTATION_MAC), &fields)
            .await?;
        Ok(index_macs
            .iter()
            .zip(rows)
            .filter_map(|(m, r)| r.map(|r| (*m, r)))
            .collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let fields: Vec<String> = index_macs.iter().map(|m| hex(m)).collect();
        self.del(&format!("{}{name}", t::MUTATION_MAC), &fields)
            .await
            .map(drop)
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.del_key(&format!("{}{name}", t::MUTATION_MAC)).await
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.get(t::META, LATEST_SYNC_KEY).await
    }
}

#[async_trait]
impl ProtocolStore for RedisAuthStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .get_all(&format!("{}{group_jid}", t::SK_DEVICES))
            .await?
            .into_iter()
            .map(|(f, v)| (f, v.first() == Some(&1)))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.put_many(
            &format!("{}{group_jid}", t::SK_DEVICES),
            entries
                .iter()
                .map(|(d, has)| ((*d).to_owned(), vec![u8::from(*has)])),
        )
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.del_key(&format!("{}{group_jid}", t::SK_DEVICES)).await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = device_jids.iter().map(|d| (*d).to_owned()).collect();
        let mut conn = self.conn();
        for key in self.table_keys(t::SK_DEVICES).await? {
            self.writable()?;
            redis::cmd("HDEL")
                .arg(&key)
                .arg(&fields)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let keys = self.table_keys(t::SK_DEVICES).await?;
        if keys.is_empty() {
            return Ok(());
        }
        self.writable()?;
        let tables: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&self.inner.prefix))
            .collect();
        redis::pipe()
            .cmd("UNLINK")
            .arg(&keys)
            .ignore()
            .cmd("SREM")
            .arg(&self.inner.tables)
            .arg(tables)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.write_err(e))
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.get_json(t::LID, lid).await
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let Some(lid) = self.get(t::PN, phone).await? else {
            return Ok(None);
        };
        let lid = String::from_utf8(lid).map_err(ser_err)?;
        self.get_lid_mapping(&lid).await
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        let _g = self.inner.rmw.lock().await;
        if let Some(old) = self.get_lid_mapping(&entry.lid).await?
            && old.phone_number != entry.phone_number
        {
            self.del(t::PN, &[old.phone_number]).await?;
        }
        self.put(t::PN, &entry.phone_number, entry.lid.as_bytes())
            .await?;
        self.put(t::LID, &entry.lid, &Self::json(entry)?).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.get_all(t::LID)
            .await?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(ser_err))
            .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put(t::BASE_KEY, &join(&[address, message_id]), base_key)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get(t::BASE_KEY, &join(&[address, message_id]))
            .await?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.del(t::BASE_KEY, &[join(&[address, message_id])])
            .await
            .map(drop)
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.put(t::DEVICES, &record.user.clone(), &Self::json(&record)?)
            .await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let rows = records
            .iter()
            .map(|r| Ok((r.user.clone(), Self::json(r)?)))
            .collect::<Result<Vec<_>>>()?;
        self.put_many(t::DEVICES, rows).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get_json(t::DEVICES, user).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.del(t::DEVICES, &[user.to_owned()]).await.map(drop)
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get(t::GROUP_META, group_jid).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(t::GROUP_META, group_jid, blob).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.del(t::GROUP_META, &[group_jid.to_owned()])
            .await
            .map(drop)
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get_json(t::TC_TOKEN, jid).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.put(t::TC_TOKEN, jid, &Self::json(entry)?).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.del(t::TC_TOKEN, &[jid.to_owned()]).await.map(drop)
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.fields(t::TC_TOKEN).await
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _g = self.inner.rmw.lock().await;
        let mut dead = Vec::new();
        for (jid, v) in self.get_all(t::TC_TOKEN).await? {
            let e: TcTokenEntry = serde_json::from_slice(&v).map_err(ser_err)?;
            let token_live = !e.token.is_empty() && e.token_timestamp >= token_cutoff;
            let sender_live = e.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
            if !(token_live || sender_live) {
                dead.push(jid);
            }
        }
        self.del(t::TC_TOKEN, &dead).await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let _g = self.inner.rmw.lock().await;
        let entry = match self.get_tc_token(jid).await? {
            Some(e) => TcTokenEntry {
                sender_timestamp: Some(
                    e.sender_timestamp
                        .map_or(sender_timestamp, |x| x.max(sender_timestamp)),
                ),
                ..e
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.put_tc_token(jid, &entry).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let _g = self.inner.rmw.lock().await;
        let existing = self.get_tc_token(jid).await?;
        if let Some(e) = &existing
            && !e.token.is_empty()
            && token_timestamp < e.token_timestamp
        {
            return Ok(());
        }
        let sender_timestamp = existing.and_then(|e| e.sender_timestamp);
        self.put_tc_token(
            jid,
            &TcTokenEntry {
                token: token.to_vec(),
                token_timestamp,
                sender_timestamp,
            },
        )
        .await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put(
            t::SENT,
            &join(&[chat_jid, message_id]),
            &with_ts(now_secs(), payload),
        )
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let field = join(&[chat_jid, message_id]);
        let Some(v) = self.get(t::SENT, &field).await? else {
            return Ok(None);
        };
        // HDEL returning 1 makes the take atomic: a concurrent taker gets 0 and None.
        if self.del(t::SENT, &[field]).await? == 0 {
            return Ok(None);
        }
        Ok(Some(split_ts(&v)?.1.to_vec()))
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_older(t::SENT, cutoff_timestamp).await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.put(
            t::PENDING,
            &join(&[chat, sender, id]),
            &with_ts(now_secs(), message),
        )
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.get(t::PENDING, &join(&[chat, sender, id]))
            .await?
            .map(|v| split_ts(&v).map(|(_, m)| m.to_vec()))
            .transpose()
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.del(t::PENDING, &[join(&[chat, sender, id])])
            .await
            .map(drop)
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_older(t::PENDING, cutoff_timestamp).await
    }

    async fn store_pending_inbound_batch(
        &self,
        rows: &[wacore::store::traits::PendingInboundRow<'_>],
    ) -> Result<()> {
        let now = now_secs();
        self.put_many(
            t::PENDING,
            rows.iter()
                .map(|r| (join(&[r.chat, r.sender, r.id]), with_ts(now, r.message))),
        )
        .await
    }

    async fn delete_pending_inbound_batch(
        &self,
        keys: &[wacore::store::traits::PendingInboundKey<'_>],
    ) -> Result<()> {
        let fields: Vec<String> = keys
            .iter()
            .map(|k| join(&[k.chat, k.sender, k.id]))
            .collect();
        self.del(t::PENDING, &fields).await.map(drop)
    }
}

impl RedisAuthStore {
    async fn delete_older(&self, table: &str, cutoff: i64) -> Result<u32> {
        let old: Vec<String> = self
            .get_all(table)
            .await?
            .into_iter()
            .filter_map(|(f, v)| match split_ts(&v) {
                Ok((ts, _)) if ts < cutoff => Some(f),
                _ => None,
            })
            .collect();
        self.del(table, &old).await
    }
}

#[async_trait]
impl MsgSecretStore for RedisAuthStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let _g = self.inner.rmw.lock().await;
        let n = entries.len();
        let fields: Vec<String> = entries
            .iter()
            .map(|e| join(&[&e.chat, &e.sender, &e.msg_id]))
            .collect();
        let existing = self.get_many(t::MSG_SECRET, &fields).await?;
        let mut rows = Vec::with_capacity(n);
        for ((field, e), old) in fields.into_iter().zip(entries).zip(existing) {
            let old: Option<MsgSecretRow> = old
                .map(|o| serde_json::from_slice(&o).map_err(ser_err))
                .transpose()?;
            let row = MsgSecretRow {
                secret: e.secret.to_vec(),
                expires_at: old.as_ref().map_or(e.expires_at, |o| {
                    merge_msg_secret_expiry(o.expires_at, e.expires_at)
                }),
                message_ts: old.as_ref().map_or(e.message_ts, |o| {
                    merge_msg_secret_message_ts(o.message_ts, e.message_ts)
                }),
            };
            rows.push((field, Self::json(&row)?));
        }
        self.put_many(t::MSG_SECRET, rows).await?;
        Ok(n)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(s, _)| s))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        Ok(self
            .get_json::<MsgSecretRow>(t::MSG_SECRET, &join(&[chat, sender, msg_id]))
            .await?
            .map(|r| (r.secret, r.message_ts)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let _g = self.inner.rmw.lock().await;
        let mut dead = Vec::new();
        for (f, v) in self.get_all(t::MSG_SECRET).await? {
            let r: MsgSecretRow = serde_json::from_slice(&v).map_err(ser_err)?;
            if r.expires_at != 0 && r.expires_at <= cutoff_timestamp {
                dead.push(f);
            }
        }
        self.del(t::MSG_SECRET, &dead).await
    }
}

#[async_trait]
impl DeviceStore for RedisAuthStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.put(t::DEVICE, DEVICE_FIELD, &Self::json(device)?)
            .await
    }

    async fn load(&self) -> Result<Option<Device>> {
        self.get_json(t::DEVICE, DEVICE_FIELD).await
    }

    async fn exists(&self) -> Result<bool> {
        redis::cmd("HEXISTS")
            .arg(self.key(t::DEVICE))
            .arg(DEVICE_FIELD)
            .query_async(&mut self.conn())
            .await
            .map_err(db_err)
    }

    async fn create(&self) -> Result<i32> {
        if !self.exists().await? {
            self.save(&Device::new()).await?;
        }
        Ok(1)
    }

    async fn resource_report(&self) -> wacore::stats::StorageResourceReport {
        wacore::stats::StorageResourceReport {
            memory_bytes: Some(0),
            ..Default::default()
        }
    }
}
