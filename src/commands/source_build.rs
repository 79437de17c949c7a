//! The source-build machinery of the command line, shared by `build`, `install --build-on-miss`
//! and `slurm install --build-on-miss`: build a spec with Spack and publish it into the local
//! buildcache (or `--publish DEST`), and the catalogs an install reads around such a build.
//! Not a command: command files use this, never each other.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{exit, parse_query, Context, Failure};
use crate::build::template::Templates;
use crate::build::{self, BuildDirs, BuildError, BuildOutcome, BuildRequest, ReuseMirror, Runtime};
use crate::buildcache::writer::{CacheWriter, Signer};
use crate::buildcache::{layout, Catalog, Mirror};
use crate::cli::{BuildFlags, MirrorArgs};
use crate::fs::find_program;
use crate::publish::PublishReport;
use crate::ui::status::StatusLine;

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}

/// What `build --json` prints.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    #[serde(flatten)]
    pub build: BuildOutcome,
    pub publish: PublishReport,
}

/// The build's state directory: `<data>/build` (`$SF_CACHE_HOME/build` when set).
pub fn build_dirs(ctx: &Context) -> BuildDirs {
    match ctx.paths.keys_dir.parent() {
        Some(data) => BuildDirs::new(data.join("build")),
        None => BuildDirs::new(ctx.paths.cache_dir.join("build")),
    }
}

/// Where a build publishes: `--publish DEST`, else the local buildcache.
fn destination(ctx: &Context, flags: &BuildFlags) -> String {
    match &flags.publish {
        Some(d) => d.clone(),
        None => build_dirs(ctx).buildcache().display().to_string(),
    }
}

fn resolve_runtime(ctx: &Context, flags: &BuildFlags) -> Result<(Runtime, PathBuf), Failure> {
    let path = std::env::var_os("PATH");
    let named = flags
        .runtime
        .as_deref()
        .or(ctx.config.build.runtime.as_deref());
    let runtime = match named {
        Some(n) => Runtime::parse(n)?,
        None => Runtime::detect(path.as_deref())?,
    };
    if runtime == Runtime::Host {
        return Ok((runtime, PathBuf::new()));
    }
    let program = find_program(runtime.name(), path.as_deref())
        .ok_or(BuildError::RuntimeMissing(runtime.name()))?;
    Ok((runtime, program))
}

/// The mirrors Spack may reuse binaries from: `--mirror` values, else the config's mirrors.
fn reuse_mirrors(ctx: &Context, args: &MirrorArgs) -> Vec<ReuseMirror> {
    let names: Vec<String> = if args.mirrors.is_empty() {
        ctx.config.mirrors.iter().map(|m| m.name.clone()).collect()
    } else {
        args.mirrors.clone()
    };
    names
        .iter()
        .enumerate()
        .map(|(i, n)| match ctx.config.mirror_named(n) {
            Some(m) => ReuseMirror {
                name: m.name.clone(),
                location: m.url.clone(),
                signed: m.signed && !ctx.global.allow_unsigned,
            },
            None => ReuseMirror {
                name: format!("mirror-{i}"),
                location: n.clone(),
                signed: !ctx.global.allow_unsigned,
            },
        })
        .collect()
}

fn parse_env(items: &[String]) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::usage(format!(
                "--build-env `{kv}`: expected NAME=VALUE"
            ))),
        })
        .collect()
}

fn read_signer(flags: &BuildFlags, ctx: &Context) -> Result<Signer, Failure> {
    let Some(path) = &flags.key else {
        return Ok(build::key::local_signer(&ctx.user_keyring())?);
    };
    super::read_signing_key(path, flags.passphrase_file.as_deref())?.signer()
}

/// Build `spec` and publish the result; returns the report.
pub async fn build_and_publish(
    ctx: &Context,
    spec: &str,
    mirrors: &MirrorArgs,
    jobs: Option<usize>,
    flags: &BuildFlags,
) -> Result<BuildReport, Failure> {
    // The query must at least parse; Spack gets it as written.
    parse_query(&[spec.to_string()])?;
    let (runtime, program) = resolve_runtime(ctx, flags)?;
    let cfg = &ctx.config.build;
    let mut env: Vec<(String, String)> = cfg
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(parse_env(&flags.build_env)?);
    let dest = destination(ctx, flags);
    // Fail on a bad destination or key before spending time on the build.
    let store = ctx.open_writable("--publish", &dest)?;
    let signer = read_signer(flags, ctx)?;
    let req = BuildRequest {
        spec: spec.to_string(),
        runtime,
        program,
        image: flags
            .image
            .clone()
            .or_else(|| cfg.image.clone())
            .unwrap_or_else(|| build::DEFAULT_IMAGE.to_string()),
        spack_root: flags.spack_root.clone().or_else(|| cfg.spack_root.clone()),
        keep_stage: flags.keep_stage,
        jobs: jobs.or(cfg.jobs),
        mirrors: reuse_mirrors(ctx, mirrors),
        templates: Templates::new(cfg.templates_dir.clone()),
        repo_dir: cfg.repo_dir.clone(),
        env,
    };
    let dirs = build_dirs(ctx);
    let quiet = ctx.global.quiet || ctx.global.json;
    let outcome = tokio::task::spawn_blocking(move || {
        let status = StatusLine::new(quiet, &format!("building {}", req.spec));
        let r = build::run(&req, &dirs, |line| {
            if let Some(s) = build::exec::status_line(line) {
                status.set(s);
            }
        });
        status.done();
        r
    })
    .await
    .map_err(|e| Failure::new(exit::FAILURE, format!("the build task failed: {e}")))??;

    std::fs::create_dir_all(&ctx.paths.tmp_dir)?;
    let writer = CacheWriter::new(store)
        .with_tmp_dir(&ctx.paths.tmp_dir)
        .with_signer(signer);
    let publish = build::publish_built(&writer, &outcome).await?;
    Ok(BuildReport {
        build: outcome,
        publish,
    })
}

/// Whether `dest` is a local buildcache that already holds an index.
fn local_index_exists(dest: &str) -> bool {
    let local = !dest.contains("://") || dest.starts_with("file://");
    let p = Path::new(dest.strip_prefix("file://").unwrap_or(dest));
    local && p.join(layout::V3_INDEX_MANIFEST).is_file()
}

/// The mirrors an install reads: `--mirror` values, else the config's (none is fine with
/// `--build-on-miss`: the local buildcache is added after them).
fn install_mirrors(ctx: &Context, mirrors: &MirrorArgs) -> Result<Vec<Mirror>, Failure> {
    if mirrors.mirrors.is_empty() && ctx.config.mirrors.is_empty() {
        Ok(Vec::new())
    } else {
        ctx.mirrors(mirrors)
    }
}

/// The catalog `install` reads: its mirrors, and with `--build-on-miss` also the build's
/// destination when it already holds an index (earlier builds are hits, not new builds).
pub async fn install_catalog(
    ctx: &Context,
    mirror_args: &MirrorArgs,
    build_on_miss: bool,
    build: &BuildFlags,
) -> Result<Catalog, Failure> {
    if !build_on_miss {
        return ctx.catalog(mirror_args).await;
    }
    let mut mirrors = install_mirrors(ctx, mirror_args)?;
    let dest = destination(ctx, build);
    if local_index_exists(&dest) {
        mirrors.push(ctx.open_mirror(&dest)?);
    }
    Ok(Catalog::load(mirrors, &ctx.index_cache()).await?)
}

/// `install --build-on-miss`: nothing matched `query`; build it, then return the catalog with
/// the build's destination added.
pub async fn on_miss(
    ctx: &Context,
    query: &str,
    mirror_args: &MirrorArgs,
    build: &BuildFlags,
) -> Result<Catalog, Failure> {
    tracing::warn!("no mirror has a match for `{query}`: building it from source");
    let report = build_and_publish(ctx, query, mirror_args, None, build).await?;
    tracing::info!(
        "built `{query}` (log {}); installing it from {}",
        report.build.log.display(),
        report.publish.destination
    );
    let mut mirrors = install_mirrors(ctx, mirror_args)?;
    mirrors.push(ctx.open_mirror(&destination(ctx, build))?);
    Ok(Catalog::load(mirrors, &ctx.index_cache()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_items_need_a_name() {
        assert_eq!(
            parse_env(&["A=b=c".into()]).unwrap(),
            vec![("A".to_string(), "b=c".to_string())]
        );
        assert_eq!(parse_env(&["=x".into()]).unwrap_err().code, exit::USAGE);
        assert_eq!(parse_env(&["x".into()]).unwrap_err().code, exit::USAGE);
    }
}
