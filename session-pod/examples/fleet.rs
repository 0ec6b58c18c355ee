//! Memory of idle connected session pods side by side (issue 14 item 5; docs/benchmarks.md,
//! "Session pod: memory per extra session"). Pairs one pod, lets it idle, measures it alone;
//! then pairs N−1 more (same release binary, same Redis, same in-process simulator), lets them
//! idle and measures every pod. Per extra session = (Σ over N pods − the first pod alone) / (N−1),
//! from `/proc/<pid>/smaps_rollup` (PSS, anonymous, private dirty).
//!
//!   cargo build --release -p wasp-session-pod --features insecure-sim --bins
//!   cargo build -p wasp-session-pod --example fleet
//!   WASP_POD_BIN=$CARGO_TARGET_DIR/release/wasp-session-pod \
//!     $CARGO_TARGET_DIR/debug/examples/fleet [--pods 20] [--idle-secs 10]
//!
//! `WASP_FLEET_POD_ENV="K=V K2=V2"` adds environment variables to every pod (e.g. glibc
//! tunables, to compare allocator settings on one binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

/// `/proc/<pid>/smaps_rollup` fields, KiB.
fn rollup(pid: u32) -> BTreeMap<String, u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    s.lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((
                k.to_owned(),
                v.trim().trim_end_matches("kB").trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The anonymous memory of one pod by mapping (heap, arenas, stacks, the binary's writable
/// data), largest first.
fn anon_by_mapping(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut maps: Vec<(u64, u64, String)> = Vec::new();
    let mut current = String::new();
    let mut size = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let cols: Vec<&str> = line.split_whitespace().collect();
            current = format!(
                "{} {} {}",
                cols[0],
                cols[1],
                cols.get(5).unwrap_or(&"[anon]")
            );
        } else if let Some(v) = line.strip_prefix("Size:") {
            size = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            let kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            if kib > 0 {
                maps.push((kib, size, current.clone()));
            }
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    let mut out = String::new();
    for (kib, size, name) in maps.iter().take(14) {
        out.push_str(&format!("  {kib:>6} KiB anon of {size:>7} KiB  {name}\n"));
    }
    out
}

/// Redis's own count of the bytes it holds (`INFO memory`).
async fn redis_used_memory() -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let n = arg("--pods", 20).max(2) as usize;
    let idle = Duration::from_secs(arg("--idle-secs", 10));
    let extra: Vec<(String, String)> = std::env::var("WASP_FLEET_POD_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (running, sim) = start_sim().await;
    let opts = |user: &str| {
        let mut o = PodOpts::new(user, &running.ws_url);
        // The pods' production log level (the tests' default is debug).
        o.extra_env.push(("RUST_LOG".into(), "info".into()));
        o.extra_env.extend(extra.iter().cloned());
        o
    };

    let mut pods = Vec::new();
    let redis_before = redis_used_memory().await;
    let (first, _, _) = paired_pod(&running, &sim, opts(&unique_user("fleet"))).await;
    tokio::time::sleep(idle).await;
    let alone = rollup(first.proc.pid());
    let redis_one = redis_used_memory().await;
    let alone_breakdown = anon_by_mapping(first.proc.pid());
    pods.push(first);
    for _ in 1..n {
        let (pod, _, _) = paired_pod(&running, &sim, opts(&unique_user("fleet"))).await;
        pods.push(pod);
    }
    tokio::time::sleep(idle).await;
    let redis_all = redis_used_memory().await;
    let all: Vec<_> = pods.iter().map(|p| rollup(p.proc.pid())).collect();
    let sum = |k: &str| all.iter().map(|r| r[k]).sum::<u64>();
    let per_extra = |k: &str| (sum(k) as f64 - alone[k] as f64) / (n - 1) as f64;
    let threads = std::fs::read_to_string(format!("/proc/{}/status", pods[0].proc.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_owned()))
        .unwrap();

    println!(
        "pods {n}, idle {} s each phase, pod env {extra:?}",
        idle.as_secs()
    );
    println!(
        "first pod alone: Rss {:.2} MiB, Pss {:.2} MiB (anon {:.2}, file {:.2}), Anonymous {:.2} MiB, Private_Dirty {:.2} MiB",
        mib(alone["Rss"]),
        mib(alone["Pss"]),
        mib(alone["Pss_Anon"]),
        mib(alone["Pss_File"]),
        mib(alone["Anonymous"]),
        mib(alone["Private_Dirty"])
    );
    println!(
        "{n} pods: Σ Pss {:.2} MiB, Σ Anonymous {:.2} MiB, Σ Private_Dirty {:.2} MiB, threads/pod {threads}",
        mib(sum("Pss")),
        mib(sum("Anonymous")),
        mib(sum("Private_Dirty"))
    );
    println!(
        "per extra session: Pss {:.3} MiB, Anonymous (private anon) {:.3} MiB, Private_Dirty {:.3} MiB",
        per_extra("Pss") / 1024.0,
        per_extra("Anonymous") / 1024.0,
        per_extra("Private_Dirty") / 1024.0
    );
    println!(
        "Redis used_memory: first session {:.1} KiB, per extra session {:.1} KiB (auth state, \
         state record, lease, events of a fresh pairing)",
        (redis_one as f64 - redis_before as f64) / 1024.0,
        (redis_all as f64 - redis_one as f64) / (n - 1) as f64 / 1024.0
    );
    let mut anon: Vec<u64> = all.iter().map(|r| r["Anonymous"]).collect();
    anon.sort_unstable();
    println!(
        "Anonymous per pod (KiB): min {} median {} max {}",
        anon[0],
        anon[anon.len() / 2],
        anon[anon.len() - 1]
    );
    println!("first pod alone, anonymous memory by mapping:\n{alone_breakdown}");
    println!(
        "last pod, anonymous memory by mapping:\n{}",
        anon_by_mapping(pods[n - 1].proc.pid())
    );
    drop(pods);
    drop(running);
}
