//! Requests generated from `api/openapi.json` against a running wasp-api (in-process, on the
//! harness's real kube-apiserver and Redis, session pods called over HTTP as in production). For
//! every operation: requests the document calls valid (parameters and bodies built from its
//! schemas, a valid token) and invalid ones (wrong types, missing required fields, numbers out of
//! range, strings over their length, a wrong content type, malformed JSON, an oversized body),
//! for a caller without a session, one whose session is starting, and one whose session is
//! connected. Every answer must be documented for its operation and no server error (only the
//! designed 503 "not ready, retry", with `Retry-After`, is allowed); a JSON answer must
//! fit the schema documented for its status and every error must be JSON; a valid request must
//! not be refused as invalid (400/413/415/422), an invalid one must be refused (4xx). Last, a
//! caller over the rate limit gets a documented 429 from every authenticated operation.
//!
//! Why a small deterministic generator here rather than schemathesis (PyPI): it runs inside
//! `cargo test` on the same harness as the other API tests, with no Python stack to install in
//! CI and no network; every run sends the same few hundred requests in the same order (seconds,
//! not minutes), so a failure names the exact request and reproduces; and it checks what
//! schemathesis would not know without custom hooks (valid-but-refused, the rate limiter's 429
//! per operation). What it gives up is property-based shrinking and random exploration, which
//! matter less for an API whose inputs are a dozen typed fields.
#![allow(clippy::unwrap_used)]

mod common;

use anyhow::Result;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use wasp_e2e::openapi::{self, Document, Operation, Param};

use common::{Replica, namespace, now, put_session, sign};

/// Small enough that an oversized body is cheap to send.
const MAX_BODY: &str = "64kb";
const OVERSIZED: usize = 100 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Valid by the document: never refused as invalid.
    Valid,
    /// Invalid by the document: refused with a 4xx.
    Invalid,
    /// The document says nothing either way (a string without a length limit): only the
    /// general rules apply.
    Probe,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw {
        content_type: &'static str,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Case {
    what: String,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Body,
    expect: Expect,
}

/// Whether a parameter's text fits its schema, read as the API reads it (numbers and booleans
/// from their text).
fn param_fits(schema: &Value, text: &str) -> bool {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec!["string"],
    };
    let as_value = if types.contains(&"integer") {
        text.parse::<i64>().ok().map(Value::from)
    } else if types.contains(&"number") {
        text.parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
    } else if types.contains(&"boolean") {
        text.parse::<bool>().ok().map(Value::Bool)
    } else {
        Some(Value::String(text.to_owned()))
    };
    as_value.is_some_and(|v| openapi::fits(schema, &v))
}

/// The value a parameter gets in a valid request. The stream routes' `token` gets the caller's
/// token (the header wins anyway).
fn valid_param(p: &Param, token: &str) -> Option<String> {
    if p.name == "token" {
        return Some(token.to_owned());
    }
    openapi::valid_value(&p.schema, &p.name, false).map(|v| openapi::as_param_text(&v))
}

/// Every case of one operation for a caller with `token`.
fn cases(doc: &Document, op: &Operation, token: &str, problems: &mut Vec<String>) -> Vec<Case> {
    let at = format!("{} {}", op.method, op.path);
    let params = doc.params(&op.method, &op.path).unwrap();
    let body_schema = doc
        .request_schema(&op.method, &op.path, "application/json")
        .unwrap();
    let body_required = doc.request_body_required(&op.method, &op.path).unwrap();

    let mut base = Case {
        what: "valid, required parameters only".into(),
        path: vec![],
        query: vec![],
        headers: vec![],
        body: Body::None,
        expect: Expect::Valid,
    };
    let mut full_query = vec![];
    for p in &params {
        let Some(value) = valid_param(p, token) else {
            problems.push(format!(
                "{at}: no valid value for parameter {} fits its schema {}",
                p.name, p.schema
            ));
            return vec![];
        };
        match p.location.as_str() {
            "path" => base.path.push((p.name.clone(), value)),
            "query" if p.required => base.query.push((p.name.clone(), value)),
            "query" => full_query.push((p.name.clone(), value)),
            "header" if p.required => base.headers.push((p.name.clone(), value)),
            _ => {}
        }
    }
    let (minimal_body, full_body) = match &body_schema {
        Some(schema) => match (
            openapi::valid_value(schema, "", false),
            openapi::valid_value(schema, "", true),
        ) {
            (Some(min), Some(full)) => (Some(min), Some(full)),
            _ => {
                problems.push(format!("{at}: no valid request body fits {schema}"));
                return vec![];
            }
        },
        None => (None, None),
    };
    if let Some(b) = &minimal_body {
        base.body = Body::Json(b.clone());
    }
    let mut out = vec![base.clone()];
    let mut full = base.clone();
    full.what = "valid, every parameter and field".into();
    full.query.extend(full_query);
    if let Some(b) = &full_body {
        full.body = Body::Json(b.clone());
    }
    out.push(full);

    // Parameters: each invalid value, a missing required one, a long string.
    for p in &params {
        if p.name == "token" || p.location == "header" {
            continue;
        }
        let with = |value: Option<String>, what: String, expect: Expect| {
            let mut c = base.clone();
            c.what = what;
            c.expect = expect;
            let list = if p.location == "path" {
                &mut c.path
            } else {
                &mut c.query
            };
            list.retain(|(n, _)| n != &p.name);
            if let Some(v) = value {
                list.push((p.name.clone(), v));
            }
            c
        };
        let mut texts: Vec<(String, String)> = openapi::invalid_values(&p.schema)
            .into_iter()
            .map(|(what, v)| (what, openapi::as_param_text(&v)))
            .collect();
        let max = p.schema["maxLength"].as_u64();
        texts.push(("a 5000-character value".into(), "7".repeat(5000)));
        texts.push((
            "a value with odd characters".into(),
            "a/b?c#d%00\u{7f} é".into(),
        ));
        for (what, text) in texts {
            let expect = if param_fits(&p.schema, &text) {
                // Fits the schema's type and limits; what it means is the route's to judge.
                if max.is_some() {
                    Expect::Valid
                } else {
                    Expect::Probe
                }
            } else {
                Expect::Invalid
            };
            out.push(with(
                Some(text),
                format!("{} {}: {what}", p.location, p.name),
                expect,
            ));
        }
        if p.required && p.location == "query" {
            out.push(with(
                None,
                format!("without required {}", p.name),
                Expect::Invalid,
            ));
        }
    }

    // Bodies: every invalid value, then transport-level mistakes.
    if let Some(schema) = &body_schema {
        for (what, v) in openapi::invalid_values(schema) {
            let mut c = base.clone();
            c.what = format!("body {what}");
            c.body = Body::Json(v);
            c.expect = Expect::Invalid;
            out.push(c);
        }
        let valid_text = serde_json::to_vec(minimal_body.as_ref().unwrap()).unwrap();
        let raw = [
            ("body as text/plain", "text/plain", valid_text.clone()),
            ("body without a content type", "", valid_text),
            (
                "malformed JSON",
                "application/json",
                b"{\"chatId\": ".to_vec(),
            ),
            ("empty JSON body", "application/json", vec![]),
            (
                "body over the size limit",
                "application/json",
                format!("{{\"x\": \"{}\"}}", "y".repeat(OVERSIZED)).into_bytes(),
            ),
        ];
        for (what, content_type, bytes) in raw {
            let mut c = base.clone();
            c.what = what.into();
            c.body = Body::Raw {
                content_type,
                bytes,
            };
            c.expect = Expect::Invalid;
            out.push(c);
        }
        if body_required {
            let mut c = base.clone();
            c.what = "no body".into();
            c.body = Body::None;
            c.expect = Expect::Invalid;
            out.push(c);
        }
    }
    out
}

fn url_of(base: &str, template: &str, case: &Case) -> Url {
    let mut url = Url::parse(base).unwrap();
    {
        let mut segments = url.path_segments_mut().unwrap();
        segments.clear();
        for part in template.split('/').filter(|p| !p.is_empty()) {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    let value = case
                        .path
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or("", |(_, v)| v.as_str());
                    segments.push(value);
                }
                None => {
                    segments.push(part);
                }
            }
        }
    }
    if template == "/" {
        url.set_path("/");
    }
    if !case.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &case.query {
            pairs.append_pair(k, v);
        }
    }
    url
}

/// Sends one case; the answer's status (`None` without an answer) and what is wrong with it.
async fn run_case(
    http: &reqwest::Client,
    doc: &Document,
    base: &str,
    op: &Operation<'_>,
    token: &str,
    case: &Case,
) -> (Option<u16>, Vec<String>) {
    let url = url_of(base, &op.path, case);
    let method = Method::from_bytes(op.method.as_bytes()).unwrap();
    let mut req = http.request(method, url.clone()).bearer_auth(token);
    for (k, v) in &case.headers {
        req = req.header(k, v);
    }
    req = match &case.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Raw {
            content_type,
            bytes,
        } => {
            let req = if content_type.is_empty() {
                req
            } else {
                req.header("content-type", *content_type)
            };
            req.body(bytes.clone())
        }
    };
    let at = format!("{} {} [{}] {url}", op.method, op.path, case.what);
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (None, vec![format!("{at}: no answer: {e}")]),
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut problems = Vec::new();
    // A server error is a bug, with one exception by design: 503, "not ready yet, retry" (a
    // session without a running pod), which must say when to retry — as must a 429.
    if status >= 500 && status != 503 {
        problems.push(format!("{at}: answered {status}"));
    }
    if [429, 503].contains(&status) && resp.headers().get("retry-after").is_none() {
        problems.push(format!("{at}: {status} without Retry-After"));
    }
    if !op.documents(status) {
        problems.push(format!(
            "{at}: answered {status}, not documented (documented: {:?})",
            op.statuses()
        ));
    }
    match case.expect {
        Expect::Valid if [400, 413, 415, 422].contains(&status) => {
            problems.push(format!(
                "{at}: valid by the document but refused with {status}"
            ));
        }
        Expect::Invalid if !(400..500).contains(&status) => {
            problems.push(format!(
                "{at}: invalid by the document but answered {status}"
            ));
        }
        _ => {}
    }
    if content_type.starts_with("text/event-stream") {
        // An open event stream: its headers are the answer; dropping it closes it.
        return (Some(status), problems);
    }
    let text = resp.text().await.unwrap_or_default();
    if content_type.starts_with("application/json") {
        match serde_json::from_str::<Value>(&text) {
            Ok(body) if op.documents(status) => {
                if let Err(e) = doc.validate_response(&op.method, &op.path, status, &body) {
                    problems.push(format!("{at}: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{at}: {status} body is not JSON ({e}): {text:?}")),
        }
    } else if status >= 400 {
        problems.push(format!(
            "{at}: {status} answered as {content_type:?}, not JSON: {text:?}"
        ));
    }
    (Some(status), problems)
}

#[tokio::test]
async fn generated_requests_get_documented_answers_and_never_5xx() -> Result<()> {
    let doc = Document::load()?;
    let (client, ns) = namespace("fuzz").await?;
    let api = Replica::start_http(&client, &ns, &["--max-file-size", MAX_BODY]).await?;
    let tag = format!("{:x}", rand_tag());
    let none = format!("fuzz-none-{tag}");
    let pending = format!("fuzz-pending-{tag}");
    let connected = format!("fuzz-connected-{tag}");
    put_session(&client, &ns, &api, &pending, "Pending", None).await?;
    // A connected session whose pod has no control token yet: routed, then 503.
    put_session(
        &client,
        &ns,
        &api,
        &connected,
        "Connected",
        Some("127.0.0.1:9"),
    )
    .await?;

    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut problems = Vec::new();
    let mut sent = 0;
    for (user, admin) in [(&none, false), (&pending, true), (&connected, false)] {
        let token = sign(
            &json!({"sub": user, "exp": now() + 600, "role": if admin { "admin" } else { "user" }}),
        );
        for op in session_changes_last(doc.operations()) {
            for case in cases(&doc, &op, &token, &mut problems) {
                problems.extend(run_case(&http, &doc, &api.base, &op, &token, &case).await.1);
                sent += 1;
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(sent > 100, "only {sent} requests generated");
    openapi::ensure_empty(
        &problems,
        &format!("answers that break the OpenAPI document, of {sent} requests"),
    )
}

#[tokio::test]
async fn every_authenticated_operation_documents_the_rate_limiters_429() -> Result<()> {
    let doc = Document::load()?;
    let (client, ns) = namespace("fuzz-429").await?;
    let api = Replica::start_http(
        &client,
        &ns,
        &["--rate-limit-per-second", "1", "--rate-limit-burst", "1"],
    )
    .await?;
    let http = reqwest::Client::new();
    let mut problems = Vec::new();
    let tag = rand_tag();
    for (i, op) in doc.operations().into_iter().enumerate() {
        if !op.secured() {
            continue;
        }
        // A caller of its own per operation: the first request spends the burst.
        let token = sign(&json!({"sub": format!("limited-{tag:x}-{i}"), "exp": now() + 600}));
        let Some(case) = cases(&doc, &op, &token, &mut problems).into_iter().next() else {
            continue;
        };
        run_case(&http, &doc, &api.base, &op, &token, &case).await;
        let mut limited = case.clone();
        limited.what = "over the rate limit".into();
        // The next requests at once are over the limit; a few tries, so a slow first request
        // (over a second on a loaded machine refills the bucket) does not make this flaky.
        let mut seen = false;
        for _ in 0..5 {
            let (status, found) = run_case(&http, &doc, &api.base, &op, &token, &limited).await;
            problems.extend(found);
            if status == Some(429) {
                seen = true;
                break;
            }
        }
        if !seen {
            problems.push(format!(
                "{} {}: never answered 429 over the rate limit",
                op.method, op.path
            ));
        }
    }
    problems.sort();
    problems.dedup();
    openapi::ensure_empty(
        &problems,
        "rate-limited answers that break the OpenAPI document",
    )
}

/// The operations, those that connect or disconnect the caller's session last, so the others
/// meet the session in the state the caller was set up with.
fn session_changes_last(mut ops: Vec<Operation<'_>>) -> Vec<Operation<'_>> {
    ops.sort_by_key(|op| op.path.ends_with("connect"));
    ops
}

fn rand_tag() -> u64 {
    jiff::Timestamp::now().as_nanosecond() as u64 ^ u64::from(std::process::id())
}
