//! Calls to a user's session pod: its control API (`wasp_common::control` paths and types, bearer
//! token from the session's `<session>-control` Secret). Validation and the routing decision
//! happen before, in the handlers; this module only speaks HTTP, and [`typed`] reads the pod's
//! answer into the contract's type (an answer that does not fit is the pod's failure, never
//! forwarded as it is).

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasp_common::control;
use wasp_crds::{WhatsAppSession, labels};

/// The pod of one session: the resource's real name (whoever created it, the API or kubectl),
/// its user, and the control API's `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub session: String,
    pub user_id: String,
    pub endpoint: String,
}

impl PodTarget {
    pub fn of(session: &WhatsAppSession, endpoint: &str) -> Self {
        Self {
            session: kube::ResourceExt::name_any(session),
            user_id: session.spec.user_id.clone(),
            endpoint: endpoint.to_owned(),
        }
    }
}

/// One call to a session pod, with inputs already validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCall {
    /// The pod's own view: phase, and the QR code it is showing (if any).
    Status,
    /// Log the linked device out of WhatsApp (the phone forgets it) and purge its auth state.
    Logout,
    /// (Re)start connecting: a new QR after a logout, a failure or a disconnect.
    Connect,
    /// One page of chats.
    Chats {
        offset: u32,
    },
    /// `chat`: a chat id's `_serialized` form; `before`: a message id.
    Messages {
        chat: String,
        limit: u32,
        before: Option<String>,
    },
    /// A text; `quoted`: the quoted message's `id._serialized` (a reply).
    Send {
        to: String,
        body: String,
        quoted: Option<String>,
        idempotency_key: Option<String>,
    },
    /// `message_id`: a message's `id._serialized`; an empty `emoji` takes the reaction back.
    React {
        message_id: String,
        emoji: String,
        idempotency_key: Option<String>,
    },
    /// A new body for an own message.
    Edit {
        message_id: String,
        body: String,
        idempotency_key: Option<String>,
    },
    /// Delete an own message for everyone.
    Revoke {
        message_id: String,
    },
    /// Read receipts for the chat's unread messages (`chat`: `_serialized`).
    Seen {
        chat: String,
    },
    /// Typing, recording or paused in a chat.
    ChatState {
        chat: String,
        state: wasp_common::model::ChatStateKind,
    },
    /// A group's metadata (`group`: `…@g.us`).
    Group {
        group: String,
    },
    /// Whether a phone number (E.164 digits) is on WhatsApp.
    Number {
        phone: String,
    },
    /// The profile picture of a chat (`chat`: `_serialized`).
    ProfilePicture {
        chat: String,
    },
    /// `phone`: E.164 digits.
    ChatByPhone {
        phone: String,
    },
    Logs {
        limit: u32,
    },
    Contacts,
    AddContact {
        phone: String,
        name: Option<String>,
    },
    RemoveContact {
        phone: String,
    },
}

/// Why a pod call did not give an answer to pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The pod's per-session send pacing refused the request (429): retry after that long.
    #[error("session pod rate limited: retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
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
    /// Performs `call` against the pod of `target`; the answer's JSON (`null` when empty).
    fn call<'a>(
        &'a self,
        target: &'a PodTarget,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>>;

    /// Sends a media message whose file `body` streams to the pod; the answer's JSON.
    fn send_media<'a>(
        &'a self,
        _target: &'a PodTarget,
        _query: control::SendMediaQuery,
        _body: reqwest::Body,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async { Err(PodError::NotWired) })
    }

    /// The file of a media message, as the pod streams it (a 2xx answer; refusals are errors).
    fn media<'a>(
        &'a self,
        _target: &'a PodTarget,
        _chat: &'a str,
        _message_id: &'a str,
    ) -> BoxFuture<'a, Result<reqwest::Response, PodError>> {
        Box::pin(async { Err(PodError::NotWired) })
    }
}

/// Performs `call` and reads the answer as the contract's `T`.
pub async fn typed<T: DeserializeOwned>(
    pods: &dyn PodApi,
    target: &PodTarget,
    call: PodCall,
) -> Result<T, PodError> {
    let value = pods.call(target, call).await?;
    serde_json::from_value(value).map_err(|e| PodError::Failed {
        status: 200,
        detail: format!("the answer does not fit the control API's type: {e}"),
    })
}

/// Answers every call with [`PodError::NotWired`].
pub struct NotWired;

impl PodApi for NotWired {
    fn call<'a>(
        &'a self,
        _target: &'a PodTarget,
        _call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async { Err(PodError::NotWired) })
    }
}

/// HTTP method of a control API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

/// Method, path and query (or JSON body) of a call on the pod's control API.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRequest {
    pub method: Method,
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
        method: Method::Get,
        path: path.to_owned(),
        query,
        body: None,
    };
    let post = |path: &str, body: Value| PodRequest {
        method: Method::Post,
        path: path.to_owned(),
        query: Vec::new(),
        body: Some(body),
    };
    match call {
        PodCall::Chats { offset } => get(
            control::CHATS_PATH,
            vec![
                ("offset", offset.to_string()),
                ("limit", control::MAX_PAGE.to_string()),
            ],
        ),
        PodCall::Messages {
            chat,
            limit,
            before,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(b) = before {
                query.push(("before", b.clone()));
            }
            get(
                &control::MESSAGES_PATH.replace("{chat_id}", &segment(chat)),
                query,
            )
        }
        PodCall::Send {
            to,
            body,
            quoted,
            idempotency_key,
        } => post(
            control::SEND_PATH,
            as_json(&control::SendRequest {
                to: to.clone(),
                body: body.clone(),
                quoted: quoted.clone(),
                idempotency_key: idempotency_key.clone(),
            }),
        ),
        PodCall::React {
            message_id,
            emoji,
            idempotency_key,
        } => post(
            control::REACT_PATH,
            as_json(&control::ReactRequest {
                message_id: message_id.clone(),
                emoji: emoji.clone(),
                idempotency_key: idempotency_key.clone(),
            }),
        ),
        PodCall::Edit {
            message_id,
            body,
            idempotency_key,
        } => post(
            control::EDIT_PATH,
            as_json(&control::EditRequest {
                message_id: message_id.clone(),
                body: body.clone(),
                idempotency_key: idempotency_key.clone(),
            }),
        ),
        PodCall::Revoke { message_id } => post(
            control::REVOKE_PATH,
            as_json(&control::RevokeRequest {
                message_id: message_id.clone(),
            }),
        ),
        PodCall::Seen { chat } => post(
            &control::SEEN_PATH.replace("{chat_id}", &segment(chat)),
            json!({}),
        ),
        PodCall::ChatState { chat, state } => post(
            &control::CHAT_STATE_PATH.replace("{chat_id}", &segment(chat)),
            as_json(&control::ChatStateRequest { state: *state }),
        ),
        PodCall::Group { group } => get(
            &control::GROUP_PATH.replace("{group_id}", &segment(group)),
            Vec::new(),
        ),
        PodCall::Number { phone } => get(
            &control::NUMBER_PATH.replace("{phone}", &segment(phone)),
            Vec::new(),
        ),
        PodCall::ProfilePicture { chat } => get(
            &control::PROFILE_PICTURE_PATH.replace("{chat_id}", &segment(chat)),
            Vec::new(),
        ),
        PodCall::ChatByPhone { phone } => {
            get(control::CHAT_BY_PHONE_PATH, vec![("phone", phone.clone())])
        }
        PodCall::Logs { limit } => get(control::LOGS_PATH, vec![("limit", limit.to_string())]),
        PodCall::Status => get(control::STATUS_PATH, Vec::new()),
        PodCall::Connect => post(control::CONNECT_PATH, json!({})),
        PodCall::Logout => post(control::LOGOUT_PATH, json!({})),
        PodCall::Contacts => get(control::CONTACTS_PATH, Vec::new()),
        PodCall::AddContact { phone, name } => post(
            control::CONTACTS_PATH,
            as_json(&control::ContactRequest {
                phone: phone.clone(),
                name: name.clone().unwrap_or_default(),
            }),
        ),
        PodCall::RemoveContact { phone } => PodRequest {
            method: Method::Delete,
            path: control::CONTACT_PATH.replace("{phone}", &segment(phone)),
            query: Vec::new(),
            body: None,
        },
    }
}

/// A request body of the control contract as JSON (plain structs of strings: always serialise).
fn as_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
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
        let store =
            crate::cache::spawn_trimmed(api, config, stop, "control Secret", keep_only_token);
        Self {
            store,
            namespace: namespace.to_owned(),
        }
    }

    /// The control token of the session `target` routes to: Secret `<session>-control` of the
    /// resource's real name, key `token`, labelled for that session and its user.
    pub fn get(&self, target: &PodTarget) -> Option<String> {
        let secret = self
            .store
            .get(&ObjectRef::new(&format!("{}-control", target.session)).within(&self.namespace))?;
        let labels = secret.metadata.labels.as_ref()?;
        if labels.get(labels::SESSION) != Some(&target.session)
            || labels.get(labels::USER_HASH) != Some(&wasp_common::user_hash(&target.user_id))
        {
            return None;
        }
        let bytes = secret.data.as_ref()?.get("token")?;
        String::from_utf8(bytes.0.clone())
            .ok()
            .filter(|t| !t.is_empty())
    }
}

/// The API needs a control Secret's token only: the user's keyring next to it (`userKeys`,
/// for the session pod) is dropped before the cache stores the Secret.
fn keep_only_token(secret: &mut Secret) {
    if let Some(data) = secret.data.as_mut() {
        data.retain(|k, _| k == "token");
    }
    secret.string_data = None;
    secret.metadata.managed_fields = None;
}

/// Calls pods over HTTP with their control token.
pub struct HttpPods {
    http: reqwest::Client,
    /// For media: no overall timeout (a file takes what it takes); a read timeout instead.
    streams: reqwest::Client,
    tokens: Tokens,
}

impl HttpPods {
    pub fn new(tokens: Tokens, timeout: Duration) -> Self {
        let connect = timeout.min(Duration::from_secs(3));
        let base = || {
            reqwest::Client::builder()
                .connect_timeout(connect)
                .redirect(reqwest::redirect::Policy::none())
        };
        let http = base().timeout(timeout).build().unwrap_or_default();
        // A media call waits for the pod's round trip to WhatsApp's media servers before the
        // first byte: allow well past the plain timeout between reads.
        let streams = base()
            .read_timeout(timeout.max(Duration::from_secs(60)))
            .build()
            .unwrap_or_default();
        Self {
            http,
            streams,
            tokens,
        }
    }
}

/// Seconds of a `Retry-After` header (the pod gives seconds; anything else, or none, is 1).
pub fn retry_after_secs(value: Option<&str>) -> u64 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, 24 * 3600)
}

/// A pod's non-2xx answer as the error it is (`retry_after`: its `Retry-After` header).
fn refusal(status: u16, retry_after: Option<&str>, body: &[u8]) -> PodError {
    match status {
        429 => PodError::RateLimited {
            retry_after_secs: retry_after_secs(retry_after),
        },
        401 | 403 => PodError::Failed {
            status,
            detail: "the pod refused the control token".into(),
        },
        400..=499 => {
            let (code, message) = pod_error(body);
            PodError::Refused {
                status,
                code,
                message,
            }
        }
        _ => PodError::Failed {
            status,
            detail: pod_error(body).1,
        },
    }
}

impl HttpPods {
    /// Sends a request to the pod and reads a JSON answer.
    async fn json_answer(&self, builder: reqwest::RequestBuilder) -> Result<Value, PodError> {
        let response = builder
            .send()
            .await
            .map_err(|e| PodError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let retry_after = header_str(&response, reqwest::header::RETRY_AFTER);
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
            _ => Err(refusal(status, retry_after.as_deref(), &body)),
        }
    }
}

fn header_str(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl PodApi for HttpPods {
    fn send_media<'a>(
        &'a self,
        target: &'a PodTarget,
        query: control::SendMediaQuery,
        body: reqwest::Body,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async move {
            let token = self.tokens.get(target).ok_or(PodError::NoToken)?;
            let url = format!("http://{}{}", target.endpoint, control::SEND_MEDIA_PATH);
            // An upload takes as long as the file needs: no overall timeout, only the
            // connect timeout and the pod's own limits.
            let builder = self
                .streams
                .post(&url)
                .bearer_auth(token)
                .query(&query)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body);
            self.json_answer(builder).await
        })
    }

    fn media<'a>(
        &'a self,
        target: &'a PodTarget,
        chat: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<reqwest::Response, PodError>> {
        Box::pin(async move {
            let token = self.tokens.get(target).ok_or(PodError::NoToken)?;
            let path = control::MEDIA_PATH
                .replace("{chat_id}", &segment(chat))
                .replace("{message_id}", &segment(message_id));
            let response = self
                .streams
                .get(format!("http://{}{path}", target.endpoint))
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| PodError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            if (200..=299).contains(&status) {
                return Ok(response);
            }
            let retry_after = header_str(&response, reqwest::header::RETRY_AFTER);
            let body = response.bytes().await.unwrap_or_default();
            Err(refusal(status, retry_after.as_deref(), &body))
        })
    }

    fn call<'a>(
        &'a self,
        target: &'a PodTarget,
        call: PodCall,
    ) -> BoxFuture<'a, Result<Value, PodError>> {
        Box::pin(async move {
            let token = self.tokens.get(target).ok_or(PodError::NoToken)?;
            let req = request(&call);
            let url = format!("http://{}{}", target.endpoint, req.path);
            let mut builder = match req.method {
                Method::Get => self.http.get(&url),
                Method::Post => self.http.post(&url),
                Method::Delete => self.http.delete(&url),
            };
            builder = builder.bearer_auth(token).query(&req.query);
            if let Some(body) = &req.body {
                builder = builder.json(body);
            }
            self.json_answer(builder).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cache_keeps_no_keyring() {
        use k8s_openapi::ByteString;
        let mut secret = Secret {
            data: Some(
                [
                    ("token".to_owned(), ByteString(b"tok".to_vec())),
                    ("userKeys".to_owned(), ByteString(b"82:key".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        keep_only_token(&mut secret);
        let data = secret.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["token"]);
        assert_eq!(data["token"].0, b"tok");
    }

    #[test]
    fn calls_map_to_the_control_api() {
        let r = request(&PodCall::Messages {
            chat: "41791234567@c.us".into(),
            limit: 20,
            before: Some("true_41791234567@c.us_AB".into()),
        });
        assert_eq!(r.path, "/v1/messages/41791234567@c.us");
        assert_eq!(
            r.query,
            vec![
                ("limit", "20".to_owned()),
                ("before", "true_41791234567@c.us_AB".to_owned())
            ]
        );
        assert_eq!(r.method, Method::Get);
        let r = request(&PodCall::Send {
            to: "1@g.us".into(),
            body: "hi".into(),
            quoted: None,
            idempotency_key: None,
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (
                Method::Post,
                "/v1/send",
                Some(json!({"to": "1@g.us", "body": "hi"}))
            )
        );
        let r = request(&PodCall::AddContact {
            phone: "41791234567".into(),
            name: None,
        });
        assert_eq!(r.body, Some(json!({"phone": "41791234567", "name": ""})));
        let r = request(&PodCall::RemoveContact {
            phone: "41791234567".into(),
        });
        assert_eq!(
            (r.method, r.path.as_str()),
            (Method::Delete, "/v1/contacts/41791234567")
        );
        assert_eq!(
            request(&PodCall::ChatByPhone {
                phone: "41791234567".into()
            })
            .query,
            vec![("phone", "41791234567".to_owned())]
        );
        let chats = request(&PodCall::Chats { offset: 500 });
        assert_eq!(chats.path, "/v1/chats");
        assert_eq!(
            chats.query,
            vec![("offset", "500".to_owned()), ("limit", "500".to_owned())]
        );
        assert_eq!(request(&PodCall::Contacts).path, "/v1/contacts");
        assert_eq!(request(&PodCall::Connect).path, "/v1/connect");
        assert_eq!(request(&PodCall::Status).path, "/v1/status");
        assert_eq!(request(&PodCall::Status).method, Method::Get);
        assert_eq!(request(&PodCall::Logout).method, Method::Post);
        assert_eq!(request(&PodCall::Logout).path, "/v1/logout");
        assert_eq!(request(&PodCall::Logs { limit: 5 }).path, "/v1/logs");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
    }

    #[test]
    fn conversation_calls_map_to_the_control_api() {
        let key = "true_41791234567@c.us_3EB0AB";
        let r = request(&PodCall::Send {
            to: "41791234567@c.us".into(),
            body: "re".into(),
            quoted: Some(key.into()),
            idempotency_key: Some("k-1".into()),
        });
        assert_eq!(
            r.body,
            Some(
                json!({"to": "41791234567@c.us", "body": "re", "quoted": key, "idempotencyKey": "k-1"})
            )
        );
        let r = request(&PodCall::React {
            message_id: key.into(),
            emoji: "👍".into(),
            idempotency_key: None,
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (
                Method::Post,
                "/v1/react",
                Some(json!({"messageId": key, "emoji": "👍"}))
            )
        );
        let r = request(&PodCall::Edit {
            message_id: key.into(),
            body: "fixed".into(),
            idempotency_key: Some("e".into()),
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (
                Method::Post,
                "/v1/edit",
                Some(json!({"messageId": key, "body": "fixed", "idempotencyKey": "e"}))
            )
        );
        let r = request(&PodCall::Revoke {
            message_id: key.into(),
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (Method::Post, "/v1/revoke", Some(json!({"messageId": key})))
        );
        let r = request(&PodCall::Seen {
            chat: "41791234567@c.us".into(),
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (
                Method::Post,
                "/v1/chats/41791234567@c.us/seen",
                Some(json!({}))
            )
        );
        for (state, word) in [
            (wasp_common::model::ChatStateKind::Typing, "typing"),
            (wasp_common::model::ChatStateKind::Recording, "recording"),
            (wasp_common::model::ChatStateKind::Paused, "paused"),
        ] {
            let r = request(&PodCall::ChatState {
                chat: "120363000000000001@g.us".into(),
                state,
            });
            assert_eq!(
                (r.method, r.path.as_str(), r.body),
                (
                    Method::Post,
                    "/v1/chats/120363000000000001@g.us/state",
                    Some(json!({"state": word}))
                )
            );
        }
        let r = request(&PodCall::Group {
            group: "120363000000000001@g.us".into(),
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.body),
            (Method::Get, "/v1/groups/120363000000000001@g.us", None)
        );
        let r = request(&PodCall::Number {
            phone: "41791234567".into(),
        });
        assert_eq!(
            (r.method, r.path.as_str()),
            (Method::Get, "/v1/numbers/41791234567")
        );
        let r = request(&PodCall::ProfilePicture {
            chat: "41791234567@c.us".into(),
        });
        assert_eq!(
            (r.method, r.path.as_str(), r.query),
            (
                Method::Get,
                "/v1/profile-picture/41791234567@c.us",
                Vec::new()
            )
        );
    }

    #[test]
    fn a_pod_429_keeps_its_retry_after() {
        let body = br#"{"error": {"code": "rate_limited", "message": "slow down"}}"#;
        assert_eq!(
            refusal(429, Some("7"), body),
            PodError::RateLimited {
                retry_after_secs: 7
            }
        );
        assert_eq!(
            refusal(429, None, body),
            PodError::RateLimited {
                retry_after_secs: 1
            }
        );
        assert_eq!(retry_after_secs(Some(" 30 ")), 30);
        assert_eq!(retry_after_secs(Some("0")), 1);
        assert_eq!(retry_after_secs(Some("Wed, 21 Oct 2015 07:28:00 GMT")), 1);
        assert_eq!(retry_after_secs(Some("99999999")), 24 * 3600);
        assert!(matches!(
            refusal(404, Some("7"), body),
            PodError::Refused { status: 404, .. }
        ));
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
