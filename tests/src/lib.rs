//! wasp's test world: a real local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager v1.20) and a real Redis, started once per test binary, plus the helpers
//! tests use against them. See `docs/local-kubernetes.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wasp_e2e::{TestEnv, eventually};
//!
//! #[tokio::test]
//! async fn example() -> anyhow::Result<()> {
//!     let env = TestEnv::get();
//!     let client = env.kube_client().await?; // a fresh client per test (per runtime)
//!     let ns = env.namespace("example").await?;
//!     let redis = redis::Client::open(env.redis_url())?;
//!     # let _ = (client, ns, redis);
//!     eventually(Duration::from_secs(10), || async { Some(()) }).await?;
//!     Ok(())
//! }
//! ```

pub mod bins;
pub mod browser;
pub mod chart_world;
pub mod cluster;
pub mod crds;
pub mod dns;
pub mod env;
pub mod helm;
pub mod openapi;
pub mod proc_stats;
pub mod redis_server;
pub mod stream_clients;
pub mod wait;
pub mod webhook_receiver;

/// The local node (`wasp-node`), as the tests have always reached it: `wasp_e2e::node::LocalNode`.
pub use wasp_node as node;
/// Pod status as a kubelet writes it (`wasp_node::kubelet`).
pub use wasp_node::kubelet;
/// Children that die with the test binary (`wasp_node::procs`, shared with the node's processes).
pub use wasp_node::procs;

pub use env::TestEnv;

/// A benchmark's numeric option `name <n>` from the command line (`cargo bench … -- --users 30`),
/// `default` when absent or not a number.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`, …); 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `len` bytes of a xorshift sequence from `seed`: test files that differ at every offset, so a
/// mix-up or a truncation shows.
pub fn test_file(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

pub use kubelet::{mark_pod_running, mark_pod_terminated};
pub use wait::{TimedOut, eventually, wait_for};
pub use wasp_node::{Image, Images, LocalNode, NodeOptions};
