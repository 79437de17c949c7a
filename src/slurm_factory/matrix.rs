//! The `slurm list` matrix: which caches the cells of a selection read, and, once they are read,
//! what each cell offers per variant (the build `slurm install` would take), every Slurm build
//! of the cell and the GCC runtimes beside them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::probe::{one_line, CacheStatus, Probe};
use super::{
    pick_build, CacheUrl, FactoryError, OsToolchain, Scheme, SlurmFactory, SlurmRelease, Toolchain,
    Variant,
};
use crate::buildcache::catalog::format_variant;
use crate::buildcache::Catalog;
use crate::spec::{HostTargets, Query, VariantReq};

/// What one cell's variant offers.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Offer {
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

/// One Slurm build a cell's caches hold.
#[derive(Debug, Serialize)]
pub struct SlurmBuild {
    pub version: String,
    pub hash: String,
    pub cache: String,
    /// The variants the Slurm Factory fragments ask about, as this build has them.
    pub variants: Vec<String>,
}

/// One cell: a Slurm release built with one toolchain.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// The OS toolchain (`slurm list --toolchain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The URL scheme that answered (`slurm list --toolchain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    pub slurm: String,
    pub compiler: String,
    pub glibc: String,
    pub distros: Vec<String>,
    /// Some variant has a build.
    pub available: bool,
    /// Every cache failed: the first reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub caches: Vec<CacheStatus>,
    pub variants: BTreeMap<Variant, Offer>,
    pub builds: Vec<SlurmBuild>,
    pub gcc_runtime: Vec<String>,
}

/// The cells a `slurm list` selection covers.
pub struct Matrix<'f> {
    f: &'f SlurmFactory,
    base: String,
    slurms: Vec<&'f SlurmRelease>,
    toolchains: Vec<Toolchain>,
    os_tc: Option<&'f OsToolchain>,
    /// Without an OS toolchain one (legacy) scheme, `None`; with it, every scheme in order.
    schemes: Vec<Option<&'f Scheme>>,
}

impl<'f> Matrix<'f> {
    /// The selection: one Slurm release or all; one OS toolchain (every scheme, probed in order),
    /// one GCC toolchain or all GCC toolchains (the legacy scheme).
    pub fn new(
        f: &'f SlurmFactory,
        base: &str,
        slurm_version: Option<&str>,
        compiler_version: Option<&str>,
        toolchain: Option<&str>,
    ) -> Result<Matrix<'f>, FactoryError> {
        let os_tc = toolchain.map(|n| f.os_toolchain(Some(n))).transpose()?;
        let slurms: Vec<&SlurmRelease> = match slurm_version {
            Some(v) => vec![f.slurm_release(Some(v))?],
            // The OS-toolchain caches do not publish the legacy-only releases.
            None => f
                .slurm
                .iter()
                .filter(|s| os_tc.is_none() || !s.legacy_only)
                .collect(),
        };
        let toolchains: Vec<Toolchain> = match (os_tc, compiler_version) {
            (Some(o), _) => vec![o.as_toolchain()],
            (None, Some(v)) => vec![f.toolchain(Some(v))?.clone()],
            (None, None) => f.toolchains.clone(),
        };
        let schemes = match os_tc {
            Some(_) => f.schemes.iter().map(Some).collect(),
            None => vec![None],
        };
        Ok(Matrix {
            f,
            base: base.to_string(),
            slurms,
            toolchains,
            os_tc,
            schemes,
        })
    }

    fn urls(
        &self,
        s: &SlurmRelease,
        t: &Toolchain,
        v: Variant,
        sc: Option<&Scheme>,
    ) -> Vec<CacheUrl> {
        match (sc, self.os_tc) {
            (Some(sc), Some(o)) => self.f.scheme_urls(sc, &self.base, s, o, v),
            _ => self.f.cache_urls(&self.base, s, t, v),
        }
    }

    /// Every cache the selection reads, once each, in matrix order.
    pub fn caches(&self) -> Vec<CacheUrl> {
        let mut all: Vec<CacheUrl> = Vec::new();
        for s in &self.slurms {
            for t in &self.toolchains {
                for sc in &self.schemes {
                    for v in Variant::ALL {
                        for c in self.urls(s, t, v, *sc) {
                            if !all.iter().any(|a| a.url == c.url) {
                                all.push(c);
                            }
                        }
                    }
                }
            }
        }
        all
    }

    /// The cells, once `probes` (of [`Matrix::caches`]) are read.
    pub fn cells(&self, probes: &[Probe], host: &HostTargets) -> Result<Vec<Cell>, FactoryError> {
        let by_url = |url: &str| probes.iter().find(|p| p.cache.url == url);
        // The scheme of a cell: the first whose caches answer (else the first).
        let scheme_of = |s: &SlurmRelease, t: &Toolchain| -> Option<&Scheme> {
            self.schemes
                .iter()
                .copied()
                .find(|sc| {
                    Variant::ALL.iter().any(|v| {
                        self.urls(s, t, *v, *sc)
                            .iter()
                            .any(|c| by_url(&c.url).is_some_and(|p| p.result.is_ok()))
                    })
                })
                .unwrap_or(self.schemes[0])
        };
        let asked = self.f.asked_variants();
        let mut cells = Vec::new();
        for s in &self.slurms {
            for t in &self.toolchains {
                let scheme = scheme_of(s, t);
                let mut caches: Vec<CacheStatus> = Vec::new();
                let mut variants = BTreeMap::new();
                let mut builds: Vec<SlurmBuild> = Vec::new();
                let mut runtime: Vec<String> = Vec::new();
                for v in Variant::ALL {
                    let probed: Vec<&Probe> = self
                        .urls(s, t, v, scheme)
                        .iter()
                        .filter_map(|c| by_url(&c.url))
                        .collect();
                    for p in &probed {
                        if !caches.iter().any(|c| c.url == p.cache.url) {
                            caches.push(p.status());
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
                    let offer = match pick_build(&catalog, &self.f.slurm_queries(s, t, v), host) {
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
                                    e.spec.variants.get(k).map(|val| format_variant(k, val))
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
                    toolchain: self.os_tc.map(|o| o.name.clone()),
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
        Ok(cells)
    }
}

impl SlurmFactory {
    /// The boolean variants the fragments ask about (nvml, rsmi, pmix), to describe each build.
    pub fn asked_variants(&self) -> Vec<String> {
        let mut asked: Vec<String> = Vec::new();
        for frags in self.variants.values() {
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
        asked
    }
}

/// A query made from the matrix (checked when the matrix was loaded).
pub(super) fn matrix_query(q: &str) -> Result<Query, FactoryError> {
    Query::parse(q).map_err(|e| FactoryError::Invalid {
        origin: "[slurm_factory]".into(),
        reason: format!("the matrix makes the query `{q}`, which does not parse ({e}); fix the versions in the config"),
    })
}
