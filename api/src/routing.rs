//! Where a request for the caller's session pod goes: a pure decision from the session's CR
//! (desired state, phase, endpoint). Either the pod's control API address, or a JSON refusal that
//! names the phase — 409 when the user must act (connect, scan, re-pair), 503 when waiting helps.

use axum::http::StatusCode;
use wasp_crds::{DesiredState, Phase, WhatsAppSession};

use crate::error::ApiError;

/// What a proxied route needs from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A running pod: reads of stored data (chats, messages, logs) work while the WhatsApp
    /// connection is down.
    Pod,
    /// A connected WhatsApp session: sends, lookups and contact changes.
    Connected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Call the session pod's control API at `http://{endpoint}`.
    Forward {
        endpoint: String,
    },
    Refuse(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    /// `Phase` name, or `None` when there is no session (`"NotFound"` in the body).
    pub phase: String,
    pub message: String,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Session {
            status: r.status,
            code: r.code,
            phase: r.phase,
            message: r.message,
        }
    }
}

fn refuse(status: StatusCode, code: &'static str, phase: &str, message: &str) -> Route {
    Route::Refuse(Refusal {
        status,
        code,
        phase: phase.to_owned(),
        message: message.to_owned(),
    })
}

/// A usable `host:port` endpoint: non-empty, no scheme, path, userinfo or whitespace.
fn valid_endpoint(endpoint: &str) -> bool {
    !endpoint.is_empty()
        && endpoint.len() <= 261
        && endpoint.contains(':')
        && !endpoint.contains(['/', '@', '?', '#', ' ', '\\'])
        && endpoint.chars().all(|c| c.is_ascii_graphic())
}

pub fn decide(session: Option<&WhatsAppSession>, need: Need) -> Route {
    let Some(session) = session else {
        return refuse(
            StatusCode::CONFLICT,
            "session_not_found",
            "NotFound",
            "no WhatsApp session: POST /connect first",
        );
    };
    let status = session.status.as_ref();
    let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Pending);
    let endpoint = status
        .and_then(|s| s.endpoint.as_deref())
        .filter(|e| valid_endpoint(e));
    if session.spec.desired_state == DesiredState::Disconnected {
        return refuse(
            StatusCode::CONFLICT,
            "session_disconnected",
            phase.as_str(),
            "the WhatsApp session is disconnected: POST /connect first",
        );
    }
    let name = phase.as_str();
    match (phase, need, endpoint) {
        (Phase::Connected, _, Some(e)) => Route::Forward {
            endpoint: e.to_owned(),
        },
        (Phase::AwaitingScan | Phase::Reconnecting | Phase::Disconnected, Need::Pod, Some(e)) => {
            Route::Forward {
                endpoint: e.to_owned(),
            }
        }
        (Phase::AwaitingScan, Need::Connected, _) => refuse(
            StatusCode::CONFLICT,
            "session_awaiting_scan",
            name,
            "scan the QR code with WhatsApp on your phone first",
        ),
        (Phase::LoggedOut, _, _) => refuse(
            StatusCode::CONFLICT,
            "session_logged_out",
            name,
            "the phone removed this device: POST /connect and scan a new QR code",
        ),
        (Phase::Failed, _, _) => refuse(
            StatusCode::CONFLICT,
            "session_failed",
            name,
            "the session failed: POST /disconnect, then POST /connect",
        ),
        _ => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_not_ready",
            name,
            "the WhatsApp session is not ready yet, retry shortly",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_crds::WhatsAppSessionStatus;

    fn session(
        desired: DesiredState,
        phase: Option<Phase>,
        endpoint: Option<&str>,
    ) -> WhatsAppSession {
        let mut s = WhatsAppSession::for_user("u1");
        s.spec.desired_state = desired;
        s.status = Some(WhatsAppSessionStatus {
            phase,
            endpoint: endpoint.map(str::to_owned),
            ..Default::default()
        });
        s
    }

    fn refusal(route: Route) -> (StatusCode, &'static str, String) {
        match route {
            Route::Refuse(r) => (r.status, r.code, r.phase),
            Route::Forward { endpoint } => panic!("forwarded to {endpoint}"),
        }
    }

    const EP: Option<&str> = Some("127.0.0.5:8080");

    #[test]
    fn connected_sessions_with_an_endpoint_are_forwarded() {
        let s = session(DesiredState::Connected, Some(Phase::Connected), EP);
        for need in [Need::Pod, Need::Connected] {
            assert_eq!(
                decide(Some(&s), need),
                Route::Forward {
                    endpoint: "127.0.0.5:8080".into()
                }
            );
        }
    }

    #[test]
    fn reads_reach_a_running_pod_that_is_not_connected() {
        for phase in [
            Phase::AwaitingScan,
            Phase::Reconnecting,
            Phase::Disconnected,
        ] {
            let s = session(DesiredState::Connected, Some(phase), EP);
            assert!(
                matches!(decide(Some(&s), Need::Pod), Route::Forward { .. }),
                "{phase:?}"
            );
            assert!(
                matches!(decide(Some(&s), Need::Connected), Route::Refuse(_)),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn refusals_name_the_phase_with_409_for_user_action_and_503_for_waiting() {
        assert_eq!(
            refusal(decide(None, Need::Pod)),
            (StatusCode::CONFLICT, "session_not_found", "NotFound".into())
        );
        let cases = [
            (
                DesiredState::Disconnected,
                Some(Phase::Connected),
                EP,
                StatusCode::CONFLICT,
                "session_disconnected",
                "Connected",
            ),
            (
                DesiredState::Connected,
                None,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_ready",
                "Pending",
            ),
            (
                DesiredState::Connected,
                Some(Phase::Starting),
                EP,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_ready",
                "Starting",
            ),
            (
                DesiredState::Connected,
                Some(Phase::Connected),
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_ready",
                "Connected",
            ),
            (
                DesiredState::Connected,
                Some(Phase::Reconnecting),
                EP,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_ready",
                "Reconnecting",
            ),
            (
                DesiredState::Connected,
                Some(Phase::AwaitingScan),
                EP,
                StatusCode::CONFLICT,
                "session_awaiting_scan",
                "AwaitingScan",
            ),
            (
                DesiredState::Connected,
                Some(Phase::LoggedOut),
                EP,
                StatusCode::CONFLICT,
                "session_logged_out",
                "LoggedOut",
            ),
            (
                DesiredState::Connected,
                Some(Phase::Failed),
                None,
                StatusCode::CONFLICT,
                "session_failed",
                "Failed",
            ),
        ];
        for (desired, phase, ep, status, code, name) in cases {
            let s = session(desired, phase, ep);
            assert_eq!(
                refusal(decide(Some(&s), Need::Connected)),
                (status, code, name.to_owned()),
                "{desired:?} {phase:?} {ep:?}"
            );
        }
    }

    #[test]
    fn odd_endpoints_are_never_forwarded_to() {
        for ep in [
            "",
            "10.0.0.1",
            "http://10.0.0.1:80",
            "a@b:1",
            "10.0.0.1:80/x",
            "h:1 x",
            "h:1\n",
        ] {
            let s = session(DesiredState::Connected, Some(Phase::Connected), Some(ep));
            assert!(
                matches!(decide(Some(&s), Need::Pod), Route::Refuse(_)),
                "{ep:?}"
            );
        }
    }
}
