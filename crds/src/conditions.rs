//! Condition types and the one rule of updating them: `lastTransitionTime` moves only when the
//! status flips, so a reconcile that changes nothing writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The session can send and receive (phase Connected).
pub const READY: &str = "Ready";
/// The device is paired with a phone (auth state exists).
pub const PAIRED: &str = "Paired";
/// The session pod exists and passes its readiness probe.
pub const POD_READY: &str = "PodReady";

/// Builds a condition; `status` true/false maps to "True"/"False".
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now.clone(),
    }
}

/// Puts `new` into `conditions`, keeping the old transition time when the status is unchanged.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Takes the condition of `type_` out (it no longer applies).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether the condition of `type_` is present and "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_status_flip() {
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(READY, false, "Starting", "", Some(1), &at(10)),
        );
        set_condition(
            &mut cs,
            condition(READY, false, "AwaitingScan", "scan", Some(1), &at(20)),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, at(10));
        assert_eq!(cs[0].reason, "AwaitingScan");
        set_condition(
            &mut cs,
            condition(READY, true, "Connected", "", Some(2), &at(30)),
        );
        assert_eq!(cs[0].last_transition_time, at(30));
        assert!(is_true(&cs, READY));
        assert!(!is_true(&cs, PAIRED));
    }
}
