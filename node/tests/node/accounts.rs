//! Pods with a service account get that account's credentials, and only its rights.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use wasp_e2e::eventually;

use crate::common::{LIMIT, create, logs_with, setup_with, shell, shell_pod};

/// Lists a ConfigMap (allowed by the account's Role) and Secrets (not allowed) with kubectl,
/// which finds the credentials through `KUBECONFIG`.
const SCRIPT: &str = r#"echo "KUBECONFIG=[$KUBECONFIG]"
kubectl get configmap c -o name 2>&1; echo "configmaps rc=$?"
kubectl get secrets 2>&1; echo "secrets rc=$?"
exec sleep 600"#;

#[tokio::test]
async fn a_pods_process_may_do_what_its_service_account_may_and_nothing_more() -> Result<()> {
    let (client, ns, pods, node) = setup_with("node-sa", shell()).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": "reader" } }))?,
    )
    .await?;
    create(
        &Api::<Role>::namespaced(client.clone(), &ns),
        json!({
            "metadata": { "name": "read-configmaps" },
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }]
        }),
    )
    .await?;
    create(&Api::<RoleBinding>::namespaced(client.clone(), &ns), json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }]
    }))
    .await?;
    create(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        json!({ "metadata": { "name": "c" }, "data": { "k": "v" } }),
    )
    .await?;
    // The ServiceAccount admission plugin admits pods of an account once it has its token.
    eventually(LIMIT, || async {
        let sa = sas.get_opt("reader").await.ok()??;
        sa.secrets.is_some_and(|s| !s.is_empty()).then_some(())
    })
    .await
    .context("the account's token secret")?;

    // 1.20: the admission plugin mounts the account's token Secret; the node takes it from there.
    let account = json!({ "automountServiceAccountToken": true, "serviceAccountName": "reader" });
    pods.create(
        &PostParams::default(),
        &shell_pod("mounted", SCRIPT, account.clone())?,
    )
    .await?;
    // A pod whose token mount is taken by a volume of its own: the node asks the TokenRequest API.
    let mut requested = account.clone();
    requested["volumes"] = json!([{ "name": "own", "emptyDir": {} }]);
    requested["container"] = json!({ "volumeMounts": [
        { "name": "own", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" }] });
    pods.create(
        &PostParams::default(),
        &shell_pod("requested", SCRIPT, requested)?,
    )
    .await?;
    // Opted out: no credentials at all.
    pods.create(
        &PostParams::default(),
        &shell_pod("none", SCRIPT, json!({}))?,
    )
    .await?;

    let user = format!("system:serviceaccount:{ns}:reader");
    for pod in ["mounted", "requested"] {
        let logs = logs_with(&node, pod, None, "secrets rc=").await?;
        let dir = node.pod_dir(pod).context("pod dir")?;
        let kubeconfig = dir.join("serviceaccount/kubeconfig");
        assert!(
            logs.contains(&format!("KUBECONFIG=[{}]", kubeconfig.display())),
            "{pod}: {logs}"
        );
        assert!(
            logs.contains("configmap/c\nconfigmaps rc=0"),
            "{pod}: allowed by the Role: {logs}"
        );
        assert!(logs.contains("(Forbidden)"), "{pod}: {logs}");
        assert!(
            logs.contains(&format!("User \"{user}\" cannot list resource \"secrets\"")),
            "{pod}: refused as the account: {logs}"
        );
        assert!(logs.contains("secrets rc=1"), "{pod}: {logs}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("serviceaccount/token"))?.permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the token is private");
    }
    let logs = logs_with(&node, "none", None, "secrets rc=").await?;
    assert!(logs.contains("KUBECONFIG=[]"), "{logs}");
    assert!(
        !logs.contains("configmaps rc=0"),
        "no credentials, no access: {logs}"
    );
    Ok(())
}
