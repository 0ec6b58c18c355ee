//! The local node's decisions as pure functions: restarts and their back-off, grace periods,
//! readiness and liveness probes, pod addresses.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Whether a container that exited with `exit_code` is started again under `restart_policy`.
pub fn should_restart(restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Restart back-off, shaped like the kubelet's (10 s doubling to 5 min, the first restart at once,
/// reset after a container ran 10 min) but with test-sized defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second restart in a row; doubles for each further one.
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the count of crashes in a row.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restarting a container that has now exited `crashes` times in a row
    /// (≥ 1): none for the first, then `initial`, doubling, capped at `max`.
    pub fn delay(&self, crashes: u32) -> Duration {
        match crashes {
            0 | 1 => Duration::ZERO,
            n => {
                let factor = 1u32.checked_shl(n - 2).unwrap_or(u32::MAX);
                self.initial.saturating_mul(factor).min(self.max)
            }
        }
    }
}

/// The grace period of a pod being deleted: `metadata.deletionGracePeriodSeconds` (what the
/// delete asked for, capped by the apiserver), else `spec.terminationGracePeriodSeconds`, else
/// 30 s.
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The `n`th pod address (n ≥ 0) in the node's block `127.<block>.0.0/16`: `127.<block>.0.1`,
/// `…0.2`, … `…0.254`, `…1.1`, …; `None` past the block's 65,024 addresses.
pub fn pod_address(block: u8, n: u32) -> Option<Ipv4Addr> {
    let third = u8::try_from(n / 254).ok()?;
    let fourth = u8::try_from(n % 254 + 1).ok()?;
    Some(Ipv4Addr::new(127, block, third, fourth))
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// `GET http://host:port/path`; 200–399 is a success.
    Http {
        host: String,
        port: u16,
        path: String,
    },
    /// A TCP connect.
    Tcp { host: String, port: u16 },
    /// A command run on the host with the container's environment; exit code 0 is a success.
    Exec(Vec<String>),
    /// HTTPS, gRPC, or a port that names no container port: the local node does not run it and
    /// counts it a success.
    Unsupported(String),
}

/// A probe as the local node runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub target: ProbeTarget,
    /// The spec's `periodSeconds` (default 10 s): liveness probes keep it, so a container is
    /// never killed sooner than in a cluster; readiness uses the node's faster interval.
    pub period: Duration,
    pub initial_delay: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// The readiness probe of `container` on a pod at `pod_ip` ([`probe_plan`]); `None` without one
/// (ready as soon as it runs).
pub fn readiness_probe(container: &Container, pod_ip: Ipv4Addr) -> Option<ProbePlan> {
    Some(probe_plan(
        container.readiness_probe.as_ref()?,
        container,
        pod_ip,
    ))
}

/// The liveness probe of `container` ([`probe_plan`]); `None` without one (never restarted for
/// being unhealthy).
pub fn liveness_probe(container: &Container, pod_ip: Ipv4Addr) -> Option<ProbePlan> {
    Some(probe_plan(
        container.liveness_probe.as_ref()?,
        container,
        pod_ip,
    ))
}

/// The startup probe of `container` ([`probe_plan`]); `None` without one (started as soon as it
/// runs). Until it passes, the container's liveness and readiness probes do not run.
pub fn startup_probe(container: &Container, pod_ip: Ipv4Addr) -> Option<ProbePlan> {
    Some(probe_plan(
        container.startup_probe.as_ref()?,
        container,
        pod_ip,
    ))
}

/// `true` once a startup probe that has not yet passed has failed for as long as a kubelet
/// allows it (`failureThreshold` periods): the container is then killed. The local node tries
/// at its fast interval (a pod starts sooner), so it counts the time, not the tries: nothing is
/// killed sooner than a kubelet, which gives up at its `failureThreshold`th failure, would.
pub fn startup_gave_up(failing_for: Duration, plan: &ProbePlan) -> bool {
    failing_for >= plan.period * plan.failure_threshold
}

/// A probe of `container` with Kubernetes' defaults (period 10 s, timeout 1 s, success threshold
/// 1, failure threshold 3).
pub fn probe_plan(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> ProbePlan {
    let secs = |v: Option<i32>, default: i32| {
        Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
    };
    let count = |v: Option<i32>, default: u32| {
        v.and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    let target = if let Some(http) = &probe.http_get {
        let scheme = http.scheme.as_deref().unwrap_or("HTTP");
        match port_number(container, &http.port) {
            Some(port) if scheme.eq_ignore_ascii_case("HTTP") => ProbeTarget::Http {
                host: http.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
            },
            Some(_) => ProbeTarget::Unsupported(format!("httpGet with scheme {scheme}")),
            None => ProbeTarget::Unsupported(format!("httpGet port {:?}", http.port)),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        match port_number(container, &tcp.port) {
            Some(port) => ProbeTarget::Tcp {
                host: tcp.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port,
            },
            None => ProbeTarget::Unsupported(format!("tcpSocket port {:?}", tcp.port)),
        }
    } else if let Some(cmd) = probe
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .filter(|c| !c.is_empty())
    {
        ProbeTarget::Exec(cmd)
    } else {
        ProbeTarget::Unsupported("probe without a handler".into())
    };
    ProbePlan {
        target,
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        initial_delay: secs(probe.initial_delay_seconds, 0),
        timeout: secs(probe.timeout_seconds, 1),
        success_threshold: count(probe.success_threshold, 1),
        failure_threshold: count(probe.failure_threshold, 3),
    }
}

/// A probe port: a number, or the name of one of the container's ports.
fn port_number(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// A verdict from consecutive probe results: ready (or alive) after `success_threshold`
/// successes in a row, not after `failure_threshold` failures in a row, unchanged in between.
/// Readiness starts false ([`Readiness::default`]), liveness true ([`Readiness::alive`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    successes: u32,
    failures: u32,
}

impl Readiness {
    /// A liveness verdict: alive until the failures say otherwise.
    pub fn alive() -> Self {
        Self {
            ready: true,
            ..Self::default()
        }
    }

    /// Records one probe result; `true` when readiness changed.
    pub fn record(&mut self, plan: &ProbePlan, ok: bool) -> bool {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let before = self.ready;
        if ok && self.successes >= plan.success_threshold {
            self.ready = true;
        }
        if !ok && self.failures >= plan.failure_threshold {
            self.ready = false;
        }
        before != self.ready
    }

    /// How long a readiness probe waits before its next try: the node's fast `interval` until
    /// the container is ready and after any failure (pods get Ready quickly, and go unready
    /// within one period plus the failure threshold's fast retries), the spec's `period` while
    /// it is ready and passing, as a kubelet probes. Probing every pod at the fast interval
    /// forever cost 10 HTTP requests a second per idle pod: at 1,000 session pods, 10,000 a
    /// second, more CPU than the sessions themselves (the fleet bench's idle phase).
    pub fn next_readiness_probe(
        &self,
        last_ok: bool,
        interval: Duration,
        period: Duration,
    ) -> Duration {
        if self.ready && last_ok {
            period.max(interval)
        } else {
            interval
        }
    }
}

/// `true` for an HTTP status a probe counts as success (200–399).
pub fn probe_status_ok(status: u16) -> bool {
    (200..400).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A plan with Kubernetes' other defaults and a target no test here runs.
    fn plan(period_secs: u64, failure_threshold: u32) -> ProbePlan {
        ProbePlan {
            target: ProbeTarget::Unsupported(String::new()),
            period: Duration::from_secs(period_secs),
            initial_delay: Duration::ZERO,
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold,
        }
    }

    #[test]
    fn a_startup_probe_gives_up_after_its_failure_threshold_in_periods() {
        let plan = plan(1, 600);
        assert!(!startup_gave_up(Duration::from_secs(599), &plan));
        assert!(startup_gave_up(Duration::from_secs(600), &plan));
    }

    #[test]
    fn ready_and_passing_containers_are_probed_at_their_period() {
        let plan = ProbePlan {
            target: ProbeTarget::Tcp {
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: 1,
            },
            ..plan(5, 3)
        };
        let fast = Duration::from_millis(100);
        let mut r = Readiness::default();
        assert_eq!(r.next_readiness_probe(false, fast, plan.period), fast);
        r.record(&plan, true);
        assert_eq!(r.next_readiness_probe(true, fast, plan.period), plan.period);
        // A failure below the threshold: still ready, but the next tries are fast.
        r.record(&plan, false);
        assert!(r.ready);
        assert_eq!(r.next_readiness_probe(false, fast, plan.period), fast);
        // A period shorter than the node's interval never probes faster than the node.
        assert_eq!(
            r.next_readiness_probe(true, fast, Duration::from_millis(10)),
            fast
        );
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 137));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 137));
    }

    #[test]
    fn backoff_restarts_at_once_then_doubles_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(10),
        };
        let ms = |n| b.delay(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(40)],
            [0, 100, 200, 400, 800, 1000]
        );
    }

    #[test]
    fn grace_periods() {
        let pod = |v: serde_json::Value| serde_json::from_value::<Pod>(v).expect("a pod");
        assert_eq!(grace_period(&pod(json!({}))), Duration::from_secs(30));
        let spec = json!({ "metadata": {}, "spec": { "containers": [], "terminationGracePeriodSeconds": 7 } });
        assert_eq!(grace_period(&pod(spec)), Duration::from_secs(7));
        let deleting = json!({ "metadata": { "deletionGracePeriodSeconds": 2 }, "spec": { "containers": [], "terminationGracePeriodSeconds": 7 } });
        assert_eq!(grace_period(&pod(deleting)), Duration::from_secs(2));
    }

    #[test]
    fn addresses_stay_in_the_block_and_skip_0_and_255() {
        assert_eq!(pod_address(77, 0), Some(Ipv4Addr::new(127, 77, 0, 1)));
        assert_eq!(pod_address(77, 253), Some(Ipv4Addr::new(127, 77, 0, 254)));
        assert_eq!(pod_address(77, 254), Some(Ipv4Addr::new(127, 77, 1, 1)));
        assert_eq!(
            pod_address(77, 255 * 254 + 253),
            Some(Ipv4Addr::new(127, 77, 255, 254))
        );
        assert_eq!(pod_address(77, 256 * 254), None);
    }

    /// The operator's readiness probe: `/readyz` on the admin port (resources.rs).
    #[test]
    fn readiness_probes_resolve_ports_and_defaults() {
        let ip = Ipv4Addr::new(127, 77, 0, 2);
        let c: Container = serde_json::from_value(json!({
            "name": "session",
            "ports": [{ "name": "admin", "containerPort": 9090 }],
            "readinessProbe": { "httpGet": { "path": "/readyz", "port": 9090 }, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3 }
        }))
        .expect("a container");
        let plan = readiness_probe(&c, ip).expect("a probe");
        assert_eq!(
            plan.target,
            ProbeTarget::Http {
                host: ip.to_string(),
                port: 9090,
                path: "/readyz".into()
            }
        );
        assert_eq!(
            (
                plan.period,
                plan.timeout,
                plan.success_threshold,
                plan.failure_threshold
            ),
            (Duration::from_secs(5), Duration::from_secs(2), 1, 3)
        );

        let named: Container = serde_json::from_value(json!({
            "name": "c", "ports": [{ "name": "admin", "containerPort": 9090 }],
            "readinessProbe": { "tcpSocket": { "port": "admin" } }
        }))
        .expect("a container");
        let plan = readiness_probe(&named, ip).expect("a probe");
        assert_eq!(
            plan.target,
            ProbeTarget::Tcp {
                host: ip.to_string(),
                port: 9090
            }
        );
        assert_eq!(plan.timeout, Duration::from_secs(1));

        let exec: Container = serde_json::from_value(json!({
            "name": "c", "readinessProbe": { "exec": { "command": ["true"] } },
            "livenessProbe": { "tcpSocket": { "port": 6379 }, "failureThreshold": 1 }
        }))
        .expect("a container");
        assert_eq!(
            readiness_probe(&exec, ip).map(|p| p.target),
            Some(ProbeTarget::Exec(vec!["true".into()]))
        );
        let live = liveness_probe(&exec, ip).expect("a liveness probe");
        assert_eq!(live.failure_threshold, 1);
        assert_eq!(live.period, Duration::from_secs(10), "the default period");
        assert_eq!(
            live.target,
            ProbeTarget::Tcp {
                host: ip.to_string(),
                port: 6379
            }
        );
        assert_eq!(readiness_probe(&Container::default(), ip), None);
        assert_eq!(liveness_probe(&Container::default(), ip), None);
    }

    #[test]
    fn readiness_needs_thresholds_in_a_row() {
        let plan = plan(10, 3);
        let mut r = Readiness::default();
        assert!(!r.record(&plan, false));
        assert!(r.record(&plan, true) && r.ready);
        assert!(!r.record(&plan, false));
        assert!(!r.record(&plan, false));
        assert!(
            !r.record(&plan, true),
            "a success in between resets the failures"
        );
        assert!(!r.record(&plan, false) && !r.record(&plan, false));
        assert!(r.record(&plan, false) && !r.ready);
        let mut live = Readiness::alive();
        assert!(!live.record(&plan, false) && !live.record(&plan, false));
        assert!(
            live.record(&plan, false) && !live.ready,
            "dead after 3 failures"
        );
        assert!(probe_status_ok(200) && probe_status_ok(302) && !probe_status_ok(503));
    }
}
