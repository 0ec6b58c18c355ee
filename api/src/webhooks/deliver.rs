//! One delivery attempt: a signed POST through a client that checks every address it connects
//! to against the [`UrlPolicy`] (after its own DNS resolution, so a name re-pointed at an
//! internal address later is refused then), follows no redirects, uses no proxy from the
//! environment, has timeouts, and never reads a response body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::policy::{Refused, UrlPolicy};
use super::resolve::Lookup;
use super::schedule::{parse_retry_after, reason_for_status};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(u16),
    Failed {
        /// Metric label: `refused_address`, `connect`, `timeout`, `status_4xx`, ...
        reason: &'static str,
        /// For the user (`lastError`): never a secret, never a response body.
        error: String,
        retry_after: Option<Duration>,
    },
}

/// Resolves (the system resolver or `WEBHOOK_DNS_SERVERS`), then drops every address the
/// policy refuses; fails when none is left.
struct GuardedResolver {
    policy: Arc<UrlPolicy>,
    lookup: Lookup,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, lookup) = (self.policy.clone(), self.lookup.clone());
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = lookup
                .addrs(&host)
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| policy.check_addr(Some(&host), a.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match addrs.first() {
                    Some(a) => Box::new(Refused::InternalAddress(a.ip())),
                    None => format!("{host} has no address").into(),
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The dispatcher's HTTP client.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<UrlPolicy>,
}

impl Sender {
    pub fn new(
        policy: Arc<UrlPolicy>,
        lookup: Lookup,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                lookup,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .user_agent(concat!("wasp-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    pub async fn send(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Outcome {
        // Literal addresses never reach the resolver: `check_url` checks them, on every attempt.
        let url = match self.policy.check_url(url) {
            Ok(u) => u,
            Err(e) => return refused(e),
        };
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => Outcome::Delivered(resp.status().as_u16()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, jiff::Timestamp::now().as_second()));
                Outcome::Failed {
                    reason: reason_for_status(status),
                    error: format!("the receiver answered {status}"),
                    retry_after,
                }
            }
            Err(e) => classify(&e),
        }
    }
}

fn refused(e: Refused) -> Outcome {
    Outcome::Failed {
        reason: "refused_address",
        error: e.to_string(),
        retry_after: None,
    }
}

/// The reason of a transport error; the message names what failed, never the URL's query.
fn classify(e: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return refused(r.clone());
        }
        source = s.source();
    }
    let (reason, error) = if e.is_timeout() {
        ("timeout", "the receiver did not answer in time".to_owned())
    } else if e.is_connect() {
        ("connect", "could not connect to the receiver".to_owned())
    } else {
        ("transport", "the request to the receiver failed".to_owned())
    };
    Outcome::Failed {
        reason,
        error,
        retry_after: None,
    }
}
