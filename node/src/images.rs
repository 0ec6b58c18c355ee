//! Which local binary stands for which image, and a container's command line. Pure.
//!
//! The image map is given as rules (repository suffix → binary, default args, env), in code
//! ([`Images::with`]), on the command line (`--image SUFFIX=BINARY [ARG...]`, [`parse_image_arg`])
//! or in a YAML file ([`parse_images_file`]):
//!
//! ```yaml
//! images:
//!   - image: wasp-session-pod        # any repository ending with this
//!     binary: /opt/wasp/wasp-session-pod
//!     env: { RUST_LOG: info }        # the image's ENV (the pod's own env wins)
//!   - image: redis
//!     binary: redis-server           # a name without `/` is looked up on PATH
//!     args: ["--save", ""]           # the image's CMD (used when the pod sets no args)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use serde::Deserialize;

/// A local stand-in for a container image: its entrypoint (a binary), default arguments (the
/// image's `CMD`) and environment (the image's `ENV`, below the pod's own variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Image {
    /// An image whose entrypoint is `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds a default argument (used when the container sets neither `command` nor `args`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds an image environment variable; a variable of the same name in the pod wins.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn image_env(&self) -> &[(String, String)] {
        &self.env
    }
}

/// Image references the local node can run: rules matched in order against an image's
/// repository (the reference without tag and digest), which must end with the rule's suffix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    rules: Vec<(String, Image)>,
}

impl Images {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every image whose repository ends with `repository_suffix` (e.g. `session-pod`
    /// matches `ghcr.io/wasp-dev/wasp-session-pod:0.1.0` and `wasp/session-pod:test`) as `image`.
    pub fn with(mut self, repository_suffix: impl Into<String>, image: Image) -> Self {
        self.rules.push((repository_suffix.into(), image));
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[(String, Image)] {
        &self.rules
    }

    /// Every rule's binary, replaced by what `f` makes of it (e.g. a PATH lookup).
    pub fn map_binaries<E>(
        mut self,
        mut f: impl FnMut(&Path) -> Result<PathBuf, E>,
    ) -> Result<Self, E> {
        for (_, image) in &mut self.rules {
            image.binary = f(&image.binary)?;
        }
        Ok(self)
    }

    /// The first rule matching `reference`.
    pub fn lookup(&self, reference: &str) -> Option<&Image> {
        let repo = repository(reference);
        self.rules
            .iter()
            .find(|(suffix, _)| repo.ends_with(suffix.as_str()))
            .map(|(_, image)| image)
    }

    /// Mutable access to the first rule matching `reference` (e.g. to add env in a test).
    pub fn lookup_mut(&mut self, reference: &str) -> Option<&mut Image> {
        let repo = repository(reference).to_owned();
        self.rules
            .iter_mut()
            .find(|(suffix, _)| repo.ends_with(suffix.as_str()))
            .map(|(_, image)| image)
    }
}

/// One `--image` value: `SUFFIX=BINARY [ARG...]` (arguments split at white space; use the
/// images file for arguments with spaces or for env).
pub fn parse_image_arg(value: &str) -> Result<(String, Image), String> {
    let (suffix, command) = value
        .split_once('=')
        .ok_or_else(|| format!("--image {value:?}: expected SUFFIX=BINARY [ARG...]"))?;
    let suffix = suffix.trim();
    let mut words = command.split_whitespace();
    let binary = words
        .next()
        .ok_or_else(|| format!("--image {value:?}: no binary after '='"))?;
    if suffix.is_empty() {
        return Err(format!("--image {value:?}: empty image suffix"));
    }
    let image = words.fold(Image::new(binary), Image::arg);
    Ok((suffix.to_owned(), image))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    images: Vec<ImageEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageEntry {
    image: String,
    binary: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// The rules of an images file (YAML, see the module documentation), in order.
pub fn parse_images_file(text: &str) -> Result<Images, String> {
    let file: ImagesFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut images = Images::new();
    for e in file.images {
        if e.image.trim().is_empty() {
            return Err("an entry has an empty `image`".into());
        }
        let mut image = e.args.into_iter().fold(Image::new(e.binary), Image::arg);
        for (k, v) in e.env {
            image = image.env(k, v);
        }
        images = images.with(e.image, image);
    }
    Ok(images)
}

/// An image reference without its digest (`@sha256:…`) and tag (`:tag` after the last `/`).
pub fn repository(reference: &str) -> &str {
    let no_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[last_slash..].rfind(':') {
        Some(colon) => &no_digest[..last_slash + colon],
        None => no_digest,
    }
}

/// The program and arguments for `container` run from `image`, as a container runtime combines
/// them: `command` replaces the entrypoint (and the image's default arguments), `args` replace
/// the default arguments. Locally the entrypoint *is* the binary, so a `command` must name it
/// (its first word's file name equals the binary's); any other command cannot run here. `expand`
/// does Kubernetes' `$(VAR)` expansion of `command` and `args`.
pub fn command_line(
    image: &Image,
    container: &Container,
    expand: impl Fn(&str) -> String,
) -> Result<(PathBuf, Vec<String>), String> {
    let args: Vec<String> = match (&container.command, &container.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            let first = Path::new(&cmd[0]).file_name();
            if first != image.binary.file_name() {
                return Err(format!(
                    "command {:?} does not start with this image's entrypoint {} (the local node runs images as their entrypoint binary)",
                    cmd,
                    image.binary.display()
                ));
            }
            cmd[1..]
                .iter()
                .chain(args.iter().flatten())
                .map(|a| expand(a))
                .collect()
        }
        (_, Some(args)) => args.iter().map(|a| expand(a)).collect(),
        (_, None) => image.args.clone(),
    };
    Ok((image.binary.clone(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_args_name_suffix_binary_and_default_args() {
        let (suffix, image) =
            parse_image_arg("wasp/session-pod=/t/debug/wasp-session-pod").expect("parses");
        assert_eq!(suffix, "wasp/session-pod");
        assert_eq!(image, Image::new("/t/debug/wasp-session-pod"));
        let (_, redis) = parse_image_arg("redis=redis-server --appendonly yes").expect("parses");
        assert_eq!(
            redis,
            Image::new("redis-server").arg("--appendonly").arg("yes")
        );
        for bad in ["redis", "=redis-server", "redis=", "redis=  "] {
            assert!(parse_image_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_files_keep_order_args_and_env_and_refuse_unknown_keys() {
        let text = r#"
images:
  - image: wasp-session-pod
    binary: /opt/wasp-session-pod
    env: { RUST_LOG: info }
  - image: redis
    binary: redis-server
    args: ["--save", ""]
"#;
        let images = parse_images_file(text).expect("parses");
        assert_eq!(images.rules().len(), 2);
        assert_eq!(
            images.lookup("ghcr.io/wasp-dev/wasp-session-pod:0.1.0"),
            Some(&Image::new("/opt/wasp-session-pod").env("RUST_LOG", "info"))
        );
        assert_eq!(
            images.lookup("redis:7"),
            Some(&Image::new("redis-server").arg("--save").arg(""))
        );
        assert!(parse_images_file("images:\n  - image: x\n    binary: y\n    cmd: z\n").is_err());
        assert!(parse_images_file("images:\n  - image: ''\n    binary: y\n").is_err());
        assert!(parse_images_file("imgs: []").is_err());
    }

    #[test]
    fn repositories_drop_tag_and_digest() {
        assert_eq!(
            repository("ghcr.io/wasp-dev/wasp-session-pod:0.1.0"),
            "ghcr.io/wasp-dev/wasp-session-pod"
        );
        assert_eq!(repository("wasp/session-pod"), "wasp/session-pod");
        assert_eq!(
            repository("localhost:5000/session-pod"),
            "localhost:5000/session-pod"
        );
        assert_eq!(
            repository("localhost:5000/session-pod:v1@sha256:abc"),
            "localhost:5000/session-pod"
        );
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn images_match_by_repository_suffix() {
        let images = Images::new()
            .with("session-pod", Image::new("/bin/pod"))
            .with("wasp-api", Image::new("/bin/api"));
        let bin = |r: &str| images.lookup(r).map(|i| i.binary().to_path_buf());
        assert_eq!(
            bin("ghcr.io/wasp-dev/wasp-session-pod:0.1.0"),
            Some("/bin/pod".into())
        );
        assert_eq!(bin("wasp/session-pod:test"), Some("/bin/pod".into()));
        assert_eq!(bin("wasp/wasp-api"), Some("/bin/api".into()));
        // the tag does not count
        assert_eq!(bin("wasp/other:session-pod"), None);
        assert_eq!(bin("wasp.invalid/none:0"), None);
    }

    fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        let v = |s: &[&str]| s.iter().map(|a| (*a).to_owned()).collect();
        Container {
            name: "c".into(),
            command: command.map(v),
            args: args.map(v),
            ..Default::default()
        }
    }

    #[test]
    fn command_lines_follow_the_runtime() {
        let image = Image::new("/t/debug/wasp-session-pod").arg("--default");
        let same = |s: &str| s.to_owned();
        let run = |c: &Container| command_line(&image, c, same);
        assert_eq!(
            run(&container(None, None)),
            Ok(("/t/debug/wasp-session-pod".into(), vec!["--default".into()]))
        );
        assert_eq!(
            run(&container(None, Some(&["-v"]))).map(|r| r.1),
            Ok(vec!["-v".to_owned()])
        );
        assert_eq!(
            run(&container(
                Some(&["/usr/local/bin/wasp-session-pod", "--x"]),
                Some(&["y"])
            ))
            .map(|r| r.1),
            Ok(vec!["--x".to_owned(), "y".to_owned()])
        );
        assert!(run(&container(Some(&["/bin/sh", "-c", "echo"]), None)).is_err());
        let expanded = command_line(&image, &container(None, Some(&["$(A)"])), |s| {
            s.replace("$(A)", "1")
        });
        assert_eq!(expanded.map(|r| r.1), Ok(vec!["1".to_owned()]));
    }
}
