//! The test environment of one test binary: a cluster and a Redis, started on first use.
//!
//! Each `#[tokio::test]` runs on its own runtime, and clients (kube's `Client`, Redis connections)
//! are bound to the runtime that made them. So the shared, static part holds only paths, URLs and
//! processes; every test makes its own clients ([`TestEnv::kube_client`], [`TestEnv::redis_url`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

use crate::cluster::{Cluster, Origin};
use crate::crds::install_crds_from;
use crate::redis_server::RedisServer;
use crate::wait::eventually;

/// Label put on every namespace the harness creates.
pub const NAMESPACE_LABEL: &str = "wasp-e2e/test";

#[derive(Debug)]
enum Redis {
    Local(RedisServer),
    External(String),
}

/// The cluster and Redis shared by all tests of one test binary.
#[derive(Debug)]
pub struct TestEnv {
    repo_root: PathBuf,
    cluster: Cluster,
    redis: Redis,
    crds: OnceCell<Vec<String>>,
    namespaces: AtomicU32,
}

static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();

impl TestEnv {
    /// The environment of this test binary, started by the first caller (the others wait):
    /// - Kubernetes: the cluster of `WASP_TEST_KUBECONFIG` or `KUBECONFIG` if set, else a fresh
    ///   local one (`scripts/kube-up.sh`, binaries from `WASP_KUBE_BIN` or
    ///   `scripts/build-kube.sh`), about 3 s;
    /// - Redis: `WASP_TEST_REDIS_URL` if set, else a private `redis-server` on a free port.
    ///
    /// Local processes stop when the test binary exits, however it exits. Synchronous (plain
    /// `std::process`), so it is fine to call from inside `#[tokio::test]`. Panics if the
    /// environment cannot start; every later call panics with the same message.
    pub fn get() -> &'static TestEnv {
        match ENV.get_or_init(|| Self::start().map_err(|e| format!("{e:#}"))) {
            Ok(env) => env,
            Err(e) => panic!("the wasp test environment did not start: {e}"),
        }
    }

    fn start() -> anyhow::Result<Self> {
        let repo_root = repo_root();
        let redis = match std::env::var("WASP_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Redis::External(url),
            _ => Redis::Local(RedisServer::start().context("starting redis-server")?),
        };
        let cluster = Cluster::from_env_or_start(&repo_root).context("starting Kubernetes")?;
        Ok(Self {
            repo_root,
            cluster,
            redis,
            crds: OnceCell::new(),
            namespaces: AtomicU32::new(0),
        })
    }

    /// A new client for the cluster, bound to the calling test's runtime.
    pub async fn kube_client(&self) -> anyhow::Result<Client> {
        Client::try_from(self.kube_config().await?).context("building a kube client")
    }

    /// The cluster's client configuration (e.g. for `LocalNode::start_from_config`, which also
    /// hands its apiserver URL and CA to pods with a service account).
    pub async fn kube_config(&self) -> anyhow::Result<Config> {
        Config::from_custom_kubeconfig(
            self.cluster.kubeconfig.clone(),
            &KubeConfigOptions::default(),
        )
        .await
        .context("loading the test kubeconfig")
    }

    /// A kubeconfig file for the cluster, e.g. for `KUBECONFIG` of a child process or kubectl.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.cluster.kubeconfig_path
    }

    /// The local cluster's state directory (`logs/`, `pids/`, `ports.env`, `pki/`), `None` when
    /// the cluster came from the environment. Deleted when the test binary exits.
    pub fn kube_state_dir(&self) -> Option<&Path> {
        match &self.cluster.origin {
            Origin::Local { state_dir } => Some(state_dir),
            Origin::External => None,
        }
    }

    /// `redis://127.0.0.1:<port>` of this binary's Redis (shared by all its tests: use keys
    /// unique to the test).
    pub fn redis_url(&self) -> String {
        match &self.redis {
            Redis::Local(r) => r.url(),
            Redis::External(url) => url.clone(),
        }
    }

    /// The repository's root directory.
    pub fn repo_root(&self) -> &Path {
        &self.repo_root
    }

    /// `charts/wasp/crds`, where [`TestEnv::install_crds`] reads its CRDs.
    pub fn crds_dir(&self) -> PathBuf {
        self.repo_root.join("charts/wasp/crds")
    }

    /// Applies every CRD in `charts/wasp/crds/` (server-side apply, field manager "wasp-e2e") and
    /// waits until each is Established. Done once per test binary; concurrent callers wait for
    /// the first, and a failed attempt is retried by the next caller.
    pub async fn install_crds(&self, client: &Client) -> anyhow::Result<()> {
        let dir = self.crds_dir();
        self.crds
            .get_or_try_init(|| install_crds_from(client, &dir))
            .await?;
        Ok(())
    }

    /// Creates a namespace named `<prefix>-<n>-<random>` (prefix made DNS-safe), labelled
    /// [`NAMESPACE_LABEL`], and waits until pods can be created in it (its `default` service
    /// account exists, and before Kubernetes 1.24 has its token). Returns its name. Namespaces
    /// are not deleted afterwards: the local cluster goes away with the test binary.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let client = self.kube_client().await?;
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}-{}", dns_prefix(prefix), random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), dns_prefix(prefix))].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;

        // The ServiceAccount admission plugin refuses pods until the service-account and token
        // controllers have done their part (1.24+ no longer makes token secrets).
        let tokens_in_secrets = client
            .apiserver_version()
            .await
            .map(|v| leading_number(&v.major) == 1 && leading_number(&v.minor) < 24)
            .unwrap_or(true);
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        eventually(Duration::from_secs(30), || async {
            let sa = sas.get_opt("default").await.ok()??;
            let has_token = sa.secrets.as_ref().is_some_and(|s| !s.is_empty());
            (has_token || !tokens_in_secrets).then_some(())
        })
        .await
        .with_context(|| format!("namespace {name}: no default service account"))?;
        Ok(name)
    }
}

/// The repository root: the parent of this crate's directory (`tests/`).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `prefix` lowercased, with anything but `[a-z0-9-]` turned into `-`, at most 40 characters,
/// starting and ending alphanumeric ("test" if nothing is left).
fn dns_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "test".into()
    } else {
        trimmed.into()
    }
}

/// Six base-36 characters, different per process and call (names must not repeat on a
/// long-lived external cluster either).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut v = h.finish();
    (0..6)
        .map(|_| {
            let c = char::from_digit((v % 36) as u32, 36).unwrap_or('x');
            v /= 36;
            c
        })
        .collect()
}

/// The number at the start of a version component ("20+" → 20).
fn leading_number(s: &str) -> u32 {
    s.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_dns_labels() {
        assert_eq!(dns_prefix("Operator_Test!"), "operator-test");
        assert_eq!(dns_prefix("--"), "test");
        assert_eq!(dns_prefix(&"a".repeat(80)).len(), 40);
        let name = format!("{}-{}-{}", dns_prefix("x"), 7, random_suffix());
        assert!(name.len() <= 63);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn version_numbers() {
        assert_eq!(leading_number("20+"), 20);
        assert_eq!(leading_number("1"), 1);
        assert_eq!(leading_number(""), 0);
    }
}
