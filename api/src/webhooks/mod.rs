//! Webhooks for CRMs that cannot hold a socket (docs/webhooks.md): each user's own endpoint
//! (`GET/PUT/DELETE /webhooks`) and global endpoints from the API's configuration, delivered
//! at-least-once from the user's durable event stream, signed by the Standard Webhooks spec,
//! to addresses the [`policy::UrlPolicy`] allows.
//!
//! - [`model`]: the stored endpoint, the views, the payload and ids (pure);
//! - [`policy`]: which URLs and addresses may be called (pure; in `wasp_common`, the operator
//!   checks `spec.webhooks` with it too);
//! - [`schedule`]: back-off, `Retry-After`, who delivers (pure);
//! - [`resolve`]: host names to addresses (the system's or given DNS servers);
//! - [`store`]: Redis; [`deliver`]: one HTTP attempt; [`dispatcher`]: the loop;
//! - [`routes`]: the user's and the admin's routes.

pub mod deliver;
pub mod dispatcher;
pub mod model;
pub mod resolve;
pub mod routes;
pub mod schedule;
pub mod store;

pub use wasp_common::webhooks::{USER_ENDPOINT, policy};

use std::sync::Arc;

use serde::Deserialize;

use policy::UrlPolicy;
use store::SecretBox;

/// A webhook of the operator's configuration that receives every user's events. `Debug`
/// leaves the secret out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalWebhook {
    /// Short name (`[a-z0-9-]`, unique): names its state in Redis.
    pub name: String,
    pub url: String,
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// `whsec_…` (Standard Webhooks).
    pub secret: String,
}

impl std::fmt::Debug for GlobalWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalWebhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

impl GlobalWebhook {
    pub fn endpoint_id(&self) -> String {
        format!("{}{}", wasp_common::webhooks::GLOBAL_PREFIX, self.name)
    }
}

/// Parses `WASP_GLOBAL_WEBHOOKS` (a JSON list) and checks each entry; errors never show a
/// secret.
pub fn parse_globals(json: &str, policy: &UrlPolicy) -> Result<Vec<GlobalWebhook>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<GlobalWebhook> =
        serde_json::from_str(json).map_err(|e| format!("WASP_GLOBAL_WEBHOOKS: {e}"))?;
    let mut names = std::collections::HashSet::new();
    for g in &list {
        let at = format!("WASP_GLOBAL_WEBHOOKS entry {:?}", g.name);
        if g.name.is_empty()
            || g.name.len() > 40
            || !g
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("{at}: name must be 1-40 of [a-z0-9-]"));
        }
        if !names.insert(&g.name) {
            return Err(format!("{at}: the name is used twice"));
        }
        policy.check_url(&g.url).map_err(|e| format!("{at}: {e}"))?;
        model::parse_events(Some(g.events.clone())).map_err(|e| format!("{at}: {e}"))?;
        standardwebhooks::Webhook::new(&g.secret)
            .map_err(|_| format!("{at}: secret must be whsec_ followed by base64"))?;
    }
    Ok(list)
}

/// What the routes need (the dispatcher has its own copy).
#[derive(Clone)]
pub struct WebhookConfig {
    pub policy: Arc<UrlPolicy>,
    /// How host names are resolved (the dispatcher's sender has the same).
    pub lookup: resolve::Lookup,
    /// `None`: no webhook key configured, users cannot set webhooks.
    pub secrets: Option<SecretBox>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_webhooks_are_checked_at_start() {
        let p = UrlPolicy::default();
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ok =
            format!(r#"[{{"name":"crm","url":"https://crm.example.com/h","secret":"{secret}"}}]"#);
        let list = parse_globals(&ok, &p).unwrap();
        assert_eq!(list[0].events, ["*"]);
        assert_eq!(list[0].endpoint_id(), "global-crm");
        assert!(parse_globals("", &p).unwrap().is_empty());
        for bad in [
            format!(r#"[{{"name":"crm","url":"http://10.0.0.1/","secret":"{secret}"}}]"#),
            format!(r#"[{{"name":"CRM","url":"https://crm.example.com/","secret":"{secret}"}}]"#),
            r#"[{"name":"crm","url":"https://crm.example.com/","secret":"not base64!"}]"#.into(),
            format!(
                r#"[{{"name":"a","url":"https://a.example/","secret":"{secret}"}},{{"name":"a","url":"https://b.example/","secret":"{secret}"}}]"#
            ),
            format!(
                r#"[{{"name":"crm","url":"https://crm.example.com/","secret":"{secret}","events":["qr"]}}]"#
            ),
            "{".into(),
        ] {
            let err = parse_globals(&bad, &p).unwrap_err();
            assert!(
                !err.contains("MfKQ9r8G"),
                "errors never show the secret: {err}"
            );
        }
    }
}
