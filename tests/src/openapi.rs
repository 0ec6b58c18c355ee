//! `api/openapi.json` as a test oracle: load it, resolve its `$ref`s, validate a real answer
//! `(method, path template, status, JSON body)` against what it documents (OpenAPI 3.1 schemas are
//! JSON Schema 2020-12, checked with the `jsonschema` crate), and generate values that the
//! document calls valid or invalid, for the request fuzzer (`api/tests/openapi_fuzz.rs`).

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Map, Value, json};

/// The methods an operation can have in a path item.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The loaded document.
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
}

/// One operation: `GET`, `/messages/{chatId}`, and its OpenAPI object.
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    pub method: String,
    pub path: String,
    pub op: &'a Value,
}

/// A parameter of an operation, with its schema resolved.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    /// `query`, `path` or `header`.
    pub location: String,
    pub required: bool,
    pub schema: Value,
}

impl Operation<'_> {
    /// Whether the operation needs a token (it names a security requirement).
    pub fn secured(&self) -> bool {
        self.op["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    }

    /// The documented status codes, as written (`200`, `4XX`, `default`).
    pub fn statuses(&self) -> Vec<String> {
        self.op["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `status` is documented: exactly, by its class (`4XX`) or by `default`.
    pub fn documents(&self, status: u16) -> bool {
        let responses = &self.op["responses"];
        let class = format!("{}XX", status / 100);
        [status.to_string(), class, "default".to_owned()]
            .iter()
            .any(|k| responses.get(k).is_some())
    }
}

impl Document {
    /// The committed document of wasp-api.
    pub fn load() -> Result<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../api/openapi.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::from_value(serde_json::from_str(&text)?))
    }

    pub fn from_value(root: Value) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every operation, in document order.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut ops = Vec::new();
        for (path, item) in self.root["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        op,
                    });
                }
            }
        }
        ops
    }

    /// The operation of `method` on the path template `path` (`/messages/{chatId}`).
    pub fn operation(&self, method: &str, path: &str) -> Result<Operation<'_>> {
        let op = self.root["paths"][path]
            .get(method.to_lowercase())
            .ok_or_else(|| anyhow!("{method} {path} is not in the document"))?;
        Ok(Operation {
            method: method.to_uppercase(),
            path: path.to_owned(),
            op,
        })
    }

    /// The path template a concrete path matches (`/messages/41@c.us` → `/messages/{chatId}`);
    /// literal templates win over ones with parameters.
    pub fn template_of(&self, method: &str, concrete: &str) -> Option<String> {
        let concrete = concrete.split('?').next().unwrap_or(concrete);
        let wanted: Vec<&str> = concrete.split('/').collect();
        let mut found: Option<(usize, String)> = None;
        for op in self.operations() {
            if !op.method.eq_ignore_ascii_case(method) {
                continue;
            }
            let parts: Vec<&str> = op.path.split('/').collect();
            if parts.len() != wanted.len() {
                continue;
            }
            let mut params = 0;
            let fits = parts.iter().zip(&wanted).all(|(t, c)| {
                if t.starts_with('{') && t.ends_with('}') {
                    params += 1;
                    !c.is_empty()
                } else {
                    t == c
                }
            });
            if fits && found.as_ref().is_none_or(|(p, _)| params < *p) {
                found = Some((params, op.path.clone()));
            }
        }
        found.map(|(_, p)| p)
    }

    /// `schema` with every `$ref` into this document inlined. A schema that refers to itself
    /// (directly or not) becomes `true` at the second visit.
    pub fn resolve(&self, schema: &Value) -> Result<Value> {
        self.resolve_in(schema, &mut Vec::new())
    }

    fn resolve_in(&self, schema: &Value, stack: &mut Vec<String>) -> Result<Value> {
        match schema {
            Value::Object(obj) => {
                if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
                    if stack.iter().any(|s| s == r) {
                        return Ok(Value::Bool(true));
                    }
                    let target = r
                        .strip_prefix('#')
                        .and_then(|p| self.root.pointer(p))
                        .ok_or_else(|| anyhow!("unresolved $ref {r}"))?;
                    stack.push(r.to_owned());
                    let mut resolved = self.resolve_in(target, stack)?;
                    stack.pop();
                    // Keywords beside a `$ref` (3.1 allows `description`) are kept.
                    if let Value::Object(out) = &mut resolved {
                        for (k, v) in obj.iter().filter(|(k, _)| *k != "$ref") {
                            out.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    return Ok(resolved);
                }
                let mut out = Map::new();
                for (k, v) in obj {
                    out.insert(k.clone(), self.resolve_in(v, stack)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve_in(v, stack))
                    .collect::<Result<_>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    /// The resolved schema of an answer, `None` when the document gives the status no content of
    /// that media type. An undocumented status is an error.
    pub fn response_schema(
        &self,
        method: &str,
        path: &str,
        status: u16,
        media: &str,
    ) -> Result<Option<Value>> {
        let op = self.operation(method, path)?;
        let responses = &op.op["responses"];
        let response = [
            status.to_string(),
            format!("{}XX", status / 100),
            "default".into(),
        ]
        .iter()
        .find_map(|k| responses.get(k))
        .ok_or_else(|| {
            anyhow!(
                "{method} {path} answered {status}, which the document does not list ({:?})",
                op.statuses()
            )
        })?;
        match response["content"].get(media).map(|c| &c["schema"]) {
            Some(schema) if !schema.is_null() => Ok(Some(self.resolve(schema)?)),
            _ => Ok(None),
        }
    }

    /// The resolved schema of the operation's request body of `media`, if it takes one.
    pub fn request_schema(&self, method: &str, path: &str, media: &str) -> Result<Option<Value>> {
        let op = self.operation(method, path)?;
        match op.op["requestBody"]["content"]
            .get(media)
            .map(|c| &c["schema"])
        {
            Some(schema) if !schema.is_null() => Ok(Some(self.resolve(schema)?)),
            _ => Ok(None),
        }
    }

    /// Whether the request body is required.
    pub fn request_body_required(&self, method: &str, path: &str) -> Result<bool> {
        let op = self.operation(method, path)?;
        Ok(op.op["requestBody"]["required"].as_bool().unwrap_or(false))
    }

    /// The operation's parameters, schemas resolved.
    pub fn params(&self, method: &str, path: &str) -> Result<Vec<Param>> {
        let op = self.operation(method, path)?;
        op.op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let p = self.resolve(p)?;
                Ok(Param {
                    name: p["name"].as_str().unwrap_or_default().to_owned(),
                    location: p["in"].as_str().unwrap_or_default().to_owned(),
                    required: p["required"].as_bool().unwrap_or(false),
                    schema: p["schema"].clone(),
                })
            })
            .collect()
    }

    /// Checks a JSON answer against the document: the status is documented for the operation
    /// and the body fits the schema documented for it (`application/json`). A status documented
    /// without a JSON schema accepts any body.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<()> {
        self.validate_response_with(method, path, status, body, false)
    }

    /// [`Document::validate_response`], and every field of the body must be documented: an
    /// object schema that lists `properties` allows no others (`unevaluatedProperties: false`
    /// where the schema does not say otherwise).
    pub fn validate_response_strict(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<()> {
        self.validate_response_with(method, path, status, body, true)
    }

    fn validate_response_with(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
        strict: bool,
    ) -> Result<()> {
        let Some(mut schema) = self.response_schema(method, path, status, "application/json")?
        else {
            return Ok(());
        };
        if strict {
            close_objects(&mut schema, false);
        }
        check(&schema, body)
            .map_err(|errors| anyhow!("{method} {path} {status}: {}", errors.join("; ")))
    }
}

/// Validates `instance` against a resolved schema (JSON Schema 2020-12, formats checked);
/// every violation, each with where it is.
pub fn check(schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| vec![format!("the schema itself is invalid: {e}")])?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{} {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether `instance` fits a resolved schema.
pub fn fits(schema: &Value, instance: &Value) -> bool {
    check(schema, instance).is_ok()
}

/// Marks object schemas that list `properties` closed. Members of an `allOf` are left open
/// (their siblings add properties); the schema holding the `allOf` is closed instead.
fn close_objects(schema: &mut Value, in_all_of: bool) {
    let Value::Object(obj) = schema else {
        return;
    };
    let composes = obj.contains_key("allOf");
    if (obj.contains_key("properties") || composes)
        && !in_all_of
        && !obj.contains_key("additionalProperties")
        && !obj.contains_key("unevaluatedProperties")
    {
        obj.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (key, sub) in obj.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" => {
                for v in sub.as_object_mut().into_iter().flatten().map(|(_, v)| v) {
                    close_objects(v, false);
                }
            }
            "allOf" => {
                for v in sub.as_array_mut().into_iter().flatten() {
                    close_objects(v, true);
                }
            }
            "oneOf" | "anyOf" => {
                for v in sub.as_array_mut().into_iter().flatten() {
                    close_objects(v, false);
                }
            }
            "items" | "additionalProperties" | "not" => close_objects(sub, false),
            _ => {}
        }
    }
}

// ---- values from schemas (pure, deterministic) ----

/// Known-good values by field or parameter name, for strings whose schema alone says too little
/// (a chat id, a phone number) or has a `pattern` a generator cannot invert. Each is used only if
/// the schema accepts it.
fn hint(name: &str) -> Vec<Value> {
    // A message's `id._serialized`, for the routes that take one (`DELETE /messages/{chatId}`
    // shares its template with `GET /messages/{chatId}`, so a chat id's name gets it too).
    let key = json!("false_41791234567@c.us_3EB0C0FFEE");
    match name {
        "chatId" | "chat_id" => vec![json!("41791234567@c.us"), key],
        "to" | "jid" | "contactId" => vec![json!("41791234567@c.us")],
        "groupId" => vec![json!("120363012345678901@g.us")],
        "phone" | "mobileNo" | "phoneNumber" | "number" => vec![json!("+41791234567")],
        "message" | "text" | "body" => vec![json!("hello from the fuzzer")],
        "name" | "pushName" | "displayName" => vec![json!("Ann")],
        "messageId" | "id" | "quotedMessageId" => vec![json!("3EB0C0FFEE"), key],
        "emoji" | "reaction" => vec![json!("👍")],
        "since" | "before" | "Last-Event-ID" => vec![json!("1700000000000-0")],
        "Idempotency-Key" => vec![json!("fuzz-key-1")],
        _ => Vec::new(),
    }
}

/// The first type a schema names that is not `null`.
fn main_type(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(t) => Some(t.as_str()),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or(Some("null")),
        _ if schema.get("properties").is_some() => Some("object"),
        _ if schema.get("items").is_some() => Some("array"),
        _ => None,
    }
}

/// A value of a resolved schema that the schema accepts: its `examples`/`example`/`default`,
/// a hint for `name`, else one built from the keywords. `full` also fills optional properties.
/// `None` when nothing the generator can make fits (the caller reports it).
pub fn valid_value(schema: &Value, name: &str, full: bool) -> Option<Value> {
    let mut candidates: Vec<Value> = Vec::new();
    if let Some(examples) = schema["examples"].as_array() {
        candidates.extend(examples.iter().cloned());
    }
    for key in ["example", "default", "const"] {
        if let Some(v) = schema.get(key) {
            candidates.push(v.clone());
        }
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        candidates.push(first.clone());
    }
    candidates.extend(hint(name));
    candidates.extend(built(schema, name, full));
    candidates.into_iter().find(|c| fits(schema, c))
}

fn built(schema: &Value, name: &str, full: bool) -> Option<Value> {
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[key].as_array().and_then(|m| m.first()) {
            return valid_value(first, name, full);
        }
    }
    let v = match main_type(schema)? {
        "string" => {
            let min = schema["minLength"].as_u64().unwrap_or(1).max(1);
            let max = schema["maxLength"].as_u64().unwrap_or(u64::MAX);
            match schema["format"].as_str() {
                Some("date-time") => json!("2026-01-01T00:00:00Z"),
                Some("uri") => json!("https://example.invalid/x"),
                _ => json!("a".repeat(min.min(max) as usize)),
            }
        }
        "integer" => json!(number_in_range(schema).round() as i64),
        "number" => json!(number_in_range(schema)),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(0);
            let item = valid_value(&schema["items"], name, full)?;
            Value::Array(vec![item; n as usize])
        }
        "object" => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Map::new();
            for (prop, sub) in schema["properties"].as_object().into_iter().flatten() {
                if full || required.contains(&prop.as_str()) {
                    out.insert(prop.clone(), valid_value(sub, prop, full)?);
                }
            }
            Value::Object(out)
        }
        _ => return None,
    };
    Some(v)
}

/// 1, moved into `[minimum, maximum]` (exclusive bounds respected).
fn number_in_range(schema: &Value) -> f64 {
    let mut lo = schema["minimum"].as_f64().unwrap_or(f64::MIN);
    if let Some(x) = schema["exclusiveMinimum"].as_f64() {
        lo = lo.max(x + 1.0);
    }
    let mut hi = schema["maximum"].as_f64().unwrap_or(f64::MAX);
    if let Some(x) = schema["exclusiveMaximum"].as_f64() {
        hi = hi.min(x - 1.0);
    }
    1f64.clamp(lo, hi.max(lo))
}

/// Values a resolved schema refuses, each with what is wrong with it: the wrong type, out of
/// range, too long or too short, outside an enum. Only values the schema really refuses are
/// returned.
pub fn invalid_values(schema: &Value) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    match main_type(schema) {
        Some("string") => {
            out.push(("a number instead of a string".into(), json!(12345)));
            if let Some(max) = schema["maxLength"].as_u64() {
                out.push((
                    format!("longer than maxLength {max}"),
                    json!("x".repeat(max as usize + 1)),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64().filter(|m| *m > 0) {
                out.push((
                    format!("shorter than minLength {min}"),
                    json!("x".repeat(min as usize - 1)),
                ));
            }
            if schema.get("enum").is_some() {
                out.push(("outside the enum".into(), json!("not-one-of-them")));
            }
        }
        Some(t @ ("integer" | "number")) => {
            let integer = t == "integer";
            let num = |x: f64| if integer { json!(x as i64) } else { json!(x) };
            out.push(("a string instead of a number".into(), json!("not-a-number")));
            if integer {
                out.push(("a fraction".into(), json!(1.5)));
            }
            if let Some(min) = schema["minimum"].as_f64() {
                out.push((format!("below minimum {min}"), num(min - 1.0)));
            }
            if let Some(max) = schema["maximum"].as_f64() {
                out.push((format!("above maximum {max}"), num(max + 1.0)));
            }
            out.push(("far out of range".into(), json!(1e30)));
        }
        Some("boolean") => out.push(("a string instead of a boolean".into(), json!("maybe"))),
        Some("array") => out.push(("a string instead of an array".into(), json!("x"))),
        Some("object") => {
            out.push(("a string instead of an object".into(), json!("x")));
            out.push(("null instead of an object".into(), Value::Null));
            out.push(("an array instead of an object".into(), json!([])));
            if let Some(valid) = valid_value(schema, "", true) {
                for prop in schema["required"].as_array().into_iter().flatten() {
                    let Some(prop) = prop.as_str() else { continue };
                    let mut v = valid.clone();
                    v.as_object_mut().map(|o| o.remove(prop));
                    out.push((format!("without required {prop}"), v));
                }
                for (prop, sub) in schema["properties"].as_object().into_iter().flatten() {
                    for (what, bad) in invalid_values(sub) {
                        let mut v = valid.clone();
                        v[prop] = bad;
                        out.push((format!("{prop}: {what}"), v));
                    }
                }
            }
        }
        _ => {}
    }
    out.retain(|(_, v)| !fits(schema, v));
    out
}

/// A query or path parameter's value as text (strings unquoted).
pub fn as_param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fails with every problem at once.
pub fn ensure_empty(problems: &[String], what: &str) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{what} ({}):\n{}", problems.len(), problems.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document::from_value(json!({
            "openapi": "3.1.0",
            "paths": {
                "/messages/{chatId}": {"get": {
                    "parameters": [
                        {"name": "chatId", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
                    ],
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}},
                        "4XX": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    }
                }},
                "/messages/latest": {"get": {"responses": {"200": {"description": "no body"}}}},
                "/send": {"post": {
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Send"}}}},
                    "responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}
                }}
            },
            "components": {"schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"},
                    "phase": {"type": ["string", "null"]}
                }},
                "Page": {"type": "object", "required": ["messages"], "properties": {
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}
                }},
                "Message": {"type": "object", "required": ["id", "timestamp"], "properties": {
                    "id": {"type": "string"},
                    "timestamp": {"type": "integer", "minimum": 0},
                    "quoted": {"$ref": "#/components/schemas/Message"}
                }},
                "Send": {"type": "object", "required": ["chatId", "message"], "properties": {
                    "chatId": {"type": "string", "pattern": "^[0-9]+@(c\\.us|s\\.whatsapp\\.net)$"},
                    "message": {"type": "string", "minLength": 1, "maxLength": 10},
                    "kind": {"type": "string", "enum": ["text"]}
                }}
            }}
        }))
    }

    #[test]
    fn answers_are_checked_against_the_documented_schema_through_refs() {
        let d = doc();
        let ok = json!({"messages": [{"id": "A", "timestamp": 5, "quoted": {"id": "B", "timestamp": 1}}]});
        d.validate_response("GET", "/messages/{chatId}", 200, &ok)
            .unwrap();
        let bad = json!({"messages": [{"id": 7, "timestamp": -1}]});
        let err = d
            .validate_response("GET", "/messages/{chatId}", 200, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/messages/0/id") && err.contains("/messages/0/timestamp"),
            "{err}"
        );
        // 404 is documented by its class; the error body must fit the error schema.
        d.validate_response(
            "get",
            "/messages/{chatId}",
            404,
            &json!({"error": "x", "message": "y"}),
        )
        .unwrap();
        assert!(
            d.validate_response("GET", "/messages/{chatId}", 404, &json!({"error": "x"}))
                .is_err()
        );
        // An undocumented status, an unknown operation.
        let err = d
            .validate_response("GET", "/messages/{chatId}", 503, &json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not list"), "{err}");
        assert!(
            d.validate_response("DELETE", "/send", 200, &json!({}))
                .is_err()
        );
        // Documented without content: any body.
        d.validate_response("GET", "/messages/latest", 200, &json!("anything"))
            .unwrap();
    }

    #[test]
    fn strict_validation_refuses_undocumented_fields() {
        let d = doc();
        let extra = json!({"messages": [{"id": "A", "timestamp": 5, "secret": 1}]});
        d.validate_response("GET", "/messages/{chatId}", 200, &extra)
            .unwrap();
        let err = d
            .validate_response_strict("GET", "/messages/{chatId}", 200, &extra)
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret"), "{err}");
        let fine = json!({"messages": [{"id": "A", "timestamp": 5}]});
        d.validate_response_strict("GET", "/messages/{chatId}", 200, &fine)
            .unwrap();
        // allOf members stay open; the composed schema is closed.
        let mut composed = json!({"allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}},
            {"type": "object", "properties": {"b": {"type": "integer"}}}
        ]});
        close_objects(&mut composed, false);
        assert!(fits(&composed, &json!({"a": 1, "b": 2})));
        assert!(!fits(&composed, &json!({"a": 1, "c": 2})));
    }

    #[test]
    fn concrete_paths_find_their_template_literals_first() {
        let d = doc();
        assert_eq!(
            d.template_of("GET", "/messages/41@c.us?limit=5").as_deref(),
            Some("/messages/{chatId}")
        );
        assert_eq!(
            d.template_of("GET", "/messages/latest").as_deref(),
            Some("/messages/latest")
        );
        assert_eq!(d.template_of("POST", "/messages/x"), None);
        assert_eq!(d.template_of("GET", "/messages/"), None);
    }

    #[test]
    fn generated_values_are_valid_or_invalid_as_the_schema_says() {
        let d = doc();
        let send = d
            .request_schema("POST", "/send", "application/json")
            .unwrap()
            .unwrap();
        let minimal = valid_value(&send, "", false).unwrap();
        assert_eq!(
            minimal,
            json!({"chatId": "41791234567@c.us", "message": "a"})
        );
        let full = valid_value(&send, "", true).unwrap();
        assert_eq!(full["kind"], "text");
        let invalid = invalid_values(&send);
        let whats: Vec<&str> = invalid.iter().map(|(w, _)| w.as_str()).collect();
        for expected in [
            "without required chatId",
            "without required message",
            "message: longer than maxLength 10",
            "message: shorter than minLength 1",
            "kind: outside the enum",
            "chatId: a number instead of a string",
            "null instead of an object",
        ] {
            assert!(
                whats.contains(&expected),
                "{expected} missing from {whats:?}"
            );
        }
        for (what, v) in &invalid {
            assert!(!fits(&send, v), "{what}: {v}");
        }
        let params = d.params("GET", "/messages/{chatId}").unwrap();
        let limit = &params[1].schema;
        assert_eq!(valid_value(limit, "limit", false), Some(json!(1)));
        let bad: Vec<Value> = invalid_values(limit).into_iter().map(|(_, v)| v).collect();
        assert!(
            bad.contains(&json!(0)) && bad.contains(&json!(501)),
            "{bad:?}"
        );
        // A pattern nothing fits: no valid value rather than a wrong one.
        let impossible = json!({"type": "string", "pattern": "^z{3}$"});
        assert_eq!(valid_value(&impossible, "x", false), None);
        assert_eq!(
            valid_value(
                &json!({"type": "string", "pattern": "^z{3}$", "example": "zzz"}),
                "x",
                false
            ),
            Some(json!("zzz"))
        );
    }

    #[test]
    fn the_committed_document_loads_and_resolves() {
        let d = Document::load().unwrap();
        assert!(!d.operations().is_empty());
        for op in d.operations() {
            for status in op.statuses() {
                if let Ok(code) = status.parse::<u16>() {
                    d.response_schema(&op.method, &op.path, code, "application/json")
                        .unwrap();
                }
            }
        }
    }
}
