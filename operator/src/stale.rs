//! Stale-session cleanup (seed 000): a session that waits for a scan, or sits disconnected, past
//! its stale timeout holds a pod for nothing; it is switched to desired-disconnected.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use wasp_crds::{DesiredState, Phase, WhatsAppSession};

/// The session's own timeout, else the operator's default.
pub fn stale_timeout(session: &WhatsAppSession, default: Duration) -> Duration {
    session
        .spec
        .stale_timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// Whether the session should be stopped now.
pub fn is_stale(session: &WhatsAppSession, now: Timestamp, default: Duration) -> bool {
    if session.spec.desired_state != DesiredState::Connected
        || session.metadata.deletion_timestamp.is_some()
    {
        return false;
    }
    let Some(status) = &session.status else {
        return false;
    };
    let (Some(phase), Some(since)) = (status.phase, &status.phase_since) else {
        return false;
    };
    if !matches!(phase, Phase::AwaitingScan | Phase::Disconnected) {
        return false;
    }
    let waited = now.duration_since(since.0);
    waited.is_positive() && waited.unsigned_abs() >= stale_timeout(session, default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use wasp_crds::WhatsAppSessionStatus;

    fn session(phase: Phase, since: i64) -> WhatsAppSession {
        let mut s = WhatsAppSession::for_user("u");
        s.status = Some(WhatsAppSessionStatus {
            phase: Some(phase),
            phase_since: Some(Time(Timestamp::from_second(since).unwrap())),
            ..Default::default()
        });
        s
    }

    fn now(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const THIRTY_MIN: Duration = Duration::from_secs(1800);

    #[test]
    fn waiting_for_a_scan_too_long_is_stale() {
        let s = session(Phase::AwaitingScan, 1000);
        assert!(!is_stale(&s, now(1000 + 1799), THIRTY_MIN));
        assert!(is_stale(&s, now(1000 + 1800), THIRTY_MIN));
        assert!(is_stale(
            &session(Phase::Disconnected, 0),
            now(1800),
            THIRTY_MIN
        ));
    }

    #[test]
    fn connected_stopped_deleting_or_unknown_sessions_are_never_stale() {
        assert!(!is_stale(
            &session(Phase::Connected, 0),
            now(1_000_000),
            THIRTY_MIN
        ));
        assert!(!is_stale(
            &session(Phase::Reconnecting, 0),
            now(1_000_000),
            THIRTY_MIN
        ));
        let mut stopped = session(Phase::Disconnected, 0);
        stopped.spec.desired_state = DesiredState::Disconnected;
        assert!(!is_stale(&stopped, now(1_000_000), THIRTY_MIN));
        assert!(!is_stale(
            &WhatsAppSession::for_user("u"),
            now(1_000_000),
            THIRTY_MIN
        ));
        let mut deleting = session(Phase::AwaitingScan, 0);
        deleting.metadata.deletion_timestamp = Some(Time(now(1)));
        assert!(!is_stale(&deleting, now(1_000_000), THIRTY_MIN));
    }

    #[test]
    fn the_spec_timeout_overrides_the_default() {
        let mut s = session(Phase::AwaitingScan, 0);
        s.spec.stale_timeout_seconds = Some(60);
        assert!(is_stale(&s, now(60), THIRTY_MIN));
    }
}
