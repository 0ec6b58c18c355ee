//! The `wasp-sim` binary: flags, readiness line, control API, state file across a restart.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wasp_sim::client::SimClient;

struct SimProcess {
    child: Child,
    control_url: String,
    ws_url: String,
}

/// Starts the binary on free loopback ports and waits for its `wasp-sim ready` line.
fn spawn(state_file: &std::path::Path) -> SimProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasp-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ])
        .arg("--state-file")
        .arg(state_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("wasp-sim ready")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ready line");
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..].split_whitespace().next().unwrap().to_owned()
    };
    assert!(field("media").starts_with("https://127.0.0.1:"), "{line}");
    SimProcess {
        control_url: field("control"),
        ws_url: field("ws"),
        child,
    }
}

/// The media CA certificate, from the WebSocket listener.
async fn media_ca(ws_url: &str) -> String {
    let base = ws_url
        .replacen("ws://", "http://", 1)
        .trim_end_matches("/ws/chat")
        .to_owned();
    let resp = reqwest::get(format!("{base}/sim/media-ca.pem"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    resp.text().await.unwrap()
}

/// SIGTERM, as a pod's grace period sends it; waits for a clean exit.
fn terminate(mut p: SimProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(p.child.wait().unwrap().success(), "clean exit on SIGTERM");
}

#[tokio::test]
async fn the_binary_serves_and_keeps_its_state_across_restarts() {
    let dir = std::env::temp_dir().join(format!("wasp-sim-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);

    let first = spawn(&state);
    assert!(first.ws_url.starts_with("ws://127.0.0.1:") && first.ws_url.ends_with("/ws/chat"));
    let api = SimClient::new(&first.control_url);
    let info = api.info().await.unwrap();
    let ca = media_ca(&first.ws_url).await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let phone = api
        .create_phone(Some("15557654321"), Some("Saved"))
        .await
        .unwrap();
    api.create_contact(Some("16667654321"), None).await.unwrap();
    terminate(first);

    let second = spawn(&state);
    let api = SimClient::new(&second.control_url);
    assert_eq!(
        api.info().await.unwrap().server_static_public_key,
        info.server_static_public_key
    );
    // The media server's new certificate chains to the CA clients fetched before.
    let media_url = api.info().await.unwrap().media_url;
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let status = trusting
        .get(format!("{media_url}/v/t62.7118-24/none.enc?token=x"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let phones = api.phones().await.unwrap();
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0].phone, phone.phone);
    assert_eq!(phones[0].push_name, "Saved");
    assert_eq!(api.contacts().await.unwrap().len(), 1);
    terminate(second);
    let _ = std::fs::remove_dir_all(&dir);
}
