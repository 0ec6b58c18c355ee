//! wasp's container images, built without a container engine by `images/build-oci.sh` (umoci,
//! skopeo) from the binaries of this test build: each image's config says what its Dockerfile
//! says (user 65532, entrypoint, OCI labels), its root filesystem holds the binary, the
//! libraries it loads and nothing else (no shell), runs the binary's `--help` as the image's user
//! under `chroot`, and stays small. Needs root (chroot; CI and the dev machines are root).
//!
//! The test build's binaries are debug builds (and its session pod has the insecure-sim
//! feature, which the tests need); release image sizes are in docs/benchmarks.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use wasp_e2e::bins;
use wasp_e2e::procs::scratch_dir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// What an image's Dockerfile declares.
#[derive(Debug)]
struct Dockerfile {
    text: String,
    user: String,
    entrypoint: Vec<String>,
    labels: BTreeMap<String, String>,
    version_arg: String,
}

fn dockerfile(image: &str) -> anyhow::Result<Dockerfile> {
    let text = std::fs::read_to_string(repo().join("images").join(image).join("Dockerfile"))?;
    let value = |instr: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(instr).map(str::trim).map(str::to_owned))
            .with_context(|| format!("{image}: no {instr}"))
    };
    let user = value("USER ")?;
    let entrypoint: Vec<String> = serde_json::from_str(&value("ENTRYPOINT ")?)?;
    let version_arg = value("ARG VERSION=")?;
    let labels = text
        .lines()
        .filter_map(|l| l.strip_prefix("LABEL "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim_matches('"').replace("${VERSION}", &version_arg);
            (k.to_owned(), v)
        })
        .collect();
    Ok(Dockerfile {
        text,
        user,
        entrypoint,
        labels,
        version_arg,
    })
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn blob(layout: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let (algo, hex) = digest.split_once(':').context("digest")?;
    Ok(layout.join("blobs").join(algo).join(hex))
}

fn json_blob(layout: &Path, digest: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&std::fs::read(blob(
        layout, digest,
    )?)?)?)
}

/// Every path under `root`, relative, with its size (files) or 0 (directories).
fn tree(root: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(path);
                out.insert(format!("{rel}/"), 0);
            } else {
                out.insert(rel, meta.len());
            }
        }
    }
    Ok(out)
}

/// Builds `image` from the test build's `binary` (or `$WASP_<BINARY>_BIN`) and checks it.
fn check_image(image: &str, package: &str, binary: &str, archive: bool) -> anyhow::Result<()> {
    check_image_with(image, package, binary, archive, &[])
}

fn check_image_with(
    image: &str,
    package: &str,
    binary: &str,
    archive: bool,
    extra_args: &[&str],
) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "the image test unpacks and chroots: run it as root (CI and the dev machines are)"
    );
    let df = dockerfile(image)?;
    // The Dockerfile builds this package alone, without features, in release; the runtime
    // stage is `scratch` with the rootfs.sh output.
    ensure!(
        df.text.contains(&format!(
            "cargo build --release --locked -p {package} --bin {binary}"
        )),
        "{image}: the Dockerfile must build -p {package} alone"
    );
    ensure!(
        !df.text
            .lines()
            .any(|l| l.contains("--features") || l.contains("--all-features")),
        "{image}: built without features"
    );
    let last_from = df
        .text
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap_or_default();
    ensure!(last_from == "FROM scratch", "{image}: {last_from}");
    assert_eq!(df.user, "65532:65532");
    assert_eq!(df.entrypoint, vec![format!("/usr/local/bin/{binary}")]);
    assert_eq!(
        df.version_arg,
        env!("CARGO_PKG_VERSION"),
        "ARG VERSION = the workspace's"
    );
    for key in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    ] {
        assert!(df.labels.contains_key(key), "{image}: label {key}");
    }
    assert_eq!(df.labels["org.opencontainers.image.title"], binary);

    let env_var = format!("{}_BIN", binary.to_ascii_uppercase().replace('-', "_"));
    let bin = bins::find(binary, &env_var, &format!("-p {package}"))?;
    let bin_dir = bin.parent().context("binary dir")?;
    let out = scratch_dir(&format!("wasp-oci-{image}"))?;
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("images/build-oci.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&out)
        .args(extra_args)
        .arg(image);
    if archive {
        cmd.arg("--archive");
    }
    let summary = run(&mut cmd)?;
    let layout = out.join(image);

    // The layout: one manifest tagged with the version, one gzip layer, the config.
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifests = index["manifests"].as_array().context("manifests")?;
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        df.version_arg.as_str()
    );
    let manifest = json_blob(&layout, manifests[0]["digest"].as_str().context("digest")?)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let compressed = layers[0]["size"].as_u64().context("layer size")?;
    let config = json_blob(
        &layout,
        manifest["config"]["digest"].as_str().context("config")?,
    )?;
    assert_eq!(config["os"], "linux");
    let c = &config["config"];
    assert_eq!(c["User"], df.user.as_str());
    assert_eq!(c["Entrypoint"], serde_json::to_value(&df.entrypoint)?);
    assert!(c["Cmd"].is_null(), "no default arguments");
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone())?;
    assert_eq!(labels, df.labels, "labels as in the Dockerfile");

    if archive {
        // skopeo reads the archive the same (what `skopeo copy` pushes to a registry).
        let tar = out.join(format!("{image}.tar"));
        let inspected: Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "inspect",
            "--config",
            &format!("oci-archive:{}", tar.display()),
        ]))?)?;
        assert_eq!(inspected["config"], config["config"]);
    }

    // Unpacked: exactly the binary, its libraries, CA bundle, users, nsswitch; no shell.
    let bundle = out.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", layout.display(), df.version_arg))
        .arg(&bundle))?;
    let runtime: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    let uid = runtime["process"]["user"]["uid"].as_u64().context("uid")?;
    let gid = runtime["process"]["user"]["gid"].as_u64().context("gid")?;
    assert_eq!((uid, gid), (65532, 65532));
    let argv: Vec<String> = serde_json::from_value(runtime["process"]["args"].clone())?;
    assert_eq!(argv, df.entrypoint);
    let rootfs = bundle.join("rootfs");
    let files = tree(&rootfs)?;
    let binary_path = format!("usr/local/bin/{binary}");
    let fixed: BTreeSet<&str> = [
        "etc/",
        "etc/group",
        "etc/passwd",
        "etc/nsswitch.conf",
        "etc/ssl/",
        "etc/ssl/certs/",
        "etc/ssl/certs/ca-certificates.crt",
        "home/",
        "home/nonroot/",
        "tmp/",
        "usr/",
        "usr/local/",
        "usr/local/bin/",
    ]
    .into();
    let libraries: Vec<&String> = files
        .keys()
        .filter(|p| !fixed.contains(p.as_str()) && **p != binary_path)
        .collect();
    for lib in &libraries {
        let name = lib.rsplit('/').find(|s| !s.is_empty()).unwrap_or_default();
        let lib_dir =
            lib.starts_with("lib/") || lib.starts_with("lib64/") || lib.starts_with("usr/lib");
        assert!(
            lib_dir && (name.contains(".so") || lib.ends_with('/')),
            "{image}: unexpected {lib} in the image"
        );
    }
    assert!(
        libraries.iter().any(|l| l.contains("libc.so")),
        "{image}: glibc: {libraries:?}"
    );
    assert!(!files.contains_key("bin/sh") && !files.contains_key("bin/"));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    // The image's entrypoint runs `--help` as the image's user in its own root filesystem.
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("chroot (coreutils) not found")?;
    let help = run(Command::new(chroot)
        .arg(format!("--userspec={uid}:{gid}"))
        .arg(&rootfs)
        .args(&argv)
        .arg("--help")
        .env_clear())?;
    assert!(help.contains("Usage:"), "{image} --help: {help}");

    // Small: beyond the binary, well under 8 MiB; the compressed layer smaller than the binary.
    let unpacked: u64 = files.values().sum();
    let bin_size = files[&binary_path];
    assert_eq!(bin_size, std::fs::metadata(&bin)?.len());
    let overhead = unpacked - bin_size;
    assert!(
        overhead < 8 << 20,
        "{image}: {overhead} bytes beside the binary"
    );
    assert!(
        compressed < bin_size,
        "{image}: layer {compressed} ≥ binary {bin_size}"
    );
    eprintln!(
        "{image}: binary {bin_size} B, unpacked {unpacked} B, compressed layer {compressed} B ({})",
        summary.trim()
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

#[test]
fn operator_image() -> anyhow::Result<()> {
    check_image("operator", "wasp-operator", "wasp-operator", true)
}

#[test]
fn api_image() -> anyhow::Result<()> {
    check_image("api", "wasp-api", "wasp-api", false)
}

/// Whether a session pod binary has the insecure-sim feature: it then refuses a non-loopback
/// WhatsApp URL in its first check; a production build passes it and stops at the bad key.
fn built_with_insecure_sim(bin: &Path) -> anyhow::Result<bool> {
    let out = Command::new("timeout")
        .args(["-k", "1", "20"])
        .arg(bin)
        .env_clear()
        .envs([
            ("WASP_USER_ID", "probe"),
            ("WASP_SESSION_NAME", "probe"),
            ("WASP_SESSION_NAMESPACE", "probe"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("WASP_MASTER_KEY", "not-a-key"),
            ("WASP_CONTROL_TOKEN", "probe"),
            ("WASP_WHATSAPP_URL", "wss://web.whatsapp.com/ws/chat"),
            ("WASP_CONTROL_ADDR", "127.0.0.1:0"),
            ("WASP_ADMIN_ADDR", "127.0.0.1:0"),
        ])
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!out.status.success(), "the probe must fail: {said}");
    if said.contains("insecure-sim feature") {
        Ok(true)
    } else if said.contains("master key") {
        Ok(false)
    } else {
        bail!("neither refusal: {said}")
    }
}

#[test]
fn session_pod_image() -> anyhow::Result<()> {
    // The production image never takes a session pod built for the simulator: build-oci.sh
    // refuses one unless told it is a test image.
    let bin = bins::session_pod()?;
    let dir = bin.parent().context("binary dir")?;
    let out = scratch_dir("wasp-oci-guard")?;
    let plain = Command::new("bash")
        .arg(repo().join("images/build-oci.sh"))
        .arg("--bin-dir")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .arg("session-pod")
        .output()?;
    let stderr = String::from_utf8_lossy(&plain.stderr);
    if built_with_insecure_sim(&bin)? {
        // What `cargo test --workspace` builds (the tests need the simulator).
        assert_eq!(plain.status.code(), Some(3), "refused: {stderr}");
        assert!(stderr.contains("insecure-sim"), "{stderr}");
        assert!(!out.join("session-pod").exists(), "no layout written");
    } else {
        assert!(
            plain.status.success(),
            "a production build is taken: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    check_image_with(
        "session-pod",
        "wasp-session-pod",
        "wasp-session-pod",
        false,
        &["--allow-insecure-sim"],
    )
}

#[test]
fn simulator_image() -> anyhow::Result<()> {
    check_image("sim", "wasp-sim", "wasp-sim", false)
}
