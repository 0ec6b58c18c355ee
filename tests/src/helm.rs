//! The wasp chart through the real Helm v4 SDK (PyPI `helm-python-sdk`, no helm binary), driven
//! by `scripts/helm.py`: lint, render, schema validation, and a release's install, upgrade and
//! uninstall in a cluster. `scripts/install-deps.sh` makes the SDK's virtualenv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::procs::scratch_dir;

/// The chart's directory in the repository.
pub fn chart_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("charts/wasp")
}

/// Values for a release on the local control plane, whose pods wasp-node runs as processes:
/// `charts/wasp/ci/local-values.yaml` (images wasp-node maps by repository suffix:
/// `operator`, `api`, `session-pod`, `redis`).
pub fn local_values_file(repo_root: &Path) -> PathBuf {
    chart_dir(repo_root).join("ci/local-values.yaml")
}

/// Helm refused (a values, render, lint or release error): the SDK's error type and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("helm refused ({kind}): {message}")]
pub struct Refused {
    pub kind: String,
    pub message: String,
}

/// Runs `scripts/helm.py <args>`, values given as JSON files (in order, later wins). Ok(JSON
/// result), or Err: a [`Refused`] when Helm said no (exit 2), anything else when the driver
/// could not run.
pub fn run(repo_root: &Path, args: &[&str], values: &[&Value]) -> anyhow::Result<Value> {
    let dir = scratch_dir("wasp-helm")?;
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root.join("scripts/helm.py"))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    for (i, v) in values.iter().enumerate() {
        let file = dir.join(format!("values-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(v)?)?;
        cmd.arg("-f").arg(file);
    }
    let out = cmd.output().context("running scripts/helm.py (python3)")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => serde_json::from_str(&stdout)
            .with_context(|| format!("scripts/helm.py {args:?}: not JSON: {stdout}")),
        Some(2) => {
            let v: Value = serde_json::from_str(&stdout)
                .with_context(|| format!("scripts/helm.py {args:?}: not JSON: {stdout}"))?;
            Err(Refused {
                kind: v["error"]["type"].as_str().unwrap_or_default().to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
            .into())
        }
        _ => bail!(
            "scripts/helm.py {args:?} failed ({}): {stderr}{stdout}",
            out.status
        ),
    }
}

/// The objects of a rendered chart (every template's documents, `NOTES.txt` aside), in
/// template order; `manifests` is what the SDK's render returns (template path → YAML).
pub fn objects(manifests: &Value) -> anyhow::Result<Vec<Value>> {
    let map = manifests
        .as_object()
        .context("rendered manifests are not a map")?;
    let mut out = Vec::new();
    for (path, text) in map {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        let text = text.as_str().context("a manifest is not a string")?;
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{path}: not YAML"))?;
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// A release of the chart in one namespace of a cluster.
#[derive(Debug, Clone)]
pub struct Release {
    pub repo_root: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub name: String,
}

impl Release {
    pub fn new(repo_root: &Path, kubeconfig: &Path, namespace: &str, name: &str) -> Self {
        Self {
            repo_root: repo_root.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn action(&self, action: &str, extra: &[&str], values: &[&Value]) -> anyhow::Result<Value> {
        let kubeconfig = self.kubeconfig.to_string_lossy();
        let mut args = vec![
            action,
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &self.namespace,
            "--release",
            &self.name,
        ];
        args.extend_from_slice(extra);
        run(&self.repo_root, &args, values)
    }

    /// `helm install` with the local values file first, then `values` (later wins). Returns the
    /// release summary (`name`, `namespace`, `revision`, `status`, `manifest`, `notes`, ...).
    pub fn install(&self, values: &[&Value]) -> anyhow::Result<Value> {
        let local = local_values(&self.repo_root)?;
        let all: Vec<&Value> = std::iter::once(&local)
            .chain(values.iter().copied())
            .collect();
        self.action("install", &[], &all)
    }

    /// `helm upgrade` with the local values file, then `values` (Helm's default: no reuse of
    /// the previous release's values).
    pub fn upgrade(&self, values: &[&Value]) -> anyhow::Result<Value> {
        let local = local_values(&self.repo_root)?;
        let all: Vec<&Value> = std::iter::once(&local)
            .chain(values.iter().copied())
            .collect();
        self.action("upgrade", &[], &all)
    }

    /// `helm upgrade --install`: upgrade, or install when the release does not exist yet.
    pub fn apply(&self, values: &[&Value]) -> anyhow::Result<Value> {
        let local = local_values(&self.repo_root)?;
        let all: Vec<&Value> = std::iter::once(&local)
            .chain(values.iter().copied())
            .collect();
        self.action("apply", &[], &all)
    }

    /// `helm uninstall` (a missing release is fine).
    pub fn uninstall(&self) -> anyhow::Result<Value> {
        self.action("uninstall", &[], &[])
    }

    /// `helm status`: the deployed revision's summary.
    pub fn status(&self) -> anyhow::Result<Value> {
        self.action("status", &[], &[])
    }

    /// The objects an install with `values` (no local values file) would create, rendered by a
    /// server-side dry run: the cluster's capabilities (API versions) and `lookup` apply,
    /// nothing is created.
    pub fn dry_run(&self, values: &[&Value]) -> anyhow::Result<Vec<Value>> {
        let release = self.action("install", &["--dry-run", "server"], values)?;
        let manifest = release["manifest"]
            .as_str()
            .context("a dry run's release has a manifest")?;
        objects(&serde_json::json!({ "manifest": manifest }))
    }
}

/// `charts/wasp/ci/local-values.yaml` as JSON.
pub fn local_values(repo_root: &Path) -> anyhow::Result<Value> {
    let path = local_values_file(repo_root);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_yaml_ng::from_str(&text)?)
}

/// Renders the chart offline (no cluster: `lookup` finds nothing, capabilities are Helm's
/// defaults) with `values`, after checking them against `values.schema.json`.
pub fn render(
    repo_root: &Path,
    release: &str,
    namespace: &str,
    values: &[&Value],
) -> anyhow::Result<Vec<Value>> {
    let manifests = run(
        repo_root,
        &["render", "--release", release, "--namespace", namespace],
        values,
    )?;
    objects(&manifests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_every_document_but_notes_and_empty_ones() {
        let manifests = json!({
            "wasp/templates/NOTES.txt": "kubectl get pods",
            "wasp/templates/a.yaml": "---\n# only a comment\n---\nkind: A\nmetadata: {name: a}\n---\nkind: B\n",
            "wasp/templates/empty.yaml": "\n",
        });
        let objs = objects(&manifests).unwrap();
        assert_eq!(
            objs,
            vec![
                json!({"kind": "A", "metadata": {"name": "a"}}),
                json!({"kind": "B"})
            ]
        );
        assert!(objects(&json!([])).is_err());
    }
}
