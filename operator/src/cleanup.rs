//! The finalizer's work when a WhatsAppSession is deleted: log the device out while the session
//! pod can still be reached, make sure the pod is gone (so nothing writes the user's keys again),
//! then purge every Redis key of the user and delete its Redis user. Each step treats "already done" as success.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};
use wasp_common::control::LOGOUT_PATH;
use wasp_common::purge::purge_user;
use wasp_crds::WhatsAppSession;

use crate::controller::Context;
use crate::error::{Error, Result};
use crate::resources::{self, CONTROL_TOKEN_KEY};

/// Runs one pass; `Ok(true)` when the finalizer may be removed, `Ok(false)` to check again soon.
pub async fn finalize(session: &WhatsAppSession, ctx: &Context) -> Result<bool> {
    let ns = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_name = resources::pod_name(session);

    if let Some(pod) = pods.get_opt(&pod_name).await? {
        if pod.metadata.deletion_timestamp.is_none() {
            logout(session, ctx).await;
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if pods.get_opt(&pod_name).await?.is_some() {
            return Ok(false);
        }
    }

    let mut redis = ctx.redis.clone();
    let purged = purge_user(&mut redis, &session.spec.user_id).await?;
    info!(session = %session.name_any(), namespace = %ns, keys = purged, "purged the user's data");
    if let Some(users) = ctx.session_users.as_ref()
        && users.delete(&mut redis, &session.spec.user_id).await?
    {
        info!(session = %session.name_any(), namespace = %ns, "deleted the session's Redis user");
    }
    Ok(true)
}

/// Asks the session pod to log the device out of WhatsApp. Best effort: an unreachable pod
/// cannot be logged out from here, and must not block deletion.
async fn logout(session: &WhatsAppSession, ctx: &Context) {
    let Some(endpoint) = session.status.as_ref().and_then(|s| s.endpoint.clone()) else {
        return;
    };
    let Some(ns) = session.namespace() else {
        return;
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let token = match secrets
        .get_opt(&resources::control_secret_name(session))
        .await
    {
        Ok(Some(secret)) => secret.data.and_then(|d| {
            d.get(CONTROL_TOKEN_KEY)
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        }),
        _ => None,
    };
    let Some(token) = token else { return };
    let url = format!("http://{endpoint}{LOGOUT_PATH}");
    match ctx.http.post(&url).bearer_auth(token).send().await {
        Ok(r) if r.status().is_success() => {
            info!(session = %session.name_any(), "device logged out")
        }
        Ok(r) => {
            warn!(session = %session.name_any(), status = %r.status(), "session pod refused logout")
        }
        Err(e) => {
            warn!(session = %session.name_any(), error = %e, "session pod unreachable for logout")
        }
    }
}
