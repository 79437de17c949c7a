//! `sf-cache slurm list|install`: the Slurm Factory caches by Slurm release, GCC toolchain and
//! build variant: the edge of `slurm_factory` (matrix, probes, picking the build), which it
//! prints, and of the install flow.

use std::path::PathBuf;

use serde::Serialize;
use tracing::{info, warn};

use super::install_flow::{install, print_report_lines, InstallRequest, Installed};
use super::{exit, CmdResult, Context, Failure};
use crate::buildcache::catalog::short;
use crate::buildcache::Catalog;
use crate::cli::{
    MirrorArgs, NodeArgs, SlurmCommand, SlurmInstallArgs, SlurmListArgs, SlurmSetupArgs,
};
use crate::install::installer::InstallReport;
use crate::modules::{write_modules, ModuleOptions, WrittenModule};
use crate::node::{NodeError, Roles, SetupOptions, SetupReport};
use crate::slurm_factory::matrix::{Matrix, Offer};
use crate::slurm_factory::probe::{probe_all, CacheStatus, Probe};
use crate::slurm_factory::{
    glibc, install_queries, os, pick_build, CacheUrl, FactoryError, SlurmFactory, SlurmRelease,
    Toolchain, Variant, BASE_ENV,
};
use crate::spec::HostTargets;

pub async fn run(ctx: &Context, cmd: &SlurmCommand) -> CmdResult {
    match cmd {
        SlurmCommand::List(a) => list(ctx, a).await,
        SlurmCommand::Install(a) => install_slurm(ctx, a).await,
        SlurmCommand::Setup(a) => setup(ctx, a),
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

/// The OS toolchain to use: `--toolchain`, else none with `--compiler-version` or `--legacy`
/// (the legacy GCC-keyed scheme), else the host's from its os-release (noble, with a note, when
/// the host has none of the matrix).
fn chosen_toolchain(f: &SlurmFactory, flag: Option<&str>, legacy: bool) -> Option<String> {
    if let Some(name) = flag {
        return Some(name.to_string());
    }
    if legacy {
        return None;
    }
    let text = std::fs::read_to_string(os::os_release_path()).ok();
    let (tc, note) = f.host_toolchain(text.as_deref());
    if let Some(note) = note {
        warn!("{note}");
    }
    Some(tc.name.clone())
}

/// Read the caches' indexes (the store options, offline mode and metadata cache of `ctx`).
async fn probe(ctx: &Context, caches: Vec<CacheUrl>, jobs: usize) -> Vec<Probe> {
    let open = |c: &CacheUrl| ctx.open_mirror(&c.url).map_err(|f| f.message);
    probe_all(caches, jobs, open, &ctx.index_cache()).await
}

// ---------------------------------------------------------------------------------------------
// slurm list

async fn list(ctx: &Context, args: &SlurmListArgs) -> CmdResult {
    let f = factory(ctx)?;
    let base = base_url(&f, args.base.base.as_deref());
    let toolchain = chosen_toolchain(
        &f,
        args.toolchain.as_deref(),
        args.legacy || args.compiler_version.is_some(),
    );
    let matrix = Matrix::new(
        &f,
        &base,
        args.slurm_version.as_deref(),
        args.compiler_version.as_deref(),
        toolchain.as_deref(),
    )?;
    let probes = probe(ctx, matrix.caches(), args.jobs.unwrap_or(4)).await;
    let cells = matrix.cells(&probes, &HostTargets::detect())?;
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
    /// `--setup ROLES`: the node set up after the install.
    #[serde(skip_serializing_if = "Option::is_none")]
    setup: Option<SetupReport>,
}

async fn install_slurm(ctx: &Context, args: &SlurmInstallArgs) -> CmdResult {
    if let Some(roles) = &args.setup {
        Roles::parse(roles)?; // a bad role is refused before anything is installed
    }
    let f = factory(ctx)?;
    let variant = Variant::from_flags(args.gpu, args.minimal).ok_or_else(|| {
        Failure::usage("--gpu and --minimal exclude each other: give one of them, or neither for the default build")
    })?;
    let s = f.slurm_release(args.slurm_version.as_deref())?;
    let base = base_url(&f, args.base.base.as_deref());
    let toolchain = chosen_toolchain(
        &f,
        args.toolchain.as_deref(),
        args.compiler_version.is_some(),
    );
    if let Some(name) = &toolchain {
        let os_tc = f.os_toolchain(Some(name))?;
        if let Some(host) = glibc::host_glibc() {
            if let Some(refusal) = os::refuse(&host, os_tc, &f.os_toolchains) {
                if !args.force {
                    return Err(Failure::usage(refusal));
                }
                warn!("{refusal}");
            }
        }
        let owned = os_tc.as_toolchain();
        // The schemes in order: the first whose caches answer serves the cell.
        let mut tried = Vec::new();
        for scheme in &f.schemes {
            let caches = f.scheme_urls(scheme, &base, s, os_tc, variant);
            let probes = probe(ctx, caches, 4).await;
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
    let probes = probe(ctx, caches, 4).await;
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
    let statuses: Vec<CacheStatus> = probes.iter().map(Probe::status).collect();
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
    let install_mirrors = MirrorArgs {
        mirrors: catalog.mirrors.iter().map(|m| m.url.clone()).collect(),
    };
    let request = InstallRequest {
        spack_lock: None,
        queries: install_queries(&catalog, t, &query, &slurm_hash, &host)?,
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
    // `--setup ROLES`: the node, once Slurm and its module are in place.
    let node = match &args.setup {
        Some(roles) => {
            let opts = setup_options(roles, &done.root, &args.node, false, false)?;
            Some(crate::node::setup(&opts).map_err(|e| {
                Failure::new(
                    exit::code(e.kind()),
                    format!("Slurm is installed, but the node is not set up: {e}"),
                )
            })?)
        }
        None => None,
    };
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
            setup: node,
        },
        &done,
    )
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Failure {
        Failure::new(exit::code(e.kind()), e.to_string())
    }
}

fn setup_options(
    roles: &str,
    root: &std::path::Path,
    n: &NodeArgs,
    force: bool,
    dry_run: bool,
) -> Result<SetupOptions, Failure> {
    Ok(SetupOptions {
        roles: Roles::parse(roles)?,
        root: root.to_path_buf(),
        cluster: n.cluster.clone(),
        controller: n.controller.clone(),
        munge_key: n.munge_key.clone(),
        dirs: crate::node::Dirs {
            sysconf: n.sysconfdir.clone(),
            localstate: n.localstatedir.clone(),
            run: n.rundir.clone(),
            systemd: n.systemd_dir.clone(),
        },
        force: force || n.force_config,
        users: !n.no_users,
        dry_run,
    })
}

/// `sf-cache slurm setup`.
fn setup(ctx: &Context, a: &SlurmSetupArgs) -> CmdResult {
    let opts = setup_options(&a.role, &a.root, &a.node, a.force, a.dry_run)?;
    if a.check {
        let lines = crate::node::check(&opts)?;
        let failed = lines.iter().filter(|l| !l.ok).count();
        if ctx.out.json {
            ctx.out.json(&lines)?;
        } else {
            for l in &lines {
                let tag = if l.ok { "ok  " } else { "FAIL" };
                ctx.out.line(format!("{tag} {}: {}", l.check, l.detail))?;
            }
        }
        if failed > 0 {
            return Err(Failure::new(
                exit::FAILURE,
                format!("{failed} check(s) of the node failed (see above)"),
            ));
        }
        return Ok(());
    }
    let report = crate::node::setup(&opts)?;
    print_setup(ctx, &report)
}

fn print_setup(ctx: &Context, r: &SetupReport) -> CmdResult {
    if ctx.out.json {
        ctx.out.json(r)?;
        return Ok(());
    }
    if ctx.global.quiet {
        return Ok(());
    }
    for f in &r.files {
        ctx.out.line(format!(
            "{:<11} {} ({} {})",
            f.action, f.path, f.mode, f.owner
        ))?;
        if let Some(c) = &f.content {
            for l in c.lines() {
                ctx.out.line(format!("    {l}"))?;
            }
        }
    }
    for u in &r.users_created {
        ctx.out.line(format!("created user and group {u}"))?;
    }
    if !r.dry_run {
        ctx.out.line(format!(
            "node ready for {}: start {} (systemctl daemon-reload && systemctl enable --now {}), or run them in the foreground:",
            r.roles
                .iter()
                .map(|x| x.name())
                .collect::<Vec<_>>()
                .join(","),
            r.daemons.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            r.daemons
                .iter()
                .map(|d| format!("{}.service", d.name))
                .collect::<Vec<_>>()
                .join(" ")
        ))?;
        for d in &r.daemons {
            ctx.out.line(format!(
                "  {}{}",
                d.environment
                    .iter()
                    .map(|e| format!("{e} "))
                    .collect::<String>(),
                d.command.join(" ")
            ))?;
        }
        ctx.out
            .line(format!("clients: export SLURM_CONF={}", r.slurm_conf))?;
    }
    Ok(())
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
        if let Some(node) = &out.setup {
            print_setup(ctx, node)?;
        }
    }
    Ok(())
}
