//! Tokens and secrets never reach the logs, even at debug level for every crate. Its own test
//! binary, so the log capture is this process's only subscriber.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasp_e2e::{TestEnv, eventually};

const SECRET: &str = "log-test-secret-log-test-secret-0123";
const SUPABASE: &str = "log-test-supabase-secret-supabase-9876";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_and_secrets_never_reach_the_logs() -> Result<()> {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();

    let env = TestEnv::get();
    let client = env.kube_client().await?;
    env.install_crds(&client).await?;
    let ns = env.namespace("api-logs").await?;
    let redis = env.redis_url();
    let config = wasp_api::Config::try_parse_from([
        "wasp-api",
        "--namespace",
        &ns,
        "--redis-url",
        &redis,
        "--jwt-secret",
        SECRET,
        "--supabase-jwt-secret",
        SUPABASE,
        "--jwt-require-exp",
        "false",
        "--dev-insecure-auth",
    ])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let ready = format!("http://{}/readyz", admin.local_addr()?);
    let stop = CancellationToken::new();
    tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move { wasp_api::run(config, client, listener, admin, stop).await }
    });
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), || async {
        http.get(&ready)
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await
    .context("never ready")?;

    let exp = jiff::Timestamp::now().as_second() + 600;
    let valid = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "log-user", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "log-user", "exp": exp}),
        &EncodingKey::from_secret(b"forged-forged-forged-forged-forged"),
    )?;
    // Seed 003's token: no `exp`, signed with the second secret.
    let no_exp = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "log-user", "iat": 1234567890}),
        &EncodingKey::from_secret(SUPABASE.as_bytes()),
    )?;
    for auth in [
        format!("Bearer {valid}"),
        format!("Bearer {forged}"),
        format!("Bearer {no_exp}"),
        "Bearer raw-dev-token-abcdef".to_owned(),
    ] {
        for (post, path) in [(false, "/status"), (true, "/connect"), (false, "/chats")] {
            let req = if post {
                http.post(format!("{base}{path}"))
            } else {
                http.get(format!("{base}{path}"))
            };
            let status = req.header("authorization", &auth).send().await?.status();
            assert_ne!(status, reqwest::StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        }
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("request"), "nothing captured");
    assert!(logs.contains("INSECURE"), "dev mode must be logged loudly");
    assert_eq!(
        logs.matches("JWT_REQUIRE_EXP is false").count(),
        1,
        "accepting tokens without exp is warned about once, at start"
    );
    for secret in [
        SECRET,
        SUPABASE,
        no_exp.as_str(),
        no_exp.split('.').nth(2).unwrap(),
        valid.as_str(),
        forged.as_str(),
        valid.split('.').nth(2).unwrap(),
        forged.split('.').nth(2).unwrap(),
    ] {
        assert!(!logs.contains(secret), "{secret} found in the logs");
    }
    Ok(())
}
