//! Installing CustomResourceDefinitions from YAML files, as a chart install would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

use crate::wait::eventually;

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "wasp-e2e";

/// Whether `dir` holds any `*.yaml` / `*.yml` file.
pub fn has_yaml(dir: &Path) -> bool {
    yaml_files(dir).is_ok_and(|f| !f.is_empty())
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every YAML document (`*.yaml`, `*.yml`, sorted by file name) in `dir`, as JSON values; empty
/// documents are skipped.
pub fn read_yaml_documents(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let mut docs = Vec::new();
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc)
                .with_context(|| format!("parsing YAML in {}", file.display()))?;
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    Ok(docs)
}

/// Server-side applies (field manager [`FIELD_MANAGER`], forced) every CRD document in `dir`,
/// then waits until each is Established, i.e. served. Returns the CRD names. Idempotent; safe
/// to run concurrently (the apiserver retries conflicting writes of one apply internally).
pub async fn install_crds_from(client: &Client, dir: &Path) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for (file, doc) in read_yaml_documents(dir)? {
        if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            bail!(
                "{} holds a document that is not a CustomResourceDefinition",
                file.display()
            );
        }
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .with_context(|| format!("a CRD without metadata.name in {}", file.display()))?
            .to_owned();
        api.patch(&name, &params, &Patch::Apply(&doc))
            .await
            .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
        names.push(name);
    }
    if names.is_empty() {
        bail!("no CustomResourceDefinition found in {}", dir.display());
    }
    for name in &names {
        eventually(Duration::from_secs(30), || async {
            let crd = api.get(name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await
        .with_context(|| format!("CRD {name} did not become Established"))?;
    }
    Ok(names)
}
