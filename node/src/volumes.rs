//! A pod's volumes as directories of the host, and the path convention that tells a process where
//! they are: an env value or container arg naming a path under a `mountPath` is rewritten to the
//! same path under the volume's directory (processes cannot see a mount namespace here). The
//! decisions are pure; [`prepare`] does the IO.
//!
//! | volume | directory |
//! |---|---|
//! | `emptyDir` | `<state>/pods/<ns>_<pod>_<uid>/volumes/<name>`, removed with the pod |
//! | `persistentVolumeClaim` | the bound PersistentVolume's `hostPath` (the node's provisioner makes them under `<state>/volumes/`), kept after the pod |
//! | `secret`, `configMap` | like `emptyDir`, with one file per key (or per `items` entry), written at each container start |
//! | `hostPath` | the path itself |
//! | anything else | like `emptyDir` (and a warning) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::{Api, Client};
use tracing::warn;

/// What backs a volume on this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    EmptyDir,
    Claim(String),
    Secret {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    ConfigMap {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    HostPath(PathBuf),
    /// A kind the node does not provide (projected, downwardAPI, csi, ...): an empty directory.
    Unsupported,
}

pub fn source(v: &Volume) -> Source {
    if v.empty_dir.is_some() {
        Source::EmptyDir
    } else if let Some(c) = &v.persistent_volume_claim {
        Source::Claim(c.claim_name.clone())
    } else if let Some(s) = &v.secret {
        Source::Secret {
            name: s.secret_name.clone().unwrap_or_default(),
            items: s.items.clone(),
            optional: s.optional == Some(true),
        }
    } else if let Some(c) = &v.config_map {
        Source::ConfigMap {
            name: c.name.clone(),
            items: c.items.clone(),
            optional: c.optional == Some(true),
        }
    } else if let Some(h) = &v.host_path {
        Source::HostPath(h.path.clone().into())
    } else {
        Source::Unsupported
    }
}

/// The claims a pod's volumes name (its pod waits until each is Bound, as a scheduler's would).
pub fn claims(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| match source(v) {
            Source::Claim(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// One volume mount of a container, resolved to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    /// Where the container expects it (`mountPath`, without a trailing `/`).
    pub mount_path: String,
    /// Where it is: the volume's directory plus `subPath`.
    pub host_path: PathBuf,
}

/// The mounts of `container`, given each volume's directory (mounts of unknown volumes are left
/// out).
pub fn mounts(container: &Container, dirs: &BTreeMap<String, PathBuf>) -> Vec<Mount> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = dirs.get(&m.name)?;
            let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => dir.join(sub.trim_start_matches('/')),
                None => dir.clone(),
            };
            let trimmed = m.mount_path.trim_end_matches('/');
            Some(Mount {
                volume: m.name.clone(),
                mount_path: if trimmed.is_empty() {
                    "/".into()
                } else {
                    trimmed.into()
                },
                host_path,
            })
        })
        .collect()
}

/// The path convention: a value that is a path under a mount (`<mountPath>` or
/// `<mountPath>/...`), or a flag `--x=<such a path>`, becomes the same path under the mount's
/// host directory. The longest matching mount wins. `None` when the value names no mount.
pub fn rewrite_path(value: &str, mounts: &[Mount]) -> Option<String> {
    if let Some((flag, path)) = value.split_once('=')
        && flag.starts_with('-')
    {
        return rewrite_path(path, mounts).map(|p| format!("{flag}={p}"));
    }
    let best = mounts
        .iter()
        .filter(|m| m.mount_path != "/")
        .filter_map(|m| {
            let rest = value.strip_prefix(m.mount_path.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest))
        })
        .max_by_key(|(m, _)| m.mount_path.len())?;
    let (m, rest) = best;
    Some(format!("{}{rest}", m.host_path.display()))
}

/// `WASP_NODE_VOLUME_<NAME>`: the variable naming a mounted volume's directory (name upper-cased,
/// anything but letters and digits as `_`).
pub fn volume_env_name(volume: &str) -> String {
    let name: String = volume
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("WASP_NODE_VOLUME_{name}")
}

/// The files a Secret's or ConfigMap's volume holds: every key as a file, or only the `items`
/// (each to its `path`). Keys named by `items` but missing are an error (the kubelet's too).
pub fn files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    match items {
        None => Ok(data
            .iter()
            .filter(|(k, _)| is_plain_file_name(k))
            .map(|(k, v)| (PathBuf::from(k), v.clone()))
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let v = data
                    .get(&i.key)
                    .ok_or_else(|| format!("key {} not found", i.key))?;
                let p = Path::new(&i.path);
                if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                    return Err(format!("item path {} leaves the volume", i.path));
                }
                Ok((p.to_path_buf(), v.clone()))
            })
            .collect(),
    }
}

fn is_plain_file_name(k: &str) -> bool {
    !k.is_empty() && k != "." && k != ".." && !k.contains('/')
}

/// Where the node keeps a pod's volumes and how it reaches the API for them.
pub struct Prepare<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub pod_dir: &'a Path,
}

/// Makes (or refreshes) every volume of `pod` and returns each one's directory. An error is the
/// kubelet's `CreateContainerConfigError`-like reason to retry later (a missing Secret, an
/// unbound claim).
pub async fn prepare(p: &Prepare<'_>, pod: &Pod) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut dirs = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let own = p.pod_dir.join("volumes").join(&v.name);
        let dir = match source(v) {
            Source::EmptyDir => own,
            Source::Unsupported => {
                warn!(volume = %v.name, "volume kind not supported by wasp-node: an empty directory instead");
                own
            }
            Source::HostPath(path) => path,
            Source::Claim(claim) => claim_dir(p, &claim).await?,
            Source::Secret {
                name,
                items,
                optional,
            } => {
                let api: Api<Secret> = Api::namespaced(p.client.clone(), p.namespace);
                let data = match api.get_opt(&name).await {
                    Ok(Some(s)) => s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                    Ok(None) if optional => BTreeMap::new(),
                    Ok(None) => return Err(format!("secret \"{name}\" not found")),
                    Err(e) => return Err(format!("reading secret {name}: {e}")),
                };
                write_files(&own, &data, items.as_deref(), true)
                    .map_err(|e| format!("volume {}: {e}", v.name))?;
                own
            }
            Source::ConfigMap {
                name,
                items,
                optional,
            } => {
                let api: Api<ConfigMap> = Api::namespaced(p.client.clone(), p.namespace);
                let data = match api.get_opt(&name).await {
                    Ok(Some(c)) => {
                        let mut d: BTreeMap<String, Vec<u8>> = c
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        d.extend(
                            c.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        d
                    }
                    Ok(None) if optional => BTreeMap::new(),
                    Ok(None) => return Err(format!("configmap \"{name}\" not found")),
                    Err(e) => return Err(format!("reading configmap {name}: {e}")),
                };
                write_files(&own, &data, items.as_deref(), false)
                    .map_err(|e| format!("volume {}: {e}", v.name))?;
                own
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        dirs.insert(v.name.clone(), dir);
    }
    Ok(dirs)
}

/// Writes a volume's files; a Secret's are readable by the node's user only (0600), since
/// there is no mount namespace to keep other users of the machine out.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    private: bool,
) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    for (rel, bytes) in files(data, items)? {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(if private { 0o600 } else { 0o644 })
                .open(&path)?;
            f.write_all(&bytes)
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The directory of a bound claim: its PersistentVolume's `hostPath`.
async fn claim_dir(p: &Prepare<'_>, claim: &str) -> Result<PathBuf, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(p.client.clone(), p.namespace);
    let pvc = pvcs
        .get_opt(claim)
        .await
        .map_err(|e| format!("reading claim {claim}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" is not bound"))?;
    let pvs: Api<PersistentVolume> = Api::all(p.client.clone());
    let pv = pvs
        .get(&volume)
        .await
        .map_err(|e| format!("reading persistentvolume {volume}: {e}"))?;
    pv.spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .ok_or_else(|| {
            format!(
                "persistentvolume {volume} is not a hostPath volume (wasp-node mounts only those)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("a container")
    }

    #[test]
    fn mounts_join_sub_paths_and_skip_unknown_volumes() {
        let c = container(json!({ "name": "c", "volumeMounts": [
            { "name": "data", "mountPath": "/data/" },
            { "name": "conf", "mountPath": "/etc/redis.conf", "subPath": "redis.conf" },
            { "name": "gone", "mountPath": "/gone" },
        ] }));
        let dirs = BTreeMap::from([
            ("data".to_owned(), PathBuf::from("/s/v/data")),
            ("conf".to_owned(), PathBuf::from("/s/p/volumes/conf")),
        ]);
        let m = mounts(&c, &dirs);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_path, "/data");
        assert_eq!(
            m[1].host_path,
            PathBuf::from("/s/p/volumes/conf/redis.conf")
        );
    }

    #[test]
    fn paths_under_mounts_are_rewritten_longest_first() {
        let m = |v: &str, p: &str, h: &str| Mount {
            volume: v.into(),
            mount_path: p.into(),
            host_path: h.into(),
        };
        let ms = [
            m("data", "/data", "/s/pvc"),
            m("sub", "/data/cache", "/s/cache"),
            m("root", "/", "/s/root"),
        ];
        let rw = |v: &str| rewrite_path(v, &ms);
        assert_eq!(rw("/data").as_deref(), Some("/s/pvc"));
        assert_eq!(
            rw("/data/appendonly.aof").as_deref(),
            Some("/s/pvc/appendonly.aof")
        );
        assert_eq!(rw("/data/cache/x").as_deref(), Some("/s/cache/x"));
        assert_eq!(rw("--dir=/data").as_deref(), Some("--dir=/s/pvc"));
        assert_eq!(
            rw("/database"),
            None,
            "a prefix of a name is not a path under it"
        );
        assert_eq!(rw("data"), None);
        assert_eq!(
            rw("/etc/x"),
            None,
            "a mount at / is never used for rewriting"
        );
        assert_eq!(rw("x=/data"), None, "only flags get their value rewritten");
    }

    #[test]
    fn volume_env_names() {
        assert_eq!(volume_env_name("data"), "WASP_NODE_VOLUME_DATA");
        assert_eq!(volume_env_name("tmp-dir.x"), "WASP_NODE_VOLUME_TMP_DIR_X");
    }

    #[test]
    fn files_follow_items() {
        let data = BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]);
        let all = files(&data, None).expect("files");
        assert_eq!(all.len(), 2);
        let item = |k: &str, p: &str| KeyToPath {
            key: k.into(),
            path: p.into(),
            mode: None,
        };
        let some = files(&data, Some(&[item("b", "dir/b.txt")])).expect("files");
        assert_eq!(some, vec![(PathBuf::from("dir/b.txt"), b"2".to_vec())]);
        assert!(files(&data, Some(&[item("c", "c")])).is_err());
        assert!(files(&data, Some(&[item("a", "../x")])).is_err());
        assert!(files(&data, Some(&[item("a", "/etc/x")])).is_err());
    }

    #[test]
    fn sources_and_claims() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "volumes": [
                { "name": "a", "emptyDir": {} },
                { "name": "b", "persistentVolumeClaim": { "claimName": "data-redis-0" } },
                { "name": "c", "secret": { "secretName": "s" } },
                { "name": "d", "projected": { "sources": [] } },
            ] }
        }))
        .expect("a pod");
        assert_eq!(claims(&pod), vec!["data-redis-0".to_owned()]);
        let vols = pod.spec.and_then(|s| s.volumes).unwrap_or_default();
        assert_eq!(source(&vols[0]), Source::EmptyDir);
        assert!(matches!(source(&vols[2]), Source::Secret { ref name, .. } if name == "s"));
        assert_eq!(source(&vols[3]), Source::Unsupported);
    }
}
