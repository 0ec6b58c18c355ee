//! Redis key layout. Every key of one user starts with `wasp:{<user hash>}:` — the braces are a
//! Redis Cluster hash tag, so one user's keys live in one slot and can be read in one pipeline —
//! which also makes "purge everything of this user" one prefix scan.

use crate::ids::user_hash;

/// Global pub/sub channel on which session pods announce "my state changed"; the payload is
/// `namespace/name` of the WhatsAppSession, so the operator reconciles just that object.
pub const STATE_CHANGED_CHANNEL: &str = "wasp:session-state-changed";

/// The fleet-wide login admission bucket (a GCRA "theoretical arrival time", milliseconds):
/// every session pod reserves a slot in it before a paired device logs in to WhatsApp, so a
/// restart storm reaches WhatsApp at a bounded rate. Touched only by the session pod's
/// admission Lua script (`EVAL`/`EVALSHA`); the one key a pod's Redis user shares.
pub const ADMISSION: &str = "wasp:admission";

/// Hash with the operator's stale-session cleanup statistics (seed 000's `/api/admin/cleanup-stats`).
pub const CLEANUP_STATS: &str = "wasp:cleanup-stats";

/// The key names of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeys {
    prefix: String,
}

impl UserKeys {
    pub fn for_user(user_id: &str) -> Self {
        Self::for_hash(&user_hash(user_id))
    }

    pub fn for_hash(hash: &str) -> Self {
        Self {
            prefix: format!("wasp:{{{hash}}}:"),
        }
    }

    /// Prefix shared by every key of this user.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `SCAN MATCH` pattern for every key of this user (the braces are escaped for glob).
    pub fn scan_pattern(&self) -> String {
        let escaped = self.prefix.replace('{', "\\{").replace('}', "\\}");
        format!("{escaped}*")
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// JSON [`crate::SessionState`] written by the session pod.
    pub fn state(&self) -> String {
        self.key("state")
    }

    /// The user's durable event stream (capped, replayable by id).
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// Low-latency pub/sub channel mirroring the event stream.
    pub fn events_channel(&self) -> String {
        self.key("events:live")
    }

    /// Pub/sub channel on which a consumer that just subscribed to [`Self::events_channel`] asks
    /// the session pod to publish the QR (or pairing) code it is showing again: codes are never
    /// in the durable stream, so a late consumer would otherwise wait for the next rotation.
    pub fn codes_wanted_channel(&self) -> String {
        self.key("events:codes-wanted")
    }

    /// Prefix of the encrypted auth-state entries of the WhatsApp client.
    pub fn auth_prefix(&self) -> String {
        self.key("auth:")
    }

    /// Set of the auth tables written (suffixes of [`Self::auth_prefix`]): the pod finds its
    /// per-group tables and purges its auth state from it, because its Redis user may not SCAN
    /// (key names would show other users' chat ids). Under the auth prefix itself, so a purge
    /// by prefix takes it too.
    pub fn auth_tables(&self) -> String {
        self.key("auth:#tables")
    }

    /// Marker: [`Self::auth_tables`] lists every table, those written before it existed too
    /// (`purge::index_auth_tables`).
    pub fn auth_indexed(&self) -> String {
        self.key("auth:#indexed")
    }

    /// The single-socket lease (value: holder and fencing token).
    pub fn lease(&self) -> String {
        self.key("lease")
    }

    /// `SCAN MATCH` pattern for the auth-state entries only (purged on logout).
    pub fn auth_scan_pattern(&self) -> String {
        format!(
            "{}*",
            self.auth_prefix().replace('{', "\\{").replace('}', "\\}")
        )
    }

    /// Counter issuing the lease's fencing tokens (never deleted with the lease).
    pub fn lease_fence(&self) -> String {
        self.key("lease:fence")
    }

    /// Sorted set of chat ids (`…@c.us`, `…@g.us`) scored by their newest message's score.
    pub fn chats(&self) -> String {
        self.key("chats")
    }

    /// Sorted set of a chat's message keys (`id._serialized`), by time then arrival.
    pub fn messages(&self, chat: &str) -> String {
        self.key(&format!("msgs:{chat}"))
    }

    /// Hash of a chat's messages: message key → the message model's JSON.
    pub fn message_data(&self, chat: &str) -> String {
        self.key(&format!("msgdata:{chat}"))
    }

    /// Hash of one chat's summary: `lastKey`, `lastScore`, `unread`, `pushName`, `seq`.
    pub fn chat(&self, chat: &str) -> String {
        self.key(&format!("chat:{chat}"))
    }

    /// Hash of own messages' acks (message key → highest ack seen).
    pub fn acks(&self) -> String {
        self.key("acks")
    }

    /// Sorted set of seen message keys (`id._serialized`, scored by unix ms) for deduplication.
    pub fn dedup(&self) -> String {
        self.key("dedup")
    }

    /// An idempotent send's record (`record` = hex SHA-256 of the caller's key): pending, then
    /// the first answer for 24 h.
    pub fn idempotency(&self, record: &str) -> String {
        self.key(&format!("idem:{record}"))
    }

    /// Hash phone (digits) → JSON contact: the seed-000 whitelist.
    pub fn contacts(&self) -> String {
        self.key("contacts")
    }

    /// Capped list of session log lines (JSON), newest first.
    pub fn logs(&self) -> String {
        self.key("logs")
    }

    /// Hash of counters (e.g. messages dropped by the contacts-only policy).
    pub fn stats(&self) -> String {
        self.key("stats")
    }

    /// Hash of the user's webhook endpoints (endpoint id → JSON, the secret sealed).
    pub fn webhooks(&self) -> String {
        self.key("wh:endpoints")
    }

    /// Hash of one endpoint's delivery state for this user: `cursor` (the last event handled,
    /// `<stream id>/<part>`), last delivery and error, failing since.
    pub fn webhook_state(&self, endpoint: &str) -> String {
        self.key(&format!("wh:state:{endpoint}"))
    }

    /// The lease of the API replica delivering to one endpoint for this user (value: replica).
    pub fn webhook_lease(&self, endpoint: &str) -> String {
        self.key(&format!("wh:lease:{endpoint}"))
    }

    /// Capped list of events given up on (JSON dead letters), newest first.
    pub fn webhook_dead(&self) -> String {
        self.key("wh:dead")
    }

    /// List of dead letters an admin asked to deliver again, for one endpoint.
    pub fn webhook_replay(&self, endpoint: &str) -> String {
        self.key(&format!("wh:replay:{endpoint}"))
    }
}

/// Set of the user ids that have webhook endpoints of their own (the dispatcher's index).
pub const WEBHOOK_USERS: &str = "wasp:webhooks:users";
/// Sorted set of the live webhook dispatchers (API replicas), scored by their last heartbeat (ms).
pub const WEBHOOK_REPLICAS: &str = "wasp:webhooks:replicas";
/// Counter bumped on every webhook configuration change: dispatchers reload when it moves.
pub const WEBHOOK_VERSION: &str = "wasp:webhooks:version";
/// Prefix of the keys holding when each global webhook was first configured (unix ms).
pub const WEBHOOK_GLOBAL_SINCE: &str = "wasp:webhooks:global-since:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tagged_prefix() {
        let k = UserKeys::for_user("doctor@clinic.com");
        let h = user_hash("doctor@clinic.com");
        assert_eq!(k.state(), format!("wasp:{{{h}}}:state"));
        for key in [
            k.state(),
            k.events(),
            k.events_channel(),
            k.auth_prefix(),
            k.lease(),
            k.lease_fence(),
            k.auth_tables(),
            k.auth_indexed(),
            k.chats(),
            k.messages("x@c.us"),
            k.message_data("x@c.us"),
            k.chat("x@c.us"),
            k.acks(),
            k.dedup(),
            k.contacts(),
            k.logs(),
            k.stats(),
            k.webhooks(),
            k.webhook_state("api"),
            k.webhook_lease("api"),
            k.webhook_dead(),
            k.webhook_replay("api"),
        ] {
            assert!(key.starts_with(k.prefix()));
        }
        assert_eq!(k.scan_pattern(), format!("wasp:\\{{{h}\\}}:*"));
        assert_eq!(k.auth_scan_pattern(), format!("wasp:\\{{{h}\\}}:auth:*"));
    }

    #[test]
    fn different_users_never_share_a_prefix() {
        let a = UserKeys::for_user("a");
        let b = UserKeys::for_user("b");
        assert!(!a.prefix().starts_with(b.prefix()) && !b.prefix().starts_with(a.prefix()));
    }
}
