//! The client's HTTP needs (version fetch, media) through reqwest. The reqwest client (and
//! its TLS root store) is built on first use: against a pinned client version a text-only
//! session makes no HTTP call at all, and an idle pod should not hold it.

use std::sync::{Arc, OnceLock};

use wacore::net::{HttpClient, HttpRequest, HttpResponse};

#[derive(Clone, Default)]
pub struct ReqwestHttp {
    client: Arc<OnceLock<reqwest::Client>>,
}

#[async_trait::async_trait]
impl HttpClient for ReqwestHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let client = self.client.get_or_init(reqwest::Client::new);
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut req = client.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        if let Some(body) = request.body {
            req = req.body(body.to_vec());
        }
        let resp = req.send().await?;
        let status_code = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}
