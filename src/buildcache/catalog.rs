//! Everything the configured mirrors offer, merged: query matching, best-match selection and the
//! run/link dependency closure.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::index::IndexRecord;
use super::layout::{self, media, Layout};
use super::mirror::{IndexCache, Mirror};
use super::BuildcacheError;
use crate::spec::SpecFile;
use crate::spec::{DepEdge, DepTypes, HostTargets, Query, Spec, Version};
use crate::store::StoreError;

/// A version for ordering; unparsable versions sort lowest.
pub fn sort_version(text: &str) -> Option<Version> {
    Version::parse(text).ok()
}

/// One index record of one mirror.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub spec: Spec,
    pub in_buildcache: bool,
    /// Position of the mirror in the mirror list (earlier wins on a tie).
    pub mirror: usize,
    pub layout: Layout,
}

impl CatalogEntry {
    pub fn is_external(&self) -> bool {
        self.spec.external.is_some()
    }
}

/// The merged view over all mirrors.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub mirrors: Vec<Mirror>,
    entries: Vec<CatalogEntry>,
    by_hash: HashMap<String, Vec<usize>>,
}

/// A node of a closure, in install order.
#[derive(Debug, Clone, Serialize)]
pub struct ClosureNode {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub external: bool,
}

/// Whether an edge belongs to what must be present at run time.
pub fn is_link_or_run(edge: &DepEdge) -> bool {
    edge.deptypes.intersects(DepTypes::LINK_RUN)
}

impl Catalog {
    /// Load the indexes of every mirror, in order. On the same hash within one mirror, v3 wins over
    /// v2; across mirrors all copies are kept as alternative sources, earlier mirrors first.
    pub async fn load(
        mirrors: Vec<Mirror>,
        cache: &IndexCache,
    ) -> Result<Catalog, BuildcacheError> {
        let loads = futures_util::future::join_all(mirrors.iter().map(|m| m.load_indexes(cache)));
        let mut per_mirror = Vec::new();
        for (i, loaded) in loads.await.into_iter().enumerate() {
            per_mirror.push((i, loaded?));
        }
        let mut entries = Vec::new();
        for (mirror, indexes) in per_mirror {
            let mut seen_v3 = HashSet::new();
            for loaded in indexes {
                for IndexRecord {
                    spec,
                    in_buildcache,
                    ..
                } in loaded.index.records
                {
                    if loaded.layout == Layout::V3 {
                        seen_v3.insert(spec.hash.clone());
                    } else if seen_v3.contains(&spec.hash) {
                        continue;
                    }
                    entries.push(CatalogEntry {
                        spec,
                        in_buildcache,
                        mirror,
                        layout: loaded.layout,
                    });
                }
            }
        }
        Ok(Catalog::from_entries(mirrors, entries))
    }

    pub fn from_entries(mirrors: Vec<Mirror>, entries: Vec<CatalogEntry>) -> Catalog {
        let mut by_hash: HashMap<String, Vec<usize>> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            by_hash.entry(e.spec.hash.clone()).or_default().push(i);
        }
        for v in by_hash.values_mut() {
            // Binaries first, then mirror order, then v3 before v2.
            v.sort_by_key(|&i| {
                (
                    !entries[i].in_buildcache,
                    entries[i].mirror,
                    entries[i].layout,
                )
            });
        }
        Catalog {
            mirrors,
            entries,
            by_hash,
        }
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The node with this full hash, from whichever mirror lists it.
    pub fn spec(&self, hash: &str) -> Option<&Spec> {
        self.by_hash
            .get(hash)
            .and_then(|v| v.first())
            .map(|&i| &self.entries[i].spec)
    }

    /// Every mirror copy of a binary with this hash, preferred first.
    pub fn sources(&self, hash: &str) -> Vec<&CatalogEntry> {
        self.by_hash
            .get(hash)
            .map(|v| {
                v.iter()
                    .map(|&i| &self.entries[i])
                    .filter(|e| e.in_buildcache)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Entries matching `query`; `all` also keeps externals and nodes without a binary.
    pub fn matching<'a>(&'a self, query: &Query, all: bool) -> Vec<&'a CatalogEntry> {
        let lookup = |h: &str| self.spec(h);
        self.entries
            .iter()
            .filter(|e| all || e.in_buildcache)
            .filter(|e| query.matches(&e.spec, &lookup))
            .collect()
    }

    /// The best binary for `query`: the highest version, then the most specific target this host
    /// can run, then the first mirror. Several different specs tied at the top of that mirror are an
    /// error that lists them with their hashes.
    pub fn best_match(
        &self,
        query: &Query,
        host: &HostTargets,
    ) -> Result<&CatalogEntry, BuildcacheError> {
        let matches = self.matching(query, false);
        if matches.is_empty() {
            return Err(BuildcacheError::NoMatch {
                query: query.to_string(),
            });
        }
        let mut runnable: Vec<(&CatalogEntry, Option<Version>, u32)> = Vec::new();
        let mut unrunnable = Vec::new();
        for e in &matches {
            let target = e
                .spec
                .arch
                .as_ref()
                .map(|a| a.target.as_str())
                .unwrap_or("");
            match host.rank(target) {
                Some(rank) => runnable.push((e, sort_version(&e.spec.version), rank)),
                None => unrunnable.push(format!(
                    "{}@{} target={target}",
                    e.spec.name, e.spec.version
                )),
            }
        }
        if runnable.is_empty() {
            unrunnable.sort();
            unrunnable.dedup();
            return Err(BuildcacheError::NoRunnableMatch {
                query: query.to_string(),
                found: unrunnable.join(", "),
            });
        }
        // Highest version, then best target rank; stable sort keeps mirror order for ties.
        runnable.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(b.2.cmp(&a.2))
                .then(a.0.mirror.cmp(&b.0.mirror))
        });
        let (top, top_version, top_rank) = (runnable[0].0, &runnable[0].1, runnable[0].2);
        // The first mirror breaks ties between mirrors; different specs tied within that mirror
        // cannot be ordered.
        let mut tied: Vec<&CatalogEntry> = runnable
            .iter()
            .filter(|(e, v, r)| v == top_version && *r == top_rank && e.mirror == top.mirror)
            .map(|(e, _, _)| *e)
            .collect();
        tied.dedup_by(|a, b| a.spec.hash == b.spec.hash);
        let distinct: HashSet<&str> = tied.iter().map(|e| e.spec.hash.as_str()).collect();
        if distinct.len() > 1 {
            let mut listed: Vec<String> = Vec::new();
            for e in &tied {
                let line = format!(
                    "{} /{}",
                    self.describe(&e.spec),
                    &e.spec.hash[..7.min(e.spec.hash.len())]
                );
                if !listed.contains(&line) {
                    listed.push(line);
                }
            }
            return Err(BuildcacheError::Ambiguous {
                query: query.to_string(),
                candidates: listed.join("; "),
            });
        }
        Ok(top)
    }

    /// `name@version %compiler arch +variants`, for messages.
    pub fn describe(&self, spec: &Spec) -> String {
        let mut s = format!("{}@{}", spec.name, spec.version);
        if let Some(c) = self.compiler_of(spec) {
            s.push_str(&format!(" %{c}"));
        }
        if let Some(a) = &spec.arch {
            s.push_str(&format!(" arch={}-{}-{}", a.platform, a.os, a.target));
        }
        for (k, v) in &spec.variants {
            s.push_str(&format!(" {}", format_variant(k, v)));
        }
        s
    }

    /// `gcc@12.2.0` for the node's compiler, if it has one.
    pub fn compiler_of(&self, spec: &Spec) -> Option<String> {
        self.compiler_ref(spec)
            .map(|c| format!("{}@{}", c.name, c.version))
    }

    pub fn compiler_ref(&self, spec: &Spec) -> Option<crate::spec::CompilerRef> {
        let lookup = |h: &str| self.spec(h);
        crate::spec::compiler_of(spec, &lookup)
    }

    /// The link/run closure of `hash` in install order (dependencies first), the root last.
    /// Build-only dependencies are left out. Every non-external node must have a binary somewhere.
    pub fn closure(&self, hash: &str) -> Result<Vec<ClosureNode>, BuildcacheError> {
        let mut order = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false = in progress, true = done
        self.visit(hash, None, &mut state, &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        hash: &str,
        parent: Option<&str>,
        state: &mut HashMap<String, bool>,
        order: &mut Vec<ClosureNode>,
    ) -> Result<(), BuildcacheError> {
        match state.get(hash) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(BuildcacheError::Malformed {
                    what: format!("spec /{hash}"),
                    reason: "dependency cycle in the index".into(),
                })
            }
            None => {}
        }
        let spec = self
            .spec(hash)
            .ok_or_else(|| BuildcacheError::MissingDependency {
                dependent: parent.unwrap_or("?").to_string(),
                dependency: format!("/{hash}"),
            })?;
        state.insert(hash.to_string(), false);
        let external = spec.external.is_some();
        if !external {
            for edge in spec.dependencies.iter().filter(|e| is_link_or_run(e)) {
                self.visit(
                    &edge.hash,
                    Some(&format!("{}/{}", spec.name, short(hash))),
                    state,
                    order,
                )?;
            }
            if self.sources(hash).is_empty() {
                return Err(BuildcacheError::MissingDependency {
                    dependent: parent.unwrap_or("(requested spec)").to_string(),
                    dependency: format!("{}@{}/{}", spec.name, spec.version, short(hash)),
                });
            }
        }
        state.insert(hash.to_string(), true);
        order.push(ClosureNode {
            name: spec.name.clone(),
            version: spec.version.clone(),
            hash: hash.to_string(),
            external,
        });
        Ok(())
    }
}

pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(7)]
}

/// `+v`, `~v` or `k=v`, as Spack spells variants.
pub fn format_variant(name: &str, value: &crate::spec::VariantValue) -> String {
    use crate::spec::VariantValue;
    match value {
        VariantValue::Bool(true) => format!("+{name}"),
        VariantValue::Bool(false) => format!("~{name}"),
        other => format!("{name}={other}"),
    }
}

impl Catalog {
    /// One catalog over several, mirror order kept (earlier catalogs' mirrors win a tie).
    pub fn merge(parts: &[&Catalog]) -> Catalog {
        let mut mirrors: Vec<Mirror> = Vec::new();
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for c in parts {
            let offset = mirrors.len();
            mirrors.extend(c.mirrors.iter().cloned());
            entries.extend(c.entries().iter().cloned().map(|mut e| {
                e.mirror += offset;
                e
            }));
        }
        Catalog::from_entries(mirrors, entries)
    }

    /// A catalog of `src` built by listing its spec manifests and spec files (`--list-objects`)
    /// instead of reading its index. Metadata is read unverified here; it is verified later.
    pub async fn from_listing(src: &Mirror) -> Result<Catalog, BuildcacheError> {
        catalog_from_listing(src).await
    }
}

fn gunzip_if_needed(bytes: &[u8], what: &str) -> Result<Vec<u8>, BuildcacheError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::MultiGzDecoder::new(bytes), 64 << 20),
        &mut out,
    )
    .map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: format!("gzip data is corrupt: {e}"),
    })?;
    Ok(out)
}

fn parse_specfile(json: &[u8], what: &str) -> Result<SpecFile, BuildcacheError> {
    SpecFile::parse(json).map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The text inside a clearsign envelope (or the text itself when it has none), NOT verified:
/// for reading what a cache lists; trust comes later from the verified manifests.
pub(crate) fn payload_unverified(text: &[u8], what: &str) -> Result<Vec<u8>, BuildcacheError> {
    if !text.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        return Ok(text.to_vec());
    }
    crate::trust::extract_cleartext(text).map_err(|e| BuildcacheError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// See [`Catalog::from_listing`]: a catalog of `src` built by listing its spec manifests and spec files (`--list-objects`)
/// instead of reading its index. Metadata is read unverified here; it is verified later.
pub(crate) async fn catalog_from_listing(src: &Mirror) -> Result<Catalog, BuildcacheError> {
    let unsupported = |e: StoreError| match e {
        StoreError::Unsupported { what } => BuildcacheError::CannotList { what },
        other => BuildcacheError::Store(other),
    };
    let mut entries = Vec::new();
    let push = |sf: SpecFile, layout: Layout, entries: &mut Vec<CatalogEntry>| {
        for (i, spec) in sf.nodes.into_iter().enumerate() {
            entries.push(CatalogEntry {
                spec,
                in_buildcache: i == 0,
                mirror: 0,
                layout,
            });
        }
    };
    let v3: Vec<String> = src
        .store
        .list(layout::V3_SPEC_DIR)
        .await
        .map_err(unsupported)?
        .into_iter()
        .filter(|p| p.ends_with(".spec.manifest.json"))
        .collect();
    for path in v3 {
        let text = src.get(&path).await?;
        let what = format!("{}/{}", src.url, path);
        let m = super::manifest::Manifest::parse(&payload_unverified(&text, &what)?, &what)?;
        let rec = m.record(media::SPEC, media::SPEC_PREFIX).ok_or_else(|| {
            BuildcacheError::Malformed {
                what: what.clone(),
                reason: "manifest names no spec blob".into(),
            }
        })?;
        let blob = src.get_verified_blob(rec).await?;
        let json = gunzip_if_needed(&blob, &what)?;
        push(parse_specfile(&json, &what)?, Layout::V3, &mut entries);
    }
    let v2: Vec<String> = src
        .store
        .list("build_cache")
        .await
        .map_err(unsupported)?
        .into_iter()
        .filter(|p| {
            let top = p.strip_prefix("build_cache/").unwrap_or("");
            !top.contains('/') && (top.ends_with(".spec.json.sig") || top.ends_with(".spec.json"))
        })
        .collect();
    for path in v2 {
        let text = src.get(&path).await?;
        let what = format!("{}/{}", src.url, path);
        let payload = payload_unverified(&text, &what)?;
        push(parse_specfile(&payload, &what)?, Layout::V2, &mut entries);
    }
    if entries.is_empty() {
        return Err(BuildcacheError::NotABuildcache {
            mirror: src.url.clone(),
            why: src
                .store
                .why_absent(&["v3/manifests/spec/", "build_cache/*.spec.json*"])
                .await,
        });
    }
    Ok(Catalog::from_entries(vec![src.clone()], entries))
}
