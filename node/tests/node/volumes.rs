//! emptyDir volumes shared by a pod's containers, Secret and ConfigMap volumes, claims that
//! outlive their pods (a StatefulSet's pod gets its claim's directory back), and the log files.

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::conditions::is_deleted;
use kube::{Api, ResourceExt as _};
use serde_json::json;
use wasp_e2e::{eventually, wait_for};

use crate::common::{LIMIT, create, logs_with, ready, setup};

#[tokio::test]
async fn an_empty_dir_is_shared_by_the_pods_containers_and_goes_with_the_pod() -> Result<()> {
    let (_client, ns, pods, node) = setup("node-emptydir").await?;
    let container = |name: &str, script: &str| {
        json!({
            "name": name, "image": "e2e/shell:1", "args": ["-c", script],
            "env": [{ "name": "HELLO", "value": "/scratch/hello" }],
            "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }]
        })
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "shared" },
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
            "containers": [
                // The path convention: HELLO names the file under the volume's directory.
                // Written whole, then renamed: the reader must never see a created, empty file.
                container("writer", r#"echo hi > "$HELLO.tmp"; mv "$HELLO.tmp" "$HELLO"; echo "wrote $HELLO"; exec sleep 600"#),
                // The volume variable names the directory itself.
                container("reader", r#"until [ -f "$WASP_NODE_VOLUME_SCRATCH/hello" ]; do sleep 0.1; done; echo "read $(cat "$WASP_NODE_VOLUME_SCRATCH/hello")"; exec sleep 600"#),
            ]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    logs_with(&node, "shared", Some("reader"), "read hi").await?;
    let dir = node.pod_dir("shared").context("pod dir")?;
    let file = dir.join("volumes/scratch/hello");
    let writer = logs_with(&node, "shared", Some("writer"), "wrote").await?;
    assert_eq!(writer.trim(), format!("wrote {}", file.display()));
    assert_eq!(std::fs::read_to_string(&file)?, "hi\n");

    // Log files: <state>/logs/<ns>_<pod>_<container>.log.
    for c in ["writer", "reader"] {
        let log = node.log_dir().join(format!("{ns}_shared_{c}.log"));
        assert!(log.is_file(), "{}", log.display());
    }

    let uid = pods.get("shared").await?.uid().context("uid")?;
    pods.delete("shared", &DeleteParams::default()).await?;
    wait_for(&pods, "shared", LIMIT, is_deleted(&uid)).await?;
    eventually(LIMIT, || async { (!dir.exists()).then_some(()) })
        .await
        .context("the pod's directory outlived it")?;
    let log = node.log_dir().join(format!("{ns}_shared_reader.log"));
    assert!(
        std::fs::read_to_string(log)?.contains("read hi"),
        "logs stay"
    );
    Ok(())
}

#[tokio::test]
async fn secret_and_config_map_volumes_hold_their_keys_as_files() -> Result<()> {
    let (client, ns, pods, node) = setup("node-files").await?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    create(&cms, json!({ "metadata": { "name": "conf" }, "data": { "app.conf": "level=debug", "other": "x" } })).await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    create(
        &secrets,
        json!({ "metadata": { "name": "creds" }, "stringData": { "password": "pw" } }),
    )
    .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "files" },
        "spec": {
            "automountServiceAccountToken": false,
            "volumes": [
                { "name": "conf", "configMap": { "name": "conf", "items": [{ "key": "app.conf", "path": "etc/app.conf" }] } },
                { "name": "creds", "secret": { "secretName": "creds" } },
            ],
            "containers": [{
                "name": "main", "image": "e2e/shell:1",
                "args": ["-c", r#"echo "conf=$(cat "$1") listing=$(ls "$WASP_NODE_VOLUME_CONF" | tr '\n' ' ') password=$(cat "$2")"; exec sleep 600"#,
                         "sh", "/config/etc/app.conf", "/secrets/password"],
                "volumeMounts": [
                    { "name": "conf", "mountPath": "/config" },
                    { "name": "creds", "mountPath": "/secrets", "readOnly": true },
                ]
            }]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let logs = logs_with(&node, "files", None, "conf=").await?;
    assert_eq!(logs.trim(), "conf=level=debug listing=etc  password=pw");
    let secret_file = node
        .pod_dir("files")
        .context("dir")?
        .join("volumes/creds/password");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(secret_file)?.permissions());
    assert_eq!(mode & 0o077, 0, "a Secret's files are private");
    Ok(())
}

#[tokio::test]
async fn a_stateful_sets_claim_is_bound_survives_its_pod_and_the_new_pod_gets_it_back() -> Result<()>
{
    let (client, ns, pods, node) = setup("node-pvc").await?;
    let script =
        r#"echo boot >> "$DATA/boots"; echo "boots=$(wc -l < "$DATA/boots")"; exec sleep 600"#;
    create(&Api::<StatefulSet>::namespaced(client.clone(), &ns), json!({
        "metadata": { "name": "web" },
        "spec": {
            "serviceName": "web",
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main", "image": "e2e/shell:1", "args": ["-c", script],
                        "env": [{ "name": "DATA", "value": "/data" }],
                        "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "10Mi" } } }
            }]
        }
    }))
    .await?;
    let first = ready(&pods, "web-0").await?;
    logs_with(&node, "web-0", None, "boots=1").await?;

    // The claim the StatefulSet controller made is Bound to the node's volume.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim = claims.get("data-web-0").await?;
    assert_eq!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
    let pv_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .context("volumeName")?;
    assert_eq!(pv_name, format!("pvc-{}", claim.uid().unwrap_or_default()));
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await?;
    let path = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .context("hostPath")?;
    assert!(
        path.starts_with(
            &node
                .state_dir()
                .join("volumes")
                .to_string_lossy()
                .into_owned()
        ),
        "{path}"
    );

    // The pod goes; the controller makes a new one, which finds what the first one wrote.
    pods.delete("web-0", &DeleteParams::default()).await?;
    wait_for(
        &pods,
        "web-0",
        LIMIT,
        is_deleted(&first.uid().unwrap_or_default()),
    )
    .await?;
    let second = ready(&pods, "web-0").await?;
    assert_ne!(second.uid(), first.uid());
    logs_with(&node, "web-0", None, "boots=2").await?;
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&path).join("boots"))?,
        "boot\nboot\n"
    );
    Ok(())
}
