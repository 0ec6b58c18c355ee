//! Finding the workspace's binaries that tests run as processes (the session pod).
//!
//! `cargo test --workspace` (what `scripts/test` and CI run) builds every binary of the workspace
//! into `target/<profile>/` before any test runs, the session pod with the `insecure-sim` feature
//! that the simulator needs (through `wasp-session-pod`'s dev-dependency on itself). A test
//! binary lives in `target/<profile>/deps/`, so the binaries are one directory up.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// File name of the session pod binary.
pub const SESSION_POD: &str = "wasp-session-pod";

/// Environment variable naming a session pod binary to use instead of the built one.
pub const SESSION_POD_ENV: &str = "WASP_POD_BIN";

/// The session pod binary: `$WASP_POD_BIN` if set, else `wasp-session-pod` next to the running
/// test executable's directory (`target/debug/`). It must have been built with the
/// `insecure-sim` feature to talk to the simulator; `cargo test --workspace` does that. The error
/// says how to build it.
pub fn session_pod() -> anyhow::Result<PathBuf> {
    find(
        SESSION_POD,
        SESSION_POD_ENV,
        "-p wasp-session-pod --features insecure-sim",
    )
}

/// The local node's image map for session pods: `session-pod` → [`session_pod`].
pub fn session_pod_images() -> anyhow::Result<wasp_node::Images> {
    Ok(wasp_node::Images::new().with("session-pod", wasp_node::Image::new(session_pod()?)))
}

/// A workspace binary: `$env_var` if set (it must exist), else `name` in the directory above the
/// running test executable. `cargo_args` go into the error message's build command.
pub fn find(name: &str, env_var: &str, cargo_args: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{env_var}={} does not name a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let candidate = built_binary_path(&exe, name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "{name} not found at {}: it is built by `cargo test --workspace` (or `scripts/test`), or \
         by `cargo build {cargo_args} --bins` with the same CARGO_TARGET_DIR as the tests; or set \
         {env_var} to a built binary",
        candidate.display()
    )
}

/// Where cargo puts binary `name` for a test executable at `exe` (`target/debug/deps/x-hash` →
/// `target/debug/name`; an executable not in `deps/`, e.g. an example, looks in its own
/// directory's parent too).
fn built_binary_path(exe: &Path, name: &str) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let profile_dir = if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    profile_dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_next_to_deps() {
        assert_eq!(
            built_binary_path(Path::new("/t/debug/deps/stack-0123"), "wasp-session-pod"),
            Path::new("/t/debug/wasp-session-pod")
        );
        assert_eq!(
            built_binary_path(Path::new("/t/debug/examples/bench"), "x"),
            Path::new("/t/debug/x")
        );
        assert_eq!(
            built_binary_path(Path::new("/t/debug/runner"), "x"),
            Path::new("/t/debug/x")
        );
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = find("wasp-no-such-binary", "WASP_E2E_NO_SUCH_VAR", "-p nothing")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo test --workspace"), "{err}");
        assert!(err.contains("scripts/test"), "{err}");
        assert!(err.contains("WASP_E2E_NO_SUCH_VAR"), "{err}");
    }
}
