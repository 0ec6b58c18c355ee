//! A headless Chromium driven over WebDriver, for tests of pages (the API's `/console`).
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port (supervised like every
//! child of the harness: stopped, with the Chromium it started, when the test binary exits) and
//! opens a session with a fresh profile and the flags that keep Chromium quiet on a machine
//! without internet. Waits poll a JavaScript expression with a deadline, never sleep; screenshots
//! are test artefacts under `target/test-artifacts/` ([`artifacts_dir`]).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let browser = wasp_e2e::browser::Browser::start().await?;
//! browser.open("http://127.0.0.1:3001/console").await?;
//! browser
//!     .wait_until(Duration::from_secs(10), "the page to load", "document.readyState === 'complete'")
//!     .await?;
//! let png = browser.screenshot("console/loaded").await?;
//! # let _ = png;
//! browser.close().await
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// The WebDriver client crate, for callers of [`Browser::client`].
pub use fantoccini;

use crate::procs::{Supervised, scratch_dir};
use crate::redis_server::free_port;
use crate::wait::eventually;

/// Chromium's flags: headless, no sandbox (tests run as root in containers), and nothing that
/// phones home (there is no internet here; these keep the log free of failed fetches).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,900",
];

/// How long `chromedriver` may take to listen, and Chromium to open a session.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Runs the driver (`$0 $@`). On SIGTERM, which the harness's watchdog sends when the test binary
/// is gone, it stops its whole process group (the driver and the Chromium it started) and
/// returns only once the others in the group have exited (at most 5 s, then KILL), so the
/// watchdog removes the profile after Chromium stopped writing to it. Shell builtins only.
const DRIVER_WRAPPER: &str = r#"
others() {
  local s line f
  for s in /proc/[0-9]*/stat; do
    [ "$s" = "/proc/$$/stat" ] && continue
    read -r line 2>/dev/null < "$s" || continue
    f=(${line##*) })
    [ "${f[2]}" = "$$" ] && [ "${f[0]}" != Z ] && return 0
  done
  return 1
}
stop() {
  trap '' TERM
  kill -TERM 0
  for ((i = 0; i < 50; i++)); do others || exit 0; sleep 0.1; done
  kill -KILL 0
}
trap stop TERM
"$0" "$@" &
wait $!
"#;

/// One Chromium session behind its own `chromedriver`.
pub struct Browser {
    client: Client,
    driver: Supervised,
    profile: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts `chromedriver` (env `WASP_CHROMEDRIVER`, else from `PATH`) and a headless Chromium
    /// session (binary from env `WASP_CHROMIUM`, else the driver's default, Debian's
    /// `/usr/bin/chromium`) with a fresh `--user-data-dir`. The driver's log and the profile live
    /// in a scratch directory removed when the test binary exits.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("WASP_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let dir = scratch_dir("wasp-e2e-chromium")?;
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile)?;
        let log = dir.join("chromedriver.log");
        // The port is free when found and taken by the driver a moment later; should another
        // process win the race, the driver exits and we try another port.
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(DRIVER_WRAPPER)
                .arg(&bin)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!(
                    "--log-path={}",
                    dir.join("chromedriver-verbose.log").display()
                ));
            let driver = Supervised::spawn("chromedriver", cmd, &log, Some(&dir))
                .context("is chromedriver installed? (scripts/install-deps.sh)")?;
            match Self::session(&driver, port, &profile).await {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        driver,
                        profile,
                    });
                }
                Err(e) => last_err = Some(e),
            }
            if driver.exited().is_none() {
                break;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    async fn session(driver: &Supervised, port: u16, profile: &Path) -> anyhow::Result<Client> {
        let url = format!("http://127.0.0.1:{port}");
        eventually(START_LIMIT, || async {
            if driver.exited().is_some() {
                // Stop waiting; the check below reports it.
                return Some(());
            }
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await
        .with_context(|| {
            format!(
                "chromedriver did not listen on {port}:\n{}",
                driver.log_tail(20)
            )
        })?;
        if let Some(status) = driver.exited() {
            bail!(
                "chromedriver exited ({status}) on port {port}:\n{}",
                driver.log_tail(20)
            );
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut options = json!({ "args": args });
        if let Ok(binary) = std::env::var("WASP_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        // Plain HTTP: the driver listens on loopback only, so no TLS stack is needed (and
        // fantoccini's rustls feature would bring a second rustls crypto provider into the
        // workspace's test builds).
        let client = tokio::time::timeout(
            START_LIMIT,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url),
        )
        .await
        .context("Chromium did not open a session in time")?
        .with_context(|| {
            format!(
                "opening a Chromium session through chromedriver:\n{}",
                driver.log_tail(20)
            )
        })?;
        Ok(client)
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the load event.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// Clicks the first element matching the CSS `selector`, as a user would.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        self.client
            .find(fantoccini::Locator::Css(selector))
            .await
            .with_context(|| format!("finding {selector}"))?
            .click()
            .await
            .with_context(|| format!("clicking {selector}"))
    }

    /// Types `text` into the first element matching the CSS `selector`, as a user would.
    pub async fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        self.client
            .find(fantoccini::Locator::Css(selector))
            .await
            .with_context(|| format!("finding {selector}"))?
            .send_keys(text)
            .await
            .with_context(|| format!("typing into {selector}"))
    }

    /// The value of the JavaScript expression `js` in the page (JSON; `null` for `undefined`).
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        self.client
            .execute(&format!("return ({js});"), Vec::new())
            .await
            .with_context(|| format!("evaluating `{js}`"))
    }

    /// Polls the JavaScript expression `js` until it is truthy and returns that value. Gives up
    /// after `limit`, with the last value and the page's visible text in the error. `what` names
    /// the wait in that error.
    pub async fn wait_until(&self, limit: Duration, what: &str, js: &str) -> anyhow::Result<Value> {
        let last = Mutex::new(Value::Null);
        let found = eventually(limit, || async {
            let v = self.eval(js).await.ok()?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return Some(v);
            }
            *last.lock().unwrap_or_else(|e| e.into_inner()) = v;
            None
        })
        .await;
        match found {
            Ok(v) => Ok(v),
            Err(timed_out) => {
                let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
                let page = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                bail!(
                    "waiting for {what} (`{js}`): {timed_out}; last value {last}; the page shows:\n{}",
                    page.trim()
                )
            }
        }
    }

    /// Waits until the first element matching the CSS `selector` has a text containing `needle`,
    /// and returns its whole text.
    pub async fn wait_for_text(
        &self,
        limit: Duration,
        selector: &str,
        needle: &str,
    ) -> anyhow::Result<String> {
        let sel = serde_json::to_string(selector)?;
        let text = self
            .wait_until(
                limit,
                &format!("{selector} to contain {needle:?}"),
                &format!(
                    "(() => {{ const e = document.querySelector({sel}); \
                     const t = e ? e.textContent : ''; \
                     return t.includes({}) ? t : ''; }})()",
                    serde_json::to_string(needle)?
                ),
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// The text of the first element matching `selector` (`None` if there is none).
    pub async fn text(&self, selector: &str) -> anyhow::Result<Option<String>> {
        let sel = serde_json::to_string(selector)?;
        let v = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); return e ? e.textContent : null; }})()"
            ))
            .await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png` ([`artifacts_dir`]; `name` may
    /// contain `/` for subdirectories), prints the path and returns it.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        let path = artifacts_dir()?.join(format!("{name}.png"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Ends the session (Chromium quits). The driver stops with the test binary.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client
            .close()
            .await
            .context("closing the Chromium session")
    }
}

/// `target/test-artifacts`: where tests leave files for humans (screenshots). The target
/// directory is `CARGO_TARGET_DIR` when that is an absolute path, else the one holding the
/// running test executable (the nearest ancestor with cargo's `CACHEDIR.TAG`). Created if
/// missing.
pub fn artifacts_dir() -> anyhow::Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => target_dir_of(&std::env::current_exe().context("locating the test executable")?)
            .context("no cargo target directory above the test executable")?,
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The cargo target directory holding `exe` (`<target>/debug/deps/<test>`): the nearest
/// ancestor with a `CACHEDIR.TAG`, else three levels up.
fn target_dir_of(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.ancestors().nth(3))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_is_found_above_the_test_executable() -> anyhow::Result<()> {
        let root = scratch_dir("wasp-e2e-artifacts")?;
        let deps = root.join("target/debug/deps");
        std::fs::create_dir_all(&deps)?;
        std::fs::write(root.join("target/CACHEDIR.TAG"), "")?;
        assert_eq!(
            target_dir_of(&deps.join("console-0123")),
            Some(root.join("target"))
        );
        std::fs::remove_file(root.join("target/CACHEDIR.TAG"))?;
        assert_eq!(
            target_dir_of(&deps.join("console-0123")),
            Some(root.join("target"))
        );
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
