//! The Helm chart `charts/wasp` through the real Helm v4 SDK (scripts/helm.py): strict lint,
//! renders with default and varied values asserted object by object, the values schema's
//! refusals, the README's values table, server-side dry-run of the rendered objects against the
//! local v1.20 apiserver, and an install → upgrade → uninstall in a namespace of it.
//!
//! The rendered Deployments' environment is parsed by the binaries' own `Config` parsers, and
//! the operator's real pod builder makes a session pod from it, so the chart's values, the
//! binaries' settings and the NetworkPolicies are checked against each other.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::Api;
use serde_json::{Value, json};
use wasp_e2e::helm::{self, Refused, Release};
use wasp_e2e::{TestEnv, eventually};

const NS: &str = "clinic";

fn repo() -> std::path::PathBuf {
    // The test world's root without starting it (rendering needs no cluster).
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}

fn render(values: &[&Value]) -> anyhow::Result<Vec<Value>> {
    helm::render(&repo(), "wasp", NS, values)
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {}", kinds(objs).join(", ")))
}

fn has(objs: &[Value], kind: &str, name: &str) -> bool {
    objs.iter()
        .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The first container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// A container's env as name → `value`, `secret:<name>/<key>` or `field:<path>`.
fn env_of(container: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let v = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(s) = e["valueFrom"]["secretKeyRef"].as_object() {
            format!(
                "secret:{}/{}",
                s["name"].as_str().unwrap_or_default(),
                s["key"].as_str().unwrap_or_default()
            )
        } else if let Some(p) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            format!("field:{p}")
        } else {
            panic!("env {name}: neither value, Secret nor field: {e}")
        };
        assert!(out.insert(name.clone(), v).is_none(), "env {name} twice");
    }
    out
}

fn secret_value(objs: &[Value], name: &str, key: &str) -> Vec<u8> {
    let data = find(objs, "Secret", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
    data_encoding::BASE64
        .decode(data.as_bytes())
        .expect("base64 Secret data")
}

/// Command-line arguments a clap parser takes for the container's plain env values, the
/// Secret/field references replaced by `placeholder(name)`: as the binary would start.
fn args_from_env(
    cmd: clap::Command,
    env: &BTreeMap<String, String>,
    placeholder: impl Fn(&str) -> String,
) -> Vec<String> {
    let mut args = vec![cmd.get_name().to_owned()];
    for arg in cmd.get_arguments() {
        let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        let Some(value) = env.get(var) else { continue };
        let value = if value.starts_with("secret:") || value.starts_with("field:") {
            placeholder(var)
        } else {
            value.clone()
        };
        let flag = format!("--{}", arg.get_long().expect("long flag"));
        if arg.get_action().takes_values() {
            args.push(flag);
            args.push(value);
        } else if ["true", "1", "yes", "on"].contains(&value.as_str()) {
            // A switch (e.g. `--dev-insecure-auth`): clap reads its env as true/false.
            args.push(flag);
        }
    }
    args
}

/// Every env variable a binary reads (clap's `env` of each argument).
fn env_names(cmd: clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env().and_then(|v| v.to_str()).map(str::to_owned))
        .collect()
}

fn operator_config(objs: &[Value], fullname: &str) -> wasp_operator::Config {
    let op = find(objs, "Deployment", &format!("{fullname}-operator"));
    let env = env_of(container(op));
    let args = args_from_env(wasp_operator::Config::command(), &env, |v| match v {
        "REDIS_URL" => "redis://redis.invalid:6379".into(),
        other => format!("from-{other}"),
    });
    wasp_operator::Config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the operator refuses the chart's env {args:?}: {e}"))
}

fn api_config(objs: &[Value], fullname: &str) -> wasp_api::config::Config {
    let api = find(objs, "Deployment", &format!("{fullname}-api"));
    let env = env_of(container(api));
    let args = args_from_env(wasp_api::config::Config::command(), &env, |v| match v {
        "REDIS_URL" => "redis://redis.invalid:6379".into(),
        other => format!("from-{other}"),
    });
    wasp_api::config::Config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the API refuses the chart's env {args:?}: {e}"))
}

/// The session pod reads no master key: not by env, not from the master-key Secret by any
/// name; its auth-state keys are its user's keyring from its own control Secret.
fn assert_no_master_key(pod: &Value, master_secret: &str) {
    let text = pod.to_string();
    assert!(
        !text.contains(&format!("\"{master_secret}\"")),
        "the session pod references the master-key Secret {master_secret}: {text}"
    );
    assert!(!text.contains("MASTER"), "{text}");
    let env = env_of(&pod["spec"]["containers"][0]);
    let control = format!(
        "{}-control",
        pod["metadata"]["name"].as_str().unwrap_or_default()
    );
    assert_eq!(env["WASP_USER_KEYS"], format!("secret:{control}/userKeys"));
    assert_eq!(env["WASP_USER_KEY_IDS"], "42");
}

/// The session pod the operator would create under this release's settings.
fn session_pod(config: &wasp_operator::Config) -> Value {
    let mut session = wasp_crds::WhatsAppSession::for_user("dr.meier@clinic.example");
    session.metadata.namespace = Some(NS.into());
    session.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    let settings = wasp_operator::resources::PodSettings::from(config);
    let pod =
        wasp_operator::resources::session_pod(&session, &settings, "42").expect("session pod");
    serde_json::to_value(pod).expect("pod as JSON")
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| labels[k] == *v))
        && selector.get("matchExpressions").is_none()
}

fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

fn ports(rule: &Value) -> Vec<(i64, String)> {
    rule["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["port"].as_i64().unwrap_or(-1),
                p["protocol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn lint_is_clean_in_strict_mode() -> anyhow::Result<()> {
    for (what, values) in [
        ("defaults", json!({})),
        ("varied", varied_values()),
        (
            "external redis",
            json!({"redis": {"enabled": false}, "externalRedis": {"url": "redis://r:6379"}}),
        ),
    ] {
        for kube in ["v1.20.2", "v1.30.0"] {
            let report = helm::run(
                &repo(),
                &[
                    "lint",
                    "--strict",
                    "--namespace",
                    NS,
                    "--kube-version",
                    kube,
                ],
                &[&values],
            )?;
            assert_eq!(report["errors"], json!([]), "{what} on {kube}: {report}");
            let serious: Vec<&Value> = report["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
                .collect();
            assert!(serious.is_empty(), "{what} on {kube}: {serious:?}");
        }
    }
    Ok(())
}

#[test]
fn defaults_render_every_part_with_secure_pods() -> anyhow::Result<()> {
    let objs = render(&[])?;
    let mut names: Vec<String> = kinds(&objs);
    names.sort();
    let mut expected: Vec<String> = [
        "Deployment/wasp-api",
        "Deployment/wasp-operator",
        "NetworkPolicy/wasp-api",
        "NetworkPolicy/wasp-operator",
        "NetworkPolicy/wasp-redis",
        "NetworkPolicy/wasp-session",
        "PodDisruptionBudget/wasp-api",
        "PodDisruptionBudget/wasp-operator",
        "Role/wasp-api",
        "Role/wasp-operator",
        "RoleBinding/wasp-api",
        "RoleBinding/wasp-operator",
        "Secret/wasp-jwt",
        "Secret/wasp-master-key",
        "Secret/wasp-redis",
        "Service/wasp-api",
        "Service/wasp-api-metrics",
        "Service/wasp-operator-metrics",
        "Secret/wasp-webhooks",
        "Service/wasp-redis",
        "ServiceAccount/wasp-api",
        "ServiceAccount/wasp-operator",
        "ServiceAccount/wasp-redis",
        "StatefulSet/wasp-redis",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(names, expected);

    for o in &objs {
        let labels = &o["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
        ] {
            assert!(
                labels[key].is_string(),
                "{} lacks {key}",
                kinds(std::slice::from_ref(o))[0]
            );
        }
        assert_eq!(o["metadata"]["namespace"], NS);
    }

    // Offline, Helm's default capabilities include policy/v1.
    assert_eq!(
        find(&objs, "PodDisruptionBudget", "wasp-api")["apiVersion"],
        "policy/v1"
    );

    let app_version = "0.1.0";
    for (kind, name, image, replicas) in [
        (
            "Deployment",
            "wasp-operator",
            format!("wasp/operator:{app_version}"),
            2,
        ),
        (
            "Deployment",
            "wasp-api",
            format!("wasp/api:{app_version}"),
            2,
        ),
        ("StatefulSet", "wasp-redis", "redis:7.2".to_owned(), 1),
    ] {
        let w = find(&objs, kind, name);
        assert_eq!(w["spec"]["replicas"], replicas, "{name}");
        let pod = &w["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert_eq!(psc["runAsUser"], 65532, "{name}");
        assert_eq!(psc["runAsGroup"], 65532, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_eq!(pod["enableServiceLinks"], false, "{name}");
        let c = container(w);
        assert_eq!(c["image"], image.as_str(), "{name}");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{name}");
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(c["readinessProbe"].is_object() && c["livenessProbe"].is_object());
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        // The selector selects the pod template (and only this component).
        assert!(
            labels_match(&w["spec"]["selector"], pod_labels(w)),
            "{name}"
        );
    }
    // Only the operator and the API talk to Kubernetes; Redis has no token.
    let sa_token = |name: &str| {
        find(
            &objs,
            name.split('/').next().unwrap_or_default(),
            name.split('/').nth(1).unwrap_or_default(),
        )["spec"]["template"]["spec"]["automountServiceAccountToken"]
            .clone()
    };
    assert_eq!(sa_token("Deployment/wasp-operator"), true);
    assert_eq!(sa_token("Deployment/wasp-api"), true);
    assert_eq!(sa_token("StatefulSet/wasp-redis"), false);
    for sa in ["wasp-operator", "wasp-api", "wasp-redis"] {
        assert_eq!(
            find(&objs, "ServiceAccount", sa)["automountServiceAccountToken"],
            false
        );
    }

    // Redis: AOF on a PVC from volumeClaimTemplates, a password from the generated Secret.
    let redis = find(&objs, "StatefulSet", "wasp-redis");
    let c = container(redis);
    assert_eq!(c["command"], json!(["redis-server"]));
    let args: Vec<&str> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    assert_eq!(after("--appendonly"), Some("yes"));
    assert_eq!(after("--appendfsync"), Some("everysec"));
    assert_eq!(after("--dir"), Some("/data"));
    assert_eq!(after("--requirepass"), Some("$(REDIS_PASSWORD)"));
    assert_eq!(env_of(c)["REDIS_PASSWORD"], "secret:wasp-redis/password");
    let claim = &redis["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(
        find(&objs, "Service", "wasp-redis")["spec"]["ports"][0]["port"],
        6379
    );
    assert_eq!(
        find(&objs, "Service", "wasp-api")["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"})
    );
    Ok(())
}

#[test]
fn generated_secrets_hold_usable_keys() -> anyhow::Result<()> {
    let objs = render(&[])?;
    let master = secret_value(&objs, "wasp-master-key", "masterKey");
    let key = data_encoding::BASE64
        .decode(&master)
        .expect("base64 master key");
    assert_eq!(key.len(), 32, "a 32-byte master key");
    // The session pod's own parser takes it.
    wasp_common::crypto::MasterKey::parse(std::str::from_utf8(&master)?)?;
    let ms = find(&objs, "Secret", "wasp-master-key");
    assert_eq!(
        ms["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    let jwt = secret_value(&objs, "wasp-jwt", "jwtSecret");
    assert_eq!(jwt.len(), 48);

    let password = String::from_utf8(secret_value(&objs, "wasp-redis", "password"))?;
    assert_eq!(password.len(), 32);
    let url = String::from_utf8(secret_value(&objs, "wasp-redis", "url"))?;
    assert_eq!(url, format!("redis://:{password}@wasp-redis.{NS}.svc:6379"));
    redis::Client::open(url.as_str()).context("the Redis URL parses")?;

    // Fresh values on every offline render (no cluster to look the old ones up in).
    let again = render(&[])?;
    assert_ne!(secret_value(&again, "wasp-master-key", "masterKey"), master);

    // A given HS256 secret and Redis password are used as they are.
    let objs = render(&[&json!({
        "api": {"auth": {"jwtSecret": {"value": "s3cret"}}},
        "redis": {"auth": {"password": "p@ss word"}}
    })])?;
    assert_eq!(secret_value(&objs, "wasp-jwt", "jwtSecret"), b"s3cret");
    let url = String::from_utf8(secret_value(&objs, "wasp-redis", "url"))?;
    assert_eq!(
        url,
        format!("redis://:p%40ss+word@wasp-redis.{NS}.svc:6379")
    );
    Ok(())
}

#[test]
fn rbac_is_least_privilege_and_namespaced() -> anyhow::Result<()> {
    let objs = render(&[])?;
    assert!(
        !objs
            .iter()
            .any(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding"),
        "nothing cluster-wide"
    );
    let rules = |name: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in find(&objs, "Role", name)["rules"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for g in r["apiGroups"].as_array().into_iter().flatten() {
                for res in r["resources"].as_array().into_iter().flatten() {
                    for v in r["verbs"].as_array().into_iter().flatten() {
                        out.insert(format!(
                            "{}/{} {}",
                            g.as_str().unwrap_or_default(),
                            res.as_str().unwrap_or_default(),
                            v.as_str().unwrap_or_default()
                        ));
                    }
                }
            }
        }
        out
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    // docs/operator.md "The operator needs RBAC for", plus finalizers/update for owner
    // references with blockOwnerDeletion.
    assert_eq!(
        rules("wasp-operator"),
        set(&[
            "wasp.dev/whatsappsessions get",
            "wasp.dev/whatsappsessions list",
            "wasp.dev/whatsappsessions watch",
            "wasp.dev/whatsappsessions patch",
            "wasp.dev/whatsappsessions/status get",
            "wasp.dev/whatsappsessions/status patch",
            "wasp.dev/whatsappsessions/finalizers update",
            "/pods get",
            "/pods list",
            "/pods watch",
            "/pods create",
            "/pods delete",
            "/secrets get",
            "/secrets create",
            "/secrets patch",
            "events.k8s.io/events create",
            "events.k8s.io/events patch",
            "coordination.k8s.io/leases get",
            "coordination.k8s.io/leases create",
            "coordination.k8s.io/leases patch",
        ])
    );
    // docs/api.md "RBAC".
    assert_eq!(
        rules("wasp-api"),
        set(&[
            "wasp.dev/whatsappsessions get",
            "wasp.dev/whatsappsessions list",
            "wasp.dev/whatsappsessions watch",
            "wasp.dev/whatsappsessions create",
            "wasp.dev/whatsappsessions patch",
            "/secrets get",
            "/secrets list",
            "/secrets watch",
        ])
    );
    for (binding, sa, deployment) in [
        ("wasp-operator", "wasp-operator", "wasp-operator"),
        ("wasp-api", "wasp-api", "wasp-api"),
    ] {
        let b = find(&objs, "RoleBinding", binding);
        assert_eq!(b["roleRef"]["kind"], "Role");
        assert_eq!(b["roleRef"]["name"], binding);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": NS}])
        );
        assert_eq!(
            find(&objs, "Deployment", deployment)["spec"]["template"]["spec"]["serviceAccountName"],
            sa
        );
    }
    // The session pods the operator makes under this chart carry no credentials.
    let pod = session_pod(&operator_config(&objs, "wasp"));
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert!(pod["spec"]["serviceAccountName"].is_null());
    Ok(())
}

#[test]
fn network_policies_fit_the_pods_they_guard() -> anyhow::Result<()> {
    let objs = render(&[])?;
    let op = find(&objs, "Deployment", "wasp-operator");
    let api = find(&objs, "Deployment", "wasp-api");
    let redis = find(&objs, "StatefulSet", "wasp-redis");
    let session = session_pod(&operator_config(&objs, "wasp"));
    let session_labels = &session["metadata"]["labels"];
    let control_port = session["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "control")
        .and_then(|p| p["containerPort"].as_i64())
        .context("control port")?;
    let selects =
        |policy: &Value, labels: &Value| labels_match(&policy["spec"]["podSelector"], labels);
    let peer_selects = |rule: &Value, key: &str, labels: &Value| {
        rule[key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| labels_match(&p["podSelector"], labels))
    };

    // Session pods: the NetworkPolicy selects the pods the operator really creates (and no
    // wasp pod of the chart); ingress only from the API and the operator, on the control port.
    let np = find(&objs, "NetworkPolicy", "wasp-session");
    assert!(selects(np, session_labels));
    for w in [op, api, redis] {
        assert!(!selects(np, pod_labels(w)));
    }
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = np["spec"]["ingress"].as_array().context("ingress")?;
    assert_eq!(
        ingress.len(),
        1,
        "only the control port (metricsFrom is empty)"
    );
    assert_eq!(ports(&ingress[0]), vec![(control_port, "TCP".into())]);
    assert!(peer_selects(&ingress[0], "from", pod_labels(api)));
    assert!(peer_selects(&ingress[0], "from", pod_labels(op)));
    assert!(!peer_selects(&ingress[0], "from", pod_labels(redis)));
    assert!(!peer_selects(&ingress[0], "from", session_labels));
    // Egress: Redis, DNS, WhatsApp's 443 on public addresses; nothing else.
    let egress = np["spec"]["egress"].as_array().context("egress")?;
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert!(peer_selects(&egress[0], "to", pod_labels(redis)));
    assert_eq!(ports(&egress[0]), vec![(6379, "TCP".into())]);
    assert_eq!(
        ports(&egress[1]),
        vec![(53, "UDP".into()), (53, "TCP".into())]
    );
    assert_eq!(ports(&egress[2]), vec![(443, "TCP".into())]);
    let block = &egress[2]["to"][0]["ipBlock"];
    assert_eq!(block["cidr"], "0.0.0.0/0");
    assert!(
        block["except"].as_array().is_some_and(
            |e| e.contains(&json!("10.0.0.0/8")) && e.contains(&json!("169.254.0.0/16"))
        )
    );

    // Redis: reached by the three wasp clients on its port, reaches nothing.
    let np = find(&objs, "NetworkPolicy", "wasp-redis");
    assert!(selects(np, pod_labels(redis)));
    let rule = &np["spec"]["ingress"][0];
    for labels in [pod_labels(op), pod_labels(api), session_labels] {
        assert!(peer_selects(rule, "from", labels));
    }
    assert_eq!(ports(rule), vec![(6379, "TCP".into())]);
    assert_eq!(np["spec"]["egress"], json!([]));

    // The API: anyone on its port (the ingress); egress to the session pods' control port.
    let np = find(&objs, "NetworkPolicy", "wasp-api");
    assert!(selects(np, pod_labels(api)));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"port": 3001, "protocol": "TCP"}]}])
    );
    let egress = np["spec"]["egress"].as_array().context("egress")?;
    assert!(egress.iter().any(|r| peer_selects(r, "to", session_labels)
        && ports(r) == vec![(control_port, "TCP".to_owned())]));
    assert!(
        egress
            .iter()
            .any(|r| peer_selects(r, "to", pod_labels(redis)))
    );
    assert!(
        egress
            .iter()
            .any(|r| ports(r) == vec![(443, "TCP".into()), (6443, "TCP".into())])
    );

    // The operator: no ingress at all; egress like the API's.
    let np = find(&objs, "NetworkPolicy", "wasp-operator");
    assert!(selects(np, pod_labels(op)));
    assert_eq!(np["spec"]["ingress"], json!([]));
    let egress = np["spec"]["egress"].as_array().context("egress")?;
    assert!(egress.iter().any(|r| peer_selects(r, "to", session_labels)));
    assert!(!egress.iter().any(|r| ports(r).iter().any(|p| p.0 == 3001)));

    // Metrics scrapers, when named, reach the admin ports and nothing else.
    let scraper = json!({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}});
    let objs = render(&[&json!({"networkPolicy": {"metricsFrom": [scraper]}})])?;
    for (policy, port) in [
        ("wasp-operator", 8081),
        ("wasp-api", 9090),
        ("wasp-session", 9090),
    ] {
        let np = find(&objs, "NetworkPolicy", policy);
        let rule = np["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["from"] == json!([scraper]))
            .unwrap_or_else(|| panic!("{policy}: no metrics rule"));
        assert_eq!(ports(rule), vec![(port, "TCP".into())], "{policy}");
    }
    Ok(())
}

/// Every value that maps to an env variable set away from its default.
fn varied_values() -> Value {
    json!({
        "masterKey": {"existingSecret": "clinic-master", "secretKey": "mk"},
        "operator": {
            "leaderElection": {"enabled": false, "leaseName": "my-lease", "leaseDurationSeconds": 20},
            "sessionCleanupIntervalMs": 60000,
            "staleConnectionTimeoutMs": 3600000,
            "resyncSeconds": 120,
            "reconcileConcurrency": 8,
            "redisAcl": "shared",
            "admission": {"rate": 2.5, "burst": 4},
            "adminPort": 18081,
            "logLevel": "debug",
            "logFormat": "text"
        },
        "session": {
            "image": {"repository": "registry.example/wasp/session-pod", "tag": "1.2.3"},
            "command": ["/usr/local/bin/wasp-session-pod", "--storage-policy", "all"],
            "whatsappUrl": "wss://wa.example/ws/chat",
            "controlPort": 18080,
            "adminPort": 19090,
            "sendRateLimit": {"messagesPerMinute": 20, "burst": 5},
            "resources": {"requests": {"cpu": 0.005, "memory": "8Mi"}, "limits": {"memory": "64Mi"}}
        },
        "api": {
            "port": 13001,
            "adminPort": 19091,
            "auth": {
                "jwtSecret": {"existingSecret": "crm-jwt", "secretKey": "hs256"},
                "jwksUrl": "https://idp.example/.well-known/jwks.json",
                "issuer": "https://idp.example/",
                "audience": ["crm", "erp"],
                "leewaySeconds": 5,
                "roleClaim": "app_metadata.role",
                "adminRoles": ["admin", "ops"],
                "jwksMinRefreshSeconds": 10,
                "jwksMaxAgeSeconds": 1200,
                "devInsecureAuth": true,
                "requireExp": false
            },
            "defaultStoragePolicy": "contactsOnly",
            "allowedOrigins": ["https://crm.example", "https://erp.example"],
            "maxFileSize": "512kb",
            "rateLimit": {"perSecond": 7, "burst": 9},
            "upstreamTimeoutMs": 2500000,
            "webhooks": {
                "dispatch": false,
                "allowHttp": true,
                "allowNets": ["10.20.0.0/16", "fd00::/8"],
                "allowHosts": ["crm.crm.svc.cluster.local"],
                "dnsServers": ["1.1.1.1", "9.9.9.9:53"],
                "timeoutMs": 3000,
                "retryBaseMs": 200,
                "retryMaxMs": 60000,
                "maxAgeSeconds": 3600,
                "leaseTtlMs": 5000,
                "existingSecret": "crm-webhooks"
            },
            "logLevel": "wasp_api=debug,info",
            "logFormat": "text"
        },
        "redis": {"enabled": false},
        "externalRedis": {"existingSecret": "crm-redis", "existingSecretKey": "uri"}
    })
}

#[test]
fn every_setting_reaches_the_binaries_parsers() -> anyhow::Result<()> {
    let objs = render(&[&varied_values()])?;
    let op_env = env_of(container(find(&objs, "Deployment", "wasp-operator")));
    let api_env = env_of(container(find(&objs, "Deployment", "wasp-api")));
    let expected_op = [
        ("WATCH_NAMESPACE", NS),
        ("REDIS_URL", "secret:crm-redis/uri"),
        (
            "WASP_SESSION_IMAGE",
            "registry.example/wasp/session-pod:1.2.3",
        ),
        (
            "WASP_SESSION_COMMAND",
            "/usr/local/bin/wasp-session-pod,--storage-policy,all",
        ),
        ("WASP_REDIS_SECRET", "crm-redis"),
        ("WASP_REDIS_SECRET_KEY", "uri"),
        ("WASP_MASTER_KEY_SECRET", "clinic-master"),
        ("WASP_MASTER_KEY_SECRET_KEY", "mk"),
        ("WASP_WEBHOOK_KEY", "secret:crm-webhooks/key"),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOW_NETS", "10.20.0.0/16,fd00::/8"),
        ("WEBHOOK_ALLOW_HOSTS", "crm.crm.svc.cluster.local"),
        ("WASP_WHATSAPP_URL", "wss://wa.example/ws/chat"),
        ("MAX_FILE_SIZE", "512kb"),
        ("WASP_HISTORY_PER_CHAT", "100"),
        ("WASP_HISTORY_MAX_MESSAGES", "10000"),
        ("WASP_SESSION_CONTROL_PORT", "18080"),
        ("WASP_SESSION_ADMIN_PORT", "19090"),
        ("SESSION_CLEANUP_INTERVAL", "60000"),
        ("STALE_CONNECTION_TIMEOUT", "3600000"),
        ("WASP_RESYNC_SECONDS", "120"),
        ("WASP_RECONCILE_CONCURRENCY", "8"),
        ("WASP_REDIS_ACL", "shared"),
        ("WASP_ADMISSION_RATE", "2.5"),
        ("WASP_ADMISSION_BURST", "4"),
        ("WASP_SEND_RATE_PER_MINUTE", "20"),
        ("WASP_SEND_BURST", "5"),
        (
            "WASP_SESSION_RESOURCES",
            r#"{"limits":{"memory":"64Mi"},"requests":{"cpu":0.005,"memory":"8Mi"}}"#,
        ),
        ("WASP_LEADER_ELECTION", "false"),
        ("WASP_LEASE_NAME", "my-lease"),
        ("POD_NAMESPACE", "field:metadata.namespace"),
        ("WASP_LEASE_DURATION_SECONDS", "20"),
        ("POD_NAME", "field:metadata.name"),
        ("WASP_ADMIN_ADDR", "0.0.0.0:18081"),
        ("LOG_LEVEL", "debug"),
        ("LOG_FORMAT", "text"),
    ];
    let expected_api = [
        ("PORT", "13001"),
        ("ADMIN_ADDR", "0.0.0.0:19091"),
        ("WASP_NAMESPACE", NS),
        ("REDIS_URL", "secret:crm-redis/uri"),
        ("JWT_SECRET", "secret:crm-jwt/hs256"),
        ("JWKS_URL", "https://idp.example/.well-known/jwks.json"),
        ("JWT_ISSUER", "https://idp.example/"),
        ("JWT_AUDIENCE", "crm,erp"),
        ("JWT_LEEWAY_SECONDS", "5"),
        ("JWT_ROLE_CLAIM", "app_metadata.role"),
        ("JWT_ADMIN_ROLES", "admin,ops"),
        ("JWKS_MIN_REFRESH_SECONDS", "10"),
        ("JWKS_MAX_AGE_SECONDS", "1200"),
        ("WASP_DEV_INSECURE_AUTH", "true"),
        ("JWT_REQUIRE_EXP", "false"),
        ("DEFAULT_STORAGE_POLICY", "contactsOnly"),
        ("WASP_API_HOST", "0.0.0.0"),
        ("ALLOWED_ORIGINS", "https://crm.example,https://erp.example"),
        ("MAX_FILE_SIZE", "512kb"),
        ("RATE_LIMIT_PER_SECOND", "7"),
        ("RATE_LIMIT_BURST", "9"),
        ("UPSTREAM_TIMEOUT_MS", "2500000"),
        ("WASP_WEBHOOK_KEY", "secret:crm-webhooks/key"),
        ("WASP_GLOBAL_WEBHOOKS", "secret:crm-webhooks/global"),
        ("WEBHOOK_DISPATCH", "false"),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOW_NETS", "10.20.0.0/16,fd00::/8"),
        ("WEBHOOK_ALLOW_HOSTS", "crm.crm.svc.cluster.local"),
        ("WEBHOOK_DNS_SERVERS", "1.1.1.1,9.9.9.9:53"),
        ("WEBHOOK_TIMEOUT_MS", "3000"),
        ("WEBHOOK_RETRY_BASE_MS", "200"),
        ("WEBHOOK_RETRY_MAX_MS", "60000"),
        ("WEBHOOK_MAX_AGE_SECONDS", "3600"),
        ("WEBHOOK_LEASE_TTL_MS", "5000"),
        ("LOG_LEVEL", "wasp_api=debug,info"),
        ("LOG_FORMAT", "text"),
    ];
    let as_map = |e: &[(&str, &str)]| -> BTreeMap<String, String> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(op_env, as_map(&expected_op));
    assert_eq!(api_env, as_map(&expected_api));

    // Every setting the binaries read is set by the chart. SUPABASE_JWT_SECRET is the same
    // setting as JWT_SECRET (api.auth.jwtSecret); LOG_LEVEL is read by the shared telemetry.
    let op_names = env_names(wasp_operator::Config::command());
    let missing: Vec<_> = op_names
        .iter()
        .filter(|n| !op_env.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "operator settings without a value: {missing:?}"
    );
    let api_names = env_names(wasp_api::config::Config::command());
    let missing: Vec<_> = api_names
        .iter()
        .filter(|n| !api_env.contains_key(*n) && n.as_str() != "SUPABASE_JWT_SECRET")
        .collect();
    assert!(
        missing.is_empty(),
        "API settings without a value: {missing:?}"
    );

    // The binaries' own parsers take the env as rendered.
    let op = operator_config(&objs, "wasp");
    assert_eq!(op.stale_connection_timeout_ms, 3_600_000);
    assert_eq!(op.session_cleanup_interval_ms, 60_000);
    assert_eq!(op.concurrency, 8);
    assert!(!op.leader_election);
    assert_eq!(op.session_control_port, 18080);
    assert_eq!(op.admin_addr.port(), 18081);
    let api = api_config(&objs, "wasp");
    assert_eq!(api.port, 13001);
    assert_eq!(api.max_file_size, 512 * 1024);
    assert_eq!(api.jwt_audience, vec!["crm".to_owned(), "erp".into()]);
    assert_eq!(api.upstream_timeout_ms, 2_500_000);
    assert!(api.dev_insecure_auth);
    let hooks = &api.webhooks;
    assert!(!hooks.webhook_dispatch && hooks.policy.webhook_allow_http);
    // The operator checks `spec.webhooks` with the same policy and seals with the same key.
    assert_eq!(
        op.webhook_policy.policy().allow_nets,
        hooks.policy().allow_nets
    );
    assert_eq!(
        op.webhook_policy.policy().allow_hosts,
        hooks.policy().allow_hosts
    );
    assert!(op.webhook_policy.webhook_allow_http);
    assert_eq!(hooks.policy().allow_nets.len(), 2);
    assert_eq!(hooks.policy().allow_hosts, ["crm.crm.svc.cluster.local"]);
    assert_eq!(
        wasp_api::webhooks::resolve::parse_servers(&hooks.webhook_dns_servers).map(|s| s.len()),
        Ok(2)
    );
    assert_eq!(
        hooks.timing().backoff.max_age,
        std::time::Duration::from_secs(3600)
    );

    // Ports in the pod specs follow the settings.
    let op_ports = &container(find(&objs, "Deployment", "wasp-operator"))["ports"];
    assert_eq!(op_ports[0]["containerPort"], 18081);
    let api_ports = &container(find(&objs, "Deployment", "wasp-api"))["ports"];
    assert_eq!(api_ports[0]["containerPort"], 13001);
    assert_eq!(api_ports[1]["containerPort"], 19091);

    // The session pod made under these settings reads what the chart provides (shared
    // credentials: the chart's Redis Secret).
    let pod = session_pod(&op);
    let env = env_of(&pod["spec"]["containers"][0]);
    assert_eq!(env["REDIS_URL"], "secret:crm-redis/uri");
    // The operator reads the master key; the pod gets only its user's keyring.
    assert_eq!(
        (
            op.master_key_secret.as_str(),
            op.master_key_secret_key.as_str()
        ),
        ("clinic-master", "mk")
    );
    assert_no_master_key(&pod, "clinic-master");
    assert_eq!(env["WASP_WHATSAPP_URL"], "wss://wa.example/ws/chat");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "registry.example/wasp/session-pod:1.2.3"
    );
    // The fleet-wide requests and limits (a YAML number is a quantity too).
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "0.005", "memory": "8Mi"}, "limits": {"memory": "64Mi"}})
    );

    // Defaults: the binaries' parsers take them too, and the session pods' Secrets are the
    // chart's own.
    let objs = render(&[])?;
    let op = operator_config(&objs, "wasp");
    api_config(&objs, "wasp");
    let pod = session_pod(&op);
    let env = env_of(&pod["spec"]["containers"][0]);
    // By default each pod has its own Redis user, its URL in its own control Secret.
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(env["REDIS_URL"], format!("secret:{name}-control/redisUrl"));
    assert_eq!(op.master_key_secret, "wasp-master-key");
    assert_no_master_key(&pod, "wasp-master-key");
    assert!(has(&objs, "Secret", "wasp-redis") && has(&objs, "Secret", "wasp-master-key"));
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "wasp/session-pod:0.1.0"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "10m", "memory": "24Mi"}, "limits": {"memory": "128Mi"}})
    );
    Ok(())
}

#[test]
fn varied_values_render_what_they_say() -> anyhow::Result<()> {
    // External Redis by URL: no StatefulSet, its URL in the chart's Secret; egress to its port.
    let objs = render(&[&json!({
        "redis": {"enabled": false},
        "externalRedis": {"url": "rediss://:pw@redis.example:6380/2", "port": 6380},
        "networkPolicy": {"externalRedisTo": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]}
    })])?;
    assert!(!objs.iter().any(|o| o["kind"] == "StatefulSet"));
    assert!(!has(&objs, "Service", "wasp-redis") && !has(&objs, "NetworkPolicy", "wasp-redis"));
    assert!(!has(&objs, "ServiceAccount", "wasp-redis"));
    assert_eq!(
        secret_value(&objs, "wasp-redis", "url"),
        b"rediss://:pw@redis.example:6380/2"
    );
    let np = find(&objs, "NetworkPolicy", "wasp-session");
    assert_eq!(
        np["spec"]["egress"][0],
        json!({"ports": [{"port": 6380, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]})
    );

    // Existing Secrets: none generated, every reference points at them.
    let objs = render(&[&json!({
        "redis": {"enabled": false},
        "externalRedis": {"existingSecret": "crm-redis", "existingSecretKey": "uri"},
        "masterKey": {"existingSecret": "crm-master"},
        "api": {
            "auth": {"jwtSecret": {"existingSecret": "crm-jwt"}},
            "webhooks": {"existingSecret": "crm-webhooks"}
        }
    })])?;
    assert!(
        !objs.iter().any(|o| o["kind"] == "Secret"),
        "{:?}",
        kinds(&objs)
    );
    let env = env_of(container(find(&objs, "Deployment", "wasp-api")));
    assert_eq!(env["JWT_SECRET"], "secret:crm-jwt/jwtSecret");
    assert_eq!(env["REDIS_URL"], "secret:crm-redis/uri");
    assert_eq!(env["WASP_WEBHOOK_KEY"], "secret:crm-webhooks/key");
    let env = env_of(container(find(&objs, "Deployment", "wasp-operator")));
    assert_eq!(env["WASP_MASTER_KEY_SECRET"], "crm-master");
    assert_eq!(env["WASP_REDIS_SECRET"], "crm-redis");

    // Ingress on, with the stream-friendly annotations and TLS.
    let objs = render(&[&json!({"api": {"ingress": {
        "enabled": true, "className": "nginx",
        "hosts": [{"host": "wa.clinic.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"hosts": ["wa.clinic.example"], "secretName": "wa-tls"}]
    }}})])?;
    let ing = find(&objs, "Ingress", "wasp-api");
    assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    let a = &ing["metadata"]["annotations"];
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600");
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-send-timeout"], "3600");
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "wa.clinic.example");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"],
        json!({"name": "wasp-api", "port": {"name": "http"}})
    );
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "wa-tls");
    assert!(!has(&render(&[])?, "Ingress", "wasp-api"), "off by default");

    // NetworkPolicy off: none at all.
    let objs = render(&[&json!({"networkPolicy": {"enabled": false}})])?;
    assert!(!objs.iter().any(|o| o["kind"] == "NetworkPolicy"));

    // ServiceMonitor on: it scrapes the admin port of the two metrics Services only.
    let objs = render(&[&json!({"metrics": {"serviceMonitor": {
        "enabled": true, "interval": "15s", "labels": {"release": "prom"}}}})])?;
    let sm = find(&objs, "ServiceMonitor", "wasp");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "admin", "path": "/metrics", "interval": "15s"}])
    );
    let selector = &sm["spec"]["selector"];
    let selected: Vec<&str> = objs
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter(|s| {
            let l = &s["metadata"]["labels"];
            selector["matchLabels"]
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| l[k] == *v))
                && selector["matchExpressions"][0]["values"]
                    .as_array()
                    .is_some_and(|vals| vals.contains(&l["app.kubernetes.io/component"]))
                && s["spec"]["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == "admin"))
        })
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(selected, vec!["wasp-api-metrics", "wasp-operator-metrics"]);
    assert!(!render(&[])?.iter().any(|o| o["kind"] == "ServiceMonitor"));

    // JWKS only: no HS256 Secret, egress to 443 for the key set.
    let objs = render(&[&json!({"api": {"auth": {
        "jwtSecret": {"enabled": false}, "jwksUrl": "https://idp.example/jwks"}}})])?;
    assert!(!has(&objs, "Secret", "wasp-jwt"));
    let env = env_of(container(find(&objs, "Deployment", "wasp-api")));
    assert!(!env.contains_key("JWT_SECRET"));
    let np = find(&objs, "NetworkPolicy", "wasp-api");
    assert!(np["spec"]["egress"].as_array().is_some_and(|e| {
        e.iter()
            .any(|r| r == &json!({"ports": [{"port": 443, "protocol": "TCP"}]}))
    }));

    // Another release name: every object is prefixed with it, selectors stay per release.
    let objs = helm::render(&repo(), "crm", NS, &[])?;
    assert!(has(&objs, "Deployment", "crm-wasp-operator"));
    assert!(has(&objs, "StatefulSet", "crm-wasp-redis"));
    let url = String::from_utf8(secret_value(&objs, "crm-wasp-redis", "url"))?;
    assert!(
        url.ends_with(&format!("@crm-wasp-redis.{NS}.svc:6379")),
        "{url}"
    );
    let env = env_of(container(find(&objs, "Deployment", "crm-wasp-operator")));
    assert_eq!(env["WASP_MASTER_KEY_SECRET"], "crm-wasp-master-key");
    assert_eq!(env["WASP_LEASE_NAME"], "crm-wasp-operator");

    // Redis without persistence or password; PDBs off.
    let objs = render(&[&json!({
        "redis": {"persistence": {"enabled": false}, "auth": {"enabled": false}},
        "operator": {"podDisruptionBudget": {"enabled": false}},
        "api": {"podDisruptionBudget": {"minAvailable": "50%"}}
    })])?;
    let redis = find(&objs, "StatefulSet", "wasp-redis");
    assert!(redis["spec"]["volumeClaimTemplates"].is_null());
    assert_eq!(
        redis["spec"]["template"]["spec"]["volumes"][0],
        json!({"name": "data", "emptyDir": {}})
    );
    assert_eq!(
        secret_value(&objs, "wasp-redis", "url"),
        format!("redis://wasp-redis.{NS}.svc:6379").as_bytes()
    );
    assert!(!has(&objs, "PodDisruptionBudget", "wasp-operator"));
    assert_eq!(
        find(&objs, "PodDisruptionBudget", "wasp-api")["spec"]["minAvailable"],
        "50%"
    );
    Ok(())
}

#[test]
fn a_malformed_session_resource_stops_the_operator_with_the_reason() -> anyhow::Result<()> {
    let objs = render(&[&json!({"session": {"resources": {
        "requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}
    }}})])?;
    let env = env_of(container(find(&objs, "Deployment", "wasp-operator")));
    let args = args_from_env(wasp_operator::Config::command(), &env, |_| "x".into());
    let err = wasp_operator::Config::try_parse_from(&args).expect_err("refused");
    assert!(
        err.to_string()
            .contains("requests.memory (256Mi) is above limits.memory (128Mi)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn contradictory_values_fail_with_a_reason() {
    for (values, says) in [
        (json!({"redis": {"enabled": false}}), "externalRedis.url"),
        (
            json!({"api": {"auth": {"jwtSecret": {"enabled": false}}}}),
            "accepts no token",
        ),
    ] {
        let err = render(&[&values]).expect_err("refused");
        let refused = err
            .downcast_ref::<Refused>()
            .unwrap_or_else(|| panic!("{err:#}"));
        assert!(refused.message.contains(says), "{refused}");
    }
}

#[test]
fn the_schema_refuses_unknown_keys_and_wrong_types() -> anyhow::Result<()> {
    let validate = |v: Value| helm::run(&repo(), &["validate"], &[&v]);
    assert_eq!(validate(json!({}))?, json!({"valid": true}));
    assert_eq!(validate(varied_values())?, json!({"valid": true}));
    for (values, says) in [
        (json!({"replicas": 3}), "additional properties 'replicas'"),
        (json!({"operator": {"replicass": 3}}), "'replicass'"),
        (json!({"api": {"auth": {"jwt": {}}}}), "'jwt'"),
        (
            json!({"operator": {"image": {"registry": "x"}}}),
            "'registry'",
        ),
        (json!({"api": {"port": "3001"}}), "want integer"),
        (json!({"api": {"port": 70000}}), "maximum"),
        (json!({"operator": {"replicas": 1.5}}), "want integer"),
        (json!({"networkPolicy": {"enabled": "yes"}}), "want boolean"),
        (
            json!({"api": {"allowedOrigins": "https://crm.example"}}),
            "want array",
        ),
        (
            json!({"redis": {"appendFsync": "sometimes"}}),
            "must be one of",
        ),
        (json!({"operator": {"logFormat": "xml"}}), "must be one of"),
        (
            json!({"api": {"maxFileSize": "ten megabytes"}}),
            "does not match pattern",
        ),
        (json!({"commonLabels": {"team": 7}}), "want string"),
        (
            json!({"api": {"ingress": {"hosts": [{"host": "a", "paths": [{"path": "/", "pathType": "Any"}]}]}}}),
            "must be one of",
        ),
    ] {
        let err = validate(values.clone()).expect_err("refused");
        let refused = err
            .downcast_ref::<Refused>()
            .unwrap_or_else(|| panic!("{values}: {err:#}"));
        assert_eq!(refused.kind, "HelmValuesError", "{values}");
        assert!(
            refused.message.contains(says),
            "{values}: {}",
            refused.message
        );
        // Rendering with them fails the same way.
        let err = render(&[&values]).expect_err("render refused");
        assert!(err.downcast_ref::<Refused>().is_some(), "{values}: {err:#}");
    }
    Ok(())
}

#[test]
fn the_readme_lists_every_value_and_notes_say_where_the_console_is() -> anyhow::Result<()> {
    let check = helm::run(&repo(), &["values-table", "--check"], &[])?;
    assert_eq!(
        check["upToDate"], true,
        "charts/wasp/README.md's values table is stale: run scripts/helm.py values-table"
    );
    assert!(check["rows"].as_i64().unwrap_or(0) > 100, "{check}");
    // Every value of the varied set is a row of the table.
    let readme = std::fs::read_to_string(repo().join("charts/wasp/README.md"))?;
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            // Labels and resources are free-form maps: one row each.
            Some(m)
                if !m.is_empty()
                    && !prefix.ends_with("labels")
                    && !prefix.ends_with("resources") =>
            {
                for (k, sub) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&p, sub, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut paths = Vec::new();
    leaves("", &varied_values(), &mut paths);
    for p in paths {
        assert!(readme.contains(&format!("| `{p}` |")), "README lacks {p}");
    }

    let notes = helm::run(&repo(), &["render", "--namespace", NS], &[])?;
    let notes = notes["wasp/templates/NOTES.txt"]
        .as_str()
        .context("NOTES.txt")?;
    assert!(notes.contains("port-forward svc/wasp-api"), "{notes}");
    assert!(notes.contains("/console"), "{notes}");
    assert!(notes.contains("get secret wasp-jwt"), "{notes}");
    let notes = helm::run(
        &repo(),
        &["render", "--namespace", NS],
        &[&json!({"api": {"ingress": {"enabled": true,
            "tls": [{"hosts": ["wasp.example.com"], "secretName": "t"}]}}})],
    )?;
    let notes = notes["wasp/templates/NOTES.txt"]
        .as_str()
        .context("NOTES.txt")?;
    assert!(
        notes.contains("https://wasp.example.com/console"),
        "{notes}"
    );
    Ok(())
}

/// `kubectl apply --dry-run=server`: the apiserver validates and admits the objects without
/// storing them.
fn server_dry_run(
    kubeconfig: &std::path::Path,
    ns: &str,
    objs: &[Value],
) -> anyhow::Result<String> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objs});
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "apply",
            "--dry-run=server",
            "-n",
            ns,
            "-o",
            "name",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("kubectl stdin")?;
        stdin.write_all(serde_json::to_string(&list)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "the apiserver refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn the_v1_20_apiserver_accepts_every_rendering() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let ns = env.namespace("chart-dry-run").await?;
    let release = Release::new(env.repo_root(), env.kubeconfig_path(), &ns, "wasp");
    for values in [
        json!({}),
        varied_values(),
        json!({"api": {"ingress": {"enabled": true, "tls": [{"hosts": ["wasp.example.com"], "secretName": "t"}]}},
               "networkPolicy": {"metricsFrom": [{"podSelector": {}}], "kubeApiServerCidrs": ["10.0.0.1/32"]},
               "redis": {"persistence": {"enabled": false}}}),
        json!({"networkPolicy": {"enabled": false}, "redis": {"enabled": false},
               "externalRedis": {"url": "redis://r.example:6379"}}),
    ] {
        // Rendered against the cluster: its capabilities pick the PDB version.
        let objs = release.dry_run(&[&values])?;
        let pdbs: Vec<&Value> = objs
            .iter()
            .filter(|o| o["kind"] == "PodDisruptionBudget")
            .collect();
        assert!(!pdbs.is_empty());
        for pdb in pdbs {
            assert_eq!(pdb["apiVersion"], "policy/v1beta1", "1.20 has no policy/v1");
        }
        let accepted = server_dry_run(env.kubeconfig_path(), &ns, &objs)?;
        assert_eq!(accepted.lines().count(), objs.len(), "{values}: {accepted}");
    }
    Ok(())
}

#[tokio::test]
async fn install_upgrade_uninstall() -> anyhow::Result<()> {
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    let ns = env.namespace("chart-install").await?;
    let release = Release::new(env.repo_root(), env.kubeconfig_path(), &ns, "wasp");

    let installed = release.install(&[])?;
    assert_eq!(installed["status"], "deployed", "{installed}");
    assert_eq!(installed["revision"], 1);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);

    let operator = deployments.get("wasp-operator").await?;
    assert_eq!(operator.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let op_container = &operator
        .spec
        .as_ref()
        .context("spec")?
        .template
        .spec
        .as_ref()
        .context("pod")?
        .containers[0];
    assert_eq!(op_container.image.as_deref(), Some("wasp/operator:dev"));
    deployments.get("wasp-api").await?;
    statefulsets.get("wasp-redis").await?;
    for s in [
        "wasp-api",
        "wasp-redis",
        "wasp-api-metrics",
        "wasp-operator-metrics",
    ] {
        services.get(s).await?;
    }
    for r in ["wasp-operator", "wasp-api"] {
        roles.get(r).await?;
    }
    for sa in ["wasp-operator", "wasp-api", "wasp-redis"] {
        sas.get(sa).await?;
    }
    let secret_data = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .unwrap_or_default()
    };
    let master = secret_data(&secrets.get("wasp-master-key").await?, "masterKey");
    assert_eq!(data_encoding::BASE64.decode(&master)?.len(), 32);
    let jwt = secret_data(&secrets.get("wasp-jwt").await?, "jwtSecret");
    let redis_url = secret_data(&secrets.get("wasp-redis").await?, "url");
    assert!(String::from_utf8(redis_url.clone())?.ends_with(&format!("@wasp-redis.{ns}.svc:6379")));
    // The controller-manager's StatefulSet controller makes the claim from the template.
    eventually(Duration::from_secs(30), || async {
        claims.get_opt("data-wasp-redis-0").await.ok().flatten()
    })
    .await
    .context("the Redis claim")?;

    // A key rotation in progress: an operator of the cluster added the previous keys.
    let rotation =
        json!({"data": {"previousMasterKeys": data_encoding::BASE64.encode(b"old-key-1")}});
    secrets
        .patch(
            "wasp-master-key",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&rotation),
        )
        .await?;

    // Upgrade with a changed value: the Deployment changes, the generated Secrets do not (the
    // added key stays too).
    let upgraded = release.upgrade(&[&json!({"operator": {"reconcileConcurrency": 4}})])?;
    assert_eq!(upgraded["revision"], 2, "{upgraded}");
    assert_eq!(release.status()?["status"], "deployed");
    let operator = deployments.get("wasp-operator").await?;
    let env_vars = operator
        .spec
        .as_ref()
        .context("spec")?
        .template
        .spec
        .as_ref()
        .context("pod")?
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env_vars
            .iter()
            .any(|e| e.name == "WASP_RECONCILE_CONCURRENCY" && e.value.as_deref() == Some("4"))
    );
    let master_secret = secrets.get("wasp-master-key").await?;
    assert_eq!(secret_data(&master_secret, "masterKey"), master);
    assert_eq!(
        secret_data(&master_secret, "previousMasterKeys"),
        b"old-key-1"
    );
    assert_eq!(
        secret_data(&secrets.get("wasp-jwt").await?, "jwtSecret"),
        jwt
    );
    assert_eq!(
        secret_data(&secrets.get("wasp-redis").await?, "url"),
        redis_url
    );

    // Uninstall: the workloads go; the master key (resource-policy keep) and the Redis claim
    // stay, as the chart's README says.
    release.uninstall()?;
    eventually(Duration::from_secs(30), || async {
        let gone = deployments.get_opt("wasp-operator").await.ok()?.is_none()
            && deployments.get_opt("wasp-api").await.ok()?.is_none()
            && statefulsets.get_opt("wasp-redis").await.ok()?.is_none()
            && secrets.get_opt("wasp-jwt").await.ok()?.is_none();
        gone.then_some(())
    })
    .await
    .context("the release's objects are deleted")?;
    assert_eq!(
        secret_data(&secrets.get("wasp-master-key").await?, "masterKey"),
        master
    );
    assert!(claims.get_opt("data-wasp-redis-0").await?.is_some());

    // Installing again (upgrade --install) finds the kept master key and keeps using it; a
    // second apply upgrades.
    assert_eq!(release.apply(&[])?["revision"], 1);
    assert_eq!(
        secret_data(&secrets.get("wasp-master-key").await?, "masterKey"),
        master
    );
    assert_eq!(release.apply(&[])?["revision"], 2);
    release.uninstall()?;
    Ok(())
}
