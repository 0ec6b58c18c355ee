//! A private `redis-server` for one test binary, on a free loopback port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{Supervised, scratch_dir};

/// A running `redis-server`: no persistence, bound to 127.0.0.1, stopped (and its directory
/// removed) when the test binary exits.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    _proc: Supervised,
}

impl RedisServer {
    /// Starts `redis-server` (env `WASP_REDIS_SERVER`, else from `PATH`) in a fresh scratch
    /// directory (its log is `redis.log` there; deleted when the test binary exits) and waits until
    /// it answers PING.
    pub fn start() -> anyhow::Result<Self> {
        // The port is found by binding port 0 and released before redis binds it; should another
        // process take it in between, redis exits with "Address already in use" and we try again.
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let dir = scratch_dir(&format!("wasp-e2e-redis-{port}"))?;
            let proc = spawn_server(port, &dir)?;
            match wait_for_pong(&proc, port, Duration::from_secs(20)) {
                Ok(()) => {
                    return Ok(Self {
                        port,
                        dir,
                        _proc: proc,
                    });
                }
                Err(e) => last_err = Some(e),
            }
            if !proc.log_tail(20).contains("already in use") {
                break;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// Kills the server (SIGKILL) and starts a new one on the same port: a new run id and,
    /// without persistence, none of the old keys or ACL users (a Redis restart without AOF).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-9", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self._proc.exited().is_none() {
            if Instant::now() > deadline {
                bail!("redis-server {pid} did not die");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The port is ours until another process takes it; retry while it is still closing.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let proc = spawn_server(self.port, &self.dir)?;
            match wait_for_pong(&proc, self.port, Duration::from_secs(10)) {
                Ok(()) => {
                    self._proc = proc;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Its working directory (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (to kill it in a test).
    pub fn pid(&self) -> u32 {
        self._proc.pid()
    }

    /// `redis://127.0.0.1:<port>` (database 0).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// `redis-server` (env `WASP_REDIS_SERVER`, else from `PATH`) on `port`, working in `dir`.
fn spawn_server(port: u16, dir: &Path) -> anyhow::Result<Supervised> {
    let bin = std::env::var("WASP_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut cmd = Command::new(&bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir);
    Supervised::spawn("redis-server", cmd, &dir.join("redis.log"), Some(dir))
        .context("is redis-server installed? (scripts/install-deps.sh)")
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls (synchronously: this runs before any test's runtime matters) until redis answers PING.
fn wait_for_pong(proc: &Supervised, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "redis-server exited ({status}) on port {port}:\n{}",
                proc.log_tail(20)
            );
        }
        if ping(addr).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "redis-server on port {port} did not answer PING within {timeout:?}:\n{}",
                proc.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    Ok(&buf == b"+PONG\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_free_port_and_answers_ping() -> anyhow::Result<()> {
        let a = RedisServer::start()?;
        let b = RedisServer::start()?;
        assert_ne!(a.port(), b.port());
        assert!(ping(SocketAddr::from((Ipv4Addr::LOCALHOST, a.port())))?);
        assert!(a.dir().join("redis.log").exists());
        assert!(a.url().starts_with("redis://127.0.0.1:"));
        Ok(())
    }
}
