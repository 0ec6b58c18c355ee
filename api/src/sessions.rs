//! The WhatsAppSession resources as the API sees them: a watched cache (kube-runtime reflector) of
//! the release namespace, so routes read a user's session without a call to the apiserver, and
//! the server-side-applied writes of connect/disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasp_crds::{DesiredState, StoragePolicy, WhatsAppSession, labels, names};

use crate::error::ApiError;

/// Field manager of every write the API makes on a user's behalf.
pub const FIELD_MANAGER: &str = "wasp-api";

/// Field manager of the defaults the API fills in once, when it creates a session (the storage
/// policy). A manager of its own because server-side apply removes a field its manager stops
/// sending: applied by `wasp-api`, the policy would fall back to the CRD default on the next
/// connect (which sends only `userId` and `desiredState`). This manager never applies again, so
/// the value stays, and whoever edits it later (kubectl, GitOps) simply takes it over.
pub const DEFAULTS_FIELD_MANAGER: &str = "wasp-api-defaults";

#[derive(Clone)]
pub struct Sessions {
    api: Api<WhatsAppSession>,
    namespace: String,
    store: Store<WhatsAppSession>,
    ready: Arc<AtomicBool>,
    /// Turns true once the cache holds the first list. Requests wait on this, not on
    /// `Store::wait_until_ready`: in kube-runtime 5 that parks concurrent waiters on one oneshot
    /// receiver which keeps only the last waker, so some waiters would never wake.
    ready_rx: watch::Receiver<bool>,
    timeout: Duration,
    /// Storage policy of the sessions the API creates (`DEFAULT_STORAGE_POLICY`).
    default_storage: StoragePolicy,
}

impl Sessions {
    /// Starts the watch; it runs until `stop`.
    pub fn start(
        client: Client,
        namespace: &str,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        let api: Api<WhatsAppSession> = Api::namespaced(client, namespace);
        let ready = Arc::new(AtomicBool::new(false));
        let store = crate::cache::spawn(
            api.clone(),
            watcher::Config::default().any_semantic(),
            stop,
            "WhatsAppSession",
        );
        let (ready_tx, ready_rx) = watch::channel(false);
        tokio::spawn({
            let (store, ready) = (store.clone(), ready.clone());
            async move {
                if store.wait_until_ready().await.is_ok() {
                    ready.store(true, Ordering::Relaxed);
                    let _ = ready_tx.send(true);
                    tracing::info!("WhatsAppSession cache synced");
                }
            }
        });
        Self {
            api,
            namespace: namespace.to_owned(),
            store,
            ready,
            ready_rx,
            timeout,
            default_storage: StoragePolicy::default(),
        }
    }

    /// The storage policy given to sessions the API creates.
    pub fn with_default_storage_policy(mut self, policy: StoragePolicy) -> Self {
        self.default_storage = policy;
        self
    }

    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    async fn wait_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            return Ok(());
        }
        let mut ready = self.ready_rx.clone();
        tokio::time::timeout(self.timeout, ready.wait_for(|r| *r))
            .await
            .map_err(|_| ApiError::unavailable("the session cache", "not synced yet"))?
            .map(|_| ())
            .map_err(|e| ApiError::unavailable("the session cache", e))
    }

    /// The caller's session from the cache, if it exists and really is theirs: the one under
    /// the derived name, else one a platform team created under any name for this user id.
    pub async fn get(&self, user_id: &str) -> Result<Option<Arc<WhatsAppSession>>, ApiError> {
        self.wait_ready().await?;
        let key = ObjectRef::new(&names::session_name(user_id)).within(&self.namespace);
        if let Some(s) = self.store.get(&key).filter(|s| s.spec.user_id == user_id) {
            return Ok(Some(s));
        }
        // A scan of the cache (microseconds for thousands of sessions).
        Ok(pick_for_user(self.store.state(), user_id))
    }

    /// Whether the caller's session exists, asking the apiserver when the cache does not have it
    /// (a write may not have reached this replica's watch yet).
    pub async fn exists(&self, user_id: &str) -> Result<bool, ApiError> {
        if self.get(user_id).await?.is_some() {
            return Ok(true);
        }
        let name = names::session_name(user_id);
        let found = tokio::time::timeout(self.timeout, self.api.get_opt(&name))
            .await
            .map_err(|_| ApiError::unavailable("kubernetes", "get timed out"))?
            .map_err(|e| ApiError::unavailable("kubernetes", e))?;
        Ok(found.is_some_and(|s| s.spec.user_id == user_id))
    }

    /// Every session in the cache.
    pub async fn all(&self) -> Result<Vec<Arc<WhatsAppSession>>, ApiError> {
        self.wait_ready().await?;
        Ok(self.store.state())
    }

    /// Creates or updates the caller's session with `desired` (server-side apply, forced: the
    /// user's latest wish wins over a stale-cleanup write). Only `userId` and `desiredState` are
    /// owned by the API; other spec fields keep whatever an admin set. A session the API
    /// creates also gets the default storage policy (see [`DEFAULTS_FIELD_MANAGER`]).
    pub async fn apply_desired(
        &self,
        user_id: &str,
        desired: DesiredState,
    ) -> Result<WhatsAppSession, ApiError> {
        // The user's existing session keeps its name (kubectl-made ones too): one per user.
        let existing = self.get(user_id).await?;
        let name = match &existing {
            Some(existing) => existing.name_any(),
            None => names::session_name(user_id),
        };
        let mut body = apply_body(user_id, desired)?;
        body["metadata"]["name"] = Value::String(name.clone());
        let session = self
            .apply(&name, &body, PatchParams::apply(FIELD_MANAGER).force())
            .await?;
        if existing.is_none() && made_by_api_alone(&session) {
            return Ok(self.apply_defaults(&name).await.unwrap_or(session));
        }
        Ok(session)
    }

    /// Fills in the defaults of a session the API just created. Not forced: should someone
    /// else have set the policy meanwhile (a cache that lagged behind a kubectl apply), theirs
    /// stays. `None` when nothing was written.
    async fn apply_defaults(&self, name: &str) -> Option<WhatsAppSession> {
        let body = defaults_body(name, self.default_storage);
        match self
            .apply(name, &body, PatchParams::apply(DEFAULTS_FIELD_MANAGER))
            .await
        {
            Ok(session) => Some(session),
            Err(e) => {
                tracing::warn!(session = name, error = %e, "default storage policy not applied");
                None
            }
        }
    }

    async fn apply(
        &self,
        name: &str,
        body: &Value,
        params: PatchParams,
    ) -> Result<WhatsAppSession, ApiError> {
        let result = tokio::time::timeout(
            self.timeout,
            self.api.patch(name, &params, &Patch::Apply(body)),
        )
        .await
        .map_err(|_| ApiError::unavailable("kubernetes", "apply timed out"))?;
        match result {
            Ok(session) => Ok(session),
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => Err(ApiError::Internal(
                format!("apply of {name} refused: {}", e.message),
            )),
            Err(e) => Err(ApiError::unavailable("kubernetes", e)),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Among `all` sessions, the one of `user_id`: the oldest if a platform team made several
/// (then by name), so every replica picks the same.
pub fn pick_for_user(
    all: Vec<Arc<WhatsAppSession>>,
    user_id: &str,
) -> Option<Arc<WhatsAppSession>> {
    all.into_iter()
        .filter(|s| s.spec.user_id == user_id)
        .min_by(|a, b| {
            let at = |s: &WhatsAppSession| s.metadata.creation_timestamp.clone().map(|t| t.0);
            at(a)
                .cmp(&at(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

/// The apply body: `WhatsAppSession::for_user` reduced to the fields the API owns.
pub fn apply_body(user_id: &str, desired: DesiredState) -> Result<Value, ApiError> {
    let mut session = WhatsAppSession::for_user(user_id);
    session.spec.desired_state = desired;
    session.labels_mut().insert(
        labels::USER_HASH.to_owned(),
        wasp_common::user_hash(user_id),
    );
    let full = serde_json::to_value(&session).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json!({
        "apiVersion": full["apiVersion"],
        "kind": full["kind"],
        "metadata": {
            "name": full["metadata"]["name"],
            "labels": full["metadata"]["labels"],
        },
        "spec": {
            "userId": full["spec"]["userId"],
            "desiredState": full["spec"]["desiredState"],
        },
    }))
}

/// Whether only the API's own field managers ever wrote `session` (outside its status): then
/// the API has just created it, and no one else has chosen its settings.
pub fn made_by_api_alone(session: &WhatsAppSession) -> bool {
    session
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() != Some("status"))
        .all(|m| {
            matches!(
                m.manager.as_deref(),
                Some(FIELD_MANAGER | DEFAULTS_FIELD_MANAGER)
            )
        })
}

/// The apply body of the defaults manager: only the storage policy.
pub fn defaults_body(name: &str, policy: StoragePolicy) -> Value {
    json!({
        "apiVersion": "wasp.dev/v1alpha1",
        "kind": "WhatsAppSession",
        "metadata": { "name": name },
        "spec": { "storage": { "policy": policy } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, user: &str, created: Option<&str>) -> Arc<WhatsAppSession> {
        let mut s = WhatsAppSession::for_user(user);
        s.metadata.name = Some(name.into());
        s.metadata.creation_timestamp = created
            .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.parse().unwrap()));
        Arc::new(s)
    }

    #[test]
    fn a_users_session_under_any_name_is_found_the_oldest_first() {
        let all = vec![
            named("b-late", "ann", Some("2026-01-02T00:00:00Z")),
            named("other", "bob", Some("2025-01-01T00:00:00Z")),
            named("c-early", "ann", Some("2026-01-01T00:00:00Z")),
            named("a-early", "ann", Some("2026-01-01T00:00:00Z")),
        ];
        let pick = |u: &str| pick_for_user(all.clone(), u).map(|s| s.name_any());
        assert_eq!(pick("ann").as_deref(), Some("a-early"));
        assert_eq!(pick("bob").as_deref(), Some("other"));
        assert_eq!(pick("carol"), None);
        assert_eq!(pick("AnN"), None, "user ids are exact");
    }

    #[test]
    fn defaults_are_only_the_storage_policy() {
        assert_eq!(
            defaults_body("wa-x", StoragePolicy::ContactsOnly),
            json!({
                "apiVersion": "wasp.dev/v1alpha1",
                "kind": "WhatsAppSession",
                "metadata": {"name": "wa-x"},
                "spec": {"storage": {"policy": "contactsOnly"}},
            })
        );
    }

    #[test]
    fn only_sessions_no_one_else_wrote_count_as_made_by_the_api() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let with = |entries: &[(&str, Option<&str>)]| {
            let mut s = WhatsAppSession::for_user("u");
            s.metadata.managed_fields = Some(
                entries
                    .iter()
                    .map(|(m, sub)| ManagedFieldsEntry {
                        manager: Some((*m).to_owned()),
                        subresource: sub.map(str::to_owned),
                        ..Default::default()
                    })
                    .collect(),
            );
            s
        };
        assert!(made_by_api_alone(&with(&[(FIELD_MANAGER, None)])));
        assert!(made_by_api_alone(&with(&[
            (FIELD_MANAGER, None),
            (DEFAULTS_FIELD_MANAGER, None),
            ("wasp-operator", Some("status")),
        ])));
        assert!(!made_by_api_alone(&with(&[
            (FIELD_MANAGER, None),
            ("kubectl-client-side-apply", None),
        ])));
        assert!(!made_by_api_alone(&with(&[
            (FIELD_MANAGER, None),
            ("wasp-operator", None),
        ])));
    }

    #[test]
    fn apply_body_owns_only_user_id_and_desired_state() {
        let body = apply_body("doctor@clinic.com", DesiredState::Disconnected).unwrap();
        assert_eq!(body["apiVersion"], "wasp.dev/v1alpha1");
        assert_eq!(body["kind"], "WhatsAppSession");
        assert_eq!(
            body["metadata"]["name"],
            names::session_name("doctor@clinic.com")
        );
        assert_eq!(
            body["metadata"]["labels"][labels::USER_HASH],
            wasp_common::user_hash("doctor@clinic.com")
        );
        assert_eq!(
            body["spec"],
            json!({"userId": "doctor@clinic.com", "desiredState": "disconnected"})
        );
        assert!(body.get("status").is_none());
    }
}
