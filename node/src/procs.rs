//! Child processes that die with their parent: the test binary's (Redis, the cluster's helpers),
//! and the node's pod processes (a `wasp-node` or test that dies takes its pods with it).
//!
//! Rust runs no destructors for statics, and a test binary may also be killed outright, so cleanup
//! cannot live in `Drop`. Instead every long-running child gets a watchdog: a small `bash` whose
//! stdin is a pipe from this process. This process is the pipe's only writer, so the kernel closes
//! it when this process ends, however it ends; the watchdog then reads EOF and stops the child.
//! No PID polling, no `unsafe` (`prctl(PR_SET_PDEATHSIG)` would need `pre_exec`).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use anyhow::Context;

/// What the watchdog runs once this process is gone: TERM, up to 5 s grace, KILL, then remove the
/// child's scratch directory (if any). A line `disarm` on the pipe instead stands it down: the
/// child has already exited and been reaped (its PID may be reused), see [`Watchdog::disarm`].
/// (A zombie counts as gone: its new parent may take a while to reap it.)
const WATCHDOG: &str = r#"
line=
read -r line || true
if [ "$line" = disarm ]; then exit 0; fi
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat")" != Z ]; }
kill -TERM "$1" 2>/dev/null || true
for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
kill -KILL "$1" 2>/dev/null || true
if [ -n "$2" ]; then rm -rf -- "$2"; fi
"#;

/// A child process stopped (and its scratch directory removed) when the test binary exits.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    log: PathBuf,
    child: Mutex<Child>,
    _watchdog: Watchdog,
}

impl Supervised {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr appended to `log`, plus its
    /// watchdog. `scratch`, if given, is deleted by the watchdog after the child has stopped.
    ///
    /// Both run in their own process groups, so a Ctrl-C in the terminal (SIGINT to the foreground
    /// group) ends only the test binary, and the watchdog then stops the child in order.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        scratch: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let watchdog = Watchdog::spawn(name, child.id(), scratch)?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Mutex::new(child),
            _watchdog: watchdog,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// The last `lines` lines of the child's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops a process (by PID) when the test binary ends, however it ends: a small `bash` that waits
/// for EOF on a pipe only this process holds open, then sends TERM, waits up to 5 s, sends KILL,
/// and removes `scratch` (if given). For children spawned some other way than [`Supervised`] (the
/// local node's `tokio::process` children).
#[derive(Debug)]
pub struct Watchdog {
    // Held, written only by `disarm`: closing it (at process exit) is the watchdog's signal.
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog of process `pid`; `name` only labels it (`<name>-watchdog` in `ps`).
    pub fn spawn(name: &str, pid: u32, scratch: Option<&Path>) -> anyhow::Result<Self> {
        let scratch = scratch
            .map(|p| p.as_os_str().to_owned())
            .unwrap_or_default();
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("{name}-watchdog"))
            .arg(pid.to_string())
            .arg(&scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the watchdog of {name}"))?;
        let pipe = watchdog.stdin.take().context("watchdog stdin")?;
        // The watchdog outlives us by design; forgetting its handle is fine (init reaps it).
        drop(watchdog);
        Ok(Self { pipe: Some(pipe) })
    }

    /// Stands the watchdog down without signalling anything: call it once the process has been
    /// reaped, so that a later reuse of its PID is never signalled.
    pub fn disarm(mut self) {
        use std::io::Write as _;
        if let Some(mut pipe) = self.pipe.take() {
            // A watchdog that is already gone needs no disarming.
            let _ = pipe.write_all(b"disarm\n");
        }
    }
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh, empty directory under the system temp dir, unique per process and call.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
