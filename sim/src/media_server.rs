//! The media server: HTTPS on its own listener, with a certificate signed by a CA the
//! simulator makes (its certificate is served at `GET /sim/media-ca.pem` on the WebSocket
//! listener, for clients to trust). Routes as the client library builds them:
//!
//! - `POST /mms/<type>/<token>?auth=…&token=…[&file_offset=N]` uploads an encrypted blob
//!   (`token` = base64url of its SHA-256); `&resume=1` asks whether it is already there.
//! - `GET <direct_path>?auth=…&token=…` downloads it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use futures::StreamExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

use crate::media::{MAX_UPLOAD, UploadState, path_family, token_hash};
use crate::sim::Sim;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// The simulator's media CA: a self-signed ECDSA P-256 root. Rebuilt from the same key (a
/// state file keeps it), it signs certificates the old CA certificate also verifies.
pub struct MediaCa {
    key_pem: String,
    cert_pem: String,
}

const CA_NAME: &str = "wasp-sim media CA";

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wasp");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

impl MediaCa {
    pub fn generate() -> Result<Self, TlsError> {
        Self::from_key_pem(&KeyPair::generate()?.serialize_pem())
    }

    /// The CA with the given private key (PKCS#8 PEM).
    pub fn from_key_pem(key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(Self {
            key_pem: key_pem.to_owned(),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate (PEM), what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM), for the state file.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A fresh server certificate for `127.0.0.1` and `localhost`, signed by the CA, with
    /// its private key.
    pub fn issue_leaf(
        &self,
    ) -> Result<
        (
            rustls::pki_types::CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        TlsError,
    > {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "wasp-sim media");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        );
        Ok((leaf.der().clone(), key))
    }

    /// A rustls server configuration (HTTP/1.1) with a fresh leaf certificate.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let (leaf, key) = self.issue_leaf()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A TLS listener for `axum::serve`: TCP accepts and TLS handshakes run in a task of their
/// own (a slow or broken handshake never holds up the next connection).
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    /// Wraps `tcp`; the returned task accepts connections and must be aborted with the server.
    pub fn new(
        tcp: TcpListener,
        config: rustls::ServerConfig,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("media accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, "media TLS handshake failed: {e}"),
                        Err(_) => debug!(%peer, "media TLS handshake timed out"),
                    }
                });
            }
        });
        Ok((Self { rx, local }, task))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor task is gone (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The media server's routes.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/mms/{kind}/{token}", post(upload))
        .route("/v/{*rest}", get(download))
        .layer(DefaultBodyLimit::disable())
        .with_state(sim)
}

#[derive(Debug, Deserialize)]
struct MediaQuery {
    auth: Option<String>,
    token: Option<String>,
    resume: Option<String>,
    file_offset: Option<u64>,
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

fn uploaded(sim: &Sim, direct_path: &str) -> serde_json::Value {
    serde_json::json!({
        "url": sim.media().url_of(direct_path),
        "direct_path": direct_path,
    })
}

async fn upload(
    State(sim): State<Arc<Sim>>,
    Path((kind, token)): Path<(String, String)>,
    Query(q): Query<MediaQuery>,
    req: Request,
) -> Response {
    let store = sim.media();
    if q.auth.as_deref() != Some(store.auth().as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "bad or missing auth");
    }
    if path_family(&kind).is_none() {
        return refuse(StatusCode::NOT_FOUND, "unknown media type");
    }
    if q.token.as_deref() != Some(token.as_str()) {
        return refuse(StatusCode::BAD_REQUEST, "token mismatch");
    }
    let Some(expected) = token_hash(&token) else {
        return refuse(StatusCode::BAD_REQUEST, "malformed token");
    };
    if q.resume.is_some() {
        return match store.upload_state(&token) {
            UploadState::Complete { direct_path } => {
                let mut v = uploaded(&sim, &direct_path);
                v["resume"] = "complete".into();
                Json(v).into_response()
            }
            UploadState::Partial(n) => {
                Json(serde_json::json!({ "resume": n.to_string() })).into_response()
            }
            UploadState::None => refuse(StatusCode::NOT_FOUND, "no upload"),
        };
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let offset = q.file_offset.unwrap_or(0);
    if declared.is_some_and(|n| n.saturating_add(offset) > MAX_UPLOAD as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too large");
    }
    // A resumed upload continues the bytes kept from the interrupted one.
    let mut buf = BytesMut::new();
    if offset > 0 {
        let Some(prefix) = usize::try_from(offset)
            .ok()
            .and_then(|o| store.partial_prefix(&token, o))
        else {
            return refuse(StatusCode::BAD_REQUEST, "nothing to resume at that offset");
        };
        buf.extend_from_slice(&prefix);
    }
    let mut hasher = Sha256::new();
    hasher.update(&buf);
    let mut body = req.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if buf.len() + chunk.len() > MAX_UPLOAD {
                    return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too large");
                }
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            Err(e) => {
                debug!(%token, received = buf.len(), "upload broke off: {e}");
                store.keep_partial(&token, buf.freeze());
                sim.notify_changed();
                return refuse(StatusCode::BAD_REQUEST, "upload broke off");
            }
        }
    }
    if hasher.finalize().as_slice() != expected {
        store.drop_partial(&token);
        return refuse(StatusCode::BAD_REQUEST, "body does not match the token");
    }
    let direct_path = store.put(&kind, buf.freeze());
    debug!(%kind, %direct_path, "media uploaded");
    sim.notify_changed();
    Json(uploaded(&sim, &direct_path)).into_response()
}

async fn download(
    State(sim): State<Arc<Sim>>,
    Path(rest): Path<String>,
    Query(q): Query<MediaQuery>,
) -> Response {
    let store = sim.media();
    // WhatsApp's CDN gates a download on the path and its hash token; a session token, when
    // the client sends one, must be the current one.
    if q.auth.as_deref().is_some_and(|a| a != store.auth()) {
        return refuse(StatusCode::UNAUTHORIZED, "bad auth");
    }
    let Some(token) = q.token else {
        return refuse(StatusCode::BAD_REQUEST, "missing token");
    };
    let direct_path = format!("/v/{rest}");
    match store.get(&direct_path) {
        Some(blob) if blob.token == token => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(blob.data),
        )
            .into_response(),
        _ => refuse(StatusCode::NOT_FOUND, "no such media"),
    }
}

/// `GET /sim/media-ca.pem` on the WebSocket listener: the CA the media server's certificate
/// chains to.
pub async fn ca_pem(State(sim): State<Arc<Sim>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        sim.media_ca_pem().to_owned(),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::token_of;
    use crate::sim::SimKeys;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt as _;

    async fn call(sim: &Arc<Sim>, req: HttpRequest<Body>) -> (StatusCode, serde_json::Value) {
        let resp = router(sim.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post(uri: String, body: Body) -> HttpRequest<Body> {
        HttpRequest::post(uri).body(body).unwrap()
    }

    #[tokio::test]
    async fn uploads_are_checked_and_resumable() {
        let sim = Sim::new(SimKeys::generate()).unwrap();
        let auth = sim.media().auth();
        let data = b"0123456789abcdef".to_vec();
        let token = token_of(&Sha256::digest(&data));
        let uri = |q: &str| format!("/mms/document/{token}?auth={auth}&token={token}{q}");

        // Nothing yet: the resume check finds nothing.
        let (s, _) = call(&sim, post(uri("&resume=1"), Body::empty())).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A declared length over the cap is refused before reading.
        let big = HttpRequest::post(uri(""))
            .header(header::CONTENT_LENGTH, (MAX_UPLOAD + 1).to_string())
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&sim, big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        // Unknown media type, mismatched query token.
        let (s, _) = call(
            &sim,
            post(
                format!("/mms/bogus/{token}?auth={auth}&token={token}"),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            &sim,
            post(
                format!("/mms/image/{token}?auth={auth}&token=other"),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        // An interrupted upload is kept and offered for resuming…
        sim.media().keep_partial(&token, data[..6].to_vec().into());
        let (s, v) = call(&sim, post(uri("&resume=1"), Body::empty())).await;
        assert_eq!((s, v["resume"].as_str()), (StatusCode::OK, Some("6")));
        // …but not past what was kept.
        let (s, _) = call(
            &sim,
            post(uri("&file_offset=7"), Body::from(data[7..].to_vec())),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = call(
            &sim,
            post(uri("&file_offset=6"), Body::from(data[6..].to_vec())),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let path = v["direct_path"].as_str().unwrap().to_owned();
        assert!(path.starts_with("/v/t62.7119-24/"));
        assert_eq!(&sim.media().get(&path).unwrap().data[..], &data[..]);
        // Now the resume check says it is complete.
        let (s, v) = call(&sim, post(uri("&resume=1"), Body::empty())).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["resume"], "complete");
        assert_eq!(v["direct_path"].as_str(), Some(path.as_str()));

        // Downloads: the token must be the blob's.
        let get = |q: String| {
            HttpRequest::get(format!("{path}?{q}"))
                .body(Body::empty())
                .unwrap()
        };
        let resp = router(sim.clone())
            .oneshot(get(format!("auth={auth}&token={token}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], &data[..]);
        assert_eq!(
            call(&sim, get("token=x".into())).await.0,
            StatusCode::NOT_FOUND
        );
        sim.rotate_media_auth();
        assert_eq!(
            call(&sim, get(format!("auth={auth}&token={token}")))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn a_ca_rebuilt_from_its_key_issues_leaves_the_old_certificate_verifies() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let verifies = |ca_pem: &str, leaf: &CertificateDer<'_>, name: &str| {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap();
            verifier
                .verify_server_cert(
                    leaf,
                    &[],
                    &ServerName::try_from(name.to_owned()).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_ok()
        };
        let ca = MediaCa::generate().unwrap();
        let again = MediaCa::from_key_pem(ca.key_pem()).unwrap();
        let (leaf, _) = again.issue_leaf().unwrap();
        assert!(verifies(ca.cert_pem(), &leaf, "127.0.0.1"));
        assert!(verifies(ca.cert_pem(), &leaf, "localhost"));
        assert!(!verifies(ca.cert_pem(), &leaf, "example.com"));
        let other = MediaCa::generate().unwrap();
        assert!(!verifies(other.cert_pem(), &leaf, "127.0.0.1"));
    }
}
