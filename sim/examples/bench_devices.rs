//! Benchmark: N paired, connected `whatsapp-rust` clients on one `wasp-sim` process, and the
//! simulator's own RSS and CPU. The simulator runs as its own process so only its usage is
//! measured.
//!
//! ```sh
//! cargo build --release -p wasp-sim --bin wasp-sim --example bench_devices
//! target/release/examples/bench_devices --sim-bin target/release/wasp-sim --devices 200
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};
use wacore::store::InMemoryBackend;
use wacore::types::events::Event;
use wasp_sim::client::SimClient;
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::proto_helpers::MessageExt as _;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

#[derive(Parser)]
struct Args {
    /// The `wasp-sim` binary to benchmark.
    #[arg(long, default_value = "target/release/wasp-sim")]
    sim_bin: String,
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Clients pairing at the same time.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Idle window over which steady-state CPU is measured.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
}

struct NoHttp;

#[async_trait::async_trait]
impl HttpClient for NoHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        anyhow::bail!("no network: {}", request.url)
    }
}

enum Ev {
    Qr(String),
    Connected,
    Text(String),
}

/// CPU time (user + system) in seconds and RSS in MiB of a process, from /proc.
fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let clk_tck = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok((ticks / clk_tck, rss_kb / 1024.0))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_client(ws_url: &str) -> anyhow::Result<(BotHandle, mpsc::UnboundedReceiver<Ev>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let bot = Bot::builder()
        .with_backend(InMemoryBackend::new())
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(ws_url.to_owned()))
        .with_http_client(NoHttp)
        .with_runtime(TokioRuntime)
        .with_version((2, 3000, 1_023_868_855))
        .skip_history_sync()
        .on_event(move |event, _| {
            let tx = tx.clone();
            async move {
                let ev = match &*event {
                    Event::PairingQrCode(q) => Some(Ev::Qr(q.code.clone())),
                    Event::Connected(_) => Some(Ev::Connected),
                    Event::Messages(batch) => batch
                        .iter()
                        .find_map(|m| m.message.text_content().map(|t| Ev::Text(t.to_owned()))),
                    _ => None,
                };
                if let Some(ev) = ev {
                    let _ = tx.send(ev);
                }
            }
        })
        .build()
        .await?;
    Ok((bot.spawn(), rx))
}

async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Ev>,
    mut pick: impl FnMut(Ev) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => {
                if let Some(v) = pick(ev) {
                    return Ok(v);
                }
            }
            Ok(None) => bail!("client stopped"),
            Err(_) => bail!("timed out"),
        }
    }
}

/// Pairs one fresh client to a fresh phone and waits until it is connected.
async fn pair_one(
    sim: &SimClient,
    ws_url: &str,
) -> anyhow::Result<(String, BotHandle, mpsc::UnboundedReceiver<Ev>)> {
    let phone = sim.create_phone(None, None).await?;
    let (handle, mut rx) = start_client(ws_url).await?;
    let qr = next(&mut rx, |e| match e {
        Ev::Qr(q) => Some(q),
        _ => None,
    })
    .await?;
    sim.scan_qr(&phone.phone, &qr).await?;
    next(&mut rx, |e| matches!(e, Ev::Connected).then_some(())).await?;
    Ok((phone.phone, handle, rx))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (ws_port, control_port) = (free_port()?, free_port()?);
    let mut child = Command::new(&args.sim_bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{ws_port}"),
            "--control-listen",
            &format!("127.0.0.1:{control_port}"),
            "--media-listen",
            "127.0.0.1:0",
            "--log",
            "warn,wasp_sim=info",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.sim_bin))?;
    let pid = child.id();
    // Ready when it logs so (tracing writes to stdout); keep draining it afterwards.
    let stdout = child.stdout.take().context("sim stdout")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("wasp-sim ready")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("sim did not start")?;
    let ws_url = format!("ws://127.0.0.1:{ws_port}/ws/chat");
    let sim = SimClient::new(format!("http://127.0.0.1:{control_port}"));

    let (cpu0, rss0) = usage(pid)?;
    println!("sim started: rss {rss0:.1} MiB");

    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..args.devices)
        .map(|_| pair_one(&sim, &ws_url))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let mut clients = Vec::with_capacity(results.len());
    for r in results {
        clients.push(r?);
    }
    let pair_secs = started.elapsed().as_secs_f64();
    let (cpu1, rss1) = usage(pid)?;
    let connected = sim
        .sockets()
        .await?
        .iter()
        .filter(|s| s.phone.is_some())
        .count();
    println!(
        "{} devices paired and connected in {pair_secs:.1} s ({connected} live sockets); sim cpu {:.1} s, rss {rss1:.1} MiB",
        clients.len(),
        cpu1 - cpu0
    );

    let idle = Duration::from_secs(args.idle_secs);
    tokio::time::sleep(idle).await; // measuring window, not synchronisation
    let (cpu2, rss2) = usage(pid)?;
    println!(
        "idle {}s: sim cpu {:.2} % of one core, rss {rss2:.1} MiB",
        args.idle_secs,
        (cpu2 - cpu1) / idle.as_secs_f64() * 100.0
    );

    // One contact message to every device, all at once.
    let contact = sim.create_contact(None, None).await?;
    let burst = Instant::now();
    let sends: Vec<_> = futures::stream::iter(clients.iter().map(|(phone, _, _)| phone.clone()))
        .map(|phone| {
            let sim = sim.clone();
            let contact = contact.phone.clone();
            async move { sim.contact_send(&contact, &phone, "bench").await }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    for s in sends {
        s?;
    }
    for (_, _, rx) in clients.iter_mut() {
        next(rx, |e| {
            matches!(e, Ev::Text(t) if t == "bench").then_some(())
        })
        .await?;
    }
    let burst_secs = burst.elapsed().as_secs_f64();
    let (cpu3, rss3) = usage(pid)?;
    println!(
        "{} E2E messages delivered in {burst_secs:.2} s; sim cpu {:.2} s, rss {rss3:.1} MiB",
        clients.len(),
        cpu3 - cpu2
    );

    for (_, handle, _) in &clients {
        handle.abort();
    }
    child.kill()?;
    let _ = child.wait();
    Ok(())
}
