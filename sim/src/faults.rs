//! Faults injected on demand through the control API.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A one-shot fault aimed at a device's live socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketFault {
    /// Close the WebSocket without a word (network loss).
    Drop,
    /// `<stream:error><conflict type="replaced"/></stream:error>`: another client took over.
    Replaced,
    /// `<stream:error code="515"/>`: WhatsApp asks the client to reconnect.
    RestartRequired,
    /// The phone unlinked the device: `<stream:error code="401"><conflict type="device_removed"/>`
    /// and the device's credentials stop working.
    DeviceRemoved,
}

/// A login refusal as WhatsApp sends it: `<failure reason code? expire?>` (402 with a code and
/// an expiry in seconds is a temporary ban, 405 an outdated client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFailure {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<u64>,
}

/// Server-wide faults with a duration.
#[derive(Debug, Default)]
pub struct GlobalFaults {
    refuse_until: Option<Instant>,
    login_failure: Option<LoginFailure>,
    frame_delay: Duration,
    ignore_acks: bool,
}

impl GlobalFaults {
    pub fn refuse_connections_for(&mut self, d: Duration) {
        self.refuse_until = Some(Instant::now() + d);
    }

    pub fn refusing(&self) -> bool {
        self.refuse_until.is_some_and(|t| Instant::now() < t)
    }

    pub fn set_frame_delay(&mut self, d: Duration) {
        self.frame_delay = d;
    }

    pub fn frame_delay(&self) -> Duration {
        self.frame_delay
    }

    /// Every login is refused with `failure` until it is cleared (`None`).
    pub fn set_login_failure(&mut self, failure: Option<LoginFailure>) {
        self.login_failure = failure;
    }

    pub fn login_failure(&self) -> Option<LoginFailure> {
        self.login_failure.clone()
    }

    /// Receipts and acks from devices are lost on the way (the stanzas stay queued).
    pub fn set_ignore_acks(&mut self, on: bool) {
        self.ignore_acks = on;
    }

    pub fn ignoring_acks(&self) -> bool {
        self.ignore_acks
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refusal_expires() {
        let mut f = GlobalFaults::default();
        assert!(!f.refusing());
        f.refuse_connections_for(Duration::from_secs(60));
        assert!(f.refusing());
        f.refuse_connections_for(Duration::ZERO);
        assert!(!f.refusing());
    }
}
