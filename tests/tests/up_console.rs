//! The user's first path (issue 10's acceptance): `scripts/up --no-build` brings up the local
//! control plane, the chart on wasp-node and wasp-sim; the console URL it prints (with
//! `#token=`) shows the example session's QR code in headless Chromium; the scan command it
//! prints makes the simulated phone scan it and the console turns to "connected"; the `say`
//! command it prints makes a message appear; the stop command it prints (with `--rm`) leaves no
//! process behind. Each printed command runs as printed, from the repository, with nothing of the
//! test's environment but what a user's shell has: so what the script prints must be enough.
//!
//! The system is private to this test: its own state directory (`WASP_LOCAL_DIR` in a scratch
//! directory), free simulator ports (`WASP_SIM_PORT`, `WASP_SIM_CONTROL_PORT`), the control
//! plane on free ports (kube-up.sh), and this build's binaries (`CARGO_TARGET_DIR` set to the
//! target directory holding this test). A developer's own `.wasp-local` system can run beside it.
//! Screenshots land in `target/test-artifacts/up-console/` (the paths are printed).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;
use tokio::process::Command;
use wasp_e2e::browser::Browser;
use wasp_e2e::procs::{log_tail, scratch_dir};
use wasp_e2e::redis_server::free_port;
use wasp_e2e::{bins, eventually};

/// scripts/up on a warm machine: the control plane, the chart, the pods, the QR (≈ 20 s here).
const UP_LIMIT: Duration = Duration::from_secs(300);
const SIM_LIMIT: Duration = Duration::from_secs(120);
const DOWN_LIMIT: Duration = Duration::from_secs(90);
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// What scripts/up's `launch` and wasp-node run, and scripts/down must stop.
const EXPECTED_PROCESSES: &[&str] = &[
    "wasp-node",
    "wasp-sim",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "wasp-operator",
    "wasp-api",
    "wasp-session-pod",
    "redis-server",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The cargo target directory of this build, where scripts/up looks (`$target/debug/<bin>`,
/// through `cargo metadata`): the test executable is `<target>/debug/deps/up_console-<hash>`.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .ancestors()
        .nth(2)
        .context("locating the profile directory")?;
    ensure!(
        profile.file_name().is_some_and(|n| n == "debug"),
        "scripts/up runs the debug binaries (`$target/debug`), but this test runs from {}: run \
         it in the dev profile",
        exe.display()
    );
    Ok(profile
        .parent()
        .context("locating the target directory")?
        .to_owned())
}

/// One private scripts/up system.
struct Up {
    repo: PathBuf,
    scratch: PathBuf,
    state: PathBuf,
    target: PathBuf,
    sim_port: u16,
    sim_control_port: u16,
}

/// A finished command: its output and how long it took.
struct Ran {
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Up {
    fn new() -> Result<Self> {
        let target = target_dir()?;
        // The binaries scripts/up --no-build runs (it would refuse too, less helpfully).
        for name in [
            "wasp-node",
            "wasp-sim",
            "wasp-operator",
            "wasp-api",
            bins::SESSION_POD,
        ] {
            let bin = target.join("debug").join(name);
            ensure!(
                bin.is_file(),
                "{} is missing: `cargo test --workspace` (scripts/test) builds every binary \
                 before the tests run",
                bin.display()
            );
        }
        let scratch = scratch_dir("wasp-up-console")?;
        let sim_port = free_port()?;
        let mut sim_control_port = free_port()?;
        while sim_control_port == sim_port {
            sim_control_port = free_port()?;
        }
        Ok(Self {
            repo: repo(),
            state: scratch.join("state"),
            scratch,
            target,
            sim_port,
            sim_control_port,
        })
    }

    /// `bash -c LINE` in the repository, as a user types it into a shell there: none of this
    /// system's settings in the environment (a printed command has to carry them itself).
    fn shell(&self, line: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(line)
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for var in [
            "WASP_LOCAL_DIR",
            "WASP_SIM_PORT",
            "WASP_SIM_CONTROL_PORT",
            "WASP_API_URL",
            "KUBECONFIG",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `scripts/up --no-build` with this system's state directory, ports and target directory.
    fn up_command(&self) -> Command {
        let mut cmd = self.shell("scripts/up --no-build");
        cmd.env("WASP_LOCAL_DIR", &self.state)
            .env("WASP_SIM_PORT", self.sim_port.to_string())
            .env("WASP_SIM_CONTROL_PORT", self.sim_control_port.to_string())
            .env("CARGO_TARGET_DIR", &self.target);
        cmd
    }

    /// Runs `cmd` to its end within `limit`, in a process group of its own (on a timeout the
    /// whole group gets SIGTERM: scripts/up's kube-up.sh too, not only its `bash`); fails on a
    /// non-zero exit, with its output. `watchdog`, if given, learns the group while it runs.
    async fn run(
        &self,
        what: &str,
        mut cmd: Command,
        limit: Duration,
        watchdog: Option<&mut DownOnExit>,
    ) -> Result<Ran> {
        let t0 = Instant::now();
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("running {what}"))?;
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?));
        let mut watchdog = watchdog;
        if let (Some(w), Some(g)) = (watchdog.as_deref_mut(), group) {
            w.tell(&format!("group {}", g.as_raw_nonzero()));
        }
        let out = tokio::time::timeout(limit, child.wait_with_output()).await;
        if let Some(w) = watchdog {
            w.tell("group-done");
        }
        let out = match out {
            Ok(out) => out.with_context(|| format!("running {what}"))?,
            Err(_) => {
                if let Some(g) = group {
                    let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
                }
                bail!("{what} did not end within {limit:?}");
            }
        };
        let ran = Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: t0.elapsed(),
        };
        println!(
            "--- {what} ({:.1?}, {}) ---\n{}{}",
            ran.took, out.status, ran.stderr, ran.stdout
        );
        ensure!(out.status.success(), "{what} failed: {}", out.status);
        Ok(ran)
    }

    /// The logs a failure needs: scripts/up's (`logs/`), every pod's (`node/logs/`) and the
    /// control plane's (`kube/logs/`), the end of each.
    fn print_logs(&self) {
        for dir in ["logs", "node/logs", "kube/logs"] {
            let Ok(entries) = std::fs::read_dir(self.state.join(dir)) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                println!(
                    "--- {} (last 40 lines) ---\n{}",
                    f.display(),
                    log_tail(&f, 40)
                );
            }
        }
    }
}

/// Stops the system (`scripts/down`, keeping the state for a look) if the test binary ends
/// before the test did, however it ends: a `bash` that waits for EOF on a pipe only this
/// process holds, like the harness's watchdogs (`wasp_e2e::procs`). The system's processes run
/// in sessions of their own (scripts/up's `setsid`), so nothing else would stop them. A
/// scripts/up still running then is stopped first (its process group, told as `group PID`), so
/// it cannot start anything after scripts/down.
struct DownOnExit {
    pipe: Option<ChildStdin>,
    pid: u32,
}

const DOWN_ON_EXIT: &str = r#"
group=
while read -r line; do
  case $line in
    disarm) exit 0 ;;
    group-done) group= ;;
    "group "*) group=${line#group } ;;
  esac
done
if [ -n "$group" ]; then
  kill -TERM -- "-$group" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$group" 2>/dev/null || true
fi
cd "$1" && WASP_LOCAL_DIR="$2" exec bash scripts/down
"#;

impl DownOnExit {
    fn arm(up: &Up) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::File::create(up.scratch.join("down-on-exit.log"))?;
        let mut child: Child = std::process::Command::new("bash")
            .arg("-c")
            .arg(DOWN_ON_EXIT)
            .arg("up-console-watchdog")
            .arg(&up.repo)
            .arg(&up.state)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the watchdog")?;
        let pipe = child.stdin.take().context("watchdog stdin")?;
        let pid = child.id();
        // It outlives us by design (init reaps it).
        drop(child);
        Ok(Self {
            pipe: Some(pipe),
            pid,
        })
    }

    /// One line to the watchdog (one it has gone missing for needs no telling).
    fn tell(&mut self, line: &str) {
        if let Some(pipe) = self.pipe.as_mut() {
            let _ = writeln!(pipe, "{line}");
        }
    }

    /// The test stopped the system itself.
    fn disarm(mut self) {
        self.tell("disarm");
        self.pipe.take();
    }
}

/// What scripts/up printed for its user.
#[derive(Debug)]
struct Printed {
    console: String,
    scan: String,
    say: String,
    down: String,
}

/// The command on a printed line starting with `prefix` (the words before its `#` comment).
fn command_line(out: &str, needle: &str) -> Result<String> {
    out.lines()
        .map(str::trim)
        .find(|l| l.contains(needle))
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_owned())
        .with_context(|| format!("scripts/up printed no line with {needle:?}:\n{out}"))
}

fn parse_printed(out: &str) -> Result<Printed> {
    let console = out
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains("/console#token="))
        .with_context(|| format!("scripts/up printed no console URL with #token=:\n{out}"))?
        .to_owned();
    let down = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Stop everything:"))
        .map(|c| c.trim().to_owned())
        .with_context(|| format!("scripts/up printed no stop command:\n{out}"))?;
    Ok(Printed {
        console,
        scan: command_line(out, "scripts/sim scan")?,
        say: command_line(out, "scripts/sim say")?,
        down,
    })
}

/// A process whose command line, working directory or environment names the state directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    comm: String,
    cmdline: String,
}

/// Every live (not zombie) process but this one and `ignore` (the watchdog) that names `state`
/// in its command line, working directory or environment: what scripts/up started, and the pods
/// wasp-node runs (their working directory and `HOME` are under the node's state directory).
fn processes_of(state: &Path, ignore: u32) -> BTreeSet<Proc> {
    let needle = state.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || pid == ignore {
            continue;
        }
        let dir = e.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let state_char = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if state_char == Some('Z') {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(dir.join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let environ = std::fs::read(dir.join("environ"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if cmdline.contains(&needle) || cwd.contains(&needle) || environ.contains(&needle) {
            let comm = std::fs::read_to_string(dir.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            found.insert(Proc { pid, comm, cmdline });
        }
    }
    found
}

/// Whether process `p` is (an instance of) `name`: its command's file name (redis-server
/// rewrites its command line, keeping that), else its `comm` (cut at 15 characters).
fn is(p: &Proc, name: &str) -> bool {
    let exe = p.cmdline.split_whitespace().next().unwrap_or_default();
    Path::new(exe).file_name().is_some_and(|f| f == name)
        || p.comm == name.chars().take(15).collect::<String>()
}

/// The console's QR image once decoded, and its `src`.
const QR_SHOWN: &str = "(() => { const i = document.querySelector('[data-testid=qr-image]'); \
     return document.body.dataset.state === 'qr' \
     && !document.querySelector('[data-testid=qr]').hidden && i.complete \
     && i.naturalWidth > 0 ? i.getAttribute('src') : null; })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_up_shows_a_qr_that_turns_connected_after_the_printed_scan() -> Result<()> {
    let t0 = Instant::now();
    let up = Up::new()?;
    println!(
        "state directory {}, wasp-sim ports {}/{}, binaries in {}/debug",
        up.state.display(),
        up.sim_port,
        up.sim_control_port,
        up.target.display()
    );
    let mut watchdog = DownOnExit::arm(&up)?;
    let result = scenario(&up, &mut watchdog, t0).await;
    match result {
        Ok(()) => {
            watchdog.disarm();
            std::fs::remove_dir_all(&up.scratch).ok();
            Ok(())
        }
        Err(e) => {
            up.print_logs();
            // Stopped now, not at exit; the state stays for a look.
            let stop = up
                .run(
                    "scripts/down (after the failure)",
                    {
                        let mut c = up.shell("scripts/down");
                        c.env("WASP_LOCAL_DIR", &up.state);
                        c
                    },
                    DOWN_LIMIT,
                    None,
                )
                .await;
            if stop.is_ok() {
                watchdog.disarm();
            }
            println!("state kept in {}", up.state.display());
            Err(e)
        }
    }
}

async fn scenario(up: &Up, watchdog: &mut DownOnExit, t0: Instant) -> Result<()> {
    // 1. scripts/up, read as its user reads it.
    let ran = up
        .run(
            "scripts/up --no-build",
            up.up_command(),
            UP_LIMIT,
            Some(watchdog),
        )
        .await?;
    let watchdog = watchdog.pid;
    let took_up = ran.took;
    let printed = parse_printed(&ran.stdout)?;
    println!("{printed:#?}");
    let state = up.state.to_string_lossy();
    for cmd in [&printed.scan, &printed.say, &printed.down] {
        ensure!(
            cmd.contains(&*state),
            "the printed command {cmd:?} does not name the state directory {state}: a user's \
             shell would reach another system"
        );
    }

    // Everything runs, and the probe below sees it (so "none left" at the end means something).
    let running = processes_of(&up.state, watchdog);
    for name in EXPECTED_PROCESSES {
        ensure!(
            running.iter().any(|p| is(p, name)),
            "no {name} among the processes of {state}: {running:#?}"
        );
    }

    // 2. The console URL shows the QR code.
    let t_page = Instant::now();
    let browser = Browser::start().await?;
    browser.open(&printed.console).await?;
    let src = browser
        .wait_until(PAGE_WAIT, "the console's QR code", QR_SHOWN)
        .await?;
    ensure!(
        src.as_str()
            .is_some_and(|s| s.starts_with("data:image/png;base64,")),
        "QR image src {src}"
    );
    ensure!(
        browser.eval("location.hash").await? == json!(""),
        "the token stayed in the address bar"
    );
    let took_qr = t_page.elapsed();
    browser.screenshot("up-console/qr").await?;

    // 3. The printed scan command; the console turns connected, with the scanning phone.
    let scan = up
        .run(
            "the printed scan command",
            up.shell(&printed.scan),
            SIM_LIMIT,
            None,
        )
        .await?;
    let phone = scan
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("connected as +"))
        .and_then(|r| r.split_whitespace().next())
        .with_context(|| format!("the scan did not say `connected as +…`:\n{}", scan.stdout))?
        .to_owned();
    let t_connected = Instant::now();
    browser
        .wait_until(
            PAGE_WAIT,
            "the connected state",
            "document.body.dataset.state === 'connected'",
        )
        .await?;
    browser
        .wait_for_text(PAGE_WAIT, "[data-testid=connected]", &format!("+{phone}"))
        .await?;
    ensure!(
        browser
            .eval("document.querySelector('[data-testid=qr]').hidden")
            .await?
            == json!(true),
        "the QR code is still shown once connected"
    );
    let took_connected = t_connected.elapsed();
    browser.screenshot("up-console/connected").await?;

    // 4. The printed say command; its message appears in the console.
    let say = up
        .run(
            "the printed say command",
            up.shell(&printed.say),
            SIM_LIMIT,
            None,
        )
        .await?;
    let text = printed
        .say
        .rsplit_once("say ")
        .map(|(_, t)| t.trim().trim_matches('"').to_owned())
        .context("the say command's text")?;
    let t_message = Instant::now();
    browser.wait_for_text(PAGE_WAIT, "#messages", &text).await?;
    let took_message = t_message.elapsed();
    browser.screenshot("up-console/message").await?;
    browser.close().await?;

    // 5. The printed stop command, with --rm: nothing of this system is left.
    let down = up
        .run(
            "the printed stop command --rm",
            up.shell(&format!("{} --rm", printed.down)),
            DOWN_LIMIT,
            None,
        )
        .await?;
    // Processes that ended may take a moment to leave /proc (their watchdogs exit after them).
    let left = eventually(Duration::from_secs(5), || async {
        processes_of(&up.state, watchdog).is_empty().then_some(())
    })
    .await;
    if left.is_err() {
        bail!(
            "processes of {state} left after scripts/down: {:#?}",
            processes_of(&up.state, watchdog)
        );
    }
    ensure!(
        !up.state.exists(),
        "scripts/down --rm left {}",
        up.state.display()
    );

    println!(
        "up-console timings: scripts/up {took_up:.1?}; console shows the QR {took_qr:.1?} after \
         opening (with Chromium's start); scan command {:.1?}, then connected in the console \
         {took_connected:.1?}; say command {:.1?}, then the message in the console \
         {took_message:.1?}; scripts/down --rm {:.1?}; total {:.1?}",
        scan.took,
        say.took,
        down.took,
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn printed_commands_are_read_as_a_user_reads_them() -> Result<()> {
    let out = "\nwasp is up (state and logs in /s; the session is qr).\n\n  console            \
               http://127.42.0.2/console#token=a.b.c\n                     (the example user's \
               token)\n  WASP_LOCAL_DIR=/s scripts/sim scan          # the simulated phone scans\n  \
               WASP_LOCAL_DIR=/s scripts/sim say \"hello\"   # a contact writes\n\nStop \
               everything: WASP_LOCAL_DIR=/s scripts/down\n";
    let p = parse_printed(out)?;
    assert_eq!(p.console, "http://127.42.0.2/console#token=a.b.c");
    assert_eq!(p.scan, "WASP_LOCAL_DIR=/s scripts/sim scan");
    assert_eq!(p.say, "WASP_LOCAL_DIR=/s scripts/sim say \"hello\"");
    assert_eq!(p.down, "WASP_LOCAL_DIR=/s scripts/down");
    assert!(parse_printed("wasp is up\n  scripts/sim scan\n").is_err());
    Ok(())
}
