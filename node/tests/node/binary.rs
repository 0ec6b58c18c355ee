//! The `wasp-node` binary itself: flags, an images file, a pod run, a clean stop on SIGTERM.

use std::process::Command;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use wasp_e2e::procs::{Supervised, scratch_dir};
use wasp_e2e::{TestEnv, eventually};

use crate::common::{LIMIT, ready, shell_pod};

const BIN: &str = env!("CARGO_BIN_EXE_wasp-node");

#[test]
fn help_names_every_flag() -> Result<()> {
    let out = Command::new(BIN).arg("--help").output()?;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout)?;
    for flag in [
        "--kubeconfig",
        "--node-name",
        "--namespace",
        "--label-selector",
        "--image ",
        "--images-file",
        "--state-dir",
        "--probe-interval-ms",
        "--pod-block",
        "--service-block",
        "--provision-volumes",
        "--parallel-starts",
        "[env: WASP_NODE_IMAGES=]",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let bad = Command::new(BIN)
        .args(["--image", "no-equals-sign", "--kubeconfig", "/nonexistent"])
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SUFFIX=BINARY"));
    Ok(())
}

#[tokio::test]
async fn the_binary_registers_a_node_runs_a_pod_and_stops_on_sigterm() -> Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("node-bin").await?;
    let state = scratch_dir("wasp-node-bin")?;
    // `sh` without a path: looked up on PATH; GREETING is the image's env.
    let images = state.join("images.yaml");
    std::fs::write(
        &images,
        "images:\n  - image: e2e/shell\n    binary: sh\n    env: { GREETING: hello }\n",
    )?;
    let name = format!("wasp-node-{ns}");
    let mut cmd = Command::new(BIN);
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args([
            "--namespace",
            &ns,
            "--node-name",
            &name,
            "--log-format",
            "text",
        ])
        .arg("--images-file")
        .arg(&images)
        .arg("--state-dir")
        .arg(state.join("node"))
        .env_remove("KUBECONFIG");
    let node = Supervised::spawn("wasp-node", cmd, &state.join("wasp-node.log"), Some(&state))?;

    let nodes: Api<Node> = Api::all(client.clone());
    eventually(LIMIT, || async { nodes.get_opt(&name).await.ok()? })
        .await
        .with_context(|| format!("no Node; wasp-node says:\n{}", node.log_tail(30)))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &shell_pod(
            "hello",
            r#"echo "$GREETING from $HOSTNAME"; exec sleep 600"#,
            serde_json::json!({}),
        )?,
    )
    .await?;
    let pod = ready(&pods, "hello")
        .await
        .with_context(|| node.log_tail(30))?;
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(name.as_str())
    );
    let log = state.join(format!("node/logs/{ns}_hello_main.log"));
    let text = eventually(LIMIT, || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("from"))
    })
    .await
    .with_context(|| format!("{}: {}", log.display(), node.log_tail(30)))?;
    assert_eq!(text.trim(), "hello from hello");
    let pid: u32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first()?.container_id.clone())
        .and_then(|id| id.rsplit('/').next()?.parse().ok())
        .context("the container's pid")?;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // SIGTERM: the pod's process stops, the Node goes.
    let raw = rustix::process::Pid::from_raw(i32::try_from(node.pid())?).context("pid")?;
    rustix::process::kill_process(raw, rustix::process::Signal::TERM)?;
    let status = eventually(LIMIT, || async { node.exited() }).await?;
    assert!(status.success(), "{status}: {}", node.log_tail(30));
    assert!(nodes.get_opt(&name).await?.is_none(), "Node removed");
    assert!(
        !std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("sleep")),
        "the pod's process outlived the node"
    );
    Ok(())
}
