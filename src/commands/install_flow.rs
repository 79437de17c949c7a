//! The install glue of the command line, shared by `install` and `slurm install`: resolve the
//! queries against the mirrors (building on a miss when asked), plan, print a dry run, or hand
//! the plan to the library flow (`install::flow`). Not a command: command files use this, never
//! each other.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{exit, parse_query, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::cli::{BuildFlags, InstallArgs, MirrorArgs};
use crate::error::ErrorKind;
use crate::fetch::{BlobCache, FetchOptions, Fetcher};
use crate::install::flow;
use crate::install::installer::{InstallError, StageReporter};
use crate::install::plan::{check_against_lockfile, Action, Lockfile, Plan};
use crate::spec::HostTargets;
use crate::ui::progress::{DownloadProgress, StageStatus};
use crate::ui::status::SlowStep;

impl From<InstallError> for Failure {
    fn from(e: InstallError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}

impl From<flow::FlowError> for Failure {
    fn from(e: flow::FlowError) -> Failure {
        Failure::new(super::exit::code(e.kind()), e.to_string())
    }
}

#[derive(Debug, Serialize)]
struct PlannedRow {
    name: String,
    version: String,
    hash: String,
    action: &'static str,
    prefix: Option<String>,
    download_bytes: Option<u64>,
    cached: bool,
}

fn read_lockfile(path: &Path) -> Result<Lockfile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("cannot read lockfile {}: {e}", path.display()),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!(
                "lockfile {} is not an sf-cache lockfile: {e}",
                path.display()
            ),
        )
    })
}

pub use crate::install::flow::Installed;

/// What to install, as plain options (built from `install`'s or `slurm install`'s flags).
#[derive(Debug, Clone)]
pub struct InstallRequest<'a> {
    pub queries: Vec<String>,
    pub mirrors: &'a MirrorArgs,
    pub root: &'a Path,
    pub projection: Option<&'a str>,
    pub jobs: Option<usize>,
    pub dry_run: bool,
    pub offline: bool,
    pub view: Option<&'a Path>,
    pub write_lockfile: Option<&'a Path>,
    pub lockfile: Option<&'a Path>,
    pub allow_setuid: bool,
    pub build_on_miss: bool,
    pub build: &'a BuildFlags,
    /// A Spack environment lockfile whose roots are installed by exact hash.
    pub spack_lock: Option<&'a Path>,
}

impl<'a> From<&'a InstallArgs> for InstallRequest<'a> {
    fn from(a: &'a InstallArgs) -> InstallRequest<'a> {
        InstallRequest {
            queries: a.query.clone(),
            mirrors: &a.mirrors,
            root: &a.root,
            projection: a.projection.as_deref(),
            jobs: a.jobs,
            dry_run: a.dry_run,
            offline: a.offline,
            view: a.view.as_deref(),
            write_lockfile: a.write_lockfile.as_deref(),
            lockfile: a.lockfile.as_deref(),
            allow_setuid: a.allow_setuid,
            build_on_miss: a.build_on_miss,
            build: &a.build,
            spack_lock: a.spack_lock.as_deref(),
        }
    }
}

/// The install flow shared by `install` and `slurm install`: resolve the queries (and/or the
/// lockfile), plan, fetch, unpack, commit, and make the view. `catalog`: the mirrors already
/// loaded by the caller (else `args.mirrors` are read). None after `--dry-run` (the plan was
/// printed).
pub async fn install(
    ctx: &Context,
    args: &InstallRequest<'_>,
    catalog: Option<crate::buildcache::Catalog>,
) -> Result<Option<Installed>, Failure> {
    let lock = args.lockfile.map(read_lockfile).transpose()?;
    let spack_lock = args
        .spack_lock
        .map(|p| super::spack_lock::read(p).map(|l| (p, l)))
        .transpose()?;
    if args.queries.is_empty() && lock.is_none() && spack_lock.is_none() {
        return Err(Failure::usage(
            "nothing to install: give a query (e.g. `greet@2.1`), --lockfile FILE or --spack-lock FILE",
        ));
    }
    let prepared = flow::prepare(&flow::Target {
        root: args.root,
        projection_flag: args.projection,
        projection_config: ctx.config.install.projection.as_deref(),
        view: args.view,
    })?;
    let (root_dir, projection) = (&prepared.root_dir, &prepared.projection);

    let quiet = ctx.global.quiet || ctx.global.json;
    let mut catalog = match catalog {
        Some(c) => c,
        None => {
            let step = SlowStep::start(quiet, "reading the buildcache indexes");
            let c = super::source_build::install_catalog(
                ctx,
                args.mirrors,
                args.build_on_miss,
                args.build,
            )
            .await?;
            step.finish(&format!(
                "read {} specs from {} mirror(s)",
                c.entries().len(),
                c.mirrors.len()
            ));
            c
        }
    };
    let host = HostTargets::detect();
    let mut roots: Vec<String> = Vec::new();
    for q in &args.queries {
        let query = parse_query(std::slice::from_ref(q))?;
        let hash = match catalog.best_match(&query, &host) {
            Ok(e) => e.spec.hash.clone(),
            Err(e) if args.build_on_miss && !args.dry_run && e.kind() == ErrorKind::NoMatch => {
                catalog = super::source_build::on_miss(ctx, q, args.mirrors, args.build).await?;
                catalog.best_match(&query, &host)?.spec.hash.clone()
            }
            Err(e) => return Err(e.into()),
        };
        if !roots.contains(&hash) {
            roots.push(hash);
        }
    }
    if let Some((path, sl)) = &spack_lock {
        let build_on_miss = args.build_on_miss && !args.dry_run;
        for hash in super::spack_lock::roots(
            ctx,
            path,
            sl,
            &mut catalog,
            args.mirrors,
            build_on_miss,
            args.build,
        )
        .await?
        {
            if !roots.contains(&hash) {
                roots.push(hash);
            }
        }
    }
    if let Some(lock) = &lock {
        for p in lock.packages.iter().filter(|p| p.explicit) {
            if !roots.contains(&p.hash) {
                roots.push(p.hash.clone());
            }
        }
    }
    // After a build on a miss: its local signing key is trusted now.
    let trust = ctx.trust()?;
    let step = SlowStep::start(quiet, "resolving the closure and verifying its manifests");
    let plan = Plan::build(&catalog, &trust, root_dir, projection, &roots).await?;
    step.finish(&format!(
        "planned {} packages, {} to install",
        plan.items.len(),
        plan.to_install().count()
    ));
    if let Some((path, sl)) = &spack_lock {
        super::spack_lock::check_plan(path, sl, &plan)?;
    }
    if let Some(lock) = &lock {
        let fresh = plan.lockfile(&catalog);
        check_against_lockfile(lock, &fresh).map_err(|e| {
            Failure::new(
                exit::VERIFICATION,
                format!(
                    "the plan does not match lockfile {}: {e}",
                    args.lockfile
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            )
        })?;
    }
    if let Some(path) = args.write_lockfile {
        let text = serde_json::to_vec_pretty(&plan.lockfile(&catalog))?;
        crate::fs::write_atomic(path, &text)?;
    }
    let blob_cache = BlobCache::open(ctx.paths.blob_cache_dir())
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    if args.dry_run {
        print_plan(ctx, &plan, &blob_cache)?;
        return Ok(None);
    }
    let total: u64 = plan
        .to_install()
        .filter(|(_, e)| !blob_cache.contains(&e.tarball.digest))
        .filter_map(|(_, e)| e.tarball.size)
        .sum();
    let names: Vec<(String, String)> = plan
        .to_install()
        .map(|(_, e)| {
            let root = e.specfile.root();
            (
                e.tarball.digest.clone(),
                format!("{}@{}", root.name, root.version),
            )
        })
        .collect();
    let progress = Arc::new(DownloadProgress::new(quiet, total).with_names(names));
    let staging = Arc::new(StageStatus::new(quiet));
    let jobs = args.jobs.or(ctx.config.install.jobs).unwrap_or(8).max(1);
    let defaults = FetchOptions::default();
    let fetcher = Fetcher::new(blob_cache, jobs, progress.clone()).with_options(FetchOptions {
        offline: args.offline,
        retries: ctx.retries().unwrap_or(defaults.retries),
        ..defaults
    });
    let done = flow::execute(
        &prepared,
        &plan,
        &catalog,
        &fetcher,
        &flow::ExecOptions {
            allow_setuid: args.allow_setuid,
            view: args.view.map(Path::to_path_buf),
            roots_registry: ctx.roots_registry(),
            progress: StageReporter::new(staging.clone()),
        },
        || progress.done(),
    )
    .await;
    staging.done();
    let done = done?;
    Ok(Some(done))
}

/// The human lines of an install: each package installed or already there, and the view.
pub fn print_report_lines(ctx: &Context, done: &Installed) -> CmdResult {
    let report = &done.report;
    for p in &report.installed {
        ctx.out.line(format!(
            "installed {}@{} /{} in {}",
            p.name,
            p.version,
            short(&p.hash),
            p.prefix
        ))?;
    }
    for p in &report.already_installed {
        ctx.out.line(format!(
            "already installed {}@{} /{} in {}",
            p.name,
            p.version,
            short(&p.hash),
            p.prefix
        ))?;
    }
    if let Some(v) = &done.view {
        ctx.out.line(format!("view {v}"))?;
    }
    Ok(())
}

fn print_plan(ctx: &Context, plan: &Plan, cache: &BlobCache) -> CmdResult {
    let rows: Vec<PlannedRow> = plan
        .items
        .iter()
        .map(|i| {
            let (action, size, cached, prefix) = match &i.action {
                Action::External { path } => ("external", None, false, path.clone()),
                Action::Installed => (
                    "installed",
                    None,
                    false,
                    Some(i.prefix.display().to_string()),
                ),
                Action::Install { entry } => {
                    let cached = cache.contains(&entry.tarball.digest);
                    (
                        "install",
                        entry.tarball.size,
                        cached,
                        Some(i.prefix.display().to_string()),
                    )
                }
            };
            PlannedRow {
                name: i.node.name.clone(),
                version: i.node.version.clone(),
                hash: i.node.hash.clone(),
                action,
                prefix,
                download_bytes: if cached { Some(0) } else { size },
                cached,
            }
        })
        .collect();
    let printed_json = ctx.out.rows(
        &rows,
        &["ACTION", "SPEC", "HASH", "DOWNLOAD", "PREFIX"],
        |r| {
            vec![
                r.action.to_string(),
                format!("{}@{}", r.name, r.version),
                short(&r.hash).to_string(),
                match (r.action, r.cached, r.download_bytes) {
                    ("install", true, _) => "cached".into(),
                    ("install", false, Some(b)) => format!("{}", indicatif::HumanBytes(b)),
                    ("install", false, None) => "size unknown".into(),
                    _ => "-".into(),
                },
                r.prefix.clone().unwrap_or_default(),
            ]
        },
    )?;
    if printed_json {
        return Ok(());
    }
    let total: u64 = rows.iter().filter_map(|r| r.download_bytes).sum();
    ctx.out.line(format!(
        "dry run: nothing changed; {} to download",
        indicatif::HumanBytes(total)
    ))?;
    Ok(())
}
