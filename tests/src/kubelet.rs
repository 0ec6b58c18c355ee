//! Acting as the kubelet where a test needs a pod to look started or finished: the local cluster
//! has no kubelet (and no scheduler), so pod status only changes when someone writes it.
//!
//! The pods stay unbound (`spec.nodeName` empty). For such pods 1.20's apiserver ignores any grace
//! period and deletes them at once, as a kubelet-less cluster needs (a bound pod would stay
//! Terminating until a kubelet confirmed it).

use anyhow::Context;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

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
    let now = Time(Timestamp::now());
    let containers = container_names(&pod)
        .into_iter()
        .map(|(name, image)| ContainerStatus {
            name: name.clone(),
            image,
            image_id: String::new(),
            container_id: Some(format!("wasp-e2e://{ns}/{}/{name}", pod_name(&pod))),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let status = PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(pod_ip.into()),
        pod_ips: Some(vec![PodIP { ip: pod_ip.into() }]),
        host_ip: Some("127.0.0.1".into()),
        start_time: Some(now.clone()),
        conditions: Some(
            ["Initialized", "ContainersReady", "Ready", "PodScheduled"]
                .into_iter()
                .map(|t| condition(t, &now))
                .collect(),
        ),
        container_statuses: Some(containers),
        ..Default::default()
    };
    patch_status(&pods, name, status).await
}

/// Writes the status a kubelet reports when every container of the pod has exited with
/// `exit_code`: phase Succeeded (0) or Failed (anything else), Ready False. Returns the updated
/// pod. Pods in a terminal phase are also deleted immediately, bound or not.
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
    let now = Time(Timestamp::now());
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let containers = container_names(&pod)
        .into_iter()
        .map(|(name, image)| ContainerStatus {
            name,
            image,
            image_id: String::new(),
            ready: false,
            started: Some(false),
            restart_count: 0,
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some(reason.into()),
                    finished_at: Some(now.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let mut ready = condition("Ready", &now);
    ready.status = "False".into();
    ready.reason = Some("PodCompleted".into());
    let status = PodStatus {
        phase: Some(
            if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            }
            .into(),
        ),
        conditions: Some(vec![ready]),
        container_statuses: Some(containers),
        ..Default::default()
    };
    patch_status(&pods, name, status).await
}

fn condition(type_: &str, now: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
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
async fn patch_status(pods: &Api<Pod>, name: &str, status: PodStatus) -> anyhow::Result<Pod> {
    let patch = json!({ "status": status });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching the status of pod {name}"))
}
