//! A webhook receiver for tests: a real HTTP server on 127.0.0.2 (so the API's webhook policy
//! can allow exactly that address and still refuse 127.0.0.1) that records every request and
//! answers a status the test sets; and the verification of deliveries with the Standard
//! Webhooks reference implementation from PyPI (`verify_webhooks.py`, installed by
//! `scripts/install-deps.sh`), never with wasp's own code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::eventually;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub path: String,
    pub at: Instant,
    /// The status the receiver answered (2xx: accepted).
    pub status: u16,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
}

/// A webhook receiver: records every request, answers `status` (and `Retry-After` when set).
#[derive(Clone)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    /// `Retry-After` seconds sent with each answer (0: none).
    pub retry_after: Arc<AtomicU64>,
    /// Answer with `Connection: close`: every delivery then opens a new connection (and
    /// resolves the name again), as after a pooled connection timed out.
    pub close_connections: Arc<std::sync::atomic::AtomicBool>,
    /// `http://127.0.0.2:<port>`.
    pub base: String,
}

impl Receiver {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .context("binding 127.0.0.2")?;
        let r = Receiver {
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(204)),
            retry_after: Arc::new(AtomicU64::new(0)),
            close_connections: Arc::default(),
            base: format!("http://{}", listener.local_addr()?),
        };
        let app = axum::Router::new().fallback({
            let r = r.clone();
            move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let r = r.clone();
                async move {
                    let status = r.status.load(Ordering::SeqCst);
                    r.got
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(Got {
                            headers: headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect(),
                            body,
                            path: uri.path().to_owned(),
                            at: Instant::now(),
                            status,
                        });
                    let mut resp = axum::response::Response::new(axum::body::Body::empty());
                    *resp.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if r.close_connections.load(Ordering::SeqCst) {
                        resp.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    let ra = r.retry_after.load(Ordering::SeqCst);
                    if ra > 0 {
                        resp.headers_mut()
                            .insert("retry-after", axum::http::HeaderValue::from(ra));
                    }
                    resp
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(r)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Waits until `n` requests satisfying `ok` arrived.
    pub async fn wait_for(
        &self,
        n: usize,
        within: Duration,
        ok: impl Fn(&Got) -> bool,
    ) -> Result<Vec<Got>> {
        eventually(within, || async {
            let got: Vec<Got> = self.got().into_iter().filter(|g| ok(g)).collect();
            (got.len() >= n).then_some(got)
        })
        .await
        .with_context(|| {
            format!(
                "the receiver never got {n} matching requests (got {} in all)",
                self.got().len()
            )
        })
    }
}

/// Verifies deliveries with PyPI's `standardwebhooks` (scripts/install-deps.sh installs it).
pub fn verify_with_reference(secret: &str, got: &[Got]) -> Result<usize> {
    use std::io::Write as _;
    let cache = std::env::var("WASP_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/wasp", std::env::var("HOME").unwrap_or_default()));
    let mut child = std::process::Command::new(format!("{cache}/venv/bin/python3"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running the venv's python3 (scripts/install-deps.sh makes it)")?;
    let mut stdin = child.stdin.take().context("the verifier's stdin")?;
    for g in got {
        let line = json!({"secret": secret, "headers": g.headers, "body": g.body});
        writeln!(stdin, "{line}")?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "standardwebhooks refused a delivery: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}
