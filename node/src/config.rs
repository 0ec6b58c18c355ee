//! The `wasp-node` binary's configuration: every field a flag and an environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::images::{Images, parse_image_arg, parse_images_file};
use crate::local_node::NodeOptions;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "wasp-node",
    version,
    about = "Runs the pods of known images as local processes: a node agent for a local cluster",
    long_about = "Runs the pods of known images as local processes: a node agent standing in for \
the kubelet, the scheduler, kube-proxy and a volume provisioner of one local node.\n\n\
It registers a Node, binds every new pod whose images it knows, and runs each container as a \
process of the binary its image maps to, on a loopback address of the pod's own. Pods with a \
service account get a KUBECONFIG with that account's token; Service names in env values and \
args (<svc>.<ns>.svc[.cluster.local], and <svc>.<ns> of an existing Service) are rewritten to \
a loopback address that forwards to the Service's ready pods; emptyDir, Secret, ConfigMap, \
hostPath and PersistentVolumeClaim volumes are directories (paths under a mountPath in env \
values and args are rewritten to them); unbound claims get a hostPath PersistentVolume. \
See docs/node.md.\n\n\
Example:\n  wasp-node --namespace wasp --state-dir .wasp-local/node \\\n    \
--image wasp-session-pod=target/debug/wasp-session-pod --image 'redis=redis-server'"
)]
pub struct Config {
    /// Kubeconfig of the cluster; otherwise KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account, as kubectl finds them.
    #[arg(long, env = "WASP_NODE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Name of the Node object; `wasp-node-<random>` when unset.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Namespace whose pods, Services and claims the node takes (repeat, or comma-separated);
    /// all namespaces when unset.
    #[arg(
        long = "namespace",
        env = "WASP_NODE_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Only pods matching this label selector (e.g. `app.kubernetes.io/part-of=wasp`).
    #[arg(long, env = "WASP_NODE_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// An image rule, `SUFFIX=BINARY [ARG...]` (repeat; `;`-separated in the variable): pods
    /// whose image repository ends with SUFFIX run BINARY (a name without `/` is looked up on
    /// PATH), ARGs being the image's default arguments. Rules are tried in order, these before
    /// the images file's; the first match wins.
    #[arg(long = "image", env = "WASP_NODE_IMAGES", value_delimiter = ';')]
    pub images: Vec<String>,

    /// A YAML file of image rules (`images: [{image, binary, args, env}]`, docs/node.md), for
    /// arguments with spaces and image environment variables.
    #[arg(long, env = "WASP_NODE_IMAGES_FILE")]
    pub images_file: Option<PathBuf>,

    /// Directory for pod directories (`pods/`), logs (`logs/<ns>_<pod>_<container>.log`) and
    /// provisioned volumes (`volumes/`); kept across restarts.
    #[arg(long, env = "WASP_NODE_STATE_DIR", default_value = ".wasp-node")]
    pub state_dir: PathBuf,

    /// How often readiness probes run, in milliseconds (instead of their `periodSeconds`;
    /// liveness probes keep theirs, so nothing is killed sooner than in a cluster).
    #[arg(long, env = "WASP_NODE_PROBE_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub probe_interval_ms: u64,

    /// Pods get addresses in 127.<N>.0.0/16; a random N in 100–249 when unset.
    #[arg(long, env = "WASP_NODE_POD_BLOCK", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub pod_block: Option<u8>,

    /// Services get addresses in 127.<N>.0.0/16; a random N in 20–99 when unset.
    #[arg(long, env = "WASP_NODE_SERVICE_BLOCK", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub service_block: Option<u8>,

    /// Make a hostPath PersistentVolume (under the state dir) for every unbound claim.
    #[arg(long, env = "WASP_NODE_PROVISION_VOLUMES", default_value_t = true, action = clap::ArgAction::Set)]
    pub provision_volumes: bool,

    /// How many pods are being started at once (status written, Secrets and ConfigMaps read,
    /// process spawned); the others wait their turn, oldest pod first.
    #[arg(long, env = "WASP_NODE_PARALLEL_STARTS", default_value_t = crate::local_node::DEFAULT_PARALLEL_STARTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub parallel_starts: usize,

    /// Log format: json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

impl Config {
    /// The image rules: `--image`s first, then the images file's; binaries resolved.
    pub fn images(&self) -> anyhow::Result<Images> {
        let mut images = Images::new();
        for value in self.images.iter().filter(|v| !v.trim().is_empty()) {
            let (suffix, image) = parse_image_arg(value).map_err(anyhow::Error::msg)?;
            images = images.with(suffix, image);
        }
        if let Some(file) = &self.images_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let from_file =
                parse_images_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for (suffix, image) in from_file.rules() {
                images = images.with(suffix.clone(), image.clone());
            }
        }
        if images.rules().is_empty() {
            bail!("no images: give --image SUFFIX=BINARY or --images-file");
        }
        let path = std::env::var_os("PATH");
        let cwd = std::env::current_dir().context("the working directory")?;
        images.map_binaries(|b| {
            resolve_binary(b, path.as_deref(), &cwd, |p| p.is_file())
                .ok_or_else(|| anyhow::anyhow!("image binary {} not found", b.display()))
        })
    }

    /// The cluster's client configuration.
    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .with_context(|| format!("loading {}", path.display()))
            }
            None => kube::Config::infer()
                .await
                .context("finding a kubeconfig (give --kubeconfig)"),
        }
    }

    pub fn node_options(&self) -> NodeOptions {
        NodeOptions {
            name: self.node_name.clone(),
            namespaces: self
                .namespaces
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            label_selector: self.label_selector.clone(),
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            state_dir: Some(self.state_dir.clone()),
            pod_block: self.pod_block,
            service_block: self.service_block,
            provision_volumes: self.provision_volumes,
            parallel_starts: self.parallel_starts,
            ..NodeOptions::default()
        }
    }
}

/// Where `binary` is: a name without `/` is looked up in `path` (a PATH value); a relative path
/// is taken from `cwd`. `None` when `exists` says no.
pub fn resolve_binary(
    binary: &Path,
    path: Option<&std::ffi::OsStr>,
    cwd: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let bare = binary.components().count() == 1 && !binary.is_absolute();
    if bare {
        return std::env::split_paths(path?)
            .map(|dir| dir.join(binary))
            .find(|p| exists(p));
    }
    let full = if binary.is_absolute() {
        binary.to_path_buf()
    } else {
        cwd.join(binary)
    };
    exists(&full).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Image;

    #[test]
    fn flags_become_node_options() {
        let c = Config::parse_from([
            "wasp-node",
            "--namespace",
            "wasp,other",
            "--namespace",
            "third",
            "--image",
            "session-pod=/bin/true",
            "--state-dir",
            "/tmp/n",
            "--probe-interval-ms",
            "100",
            "--pod-block",
            "150",
            "--parallel-starts",
            "4",
        ]);
        let o = c.node_options();
        assert_eq!(o.namespaces, ["wasp", "other", "third"]);
        assert_eq!(o.state_dir.as_deref(), Some(Path::new("/tmp/n")));
        assert_eq!(o.probe_interval, Duration::from_millis(100));
        assert_eq!(o.pod_block, Some(150));
        assert_eq!(o.parallel_starts, 4);
        assert!(o.provision_volumes);
        assert_eq!(
            c.images().expect("images").lookup("wasp/session-pod:1"),
            Some(&Image::new("/bin/true"))
        );
        assert!(Config::try_parse_from(["wasp-node", "--pod-block", "0"]).is_err());
        let none = Config::parse_from(["wasp-node"]);
        assert!(none.images().is_err(), "no image rule is an error");
        assert!(none.node_options().namespaces.is_empty(), "all namespaces");
    }

    #[test]
    fn binaries_are_found_on_path_or_from_the_working_directory() {
        let exists = |p: &Path| {
            p == Path::new("/usr/bin/redis-server") || p == Path::new("/w/target/debug/x")
        };
        let path = std::ffi::OsString::from("/bin:/usr/bin");
        let r = |b: &str| resolve_binary(Path::new(b), Some(&path), Path::new("/w"), exists);
        assert_eq!(
            r("redis-server"),
            Some(PathBuf::from("/usr/bin/redis-server"))
        );
        assert_eq!(
            r("target/debug/x"),
            Some(PathBuf::from("/w/target/debug/x"))
        );
        assert_eq!(
            r("/usr/bin/redis-server"),
            Some(PathBuf::from("/usr/bin/redis-server"))
        );
        assert_eq!(r("nope"), None);
        assert_eq!(r("/bin/nope"), None);
    }
}
