//! Scale benchmark: N WhatsAppSessions → N session pods with status, against the local
//! kube-apiserver, with the operator running as its own process (so its RSS is its own).
//!
//!     cargo bench -p wasp-operator --bench scale -- [--sessions 1000]
//!
//! Prints the time from the first create until every session has its pod and a status naming
//! it, and the operator's peak RSS (VmHWM). Results go into docs/benchmarks.md.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use wasp_crds::WhatsAppSession;
use wasp_e2e::TestEnv;
use wasp_e2e::bench_arg as arg;

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = arg("--sessions", 1000);
    let env = TestEnv::get();
    let client = env.kube_client().await?;
    env.install_crds(&client).await?;
    let ns = env.namespace("bench-scale").await?;
    // The operator derives each user's keyring from this (it creates no pod without it).
    let master = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("wasp-master-key".into()),
            ..Default::default()
        },
        string_data: Some([("masterKey".to_owned(), "42".repeat(32))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &master)
        .await?;

    let log = std::env::temp_dir().join(format!("wasp-bench-operator-{ns}.log"));
    // `WASP_BENCH_OPERATOR_WRAP="heaptrack -o /tmp/op"` runs the operator under a profiler (its
    // RSS figures are then the wrapper's process, not the operator's).
    let wrap = std::env::var("WASP_BENCH_OPERATOR_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut operator = match wrap.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(wrap).arg(env!("CARGO_BIN_EXE_wasp-operator"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_wasp-operator")),
    };
    let mut operator = operator
        .args([
            "--namespace",
            &ns,
            "--redis-url",
            &env.redis_url(),
            "--leader-election",
            "false",
        ])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--session-image",
            "wasp/session-pod:bench",
        ])
        .args(
            std::env::var("WASP_BENCH_OPERATOR_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", env.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting wasp-operator")?;
    let pid = operator.id();
    tokio::time::sleep(Duration::from_millis(500)).await; // let it list (an empty namespace)
    let idle_rss = proc_status_kib(pid, "VmRSS:").unwrap_or(0);

    let sessions: Api<WhatsAppSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let sessions = sessions.clone();
            async move {
                let s = WhatsAppSession::for_user(&format!("bench-user-{i}@clinic.example"));
                sessions.create(&PostParams::default(), &s).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let created_in = started.elapsed();

    let mut peak_sampled = 0;
    let deadline = Duration::from_secs(300);
    let (pods_done, status_done) = loop {
        peak_sampled = peak_sampled.max(proc_status_kib(pid, "VmRSS:").unwrap_or(0));
        let pod_count = pods
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        let with_status = sessions
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().and_then(|st| st.pod_name.as_ref()) == Some(&s.name_any())
            })
            .count();
        if pod_count == n && with_status == n {
            break (pod_count, with_status);
        }
        if started.elapsed() > deadline {
            bail!(
                "gave up after {deadline:?}: {pod_count} pods, {with_status} statuses of {n}; log {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total = started.elapsed();
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let _ = operator.kill();
    let _ = operator.wait();

    println!(
        "sessions: {n} (created by the benchmark in {:.1} s)",
        created_in.as_secs_f64()
    );
    println!("pods: {pods_done}, statuses naming their pod: {status_done}");
    println!("all pods and statuses after: {:.1} s", total.as_secs_f64());
    println!(
        "operator RSS: idle {:.1} MiB, peak (VmHWM) {:.1} MiB",
        idle_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = peak_sampled;
    Ok(())
}
