//! A stand-in volume provisioner: every unbound PersistentVolumeClaim of the watched namespaces
//! (e.g. one a StatefulSet's `volumeClaimTemplates` made) gets a `hostPath` PersistentVolume
//! pre-bound to it (`claimRef`), a directory under `<state>/volumes/`. The controller-manager's
//! PV binder then binds the pair (claim Bound), as with a real provisioner. Reclaim policy
//! `Retain`: the directory and the PV outlive the claim (delete them by hand).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tracing::{info, warn};

use crate::watch::watch_all;

/// Label on the PersistentVolumes the node makes (value: the node's name).
pub const PROVISIONED_BY: &str = "wasp.dev/provisioned-by";

/// Whether `claim` waits for a volume: not bound, not being deleted.
pub fn needs_volume(claim: &PersistentVolumeClaim) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && claim
            .spec
            .as_ref()
            .is_some_and(|s| s.volume_name.as_deref().unwrap_or("").is_empty())
        && claim
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending")
}

/// The directory of `claim`'s volume under `volumes_dir`: one per claim incarnation (a claim
/// deleted and made again starts empty, as with a real provisioner).
pub fn volume_dir(volumes_dir: &Path, claim: &PersistentVolumeClaim) -> PathBuf {
    let uid: String = claim.uid().unwrap_or_default().chars().take(8).collect();
    volumes_dir.join(format!(
        "{}_{}_{uid}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    ))
}

/// The PersistentVolume for `claim`: `pvc-<claim uid>`, its size, access modes, volume mode and
/// class, `hostPath` `dir`, pre-bound through `claimRef`.
pub fn persistent_volume(
    claim: &PersistentVolumeClaim,
    node: &str,
    dir: &Path,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{}", claim.uid().unwrap_or_default())),
            labels: Some(BTreeMap::from([(
                PROVISIONED_BY.to_owned(),
                node.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_owned(),
                "wasp-node".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
            access_modes: Some(modes),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(spec.storage_class_name.clone().unwrap_or_default()),
            volume_mode: spec.volume_mode.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.namespace(),
                name: claim.metadata.name.clone(),
                uid: claim.uid(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Watches claims and provisions each one that needs a volume.
pub(crate) async fn run(
    client: Client,
    namespaces: Vec<String>,
    node: String,
    volumes_dir: PathBuf,
) {
    let mut events =
        watch_all::<PersistentVolumeClaim>(&client, &namespaces, &watcher::Config::default());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    while let Some((_, ev)) = events.next().await {
        let claim = match ev {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, "claim watch failed; retrying");
                continue;
            }
        };
        if !needs_volume(&claim) {
            continue;
        }
        let dir = volume_dir(&volumes_dir, &claim);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot make the claim's directory");
            continue;
        }
        let pv = persistent_volume(&claim, &node, &dir);
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                info!(claim = %format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any()), dir = %dir.display(), "provisioned a volume")
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                warn!(claim = %claim.name_any(), error = %e, "cannot create the claim's PersistentVolume")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).expect("a claim")
    }

    #[test]
    fn a_volume_matches_the_claim_and_is_pre_bound_to_it() {
        let c = claim(json!({
            "metadata": { "name": "data-wasp-redis-0", "namespace": "clinic", "uid": "0123456789ab" },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "2Gi" } } },
            "status": { "phase": "Pending" }
        }));
        assert!(needs_volume(&c));
        let dir = volume_dir(Path::new("/s/volumes"), &c);
        assert_eq!(
            dir,
            PathBuf::from("/s/volumes/clinic_data-wasp-redis-0_01234567")
        );
        let pv = persistent_volume(&c, "wasp-node-x", &dir);
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-0123456789ab"));
        let spec = pv.spec.expect("spec");
        assert_eq!(
            spec.capacity.and_then(|c| c.get("storage").cloned()),
            Some(Quantity("2Gi".into()))
        );
        assert_eq!(
            spec.storage_class_name.as_deref(),
            Some(""),
            "no class: the empty class"
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        let r = spec.claim_ref.expect("claimRef");
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (
                Some("clinic"),
                Some("data-wasp-redis-0"),
                Some("0123456789ab")
            )
        );
        assert_eq!(
            spec.host_path.map(|h| h.path),
            Some(dir.to_string_lossy().into_owned())
        );
    }

    #[test]
    fn bound_or_deleted_claims_need_nothing() {
        let bound = claim(
            json!({ "metadata": { "name": "a" }, "spec": { "volumeName": "pv-1" }, "status": { "phase": "Bound" } }),
        );
        assert!(!needs_volume(&bound));
        let deleting = claim(
            json!({ "metadata": { "name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z" }, "spec": {} }),
        );
        assert!(!needs_volume(&deleting));
        let new =
            claim(json!({ "metadata": { "name": "a" }, "spec": { "storageClassName": "fast" } }));
        assert!(needs_volume(&new));
        let pv = persistent_volume(&new, "n", Path::new("/d"));
        assert_eq!(
            pv.spec.and_then(|s| s.storage_class_name).as_deref(),
            Some("fast")
        );
    }
}
