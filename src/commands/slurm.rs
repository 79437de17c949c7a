//! `sf-cache slurm list|install`: the Slurm Factory caches by Slurm release, GCC toolchain and
//! build variant (the matrix, variants and URL scheme come from `slurm_factory`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures_util::StreamExt;
use serde::Serialize;
use tracing::{info, warn};

use super::install_flow::{install, print_report_lines, InstallRequest, Installed};
use super::{exit, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::buildcache::{BuildcacheError, Catalog};
use crate::cli::{MirrorArgs, SlurmCommand, SlurmInstallArgs, SlurmListArgs};
use crate::install::installer::InstallReport;
use crate::modules::{write_modules, ModuleOptions, WrittenModule};
use crate::slurm_factory::{
    glibc, os, pick_build, CacheUrl, FactoryError, OsToolchain, Scheme, SlurmFactory, SlurmRelease,
    Toolchain, Variant, BASE_ENV,
};
use crate::spec::{HostTargets, Query, VariantReq};

pub async fn run(ctx: &Context, cmd: &SlurmCommand) -> CmdResult {
    match cmd {
        SlurmCommand::List(a) => list(ctx, a).await,
        SlurmCommand::Install(a) => install_slurm(ctx, a).await,
    }
}

impl From<FactoryError> for Failure {
    fn from(e: FactoryError) -> Failure {
        match e {
            FactoryError::Invalid { .. } => Failure::new(exit::FAILURE, e.to_string()),
            _ => Failure::usage(e.to_string()),
        }
    }
}

/// The matrix: embedded defaults with the config's `[slurm_factory]` applied.
fn factory(ctx: &Context) -> Result<SlurmFactory, Failure> {
    let origin = ctx
        .global
        .config
        .as_ref()
        .unwrap_or(&ctx.paths.config_file)
        .display()
        .to_string();
    Ok(SlurmFactory::load(
        ctx.config.slurm_factory.as_ref(),
        &format!("{origin} [slurm_factory]"),
    )?)
}

/// `--base`, else `$SF_CACHE_SLURM_FACTORY_BASE`, else the config's (or the default) base URL.
fn base_url(f: &SlurmFactory, flag: Option<&str>) -> String {
    flag.filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .or_else(|| {
            std::env::var(BASE_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| f.base_url.clone())
        .trim()
        .to_string()
}

/// One cache read (or not).
struct Probe {
    cache: CacheUrl,
    result: Result<Catalog, String>,
}

/// Read the index of every cache, `jobs` at a time, keeping the order.
async fn probe_all(ctx: &Context, caches: Vec<CacheUrl>, jobs: usize) -> Vec<Probe> {
    futures_util::stream::iter(caches)
        .map(|cache| async move {
            let result = match ctx.open_mirror(&cache.url) {
                Ok(mut m) => {
                    m.name = cache.name.clone();
                    Catalog::load(vec![m], &ctx.index_cache())
                        .await
                        .map_err(|e| match e {
                            // The generic message advises on --mirror; here the URL is ours.
                            BuildcacheError::NotABuildcache { .. } => {
                                "no buildcache there (no v3 or v2 index)".to_string()
                            }
                            e => one_line(&e.to_string()),
                        })
                }
                Err(f) => Err(one_line(&f.message)),
            };
            if let Err(e) = &result {
                info!("{}: {e}", cache.url);
            }
            Probe { cache, result }
        })
        .buffered(jobs.max(1))
        .collect()
        .await
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// slurm list

/// What one cell's variant offers.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Offer {
    /// The build `slurm install` would take.
    Available {
        version: String,
        hash: String,
        cache: String,
        query: String,
    },
    /// The caches answered, without a matching build.
    Missing,
    /// The query cannot be answered (e.g. several builds tie).
    Error { reason: String },
    /// No cache of this variant could be read.
    Unavailable { reason: String },
}

#[derive(Debug, Serialize)]
struct CacheStatus {
    name: String,
    url: String,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SlurmBuild {
    version: String,
    hash: String,
    cache: String,
    /// The variants the Slurm Factory fragments ask about, as this build has them.
    variants: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Cell {
    /// The OS toolchain (`slurm list --toolchain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    toolchain: Option<String>,
    /// The URL scheme that answered (`slurm list --toolchain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    slurm: String,
    compiler: String,
    glibc: String,
    distros: Vec<String>,
    /// Some variant has a build.
    available: bool,
    /// Every cache failed: the first reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    caches: Vec<CacheStatus>,
    variants: BTreeMap<Variant, Offer>,
    builds: Vec<SlurmBuild>,
    gcc_runtime: Vec<String>,
}

async fn list(ctx: &Context, args: &SlurmListArgs) -> CmdResult {
    let f = factory(ctx)?;
    let base = base_url(&f, args.base.base.as_deref());
    let os_tc: Option<&OsToolchain> = args
        .toolchain
        .as_deref()
        .map(|n| f.os_toolchain(Some(n)))
        .transpose()?;
    let slurms: Vec<&SlurmRelease> = match &args.slurm_version {
        Some(v) => vec![f.slurm_release(Some(v))?],
        // The OS-toolchain caches do not publish the legacy-only releases.
        None => f
            .slurm
            .iter()
            .filter(|s| os_tc.is_none() || !s.legacy_only)
            .collect(),
    };
    let os_owned: Vec<Toolchain> = os_tc.iter().map(|o| as_gcc_toolchain(o)).collect();
    let toolchains: Vec<&Toolchain> = match (&args.compiler_version, os_owned.first()) {
        (_, Some(t)) => vec![t],
        (Some(v), None) => vec![f.toolchain(Some(v))?],
        (None, None) => f.toolchains.iter().collect(),
    };
    // Without --toolchain one (legacy) scheme; with it, every scheme, probed in order.
    let schemes: Vec<Option<&Scheme>> = match os_tc {
        Some(_) => f.schemes.iter().map(Some).collect(),
        None => vec![None],
    };
    let urls_of =
        |s: &SlurmRelease, t: &Toolchain, v: Variant, sc: Option<&Scheme>| match (sc, os_tc) {
            (Some(sc), Some(o)) => f.scheme_urls(sc, &base, s, o, v),
            _ => f.cache_urls(&base, s, t, v),
        };
    let mut all: Vec<CacheUrl> = Vec::new();
    for s in &slurms {
        for t in &toolchains {
            for sc in &schemes {
                for v in Variant::ALL {
                    for c in urls_of(s, t, v, *sc) {
                        if !all.iter().any(|a| a.url == c.url) {
                            all.push(c);
                        }
                    }
                }
            }
        }
    }
    let probes = probe_all(ctx, all, args.jobs.unwrap_or(4)).await;
    let by_url = |url: &str| probes.iter().find(|p| p.cache.url == url);
    // The scheme of a cell: the first whose caches answer (else the first).
    let scheme_of = |s: &SlurmRelease, t: &Toolchain| -> Option<&Scheme> {
        schemes
            .iter()
            .copied()
            .find(|sc| {
                Variant::ALL.iter().any(|v| {
                    urls_of(s, t, *v, *sc)
                        .iter()
                        .any(|c| by_url(&c.url).is_some_and(|p| p.result.is_ok()))
                })
            })
            .unwrap_or(schemes[0])
    };
    let host = HostTargets::detect();
    // The variant names the fragments ask about (nvml, rsmi, pmix), to describe each build.
    let mut asked: Vec<String> = Vec::new();
    for frags in f.variants.values() {
        for frag in frags {
            if let Ok(q) = Query::parse(&format!("slurm {frag}")) {
                for (k, req) in &q.variants {
                    if matches!(req, VariantReq::Bool(_)) && !asked.contains(k) {
                        asked.push(k.clone());
                    }
                }
            }
        }
    }

    let mut cells = Vec::new();
    for s in &slurms {
        for t in &toolchains {
            let mut caches: Vec<CacheStatus> = Vec::new();
            let mut variants = BTreeMap::new();
            let mut builds: Vec<SlurmBuild> = Vec::new();
            let mut runtime: Vec<String> = Vec::new();
            let scheme = scheme_of(s, t);
            for v in Variant::ALL {
                let urls = urls_of(s, t, v, scheme);
                let probed: Vec<&Probe> = urls.iter().filter_map(|c| by_url(&c.url)).collect();
                for p in &probed {
                    if !caches.iter().any(|c| c.url == p.cache.url) {
                        caches.push(CacheStatus {
                            name: p.cache.name.clone(),
                            url: p.cache.url.clone(),
                            available: p.result.is_ok(),
                            error: p.result.as_ref().err().cloned(),
                        });
                    }
                }
                let ok: Vec<&Catalog> = probed
                    .iter()
                    .filter_map(|p| p.result.as_ref().ok())
                    .collect();
                if ok.is_empty() {
                    let reason = probed
                        .iter()
                        .find_map(|p| {
                            p.result
                                .as_ref()
                                .err()
                                .map(|e| format!("{}: {e}", p.cache.name))
                        })
                        .unwrap_or_else(|| "no cache".into());
                    variants.insert(v, Offer::Unavailable { reason });
                    continue;
                }
                let catalog = Catalog::merge(&ok);
                let offer = match pick_build(&catalog, &f.slurm_queries(s, t, v), &host) {
                    Ok(Some((query, e))) => Offer::Available {
                        version: e.spec.version.clone(),
                        hash: e.spec.hash.clone(),
                        cache: catalog.mirrors[e.mirror].name.clone(),
                        query,
                    },
                    Ok(None) => Offer::Missing,
                    Err(e) => Offer::Error {
                        reason: one_line(&e.to_string()),
                    },
                };
                variants.insert(v, offer);
                let any_slurm = matrix_query(&SlurmFactory::cell_query(s, t))?;
                for e in catalog.matching(&any_slurm, false) {
                    if builds.iter().any(|b| b.hash == e.spec.hash) {
                        continue;
                    }
                    builds.push(SlurmBuild {
                        version: e.spec.version.clone(),
                        hash: e.spec.hash.clone(),
                        cache: catalog.mirrors[e.mirror].name.clone(),
                        variants: asked
                            .iter()
                            .filter_map(|k| {
                                e.spec
                                    .variants
                                    .get(k)
                                    .map(|val| crate::buildcache::catalog::format_variant(k, val))
                            })
                            .collect(),
                    });
                }
                let rt = matrix_query(&SlurmFactory::runtime_query(t))?;
                for e in catalog.matching(&rt, false) {
                    if !runtime.contains(&e.spec.version) {
                        runtime.push(e.spec.version.clone());
                    }
                }
            }
            let unavailable = if caches.iter().all(|c| !c.available) {
                caches
                    .iter()
                    .find_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.name)))
            } else {
                None
            };
            cells.push(Cell {
                toolchain: os_tc.map(|o| o.name.clone()),
                scheme: scheme.map(|sc| sc.name.clone()),
                slurm: s.version.clone(),
                compiler: t.gcc.clone(),
                glibc: t.glibc.clone(),
                distros: t.distros.clone(),
                available: variants
                    .values()
                    .any(|o| matches!(o, Offer::Available { .. })),
                unavailable,
                caches,
                variants,
                builds,
                gcc_runtime: runtime,
            });
        }
    }
    if ctx.out.json {
        ctx.out.json(&cells)?;
        return Ok(());
    }
    let offer_text = |o: Option<&Offer>| match o {
        Some(Offer::Available { version, hash, .. }) => format!("{version} /{}", short(hash)),
        Some(Offer::Missing) | None => "-".into(),
        Some(Offer::Error { reason }) => format!("error: {reason}"),
        Some(Offer::Unavailable { .. }) => "unavailable".into(),
    };
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let mut row = vec![c.slurm.clone(), c.compiler.clone(), c.glibc.clone()];
            if let Some(reason) = &c.unavailable {
                row.extend(["-", "-", "-", "-"].map(String::from));
                row.push(format!("unavailable: {reason}"));
                return row;
            }
            for v in Variant::ALL {
                row.push(offer_text(c.variants.get(&v)));
            }
            row.push(if c.gcc_runtime.is_empty() {
                "-".into()
            } else {
                c.gcc_runtime.join(",")
            });
            let notes: Vec<String> = c
                .caches
                .iter()
                .filter_map(|k| {
                    k.error
                        .as_ref()
                        .map(|e| format!("{} unavailable: {e}", k.name))
                })
                .collect();
            let mut notes = notes;
            if let Some(sc) = &c.scheme {
                notes.insert(0, format!("scheme {sc}"));
            }
            row.push(notes.join("; "));
            row
        })
        .collect();
    ctx.out.table(
        &[
            "SLURM", "GCC", "GLIBC", "DEFAULT", "GPU", "MINIMAL", "RUNTIME", "NOTE",
        ],
        &rows,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// slurm install

#[derive(Debug, Serialize)]
struct SlurmInstallOutput<'a> {
    slurm_version: String,
    compiler_version: String,
    variant: Variant,
    query: String,
    slurm_hash: String,
    caches: Vec<CacheStatus>,
    root: String,
    #[serde(flatten)]
    report: &'a InstallReport,
    view: Option<String>,
    module_dir: String,
    /// The modules written.
    modules: Vec<WrittenModule>,
}

async fn install_slurm(ctx: &Context, args: &SlurmInstallArgs) -> CmdResult {
    let f = factory(ctx)?;
    let variant = Variant::from_flags(args.gpu, args.minimal).ok_or_else(|| {
        Failure::usage("--gpu and --minimal exclude each other: give one of them, or neither for the default build")
    })?;
    let s = f.slurm_release(args.slurm_version.as_deref())?;
    let base = base_url(&f, args.base.base.as_deref());
    if let Some(name) = &args.toolchain {
        let os_tc = f.os_toolchain(Some(name))?;
        if let Some(host) = glibc::host_glibc() {
            if let Some(refusal) = os::refuse(&host, os_tc, &f.os_toolchains) {
                if !args.force {
                    return Err(Failure::usage(refusal));
                }
                warn!("{refusal}");
            }
        }
        let owned = as_gcc_toolchain(os_tc);
        // The schemes in order: the first whose caches answer serves the cell.
        let mut tried = Vec::new();
        for scheme in &f.schemes {
            let caches = f.scheme_urls(scheme, &base, s, os_tc, variant);
            let probes = probe_all(ctx, caches, 4).await;
            if probes.iter().any(|p| p.result.is_ok()) {
                info!(
                    "Slurm Factory: toolchain {} served by scheme {}",
                    os_tc.name, scheme.name
                );
                return install_from(ctx, args, &f, s, &owned, variant, &base, probes).await;
            }
            tried.extend(probes);
        }
        return install_from(ctx, args, &f, s, &owned, variant, &base, tried).await;
    }
    let t = f.toolchain(args.compiler_version.as_deref())?;
    match glibc::host_glibc() {
        Some(host) => {
            if let Some(w) = glibc::check(&host, t, &f.toolchains) {
                warn!("{w}");
            }
        }
        None => info!(
            "the host glibc version is unknown: not checked against {}",
            t.describe()
        ),
    }
    let caches = f.cache_urls(&base, s, t, variant);
    let probes = probe_all(ctx, caches, 4).await;
    install_from(ctx, args, &f, s, t, variant, &base, probes).await
}

/// The install once the caches of the cell are probed.
#[allow(clippy::too_many_arguments)]
async fn install_from(
    ctx: &Context,
    args: &SlurmInstallArgs,
    f: &SlurmFactory,
    s: &SlurmRelease,
    t: &Toolchain,
    variant: Variant,
    base: &str,
    probes: Vec<Probe>,
) -> CmdResult {
    for p in &probes {
        if let Err(e) = &p.result {
            warn!(
                "Slurm Factory cache {} ({}) is unavailable: {e}",
                p.cache.name, p.cache.url
            );
        }
    }
    let statuses: Vec<CacheStatus> = probes
        .iter()
        .map(|p| CacheStatus {
            name: p.cache.name.clone(),
            url: p.cache.url.clone(),
            available: p.result.is_ok(),
            error: p.result.as_ref().err().cloned(),
        })
        .collect();
    let ok: Vec<&Probe> = probes.iter().filter(|p| p.result.is_ok()).collect();
    let build_on_miss = args.build_on_miss && !args.dry_run;
    if ok.is_empty() && !build_on_miss {
        let reasons: Vec<String> = probes
            .iter()
            .filter_map(|p| {
                p.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", p.cache.url))
            })
            .collect();
        return Err(Failure::new(
            exit::FAILURE,
            format!(
                "no Slurm Factory cache for Slurm {} / GCC {} could be read ({}); check --base (now {base}) and the network",
                s.version,
                t.gcc,
                reasons.join("; ")
            ),
        ));
    }
    let catalog = Catalog::merge(
        &ok.iter()
            .filter_map(|p| p.result.as_ref().ok())
            .collect::<Vec<_>>(),
    );
    let host = HostTargets::detect();
    let queries = f.slurm_queries(s, t, variant);
    // Mirrors the install (and a build on a miss) reads: the caches that answered.
    let mirror_args = MirrorArgs {
        mirrors: ok.iter().map(|p| p.cache.url.clone()).collect(),
    };
    let mut catalog = catalog;
    if build_on_miss && pick_build(&catalog, &queries, &host)?.is_none() {
        // Nothing matched: build the variant's first (most specific) query from source; the
        // catalog then includes the local buildcache the build published into.
        catalog = super::source_build::on_miss(ctx, &queries[0], &mirror_args, &args.build).await?;
    }
    let Some((query, entry)) = pick_build(&catalog, &queries, &host)? else {
        return Err(Failure::new(
            exit::NO_MATCH,
            format!(
                "the Slurm Factory caches ({}) have no {variant} build of Slurm {} for GCC {} (tried `{}`); `sf-cache slurm list --slurm-version {} --compiler-version {}` shows what they offer",
                ok.iter().map(|p| p.cache.name.as_str()).collect::<Vec<_>>().join(", "),
                s.version,
                t.gcc,
                queries.join("`, `"),
                s.version,
                t.gcc
            ),
        ));
    };
    let slurm_hash = entry.spec.hash.clone();
    info!(
        "Slurm Factory: {query} → {}@{} /{} from {}",
        entry.spec.name,
        entry.spec.version,
        short(&slurm_hash),
        catalog.mirrors[entry.mirror].name
    );
    // The GCC runtime: Slurm's own when its closure has one, else the toolchain's from the caches.
    let closure_has_runtime = catalog
        .closure(&slurm_hash)?
        .iter()
        .any(|n| n.name == "gcc-runtime");
    let mut install_queries = Vec::new();
    if !closure_has_runtime {
        let rq = SlurmFactory::runtime_query(t);
        let parsed = Query::parse(&rq).map_err(|e| Failure::usage(e.to_string()))?;
        match catalog.best_match(&parsed, &host) {
            Ok(_) => install_queries.push(rq),
            Err(e) => info!("no GCC runtime installed besides Slurm's closure: {e}"),
        }
    }
    install_queries.push(query.clone());
    let install_mirrors = MirrorArgs {
        mirrors: catalog.mirrors.iter().map(|m| m.url.clone()).collect(),
    };
    let request = InstallRequest {
        spack_lock: None,
        queries: install_queries,
        mirrors: &install_mirrors,
        root: &args.root,
        projection: None,
        jobs: args.jobs,
        dry_run: args.dry_run,
        offline: ctx.offline,
        view: args.view.as_deref(),
        write_lockfile: None,
        lockfile: None,
        allow_setuid: false,
        build_on_miss: false,
        build: &args.build,
    };
    let Some(done) = install(ctx, &request, Some(catalog)).await? else {
        return Ok(());
    };
    let module_dir = args
        .module_dir
        .clone()
        .unwrap_or_else(|| done.root.join("modules"));
    let modules = write_modules(
        &done.root,
        std::slice::from_ref(&slurm_hash),
        &ModuleOptions {
            module_dir: module_dir.clone(),
            templates_dir: args.module_templates.clone(),
            view: done.view.as_ref().map(PathBuf::from),
        },
    )
    .map_err(|e| {
        Failure::new(
            super::exit::code(e.kind()),
            format!("Slurm is installed, but its module is not: {e}"),
        )
    })?;
    report(
        ctx,
        SlurmInstallOutput {
            slurm_version: s.version.clone(),
            compiler_version: t.gcc.clone(),
            variant,
            query,
            slurm_hash,
            caches: statuses,
            root: done.root.display().to_string(),
            report: &done.report,
            view: done.view.clone(),
            module_dir: module_dir.display().to_string(),
            modules,
        },
        &done,
    )
}

fn report(ctx: &Context, out: SlurmInstallOutput<'_>, done: &Installed) -> CmdResult {
    if ctx.out.json {
        ctx.out.json(&out)?;
    } else if !ctx.global.quiet {
        print_report_lines(ctx, done)?;
        for m in &out.modules {
            ctx.out.line(format!("module {}", m.path.display()))?;
        }
        if !out.modules.is_empty() {
            ctx.out.line(format!(
                "load it with: module use {} && module load slurm/{}",
                out.module_dir, out.modules[0].version
            ))?;
        }
    }
    Ok(())
}

/// An OS toolchain as the GCC toolchain its builds are queried by.
fn as_gcc_toolchain(o: &OsToolchain) -> Toolchain {
    Toolchain {
        gcc: o.gcc.clone(),
        glibc: o.glibc.clone(),
        distros: vec![],
        note: Some(o.name.clone()),
    }
}

/// A query made from the Slurm Factory matrix (checked when the matrix was loaded).
fn matrix_query(q: &str) -> Result<Query, Failure> {
    Query::parse(q).map_err(|e| {
        Failure::usage(format!(
            "[slurm_factory]: the matrix makes the query `{q}`, which does not parse ({e}); fix the versions in the config"
        ))
    })
}
