//! Service names reach the Service's ready endpoints through the node's proxy, and follow the
//! endpoints when the pod behind them is replaced.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::conditions::is_deleted;
use kube::{Api, ResourceExt as _};
use serde_json::json;
use wasp_e2e::{eventually, wait_for};

use crate::common::{LIMIT, create, logs_with, ready, setup_with, shell_and_redis, shell_pod};

/// A Redis pod labelled `app=redis`, listening on port 6380 (named `redis`) of its address.
fn redis_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "redis" } },
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "redis", "image": "e2e/redis:7",
                "args": ["--bind", "0.0.0.0", "--port", "6380", "--save", "", "--appendonly", "no"],
                "ports": [{ "name": "redis", "containerPort": 6380 }],
                "readinessProbe": { "tcpSocket": { "port": "redis" } }
            }]
        }
    }))?)
}

async fn redis_at(ip: Ipv4Addr) -> Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(format!("redis://{ip}:6379"))?
        .get_multiplexed_async_connection()
        .await?)
}

/// A restarted node keeps the addresses its Services show (scripts/up prints the API's address;
/// it must not change with a `scripts/down` and `scripts/up`), and takes up the pods again.
#[tokio::test]
async fn a_restarted_node_keeps_its_service_addresses() -> Result<()> {
    let (client, ns, pods, node) = setup_with("node-svc-keep", shell_and_redis()).await?;
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    // Two Services, so the second's address is not simply the first one handed out.
    for name in ["first", "wasp-redis"] {
        create(&services, json!({
            "metadata": { "name": name },
            "spec": { "selector": { "app": "redis" }, "ports": [{ "port": 6379, "targetPort": "redis" }] }
        }))
        .await?;
    }
    pods.create(&PostParams::default(), &redis_pod("redis-1")?)
        .await?;
    ready(&pods, "redis-1").await?;
    let shown = |svc: Service| {
        svc.annotations()
            .get(wasp_node::proxy::ADDRESS_ANNOTATION)
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
    };
    let before = eventually(LIMIT, || async {
        shown(services.get("wasp-redis").await.ok()?)
    })
    .await?;
    assert_eq!(node.service_ip("wasp-redis"), Some(before));
    let name = node.name().to_owned();
    node.shutdown().await?;

    // The same node again (its name: the pods are bound to it).
    let opts = wasp_node::NodeOptions {
        name: Some(name),
        service_block: Some(before.octets()[1]),
        ..wasp_node::NodeOptions::namespaced(&ns)
    };
    let env = wasp_e2e::TestEnv::get();
    let again =
        wasp_node::LocalNode::start_from_config(env.kube_config().await?, shell_and_redis(), opts)
            .await?;
    ready(&pods, "redis-1").await?;
    let after = eventually(LIMIT, || async { again.service_ip("wasp-redis") }).await?;
    assert_eq!(
        after, before,
        "the Service kept its address across the restart"
    );
    eventually(LIMIT, || async {
        let mut c = redis_at(after).await.ok()?;
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        pong.ok()
    })
    .await
    .context("the restarted node proxies the kept address")?;
    again.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn service_names_reach_the_ready_endpoint_and_follow_a_new_pod() -> Result<()> {
    let (client, ns, pods, node) = setup_with("node-svc", shell_and_redis()).await?;
    create(&Api::<Service>::namespaced(client.clone(), &ns), json!({
        "metadata": { "name": "wasp-redis" },
        "spec": { "selector": { "app": "redis" }, "ports": [{ "port": 6379, "targetPort": "redis" }] }
    }))
    .await?;
    pods.create(&PostParams::default(), &redis_pod("redis-1")?)
        .await?;
    ready(&pods, "redis-1").await?;

    // The name in an env value (a URL) and in an argument, both forms.
    let script = r#"while :; do echo "ping $(redis-cli -u "$URL" ping 2>&1) via $1 and $(redis-cli -h "${1%:*}" -p 6379 ping 2>&1)"; sleep 0.2; done"#;
    let mut client_pod = shell_pod(
        "client",
        script,
        json!({ "container": { "env": [{ "name": "URL", "value": format!("redis://wasp-redis.{ns}.svc:6379/0") }] } }),
    )?;
    if let Some(c) = client_pod.spec.as_mut().map(|s| &mut s.containers[0]) {
        c.args = Some(vec![
            "-c".into(),
            script.into(),
            "sh".into(),
            format!("wasp-redis.{ns}.svc.cluster.local:6379"),
        ]);
    }
    pods.create(&PostParams::default(), &client_pod).await?;
    let svc_ip = eventually(LIMIT, || async { node.service_ip("wasp-redis") }).await?;
    assert_eq!(svc_ip.octets()[0], 127);
    assert_ne!(
        Some(svc_ip),
        node.pod_ip("redis-1"),
        "the Service has an address of its own"
    );
    logs_with(
        &node,
        "client",
        None,
        &format!("ping PONG via {svc_ip}:6379 and PONG"),
    )
    .await?;

    // The test reaches the same address: the first pod's Redis.
    let mut conn = redis_at(svc_ip).await?;
    let _: () = redis::cmd("SET")
        .arg("first")
        .arg("1")
        .query_async(&mut conn)
        .await?;

    // Replace the pod: the Service follows to the new pod's address (a fresh Redis).
    let old_ip = node.pod_ip("redis-1").context("address")?;
    let uid = pods.get("redis-1").await?.uid().context("uid")?;
    pods.delete("redis-1", &DeleteParams::default()).await?;
    wait_for(&pods, "redis-1", LIMIT, is_deleted(&uid)).await?;
    pods.create(&PostParams::default(), &redis_pod("redis-2")?)
        .await?;
    ready(&pods, "redis-2").await?;
    assert_ne!(node.pod_ip("redis-2"), Some(old_ip));
    let first: Option<String> = eventually(LIMIT, || async {
        let mut c = redis_at(svc_ip).await.ok()?;
        let v: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg("first").query_async(&mut c).await;
        v.ok()
    })
    .await?;
    assert_eq!(first, None, "a new endpoint: the new pod's empty Redis");
    let before = node.logs("client").len();
    eventually(LIMIT, || async {
        node.logs("client")[before..]
            .contains("ping PONG via")
            .then_some(())
    })
    .await
    .context("the client pod reaches the new endpoint by name")?;
    Ok(())
}

#[tokio::test]
async fn a_deployments_pods_run_and_its_service_spreads_connections_over_them() -> Result<()> {
    let (client, ns, pods, node) = setup_with("node-deploy", shell_and_redis()).await?;
    let template = serde_json::to_value(redis_pod("unused")?)?;
    create(&Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns), json!({
        "metadata": { "name": "redis" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "redis" } },
            "template": { "metadata": { "labels": { "app": "redis" } }, "spec": template["spec"] }
        }
    }))
    .await?;
    create(&Api::<Service>::namespaced(client.clone(), &ns), json!({
        "metadata": { "name": "redis" },
        "spec": { "selector": { "app": "redis" }, "ports": [{ "port": 6379, "targetPort": 6380 }] }
    }))
    .await?;
    // The ReplicaSet controller's pods (generated names) are bound to the node and get Ready.
    let running = eventually(LIMIT, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| crate::common::condition(p, "Ready").as_deref() == Some("True"))
            .collect();
        (ready.len() == 2).then_some(ready)
    })
    .await
    .context("two ready replicas")?;
    for p in &running {
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node.name())
        );
    }
    // New connections go round robin: both Redis processes answer.
    let svc_ip = eventually(LIMIT, || async { node.service_ip("redis") }).await?;
    let mut run_ids = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let mut c = eventually(LIMIT, || async { redis_at(svc_ip).await.ok() }).await?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::to_owned);
        run_ids.insert(id.context("run_id")?);
    }
    assert_eq!(run_ids.len(), 2, "{run_ids:?}");
    Ok(())
}
