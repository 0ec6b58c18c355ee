//! What the benchmarks read from `/proc`: a process's memory (`smaps_rollup` for PSS, `status`
//! for RSS and RssAnon), its CPU time and parent (`stat`), the machine's CPU time and load
//! average. Parsers are pure (unit-tested below); the readers around them return `None` for a
//! process that is gone.

use std::collections::BTreeMap;
use std::path::Path;

/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture wasp runs on
/// (the kernel's ABI fixes it; `sysconf(_SC_CLK_TCK)` answers 100).
pub const TICKS_PER_SECOND: u64 = 100;

/// Every `Name:  <n> kB` line of a `/proc` file (`status`, `smaps_rollup`), in KiB. Lines
/// without a number (the header of `smaps_rollup`, `Name:` in `status`) are left out.
pub fn kib_fields(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((k.trim().to_owned(), v))
        })
        .collect()
}

/// One process's memory, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set (`VmRSS`): counts shared pages (the binary's text) once per process.
    pub rss: u64,
    /// Proportional set size (`Pss` of `smaps_rollup`): shared pages split among the sharers,
    /// so the PSS of all processes adds up to what they really use.
    pub pss: u64,
    /// Private anonymous memory (`RssAnon`): heap, stacks, the binary's written data.
    pub anon: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, o: Self) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.anon += o.anon;
    }
}

impl Memory {
    /// From the text of `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup`.
    pub fn parse(status: &str, rollup: &str) -> Self {
        let status = kib_fields(status);
        let rollup = kib_fields(rollup);
        Self {
            rss: status.get("VmRSS").copied().unwrap_or(0),
            pss: rollup.get("Pss").copied().unwrap_or(0),
            anon: status.get("RssAnon").copied().unwrap_or(0),
        }
    }

    /// Of process `pid`, `None` once it is gone (or not ours to read).
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        Some(Self::parse(&status, &rollup))
    }

    /// Summed over `pids` (gone ones count nothing); also how many were read.
    pub fn sum(pids: impl IntoIterator<Item = u32>) -> (Self, usize) {
        let mut total = Self::default();
        let mut n = 0;
        for m in pids.into_iter().filter_map(Self::of) {
            total += m;
            n += 1;
        }
        (total, n)
    }
}

/// The fields of `/proc/<pid>/stat` the benchmarks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    /// The executable's name, at most 15 bytes (`wasp-session-po`).
    pub comm: String,
    pub ppid: u32,
    /// User + system CPU time, in [`TICKS_PER_SECOND`].
    pub ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The name is in parentheses and may hold spaces and `)`, so the
/// fields are counted from the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the name: state(3) ppid(4) … utime(14) stime(15), numbered as in proc(5).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(PidStat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)?,
    })
}

pub fn pid_stat(pid: u32) -> Option<PidStat> {
    parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process that descends from `root` (children, theirs, …), not `root` itself, from
/// (pid, ppid) pairs.
pub fn descendants_in(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Every live process on the machine with its `stat`.
pub fn all_processes() -> Vec<(u32, PidStat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, pid_stat(pid)?)))
        .collect()
}

/// The descendants of `root` now, with their `stat`.
pub fn descendants(root: u32) -> Vec<(u32, PidStat)> {
    let all = all_processes();
    let parents: Vec<(u32, u32)> = all.iter().map(|(p, s)| (*p, s.ppid)).collect();
    let mine = descendants_in(root, &parents);
    all.into_iter().filter(|(p, _)| mine.contains(p)).collect()
}

/// The PIDs in a directory of `<name>.pid` files (the local cluster's `pids/`: etcd,
/// kube-apiserver, kube-controller-manager), by name, live ones only.
pub fn pid_files(dir: &Path) -> BTreeMap<String, u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_owned();
            let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Path::new(&format!("/proc/{pid}"))
                .exists()
                .then_some((name, pid))
        })
        .collect()
}

/// The machine's CPU time: busy and total, in ticks summed over every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// The aggregate `cpu` line of `/proc/stat` (user nice system idle iowait irq softirq steal …;
/// guest time is already in user). Idle and iowait are not busy.
pub fn parse_cpu_line(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

pub fn machine_cpu() -> Option<CpuTimes> {
    parse_cpu_line(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Busy CPU between two readings over `secs` seconds, in percent of one core (200 % = both
/// cores of a 2-core machine busy).
pub fn percent_of_a_core(busy_ticks: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    busy_ticks as f64 / TICKS_PER_SECOND as f64 / secs * 100.0
}

/// The 1, 5 and 15 minute load averages as `/proc/loadavg` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\twasp-session-po\nUmask:\t0022\nVmHWM:\t   12000 kB\nVmRSS:\t   11000 kB\nRssAnon:\t    1400 kB\nRssFile:\t    9600 kB\nThreads:\t1\n";
    const ROLLUP: &str = "55d0c0a00000-7ffc1b5ff000 ---p 00000000 00:00 0                          [rollup]\nRss:               11000 kB\nPss:                2100 kB\nPss_Anon:           1400 kB\nAnonymous:          1400 kB\n";

    #[test]
    fn memory_comes_from_status_and_the_rollup() {
        assert_eq!(
            Memory::parse(STATUS, ROLLUP),
            Memory {
                rss: 11000,
                pss: 2100,
                anon: 1400
            }
        );
        let f = kib_fields(ROLLUP);
        assert_eq!(f.get("Pss_Anon"), Some(&1400));
        assert!(!f.keys().any(|k| k.contains("rollup")));
        let mut m = Memory::parse(STATUS, ROLLUP);
        m += Memory::parse(STATUS, ROLLUP);
        assert_eq!(m.pss, 4200);
    }

    #[test]
    fn pid_stat_counts_fields_after_the_last_parenthesis() {
        let s = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 900 0 0 0 25 7 0 0 20 0 1 0 1234 0 0";
        assert_eq!(
            parse_pid_stat(s),
            Some(PidStat {
                comm: "a (weird) name".into(),
                ppid: 17,
                ticks: 32
            })
        );
        assert_eq!(parse_pid_stat("garbage"), None);
    }

    #[test]
    fn descendants_follow_the_tree_only() {
        let parents = [(2, 1), (3, 2), (4, 3), (5, 9), (6, 1), (1, 0)];
        assert_eq!(descendants_in(1, &parents), vec![2, 3, 4, 6]);
        assert_eq!(descendants_in(3, &parents), vec![4]);
        assert!(descendants_in(4, &parents).is_empty());
    }

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(
            parse_cpu_line(stat),
            Some(CpuTimes {
                busy: 160,
                total: 1180
            })
        );
        assert_eq!(parse_cpu_line("intr 1\n"), None);
        // 30 ticks in 10 s: 3 % of one core.
        assert!((percent_of_a_core(30, 10.0) - 3.0).abs() < 1e-9);
        assert_eq!(percent_of_a_core(30, 0.0), 0.0);
    }
}
