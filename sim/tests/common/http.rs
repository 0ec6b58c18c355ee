//! The test clients' HTTP client: reqwest with rustls, trusting only the simulator's media
//! CA. Buffered requests go through the async client; the library's streaming download and
//! upload (run on its blocking pool) through reqwest's blocking client, so both paths of
//! the library are exercised. Every exchange is logged for the tests to inspect.

use std::sync::{Arc, Mutex, OnceLock};

use wacore::net::{HttpClient, HttpRequest, HttpResponse, StreamingHttpResponse, UploadBody};

/// One HTTP exchange the client made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    /// The URL without its query.
    pub path: String,
    pub query: String,
    pub status: u16,
    /// `execute`, `streaming` (download) or `upload` (streamed body).
    pub via: &'static str,
}

#[derive(Clone)]
pub struct MediaHttp {
    ca: reqwest::Certificate,
    client: reqwest::Client,
    blocking: Arc<OnceLock<reqwest::blocking::Client>>,
    pub log: Arc<Mutex<Vec<Exchange>>>,
}

impl MediaHttp {
    /// Trusts only `ca_pem` (the simulator's media CA).
    pub fn new(ca_pem: &str) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .build()
            .unwrap();
        Self {
            ca,
            client,
            blocking: Default::default(),
            log: Default::default(),
        }
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    fn record(&self, method: &str, url: &str, status: u16, via: &'static str) {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        self.log.lock().unwrap().push(Exchange {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            status,
            via,
        });
    }

    /// Built on first use, on the library's blocking pool (reqwest's blocking client must
    /// not be created on an async worker).
    fn blocking(&self) -> &reqwest::blocking::Client {
        self.blocking.get_or_init(|| {
            reqwest::blocking::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(self.ca.clone())
                .build()
                .unwrap()
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for MediaHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut req = self.client.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        if let Some(body) = request.body {
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status_code = resp.status().as_u16();
        self.record(&request.method, &request.url, status_code, "execute");
        let body = resp.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    fn execute_streaming(&self, request: HttpRequest) -> anyhow::Result<StreamingHttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut req = self.blocking().request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        let resp = req.send()?;
        let status_code = resp.status().as_u16();
        self.record(&request.method, &request.url, status_code, "streaming");
        Ok(StreamingHttpResponse {
            status_code,
            body: Box::new(resp),
        })
    }

    fn supports_upload_streaming(&self) -> bool {
        true
    }

    fn execute_upload(
        &self,
        request: HttpRequest,
        body: UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut req = self.blocking().request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        let resp = req
            .body(reqwest::blocking::Body::sized(body, content_length))
            .send()?;
        let status_code = resp.status().as_u16();
        self.record(&request.method, &request.url, status_code, "upload");
        let body = resp.bytes()?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}
