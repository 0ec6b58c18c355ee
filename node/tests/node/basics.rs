//! What the node did from the start, with `/bin/sh` standing in for an image: binding, env,
//! status, restarts per policy, graceful and forced deletion, shutdown. The session pod itself
//! runs under it in `tests/tests/stack.rs`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::conditions::is_deleted;
use kube::{Api, ResourceExt};
use serde_json::json;
use wasp_e2e::{eventually, wait_for};

use wasp_node::{LocalNode, NodeOptions};

use crate::common::{LIMIT, condition, container_status, phase, setup, shell, shell_pod};

#[tokio::test]
async fn runs_a_pod_with_its_env_on_its_own_address_and_reports_it_ready() -> Result<()> {
    let (client, ns, pods, node) = setup("node-env").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": "s" }, "stringData": { "password": "pw" } }),
            )?,
        )
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({ "metadata": { "name": "c" }, "data": { "level": "debug" } }),
        )?,
    )
    .await?;
    let script = r#"echo "PASSWORD=$PASSWORD LEVEL=$LEVEL NAME=$NAME IP=$IP LISTEN=$LISTEN URL=$URL FROM_IMAGE=$FROM_IMAGE HOSTNAME=$HOSTNAME"; exec sleep 600"#;
    let pod = shell_pod(
        "env",
        script,
        json!({ "container": { "env": [
            { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "s", "key": "password" } } },
            { "name": "LEVEL", "valueFrom": { "configMapKeyRef": { "name": "c", "key": "level" } } },
            { "name": "NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
            { "name": "LISTEN", "value": "0.0.0.0:8080" },
            { "name": "URL", "value": "redis://:$(PASSWORD)@host" },
        ] } }),
    )?;
    pods.create(&PostParams::default(), &pod).await?;

    let ready = wait_for(&pods, "env", LIMIT, |p: Option<&Pod>| {
        p.is_some_and(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await?
    .context("pod")?;
    let ip = node.pod_ip("env").context("an address")?;
    assert!(ip.is_loopback() && ip.octets()[1] >= 100, "{ip}");
    let status = ready.status.as_ref().context("status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some(ip.to_string().as_str()));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        ready.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.name())
    );
    let cs = container_status(&ready).context("container status")?;
    assert!(cs.ready && cs.state.as_ref().is_some_and(|s| s.running.is_some()));
    let pid = node.process_of("env").context("a process")?;
    assert_eq!(node.process_of(&format!("{ns}/env")), Some(pid));
    assert_eq!(node.process_of_container("env", "main"), Some(pid));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let line = eventually(LIMIT, || async {
        let logs = node.logs("env");
        logs.contains("PASSWORD=").then_some(logs)
    })
    .await?;
    let want = format!(
        "PASSWORD=pw LEVEL=debug NAME=env IP={ip} LISTEN={ip}:8080 URL=redis://:pw@host FROM_IMAGE=image HOSTNAME=env"
    );
    assert_eq!(line.trim(), want);

    // The Node is registered and Ready.
    let nodes: Api<Node> = Api::all(client);
    let n = nodes.get(node.name()).await?;
    let node_name = n.name_any();
    let ready_cond = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    assert_eq!(ready_cond.map(|c| c.status).as_deref(), Some("True"));
    node.shutdown().await?;
    assert!(nodes.get_opt(&node_name).await?.is_none(), "Node removed");
    eventually(LIMIT, || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await
    .context("the process outlived the node")?;
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_holds_the_container_until_it_exists() -> Result<()> {
    let (client, ns, pods, node) = setup("node-secret").await?;
    let pod = shell_pod(
        "late",
        "echo TOKEN=$TOKEN; exec sleep 600",
        json!({ "container": { "env": [
            { "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "late", "key": "token" } } },
        ] } }),
    )?;
    pods.create(&PostParams::default(), &pod).await?;
    let waiting = wait_for(&pods, "late", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .is_some_and(|r| r == "CreateContainerConfigError")
    })
    .await?
    .context("pod")?;
    let message = container_status(&waiting)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(message.contains("secret \"late\" not found"), "{message}");
    assert_eq!(phase(&waiting), Some("Pending"));
    assert_eq!(node.process_of("late"), None);

    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": "late" }, "stringData": { "token": "t0k" } }),
            )?,
        )
        .await?;
    eventually(LIMIT, || async { node.process_of("late") }).await?;
    eventually(LIMIT, || async {
        node.logs("late").contains("TOKEN=t0k").then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn exits_follow_the_restart_policy() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-restart").await?;
    for (name, policy, script) in [
        ("always", "Always", "exit 3"),
        ("never", "Never", "exit 3"),
        ("onfailure", "OnFailure", "exit 0"),
    ] {
        let pod = shell_pod(name, script, json!({ "restartPolicy": policy }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }

    // Always: restarted again and again, with back-off in between.
    let crashing = wait_for(&pods, "always", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status).is_some_and(|c| {
            c.restart_count >= 2 && c.state.as_ref().and_then(|s| s.waiting.as_ref()).is_some()
        })
    })
    .await?
    .context("pod")?;
    let cs = container_status(&crashing).context("status")?;
    assert_eq!(
        cs.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref()),
        Some("CrashLoopBackOff")
    );
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(3));
    assert_eq!(
        phase(&crashing),
        Some("Running"),
        "Always keeps the pod Running"
    );
    assert_eq!(condition(&crashing, "Ready").as_deref(), Some("False"));

    // Never: Failed, terminated with the exit code, one run only.
    let failed = wait_for(&pods, "never", LIMIT, |p: Option<&Pod>| {
        p.is_some_and(|p| phase(p) == Some("Failed"))
    })
    .await?
    .context("pod")?;
    let cs = container_status(&failed).context("status")?;
    let term = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(term.map(|t| t.exit_code), Some(3));
    assert_eq!(cs.restart_count, 0);
    assert_eq!(node.runs("never").len(), 1);

    // OnFailure and exit 0: Succeeded.
    let done = wait_for(&pods, "onfailure", LIMIT, |p: Option<&Pod>| {
        p.is_some_and(|p| phase(p) == Some("Succeeded"))
    })
    .await?
    .context("pod")?;
    let reason =
        container_status(&done).and_then(|c| c.state.as_ref()?.terminated.as_ref()?.reason.clone());
    assert_eq!(reason.as_deref(), Some("Completed"));
    Ok(())
}

/// A restarted node takes its pods up oldest first, as a kubelet does, not in the listing's
/// name order: after a node restart the chart's Redis and operator must not wait behind
/// hundreds of session pods. One start at a time here, so the order is the queue's.
#[tokio::test]
async fn a_restarted_node_starts_its_pods_oldest_first() -> Result<()> {
    let env = wasp_e2e::TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("node-order").await?;
    let opts = NodeOptions {
        parallel_starts: 1,
        ..NodeOptions::namespaced(&ns)
    };
    let mut node = LocalNode::start_with(client.clone(), shell(), opts).await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    // Creation times have whole seconds: a second apart, names in the other order.
    let oldest_first = ["z-oldest", "m-middle", "a-newest"];
    for name in oldest_first {
        pods.create(
            &PostParams::default(),
            &shell_pod(name, "exec sleep 600", json!({}))?,
        )
        .await?;
        eventually(LIMIT, || async { node.process_of(name) }).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    node.restart().await?;
    for name in oldest_first {
        eventually(LIMIT, || async { node.process_of(name) }).await?;
    }
    assert_eq!(node.pods_taken(), oldest_first);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn kill_9_restarts_the_process_in_the_same_pod() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-kill").await?;
    pods.create(
        &PostParams::default(),
        &shell_pod("k", "exec sleep 600", json!({}))?,
    )
    .await?;
    let first = eventually(LIMIT, || async { node.process_of("k") }).await?;
    let ip = node.pod_ip("k");
    assert_eq!(node.kill9("k").await?, first);
    let second = eventually(LIMIT, || async {
        node.process_of("k").filter(|p| *p != first)
    })
    .await?;
    let restarted = wait_for(&pods, "k", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.restart_count == 1 && c.ready)
    })
    .await?
    .context("pod")?;
    let cs = container_status(&restarted).context("status")?;
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| (t.exit_code, t.signal)), Some((137, Some(9))));
    assert_eq!(node.pod_ip("k"), ip, "same pod, same address");
    assert_eq!(node.restarts("k"), Some(1));
    let runs = node.runs("k");
    assert_eq!(
        runs.iter().map(|r| r.pid).collect::<Vec<_>>(),
        [first, second]
    );
    let end = runs[0].end.clone().context("first run ended")?;
    assert!(end.sigkill_sent && end.signal == Some(9), "{end:?}");
    Ok(())
}

#[tokio::test]
async fn deletion_is_graceful_then_forced_after_the_grace_period() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-delete").await?;
    let polite = "trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done";
    let stubborn = "trap '' TERM; while :; do sleep 0.1; done";
    pods.create(
        &PostParams::default(),
        &shell_pod("polite", polite, json!({}))?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &shell_pod(
            "stubborn",
            stubborn,
            json!({ "terminationGracePeriodSeconds": 1 }),
        )?,
    )
    .await?;
    for name in ["polite", "stubborn"] {
        wait_for(&pods, name, LIMIT, |p: Option<&Pod>| {
            p.and_then(container_status).is_some_and(|c| c.ready)
        })
        .await?;
    }

    for name in ["polite", "stubborn"] {
        let uid = pods.get(name).await?.uid().context("uid")?;
        let started = std::time::Instant::now();
        pods.delete(name, &DeleteParams::default()).await?;
        // Bound: Terminating until the node confirms.
        let terminating = pods.get_opt(name).await?;
        assert!(
            terminating.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "{name}"
        );
        wait_for(&pods, name, LIMIT, is_deleted(&uid)).await?;
        let took = started.elapsed();
        let end = node
            .runs(name)
            .pop()
            .and_then(|r| r.end)
            .context("the process ended")?;
        assert!(node.finished(name));
        if name == "polite" {
            assert!(end.graceful(), "{end:?}");
            assert!(node.logs(name).contains("bye"));
        } else {
            assert!(end.sigterm_sent && end.sigkill_sent, "{end:?}");
            assert_eq!(end.signal, Some(9));
            assert!(took >= Duration::from_secs(1), "{took:?}");
        }
    }

    // A forced deletion (grace 0) kills at once.
    pods.create(
        &PostParams::default(),
        &shell_pod("forced", stubborn, json!({}))?,
    )
    .await?;
    let pid = eventually(LIMIT, || async { node.process_of("forced") }).await?;
    pods.delete("forced", &DeleteParams::default().grace_period(0))
        .await?;
    eventually(LIMIT, || async { node.finished("forced").then_some(()) }).await?;
    let end = node
        .runs("forced")
        .pop()
        .and_then(|r| r.end)
        .context("ended")?;
    // (The apiserver may first report the pod with a deletion timestamp and grace 0, then the
    // node sends SIGTERM and SIGKILL at once; or only its removal: SIGKILL.)
    assert!(end.sigkill_sent && end.signal == Some(9), "{end:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            // a reused PID is someone else's process
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| !c.contains("sleep"))
        }
    );
    Ok(())
}

#[tokio::test]
async fn pods_of_unknown_images_and_unready_probes() -> Result<()> {
    let (_client, _ns, pods, node) = setup("node-other").await?;
    let foreign: Pod = serde_json::from_value(json!({
        "metadata": { "name": "foreign" },
        "spec": { "automountServiceAccountToken": false,
                  "containers": [{ "name": "main", "image": "wasp.invalid/none:0" }] }
    }))?;
    pods.create(&PostParams::default(), &foreign).await?;
    // Nothing listens on port 9 of the pod's address: never ready.
    let probed = shell_pod(
        "probed",
        "exec sleep 600",
        json!({ "container": { "readinessProbe": { "tcpSocket": { "port": 9 } } } }),
    )?;
    pods.create(&PostParams::default(), &probed).await?;
    let running = wait_for(&pods, "probed", LIMIT, |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await?
    .context("pod")?;
    assert_eq!(phase(&running), Some("Running"));
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));
    assert!(!container_status(&running).is_some_and(|c| c.ready));

    // The foreign pod, created first, was seen and left alone.
    let foreign = pods.get("foreign").await?;
    assert_eq!(foreign.spec.and_then(|s| s.node_name), None);
    assert!(foreign.status.and_then(|s| s.pod_ip).is_none());
    assert_eq!(node.process_of("foreign"), None);
    pods.delete("foreign", &DeleteParams::default()).await?;
    assert!(
        pods.get_opt("foreign").await?.is_none(),
        "unbound: deleted at once"
    );
    Ok(())
}
