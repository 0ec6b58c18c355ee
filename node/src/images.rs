//! Which local binary stands for which image, and a container's command line. Pure.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

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

    /// `session-pod` → the built session pod binary ([`crate::bins::session_pod`]).
    pub fn session_pod() -> anyhow::Result<Self> {
        Ok(Self::new().with("session-pod", Image::new(crate::bins::session_pod()?)))
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
