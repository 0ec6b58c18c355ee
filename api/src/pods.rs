//! Calls to a user's session pod: its control API (`wasp_common::control` paths, bearer token from
//! the session's `<session>-control` Secret, JSON in and out). Validation and the routing decision
//! happen before, in the handlers; this module only speaks HTTP and maps the pod's answers.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasp_common::control;
use wasp_crds::{labels, names};

/// One call to a session pod, with inputs already validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCall {
    /// The pod's own view: phase, and the QR code it is showing (if any).
    Status,
    /// Log the linked device out of WhatsApp (the phone forgets it) and purge its auth state.
    Logout,
    /// (Re)start connecting: a new QR after a logout, a failure or a disconnect.
    Connect,
    Chats,
    Messages {
        jid: String,
        limit: u32,
    },
    Send {
        jid: String,
        message: String,
    },
    /// `phone`: E.164 digits.
    ChatByPhone {
        phone: String,
    },
    Logs {
        limit: u32,
    },
    AddContact {
        phone: String,
        name: Option<String>,
    },
}

/// Why a pod call did not give an answer to pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The pod refused the request (4xx), with its safe message.
    #[error("session pod refused ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The pod failed (5xx) or refused our token.
    #[error("session pod failed ({status}): {detail}")]
    Failed { status: u16, detail: String },
    /// No answer: connection refused, timeout.
    #[error("session pod unreachable: {0}")]
    Unreachable(String),
    /// The session's control token is not (yet) known.
    #[error("no control token for the session yet")]
    NoToken,
    /// Not wired to any pod (tests, or a build without pod access).
    #[error("the session pod API is not available")]
    NotWired,
}

pub trait PodApi: Send + Sync {
    /// Performs `call` against the pod at `endpoint` (`host:port`) for `user_id`.
    fn call<'a>(
        &'a self,
        user_id: &'a str,
        endpoint: &'a str,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>>;
}

/// Answers every call with [`PodError::NotWired`].
pub struct NotWired;

impl PodApi for NotWired {
    fn call<'a>(
        &'a self,
        _user_id: &'a str,
        _endpoint: &'a str,
        _call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async { Err(PodError::NotWired) })
    }
}

/// Method, path and query (or JSON body) of a call on the pod's control API.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRequest {
    pub post: bool,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// Percent-encodes one path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pod request for a call (pure).
pub fn request(call: &PodCall) -> PodRequest {
    let get = |path: &str, query: Vec<(&'static str, String)>| PodRequest {
        post: false,
        path: path.to_owned(),
        query,
        body: None,
    };
    let post = |path: &str, body: Value| PodRequest {
        post: true,
        path: path.to_owned(),
        query: Vec::new(),
        body: Some(body),
    };
    match call {
        PodCall::Chats => get(control::CHATS_PATH, Vec::new()),
        PodCall::Messages { jid, limit } => get(
            &control::MESSAGES_PATH.replace("{chat_id}", &segment(jid)),
            vec![("limit", limit.to_string())],
        ),
        PodCall::Send { jid, message } => {
            post(control::SEND_PATH, json!({"to": jid, "text": message}))
        }
        PodCall::ChatByPhone { phone } => {
            get(control::CHAT_BY_PHONE_PATH, vec![("phone", phone.clone())])
        }
        PodCall::Logs { limit } => get(control::LOGS_PATH, vec![("limit", limit.to_string())]),
        PodCall::Status => get(control::STATUS_PATH, Vec::new()),
        PodCall::Connect => post(control::CONNECT_PATH, json!({})),
        PodCall::Logout => post(control::LOGOUT_PATH, json!({})),
        PodCall::AddContact { phone, name } => post(
            control::CONTACTS_PATH,
            json!({"phone": phone, "name": name.clone().unwrap_or_default()}),
        ),
    }
}

/// The pod's error body `{"error": {"code", "message"}}` (or anything else) → code and message.
pub fn pod_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let inner = &v["error"];
    let code = inner["code"].as_str().unwrap_or("error").to_owned();
    let message = inner["message"]
        .as_str()
        .unwrap_or("the session refused the request")
        .chars()
        .take(500)
        .collect();
    (code, message)
}

/// Control tokens of the sessions in the namespace, from a watched cache of their Secrets.
#[derive(Clone)]
pub struct Tokens {
    store: Store<Secret>,
    namespace: String,
}

impl Tokens {
    pub fn start(client: Client, namespace: &str, stop: CancellationToken) -> Self {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let config = watcher::Config::default()
            .labels(labels::SESSION)
            .any_semantic();
        let store = crate::cache::spawn(api, config, stop, "control Secret");
        Self {
            store,
            namespace: namespace.to_owned(),
        }
    }

    /// The token of `user_id`'s session: Secret `<session>-control`, key `token`, labelled for
    /// that session and user.
    pub fn get(&self, user_id: &str) -> Option<String> {
        let session = names::session_name(user_id);
        let secret = self
            .store
            .get(&ObjectRef::new(&format!("{session}-control")).within(&self.namespace))?;
        let labels = secret.metadata.labels.as_ref()?;
        if labels.get(labels::SESSION) != Some(&session)
            || labels.get(labels::USER_HASH) != Some(&wasp_common::user_hash(user_id))
        {
            return None;
        }
        let bytes = secret.data.as_ref()?.get("token")?;
        String::from_utf8(bytes.0.clone())
            .ok()
            .filter(|t| !t.is_empty())
    }
}

/// Calls pods over HTTP with their control token.
pub struct HttpPods {
    http: reqwest::Client,
    tokens: Tokens,
}

impl HttpPods {
    pub fn new(tokens: Tokens, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http, tokens }
    }
}

impl PodApi for HttpPods {
    fn call<'a>(
        &'a self,
        user_id: &'a str,
        endpoint: &'a str,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async move {
            let token = self.tokens.get(user_id).ok_or(PodError::NoToken)?;
            let req = request(&call);
            let url = format!("http://{endpoint}{}", req.path);
            let mut builder = if req.post {
                self.http.post(&url)
            } else {
                self.http.get(&url)
            };
            builder = builder.bearer_auth(token).query(&req.query);
            if let Some(body) = &req.body {
                builder = builder.json(body);
            }
            let response = builder
                .send()
                .await
                .map_err(|e| PodError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| PodError::Unreachable(e.without_url().to_string()))?;
            match status {
                200..=299 if body.is_empty() => Ok(Value::Null),
                200..=299 => serde_json::from_slice(&body).map_err(|e| PodError::Failed {
                    status,
                    detail: format!("answer is not JSON: {e}"),
                }),
                401 | 403 => Err(PodError::Failed {
                    status,
                    detail: "the pod refused the control token".into(),
                }),
                400..=499 => {
                    let (code, message) = pod_error(&body);
                    Err(PodError::Refused {
                        status,
                        code,
                        message,
                    })
                }
                _ => Err(PodError::Failed {
                    status,
                    detail: pod_error(&body).1,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_map_to_the_control_api() {
        let r = request(&PodCall::Messages {
            jid: "41791234567@s.whatsapp.net".into(),
            limit: 20,
        });
        assert_eq!(r.path, "/v1/messages/41791234567@s.whatsapp.net");
        assert_eq!(r.query, vec![("limit", "20".to_owned())]);
        assert!(!r.post);
        let r = request(&PodCall::Send {
            jid: "1@g.us".into(),
            message: "hi".into(),
        });
        assert_eq!(
            (r.post, r.path.as_str(), r.body),
            (
                true,
                "/v1/send",
                Some(json!({"to": "1@g.us", "text": "hi"}))
            )
        );
        let r = request(&PodCall::AddContact {
            phone: "41791234567".into(),
            name: None,
        });
        assert_eq!(r.body, Some(json!({"phone": "41791234567", "name": ""})));
        assert_eq!(
            request(&PodCall::ChatByPhone {
                phone: "41791234567".into()
            })
            .query,
            vec![("phone", "41791234567".to_owned())]
        );
        assert_eq!(request(&PodCall::Chats).path, "/v1/chats");
        assert_eq!(request(&PodCall::Connect).path, "/v1/connect");
        assert_eq!(request(&PodCall::Status).path, "/v1/status");
        assert!(!request(&PodCall::Status).post);
        assert!(request(&PodCall::Logout).post);
        assert_eq!(request(&PodCall::Logout).path, "/v1/logout");
        assert_eq!(request(&PodCall::Logs { limit: 5 }).path, "/v1/logs");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
    }

    #[test]
    fn pod_errors_are_read_safely() {
        let (code, message) =
            pod_error(br#"{"error": {"code": "not_connected", "message": "not connected"}}"#);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("not_connected", "not connected")
        );
        let (code, _) = pod_error(b"<html>");
        assert_eq!(code, "error");
    }
}
