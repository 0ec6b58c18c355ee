//! Liveness probes restart what fails them; container args and command are expanded and
//! rewritten by the node's conventions.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::json;
use wasp_e2e::wait_for;

use crate::common::{LIMIT, container_status, logs_with, setup, shell_pod};

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
    let restarted = wait_for(&pods, "failing", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.restart_count >= 2)
    })
    .await?
    .context("pod")?;
    let cs = container_status(&restarted).context("status")?;
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
