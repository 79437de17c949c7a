//! publish: pack installed prefixes (sf-cache or Spack installs) into a layout-v3 buildcache that
//! Spack 1.x and sf-cache both install, in an order that keeps the cache readable at every moment:
//! all blobs, then the manifests (dependencies first), then the signing key, then the index,
//! merged with what the destination already has through conditional writes.

pub mod select;
pub mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tracing::{info, warn};

use crate::buildcache::layout;
use crate::buildcache::writer::{
    BuildInfoInputs, CacheWriter, EntryOptions, StagedEntry, WriterError, WrittenEntry,
};

pub use select::{LeftOut, Reason, SelectOptions, Selection, Tracking};
pub use source::{find_root, load_source, read_specfile, InstalledRoot, Source, SourceKind};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("`{}` is not an installed prefix: {reason}", path.display())]
    NotAPrefix { path: PathBuf, reason: String },
    #[error("cannot find the install root of `{}`: {reason}; publish prefixes installed by sf-cache or Spack", path.display())]
    NoRoot { path: PathBuf, reason: String },
    #[error("cannot read the Spack database `{}`: {reason}", path.display())]
    SpackDb { path: PathBuf, reason: String },
    #[error("{what} needs {missing}, which {are} neither in the destination nor being published; publish {them} too (add {their} to the command line, or --with-deps)")]
    MissingDeps {
        what: String,
        missing: String,
        are: &'static str,
        them: &'static str,
        their: &'static str,
    },
    #[error("{what} needs {missing}, which {are} neither in the destination nor installed in {root}; install or publish {them} first")]
    DepsNotInstalled {
        what: String,
        missing: String,
        root: String,
        are: &'static str,
        them: &'static str,
    },
    #[error("--include-private {}: {reason}; name a file or directory inside a prefix being published", path.display())]
    IncludePrivate { path: PathBuf, reason: String },
    #[error("cannot check the files of the prefixes: {0}")]
    Task(String),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Options of [`publish`].
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Rewrite entries that already exist in the destination.
    pub force: bool,
    /// Do not touch the index (a later `update-index` makes the entries visible).
    pub no_index: bool,
    /// Also publish missing link/run dependencies installed next to the prefixes.
    pub with_deps: bool,
    /// Prefixes packed at once (default: the number of cores).
    pub jobs: usize,
    /// Which files of each prefix travel (installed ones only, unless told otherwise).
    pub select: SelectOptions,
    /// Store a CycloneDX SBOM of each entry as a blob named in its (signed) manifest.
    pub sbom: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            force: false,
            no_index: false,
            with_deps: false,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            select: SelectOptions::default(),
            sbom: false,
        }
    }
}

/// One entry of a [`PublishReport`].
#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub prefix: String,
    /// `published` or `skipped` (already in the destination; use --force to rewrite).
    pub status: &'static str,
    /// Pulled in by `--with-deps` rather than named on the command line.
    pub dependency: bool,
    pub manifest_path: String,
    /// `sha256:<hex>` of the install tarball.
    pub tarball_digest: String,
    pub tarball_size: u64,
    pub spec_digest: String,
    /// Whether this run signed the manifest (`false` for skipped entries).
    pub signed: bool,
    /// What the prefix's files were checked against.
    pub tracking: Tracking,
    /// Paths of the prefix that were not packed, with the reason.
    pub left_out: Vec<LeftOut>,
}

/// The index after publishing.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub records: usize,
    pub in_buildcache: usize,
    pub blob: String,
}

/// What [`publish`] did (the `--json` report).
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub destination: String,
    pub signed: bool,
    pub signing_key: Option<String>,
    pub entries: Vec<EntryReport>,
    pub published: usize,
    pub skipped: usize,
    /// `None` with `--no-index`.
    pub index: Option<IndexReport>,
    pub warnings: Vec<String>,
}

fn describe(s: &crate::spec::Spec) -> String {
    format!("{}@{} /{}", s.name, s.version, s.short_hash())
}

fn plural(n: usize) -> (&'static str, &'static str, &'static str) {
    if n == 1 {
        ("is", "it", "its prefix")
    } else {
        ("are", "them", "their prefixes")
    }
}

/// The prefixes to publish: those given, plus (with `with_deps`) their missing dependencies
/// installed next to them. Fails naming dependencies that are neither in the destination nor
/// published.
pub async fn collect(
    writer: &CacheWriter,
    prefixes: &[PathBuf],
    opts: &PublishOptions,
) -> Result<(Vec<Source>, Vec<InstalledRoot>, HashSet<String>), PublishError> {
    let mut roots: Vec<InstalledRoot> = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    for p in prefixes {
        let s = load_source(p, &mut roots)?;
        if !sources.iter().any(|o| o.spec().hash == s.spec().hash) {
            sources.push(s);
        }
    }
    let mut deps_added: HashSet<String> = HashSet::new();
    let mut in_dest: HashMap<String, bool> = HashMap::new();
    let mut i = 0;
    while i < sources.len() {
        let mut missing = Vec::new();
        let mut not_installed = Vec::new();
        let closure: Vec<crate::spec::Spec> = sources[i].closure().into_iter().cloned().collect();
        for d in closure {
            if sources.iter().any(|s| s.spec().hash == d.hash) {
                continue;
            }
            let present = match in_dest.get(&d.hash) {
                Some(p) => *p,
                None => {
                    let path = layout::v3_spec_manifest(&d.name, &d.version, &d.hash);
                    let p = writer.store().exists(&path).await?;
                    in_dest.insert(d.hash.clone(), p);
                    p
                }
            };
            if present {
                continue;
            }
            if !opts.with_deps {
                missing.push(describe(&d));
                continue;
            }
            let root = &roots[sources[i].root];
            match root.prefix_of(&d.hash).map(Path::to_path_buf) {
                Some(p) if p.join(".spack/spec.json").is_file() => {
                    let s = load_source(&p, &mut roots)?;
                    deps_added.insert(s.spec().hash.clone());
                    sources.push(s);
                }
                _ => not_installed.push(describe(&d)),
            }
        }
        let what = describe(sources[i].spec());
        if !missing.is_empty() {
            let (are, them, their) = plural(missing.len());
            return Err(PublishError::MissingDeps {
                what,
                missing: missing.join(", "),
                are,
                them,
                their,
            });
        }
        if !not_installed.is_empty() {
            let (are, them, _) = plural(not_installed.len());
            return Err(PublishError::DepsNotInstalled {
                what,
                missing: not_installed.join(", "),
                root: roots[sources[i].root].dir.display().to_string(),
                are,
                them,
            });
        }
        i += 1;
    }
    Ok((sources, roots, deps_added))
}

/// The buildinfo inputs of a source: buildpath = its root, `hash_to_prefix` from the prefixes
/// the dependencies are actually installed at (guessed from the root's projection, with a
/// warning, for a dependency that is not installed there).
pub fn buildinfo_inputs(
    src: &Source,
    root: &InstalledRoot,
    warnings: &mut Vec<String>,
) -> Result<BuildInfoInputs, PublishError> {
    let buildpath = root.dir.to_str().ok_or_else(|| WriterError::NonUtf8Path {
        path: root.dir.clone(),
    })?;
    let what = describe(src.spec());
    let inputs = BuildInfoInputs::for_installed_prefix(
        &src.prefix,
        &src.specfile,
        buildpath,
        |dep| {
            if let Some(p) = root.prefix_of(&dep.hash) {
                return p
                    .to_str()
                    .map(str::to_string)
                    .ok_or_else(|| WriterError::NonUtf8Path {
                        path: p.to_path_buf(),
                    });
            }
            let guess = root
                .guessed_prefix(dep)
                .ok_or_else(|| WriterError::Spec {
                    path: src.prefix.join(".spack/spec.json"),
                    reason: format!(
                        "dependency {} is not installed in {} and has no architecture to guess its prefix",
                        describe(dep),
                        root.dir.display()
                    ),
                })?;
            let msg = format!(
                "{what}: dependency {} is not installed in {}; assuming it was at {}",
                describe(dep),
                root.dir.display(),
                guess.display()
            );
            warn!("{msg}");
            warnings.push(msg);
            guess
                .to_str()
                .map(str::to_string)
                .ok_or(WriterError::NonUtf8Path {
                    path: guess.clone(),
                })
        },
    )?;
    Ok(inputs)
}

/// What to pack of each source (in order), decided on a blocking thread (it hashes files), and
/// every `--include-private` path checked to be inside one of them.
pub async fn select_all(
    sources: &[Source],
    opts: &SelectOptions,
) -> Result<Vec<Selection>, PublishError> {
    for named in &opts.include_private {
        let inside = sources.iter().any(|s| named.starts_with(&s.prefix));
        let reason = if std::fs::symlink_metadata(named).is_err() {
            Some("no such file")
        } else if !inside {
            Some("not inside any prefix being published")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PublishError::IncludePrivate {
                path: named.clone(),
                reason: reason.into(),
            });
        }
    }
    let prefixes: Vec<PathBuf> = sources.iter().map(|s| s.prefix.clone()).collect();
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || {
        prefixes
            .iter()
            .map(|p| select::select(p, &opts))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| PublishError::Task(e.to_string()))?
}

/// The warnings of a selection: one line per kind of path left out or packed on request.
fn selection_warnings(what: &str, sel: &Selection) -> Vec<String> {
    let list = |paths: Vec<&str>| {
        const SHOWN: usize = 20;
        let more = paths.len().saturating_sub(SHOWN);
        let mut s = paths.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more (--dry-run lists them all)"));
        }
        s
    };
    let of = |reasons: &[Reason]| -> Vec<&str> {
        sel.left_out
            .iter()
            .filter(|l| reasons.contains(&l.reason))
            .map(|l| l.path.as_str())
            .collect()
    };
    let mut out = Vec::new();
    let untracked = of(&[Reason::Untracked, Reason::Changed]);
    if !untracked.is_empty() {
        out.push(format!(
            "{what}: left out {} path(s) added or changed since the install: {} (--include-untracked packs them)",
            untracked.len(),
            list(untracked)
        ));
    }
    let private = of(&[Reason::Private, Reason::Secret]);
    if !private.is_empty() {
        out.push(format!(
            "{what}: left out {} private or secret-looking path(s): {} (a tarball makes them readable by everyone; --include-private PATH packs one)",
            private.len(),
            list(private)
        ));
    }
    let special = of(&[Reason::Special]);
    if !special.is_empty() {
        out.push(format!(
            "{what}: left out {} socket(s), fifo(s) or device node(s): {}",
            special.len(),
            list(special)
        ));
    }
    if !sel.untracked_packed.is_empty() {
        out.push(format!(
            "{what}: packing {} path(s) added or changed since the install (--include-untracked): {}",
            sel.untracked_packed.len(),
            list(sel.untracked_packed.iter().map(String::as_str).collect())
        ));
    }
    if !sel.private_packed.is_empty() {
        out.push(format!(
            "{what}: packing {} private path(s) named by --include-private, readable by everyone who reads the cache: {}",
            sel.private_packed.len(),
            list(sel.private_packed.iter().map(String::as_str).collect())
        ));
    }
    if sel.tracking == Tracking::None {
        out.push(format!(
            "{what}: no install record (neither an sf-cache receipt nor .spack/install_manifest.json): every world-readable file of the prefix is packed"
        ));
    }
    out
}

/// One prefix of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedEntry {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub prefix: String,
    /// Pulled in by `--with-deps`.
    pub dependency: bool,
    /// The destination has it already (published again only with --force).
    pub present: bool,
    #[serde(flatten)]
    pub selection: Selection,
}

/// What [`plan`] found (the `--dry-run` report).
#[derive(Debug, Clone, Serialize)]
pub struct PublishPlan {
    pub destination: String,
    pub entries: Vec<PlannedEntry>,
    pub warnings: Vec<String>,
}

/// A dry run: the prefixes a publish would pack and, for each, what it would pack and leave out.
/// Reads the destination (what it has), writes nothing.
pub async fn plan(
    writer: &CacheWriter,
    prefixes: &[PathBuf],
    opts: &PublishOptions,
) -> Result<PublishPlan, PublishError> {
    let (sources, _roots, deps_added) = collect(writer, prefixes, opts).await?;
    let selections = select_all(&sources, &opts.select).await?;
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for (src, sel) in sources.iter().zip(selections) {
        let spec = src.spec();
        let path = layout::v3_spec_manifest(&spec.name, &spec.version, &spec.hash);
        warnings.extend(selection_warnings(&describe(spec), &sel));
        entries.push(PlannedEntry {
            name: spec.name.clone(),
            version: spec.version.clone(),
            hash: spec.hash.clone(),
            prefix: src.prefix.display().to_string(),
            dependency: deps_added.contains(&spec.hash),
            present: writer.store().exists(&path).await?,
            selection: sel,
        });
    }
    Ok(PublishPlan {
        destination: writer.store().display_url(),
        entries,
        warnings,
    })
}

/// Media type of the SBOM blob `publish --sbom` names in a manifest.
pub const SBOM_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// The CycloneDX SBOM of a source's DAG, with the sha256 of the tarball being published.
fn sbom_blob(src: &Source) -> crate::buildcache::writer::ExtraBlob {
    let specfile = src.specfile.clone();
    let hash = src.spec().hash.clone();
    crate::buildcache::writer::ExtraBlob {
        media_type: SBOM_MEDIA_TYPE.to_string(),
        make: std::sync::Arc::new(move |tarball_sha256: &str| {
            let extra = |s: &crate::spec::Spec| crate::sbom::Extra {
                tarball_sha256: (s.hash == hash).then(|| tarball_sha256.to_string()),
                ..crate::sbom::Extra::default()
            };
            let doc = crate::sbom::document(
                &crate::sbom::Closure {
                    specfile: &specfile,
                    extra: &extra,
                },
                crate::sbom::Format::CycloneDx,
            )
            .map_err(|e| e.to_string())?;
            serde_json::to_vec(&doc).map_err(|e| e.to_string())
        }),
    }
}

/// Dependencies first (among the entries being published), otherwise in the given order.
fn dependency_order(sources: &[Source]) -> Vec<usize> {
    let pos: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.spec().hash.as_str(), i))
        .collect();
    let mut out = Vec::with_capacity(sources.len());
    let mut state = vec![0u8; sources.len()]; // 0 new, 1 visiting, 2 done
    fn visit(
        i: usize,
        sources: &[Source],
        pos: &HashMap<&str, usize>,
        state: &mut [u8],
        out: &mut Vec<usize>,
    ) {
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for d in sources[i].closure() {
            if let Some(&j) = pos.get(d.hash.as_str()) {
                visit(j, sources, pos, state, out);
            }
        }
        state[i] = 2;
        out.push(i);
    }
    for i in 0..sources.len() {
        visit(i, sources, &pos, &mut state, &mut out);
    }
    out
}

/// Publish installed prefixes into the writer's store: pack them (in parallel, streaming),
/// upload all blobs, then the manifests (dependencies first), then the signing key, then merge
/// the index (unless `no_index`).
pub async fn publish(
    writer: &CacheWriter,
    prefixes: &[PathBuf],
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    let (sources, roots, deps_added) = collect(writer, prefixes, opts).await?;
    let mut warnings = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        if !root.is_padded() && sources.iter().any(|s| s.root == i) {
            let msg = format!(
                "the install root {} is not padded (no __spack_path_placeholder__): consumers can only relocate these packages into prefixes no longer than their prefixes here",
                root.dir.display()
            );
            warn!("{msg}");
            warnings.push(msg);
        }
    }
    let selections = select_all(&sources, &opts.select).await?;
    let mut jobs_in = Vec::with_capacity(sources.len());
    for (s, sel) in sources.iter().zip(&selections) {
        for w in selection_warnings(&describe(s.spec()), sel) {
            warn!("{w}");
            warnings.push(w);
        }
        let inputs = buildinfo_inputs(s, &roots[s.root], &mut warnings)?;
        let mut exclude = sel.excluded();
        exclude.extend([
            crate::install::receipt::RECEIPT_FILE.to_string(),
            crate::install::receipt::FILES_FILE.to_string(),
        ]);
        let extra_blobs = if opts.sbom {
            vec![sbom_blob(s)]
        } else {
            Vec::new()
        };
        jobs_in.push((s.prefix.clone(), inputs, exclude, extra_blobs));
    }

    // 1. Blobs, several prefixes at once.
    let jobs = opts.jobs.max(1);
    let force = opts.force;
    let mut staged: Vec<(usize, StagedEntry)> = stream::iter(jobs_in.into_iter().enumerate())
        .map(|(i, (prefix, inputs, exclude, extra_blobs))| async move {
            let eo = EntryOptions {
                buildinfo: Some(inputs),
                buildpath: None,
                force,
                exclude,
                extra_blobs,
            };
            writer.stage_entry(&prefix, &eo).await.map(|e| (i, e))
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, WriterError>>()?;
    staged.sort_by_key(|(i, _)| *i);
    let mut by_index: BTreeMap<usize, StagedEntry> = staged.into_iter().collect();

    // 2. Manifests, dependencies first.
    let mut written: Vec<(usize, WrittenEntry)> = Vec::new();
    for i in dependency_order(&sources) {
        if let Some(st) = by_index.remove(&i) {
            written.push((i, writer.commit_entry(st).await?));
        }
    }
    written.sort_by_key(|(i, _)| *i);

    // 3. Keys.
    writer.publish_keys().await?;

    // 4. The index, merged with what the destination has (entries skipped because they exist
    //    are added too: an interrupted run may have left them out of the index).
    let entries: Vec<WrittenEntry> = written.iter().map(|(_, e)| e.clone()).collect();
    let index = if opts.no_index {
        None
    } else {
        let s = writer.write_index(&entries).await?;
        Some(IndexReport {
            records: s.records,
            in_buildcache: s.in_buildcache,
            blob: s.blob.path(),
        })
    };

    let report_entries: Vec<EntryReport> = written
        .iter()
        .map(|(i, e)| EntryReport {
            name: e.name.clone(),
            version: e.version.clone(),
            hash: e.hash.clone(),
            prefix: sources[*i].prefix.display().to_string(),
            status: if e.uploaded { "published" } else { "skipped" },
            dependency: deps_added.contains(&e.hash),
            manifest_path: e.manifest_path.clone(),
            tarball_digest: format!("{}:{}", e.tarball.checksum_algorithm, e.tarball.checksum),
            tarball_size: e.tarball.content_length,
            spec_digest: format!("{}:{}", e.spec.checksum_algorithm, e.spec.checksum),
            signed: e.signed,
            tracking: selections[*i].tracking,
            left_out: selections[*i].left_out.clone(),
        })
        .collect();
    let published = report_entries
        .iter()
        .filter(|e| e.status == "published")
        .count();
    info!(
        "published {published} of {} entries to {}",
        report_entries.len(),
        writer.store().display_url()
    );
    Ok(PublishReport {
        destination: writer.store().display_url(),
        signed: writer.signer().is_some(),
        signing_key: writer.signer().map(|s| s.fingerprint.clone()),
        skipped: report_entries.len() - published,
        published,
        entries: report_entries,
        index,
        warnings,
    })
}

#[cfg(test)]
mod tests;
