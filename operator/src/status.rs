//! The status of a WhatsAppSession as a pure function of what was observed (the resource, its
//! pod, the session pod's state record in Redis), and the events its transitions deserve.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use wasp_common::SessionState;
use wasp_crds::conditions::{self, condition, set_condition};
use wasp_crds::{DesiredState, Phase, WhatsAppSession, WhatsAppSessionStatus};

/// What the operator saw of a session's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    pub pod_ip: Option<String>,
    pub terminating: bool,
}

impl PodView {
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        Self {
            name: pod.name_any(),
            phase: status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            pod_ip: status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub session: &'a WhatsAppSession,
    pub pod: Option<PodView>,
    pub state: Option<SessionState>,
    /// Problems found by `wasp_crds::validate::validate_spec`.
    pub problems: Vec<String>,
    pub control_port: u16,
    pub now: Time,
}

fn phase_of(o: &Observed) -> (Phase, Option<String>) {
    if !o.problems.is_empty() {
        return (
            Phase::Failed,
            Some(format!("invalid spec: {}", o.problems.join("; "))),
        );
    }
    let state_phase = o.state.as_ref().map(|s| Phase::from(s.phase));
    match o.session.spec.desired_state {
        DesiredState::Disconnected => match state_phase {
            Some(Phase::LoggedOut) => (Phase::LoggedOut, None),
            _ => (Phase::Disconnected, None),
        },
        DesiredState::Connected => match &o.pod {
            None => (Phase::Pending, None),
            Some(p) if p.phase == "Failed" => (
                Phase::Failed,
                Some(format!("session pod {} failed", p.name)),
            ),
            Some(p) if p.terminating || !p.ready || p.phase != "Running" => (Phase::Starting, None),
            Some(_) => (state_phase.unwrap_or(Phase::Starting), None),
        },
    }
}

fn pod_condition(o: &Observed) -> (bool, &'static str, String) {
    match (&o.pod, o.session.spec.desired_state) {
        (None, DesiredState::Disconnected) => (
            false,
            "SessionStopped",
            "desired state is disconnected".into(),
        ),
        (None, DesiredState::Connected) => {
            (false, "PodMissing", "session pod not created yet".into())
        }
        (Some(p), _) if p.terminating => (
            false,
            "PodTerminating",
            format!("pod {} is terminating", p.name),
        ),
        (Some(p), _) if p.ready => (true, "PodReady", format!("pod {} is ready", p.name)),
        (Some(p), _) if p.phase == "Failed" => {
            (false, "PodFailed", format!("pod {} failed", p.name))
        }
        (Some(p), _) => (
            false,
            "PodStarting",
            format!("pod {} is {}", p.name, p.phase),
        ),
    }
}

fn paired_condition(o: &Observed, phase: Phase) -> (bool, &'static str, &'static str) {
    match (phase, o.state.as_ref()) {
        (Phase::LoggedOut, _) => (
            false,
            "LoggedOut",
            "the phone removed this device; scan a new QR code",
        ),
        (Phase::AwaitingScan, _) => (
            false,
            "AwaitingScan",
            "waiting for the phone to scan the QR code",
        ),
        (_, Some(s)) if s.phone_number.is_some() => {
            (true, "Paired", "device is paired with a phone")
        }
        (Phase::Connected | Phase::Reconnecting, _) => {
            (true, "Paired", "device is paired with a phone")
        }
        _ => (false, "Unknown", "pairing state not reported yet"),
    }
}

/// The status to write. Stable: computing it again from the same observation gives the same
/// value, so an unchanged session costs no write.
pub fn compute_status(o: &Observed) -> WhatsAppSessionStatus {
    let old = o.session.status.clone().unwrap_or_default();
    let generation = o.session.metadata.generation;
    let (phase, error) = phase_of(o);
    let state = o.state.as_ref();
    let endpoint = o
        .pod
        .as_ref()
        .filter(|p| p.ready && !p.terminating)
        .and_then(|p| p.pod_ip.as_ref());

    let mut conds = old.conditions.clone();
    let (pod_ready, pod_reason, pod_message) = pod_condition(o);
    set_condition(
        &mut conds,
        condition(
            conditions::POD_READY,
            pod_ready,
            pod_reason,
            pod_message,
            generation,
            &o.now,
        ),
    );
    // Every condition carries a message: 1.20's apply path rejects an empty one as null.
    let (paired, paired_reason, paired_message) = paired_condition(o, phase);
    set_condition(
        &mut conds,
        condition(
            conditions::PAIRED,
            paired,
            paired_reason,
            paired_message,
            generation,
            &o.now,
        ),
    );
    let ready_message = error
        .clone()
        .unwrap_or_else(|| format!("session is {}", phase.as_str()));
    set_condition(
        &mut conds,
        condition(
            conditions::READY,
            phase == Phase::Connected,
            phase.as_str(),
            ready_message,
            generation,
            &o.now,
        ),
    );

    WhatsAppSessionStatus {
        phase: Some(phase),
        phase_since: if old.phase == Some(phase) {
            old.phase_since.or(Some(o.now.clone()))
        } else {
            Some(o.now.clone())
        },
        conditions: conds,
        phone_number: state
            .and_then(|s| s.phone_number.clone())
            .or(old.phone_number),
        push_name: state.and_then(|s| s.push_name.clone()).or(old.push_name),
        pod_name: o.pod.as_ref().map(|p| p.name.clone()),
        endpoint: endpoint.map(|ip| format!("{}:{}", bracket_ipv6(ip), o.control_port)),
        connected_at: state
            .and_then(|s| s.connected_at)
            .map(Time)
            .or(old.connected_at),
        last_activity: state
            .and_then(|s| s.last_activity)
            .map(Time)
            .or(old.last_activity),
        reconnect_count: state
            .map(|s| s.reconnect_count)
            .unwrap_or(old.reconnect_count),
        last_error: error.or_else(|| state.and_then(|s| s.last_error.clone())),
        observed_generation: generation,
    }
}

fn bracket_ipv6(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    }
}

/// A Kubernetes Event worth publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The event for a phase change; `None` when the phase did not change (events on transitions only).
pub fn transition(old: Option<Phase>, new: &WhatsAppSessionStatus) -> Option<Transition> {
    let to = new.phase?;
    if old == Some(to) {
        return None;
    }
    let from = old.map_or("none", Phase::as_str);
    let (warning, reason) = match to {
        Phase::Failed => (true, "SessionFailed"),
        Phase::LoggedOut => (true, "SessionLoggedOut"),
        Phase::Connected => (false, "SessionConnected"),
        _ => (false, "PhaseChanged"),
    };
    let mut note = format!("{from} -> {}", to.as_str());
    if let Some(e) = new.last_error.as_ref().filter(|_| warning) {
        note.push_str(": ");
        note.push_str(e);
    }
    Some(Transition {
        warning,
        reason,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use wasp_common::SessionPhase;
    use wasp_crds::conditions::is_true;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn session() -> WhatsAppSession {
        let mut s = WhatsAppSession::for_user("doctor@clinic.com");
        s.metadata.generation = Some(3);
        s
    }

    fn running_pod() -> PodView {
        PodView {
            name: "wa-doctor".into(),
            phase: "Running".into(),
            ready: true,
            pod_ip: Some("10.1.2.3".into()),
            terminating: false,
        }
    }

    fn state(phase: SessionPhase) -> SessionState {
        let mut s = SessionState::new(phase, Timestamp::from_second(5).unwrap());
        if phase == SessionPhase::Connected {
            s.phone_number = Some("41791234567".into());
            s.push_name = Some("Dr. Who".into());
            s.connected_at = Some(Timestamp::from_second(4).unwrap());
        }
        s
    }

    fn observe<'a>(
        s: &'a WhatsAppSession,
        pod: Option<PodView>,
        st: Option<SessionState>,
    ) -> Observed<'a> {
        Observed {
            session: s,
            pod,
            state: st,
            problems: vec![],
            control_port: 8080,
            now: at(100),
        }
    }

    #[test]
    fn connected_pod_and_state_give_connected_with_endpoint() {
        let s = session();
        let st = compute_status(&observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        ));
        assert_eq!(st.phase, Some(Phase::Connected));
        assert_eq!(st.endpoint.as_deref(), Some("10.1.2.3:8080"));
        assert_eq!(st.pod_name.as_deref(), Some("wa-doctor"));
        assert_eq!(st.phone_number.as_deref(), Some("41791234567"));
        assert_eq!(st.push_name.as_deref(), Some("Dr. Who"));
        assert_eq!(st.observed_generation, Some(3));
        for c in [conditions::READY, conditions::PAIRED, conditions::POD_READY] {
            assert!(is_true(&st.conditions, c), "{c}");
        }
    }

    #[test]
    fn phases_follow_pod_and_desired_state() {
        let s = session();
        let mut starting = running_pod();
        starting.ready = false;
        let mut failed = running_pod();
        failed.phase = "Failed".into();
        failed.ready = false;
        let cases = [
            (None, None, Phase::Pending),
            (
                Some(starting),
                Some(state(SessionPhase::Connected)),
                Phase::Starting,
            ),
            (Some(running_pod()), None, Phase::Starting),
            (
                Some(running_pod()),
                Some(state(SessionPhase::AwaitingScan)),
                Phase::AwaitingScan,
            ),
            (
                Some(running_pod()),
                Some(state(SessionPhase::Reconnecting)),
                Phase::Reconnecting,
            ),
            (Some(failed), None, Phase::Failed),
        ];
        for (pod, st, want) in cases {
            let got = compute_status(&observe(&s, pod.clone(), st.clone())).phase;
            assert_eq!(got, Some(want), "pod {pod:?} state {st:?}");
        }
        let mut stopped = session();
        stopped.spec.desired_state = DesiredState::Disconnected;
        assert_eq!(
            compute_status(&observe(&stopped, None, None)).phase,
            Some(Phase::Disconnected)
        );
        let out = compute_status(&observe(
            &stopped,
            None,
            Some(state(SessionPhase::LoggedOut)),
        ));
        assert_eq!(out.phase, Some(Phase::LoggedOut));
        assert!(!is_true(&out.conditions, conditions::PAIRED));
    }

    #[test]
    fn no_endpoint_unless_the_pod_is_ready_and_staying() {
        let s = session();
        let mut terminating = running_pod();
        terminating.terminating = true;
        let st = compute_status(&observe(
            &s,
            Some(terminating),
            Some(state(SessionPhase::Connected)),
        ));
        assert_eq!((st.phase, st.endpoint), (Some(Phase::Starting), None));
        let mut v6 = running_pod();
        v6.pod_ip = Some("fd00::5".into());
        let st = compute_status(&observe(&s, Some(v6), None));
        assert_eq!(st.endpoint.as_deref(), Some("[fd00::5]:8080"));
    }

    #[test]
    fn an_invalid_spec_is_failed_with_the_reason() {
        let s = session();
        let mut o = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        );
        o.problems = vec!["spec.pairing.phoneNumber is required".into()];
        let st = compute_status(&o);
        assert_eq!(st.phase, Some(Phase::Failed));
        assert!(st.last_error.unwrap().contains("phoneNumber"));
    }

    #[test]
    fn recomputing_is_stable_and_phase_since_moves_only_on_change() {
        let mut s = session();
        let first = compute_status(&observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::AwaitingScan)),
        ));
        s.status = Some(first.clone());
        let mut later = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::AwaitingScan)),
        );
        later.now = at(500);
        let second = compute_status(&later);
        assert_eq!(first, second);
        s.status = Some(second);
        let mut connected = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        );
        connected.now = at(900);
        let third = compute_status(&connected);
        assert_eq!(third.phase_since, Some(at(900)));
    }

    #[test]
    fn only_transitions_make_events_and_failures_warn() {
        let s = session();
        let st = compute_status(&observe(&s, None, None));
        assert_eq!(transition(Some(Phase::Pending), &st), None);
        let t = transition(None, &st).unwrap();
        assert_eq!(
            (t.warning, t.reason, t.note.as_str()),
            (false, "PhaseChanged", "none -> Pending")
        );
        let mut o = observe(&s, None, None);
        o.problems = vec!["bad".into()];
        let t = transition(Some(Phase::Pending), &compute_status(&o)).unwrap();
        assert!(t.warning && t.note.contains("bad"), "{t:?}");
    }
}
