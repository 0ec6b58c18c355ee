//! The client's HTTP needs (version fetch, media upload and download) through reqwest. The
//! reqwest client (and its TLS root store) is built on first use: against a pinned client version
//! a text-only session makes no HTTP call at all, and an idle pod should not hold it.
//!
//! Media streams both ways: the library's streaming calls run on a blocking thread and are
//! bridged here onto the pod's runtime, so a file never sits whole in memory (upload: the
//! encrypted file is read in chunks into the request; download: the response body is read in
//! chunks by the library's decryptor).
//!
//! The insecure-sim build trusts only the simulator's media CA (fetched once from the loopback
//! simulator the pod is configured with), never the public roots; production builds trust the
//! public roots only.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use futures::TryStreamExt as _;
use tokio::runtime::Handle;
use tokio::sync::OnceCell;
use wacore::net::{HttpClient, HttpRequest, HttpResponse, StreamingHttpResponse, UploadBody};

/// Chunk size of a streamed upload body.
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Read-ahead of a streamed download body.
const STREAM_READ: usize = 64 * 1024;

#[derive(Clone)]
pub struct ReqwestHttp {
    client: Arc<OnceCell<reqwest::Client>>,
    /// insecure-sim: where the simulator serves its media CA.
    sim_ca_url: Option<String>,
    handle: Handle,
}

impl ReqwestHttp {
    /// `whatsapp_url`: the WebSocket URL the pod connects to (the insecure-sim build derives the
    /// simulator's CA URL from it). Must be called inside the pod's runtime.
    pub fn new(whatsapp_url: &str) -> Self {
        Self {
            client: Arc::new(OnceCell::new()),
            sim_ca_url: cfg!(feature = "insecure-sim")
                .then(|| sim_ca_url(whatsapp_url))
                .flatten(),
            handle: Handle::current(),
        }
    }

    async fn client(&self) -> anyhow::Result<&reqwest::Client> {
        self.client
            .get_or_try_init(|| async {
                let builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy();
                let builder = match &self.sim_ca_url {
                    None => builder,
                    Some(url) => {
                        let pem = reqwest::get(url)
                            .await
                            .and_then(reqwest::Response::error_for_status)
                            .with_context(|| {
                                format!("fetching the simulator's media CA from {url}")
                            })?
                            .bytes()
                            .await?;
                        let ca = reqwest::Certificate::from_pem(&pem)?;
                        builder
                            .tls_built_in_root_certs(false)
                            .add_root_certificate(ca)
                    }
                };
                Ok(builder.build()?)
            })
            .await
    }

    async fn send(
        &self,
        request: HttpRequest,
        body: Option<reqwest::Body>,
    ) -> anyhow::Result<reqwest::Response> {
        let client = self.client().await?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut req = client.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        if let Some(body) = body {
            req = req.body(body);
        } else if let Some(body) = request.body {
            req = req.body(body);
        }
        // The URL carries the media auth token: keep it out of errors (and so out of logs).
        req.send().await.map_err(|e| anyhow!(e.without_url()))
    }
}

/// `ws://host:port/…` → `http://host:port/sim/media-ca.pem` (the simulator's CA route).
pub fn sim_ca_url(whatsapp_url: &str) -> Option<String> {
    let url = url::Url::parse(whatsapp_url).ok()?;
    let scheme = match url.scheme() {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{scheme}://{host}{port}/sim/media-ca.pem"))
}

#[async_trait::async_trait]
impl HttpClient for ReqwestHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let resp = self.send(request, None).await?;
        let status_code = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow!(e.without_url()))?
            .to_vec();
        Ok(HttpResponse { status_code, body })
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    /// Runs on the library's blocking thread: the request runs on the pod's runtime, the body
    /// is read through a bridge, chunk by chunk.
    fn execute_streaming(&self, request: HttpRequest) -> anyhow::Result<StreamingHttpResponse> {
        let this = self.clone();
        let resp = self
            .handle
            .block_on(async move { this.send(request, None).await })?;
        let status_code = resp.status().as_u16();
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new_with_handle(
            tokio_util::io::StreamReader::new(stream),
            self.handle.clone(),
        );
        // The library reads 8 KiB at a time; each read through the bridge is a round trip to
        // the runtime, so read ahead in larger pieces.
        Ok(StreamingHttpResponse {
            status_code,
            body: Box::new(std::io::BufReader::with_capacity(STREAM_READ, reader)),
        })
    }

    fn supports_upload_streaming(&self) -> bool {
        true
    }

    /// Runs on the library's blocking thread: this thread reads `body` in chunks into a bounded
    /// channel that the request (on the pod's runtime) sends, with an exact `Content-Length`.
    fn execute_upload(
        &self,
        request: HttpRequest,
        mut body: UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let stream = tokio_stream_of(rx);
        let request = request.with_header("Content-Length", content_length.to_string());
        let this = self.clone();
        let pending = self.handle.spawn(async move {
            let resp = this
                .send(request, Some(reqwest::Body::wrap_stream(stream)))
                .await?;
            let status_code = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| anyhow!(e.without_url()))?
                .to_vec();
            Ok::<_, anyhow::Error>(HttpResponse { status_code, body })
        });
        let mut sent = 0u64;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        while sent < content_length {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    break;
                }
            };
            sent += n as u64;
            if tx
                .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .is_err()
            {
                // The request ended early (refused, connection lost): its answer says why.
                break;
            }
        }
        drop(tx);
        self.handle
            .block_on(pending)
            .map_err(|e| anyhow!("upload task: {e}"))?
    }
}

/// A receiver as a `Stream` (without pulling in tokio-stream for one adapter).
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulators_ca_is_next_to_its_websocket() {
        assert_eq!(
            sim_ca_url("ws://127.0.0.1:8480/ws/chat").as_deref(),
            Some("http://127.0.0.1:8480/sim/media-ca.pem")
        );
        assert_eq!(
            sim_ca_url("wss://[::1]/ws/chat").as_deref(),
            Some("https://[::1]/sim/media-ca.pem")
        );
        assert_eq!(sim_ca_url("http://x/"), None);
        assert_eq!(sim_ca_url("not a url"), None);
    }
}
