//! `spec.webhooks`: the operator copies each entry, with the signing secret read from the Secret
//! it names, into the user's webhook endpoints in Redis (id `spec-<name>`, sealed with the
//! webhook key exactly as wasp-api seals a user's own), removes the entries taken out of the
//! spec, and reads back whether any of the user's endpoints keeps failing. wasp-api's
//! dispatchers deliver them (docs/webhooks.md); the operator never calls a webhook URL.
//!
//! Pure: [`check_entry`], [`needs_put`], [`stale`], [`condition`]. IO: [`sync`].

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use redis::aio::ConnectionManager;
use wasp_common::webhooks::policy::UrlPolicy;
use wasp_common::webhooks::{
    Failing, SPEC_PREFIX, SecretBox, StoredEndpoint, is_signing_secret, parse_events,
    spec_endpoint_id,
};
use wasp_crds::{WebhookSpec, WhatsAppSession};

use crate::error::Result;

/// The operator's webhook settings (`--webhook-key`, the URL policy flags).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `None`: no webhook key; `spec.webhooks` cannot be applied.
    pub secrets: Option<SecretBox>,
    pub policy: UrlPolicy,
}

/// What the `WebhooksHealthy` condition is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookHealth {
    /// The user's endpoints now (spec entries and the user's own).
    pub endpoints: usize,
    /// Entries of `spec.webhooks` that could not be applied, as messages a user can act on.
    pub problems: Vec<String>,
    /// Endpoints whose deliveries fail now.
    pub failing: Vec<Failing>,
}

/// The condition type: whether every webhook of the session is applied and delivering.
pub const WEBHOOKS_HEALTHY: &str = "WebhooksHealthy";

/// `(status, reason, message)` of `WebhooksHealthy`.
pub fn condition(h: &WebhookHealth) -> (bool, &'static str, String) {
    if !h.problems.is_empty() {
        return (false, "WebhookInvalid", h.problems.join("; "));
    }
    if !h.failing.is_empty() {
        let each: Vec<String> = h
            .failing
            .iter()
            .map(|f| {
                let since = jiff::Timestamp::from_second(f.since)
                    .map_or_else(|_| f.since.to_string(), |t| t.to_string());
                format!("webhook {} failing since {since}: {}", f.id, f.error)
            })
            .collect();
        return (false, "DeliveryFailing", each.join("; "));
    }
    (
        true,
        "Delivering",
        format!("{} webhook(s) delivering", h.endpoints),
    )
}

/// Checks an entry's URL and events; the normalized event list.
pub fn check_entry(w: &WebhookSpec, policy: &UrlPolicy) -> Result<Vec<String>, String> {
    let at = format!("spec.webhooks[{}]", w.name);
    policy
        .check_url(&w.url)
        .map_err(|e| format!("{at}.url: {e}"))?;
    parse_events(w.events.clone()).map_err(|e| format!("{at}.events: {e}"))
}

/// Whether the stored endpoint (and its opened secret) differs from what the entry wants.
pub fn needs_put(
    existing: Option<&(StoredEndpoint, Option<String>)>,
    url: &str,
    events: &[String],
    secret: &str,
) -> bool {
    match existing {
        None => true,
        Some((ep, opened)) => {
            ep.url != url.trim() || ep.events != events || opened.as_deref() != Some(secret)
        }
    }
}

/// Spec endpoints in Redis whose entry is no longer in the spec.
pub fn stale<'a>(stored: &'a [StoredEndpoint], spec: &[WebhookSpec]) -> Vec<&'a str> {
    stored
        .iter()
        .filter(|ep| ep.id.starts_with(SPEC_PREFIX))
        .filter(|ep| !spec.iter().any(|w| spec_endpoint_id(&w.name) == ep.id))
        .map(|ep| ep.id.as_str())
        .collect()
}

/// Reads the signing secret an entry names.
async fn read_secret(client: &Client, ns: &str, w: &WebhookSpec) -> Result<String, String> {
    let at = format!("spec.webhooks[{}].secretRef", w.name);
    let r = &w.secret_ref;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("{at}: cannot read Secret {}: {e}", r.name))?
        .ok_or_else(|| format!("{at}: Secret {} not found", r.name))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(|| format!("{at}: Secret {} has no key {}", r.name, r.key))?;
    let text = std::str::from_utf8(&value.0)
        .map(str::trim)
        .map_err(|_| format!("{at}: not text"))?;
    if !is_signing_secret(text) {
        return Err(format!(
            "{at}: Secret {} key {} is not a Standard Webhooks secret (whsec_ followed by base64)",
            r.name, r.key
        ));
    }
    Ok(text.to_owned())
}

/// Brings the user's spec endpoints in line with `spec.webhooks` and reports their health;
/// `None` when the user has no webhook at all (no condition). An entry that cannot be applied
/// (refused URL, missing Secret) is reported and left as it was in Redis.
pub async fn sync(
    client: &Client,
    redis: &ConnectionManager,
    settings: &WebhookSettings,
    session: &WhatsAppSession,
    ns: &str,
) -> Result<Option<WebhookHealth>> {
    let user = &session.spec.user_id;
    let spec = &session.spec.webhooks;
    let mut conn = redis.clone();
    let stored = wasp_common::webhooks::endpoints(&mut conn, user).await?;
    let mut problems = Vec::new();
    let mut wrote = false;
    for id in stale(&stored, spec) {
        wasp_common::webhooks::delete(&mut conn, user, id).await?;
        wrote = true;
    }
    match &settings.secrets {
        None if !spec.is_empty() => problems.push(
            "spec.webhooks cannot be applied: the operator has no webhook key (WASP_WEBHOOK_KEY; chart: the <release>-webhooks Secret)".to_owned(),
        ),
        None => {}
        Some(secrets) => {
            for w in spec {
                let id = spec_endpoint_id(&w.name);
                let checked = match check_entry(w, &settings.policy) {
                    Ok(events) => read_secret(client, ns, w).await.map(|s| (events, s)),
                    Err(e) => Err(e),
                };
                let (events, secret) = match checked {
                    Ok(x) => x,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                let existing = stored.iter().find(|e| e.id == id).map(|e| {
                    let opened = secrets.open(user, &id, &e.secret_sealed);
                    (e.clone(), opened)
                });
                if !needs_put(existing.as_ref(), &w.url, &events, &secret) {
                    continue;
                }
                let secret_sealed = match secrets.seal(user, &id, &secret) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(format!("spec.webhooks[{}]: sealing: {e}", w.name));
                        continue;
                    }
                };
                let ep = StoredEndpoint {
                    id,
                    user_id: user.clone(),
                    url: w.url.trim().to_owned(),
                    events,
                    secret_sealed,
                    created_at: existing.map_or_else(
                        || jiff::Timestamp::now().as_second(),
                        |(e, _)| e.created_at,
                    ),
                };
                wasp_common::webhooks::put(&mut conn, &ep).await?;
                wrote = true;
            }
        }
    }
    let now = if wrote {
        wasp_common::webhooks::endpoints(&mut conn, user).await?
    } else {
        stored
    };
    if now.is_empty() && problems.is_empty() {
        return Ok(None);
    }
    Ok(Some(WebhookHealth {
        endpoints: now.len(),
        failing: failing(&mut conn, user, &now).await?,
        problems,
    }))
}

async fn failing(
    conn: &mut ConnectionManager,
    user: &str,
    endpoints: &[StoredEndpoint],
) -> Result<Vec<Failing>> {
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    Ok(wasp_common::webhooks::failing(conn, user, &ids).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_crds::SecretKeyRef;

    fn entry(name: &str, url: &str) -> WebhookSpec {
        WebhookSpec {
            name: name.into(),
            url: url.into(),
            events: None,
            secret_ref: SecretKeyRef {
                name: "hooks".into(),
                key: "crm".into(),
            },
        }
    }

    fn stored(id: &str) -> StoredEndpoint {
        StoredEndpoint {
            id: id.into(),
            user_id: "u".into(),
            url: "https://crm.example.com/h".into(),
            events: vec!["message".into()],
            secret_sealed: String::new(),
            created_at: 1,
        }
    }

    #[test]
    fn entries_are_checked_with_the_apis_url_policy() {
        let p = UrlPolicy::default();
        assert_eq!(
            check_entry(&entry("crm", "https://crm.example.com/h"), &p).unwrap(),
            ["message"]
        );
        for bad in [
            "http://crm.example.com/h",
            "https://10.0.0.1/h",
            "https://169.254.169.254/",
            "https://crm.crm.svc.cluster.local/",
        ] {
            let err = check_entry(&entry("crm", bad), &p).unwrap_err();
            assert!(err.starts_with("spec.webhooks[crm].url: "), "{err}");
        }
        let mut qr = entry("crm", "https://crm.example.com/h");
        qr.events = Some(vec!["qr".into()]);
        assert!(check_entry(&qr, &p).unwrap_err().contains(".events"));
        let open = UrlPolicy {
            allow_http: true,
            allow_nets: vec!["10.0.0.0/8".parse().unwrap()],
            allow_hosts: Vec::new(),
        };
        assert!(check_entry(&entry("crm", "http://10.1.2.3/h"), &open).is_ok());
    }

    #[test]
    fn an_endpoint_is_rewritten_only_when_it_changed() {
        let ep = stored("spec-crm");
        let events = vec!["message".to_owned()];
        let same = (ep.clone(), Some("whsec_a".to_owned()));
        assert!(needs_put(None, &ep.url, &events, "whsec_a"));
        assert!(!needs_put(Some(&same), &ep.url, &events, "whsec_a"));
        assert!(
            needs_put(Some(&same), &ep.url, &events, "whsec_b"),
            "rotated"
        );
        assert!(needs_put(
            Some(&same),
            "https://other.example/",
            &events,
            "whsec_a"
        ));
        assert!(needs_put(
            Some(&same),
            &ep.url,
            &["*".to_owned()],
            "whsec_a"
        ));
        let unopened = (ep.clone(), None);
        assert!(
            needs_put(Some(&unopened), &ep.url, &events, "whsec_a"),
            "a new key"
        );
    }

    #[test]
    fn entries_taken_out_of_the_spec_are_removed_and_the_users_own_is_kept() {
        let list = [stored("api"), stored("spec-crm"), stored("spec-old")];
        assert_eq!(
            stale(&list, &[entry("crm", "https://x.example/")]),
            ["spec-old"]
        );
        assert_eq!(stale(&list, &[]), ["spec-crm", "spec-old"]);
    }

    #[test]
    fn the_condition_names_what_to_fix() {
        let ok = WebhookHealth {
            endpoints: 2,
            ..Default::default()
        };
        assert_eq!(
            condition(&ok),
            (true, "Delivering", "2 webhook(s) delivering".into())
        );
        let failing = WebhookHealth {
            failing: vec![Failing {
                id: "spec-crm".into(),
                since: 1_764_000_000,
                error: "the receiver answered 500".into(),
            }],
            ..ok.clone()
        };
        let (status, reason, message) = condition(&failing);
        assert!(!status);
        assert_eq!(reason, "DeliveryFailing");
        assert!(
            message.contains("spec-crm failing since 2025-11-24T")
                && message.ends_with("the receiver answered 500"),
            "{message}"
        );
        let invalid = WebhookHealth {
            problems: vec!["spec.webhooks[crm].secretRef: Secret hooks not found".into()],
            ..failing
        };
        assert_eq!(condition(&invalid).1, "WebhookInvalid", "problems first");
    }
}
