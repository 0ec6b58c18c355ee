//! Liveness probes restart what fails them; a startup probe holds liveness and readiness back
//! until it passes, and restarts what never passes it; container args and command are expanded and
//! rewritten by the node's conventions.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use wasp_e2e::wait_for;

use crate::common::{LIMIT, condition, container_status, logs_with, ready, setup, shell_pod};

/// The container status of pod `name` once it has restarted `times` times.
async fn restarted(pods: &Api<Pod>, name: &str, times: i32) -> Result<ContainerStatus> {
    let pod = wait_for(pods, name, LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.restart_count >= times)
    })
    .await?
    .context("pod")?;
    container_status(&pod).cloned().context("status")
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container_a_passing_one_does_not() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-live").await?;
    // Nothing listens on port 9 of the pod's address.
    let failing = shell_pod(
        "failing",
        "echo started; exec sleep 600",
        json!({ "container": { "livenessProbe": { "tcpSocket": { "port": 9 }, "periodSeconds": 1, "failureThreshold": 2 } } }),
    )?;
    // An exec probe runs with the container's environment (FROM_IMAGE is the image's env), and
    // its command follows the conventions (the mount path becomes the volume's directory).
    let passing = shell_pod(
        "passing",
        "exec sleep 600",
        json!({
            "volumes": [{ "name": "data", "emptyDir": {} }],
            "container": {
                "volumeMounts": [{ "name": "data", "mountPath": "/wasp-probe-data" }],
                "livenessProbe": {
                    "exec": { "command": ["sh", "-c", "test \"$FROM_IMAGE\" = image && test -d \"$0\"", "/wasp-probe-data"] },
                    "periodSeconds": 1, "failureThreshold": 1
                }
            }
        }),
    )?;
    pods.create(&PostParams::default(), &failing).await?;
    pods.create(&PostParams::default(), &passing).await?;
    let cs = restarted(&pods, "failing", 2).await?;
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(
        last.map(|t| t.exit_code),
        Some(137),
        "killed for failing the probe"
    );
    assert!(node.runs("failing").len() >= 3);
    assert!(node.logs("failing").matches("started").count() >= 3);
    assert_eq!(node.restarts("passing"), Some(0));
    assert_eq!(node.runs("passing").len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_startup_probe_holds_back_liveness_and_readiness_until_it_passes() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-startup").await?;
    // The file appears 3 s in (probes run in the container's working directory). The liveness
    // probe asks for it too and gives up at its first failure: had it run before the startup
    // probe passed, the container would have been killed.
    let probe = |period: i32, failures: i32| json!({ "exec": { "command": ["test", "-f", "up"] }, "periodSeconds": period, "failureThreshold": failures });
    let slow = shell_pod(
        "slow",
        "sleep 3; touch up; exec sleep 600",
        json!({ "container": {
            "startupProbe": probe(1, 30),
            "livenessProbe": probe(1, 1),
            "readinessProbe": { "exec": { "command": ["true"] }, "periodSeconds": 1 }
        } }),
    )?;
    let never = shell_pod(
        "never",
        "echo started; exec sleep 600",
        json!({ "container": { "startupProbe": probe(1, 2) } }),
    )?;
    pods.create(&PostParams::default(), &slow).await?;
    pods.create(&PostParams::default(), &never).await?;
    // Running but not started, hence not Ready, while the startup probe fails.
    let waiting = wait_for(&pods, "slow", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await?
    .context("pod")?;
    let cs = container_status(&waiting).context("status")?;
    assert_eq!((cs.started, cs.ready), (Some(false), false));
    assert_eq!(condition(&waiting, "Ready").as_deref(), Some("False"));
    let ready = ready(&pods, "slow").await?;
    let cs = container_status(&ready).context("status")?;
    assert_eq!((cs.started, cs.ready), (Some(true), true));
    assert_eq!(
        node.runs("slow").len(),
        1,
        "liveness ran before startup passed"
    );
    assert_eq!(node.restarts("slow"), Some(0));
    // A startup probe that never passes kills the container after its threshold (2 s here).
    let cs = restarted(&pods, "never", 1).await?;
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(137));
    let first = last
        .and_then(|t| Some((t.started_at.as_ref()?.0, t.finished_at.as_ref()?.0)))
        .context("times")?;
    assert!(
        first.1.duration_since(first.0).as_secs_f64() >= 2.0,
        "killed sooner than its failure threshold allows: {first:?}"
    );
    Ok(())
}

#[tokio::test]
async fn args_and_command_are_expanded_and_follow_the_conventions() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-args").await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "args" },
        "spec": {
            "automountServiceAccountToken": false,
            "volumes": [{ "name": "data", "emptyDir": {} }],
            "containers": [{
                "name": "main", "image": "e2e/shell:1",
                "command": ["/usr/bin/sh", "-c"],
                "args": ["echo \"args: $0 | $1 | $2 | $3\"; exec sleep 600", "$(NAME)", "0.0.0.0:8080", "--dir=/data/x", "$$(NAME)"],
                "env": [{ "name": "NAME", "value": "world" }],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
            }]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let logs = logs_with(&node, "args", None, "args: ").await?;
    let ip = node.pod_ip("args").context("address")?;
    let data = node.pod_dir("args").context("dir")?.join("volumes/data");
    assert_eq!(
        logs.trim(),
        format!(
            "args: world | {ip}:8080 | --dir={}/x | $(NAME)",
            data.display()
        )
    );
    Ok(())
}
