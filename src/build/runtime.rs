//! Where Spack runs: a container (docker, podman, apptainer) with the build's directories
//! mounted, or the host itself. This file only builds command lines; `exec.rs` runs them.

use crate::fs::find_program;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::BuildError;

/// A way to run Spack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Apptainer,
    Host,
}

/// The container runtimes, in the order they are looked for.
pub const DETECT_ORDER: [Runtime; 3] = [Runtime::Docker, Runtime::Podman, Runtime::Apptainer];

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Apptainer => "apptainer",
            Runtime::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Result<Runtime, BuildError> {
        match s {
            "docker" => Ok(Runtime::Docker),
            "podman" => Ok(Runtime::Podman),
            "apptainer" => Ok(Runtime::Apptainer),
            "host" => Ok(Runtime::Host),
            other => Err(BuildError::UnknownRuntime(other.into())),
        }
    }

    pub fn is_container(self) -> bool {
        self != Runtime::Host
    }

    /// The first container runtime whose program is on `path` (a `PATH`-style list).
    pub fn detect(path: Option<&std::ffi::OsStr>) -> Result<Runtime, BuildError> {
        DETECT_ORDER
            .into_iter()
            .find(|r| find_program(r.name(), path).is_some())
            .ok_or(BuildError::NoRuntime)
    }
}

/// A host directory made visible to Spack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    /// Where Spack sees it (the same as `host` for the host runtime).
    pub target: PathBuf,
    pub read_only: bool,
}

/// One run of Spack, runtime-independent.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub image: String,
    /// Container name (docker, podman), so that it can be removed if we are interrupted.
    pub name: String,
    /// `key=value` labels (docker, podman).
    pub labels: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    /// The command, as Spack's side sees it.
    pub argv: Vec<String>,
    /// Run as this uid:gid (docker), so that files written to the mounts belong to the user.
    pub user: Option<(u32, u32)>,
}

/// A program and its arguments, and the environment to add (host runtime only: the container
/// runtimes pass theirs on the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandLine {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl CommandLine {
    /// For the log: the command as one line of shell words.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| {
                let s = a.to_string_lossy();
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
                {
                    s.into_owned()
                } else {
                    format!("'{}'", s.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn bind(m: &Mount, apptainer: bool) -> String {
    let mut s = format!("{}:{}", m.host.display(), m.target.display());
    if m.read_only {
        s.push_str(":ro");
    } else if apptainer {
        s.push_str(":rw");
    }
    s
}

/// The command line that runs `inv` with `runtime`.
pub fn command_line(runtime: Runtime, program: &Path, inv: &Invocation) -> CommandLine {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: String| args.push(a.into());
    match runtime {
        Runtime::Docker | Runtime::Podman => {
            push("run".into());
            push("--rm".into());
            push("--name".into());
            push(inv.name.clone());
            for (k, v) in &inv.labels {
                push("--label".into());
                push(format!("{k}={v}"));
            }
            if let (Runtime::Docker, Some((u, g))) = (runtime, inv.user) {
                push("--user".into());
                push(format!("{u}:{g}"));
            }
            for m in &inv.mounts {
                push("--volume".into());
                push(bind(m, false));
            }
            for (k, v) in &inv.env {
                push("--env".into());
                push(format!("{k}={v}"));
            }
            push("--workdir".into());
            push(inv.workdir.display().to_string());
            push(inv.image.clone());
            inv.argv.iter().cloned().for_each(push);
        }
        Runtime::Apptainer => {
            push("exec".into());
            push("--cleanenv".into());
            push("--contain".into());
            for m in &inv.mounts {
                push("--bind".into());
                push(bind(m, true));
            }
            for (k, v) in &inv.env {
                push("--env".into());
                push(format!("{k}={v}"));
            }
            push("--pwd".into());
            push(inv.workdir.display().to_string());
            push(inv.image.clone());
            inv.argv.iter().cloned().for_each(push);
        }
        Runtime::Host => {
            let mut argv = inv.argv.iter();
            let program = argv.next().cloned().unwrap_or_default();
            return CommandLine {
                program: program.into(),
                args: argv.map(OsString::from).collect(),
                env: inv.env.clone(),
            };
        }
    }
    CommandLine {
        program: program.as_os_str().to_owned(),
        args,
        env: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Invocation {
        Invocation {
            image: "img:1".into(),
            name: "sf-cache-build-1".into(),
            labels: vec![("sf-cache.build".into(), "/h/build".into())],
            mounts: vec![
                Mount {
                    host: "/h/repo".into(),
                    target: "/sf-cache/repos/spack_repo/slurm_factory".into(),
                    read_only: true,
                },
                Mount {
                    host: "/h/opt".into(),
                    target: "/h/opt".into(),
                    read_only: false,
                },
            ],
            env: vec![("SPACK_DISABLE_LOCAL_CONFIG".into(), "1".into())],
            workdir: "/sf-cache/out".into(),
            argv: vec!["/bin/sh".into(), "/sf-cache/out/build.sh".into()],
            user: Some((1000, 1000)),
        }
    }

    #[test]
    fn docker_command_line() {
        let c = command_line(Runtime::Docker, Path::new("/usr/bin/docker"), &inv());
        assert_eq!(
            c.display(),
            "/usr/bin/docker run --rm --name sf-cache-build-1 --label sf-cache.build=/h/build --user 1000:1000 \
             --volume /h/repo:/sf-cache/repos/spack_repo/slurm_factory:ro --volume /h/opt:/h/opt \
             --env SPACK_DISABLE_LOCAL_CONFIG=1 --workdir /sf-cache/out img:1 /bin/sh /sf-cache/out/build.sh"
        );
        assert!(c.env.is_empty());
    }

    #[test]
    fn podman_runs_without_user_mapping() {
        let c = command_line(Runtime::Podman, Path::new("podman"), &inv());
        assert!(!c.display().contains("--user"), "{}", c.display());
        assert!(c
            .display()
            .starts_with("podman run --rm --name sf-cache-build-1"));
    }

    #[test]
    fn apptainer_command_line() {
        let c = command_line(Runtime::Apptainer, Path::new("apptainer"), &inv());
        assert_eq!(
            c.display(),
            "apptainer exec --cleanenv --contain --bind /h/repo:/sf-cache/repos/spack_repo/slurm_factory:ro \
             --bind /h/opt:/h/opt:rw --env SPACK_DISABLE_LOCAL_CONFIG=1 --pwd /sf-cache/out img:1 \
             /bin/sh /sf-cache/out/build.sh"
        );
    }

    #[test]
    fn host_runs_the_command_itself() {
        let c = command_line(Runtime::Host, Path::new("unused"), &inv());
        assert_eq!(c.program, OsString::from("/bin/sh"));
        assert_eq!(c.args, vec![OsString::from("/sf-cache/out/build.sh")]);
        assert_eq!(c.env, inv().env);
    }

    #[test]
    fn detection_follows_the_order_and_needs_executables() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert!(matches!(
            Runtime::detect(Some(&path)),
            Err(BuildError::NoRuntime)
        ));
        let mk = |p: PathBuf, mode: u32| {
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mk(b.join("docker"), 0o644); // not executable: ignored
        mk(b.join("apptainer"), 0o755);
        assert_eq!(Runtime::detect(Some(&path)).unwrap(), Runtime::Apptainer);
        mk(a.join("podman"), 0o755);
        assert_eq!(Runtime::detect(Some(&path)).unwrap(), Runtime::Podman);
        mk(b.join("docker"), 0o755);
        assert_eq!(Runtime::detect(Some(&path)).unwrap(), Runtime::Docker);
        let e = BuildError::NoRuntime.to_string();
        for n in ["docker", "podman", "apptainer", "host"] {
            assert!(e.contains(n), "{e}");
        }
    }
}
