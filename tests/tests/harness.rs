//! Tests of the test world itself: the local cluster answers, its controller-manager does its
//! work (namespaces, service accounts, garbage collection), Redis answers, the helpers behave.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::conditions::is_deleted;
use kube::{Api, ResourceExt};
use serde_json::json;
use wasp_e2e::crds::install_crds_from;
use wasp_e2e::procs::scratch_dir;
use wasp_e2e::{TestEnv, TimedOut, eventually, mark_pod_running, mark_pod_terminated, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// A pod nothing will ever run (there is no kubelet); enough for the API.
fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{ "name": "main", "image": "wasp.invalid/none:0" }]
        }
    }))?)
}

#[tokio::test]
async fn cluster_answers() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("default").await?.is_some());
    // the controller-manager's service-account controller made `default/default`
    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    assert!(sas.get_opt("default").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn namespaces_are_created_unique_and_ready_for_pods() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let a = env.namespace("Harness_NS").await?;
    let b = env.namespace("Harness_NS").await?;
    assert_ne!(a, b);
    assert!(a.starts_with("harness-ns-"), "{a}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&a).await?.is_some());
    // a pod that mounts its service-account token is admitted right away
    let mut p = pod("with-token")?;
    if let Some(spec) = p.spec.as_mut() {
        spec.automount_service_account_token = None;
    }
    let created = Api::<Pod>::namespaced(client, &a)
        .create(&PostParams::default(), &p)
        .await?;
    assert!(
        created
            .spec
            .and_then(|s| s.volumes)
            .is_some_and(|v| !v.is_empty())
    );
    Ok(())
}

/// Proves the controller-manager's garbage collector runs: deleting an owner removes its
/// dependents.
#[tokio::test]
async fn owned_pod_is_garbage_collected() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("gc").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let cm = cms.create(&PostParams::default(), &cm).await?;
    let mut p = pod("owned")?;
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: cm.name_any(),
        uid: cm.uid().context("owner uid")?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let p = pods.create(&PostParams::default(), &p).await?;
    let uid = p.uid().context("pod uid")?;

    cms.delete("owner", &DeleteParams::background()).await?;
    wait_for(&pods, "owned", LIMIT, is_deleted(&uid)).await?;
    Ok(())
}

/// Deleting a namespace removes it and what is in it (namespace controller).
#[tokio::test]
async fn namespace_deletion_completes() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let name = env.namespace("ns-delete").await?;
    Api::<Pod>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &pod("inside")?)
        .await?;
    let namespaces: Api<Namespace> = Api::all(client);
    let uid = namespaces
        .get(&name)
        .await?
        .uid()
        .context("namespace uid")?;
    namespaces.delete(&name, &DeleteParams::default()).await?;
    wait_for(&namespaces, &name, LIMIT, is_deleted(&uid)).await?;
    Ok(())
}

/// With no kubelet, a test writes pod status itself; an unbound pod goes away at once on delete,
/// whatever its grace period.
#[tokio::test]
async fn pods_can_be_marked_running_and_unbound_pods_delete_at_once() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("kubelet").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("p")?).await?;

    let p = mark_pod_running(&client, &ns, "p", "127.0.0.42").await?;
    let status = p.status.context("status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.42"));
    let ready = status.conditions.unwrap_or_default();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    let cs = status.container_statuses.unwrap_or_default();
    assert_eq!(cs.len(), 1);
    assert!(cs[0].ready && cs[0].state.as_ref().is_some_and(|s| s.running.is_some()));

    pods.delete("p", &DeleteParams::default().grace_period(30))
        .await?;
    assert!(
        pods.get_opt("p").await?.is_none(),
        "an unbound pod is deleted immediately"
    );

    pods.create(&PostParams::default(), &pod("q")?).await?;
    let q = mark_pod_terminated(&client, &ns, "q", 3).await?;
    assert_eq!(q.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    Ok(())
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.wasp.dev
spec:
  group: e2e.wasp.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
  - name: v1
    served: true
    storage: true
    subresources: { status: {} }
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: { size: { type: integer } }
          status:
            type: object
            properties: { phase: { type: string } }
"#;

/// CRDs are applied idempotently (also concurrently) and served once Established; custom
/// resources take server-side apply, also on their status subresource.
#[tokio::test]
async fn crds_install_idempotently_and_serve() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let dir = scratch_dir("wasp-e2e-test-crds")?;
    std::fs::write(dir.join("widget.yaml"), format!("---\n{WIDGET_CRD}\n---\n"))?;
    let (a, b) = tokio::join!(
        install_crds_from(&client, &dir),
        install_crds_from(&client, &dir)
    );
    assert_eq!(a?, vec!["widgets.e2e.wasp.dev".to_string()]);
    b?;
    install_crds_from(&client, &dir).await?;
    std::fs::remove_dir_all(&dir)?;

    let ns = env.namespace("crd").await?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.wasp.dev", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let ssa = PatchParams::apply("wasp-e2e");
    let w = json!({
        "apiVersion": "e2e.wasp.dev/v1", "kind": "Widget",
        "metadata": { "name": "w" }, "spec": { "size": 3 }
    });
    widgets.patch("w", &ssa, &Patch::Apply(&w)).await?;
    let s = json!({
        "apiVersion": "e2e.wasp.dev/v1", "kind": "Widget",
        "metadata": { "name": "w" }, "status": { "phase": "Ready" }
    });
    let got = widgets.patch_status("w", &ssa, &Patch::Apply(&s)).await?;
    assert_eq!(got.data["status"]["phase"], "Ready");
    assert_eq!(got.data["spec"]["size"], 3);
    Ok(())
}

/// The chart's CRDs install (idempotently), and since the local cluster gets them before its
/// controller-manager starts, a pod owned by a WhatsAppSession is garbage-collected at once when
/// the session goes (a CRD installed later would delay that by up to ~40 s).
#[tokio::test]
async fn chart_crds_install_and_their_owners_are_collected_promptly() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let (a, b) = tokio::join!(env.install_crds(&client), env.install_crds(&client));
    a?;
    b?;
    env.install_crds(&client).await?;

    let ns = env.namespace("chart-crds").await?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "wasp.dev",
        "v1alpha1",
        "WhatsAppSession",
    ));
    let sessions: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let s = json!({
        "apiVersion": "wasp.dev/v1alpha1", "kind": "WhatsAppSession",
        "metadata": { "name": "s" }, "spec": { "userId": "alice@example.com" }
    });
    let s = sessions
        .patch("s", &PatchParams::apply("wasp-e2e"), &Patch::Apply(&s))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let mut p = pod("session-pod")?;
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "wasp.dev/v1alpha1".into(),
        kind: "WhatsAppSession".into(),
        name: "s".into(),
        uid: s.uid().context("session uid")?,
        ..Default::default()
    }]);
    let uid = pods
        .create(&PostParams::default(), &p)
        .await?
        .uid()
        .context("pod uid")?;
    sessions.delete("s", &DeleteParams::background()).await?;
    let limit = if env.kube_state_dir().is_some() {
        Duration::from_secs(10)
    } else {
        LIMIT
    };
    wait_for(&pods, "session-pod", limit, is_deleted(&uid)).await?;
    Ok(())
}

#[tokio::test]
async fn redis_answers_ping() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = redis::Client::open(env.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[tokio::test]
async fn eventually_returns_the_value_or_times_out() -> anyhow::Result<()> {
    let mut calls = 0;
    let v = eventually(Duration::from_secs(5), || {
        calls += 1;
        let n = calls;
        async move { (n >= 3).then_some(n) }
    })
    .await?;
    assert_eq!(v, 3);
    let err: TimedOut = eventually(Duration::from_millis(200), || async { None::<()> })
        .await
        .expect_err("never true");
    assert!(err.after >= Duration::from_millis(200));
    Ok(())
}
