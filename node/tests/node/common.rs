//! What every node test uses: the shell "image", pods running a script, the node in a fresh
//! namespace, status accessors.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use serde_json::json;
use wasp_e2e::TestEnv;
use wasp_node::{Image, Images, LocalNode, NodeOptions};

pub const LIMIT: Duration = Duration::from_secs(30);

pub fn shell() -> Images {
    Images::new().with(
        "e2e/shell",
        Image::new("/bin/sh").env("FROM_IMAGE", "image"),
    )
}

/// A pod running `script` in `/bin/sh -c`, with `spec` merged into its spec.
pub fn shell_pod(name: &str, script: &str, spec: serde_json::Value) -> Result<Pod> {
    let mut pod = json!({
        "metadata": { "name": name, "labels": { "app": "shell" } },
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{ "name": "main", "image": "e2e/shell:1", "args": ["-c", script] }]
        }
    });
    if let (Some(base), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            if k == "container" {
                if let (Some(c), Some(fields)) =
                    (base["containers"][0].as_object_mut(), v.as_object())
                {
                    c.extend(fields.clone());
                }
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(serde_json::from_value(pod)?)
}

pub async fn setup(prefix: &str) -> Result<(Client, String, Api<Pod>, LocalNode)> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace(prefix).await?;
    let node = LocalNode::start(client.clone(), &ns, shell()).await?;
    let pods = Api::namespaced(client.clone(), &ns);
    Ok((client, ns, pods, node))
}

pub fn container_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

pub fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

pub fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// Like [`setup`], but the node is started from the cluster's configuration, so pods with a
/// service account get credentials; `images` replace the shell image.
pub async fn setup_with(
    prefix: &str,
    images: Images,
) -> Result<(Client, String, Api<Pod>, LocalNode)> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace(prefix).await?;
    let node = LocalNode::start_from_config(
        env.kube_config().await?,
        images,
        NodeOptions::namespaced(&ns),
    )
    .await?;
    let pods = Api::namespaced(client.clone(), &ns);
    Ok((client, ns, pods, node))
}

/// The shell image and `/usr/bin/redis-server` as `e2e/redis`.
pub fn shell_and_redis() -> Images {
    let mut images = shell();
    images = images.with("e2e/redis", Image::new("/usr/bin/redis-server"));
    images
}

/// Waits until pod `name` is Ready.
pub async fn ready(pods: &Api<Pod>, name: &str) -> Result<Pod> {
    use anyhow::Context as _;
    wasp_e2e::wait_for(pods, name, LIMIT, |p: Option<&Pod>| {
        p.is_some_and(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await?
    .context("pod")
}

/// Waits until `node.container_logs(pod, container)` contains `needle`; returns the logs.
pub async fn logs_with(
    node: &LocalNode,
    pod: &str,
    container: Option<&str>,
    needle: &str,
) -> Result<String> {
    let found = wasp_e2e::eventually(LIMIT, || async {
        let logs = node.container_logs(pod, container);
        logs.contains(needle).then_some(logs)
    })
    .await;
    match found {
        Ok(l) => Ok(l),
        Err(e) => anyhow::bail!(
            "{e}: {needle:?} not in the logs of {pod}:\n{}",
            node.container_logs(pod, container)
        ),
    }
}

/// Creates `v` (JSON) in the namespace of `api`.
pub async fn create<K>(api: &Api<K>, v: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    Ok(api
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(v)?,
        )
        .await?)
}
