//! `sf-cache relocate`: fix up an install root that was moved (or extracted from an export)
//! so that it works where it is now, exactly as an install into that place would have made it.
//!
//! What to rewrite comes from each package's `.spack/binary_distribution` (the lists Spack
//! wrote: text files, binaries, links) plus the scripts whose shebang the install pointed at
//! `<root>/bin/sbang`; the old location from the receipts (their `prefix`), an export's
//! `sf-cache-export.json`, or `--from`. The prefix map is the install's: old sbang → new sbang,
//! each installed prefix old → new, then the old root → the new root.
//!
//! Nothing is written before every binary of every package was checked to take the new paths
//! (strings compiled into binaries can shrink, never grow). Each package is then rewritten in
//! place and its receipt (prefix, sha256 of the files that changed) replaced atomically as the
//! last step, so a second run skips what is done and finishes what is not. Module files found
//! under the root are rewritten like text files; views need nothing (their links and records
//! are relative).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::buildcache::buildinfo::BuildInfo;
use crate::install::receipt::{EntryKind, Receipt, ReceiptFile, FILES_FILE, RECEIPT_FILE};
use crate::install::root::{absolute_root, existing_projection, InstallRoot};
use crate::install::verify::sha256_file;
use crate::install::view::{read_view, VIEW_MARKER};
use crate::relocate::{self, binary, elf, sbang, PrefixMap, RelocateLists};

/// Why a moved tree could not be made to work where it is.
#[derive(Debug, thiserror::Error)]
pub enum MovedError {
    #[error("install root {}: {reason}", root.display())]
    Root { root: PathBuf, reason: String },
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no sf-cache install receipts there; give a moved install root or an extracted export (they hold .sf-cache/root.json and the packages' .spack/sf-cache-receipt.json)", dir.display())]
    NothingToRelocate { dir: PathBuf },
    #[error("--from {}: the receipts in {} say the tree was at {}; pass --from {} (or leave --from out)", given.display(), dir.display(), recorded.display(), recorded.display())]
    FromMismatch {
        dir: PathBuf,
        given: PathBuf,
        recorded: PathBuf,
    },
    #[error("{0}")]
    PathTooLong(Box<TooLong>),
    #[error("{package}: {source}")]
    Relocate {
        package: String,
        source: crate::relocate::RelocateError,
    },
}

impl MovedError {
    /// What sort of failure this is: a `--from` that contradicts the receipts is a usage error.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            MovedError::FromMismatch { .. } => crate::error::ErrorKind::Usage,
            _ => crate::error::ErrorKind::Failure,
        }
    }
}

/// A moved tree whose new path does not fit the strings compiled into a binary.
#[derive(Debug)]
pub struct TooLong {
    pub dir: PathBuf,
    pub new_len: usize,
    pub from: PathBuf,
    pub old_len: usize,
    pub file: PathBuf,
    pub detail: String,
    pub hint: String,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot relocate {} ({} characters) from {} ({} characters): {} holds paths compiled into it and {}; {} (nothing was changed)",
            self.dir.display(),
            self.new_len,
            self.from.display(),
            self.old_len,
            self.file.display(),
            self.detail,
            self.hint
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MovedError + '_ {
    move |source| MovedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file everyone may read (0644), atomically.
pub(crate) fn write_public(path: &Path, bytes: &[u8]) -> Result<(), MovedError> {
    use std::io::Write;
    crate::fs::write_atomic_with(path, crate::fs::Mode::Exact(0o644), ".sf-cache-tmp-", |f| {
        f.write_all(bytes)
    })
    .map_err(io_err(path))
}

/// The record at the top of an exported tree.
pub const EXPORT_RECORD: &str = "sf-cache-export.json";
pub const EXPORT_FORMAT: u32 = 1;

/// `sf-cache-export.json`: what `relocate` needs to know about an extracted export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub format: u32,
    /// Absolute path of the install root the tree was exported from (after `relocate`: where
    /// it is now).
    pub root: String,
    /// The view, relative to the root.
    pub view: Option<String>,
    /// The module directory, relative to the root (`module use <root>/<modules>`).
    pub modules: Option<String>,
    /// The packages in the tree.
    pub packages: Vec<ExportedPackage>,
    /// The packages the export was asked for (they have modules).
    pub explicit: Vec<String>,
    pub generator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedPackage {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// Relative to the root.
    pub prefix: String,
}

impl ExportRecord {
    pub fn read(root: &Path) -> Result<Option<ExportRecord>, MovedError> {
        let path = root.join(EXPORT_RECORD);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| MovedError::Root {
                    root: root.to_path_buf(),
                    reason: format!(
                        "unreadable {EXPORT_RECORD} ({e}); extract the export again, or remove the file and pass --from"
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn write(&self, root: &Path) -> Result<(), MovedError> {
        let path = root.join(EXPORT_RECORD);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| io_err(&path)(std::io::Error::other(e.to_string())))?;
        write_public(&path, &bytes)
    }
}

/// What happened to one package.
#[derive(Debug, Clone, Serialize)]
pub struct RelocatedPackage {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub prefix: PathBuf,
    /// `relocated` or `unchanged` (already right).
    pub status: &'static str,
    /// Files, links and scripts rewritten.
    pub changed: usize,
}

/// What [`relocate_tree`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RelocateReport {
    pub root: PathBuf,
    pub from: PathBuf,
    pub packages: Vec<RelocatedPackage>,
    /// Module files rewritten.
    pub modules: Vec<PathBuf>,
    /// sf-cache views found in the tree (they move with it unchanged).
    pub views: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// One package to rewrite.
struct Pending {
    prefix: PathBuf,
    receipt: Receipt,
    lists: RelocateLists,
}

fn label(r: &Receipt) -> String {
    format!(
        "{}@{}/{}",
        r.name,
        r.version,
        &r.hash[..r.hash.len().min(7)]
    )
}

/// The root a receipt's prefix implies, given where the prefix is now relative to the root.
fn recorded_root(receipt_prefix: &str, rel: &Path) -> Option<PathBuf> {
    let rel = rel.to_str()?;
    let stem = receipt_prefix.strip_suffix(rel)?.strip_suffix('/')?;
    Some(PathBuf::from(if stem.is_empty() { "/" } else { stem }))
}

/// Executable files of `prefix` whose first line runs `old_sbang` (the install put them there).
fn sbang_scripts(prefix: &Path, old_sbang: &Path) -> Result<Vec<PathBuf>, MovedError> {
    let line = sbang::sbang_shebang_line(old_sbang);
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = prefix.join(&rel_dir);
        let rd = std::fs::read_dir(&dir).map_err(io_err(&dir))?;
        for e in rd {
            let e = e.map_err(io_err(&dir))?;
            let rel = rel_dir.join(e.file_name());
            let md = std::fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
            if md.is_dir() {
                if rel != Path::new(".spack") {
                    stack.push(rel);
                }
            } else if md.is_file() && md.mode() & 0o111 != 0 {
                let mut head = vec![0u8; line.len() + 1];
                let n = std::io::Read::read(
                    &mut std::fs::File::open(e.path()).map_err(io_err(&e.path()))?,
                    &mut head,
                )
                .map_err(io_err(&e.path()))?;
                let head = &head[..n];
                if head.starts_with(&line)
                    && matches!(head.get(line.len()), Some(b'\n') | Some(b'\r') | None)
                {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The relocation lists of an installed package: its buildinfo's, plus the sbang scripts.
fn lists_of(
    prefix: &Path,
    receipt: &Receipt,
    old_sbang: &Path,
) -> Result<RelocateLists, MovedError> {
    let path = prefix.join(".spack/binary_distribution");
    let bytes = std::fs::read(&path).map_err(|e| MovedError::Root {
        root: prefix.to_path_buf(),
        reason: format!(
            "{} has no readable .spack/binary_distribution ({e}), so what to rewrite is unknown; reinstall it in place instead",
            label(receipt)
        ),
    })?;
    let bi = BuildInfo::parse(&bytes).map_err(|e| MovedError::Root {
        root: prefix.to_path_buf(),
        reason: format!("{}: {e}", label(receipt)),
    })?;
    let mut textfiles: Vec<PathBuf> = bi.relocate_textfiles.iter().map(PathBuf::from).collect();
    for s in sbang_scripts(prefix, old_sbang)? {
        if !textfiles.contains(&s) {
            textfiles.push(s);
        }
    }
    Ok(RelocateLists {
        textfiles,
        binaries: bi.relocate_binaries.iter().map(PathBuf::from).collect(),
        links: bi.relocate_links.iter().map(PathBuf::from).collect(),
        hardlinks_deduped: bi.hardlinks_deduped,
    })
}

/// Check, without writing, that every binary of `p` takes the new paths (ELF strings first,
/// then the strings inside, as [`relocate::relocate_package`] applies them).
fn check_binaries(p: &Pending, map: &PrefixMap, dir: &Path, old: &Path) -> Result<(), MovedError> {
    let (new_len, old_len) = (dir.as_os_str().len(), old.as_os_str().len());
    let too_long = |file: &Path, detail: String| {
        MovedError::PathTooLong(Box::new(TooLong {
            dir: dir.to_path_buf(),
            new_len,
            from: old.to_path_buf(),
            old_len,
            file: file.to_path_buf(),
            detail,
            hint: if new_len > old_len {
                format!("move the tree to a path of at most {old_len} characters")
            } else {
                format!(
                "move the tree to a path of at most {} characters (a C string that short can only be replaced by one at least 8 characters shorter, as in Spack)",
                old_len.saturating_sub(binary::SUFFIX_SAFETY_SIZE + 1)
            )
            },
        }))
    };
    for rel in &p.lists.binaries {
        let path = p.prefix.join(rel);
        let mut data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                debug!("{} listed for relocation but absent", path.display());
                continue;
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if relocate::is_elf_magic(&data) {
            for u in elf::elf_updates(&data[..], map) {
                if !u.inplace() {
                    return Err(too_long(
                        &path,
                        format!(
                            "its {} would become {} bytes, it has room for {}",
                            u.what,
                            u.new.len(),
                            u.old.len()
                        ),
                    ));
                }
                let at = u.offset as usize;
                let mut bytes = u.new.clone();
                bytes.resize(u.old.len(), 0);
                data[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        if let Err(e) = binary::binary_patches(&data, map) {
            let detail = match e {
                binary::BinaryStringError::TooLong { old, new } => format!(
                    "a string compiled from {} cannot become {}",
                    String::from_utf8_lossy(&old),
                    String::from_utf8_lossy(&new)
                ),
                binary::BinaryStringError::CannotShrink { string, .. } => format!(
                    "the short C string {:?} cannot be rewritten safely",
                    String::from_utf8_lossy(&string)
                ),
            };
            return Err(too_long(&path, detail));
        }
    }
    Ok(())
}

/// `(dev, inode)` of a path, not following symlinks.
fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
}

/// Bring a receipt's file list up to date with the files rewritten (`touched` inodes) and the
/// symlinks as they are now.
fn refresh_files(
    prefix: &Path,
    files: &mut [ReceiptFile],
    touched: &HashSet<(u64, u64)>,
) -> Result<(), MovedError> {
    for f in files.iter_mut() {
        let path = prefix.join(&f.path);
        match f.kind {
            EntryKind::File => {
                if inode(&path).is_some_and(|i| touched.contains(&i)) {
                    f.sha256 = Some(sha256_file(&path).map_err(io_err(&path))?);
                    f.size = Some(std::fs::metadata(&path).map_err(io_err(&path))?.len());
                }
            }
            EntryKind::Symlink => {
                if let Ok(t) = std::fs::read_link(&path) {
                    f.link_target = Some(t.to_string_lossy().into_owned());
                }
            }
            EntryKind::Dir => {}
        }
    }
    Ok(())
}

fn write_receipt(
    prefix: &Path,
    receipt: &Receipt,
    files: &[ReceiptFile],
) -> Result<(), MovedError> {
    for (name, bytes) in [
        (FILES_FILE, serde_json::to_vec_pretty(files)),
        (RECEIPT_FILE, serde_json::to_vec_pretty(receipt)),
    ] {
        let path = prefix.join(name);
        let bytes = bytes.map_err(|e| io_err(&path)(std::io::Error::other(e.to_string())))?;
        write_public(&path, &bytes)?;
    }
    Ok(())
}

/// Rewrite one package in place, then its receipt. Returns the number of paths changed.
fn apply(p: &Pending, map: &PrefixMap, new_sbang: Option<&Path>) -> Result<usize, MovedError> {
    let reloc = |source| MovedError::Relocate {
        package: label(&p.receipt),
        source,
    };
    let report = relocate::relocate_package(&p.prefix, map, &p.lists).map_err(reloc)?;
    let mut changed: BTreeSet<PathBuf> = report
        .elf_changed
        .into_iter()
        .chain(report.text_changed)
        .chain(report.binaries_changed)
        .chain(report.links_changed)
        .collect();
    if let Some(sb) = new_sbang {
        for f in sbang::filter_shebangs_in_tree(&p.prefix, sb, sbang::SYSTEM_SHEBANG_LIMIT)
            .map_err(reloc)?
        {
            changed.insert(f);
        }
    }
    // Rehash every file relocation may have touched (not only what changed in this run, so an
    // interrupted run's rewrites are recorded by the next one).
    let touched: HashSet<(u64, u64)> = p
        .lists
        .textfiles
        .iter()
        .chain(&p.lists.binaries)
        .chain(changed.iter())
        .filter_map(|rel| inode(&p.prefix.join(rel)))
        .collect();
    let mut files = Receipt::read_files(&p.prefix).map_err(|e| MovedError::Root {
        root: p.prefix.clone(),
        reason: e.to_string(),
    })?;
    refresh_files(&p.prefix, &mut files, &touched)?;
    let mut receipt = p.receipt.clone();
    receipt.prefix = p.prefix.display().to_string();
    write_receipt(&p.prefix, &receipt, &files)?;
    Ok(changed.len())
}

/// Files below `dir` that may be module files (`*.lua`), outside package prefixes, the state
/// directory and views; symlinks are not followed.
fn module_files(dir: &Path, prefixes: &HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d != dir && (prefixes.contains(&d) || d.join(VIEW_MARKER).is_file()) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if d == dir && e.file_name() == crate::install::root::STATE_DIR {
                    continue;
                }
                stack.push(p);
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "lua") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// sf-cache views in the tree (at most two levels down, outside prefixes).
fn views_in(dir: &Path, prefixes: &HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..2 {
        let mut next = Vec::new();
        for d in level {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if !e.file_type().is_ok_and(|t| t.is_dir()) || prefixes.contains(&p) {
                    continue;
                }
                if p.join(VIEW_MARKER).is_file() {
                    out.push(p);
                } else if e.file_name() != crate::install::root::STATE_DIR {
                    next.push(p);
                }
            }
        }
        level = next;
    }
    out.sort();
    out
}

/// Relocate the install root (or extracted export) `dir`, which used to live at `from` (default:
/// what the export record or the receipts say).
pub fn relocate_tree(dir: &Path, from: Option<&Path>) -> Result<RelocateReport, MovedError> {
    let dir = absolute_root(dir).map_err(io_err(dir))?;
    if !dir.is_dir() {
        return Err(io_err(&dir)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such directory",
        )));
    }
    let nothing = || MovedError::NothingToRelocate { dir: dir.clone() };
    // Check before InstallRoot::open, which would create the state directory.
    if existing_projection(&dir)
        .map_err(|e| MovedError::Root {
            root: dir.clone(),
            reason: e.to_string(),
        })?
        .is_none()
    {
        return Err(nothing());
    }
    let root = InstallRoot::open(&dir, None, false).map_err(|e| MovedError::Root {
        root: dir.clone(),
        reason: e.to_string(),
    })?;
    let installed = root.installed();
    if installed.is_empty() {
        return Err(nothing());
    }
    let record = ExportRecord::read(&dir)?;

    // Where the receipts say the tree was.
    let mut pending_roots: BTreeSet<PathBuf> = BTreeSet::new();
    let mut pending_idx = Vec::new();
    for (i, (prefix, r)) in installed.iter().enumerate() {
        if Path::new(&r.prefix) == prefix {
            continue;
        }
        let rel = prefix.strip_prefix(&dir).unwrap_or(prefix);
        let old = recorded_root(&r.prefix, rel).ok_or_else(|| MovedError::Root {
            root: dir.clone(),
            reason: format!(
                "the receipt of {} says it was installed in {}, which does not end in {}; only a whole install root can be moved and relocated",
                label(r),
                r.prefix,
                rel.display()
            ),
        })?;
        pending_roots.insert(old);
        pending_idx.push(i);
    }
    if pending_roots.len() > 1 {
        return Err(MovedError::Root {
            root: dir.clone(),
            reason: format!(
                "the receipts name several old locations ({}); relocate each part separately",
                pending_roots
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let from_receipts = pending_roots.into_iter().next();
    let given = match from {
        Some(f) => Some(absolute_root(f).map_err(io_err(f))?),
        None => None,
    };
    if let (Some(g), Some(r)) = (&given, &from_receipts) {
        if g != r {
            return Err(MovedError::FromMismatch {
                dir: dir.clone(),
                given: g.clone(),
                recorded: r.clone(),
            });
        }
    }
    let old = given
        .or(from_receipts)
        .or_else(|| record.as_ref().map(|r| PathBuf::from(&r.root)))
        .unwrap_or_else(|| dir.clone());

    let mut report = RelocateReport {
        root: dir.clone(),
        from: old.clone(),
        packages: Vec::new(),
        modules: Vec::new(),
        views: Vec::new(),
        warnings: Vec::new(),
    };
    let prefixes: HashSet<PathBuf> = installed.iter().map(|(p, _)| p.clone()).collect();
    report.views = views_in(&dir, &prefixes);

    // The install's map: sbang, every prefix, the root.
    let old_sbang = old.join("bin").join("sbang");
    let new_sbang = dir.join("bin").join("sbang");
    let mut map = PrefixMap::new();
    map.insert(
        old_sbang.as_os_str().as_bytes(),
        new_sbang.as_os_str().as_bytes(),
    );
    for (prefix, _) in &installed {
        if let Ok(rel) = prefix.strip_prefix(&dir) {
            map.insert(
                old.join(rel).as_os_str().as_bytes(),
                prefix.as_os_str().as_bytes(),
            );
        }
    }
    map.insert(old.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    map.drop_identities();

    let sbang_usable = match sbang::sbang_install_path(&dir, sbang::SYSTEM_SHEBANG_LIMIT - 10) {
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

    // Gather and check everything before the first write.
    let mut pending = Vec::new();
    for &i in &pending_idx {
        let (prefix, receipt) = &installed[i];
        let lists = lists_of(prefix, receipt, &old_sbang)?;
        pending.push(Pending {
            prefix: prefix.clone(),
            receipt: receipt.clone(),
            lists,
        });
    }
    if !map.is_empty() {
        for p in &pending {
            check_binaries(p, &map, &dir, &old)?;
        }
    }

    let pending_hashes: HashMap<&str, ()> = pending
        .iter()
        .map(|p| (p.receipt.hash.as_str(), ()))
        .collect();
    if !pending.is_empty() {
        relocate::sbang::install_sbang(&new_sbang).map_err(|source| MovedError::Relocate {
            package: "sbang".into(),
            source,
        })?;
    }
    for p in &pending {
        let changed = apply(p, &map, sbang_usable.then_some(new_sbang.as_path()))?;
        info!(
            "relocated {} from {} to {} ({changed} paths)",
            label(&p.receipt),
            p.receipt.prefix,
            p.prefix.display()
        );
        report.packages.push(RelocatedPackage {
            name: p.receipt.name.clone(),
            version: p.receipt.version.clone(),
            hash: p.receipt.hash.clone(),
            prefix: p.prefix.clone(),
            status: "relocated",
            changed,
        });
    }
    for (prefix, r) in &installed {
        if !pending_hashes.contains_key(r.hash.as_str()) {
            report.packages.push(RelocatedPackage {
                name: r.name.clone(),
                version: r.version.clone(),
                hash: r.hash.clone(),
                prefix: prefix.clone(),
                status: "unchanged",
                changed: 0,
            });
        }
    }
    report
        .packages
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));

    // Module files and the export record, last (a rerun finds them through the record).
    if !map.is_empty() {
        for f in module_files(&dir, &prefixes) {
            let changed = relocate::text::relocate_text_file(&f, &map).map_err(|source| {
                MovedError::Relocate {
                    package: f.display().to_string(),
                    source,
                }
            })?;
            if changed {
                report.modules.push(f);
            }
        }
    }
    for v in &report.views {
        if let Ok(Some(rec)) = read_view(v) {
            let target = absolute_root(&v.join(&rec.root)).unwrap_or_default();
            if target != dir {
                let msg = format!(
                    "view {} belongs to the install root {}, not {}; rebuild it with `sf-cache install --view`",
                    v.display(),
                    target.display(),
                    dir.display()
                );
                warn!("{msg}");
                report.warnings.push(msg);
            }
        }
    }
    if let Some(mut rec) = record {
        let now = dir.display().to_string();
        if rec.root != now {
            rec.root = now;
            rec.write(&dir)?;
        }
    }
    // The Spack database names the prefixes where they are now.
    super::spack_db::refresh(&root);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_root_strips_the_relative_prefix() {
        assert_eq!(
            recorded_root("/old/root/greet-1-abc", Path::new("greet-1-abc")),
            Some(PathBuf::from("/old/root"))
        );
        assert_eq!(
            recorded_root("/old/linux/greet-1-abc", Path::new("linux/greet-1-abc")),
            Some(PathBuf::from("/old"))
        );
        assert_eq!(
            recorded_root("/greet-1-abc", Path::new("greet-1-abc")),
            Some(PathBuf::from("/"))
        );
        assert_eq!(recorded_root("/old/xgreet", Path::new("greet")), None);
        assert_eq!(recorded_root("/old/other", Path::new("greet")), None);
    }

    fn pending_with_binary(dir: &Path, content: &[u8]) -> Pending {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/tool"), content).unwrap();
        Pending {
            prefix: dir.to_path_buf(),
            receipt: Receipt {
                format: 1,
                name: "tool".into(),
                version: "1".into(),
                hash: "h".into(),
                prefix: String::new(),
                mirror: String::new(),
                layout: String::new(),
                metadata_path: String::new(),
                metadata_digest: String::new(),
                tarball_digest: String::new(),
                signature_status: String::new(),
                signature_fingerprint: None,
                dependencies: vec![],
                explicit: true,
                installed_at_unix: 0,
                spec: serde_json::Value::Null,
            },
            lists: RelocateLists {
                binaries: vec![PathBuf::from("bin/tool")],
                ..RelocateLists::default()
            },
        }
    }

    #[test]
    fn binaries_are_checked_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        let map = |old: &str, new: &str| {
            PrefixMap::from_pairs([
                (
                    format!("{old}/tool-1-abcdefgh"),
                    format!("{new}/tool-1-abcdefgh"),
                ),
                (old.to_string(), new.to_string()),
            ])
        };
        // A string below a package prefix shrinks by any amount, or keeps its length.
        let p = pending_with_binary(d.path(), b"xx/old/root/tool-1-abcdefgh/share\0yy");
        for new in ["/old/rooX", "/old/roo", "/o/r", "/old/ro"] {
            check_binaries(
                &p,
                &map("/old/root", new),
                Path::new(new),
                Path::new("/old/root"),
            )
            .unwrap();
        }
        // Longer: refused, naming the length that works.
        let e = check_binaries(
            &p,
            &map("/old/root", "/old/rooot"),
            Path::new("/old/rooot"),
            Path::new("/old/root"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 9 characters"), "{e}");
        assert!(e.contains("bin/tool"), "{e}");
        // The bare root with a short C string after it: only 8+ shorter works (Spack's rule).
        let p = pending_with_binary(d.path(), b"xx/old/rootdir/lib\0yy");
        let old = Path::new("/old/rootdir");
        let e = check_binaries(
            &p,
            &map("/old/rootdir", "/old/rootxyz"),
            Path::new("/old/rootxyz"),
            old,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 4 characters"), "{e}");
        check_binaries(&p, &map("/old/rootdir", "/o"), Path::new("/o"), old).unwrap();
        // Nothing was written by the checks.
        assert_eq!(
            std::fs::read(d.path().join("bin/tool")).unwrap(),
            b"xx/old/rootdir/lib\0yy"
        );
    }

    #[test]
    fn finds_scripts_pointing_at_the_old_sbang() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::create_dir_all(p.join(".spack")).unwrap();
        let write = |rel: &str, text: &str, mode: u32| {
            std::fs::write(p.join(rel), text).unwrap();
            std::fs::set_permissions(p.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("bin/a", "#!/bin/sh /old/bin/sbang\n#!/x/y\n", 0o755);
        write("bin/b", "#!/bin/sh /old/bin/sbangx\n", 0o755);
        write("bin/c", "#!/bin/sh /old/bin/sbang\n", 0o644);
        write(".spack/d", "#!/bin/sh /old/bin/sbang\n", 0o755);
        write("bin/e", "#!/bin/sh /old/bin/sbang", 0o755);
        let s = sbang_scripts(p, Path::new("/old/bin/sbang")).unwrap();
        assert_eq!(s, vec![PathBuf::from("bin/a"), PathBuf::from("bin/e")]);
    }
}
