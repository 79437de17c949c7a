//! build: the fallback source build on a cache miss. Render a Spack environment
//! (`templates/spack/`), run Spack on it in a container (docker, podman, apptainer) or on the
//! host, log everything it prints, and publish what it installed into a local buildcache, so
//! that a build and a download end in the same install path.
//!
//! State lives in `<data>/build/` (`$SF_CACHE_HOME/build` when set): `opt/` (Spack's install
//! tree, padded, mounted at the same path in containers so its prefixes are real host paths),
//! `buildcache/` (the local cache), `source-cache/`, `logs/`, `repo/` (the embedded package
//! repository written out) and `runs/<id>/` (one build's environment, script and stage; removed
//! afterwards unless the stage is kept).

pub mod exec;
pub mod key;
pub mod repo;
pub mod result;
pub mod runtime;
pub mod template;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use result::Built;
pub use runtime::Runtime;
use runtime::{Invocation, Mount};
use template::{EnvContext, EnvMirror, EnvRepo, ScriptContext, Templates};

use crate::buildcache::writer::CacheWriter;
use crate::error::ErrorKind;
use crate::publish::{PublishError, PublishOptions, PublishReport};

/// Default image of the container runtimes (a local image with Spack and a compiler; see
/// docs/build.md for how to make one).
pub const DEFAULT_IMAGE: &str = "sf-cache-build:bookworm";

/// Where Spack sees the build's directories inside a container.
pub mod container {
    pub const REPOS: &str = "/sf-cache/repos/spack_repo";
    pub const ENV: &str = "/sf-cache/env";
    pub const OUT: &str = "/sf-cache/out";
    pub const STAGE: &str = "/sf-cache/stage";
    pub const SOURCE_CACHE: &str = "/sf-cache/source-cache";
    pub const BUILDCACHE: &str = "/sf-cache/buildcache";
    pub const MIRRORS: &str = "/sf-cache/mirrors";
    pub const SPACK: &str = "/sf-cache/spack";
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown runtime `{0}`; choose docker, podman, apptainer or host")]
    UnknownRuntime(String),
    #[error("no container runtime found on PATH (looked for docker, podman, apptainer); install one, or pass --runtime host --spack-root DIR to run Spack directly")]
    NoRuntime,
    #[error("--runtime {0}: `{0}` is not on PATH; install it or choose another of docker, podman, apptainer, host")]
    RuntimeMissing(&'static str),
    #[error("the host runtime needs a Spack checkout: pass --spack-root DIR or set `spack_root` in [build]")]
    NoSpackRoot,
    #[error("{}: no Spack here (expected {}); give the root of a Spack checkout", path.display(), path.join("bin/spack").display())]
    BadSpackRoot { path: PathBuf },
    #[error("template {name}: {reason}")]
    Template { name: String, reason: String },
    #[error("package repository {}: {reason}", path.display())]
    Repo { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}; check that it is installed and executable")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the build of `{spec}` failed ({status}){detail}; see the log {}", log.display())]
    SpackFailed {
        spec: String,
        status: String,
        detail: String,
        log: PathBuf,
    },
    #[error("the build left no usable {}: {reason}; see the build log", path.display())]
    Output { path: PathBuf, reason: String },
    #[error("Spack reported /{hash} as built, but no database under {} lists it installed; see the build log", root.display())]
    NotInstalled { hash: String, root: PathBuf },
    #[error("local build key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl BuildError {
    /// What sort of failure this is: a runtime or Spack root the user must name is a usage error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildError::UnknownRuntime(_) | BuildError::NoSpackRoot => ErrorKind::Usage,
            _ => ErrorKind::Failure,
        }
    }
}

/// The build's state directory and its parts.
#[derive(Debug, Clone)]
pub struct BuildDirs {
    pub home: PathBuf,
}

impl BuildDirs {
    pub fn new(home: impl Into<PathBuf>) -> BuildDirs {
        BuildDirs { home: home.into() }
    }
    pub fn install_root(&self) -> PathBuf {
        self.home.join("opt")
    }
    pub fn buildcache(&self) -> PathBuf {
        self.home.join("buildcache")
    }
    pub fn source_cache(&self) -> PathBuf {
        self.home.join("source-cache")
    }
    pub fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub fn runs(&self) -> PathBuf {
        self.home.join("runs")
    }
    pub fn repo_base(&self) -> PathBuf {
        self.home.join("repo")
    }
}

/// A mirror Spack may reuse binaries from: a URL or a local path (mounted into containers).
#[derive(Debug, Clone)]
pub struct ReuseMirror {
    pub name: String,
    pub location: String,
    pub signed: bool,
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The spec, as the user's query says it.
    pub spec: String,
    pub runtime: Runtime,
    /// The runtime's program (containers only).
    pub program: PathBuf,
    pub image: String,
    pub spack_root: Option<PathBuf>,
    pub keep_stage: bool,
    pub jobs: Option<usize>,
    pub mirrors: Vec<ReuseMirror>,
    pub templates: Templates,
    pub repo_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

/// What a successful build produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    pub spec: String,
    pub runtime: Runtime,
    pub image: Option<String>,
    pub log: PathBuf,
    pub installed: Vec<Built>,
    /// The kept stage (with `--keep-stage`).
    pub stage: Option<PathBuf>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

fn create_dir(p: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))
}

/// A file-name-safe slug of the spec for the log's name.
fn slug(spec: &str) -> String {
    let s: String = spec
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() {
        "build".into()
    } else {
        s
    }
}

fn run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}-{}", std::process::id())
}

/// The directories of one run; removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(
                        "cannot remove the build directory {}: {e}",
                        self.path.display()
                    );
                }
            }
        }
    }
}

/// Run one build: render the environment, run Spack, and find what it installed. `on_line`
/// sees every line Spack prints (all of them also go to the log).
pub fn run(
    req: &BuildRequest,
    dirs: &BuildDirs,
    on_line: impl FnMut(&str),
) -> Result<BuildOutcome, BuildError> {
    let home = std::path::absolute(&dirs.home).map_err(io("the build directory"))?;
    let dirs = BuildDirs::new(home);
    let spack_root = match (&req.spack_root, req.runtime) {
        (Some(r), _) => {
            let r = std::path::absolute(r).map_err(io(format!("{}", r.display())))?;
            if !r.join("bin/spack").is_file() {
                return Err(BuildError::BadSpackRoot { path: r });
            }
            Some(r)
        }
        (None, Runtime::Host) => return Err(BuildError::NoSpackRoot),
        (None, _) => None,
    };
    for d in [
        dirs.install_root(),
        dirs.buildcache(),
        dirs.source_cache(),
        dirs.logs(),
        dirs.runs(),
    ] {
        create_dir(&d)?;
    }
    let (repo_ns, repo_host) = match &req.repo_dir {
        Some(d) => repo::check_override(d)?,
        None => (
            repo::NAMESPACE.to_string(),
            repo::materialize(&dirs.repo_base())?,
        ),
    };

    let id = run_id();
    let run = RunDir {
        path: dirs.runs().join(&id),
        keep: req.keep_stage,
    };
    let (env_host, out_host, stage_host) = (
        run.path.join("env"),
        run.path.join("out"),
        run.path.join("stage"),
    );
    for d in [&env_host, &out_host, &stage_host] {
        create_dir(d)?;
    }

    let c = req.runtime.is_container();
    let seen = |host: &Path, inside: &str| -> PathBuf {
        if c {
            PathBuf::from(inside)
        } else {
            host.to_path_buf()
        }
    };
    let install_root = dirs.install_root();
    let repo_seen = if c {
        Path::new(container::REPOS).join(&repo_ns)
    } else {
        repo_host.clone()
    };
    let env_seen = seen(&env_host, container::ENV);
    let out_seen = seen(&out_host, container::OUT);
    let mut mounts = vec![
        Mount {
            host: repo_host.clone(),
            target: repo_seen.clone(),
            read_only: true,
        },
        Mount {
            host: env_host.clone(),
            target: env_seen.clone(),
            read_only: false,
        },
        Mount {
            host: out_host.clone(),
            target: out_seen.clone(),
            read_only: false,
        },
        Mount {
            host: stage_host.clone(),
            target: seen(&stage_host, container::STAGE),
            read_only: false,
        },
        Mount {
            host: dirs.source_cache(),
            target: seen(&dirs.source_cache(), container::SOURCE_CACHE),
            read_only: false,
        },
        Mount {
            host: dirs.buildcache(),
            target: seen(&dirs.buildcache(), container::BUILDCACHE),
            read_only: true,
        },
        // The same path inside and out: the prefixes Spack records are real host paths.
        Mount {
            host: install_root.clone(),
            target: install_root.clone(),
            read_only: false,
        },
    ];
    let mut env_mirrors = Vec::new();
    for (i, m) in req.mirrors.iter().enumerate() {
        let url = if m.location.contains("://") && !m.location.starts_with("file://") {
            m.location.clone()
        } else {
            let host = PathBuf::from(m.location.strip_prefix("file://").unwrap_or(&m.location));
            let host = std::path::absolute(&host).map_err(io(m.location.clone()))?;
            let target = seen(&host, &format!("{}/{i}", container::MIRRORS));
            mounts.push(Mount {
                host,
                target: target.clone(),
                read_only: true,
            });
            template::as_url(&target.display().to_string())
        };
        env_mirrors.push(EnvMirror {
            name: m.name.clone(),
            url,
            signed: m.signed,
        });
    }
    let spack_cmd = match &spack_root {
        Some(r) if c => {
            mounts.push(Mount {
                host: r.clone(),
                target: container::SPACK.into(),
                read_only: true,
            });
            format!("{}/bin/spack", container::SPACK)
        }
        Some(r) => r.join("bin/spack").display().to_string(),
        None => "spack".to_string(),
    };

    let s = |p: &Path| p.display().to_string();
    let env_ctx = EnvContext {
        spec: req.spec.clone(),
        install_root: s(&install_root),
        padded_length: template::PADDED_LENGTH,
        projection: template::PROJECTION.into(),
        source_cache: s(&seen(&dirs.source_cache(), container::SOURCE_CACHE)),
        stage: s(&seen(&stage_host, container::STAGE)),
        misc_cache: s(&out_seen.join("misc-cache")),
        local_cache: template::as_url(&s(&seen(&dirs.buildcache(), container::BUILDCACHE))),
        mirrors: env_mirrors,
        repos: vec![EnvRepo {
            name: repo_ns.clone(),
            path: s(&repo_seen),
        }],
        jobs: req.jobs,
    };
    let yaml = req.templates.render_env(&env_ctx)?;
    std::fs::write(env_host.join("spack.yaml"), yaml).map_err(io(format!(
        "writing {}",
        env_host.join("spack.yaml").display()
    )))?;
    let script = req.templates.render_script(&ScriptContext {
        spack: spack_cmd,
        env_dir: s(&env_seen),
        trust_mirrors: req.mirrors.iter().any(|m| m.signed),
        keep_stage: req.keep_stage,
    })?;
    std::fs::write(out_host.join("build.sh"), script).map_err(io(format!(
        "writing {}",
        out_host.join("build.sh").display()
    )))?;

    let mut env = vec![
        ("SPACK_DISABLE_LOCAL_CONFIG".to_string(), "1".to_string()),
        (
            "SPACK_USER_CONFIG_PATH".into(),
            s(&out_seen.join("user-config")),
        ),
        (
            "SPACK_USER_CACHE_PATH".into(),
            s(&out_seen.join("user-cache")),
        ),
        ("SF_CACHE_BUILD_SPEC".into(), req.spec.clone()),
    ];
    env.extend(req.env.iter().cloned());
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let inv = Invocation {
        image: req.image.clone(),
        name: format!("sf-cache-build-{id}"),
        labels: vec![("sf-cache.build".into(), s(&dirs.home))],
        mounts,
        env,
        workdir: out_seen.clone(),
        argv: vec!["/bin/sh".into(), s(&out_seen.join("build.sh"))],
        user: (uid != 0).then_some((uid, gid)),
    };
    let cmd = runtime::command_line(req.runtime, &req.program, &inv);
    let log = dirs.logs().join(format!("{id}-{}.log", slug(&req.spec)));
    tracing::info!(
        "building `{}` with {}; log {}",
        req.spec,
        req.runtime.name(),
        log.display()
    );
    let outcome = exec::run_logged(&cmd, &log, on_line)?;
    if !outcome.success() {
        if matches!(req.runtime, Runtime::Docker | Runtime::Podman) {
            // Normally gone already (--rm); this covers a client that died before the container.
            let _ = std::process::Command::new(&req.program)
                .args(["rm", "-f", &inv.name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let hint = match (req.runtime, outcome.code) {
            // docker/podman's own failures (bad image, bad mount) exit 125 before Spack runs.
            (Runtime::Docker | Runtime::Podman, Some(125)) => format!(
                "; {} could not start the container: is the image `{}` there (`{} images`)?",
                req.runtime.name(),
                req.image,
                req.runtime.name()
            ),
            _ => String::new(),
        };
        return Err(BuildError::SpackFailed {
            spec: req.spec.clone(),
            status: outcome
                .code
                .map_or("killed by a signal".into(), |c| format!("exit {c}")),
            detail: match (&outcome.last_error, req.keep_stage) {
                (Some(e), true) => format!(": {e}{hint}; stage kept in {}", stage_host.display()),
                (Some(e), false) => format!(": {e}{hint}"),
                (None, true) => format!("{hint}; stage kept in {}", stage_host.display()),
                (None, false) => hint,
            },
            log,
        });
    }
    let roots = result::lock_roots(&env_host)?;
    let installed = result::installed(&install_root, &roots)?;
    Ok(BuildOutcome {
        spec: req.spec.clone(),
        runtime: req.runtime,
        image: c.then(|| req.image.clone()),
        log,
        installed,
        stage: req.keep_stage.then(|| stage_host.clone()),
    })
}

/// Publish what a build installed (and the dependencies the destination lacks) with `writer`.
pub async fn publish_built(
    writer: &CacheWriter,
    outcome: &BuildOutcome,
) -> Result<PublishReport, BuildError> {
    let prefixes: Vec<PathBuf> = outcome.installed.iter().map(|b| b.prefix.clone()).collect();
    let opts = PublishOptions {
        with_deps: true,
        ..PublishOptions::default()
    };
    Ok(crate::publish::publish(writer, &prefixes, &opts).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("slurm@25.11 +nvml %gcc@13.4.0"),
            "slurm_25.11__nvml__gcc_13.4.0"
        );
        assert_eq!(slug("/abc"), "abc");
        assert_eq!(slug("@@"), "build");
    }

    #[test]
    fn host_runtime_needs_a_spack_root() {
        let d = tempfile::tempdir().unwrap();
        let req = BuildRequest {
            spec: "x".into(),
            runtime: Runtime::Host,
            program: PathBuf::new(),
            image: String::new(),
            spack_root: None,
            keep_stage: false,
            jobs: None,
            mirrors: vec![],
            templates: Templates::default(),
            repo_dir: None,
            env: vec![],
        };
        let dirs = BuildDirs::new(d.path());
        assert!(matches!(
            run(&req, &dirs, |_| {}),
            Err(BuildError::NoSpackRoot)
        ));
        let req = BuildRequest {
            spack_root: Some(d.path().join("nope")),
            ..req
        };
        let e = run(&req, &dirs, |_| {}).unwrap_err().to_string();
        assert!(e.contains("bin/spack"), "{e}");
    }
}
