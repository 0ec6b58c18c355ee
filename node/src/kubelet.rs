//! Pod status as a kubelet writes it: a pure builder ([`pod_status`]) from what a node knows of
//! its containers ([`ContainerView`]), used by the local node ([`crate::LocalNode`]), and two
//! helpers for tests that only need a pod to *look* started or finished
//! ([`mark_pod_running`], [`mark_pod_terminated`]): the local cluster has no kubelet, so pod
//! status only changes when someone writes it.
//!
//! Pods those two helpers touch stay unbound (`spec.nodeName` empty). For such pods 1.20's
//! apiserver ignores any grace period and deletes them at once, as a kubelet-less cluster needs (a
//! bound pod would stay Terminating until a kubelet confirmed it, which the local node does).

use anyhow::Context;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// Host IP every local pod reports.
pub const HOST_IP: &str = "127.0.0.1";

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// The exit code; `128 + signal` for a process killed by a signal, as container runtimes
    /// report it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

impl Exit {
    /// A process that exited with `code`.
    pub fn code(code: i32, started_at: Option<Timestamp>, finished_at: Timestamp) -> Self {
        Self {
            exit_code: code,
            signal: None,
            started_at,
            finished_at,
            container_id: None,
        }
    }

    /// The kubelet's reason: `Completed` for exit code 0, else `Error`.
    pub fn reason(&self) -> &'static str {
        if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }

    fn to_state(&self) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: Some(self.reason().into()),
            started_at: self.started_at.map(Time),
            finished_at: Some(Time(self.finished_at)),
            container_id: self.container_id.clone(),
            message: None,
        }
    }
}

/// The state of one container.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Not running: being created (`ContainerCreating`), waiting to restart
    /// (`CrashLoopBackOff`), or unable to start (`CreateContainerConfigError`, ...).
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated(Exit),
}

/// What a node knows about one container of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: RunState,
    /// The previous run's end (`lastState.terminated`), once the container has restarted or is
    /// waiting to.
    pub last_exit: Option<Exit>,
    pub restart_count: i32,
    /// The readiness probe's verdict (always false unless running).
    pub ready: bool,
    /// The startup probe has passed (true without one): until it has, the container is neither
    /// started nor ready, as a kubelet reports it.
    pub startup_passed: bool,
}

impl ContainerView {
    /// A container that is being created.
    pub fn creating(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: RunState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_exit: None,
            restart_count: 0,
            ready: false,
            startup_passed: true,
        }
    }

    fn is_started(&self) -> bool {
        self.startup_passed && matches!(self.state, RunState::Running { .. })
    }

    fn is_ready(&self) -> bool {
        self.ready && self.is_started()
    }

    fn to_status(&self) -> ContainerStatus {
        let (state, container_id) = match &self.state {
            RunState::Waiting { reason, message } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                None,
            ),
            RunState::Running {
                started_at,
                container_id,
            } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(*started_at)),
                    }),
                    ..Default::default()
                },
                Some(container_id.clone()),
            ),
            RunState::Terminated(exit) => (
                ContainerState {
                    terminated: Some(exit.to_state()),
                    ..Default::default()
                },
                exit.container_id.clone(),
            ),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            container_id,
            ready: self.is_ready(),
            started: Some(self.is_started()),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: self.last_exit.as_ref().map(|e| ContainerState {
                terminated: Some(e.to_state()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pod phase a kubelet derives from its containers (`getPhase` of kubelet 1.20, without init
/// containers): Running while any container runs, or while all have stopped but will restart;
/// Succeeded/Failed once all have stopped for good; Pending while any has never run.
pub fn pod_phase(restart_policy: &str, containers: &[ContainerView]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(e) => {
                stopped += 1;
                if e.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if c.last_exit.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Never" if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            "OnFailure" if stopped == succeeded => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// Everything [`pod_status`] is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView<'a> {
    /// `spec.restartPolicy` (`Always` when unset).
    pub restart_policy: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: Option<Timestamp>,
    pub containers: &'a [ContainerView],
}

/// The status a kubelet writes for a pod bound to it: phase ([`pod_phase`]), `podIP`/`podIPs`,
/// `hostIP` 127.0.0.1, conditions PodScheduled, Initialized (True), ContainersReady and Ready
/// (True when every container is running and ready), and every container's status. A
/// condition's `lastTransitionTime` is kept from `previous` while its status does not change.
pub fn pod_status(view: &PodView, previous: Option<&PodStatus>, now: Timestamp) -> PodStatus {
    let phase = pod_phase(view.restart_policy, view.containers);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.is_ready())
        .map(|c| c.name.as_str())
        .collect();
    let (ready, reason, message) = if unready.is_empty() {
        (true, None, None)
    } else if terminal {
        (false, Some("PodCompleted"), None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let old = previous
        .and_then(|p| p.conditions.as_deref())
        .unwrap_or(&[]);
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<&String>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(Into::into),
            message: message.cloned(),
            last_transition_time: Some(since),
            last_probe_time: None,
            ..Default::default()
        }
    };
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: view.pod_ip.map(Into::into),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.into() }]),
        host_ip: Some(HOST_IP.into()),
        start_time: view.start_time.map(Time),
        conditions: Some(vec![
            cond("Initialized", true, None, None),
            cond("Ready", ready, reason, message.as_ref()),
            cond("ContainersReady", ready, reason, message.as_ref()),
            cond("PodScheduled", true, None, None),
        ]),
        container_statuses: Some(view.containers.iter().map(|c| c.to_status()).collect()),
        ..Default::default()
    }
}

/// Writes the status a kubelet reports for a started, ready pod: phase Running, `podIP`/`podIPs`
/// = `pod_ip`, `hostIP` 127.0.0.1, conditions Initialized/ContainersReady/Ready/PodScheduled
/// True, and every container running and ready. Returns the updated pod.
pub async fn mark_pod_running(
    client: &Client,
    ns: &str,
    name: &str,
    pod_ip: &str,
) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("getting pod {ns}/{name}"))?;
    let now = Timestamp::now();
    let containers: Vec<ContainerView> = container_names(&pod)
        .into_iter()
        .map(|(c, image)| ContainerView {
            state: RunState::Running {
                started_at: now,
                container_id: format!("wasp-e2e://{ns}/{name}/{c}"),
            },
            ready: true,
            ..ContainerView::creating(&c, &image)
        })
        .collect();
    let view = PodView {
        restart_policy: restart_policy(&pod),
        pod_ip: Some(pod_ip),
        start_time: Some(now),
        containers: &containers,
    };
    patch_status(&pods, name, pod_status(&view, None, now)).await
}

/// Writes the status a kubelet reports when every container of the pod has exited with
/// `exit_code` for good: phase Succeeded (0) or Failed (anything else), Ready False. Returns the
/// updated pod. Pods in a terminal phase are also deleted immediately, bound or not.
pub async fn mark_pod_terminated(
    client: &Client,
    ns: &str,
    name: &str,
    exit_code: i32,
) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("getting pod {ns}/{name}"))?;
    let now = Timestamp::now();
    let containers: Vec<ContainerView> = container_names(&pod)
        .into_iter()
        .map(|(c, image)| ContainerView {
            state: RunState::Terminated(Exit::code(exit_code, None, now)),
            ..ContainerView::creating(&c, &image)
        })
        .collect();
    // "Never": these containers do not restart, whatever the spec says.
    let view = PodView {
        restart_policy: "Never",
        pod_ip: None,
        start_time: None,
        containers: &containers,
    };
    let status = pod_status(&view, pod.status.as_ref(), now);
    patch_status(&pods, name, status).await
}

/// `spec.restartPolicy`, `Always` when unset.
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// (name, image) of every regular container.
fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

/// A JSON merge patch of the status subresource: lists (conditions, container statuses) are
/// replaced whole, which is what a kubelet's status sync amounts to.
pub async fn patch_status(pods: &Api<Pod>, name: &str, status: PodStatus) -> anyhow::Result<Pod> {
    let patch = json!({ "status": status });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching the status of pod {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn running(name: &str, ready: bool) -> ContainerView {
        ContainerView {
            state: RunState::Running {
                started_at: t(1),
                container_id: format!("wasp-node://{name}"),
            },
            ready,
            ..ContainerView::creating(name, "img")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: RunState::Terminated(Exit::code(code, Some(t(1)), t(2))),
            ..ContainerView::creating(name, "img")
        }
    }

    fn backing_off(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            last_exit: Some(Exit::code(code, Some(t(1)), t(2))),
            restart_count: 1,
            ..ContainerView::creating(name, "img")
        }
    }

    fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {s:?}"))
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let c = ContainerView::creating("a", "img");
        assert_eq!(pod_phase("Always", std::slice::from_ref(&c)), "Pending");
        assert_eq!(pod_phase("Always", &[running("a", false)]), "Running");
        // a crashed container that will restart keeps the pod Running
        assert_eq!(pod_phase("Always", &[backing_off("a", 137)]), "Running");
        assert_eq!(pod_phase("Always", &[exited("a", 0)]), "Running");
        assert_eq!(pod_phase("OnFailure", &[exited("a", 1)]), "Running");
        assert_eq!(pod_phase("OnFailure", &[exited("a", 0)]), "Succeeded");
        assert_eq!(pod_phase("Never", &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            pod_phase("Never", &[exited("a", 0), exited("b", 2)]),
            "Failed"
        );
        assert_eq!(
            pod_phase("Never", &[exited("a", 0), running("b", true)]),
            "Running"
        );
        // one container still being created keeps the pod Pending
        assert_eq!(pod_phase("Always", &[running("a", true), c]), "Pending");
    }

    #[test]
    fn ready_only_when_every_container_runs_and_is_ready() {
        let cs = [running("a", true), running("b", false)];
        let view = PodView {
            restart_policy: "Always",
            pod_ip: Some("127.1.0.2"),
            start_time: Some(t(0)),
            containers: &cs,
        };
        let s = pod_status(&view, None, t(5));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("127.1.0.2"));
        assert_eq!(
            s.pod_ips.as_ref().map(|v| v[0].ip.as_str()),
            Some("127.1.0.2")
        );
        assert_eq!(s.host_ip.as_deref(), Some(HOST_IP));
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let statuses = s.container_statuses.clone().unwrap_or_default();
        assert!(statuses[0].ready && !statuses[1].ready);

        // the probe passes for b: Ready flips, with a new transition time
        let cs = [running("a", true), running("b", true)];
        let view = PodView {
            containers: &cs,
            ..view
        };
        let s2 = pod_status(&view, Some(&s), t(9));
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(Time(t(9))));
        // unchanged conditions keep theirs
        assert_eq!(
            cond(&s2, "Initialized").last_transition_time,
            Some(Time(t(5)))
        );
    }

    #[test]
    fn a_container_whose_startup_probe_has_not_passed_is_neither_started_nor_ready() {
        let status = |startup_passed: bool| {
            let c = ContainerView {
                startup_passed,
                ..running("a", true)
            };
            let view = PodView {
                restart_policy: "Always",
                pod_ip: Some("127.1.0.2"),
                start_time: Some(t(0)),
                containers: std::slice::from_ref(&c),
            };
            let s = pod_status(&view, None, t(1));
            let c = s.container_statuses.clone().unwrap_or_default().remove(0);
            (c.started, c.ready, cond(&s, "Ready").status.clone())
        };
        assert_eq!(status(false), (Some(false), false, "False".into()));
        assert_eq!(status(true), (Some(true), true, "True".into()));
    }

    #[test]
    fn a_crash_is_reported_as_terminated_then_waiting_with_the_last_state() {
        let cs = [backing_off("a", 137)];
        let view = PodView {
            restart_policy: "Always",
            pod_ip: Some("127.1.0.2"),
            start_time: Some(t(0)),
            containers: &cs,
        };
        let s = pod_status(&view, None, t(5));
        let c = &s.container_statuses.unwrap_or_default()[0];
        assert!(!c.ready);
        assert_eq!(c.restart_count, 1);
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        assert_eq!(
            waiting.and_then(|w| w.reason.as_deref()),
            Some("CrashLoopBackOff")
        );
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(last.map(|t| t.exit_code), Some(137));
        assert_eq!(last.and_then(|t| t.reason.as_deref()), Some("Error"));
    }

    #[test]
    fn terminal_pods_are_not_ready_with_pod_completed() {
        let cs = [exited("a", 0)];
        let view = PodView {
            restart_policy: "Never",
            pod_ip: None,
            start_time: None,
            containers: &cs,
        };
        let s = pod_status(&view, None, t(5));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        let c = &s.container_statuses.unwrap_or_default()[0];
        let term = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(term.and_then(|t| t.reason.as_deref()), Some("Completed"));
    }
}
