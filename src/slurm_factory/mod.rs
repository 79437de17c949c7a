//! Slurm Factory named caches: the Slurm/GCC version matrix, the build variants and the URL scheme
//! of the caches, all of it data (the embedded `default.toml`, overridable by the config file's
//! `[slurm_factory]` table).
//!
//! Pure but for reading the host (glibc version, os-release) and [`probe`], which reads the
//! caches' indexes; [`matrix`] makes `slurm list`'s cells from what the probes read.

pub mod glibc;
pub mod matrix;
pub mod os;
pub mod probe;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::buildcache::{BuildcacheError, Catalog, CatalogEntry};
use crate::spec::{HostTargets, Query, Version};
pub use os::OsToolchain;

/// The defaults compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Environment variable that overrides the base URL (below `--base`, above the config).
pub const BASE_ENV: &str = "SF_CACHE_SLURM_FACTORY_BASE";

/// The placeholders a URL template may use.
pub const PLACEHOLDERS: &[&str] = &["base", "slurm", "gcc", "glibc", "variant", "toolchain"];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FactoryError {
    #[error("unknown Slurm version `{given}`: valid versions are {valid}")]
    UnknownSlurm { given: String, valid: String },
    #[error("unknown compiler version `{given}`: valid GCC toolchains are {valid}")]
    UnknownCompiler { given: String, valid: String },
    #[error("unknown toolchain `{given}`: valid toolchains are {valid}")]
    UnknownToolchain { given: String, valid: String },
    #[error("{origin}: {reason}; fix the `[slurm_factory]` table (keys: docs/slurm-factory.md)")]
    Invalid { origin: String, reason: String },
}

/// A build variant of the Slurm caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Default,
    Gpu,
    Minimal,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Default, Variant::Gpu, Variant::Minimal];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Gpu => "gpu",
            Variant::Minimal => "minimal",
        }
    }

    /// From the `--gpu` / `--minimal` flags (both: a usage error, reported by the caller).
    pub fn from_flags(gpu: bool, minimal: bool) -> Option<Variant> {
        match (gpu, minimal) {
            (true, true) => None,
            (true, false) => Some(Variant::Gpu),
            (false, true) => Some(Variant::Minimal),
            (false, false) => Some(Variant::Default),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Slurm release of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmRelease {
    /// As users and URLs spell it, e.g. `25.11`.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Published in the legacy (GCC-keyed) scheme only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_only: bool,
}

/// One URL scheme: its name (shown by `slurm list`) and the caches of a cell, in mirror order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scheme {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub templates: Vec<String>,
}

/// One GCC toolchain of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchain {
    pub gcc: String,
    /// The oldest glibc its binaries run on.
    pub glibc: String,
    #[serde(default)]
    pub distros: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Toolchain {
    /// `GCC 13.4.0 (glibc 2.39; Ubuntu 24.04)`.
    pub fn describe(&self) -> String {
        let mut s = format!("GCC {} (glibc {}", self.gcc, self.glibc);
        if !self.distros.is_empty() {
            s.push_str("; ");
            s.push_str(&self.distros.join(", "));
        }
        s.push(')');
        s
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    base_url: String,
    url_templates: Vec<String>,
    default_slurm_version: String,
    default_compiler_version: String,
    slurm: Vec<SlurmRelease>,
    toolchain: Vec<Toolchain>,
    variants: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    scheme: Vec<Scheme>,
    #[serde(default)]
    os_toolchain: Vec<OsToolchain>,
    #[serde(default)]
    default_toolchain: Option<String>,
}

/// The Slurm Factory layer's data: defaults merged with the config's `[slurm_factory]` table,
/// checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlurmFactory {
    pub base_url: String,
    pub url_templates: Vec<String>,
    pub default_slurm_version: String,
    pub default_compiler_version: String,
    pub slurm: Vec<SlurmRelease>,
    pub toolchains: Vec<Toolchain>,
    /// Variant → query fragments, tried in order.
    pub variants: BTreeMap<Variant, Vec<String>>,
    /// URL schemes, probed in this order per cell.
    pub schemes: Vec<Scheme>,
    /// OS toolchains of the current caches.
    pub os_toolchains: Vec<OsToolchain>,
    pub default_toolchain: String,
}

/// One cache of a cell: a name for messages and its URL (or path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheUrl {
    pub name: String,
    pub url: String,
}

impl SlurmFactory {
    /// The embedded defaults, with `overrides` (the config's `[slurm_factory]` table) applied.
    /// `origin` names where the overrides come from, for messages.
    pub fn load(
        overrides: Option<&toml::Table>,
        origin: &str,
    ) -> Result<SlurmFactory, FactoryError> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e: toml::de::Error| FactoryError::Invalid {
                origin: "embedded default.toml".into(),
                reason: e.message().to_string(),
            })?;
        if let Some(o) = overrides {
            merge(&mut table, o);
        }
        let origin = if overrides.is_some() {
            origin.to_string()
        } else {
            "embedded default.toml".to_string()
        };
        let invalid = |reason: String| FactoryError::Invalid {
            origin: origin.clone(),
            reason,
        };
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
        let mut variants = BTreeMap::new();
        for (name, frags) in raw.variants {
            let v = Variant::ALL
                .into_iter()
                .find(|v| v.as_str() == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "unknown variant `{name}` in `variants` (known: default, gpu, minimal)"
                    ))
                })?;
            let frags = match frags {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(l) => l,
            };
            if frags.is_empty() {
                return Err(invalid(format!(
                    "variant `{name}` has no query fragment (use \"\" for no constraint)"
                )));
            }
            for f in &frags {
                let q = Query::parse(&format!("slurm {f}")).map_err(|e| {
                    invalid(format!(
                        "variant `{name}`: fragment `{f}` is not a query: {e}"
                    ))
                })?;
                if q.name.as_deref() != Some("slurm") || q.version.is_some() || q.compiler.is_some()
                {
                    return Err(invalid(format!(
                        "variant `{name}`: fragment `{f}` may not name a package, @version or %compiler (they come from the matrix)"
                    )));
                }
            }
            variants.insert(v, frags);
        }
        for v in Variant::ALL {
            if !variants.contains_key(&v) {
                return Err(invalid(format!("`variants` has no `{v}` entry")));
            }
        }
        if raw.url_templates.is_empty() {
            return Err(invalid("`url_templates` is empty".into()));
        }
        for t in &raw.url_templates {
            check_template(t).map_err(&invalid)?;
        }
        for sc in &raw.scheme {
            if sc.templates.is_empty() {
                return Err(invalid(format!("scheme `{}` has no `templates`", sc.name)));
            }
            for t in &sc.templates {
                check_template(t).map_err(|r| invalid(format!("scheme `{}`: {r}", sc.name)))?;
            }
        }
        for t in &raw.os_toolchain {
            for v in [&t.gcc, &t.glibc] {
                Version::parse(v)
                    .map_err(|e| invalid(format!("os_toolchain `{}`: `{v}`: {e}", t.name)))?;
            }
        }
        let default_toolchain = raw.default_toolchain.unwrap_or_default();
        if !raw.os_toolchain.is_empty()
            && !raw.os_toolchain.iter().any(|t| t.name == default_toolchain)
        {
            return Err(invalid(format!(
                "default_toolchain `{default_toolchain}` is not an `os_toolchain` name"
            )));
        }
        if raw.slurm.is_empty() || raw.toolchain.is_empty() {
            return Err(invalid(
                "the matrix needs at least one `slurm` and one `toolchain`".into(),
            ));
        }
        for s in &raw.slurm {
            Version::parse(&s.version)
                .map_err(|e| invalid(format!("slurm version `{}`: {e}", s.version)))?;
        }
        for t in &raw.toolchain {
            for v in [&t.gcc, &t.glibc] {
                Version::parse(v)
                    .map_err(|e| invalid(format!("toolchain `{}`: `{v}`: {e}", t.gcc)))?;
            }
        }
        let f = SlurmFactory {
            base_url: raw.base_url,
            url_templates: raw.url_templates,
            default_slurm_version: raw.default_slurm_version,
            default_compiler_version: raw.default_compiler_version,
            slurm: raw.slurm,
            toolchains: raw.toolchain,
            variants,
            schemes: raw.scheme,
            os_toolchains: raw.os_toolchain,
            default_toolchain,
        };
        f.slurm_release(Some(&f.default_slurm_version))
            .map_err(|e| invalid(format!("default_slurm_version: {e}")))?;
        f.toolchain(Some(&f.default_compiler_version))
            .map_err(|e| invalid(format!("default_compiler_version: {e}")))?;
        Ok(f)
    }

    /// The release named `given` (separators alike: `25-11` is `25.11`), else the default.
    pub fn slurm_release(&self, given: Option<&str>) -> Result<&SlurmRelease, FactoryError> {
        let given = given.unwrap_or(&self.default_slurm_version);
        find_version(&self.slurm, given, |s| &s.version).ok_or_else(|| FactoryError::UnknownSlurm {
            given: given.to_string(),
            valid: self
                .slurm
                .iter()
                .map(|s| s.version.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The toolchain named `given`, else the default.
    pub fn toolchain(&self, given: Option<&str>) -> Result<&Toolchain, FactoryError> {
        let given = given.unwrap_or(&self.default_compiler_version);
        find_version(&self.toolchains, given, |t| &t.gcc).ok_or_else(|| {
            FactoryError::UnknownCompiler {
                given: given.to_string(),
                valid: self
                    .toolchains
                    .iter()
                    .map(|t| t.gcc.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
    }

    /// The OS toolchain named `given`, else the default.
    pub fn os_toolchain(&self, given: Option<&str>) -> Result<&OsToolchain, FactoryError> {
        let given = given.unwrap_or(&self.default_toolchain).trim();
        self.os_toolchains
            .iter()
            .find(|t| t.name == given)
            .ok_or_else(|| FactoryError::UnknownToolchain {
                given: given.to_string(),
                valid: self.os_toolchain_names().join(", "),
            })
    }

    pub fn os_toolchain_names(&self) -> Vec<&str> {
        self.os_toolchains.iter().map(|t| t.name.as_str()).collect()
    }

    /// The host's toolchain from an os-release text: the toolchain, or the default with a note
    /// saying why.
    pub fn host_toolchain(&self, os_release: Option<&str>) -> (&OsToolchain, Option<String>) {
        let fallback = |why: String| {
            let t = self.os_toolchain(None).ok().or(self.os_toolchains.first());
            (t, Some(why))
        };
        let (t, note) = match os_release.map(|r| os::detect(r, &self.os_toolchain_names())) {
            Some(os::Detected::Known(n)) => (self.os_toolchain(Some(&n)).ok(), None),
            Some(os::Detected::Unknown(what)) => fallback(format!(
                "no Slurm Factory toolchain for {what}: using {} (choose with --toolchain)",
                self.default_toolchain
            )),
            None => fallback(format!(
                "no os-release to read: using toolchain {} (choose with --toolchain)",
                self.default_toolchain
            )),
        };
        // load() checked the default names a toolchain; an empty table has no host toolchain.
        match t {
            Some(t) => (t, note),
            None => (&self.os_toolchains[0], note),
        }
    }

    /// The caches of one OS-toolchain cell in `scheme`, in mirror order, without duplicates.
    pub fn scheme_urls(
        &self,
        scheme: &Scheme,
        base: &str,
        slurm: &SlurmRelease,
        tc: &OsToolchain,
        variant: Variant,
    ) -> Vec<CacheUrl> {
        let base = base.trim_end_matches('/');
        let gcc = tc.as_toolchain();
        unique_caches(
            base,
            scheme.templates.iter().map(|t| {
                render(
                    &t.replace("{toolchain}", &tc.name),
                    base,
                    slurm,
                    &gcc,
                    variant,
                )
            }),
        )
    }

    /// The caches of one cell, in mirror order, without duplicates. `base` is the base URL or
    /// path (a trailing `/` is ignored).
    pub fn cache_urls(
        &self,
        base: &str,
        slurm: &SlurmRelease,
        tc: &Toolchain,
        variant: Variant,
    ) -> Vec<CacheUrl> {
        // `/` (a root) trims to "", so `{base}/slurm` is still `/slurm`.
        let base = base.trim_end_matches('/');
        unique_caches(
            base,
            self.url_templates
                .iter()
                .map(|t| render(t, base, slurm, tc, variant)),
        )
    }

    /// The queries that find the Slurm build of a cell, in order of preference.
    pub fn slurm_queries(
        &self,
        slurm: &SlurmRelease,
        tc: &Toolchain,
        variant: Variant,
    ) -> Vec<String> {
        self.variants
            .get(&variant)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|frag| {
                let q = format!("slurm@{} %gcc@{} {}", slurm.version, tc.gcc, frag.trim());
                q.trim_end().to_string()
            })
            .collect()
    }

    /// The query for any Slurm build of a cell (every variant).
    pub fn cell_query(slurm: &SlurmRelease, tc: &Toolchain) -> String {
        format!("slurm@{} %gcc@{}", slurm.version, tc.gcc)
    }

    /// The query for the GCC runtime of a toolchain.
    pub fn runtime_query(tc: &Toolchain) -> String {
        format!("gcc-runtime@{}", tc.gcc)
    }
}

/// The Slurm build `slurm install` takes from `catalog`: the best match of the first query (in
/// the variant's order) that matches anything. Ok(None) when none does.
pub fn pick_build<'c>(
    catalog: &'c Catalog,
    queries: &[String],
    host: &HostTargets,
) -> Result<Option<(String, &'c CatalogEntry)>, BuildcacheError> {
    for q in queries {
        let query = Query::parse(q).map_err(|e| BuildcacheError::Malformed {
            what: format!("query `{q}`"),
            reason: e.to_string(),
        })?;
        match catalog.best_match(&query, host) {
            Ok(e) => return Ok(Some((q.clone(), e))),
            Err(BuildcacheError::NoMatch { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// What `slurm install` installs for the picked Slurm build (`query`, hash `slurm_hash`): the
/// toolchain's GCC runtime first when Slurm's closure has none and the caches have one, then
/// Slurm itself.
pub fn install_queries(
    catalog: &Catalog,
    tc: &Toolchain,
    query: &str,
    slurm_hash: &str,
    host: &HostTargets,
) -> Result<Vec<String>, BuildcacheError> {
    let closure_has_runtime = catalog
        .closure(slurm_hash)?
        .iter()
        .any(|n| n.name == "gcc-runtime");
    let mut queries = Vec::new();
    if !closure_has_runtime {
        let rq = SlurmFactory::runtime_query(tc);
        let parsed = Query::parse(&rq).map_err(|e| BuildcacheError::Malformed {
            what: format!("query `{rq}`"),
            reason: e.to_string(),
        })?;
        match catalog.best_match(&parsed, host) {
            Ok(_) => queries.push(rq),
            Err(e) => tracing::info!("no GCC runtime installed besides Slurm's closure: {e}"),
        }
    }
    queries.push(query.to_string());
    Ok(queries)
}

/// Merge the user's table into the defaults: a key replaces the default's, except `variants`,
/// merged entry by entry.
fn merge(base: &mut toml::Table, user: &toml::Table) {
    for (k, v) in user {
        match (k.as_str(), base.get_mut(k), v) {
            ("variants", Some(toml::Value::Table(b)), toml::Value::Table(u)) => {
                for (vk, vv) in u {
                    b.insert(vk.clone(), vv.clone());
                }
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn find_version<'a, T>(items: &'a [T], given: &str, key: impl Fn(&T) -> &str) -> Option<&'a T> {
    let wanted = Version::parse(given.trim()).ok()?;
    items
        .iter()
        .find(|i| Version::parse(key(i)).is_ok_and(|v| v == wanted))
}

fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("URL template `{t}` has an unclosed `{{`"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "URL template `{t}` uses `{{{name}}}`; known placeholders: {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if !t.starts_with("{base}") && !t.contains("://") && !t.starts_with('/') {
        return Err(format!(
            "URL template `{t}` must start with {{base}}, a URL or an absolute path"
        ));
    }
    Ok(())
}

fn render(t: &str, base: &str, slurm: &SlurmRelease, tc: &Toolchain, variant: Variant) -> String {
    let body = t
        .replace("{slurm}", &slurm.version)
        .replace("{gcc}", &tc.gcc)
        .replace("{glibc}", &tc.glibc)
        .replace("{toolchain}", &tc.gcc)
        .replace("{variant}", variant.as_str());
    // {base} last, so a base that contains braces is not expanded again.
    body.replace("{base}", base)
}

/// The caches at `urls`, in order, each once (the first occurrence wins), named for `base`.
fn unique_caches(base: &str, urls: impl Iterator<Item = String>) -> Vec<CacheUrl> {
    let mut out: Vec<CacheUrl> = Vec::new();
    for url in urls {
        if out.iter().all(|c| c.url != url) {
            out.push(CacheUrl {
                name: cache_name(base, &url),
                url,
            });
        }
    }
    out
}

/// `slurm/25.11/13.4.0` for `<base>/slurm/25.11/13.4.0/buildcache`; the URL when it is not
/// below the base.
fn cache_name(base: &str, url: &str) -> String {
    match url.strip_prefix(base) {
        Some(rest) if !rest.is_empty() => {
            let rest = rest.trim_start_matches('/');
            rest.strip_suffix("/buildcache")
                .unwrap_or(rest)
                .trim_end_matches('/')
                .to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
