//! The Kubernetes cluster of a test binary: either one given by the environment, or a local one
//! started with `scripts/kube-up.sh` that goes away with the test binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use kube::config::Kubeconfig;

use crate::crds::has_yaml;
use crate::procs::scratch_dir;

/// Where the cluster came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Started by this test binary; `state_dir` holds etcd's data, keys, PIDs and `logs/`.
    Local { state_dir: PathBuf },
    /// Given by `WASP_TEST_KUBECONFIG` or `KUBECONFIG`.
    External,
}

/// A reachable cluster: its kubeconfig (parsed, and as a file for child processes).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub origin: Origin,
    pub kubeconfig_path: PathBuf,
    pub kubeconfig: Kubeconfig,
}

impl Cluster {
    /// The cluster named by `WASP_TEST_KUBECONFIG` (a file) or `KUBECONFIG` (a list of files, as
    /// kubectl reads it); otherwise a local one from [`Cluster::start_local`].
    pub fn from_env_or_start(repo_root: &Path) -> anyhow::Result<Self> {
        if let Some(path) = std::env::var_os("WASP_TEST_KUBECONFIG").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            let kubeconfig = Kubeconfig::read_from(&path)
                .with_context(|| format!("reading WASP_TEST_KUBECONFIG={}", path.display()))?;
            return Ok(Self {
                origin: Origin::External,
                kubeconfig_path: path,
                kubeconfig,
            });
        }
        if let Some(list) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            let kubeconfig = Kubeconfig::from_env()
                .context("reading KUBECONFIG")?
                .context("KUBECONFIG names no file")?;
            let paths: Vec<PathBuf> = std::env::split_paths(&list).collect();
            // Child processes (an operator under test, kubectl) want one file: a single entry is
            // passed on as it is, a list is merged into a scratch file.
            let kubeconfig_path = match paths.as_slice() {
                [one] => one.clone(),
                _ => {
                    let path = scratch_dir("wasp-e2e-kubeconfig")?.join("kubeconfig");
                    std::fs::write(&path, serde_yaml_ng::to_string(&kubeconfig)?)?;
                    path
                }
            };
            return Ok(Self {
                origin: Origin::External,
                kubeconfig_path,
                kubeconfig,
            });
        }
        Self::start_local(repo_root)
    }

    /// Starts etcd, kube-apiserver and kube-controller-manager with `scripts/kube-up.sh` in a
    /// scratch directory, with a watchdog that stops them (and deletes the directory) when this
    /// process exits. Binaries: `WASP_KUBE_BIN`, else `scripts/build-kube.sh` (instant once
    /// cached; a first build takes about 10 minutes).
    pub fn start_local(repo_root: &Path) -> anyhow::Result<Self> {
        let scripts = repo_root.join("scripts");
        let kube_bin = match std::env::var_os("WASP_KUBE_BIN").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let out = Command::new("bash")
                    .arg(scripts.join("build-kube.sh"))
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit())
                    .output()
                    .context("running scripts/build-kube.sh")?;
                if !out.status.success() {
                    bail!("scripts/build-kube.sh failed ({})", out.status);
                }
                PathBuf::from(String::from_utf8(out.stdout)?.trim())
            }
        };
        let state_dir = scratch_dir("wasp-e2e-kube")?;
        // The chart's CRDs go in before the controller-manager starts: its garbage collector
        // only rereads discovery every 30 s, so custom resources of a CRD installed later would
        // not have their dependents (pods owned by a WhatsAppSession) collected for up to ~40 s.
        let crds = repo_root.join("charts/wasp/crds");
        let crds = has_yaml(&crds).then_some(crds);
        // kube-up runs in its own process group: a Ctrl-C in the terminal ends the test binary,
        // and kube-up's watchdog then stops the cluster in order (or kube-up's own trap does, if
        // it was still starting).
        let out = {
            use std::os::unix::process::CommandExt;
            Command::new("bash")
                .arg(scripts.join("kube-up.sh"))
                .arg(&state_dir)
                .arg("--parent")
                .arg(std::process::id().to_string())
                // WASP_TEST_KEEP_STATE=1 keeps the directory (logs!) after the processes stop.
                .args((!keep_state()).then_some("--rm"))
                .args(
                    crds.iter()
                        .flat_map(|d| [std::ffi::OsStr::new("--crds"), d.as_os_str()]),
                )
                .env("WASP_KUBE_BIN", &kube_bin)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .output()
                .context("running scripts/kube-up.sh")?
        };
        if !out.status.success() {
            bail!(
                "scripts/kube-up.sh {} failed ({}):\n{}",
                state_dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kubeconfig_path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let kubeconfig = Kubeconfig::read_from(&kubeconfig_path)
            .with_context(|| format!("reading {}", kubeconfig_path.display()))?;
        Ok(Self {
            origin: Origin::Local { state_dir },
            kubeconfig_path,
            kubeconfig,
        })
    }
}

/// `WASP_TEST_KEEP_STATE` is set (and not "0"/empty).
fn keep_state() -> bool {
    std::env::var("WASP_TEST_KEEP_STATE").is_ok_and(|v| !v.is_empty() && v != "0")
}
