//! The status of a WhatsAppSession as a pure function of what was observed (the resource, its
//! pod, the session pod's state record in Redis), and the events its transitions deserve.
//!
//! A problem the session pod reports (`errorReason` in its record: a ban, an outdated client, a
//! failed connect) becomes the `Ready` condition's reason and `lastError`, and a Warning Event
//! when it first appears. A ban or an outdated client makes the session `Failed`, not
//! `Reconnecting`: retrying does not help until the ban ends or the image is updated.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use wasp_common::{ErrorReason, SessionState};
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
    /// The fencing token the user's Redis lease holds now (`None`: no session pod holds it);
    /// a record claiming a live socket is believed only while its writer holds the lease
    /// ([`SessionState::is_current`]).
    pub lease_token: Option<u64>,
    /// Problems found by `wasp_crds::validate::validate_spec`.
    pub problems: Vec<String>,
    /// Why the operator cannot read the master keys (`keys::MasterKeys::from_secret`): no pod
    /// is created or replaced until it can.
    pub key_problem: Option<String>,
    pub control_port: u16,
    pub now: Time,
    /// `spec.webhooks` and the user's other webhooks (`None`: the user has none).
    pub webhooks: Option<crate::webhooks::WebhookHealth>,
}

/// The phase, an error of the operator's own (`lastError`), and the problem the session pod
/// reports as the Ready reason.
struct Verdict {
    phase: Phase,
    error: Option<String>,
    problem: Option<String>,
}

impl Verdict {
    fn phase(phase: Phase) -> Self {
        Self {
            phase,
            error: None,
            problem: None,
        }
    }
}

/// The Ready reason while the master keys are unavailable.
pub const MASTER_KEY_UNAVAILABLE: &str = "MasterKeyUnavailable";

fn phase_of(o: &Observed) -> Verdict {
    let verdict = phase_of_parts(o);
    match &o.key_problem {
        // The operator's own problem, unless something more specific is being reported; a
        // running pod keeps running (its phase stays), none is created (Pending).
        Some(e) if verdict.error.is_none() && verdict.problem.is_none() => Verdict {
            phase: verdict.phase,
            error: Some(e.clone()),
            problem: Some(MASTER_KEY_UNAVAILABLE.to_owned()),
        },
        _ => verdict,
    }
}

fn phase_of_parts(o: &Observed) -> Verdict {
    if !o.problems.is_empty() {
        return Verdict {
            phase: Phase::Failed,
            error: Some(format!("invalid spec: {}", o.problems.join("; "))),
            problem: None,
        };
    }
    let state_phase = o.state.as_ref().map(|s| Phase::from(s.phase));
    match o.session.spec.desired_state {
        DesiredState::Disconnected => match state_phase {
            Some(Phase::LoggedOut) => Verdict::phase(Phase::LoggedOut),
            _ => Verdict::phase(Phase::Disconnected),
        },
        DesiredState::Connected => match &o.pod {
            None => Verdict::phase(Phase::Pending),
            Some(p) if p.phase == "Failed" => Verdict {
                phase: Phase::Failed,
                error: Some(format!("session pod {} failed", p.name)),
                problem: None,
            },
            Some(p) if p.terminating || !p.ready || p.phase != "Running" => {
                Verdict::phase(Phase::Starting)
            }
            Some(_) => {
                // A record whose writer lost the lease (killed, its lease expired or taken by
                // the restarted process) says nothing about the socket now: Starting, until
                // the new holder writes.
                let reported = match &o.state {
                    Some(s) if s.is_current(o.lease_token) => Phase::from(s.phase),
                    _ => Phase::Starting,
                };
                match o
                    .state
                    .as_ref()
                    .and_then(|s| connection_problem(s, reported))
                {
                    Some(name) => {
                        let stuck =
                            ErrorReason::from_name(name).is_some_and(ErrorReason::needs_attention);
                        Verdict {
                            phase: if stuck { Phase::Failed } else { reported },
                            error: None,
                            problem: Some(name.to_owned()),
                        }
                    }
                    None => Verdict::phase(reported),
                }
            }
        },
    }
}

/// The session pod's reported problem, when it describes the connection now: not while the
/// session is connected or showing a QR (the problem is over), not for a one-message problem,
/// and an unknown (newer) name only if Kubernetes accepts it as a reason.
fn connection_problem(state: &SessionState, reported: Phase) -> Option<&str> {
    let name = state.error_reason.as_deref()?;
    if matches!(reported, Phase::Connected | Phase::AwaitingScan) {
        return None;
    }
    match ErrorReason::from_name(name) {
        Some(r) => r.is_connection().then_some(name),
        None => is_condition_reason(name).then_some(name),
    }
}

/// Kubernetes' rule for a condition reason: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most
/// 1024 characters.
fn is_condition_reason(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    s.len() <= 1024
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || c == ',' || c == ':')
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
    let Verdict {
        phase,
        error,
        problem,
    } = phase_of(o);
    let state = o.state.as_ref();
    // The session pod's message, else a generic one for a reason it named without one.
    let reported_error = state.and_then(|s| {
        s.last_error
            .clone()
            .or_else(|| s.reason().map(|r| r.describe().to_owned()))
    });
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
    let ready_message = match (&error, &problem) {
        (Some(e), _) => e.clone(),
        (None, Some(p)) => reported_error.clone().unwrap_or_else(|| p.clone()),
        (None, None) => format!("session is {}", phase.as_str()),
    };
    set_condition(
        &mut conds,
        condition(
            conditions::READY,
            phase == Phase::Connected,
            problem.as_deref().unwrap_or(phase.as_str()),
            ready_message,
            generation,
            &o.now,
        ),
    );

    match &o.webhooks {
        None => conditions::remove_condition(&mut conds, crate::webhooks::WEBHOOKS_HEALTHY),
        Some(h) => {
            let (ok, reason, message) = crate::webhooks::condition(h);
            set_condition(
                &mut conds,
                condition(
                    crate::webhooks::WEBHOOKS_HEALTHY,
                    ok,
                    reason,
                    message,
                    generation,
                    &o.now,
                ),
            );
        }
    }

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
        last_error: error.or(reported_error),
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
    pub reason: String,
    pub note: String,
}

/// The Ready condition's reason when it names a reported problem rather than the phase.
fn problem_of(status: &WhatsAppSessionStatus) -> Option<&str> {
    let phase = status.phase?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .map(|c| c.reason.as_str())
        .filter(|r| *r != phase.as_str())
}

/// The event for a change from `old` to `new`: a phase change, or a problem the session pod
/// newly reports (a Warning named for it: `TemporaryBan`, `ClientOutdated`, …). `None` when
/// neither changed, so events come on transitions only.
pub fn transition(
    old: Option<&WhatsAppSessionStatus>,
    new: &WhatsAppSessionStatus,
) -> Option<Transition> {
    let to = new.phase?;
    let from = old.and_then(|s| s.phase);
    let problem = problem_of(new);
    let detail = |note: &mut String| {
        if let Some(e) = new.last_error.as_ref() {
            note.push_str(": ");
            note.push_str(e);
        }
    };
    if from == Some(to) {
        // Same phase: only a problem that was not reported before is news.
        let p = problem?;
        if old.and_then(problem_of) == Some(p) {
            return None;
        }
        let mut note = format!("session is {}", to.as_str());
        detail(&mut note);
        return Some(Transition {
            warning: true,
            reason: p.to_owned(),
            note,
        });
    }
    let (warning, reason) = match (problem, to) {
        (Some(p), _) => (true, p),
        (None, Phase::Failed) => (true, "SessionFailed"),
        (None, Phase::LoggedOut) => (true, "SessionLoggedOut"),
        (None, Phase::Connected) => (false, "SessionConnected"),
        (None, _) => (false, "PhaseChanged"),
    };
    let mut note = format!("{} -> {}", from.map_or("none", Phase::as_str), to.as_str());
    if warning {
        detail(&mut note);
    }
    Some(Transition {
        warning,
        reason: reason.to_owned(),
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
            lease_token: st.as_ref().and_then(|s| s.lease_token),
            state: st,
            problems: vec![],
            key_problem: None,
            control_port: 8080,
            now: at(100),
            webhooks: None,
        }
    }

    #[test]
    fn webhooks_healthy_appears_with_webhooks_and_goes_with_them() {
        use crate::webhooks::{WEBHOOKS_HEALTHY, WebhookHealth};
        let mut s = session();
        let find = |st: &WhatsAppSessionStatus| {
            st.conditions
                .iter()
                .find(|c| c.type_ == WEBHOOKS_HEALTHY)
                .cloned()
        };
        let mut o = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        );
        assert_eq!(find(&compute_status(&o)), None, "no webhooks, no condition");
        o.webhooks = Some(WebhookHealth {
            endpoints: 1,
            problems: vec![],
            failing: vec![wasp_common::webhooks::Failing {
                id: "spec-crm".into(),
                since: 90,
                error: "the receiver answered 500".into(),
            }],
        });
        let failing = compute_status(&o);
        let c = find(&failing).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "DeliveryFailing")
        );
        assert!(
            is_true(&failing.conditions, conditions::READY),
            "a failing webhook does not make the session unready"
        );
        s.status = Some(failing);
        let mut o = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        );
        o.webhooks = Some(WebhookHealth {
            endpoints: 1,
            ..Default::default()
        });
        let c = find(&compute_status(&o)).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "Delivering")
        );
        o.webhooks = None;
        assert_eq!(
            find(&compute_status(&o)),
            None,
            "removed with the last webhook"
        );
    }

    #[test]
    fn a_connected_record_of_a_process_that_lost_its_lease_shows_starting() {
        let s = session();
        let mut st = state(SessionPhase::Connected);
        st.lease_token = Some(3);
        let mut o = observe(&s, Some(running_pod()), Some(st.clone()));
        assert_eq!(compute_status(&o).phase, Some(Phase::Connected));
        // kill -9: the restarted process is ready, the dead one's lease expired.
        o.lease_token = None;
        let status = compute_status(&o);
        assert_eq!(status.phase, Some(Phase::Starting));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)
            .unwrap();
        assert_eq!(ready.status, "False");
        // The new process took the lease (a higher token) but has not written yet.
        o.lease_token = Some(4);
        assert_eq!(compute_status(&o).phase, Some(Phase::Starting));
        // Its first write names its token: believed again.
        st.lease_token = Some(4);
        st.phase = SessionPhase::Connected;
        o.state = Some(st);
        assert_eq!(compute_status(&o).phase, Some(Phase::Connected));
        // An outcome needs no live writer.
        let mut out = state(SessionPhase::LoggedOut);
        out.lease_token = Some(4);
        o.state = Some(out);
        o.lease_token = None;
        assert_eq!(compute_status(&o).phase, Some(Phase::LoggedOut));
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
    fn unavailable_master_keys_are_pending_with_the_reason_and_one_warning() {
        let mut s = session();
        let problem = Some("master-key Secret clinic/wasp-master-key not found".to_owned());
        let mut o = observe(&s, None, None);
        o.key_problem = problem.clone();
        let st = compute_status(&o);
        assert_eq!(st.phase, Some(Phase::Pending));
        assert!(st.last_error.as_deref().unwrap().contains("not found"));
        let ready = st
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)
            .unwrap();
        assert_eq!(ready.reason, MASTER_KEY_UNAVAILABLE);
        let t = transition(None, &st).unwrap();
        assert!(t.warning);
        assert_eq!(t.reason, MASTER_KEY_UNAVAILABLE);
        assert!(t.note.contains("not found"), "{}", t.note);
        // Once reported, the same problem is no news.
        s.status = Some(st.clone());
        let mut again = observe(&s, None, None);
        again.key_problem = problem.clone();
        assert_eq!(transition(Some(&st), &compute_status(&again)), None);
        // A running pod keeps its phase; a more specific problem (invalid spec) wins.
        let mut running = observe(
            &s,
            Some(running_pod()),
            Some(state(SessionPhase::Connected)),
        );
        running.key_problem = problem.clone();
        assert_eq!(compute_status(&running).phase, Some(Phase::Connected));
        running.problems = vec!["bad".into()];
        assert!(
            compute_status(&running)
                .last_error
                .unwrap()
                .contains("invalid spec")
        );
        // Fixed: the reason goes away.
        let fixed = compute_status(&observe(&s, None, None));
        assert_eq!(fixed.last_error, None);
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
        assert_eq!(transition(Some(&st), &st), None);
        let t = transition(None, &st).unwrap();
        assert_eq!(
            (t.warning, t.reason.as_str(), t.note.as_str()),
            (false, "PhaseChanged", "none -> Pending")
        );
        let mut o = observe(&s, None, None);
        o.problems = vec!["bad".into()];
        let t = transition(Some(&st), &compute_status(&o)).unwrap();
        assert!(t.warning && t.note.contains("bad"), "{t:?}");
        assert_eq!(t.reason, "SessionFailed");
    }

    fn with_error(phase: SessionPhase, reason: &str, message: Option<&str>) -> SessionState {
        let mut st = state(phase);
        st.phone_number = Some("41791234567".into());
        st.error_reason = Some(reason.into());
        st.last_error = message.map(str::to_owned);
        st
    }

    fn ready(
        st: &WhatsAppSessionStatus,
    ) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        st.conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)
            .unwrap()
    }

    /// The status after `prev`, for a running pod and `state`.
    fn next(prev: Option<&WhatsAppSessionStatus>, state: SessionState) -> WhatsAppSessionStatus {
        let mut s = session();
        s.status = prev.cloned();
        compute_status(&observe(&s, Some(running_pod()), Some(state)))
    }

    #[test]
    fn a_ban_or_an_outdated_client_is_failed_with_its_reason_not_reconnecting() {
        for (reason, pod_phase) in [
            ("TemporaryBan", SessionPhase::Reconnecting),
            ("TemporaryBan", SessionPhase::Starting),
            ("ClientOutdated", SessionPhase::Reconnecting),
            ("ClientOutdated", SessionPhase::Failed),
        ] {
            let st = next(None, with_error(pod_phase, reason, Some("banned for 2h")));
            assert_eq!(st.phase, Some(Phase::Failed), "{reason} {pod_phase:?}");
            let r = ready(&st);
            assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", reason));
            assert_eq!(r.message, "banned for 2h");
            assert_eq!(st.last_error.as_deref(), Some("banned for 2h"));
            // Still paired: the ban does not remove the device.
            assert!(is_true(&st.conditions, conditions::PAIRED));
        }
        // Without a message, the reason's own words.
        let st = next(
            None,
            with_error(SessionPhase::Reconnecting, "ClientOutdated", None),
        );
        assert_eq!(
            st.last_error.as_deref(),
            Some(ErrorReason::ClientOutdated.describe())
        );
    }

    #[test]
    fn other_connection_problems_keep_the_pods_phase_and_name_the_reason() {
        let st = next(
            None,
            with_error(
                SessionPhase::Reconnecting,
                "ConnectFailed",
                Some("503 from server"),
            ),
        );
        assert_eq!(st.phase, Some(Phase::Reconnecting));
        assert_eq!(ready(&st).reason, "ConnectFailed");
        assert_eq!(st.last_error.as_deref(), Some("503 from server"));
        let st = next(None, with_error(SessionPhase::LoggedOut, "LoggedOut", None));
        assert_eq!(st.phase, Some(Phase::LoggedOut));
        assert_eq!(ready(&st).reason, "LoggedOut");
        // A reason from a newer session pod is shown when Kubernetes accepts it as a reason.
        let st = next(
            None,
            with_error(SessionPhase::Reconnecting, "RateLimited", None),
        );
        assert_eq!(
            (st.phase, ready(&st).reason.as_str()),
            (Some(Phase::Reconnecting), "RateLimited")
        );
        let st = next(
            None,
            with_error(SessionPhase::Reconnecting, "not a reason!", None),
        );
        assert_eq!(ready(&st).reason, "Reconnecting");
    }

    #[test]
    fn a_problem_is_over_once_connected_and_message_problems_never_touch_the_state() {
        for phase in [SessionPhase::Connected, SessionPhase::AwaitingScan] {
            let st = next(None, with_error(phase, "TemporaryBan", Some("old ban")));
            assert_eq!(st.phase, Some(Phase::from(phase)));
            assert_eq!(ready(&st).reason, Phase::from(phase).as_str());
        }
        let st = next(
            None,
            with_error(
                SessionPhase::Connected,
                "UndecryptableMessage",
                Some("msg X"),
            ),
        );
        assert_eq!(st.phase, Some(Phase::Connected));
        assert!(is_true(&st.conditions, conditions::READY));
        assert_eq!(ready(&st).reason, "Connected");
        assert_eq!(st.last_error.as_deref(), Some("msg X"));
        // A stopped session's old record does not make it Failed.
        let mut stopped = session();
        stopped.spec.desired_state = DesiredState::Disconnected;
        let st = compute_status(&observe(
            &stopped,
            None,
            Some(with_error(SessionPhase::Reconnecting, "TemporaryBan", None)),
        ));
        assert_eq!(st.phase, Some(Phase::Disconnected));
        assert_eq!(ready(&st).reason, "Disconnected");
    }

    #[test]
    fn a_problem_makes_one_warning_when_it_appears() {
        let connected = next(None, state(SessionPhase::Connected));
        // Connected -> banned: one Warning named for the ban, with the phase change and message.
        let banned = next(
            Some(&connected),
            with_error(
                SessionPhase::Reconnecting,
                "TemporaryBan",
                Some("banned for 2h"),
            ),
        );
        let t = transition(Some(&connected), &banned).unwrap();
        assert_eq!(
            (t.warning, t.reason.as_str(), t.note.as_str()),
            (true, "TemporaryBan", "Connected -> Failed: banned for 2h")
        );
        // The same ban reported again: nothing new.
        let again = next(
            Some(&banned),
            with_error(
                SessionPhase::Reconnecting,
                "TemporaryBan",
                Some("banned for 1h"),
            ),
        );
        assert_eq!(transition(Some(&banned), &again), None);
        // Reconnecting, then a failed connect within the same phase: a Warning, once.
        let reconnecting = next(Some(&connected), state(SessionPhase::Reconnecting));
        let t = transition(Some(&connected), &reconnecting).unwrap();
        assert_eq!((t.warning, t.reason.as_str()), (false, "PhaseChanged"));
        let failing = next(
            Some(&reconnecting),
            with_error(SessionPhase::Reconnecting, "ConnectFailed", Some("timeout")),
        );
        let t = transition(Some(&reconnecting), &failing).unwrap();
        assert_eq!(
            (t.warning, t.reason.as_str(), t.note.as_str()),
            (true, "ConnectFailed", "session is Reconnecting: timeout")
        );
        let still = next(
            Some(&failing),
            with_error(
                SessionPhase::Reconnecting,
                "ConnectFailed",
                Some("timeout 2"),
            ),
        );
        assert_eq!(transition(Some(&failing), &still), None);
        // A different problem in the same phase is news again.
        let replaced = next(
            Some(&still),
            with_error(SessionPhase::Reconnecting, "StreamReplaced", None),
        );
        let t = transition(Some(&still), &replaced).unwrap();
        assert_eq!((t.warning, t.reason.as_str()), (true, "StreamReplaced"));
        // Back to connected: a Normal event, the problem is gone.
        let mut ok = state(SessionPhase::Connected);
        ok.clear_error();
        let back = next(Some(&replaced), ok);
        assert_eq!(back.last_error, None);
        let t = transition(Some(&replaced), &back).unwrap();
        assert_eq!((t.warning, t.reason.as_str()), (false, "SessionConnected"));
    }
}
