//! Carry out a plan: fetch the tarballs (verified into the blob cache), check prefix lengths,
//! unpack and relocate every package in its own staging directory, write receipts, sync, then
//! commit each package with one rename, dependencies first.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::plan::{runtime_dependencies, specs_to_relocate, Action, Plan, PlanItem};
use super::receipt::{EntryKind, Receipt, ReceiptFile, FILES_FILE, RECEIPT_FILE, RECEIPT_FORMAT};
use super::root::{make_writable_and_remove, InstallRoot, RootError};
use super::unpack::{unpack_tarball, FileCounter, FileKind, UnpackError, UnpackOptions, Unpacked};
use crate::buildcache::{Catalog, VerifiedEntry};
use crate::error::ErrorKind;
use crate::fetch::{BlobRequest, FetchError, Fetcher};
use crate::relocate::{
    self, elf, prefix_map::old_prefixes_by_hash, sbang, PrefixMap, RelocateError, RelocateLists,
};

#[derive(Debug, Error)]
pub enum InstallError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{package}: {source}")]
    Unpack {
        package: String,
        source: UnpackError,
    },
    #[error("{package}: {source}")]
    Relocate {
        package: String,
        source: RelocateError,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("{package} needs the external {external} at {path}, which does not exist on this host; install it there (or use a cache built for this host)")]
    ExternalMissing {
        package: String,
        external: String,
        path: String,
    },
    #[error("install root too long: {package} would land in {new_prefix} ({new_len} characters) but was built in a {old_len}-character prefix; binaries cannot be relocated into a longer prefix — use a root of at most {max_root} characters, or a cache built with a longer padded_length")]
    PrefixTooLong {
        package: String,
        new_prefix: String,
        new_len: usize,
        old_len: usize,
        max_root: usize,
    },
    #[error("{path} already exists and is not {package} (no matching sf-cache receipt); remove it or install into another root")]
    PrefixOccupied { path: String, package: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl InstallError {
    /// What sort of failure this is (the command line maps it to an exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            InstallError::Fetch(FetchError::DigestMismatch { .. })
            | InstallError::Fetch(FetchError::SizeMismatch { .. }) => ErrorKind::Verification,
            InstallError::Unpack { source, .. } => source.kind(),
            _ => ErrorKind::Failure,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub allow_setuid: bool,
    /// Packages unpacked and relocated at once.
    pub unpack_jobs: usize,
    /// Where the unpack and relocation phases are reported.
    pub progress: StageReporter,
    /// Build prefixes of the tarballs, by DAG hash, when known: files that name their own
    /// package's build prefix will be relocated, so unpacking does not hash them (their digest
    /// for the receipt is taken once, from their final bytes).
    pub build_prefixes: BuildPrefixes,
}

/// A phase of staging one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagePhase {
    Unpacking,
    /// Unpacked (`files` members); relocation starts.
    Relocating {
        files: u64,
    },
    /// Relocated: `changed` files were rewritten.
    Staged {
        files: u64,
        changed: u64,
    },
}

/// Progress of staging (the `ui` module draws it). `package` is a label such as `slurm@24.11.5`;
/// calls for different packages interleave.
pub trait StageProgress: Send + Sync {
    fn phase(&self, package: &str, phase: StagePhase);
    /// Members unpacked so far (every few hundred, while unpacking).
    fn files(&self, package: &str, done: u64);
}

/// A shared [`StageProgress`] (none by default).
#[derive(Clone, Default)]
pub struct StageReporter(Option<Arc<dyn StageProgress>>);

impl StageReporter {
    pub fn new(p: Arc<dyn StageProgress>) -> StageReporter {
        StageReporter(Some(p))
    }
    fn phase(&self, package: &str, phase: StagePhase) {
        if let Some(p) = &self.0 {
            p.phase(package, phase);
        }
    }
    fn counter(&self, package: &str) -> Option<FileCounter> {
        let p = self.0.clone()?;
        let package = package.to_string();
        Some(FileCounter::new(move |n| p.files(&package, n)))
    }
}

impl std::fmt::Debug for StageReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StageReporter(on)"
        } else {
            "StageReporter(off)"
        })
    }
}

/// What an install did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InstallReport {
    pub installed: Vec<InstalledPackage>,
    pub already_installed: Vec<InstalledPackage>,
    pub externals: Vec<InstalledPackage>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub prefix: String,
    pub explicit: bool,
}

fn described(item: &PlanItem) -> InstalledPackage {
    InstalledPackage {
        name: item.node.name.clone(),
        version: item.node.version.clone(),
        hash: item.node.hash.clone(),
        prefix: item.prefix.display().to_string(),
        explicit: item.explicit,
    }
}

fn label(item: &PlanItem) -> String {
    format!(
        "{}@{}/{}",
        item.node.name,
        item.node.version,
        &item.node.hash[..item.node.hash.len().min(7)]
    )
}

/// Externals must exist on this host where the spec names a prefix.
pub fn check_externals(plan: &Plan, catalog: &Catalog) -> Result<(), InstallError> {
    for item in &plan.items {
        if let Action::External { path: Some(path) } = &item.action {
            if !Path::new(path).exists() {
                let dependent = plan
                    .items
                    .iter()
                    .find(|i| i.spec.dependencies.iter().any(|d| d.hash == item.node.hash))
                    .map(label)
                    .unwrap_or_else(|| label(item));
                let _ = catalog;
                return Err(InstallError::ExternalMissing {
                    package: dependent,
                    external: label(item),
                    path: path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Fetch every tarball of the plan into the blob cache (verified by digest on the way).
pub async fn fetch_tarballs(
    plan: &Plan,
    catalog: &Catalog,
    fetcher: &Fetcher,
) -> Result<HashMap<String, PathBuf>, InstallError> {
    let items: Vec<(&PlanItem, &VerifiedEntry)> = plan.to_install().collect();
    let reqs: Vec<BlobRequest> = items
        .iter()
        .map(|(_, e)| tarball_request(catalog, e))
        .collect();
    let paths = fetcher.fetch(reqs).await?;
    Ok(items
        .iter()
        .zip(paths)
        .map(|((i, _), p)| (i.node.hash.clone(), p))
        .collect())
}

/// The build prefix of a package, read from the first members of its tarball (formats ≥ 0.21
/// store the absolute prefix; the prefix is the directory holding `.spack/`). `None` when the
/// archive does not tell early (the relocation step still refuses a longer prefix).
pub fn peek_build_prefix(tarball: &Path) -> Option<String> {
    let file = File::open(tarball).ok()?;
    peek_build_prefix_from(BufReader::with_capacity(64 << 10, file))
}

/// [`peek_build_prefix`] of the start of a gzip'd tarball (a truncated one tells what its first
/// members tell).
pub fn peek_build_prefix_from(gzipped: impl std::io::Read) -> Option<String> {
    let gz = flate2::read::MultiGzDecoder::new(gzipped);
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries().ok()?.take(10_000) {
        let entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if let Some(i) = path.find("/.spack") {
            let prefix = &path[..i];
            if prefix.contains('/') {
                return Some(format!("/{prefix}"));
            }
            return None;
        }
    }
    None
}

/// Refuse, before anything is written, a prefix longer than the one the package was built in.
/// `known` holds the build prefixes learnt before the download ([`check_prefix_lengths_early`]):
/// only the other tarballs are read again. Returns every build prefix learnt (unpacking uses
/// them, see [`InstallOptions::build_prefixes`]).
pub fn check_prefix_lengths(
    plan: &Plan,
    root_dir: &Path,
    tarballs: &HashMap<String, PathBuf>,
    known: &BuildPrefixes,
) -> Result<BuildPrefixes, InstallError> {
    let build_prefixes: BuildPrefixes = tarballs
        .iter()
        .filter(|(hash, _)| !matches!(known.get(*hash), Some(Some(_))))
        .map(|(hash, tarball)| (hash.clone(), peek_build_prefix(tarball)))
        .collect();
    check_lengths(plan, root_dir, &build_prefixes)?;
    let mut all = known.clone();
    all.extend(build_prefixes);
    Ok(all)
}

/// DAG hash → build prefix of its tarball, when known.
pub type BuildPrefixes = HashMap<String, Option<String>>;

/// How much of a tarball [`check_prefix_lengths_early`] reads first, and at most.
const PEEK_FIRST: u64 = 64 << 10;
const PEEK_MAX: u64 = 1 << 20;

/// The blob request of a plan item's tarball.
fn tarball_request(catalog: &Catalog, e: &VerifiedEntry) -> BlobRequest {
    BlobRequest::new(
        format!("{}:{}", e.tarball.algorithm, e.tarball.digest),
        e.tarball.size,
        vec![(
            catalog.mirrors[e.mirror].store.clone(),
            e.tarball.path.clone(),
        )],
    )
}

/// [`check_prefix_lengths`] before the downloads: the build prefix of each package comes from
/// the first bytes of its tarball (its first tar members name the prefix), fetched as the start
/// of the blob's download ([`Fetcher::peek`]: the download later resumes after them). Packages
/// whose prefix is not learnt this way (offline, a server error, an unusual archive) are
/// checked after the download as before.
pub async fn check_prefix_lengths_early(
    plan: &Plan,
    catalog: &Catalog,
    fetcher: &Fetcher,
    root_dir: &Path,
) -> Result<BuildPrefixes, InstallError> {
    let items: Vec<(&PlanItem, &VerifiedEntry)> = plan.to_install().collect();
    let build_prefixes: BuildPrefixes =
        futures_util::stream::iter(items.into_iter().map(|(item, e)| async move {
            let req = tarball_request(catalog, e);
            let mut old = None;
            for at_least in [PEEK_FIRST, PEEK_MAX] {
                let Ok(Some(path)) = fetcher.peek(&req, at_least).await else {
                    break;
                };
                old = tokio::task::spawn_blocking(move || peek_build_prefix(&path))
                    .await
                    .ok()
                    .flatten();
                let read_whole = req.size.is_some_and(|s| s <= at_least);
                if old.is_some() || read_whole {
                    break;
                }
            }
            (item.node.hash.clone(), old)
        }))
        .buffer_unordered(8)
        .collect()
        .await;
    check_lengths(plan, root_dir, &build_prefixes)?;
    Ok(build_prefixes)
}

fn check_lengths(
    plan: &Plan,
    root_dir: &Path,
    build_prefixes: &BuildPrefixes,
) -> Result<(), InstallError> {
    let root_len = root_dir.as_os_str().len();
    for (item, _) in plan.to_install() {
        let Some(Some(old)) = build_prefixes.get(&item.node.hash) else {
            debug!("{}: build prefix not known yet", label(item));
            continue;
        };
        let new_len = item.prefix.as_os_str().len();
        if new_len > old.len() {
            let tail = new_len - root_len;
            return Err(InstallError::PrefixTooLong {
                package: label(item),
                new_prefix: item.prefix.display().to_string(),
                new_len,
                old_len: old.len(),
                max_root: old.len().saturating_sub(tail),
            });
        }
    }
    Ok(())
}

/// A package unpacked and relocated in staging, waiting for its commit.
struct Staged {
    index: usize,
    staging: PathBuf,
    unpacked: Unpacked,
    changed: HashSet<PathBuf>,
}

/// Everything the blocking stage step needs about one package.
struct StageJob {
    index: usize,
    label: String,
    tarball: PathBuf,
    staging: PathBuf,
    /// `(hash, new prefix)` in `specs_to_relocate` order.
    relocate_specs: Vec<(String, Vec<u8>)>,
    own_hash: String,
    new_prefix: PathBuf,
    root_dir: PathBuf,
    sbang_path: PathBuf,
    sbang_usable: bool,
    allow_setuid: bool,
    progress: StageReporter,
    build_prefix: Option<String>,
}

fn stage(job: StageJob) -> Result<Staged, InstallError> {
    let file = File::open(&job.tarball).map_err(io_err(job.tarball.display().to_string()))?;
    job.progress.phase(&job.label, StagePhase::Unpacking);
    let unpacked = unpack_tarball(
        file,
        &job.staging,
        &UnpackOptions {
            allow_setuid: job.allow_setuid,
            old_prefix_hint: job.build_prefix.clone().map(String::into_bytes),
            unhashed_when_found: true,
            on_files: job.progress.counter(&job.label),
        },
    )
    .map_err(|source| InstallError::Unpack {
        package: job.label.clone(),
        source,
    })?;
    let bi = &unpacked.buildinfo;
    let reloc = |source| InstallError::Relocate {
        package: job.label.clone(),
        source,
    };
    let mut pairs = old_prefixes_by_hash(
        &job.label,
        bi.hash_to_prefix.as_deref(),
        None,
        &job.relocate_specs,
    )
    .or_else(|e| match bi.old_prefix() {
        // Archives without hash_to_prefix still name their own prefix.
        Some(_) => Ok(Vec::new()),
        None => Err(e),
    })
    .map_err(reloc)?;
    let own_known = bi
        .hash_to_prefix
        .as_ref()
        .is_some_and(|m| m.iter().any(|(h, _)| h == &job.own_hash));
    if !own_known {
        if let Some(old) = bi.old_prefix() {
            pairs.insert(
                0,
                (
                    old.into_bytes(),
                    job.new_prefix.as_os_str().as_bytes().to_vec(),
                ),
            );
        }
    }
    let map = PrefixMap::for_install(
        bi.buildpath.as_bytes(),
        job.root_dir.as_os_str().as_bytes(),
        bi.sbang_install_path.as_deref().map(str::as_bytes),
        job.sbang_path.as_os_str().as_bytes(),
        &pairs,
    );
    let lists = RelocateLists {
        textfiles: bi.relocate_textfiles.iter().map(PathBuf::from).collect(),
        binaries: bi.relocate_binaries.iter().map(PathBuf::from).collect(),
        links: bi.relocate_links.iter().map(PathBuf::from).collect(),
        hardlinks_deduped: bi.hardlinks_deduped,
    };
    let files = unpacked.files.len() as u64;
    job.progress
        .phase(&job.label, StagePhase::Relocating { files });
    let report = relocate::relocate_package(&job.staging, &map, &lists).map_err(reloc)?;
    let mut changed: HashSet<PathBuf> = report
        .elf_changed
        .into_iter()
        .chain(report.text_changed)
        .chain(report.binaries_changed)
        .chain(report.links_changed)
        .collect();
    if job.sbang_usable {
        for p in sbang::filter_shebangs_in(
            &job.staging,
            &unpacked.script_files,
            &job.sbang_path,
            sbang::SYSTEM_SHEBANG_LIMIT,
        )
        .map_err(reloc)?
        {
            changed.insert(
                p.strip_prefix(&job.staging)
                    .map(Path::to_path_buf)
                    .unwrap_or(p),
            );
        }
    }
    job.progress.phase(
        &job.label,
        StagePhase::Staged {
            files,
            changed: changed.len() as u64,
        },
    );
    Ok(Staged {
        index: job.index,
        staging: job.staging,
        unpacked,
        changed,
    })
}

use crate::fs::sha256_file as hash_file;

/// The receipt's file list for a staged prefix: hashes from unpacking, recomputed for files that
/// relocation changed (and their hardlinked names).
fn receipt_files(staged: &Staged) -> Result<Vec<ReceiptFile>, InstallError> {
    let root = &staged.staging;
    let known: HashMap<&str, &Option<String>> = staged
        .unpacked
        .files
        .iter()
        .filter(|f| matches!(f.kind, FileKind::File | FileKind::Hardlink))
        .map(|f| (f.path.as_str(), &f.sha256))
        .collect();
    let mut changed_inodes = HashSet::new();
    for rel in &staged.changed {
        if let Ok(md) = std::fs::symlink_metadata(root.join(rel)) {
            if md.is_file() {
                changed_inodes.insert(md.ino());
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let entries = crate::fs::sorted_entries(&dir).map_err(io_err(dir.display().to_string()))?;
        for e in entries {
            let rel = rel_dir.join(e.file_name());
            let rel_s = rel.to_string_lossy().into_owned();
            if rel_s == RECEIPT_FILE || rel_s == FILES_FILE {
                continue;
            }
            let md = std::fs::symlink_metadata(e.path()).map_err(io_err(rel_s.clone()))?;
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).map_err(io_err(rel_s.clone()))?;
                out.push(ReceiptFile {
                    path: rel_s,
                    kind: EntryKind::Symlink,
                    mode,
                    size: None,
                    sha256: None,
                    link_target: Some(target.to_string_lossy().into_owned()),
                });
            } else if md.is_dir() {
                out.push(ReceiptFile {
                    path: rel_s,
                    kind: EntryKind::Dir,
                    mode,
                    size: None,
                    sha256: None,
                    link_target: None,
                });
                stack.push(rel);
            } else {
                let sha = match known.get(rel_s.as_str()) {
                    Some(Some(h)) if !changed_inodes.contains(&md.ino()) => h.clone(),
                    _ => hash_file(&e.path()).map_err(io_err(rel_s.clone()))?,
                };
                out.push(ReceiptFile {
                    path: rel_s,
                    kind: EntryKind::File,
                    mode,
                    size: Some(md.len()),
                    sha256: Some(sha),
                    link_target: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Flush everything written below `dir` (one syncfs instead of an fsync per file).
fn sync_filesystem(dir: &Path) {
    if let Err(e) = crate::fs::sync_filesystem(dir) {
        warn!("syncfs on {} failed: {e}", dir.display());
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unpack, relocate, receipt and commit every package of the plan. `tarballs` maps hashes to
/// verified blobs in the cache. Nothing becomes visible unless every package staged cleanly.
pub async fn execute(
    plan: &Plan,
    catalog: &Catalog,
    root: &InstallRoot,
    tarballs: &HashMap<String, PathBuf>,
    opts: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    let mut report = InstallReport::default();
    for item in &plan.items {
        match &item.action {
            Action::External { .. } => report.externals.push(described(item)),
            Action::Installed => report.already_installed.push(described(item)),
            Action::Install { .. } => {}
        }
    }
    let sbang_path = root.dir.join("bin").join("sbang");
    let sbang_usable = match sbang::sbang_install_path(&root.dir, sbang::SYSTEM_SHEBANG_LIMIT - 10)
    {
        Ok(_) => true,
        Err(e) => {
            let msg = format!(
                "{e}: scripts whose shebang is too long for the kernel will not run from this root"
            );
            warn!("{msg}");
            report.warnings.push(msg);
            false
        }
    };
    let jobs: Vec<StageJob> =
        plan.items
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.action, Action::Install { .. }))
            .map(|(index, item)| -> Result<StageJob, InstallError> {
                let tarball = tarballs.get(&item.node.hash).cloned().ok_or_else(|| {
                    InstallError::Internal(format!("no tarball for {}", label(item)))
                })?;
                let relocate_specs = specs_to_relocate(catalog, &item.spec)
                    .into_iter()
                    .map(|s| {
                        (
                            s.hash.clone(),
                            root.prefix_of(s).as_os_str().as_bytes().to_vec(),
                        )
                    })
                    .collect();
                Ok(StageJob {
                    index,
                    label: label(item),
                    tarball,
                    staging: root.staging_dir().join(format!(
                        "{}-{}",
                        item.node.hash,
                        rand::random::<u32>()
                    )),
                    relocate_specs,
                    own_hash: item.node.hash.clone(),
                    new_prefix: item.prefix.clone(),
                    root_dir: root.dir.clone(),
                    sbang_path: sbang_path.clone(),
                    sbang_usable,
                    allow_setuid: opts.allow_setuid,
                    progress: opts.progress.clone(),
                    build_prefix: opts.build_prefixes.get(&item.node.hash).cloned().flatten(),
                })
            })
            .collect::<Result<_, _>>()?;
    let staging_dirs: Vec<PathBuf> = jobs.iter().map(|j| j.staging.clone()).collect();
    let cleanup = |dirs: &[PathBuf]| {
        for d in dirs {
            let _ = make_writable_and_remove(d);
        }
    };

    // Unpack and relocate, several packages at once, on blocking threads.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.unpack_jobs.max(1)));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                tokio::task::spawn_blocking(move || stage(job)).await
            })
        })
        .collect();
    let mut staged: Vec<Staged> = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(Ok(s))) => staged.push(s),
            Ok(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Ok(Err(e)) | Err(e) => {
                first_error.get_or_insert(InstallError::Internal(e.to_string()));
            }
        }
    }
    if let Some(e) = first_error {
        cleanup(&staging_dirs);
        return Err(e);
    }
    staged.sort_by_key(|s| s.index);

    let finish = tokio::task::spawn_blocking({
        let items: Vec<PlanItem> = plan.items.clone();
        let catalog_deps: Vec<Vec<String>> = plan
            .items
            .iter()
            .map(|i| runtime_dependencies(catalog, &i.spec))
            .collect();
        let mirrors: Vec<String> = catalog.mirrors.iter().map(|m| m.url.clone()).collect();
        let root_dir = root.dir.clone();
        let sbang_path = sbang_path.clone();
        move || -> Result<(Vec<InstalledPackage>, Vec<PathBuf>), InstallError> {
            // Drop RPATH entries that do not exist, looking into staging for packages of this
            // install (their prefixes are not there yet).
            let staged_prefixes: Vec<(Vec<u8>, PathBuf)> = staged
                .iter()
                .map(|s| {
                    (
                        items[s.index].prefix.as_os_str().as_bytes().to_vec(),
                        s.staging.clone(),
                    )
                })
                .collect();
            let lexists = |entry: &[u8]| -> bool {
                for (fin, stg) in &staged_prefixes {
                    if let Some(rest) = entry.strip_prefix(fin.as_slice()) {
                        if rest.is_empty() || rest.starts_with(b"/") {
                            let mut p = stg.as_os_str().as_bytes().to_vec();
                            p.extend_from_slice(rest);
                            return elf::host_lexists(&p);
                        }
                    }
                }
                elf::host_lexists(entry)
            };
            for s in &mut staged {
                let lbl = label(&items[s.index]);
                let dropped =
                    elf::drop_redundant_rpaths_in(&s.staging, &s.unpacked.elf_files, &lexists)
                        .map_err(|source| InstallError::Relocate {
                            package: lbl.clone(),
                            source,
                        })?;
                for (p, _) in dropped {
                    s.changed.insert(
                        p.strip_prefix(&s.staging)
                            .map(Path::to_path_buf)
                            .unwrap_or(p),
                    );
                }
            }
            // Receipts inside each staged prefix.
            for s in &staged {
                let item = &items[s.index];
                let Action::Install { entry } = &item.action else {
                    continue;
                };
                let files = receipt_files(s)?;
                let receipt = Receipt {
                    format: RECEIPT_FORMAT,
                    name: item.node.name.clone(),
                    version: item.node.version.clone(),
                    hash: item.node.hash.clone(),
                    prefix: item.prefix.display().to_string(),
                    mirror: mirrors.get(entry.mirror).cloned().unwrap_or_default(),
                    layout: entry.layout.to_string(),
                    metadata_path: entry.metadata_path.clone(),
                    metadata_digest: entry.metadata_digest.clone(),
                    tarball_digest: format!("{}:{}", entry.tarball.algorithm, entry.tarball.digest),
                    signature_status: entry.signature.status.clone(),
                    signature_fingerprint: entry.signature.fingerprint.clone(),
                    dependencies: catalog_deps[s.index].clone(),
                    explicit: item.explicit,
                    installed_at_unix: now_unix(),
                    spec: entry
                        .specfile
                        .raw_nodes
                        .first()
                        .cloned()
                        .unwrap_or(serde_json::Value::Null),
                };
                receipt
                    .write(&s.staging, &files)
                    .map_err(|e| InstallError::Internal(e.to_string()))?;
            }
            if let Some(s) = staged.first() {
                sync_filesystem(&s.staging);
            }
            relocate::sbang::install_sbang(&sbang_path).map_err(|source| {
                InstallError::Relocate {
                    package: "sbang".into(),
                    source,
                }
            })?;
            // Commit: one rename per package, dependencies first.
            let mut installed = Vec::new();
            let mut committed = Vec::new();
            for s in &staged {
                let item = &items[s.index];
                if let Some(parent) = item.prefix.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(parent.display().to_string()))?;
                }
                match std::fs::rename(&s.staging, &item.prefix) {
                    Ok(()) => {
                        info!("installed {} in {}", label(item), item.prefix.display());
                        committed.push(item.prefix.clone());
                        installed.push(described(item));
                    }
                    Err(_)
                        if Receipt::read(&item.prefix).is_ok_and(|r| r.hash == item.node.hash) =>
                    {
                        // Another process installed it meanwhile.
                        let _ = make_writable_and_remove(&s.staging);
                        installed.push(described(item));
                    }
                    Err(e) if item.prefix.exists() => {
                        let _ = e;
                        return Err(InstallError::PrefixOccupied {
                            path: item.prefix.display().to_string(),
                            package: label(item),
                        });
                    }
                    Err(e) => return Err(io_err(item.prefix.display().to_string())(e)),
                }
            }
            crate::fs::sync_dir(&root_dir);
            Ok((installed, committed))
        }
    })
    .await
    .map_err(|e| InstallError::Internal(e.to_string()))?;
    match finish {
        Ok((installed, _)) => {
            report.installed = installed;
            Ok(report)
        }
        Err(e) => {
            cleanup(&staging_dirs);
            Err(e)
        }
    }
}
