//! `sf-cache export`: one `.tar.gz` holding the closure of some installed packages as a
//! relocatable install root: their prefixes (receipts and `.spack/` metadata included),
//! `bin/sbang`, the root's settings, a view of the closure, Lmod modules that point at the view,
//! and `sf-cache-export.json` naming the original location. Extracted anywhere and run through
//! `sf-cache relocate`, it works there (like the Slurm Factory tarballs).
//!
//! The archive is streamed file by file into a temporary file beside the output and renamed
//! into place when complete; hardlinks stay hardlinks, symlinks stay symlinks. With a key, a
//! detached ASCII-armored signature `<output>.asc` is written from the finished file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::install::moved::{
    ExportRecord, ExportedPackage, MovedError, EXPORT_FORMAT, EXPORT_RECORD,
};
use crate::install::receipt::Receipt;
use crate::install::root::{absolute_root, InstallRoot, STATE_DIR};
use crate::install::uninstall::display_name;
use crate::install::view::build_view_as;
use crate::modules::{resolve_hashes, write_modules, ModuleOptions, ModulesError};

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Moved(#[from] MovedError),
    #[error("install root {}: {reason}", root.display())]
    Root { root: PathBuf, reason: String },
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{package} depends on {dependency}, which is not installed in {}; install it (sf-cache install) before exporting", root.display())]
    MissingDependency {
        root: PathBuf,
        package: String,
        dependency: String,
    },
    #[error("view name `{name}`: {reason}; pick another --view name")]
    BadViewName { name: String, reason: String },
    #[error("signing {}: {reason}", path.display())]
    Sign { path: PathBuf, reason: String },
}

impl ExportError {
    /// What sort of failure this is (the command line maps it to an exit code).
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ExportError::Modules(e) => e.kind(),
            ExportError::Moved(e) => e.kind(),
            ExportError::BadViewName { .. } => crate::error::ErrorKind::Usage,
            _ => crate::error::ErrorKind::Failure,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    Ok(crate::install::moved::write_public(path, bytes)?)
}

/// Default name of the view inside an export.
pub const DEFAULT_VIEW: &str = "view";
/// Where the modules go inside an export.
pub const MODULES_DIR: &str = "modules";

pub struct ExportOptions {
    /// DAG hashes (or unique prefixes) of the packages asked for; their link/run closure goes in.
    pub hashes: Vec<String>,
    /// The `.tar.gz` to write.
    pub output: PathBuf,
    /// Name of the view directory inside the export.
    pub view_name: String,
    /// Override directory for the module templates.
    pub templates_dir: Option<PathBuf>,
    /// Armored secret key (and passphrase) for a detached signature.
    pub key: Option<(Vec<u8>, Option<String>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub output: PathBuf,
    pub signature: Option<PathBuf>,
    pub sha256: String,
    pub bytes: u64,
    /// The install root the tree was exported from (`relocate --from`).
    pub root: PathBuf,
    pub packages: Vec<ExportedPackage>,
    /// Module files, relative to the extracted tree.
    pub modules: Vec<String>,
    pub view: String,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The packages of `chosen` and their installed link/run dependencies, dependencies first.
fn closure<'a>(
    root: &Path,
    installed: &'a [(PathBuf, Receipt)],
    chosen: &[&'a (PathBuf, Receipt)],
) -> Result<Vec<&'a (PathBuf, Receipt)>, ExportError> {
    let by_hash: HashMap<&str, &(PathBuf, Receipt)> =
        installed.iter().map(|e| (e.1.hash.as_str(), e)).collect();
    let mut out: Vec<&(PathBuf, Receipt)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    // (package, dependencies pushed yet)
    let mut stack: Vec<(&(PathBuf, Receipt), bool)> =
        chosen.iter().rev().map(|e| (*e, false)).collect();
    while let Some((e, expanded)) = stack.pop() {
        if expanded {
            out.push(e);
            continue;
        }
        if !seen.insert(e.1.hash.as_str()) {
            continue;
        }
        stack.push((e, true));
        for d in e.1.dependencies.iter().rev() {
            let dep = by_hash
                .get(d.as_str())
                .ok_or_else(|| ExportError::MissingDependency {
                    root: root.to_path_buf(),
                    package: display_name(&e.1),
                    dependency: d.clone(),
                })?;
            if !seen.contains(dep.1.hash.as_str()) {
                stack.push((dep, false));
            }
        }
    }
    Ok(out)
}

fn check_view_name(
    name: &str,
    installed: &[(PathBuf, Receipt)],
    root: &Path,
) -> Result<(), ExportError> {
    let bad = |reason: &str| ExportError::BadViewName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(std::path::Component::Normal(_)), None) => {}
        _ => return Err(bad("it must be one plain directory name")),
    }
    if name.starts_with('.') {
        return Err(bad("hidden names are reserved"));
    }
    if [MODULES_DIR, "bin", EXPORT_RECORD].contains(&name) {
        return Err(bad("the export uses that name itself"));
    }
    if installed.iter().any(|(p, _)| {
        p.strip_prefix(root)
            .ok()
            .and_then(|r| r.components().next())
            .is_some_and(|c| c.as_os_str() == name)
    }) {
        return Err(bad("an installed prefix starts with it"));
    }
    Ok(())
}

/// Streams entries into a tar archive, keeping hardlinks and symlinks.
struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, inode) → first archive name of a multiply linked file.
    seen: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TarWriter<W> {
    fn header(md: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(md.mode() & 0o7777);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    /// One path (not followed if a symlink) under the archive name `name`.
    fn add(&mut self, path: &Path, name: &Path) -> Result<(), ExportError> {
        let md = std::fs::symlink_metadata(path).map_err(io_err(path))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(io_err(path))?;
            let mut h = Self::header(&md, tar::EntryType::Symlink);
            h.set_mode(0o777);
            self.builder
                .append_link(&mut h, name, &target)
                .map_err(io_err(path))?;
        } else if ft.is_dir() {
            let mut h = Self::header(&md, tar::EntryType::Directory);
            self.builder
                .append_data(&mut h, name, std::io::empty())
                .map_err(io_err(path))?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.seen.get(&key) {
                    let mut h = Self::header(&md, tar::EntryType::Link);
                    self.builder
                        .append_link(&mut h, name, first)
                        .map_err(io_err(path))?;
                    return Ok(());
                }
                self.seen.insert(key, name.to_path_buf());
            }
            let mut h = Self::header(&md, tar::EntryType::Regular);
            h.set_size(md.len());
            let f = File::open(path).map_err(io_err(path))?;
            self.builder
                .append_data(&mut h, name, f)
                .map_err(io_err(path))?;
        } else {
            return Err(io_err(path)(std::io::Error::other(
                "not a regular file, directory or symlink; exports hold only those",
            )));
        }
        Ok(())
    }

    /// A directory and everything below it (sorted, symlinks not followed).
    fn add_tree(&mut self, dir: &Path, name: &Path) -> Result<(), ExportError> {
        self.add(dir, name)?;
        let entries = crate::fs::sorted_entries(dir).map_err(io_err(dir))?;
        for e in entries {
            let p = e.path();
            let n = name.join(e.file_name());
            if e.file_type().map_err(io_err(&p))?.is_dir() {
                self.add_tree(&p, &n)?;
            } else {
                self.add(&p, &n)?;
            }
        }
        Ok(())
    }

    /// The parent directories of a relative name (e.g. `linux-x86_64/`), once each.
    fn add_parents(
        &mut self,
        base: &Path,
        rel: &Path,
        done: &mut Vec<PathBuf>,
    ) -> Result<(), ExportError> {
        let mut acc = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            acc.push(c.as_os_str());
            if !done.contains(&acc) {
                self.add(&base.join(&acc), &acc)?;
                done.push(acc.clone());
            }
        }
        Ok(())
    }
}

/// Write the export of packages of the (opened, locked) install root. See the module
/// documentation for the layout.
pub fn export(root: &InstallRoot, opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    let installed = root.installed();
    let chosen = resolve_hashes(&root.dir, &installed, &opts.hashes)?;
    let members = closure(&root.dir, &installed, &chosen)?;
    check_view_name(&opts.view_name, &installed, &root.dir)?;

    // View and modules in a scratch directory on the root's filesystem (removed on drop, and
    // by the next open of the root after a crash).
    let scratch = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(root.staging_dir())
        .map_err(io_err(&root.staging_dir()))?;
    let view_build = scratch.path().join("view");
    std::fs::create_dir(&view_build).map_err(io_err(&view_build))?;
    let final_view = root.dir.join(&opts.view_name);
    let packages: Vec<(PathBuf, Receipt)> = members.iter().map(|e| (*e).clone()).collect();
    build_view_as(&view_build, &final_view, &root.dir, &packages).map_err(|e| {
        ExportError::Root {
            root: root.dir.clone(),
            reason: e.to_string(),
        }
    })?;
    let modules_build = scratch.path().join(MODULES_DIR);
    let written = write_modules(
        &root.dir,
        &chosen.iter().map(|e| e.1.hash.clone()).collect::<Vec<_>>(),
        &ModuleOptions {
            module_dir: modules_build.clone(),
            templates_dir: opts.templates_dir.clone(),
            view: Some(final_view.clone()),
        },
    )?;
    let exported: Vec<ExportedPackage> = members
        .iter()
        .map(|(p, r)| ExportedPackage {
            name: r.name.clone(),
            version: r.version.clone(),
            hash: r.hash.clone(),
            prefix: p.strip_prefix(&root.dir).unwrap_or(p).display().to_string(),
        })
        .collect();
    let record = ExportRecord {
        format: EXPORT_FORMAT,
        root: root.dir.display().to_string(),
        view: Some(opts.view_name.clone()),
        modules: Some(MODULES_DIR.to_string()),
        packages: exported.clone(),
        explicit: chosen.iter().map(|e| e.1.hash.clone()).collect(),
        generator: format!("sf-cache {}", env!("CARGO_PKG_VERSION")),
    };
    record.write(scratch.path())?;

    // The archive, into a temporary file beside the output.
    let output = absolute_root(&opts.output).map_err(io_err(&opts.output))?;
    let out_dir = output.parent().unwrap_or(Path::new("/")).to_path_buf();
    std::fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sf-cache-export-")
        .tempfile_in(&out_dir)
        .map_err(io_err(&out_dir))?;
    let file = tmp.as_file().try_clone().map_err(io_err(tmp.path()))?;
    let hashing = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
    let mut tw = TarWriter {
        builder: tar::Builder::new(gz),
        seen: HashMap::new(),
    };
    tw.builder.mode(tar::HeaderMode::Complete);
    tw.builder.follow_symlinks(false);
    tw.add(
        &scratch.path().join(EXPORT_RECORD),
        Path::new(EXPORT_RECORD),
    )?;
    let state = root.dir.join(STATE_DIR);
    tw.add(&state, Path::new(STATE_DIR))?;
    tw.add(
        &state.join("root.json"),
        &Path::new(STATE_DIR).join("root.json"),
    )?;
    let sbang = root.dir.join("bin/sbang");
    if sbang.is_file() {
        tw.add(&root.dir.join("bin"), Path::new("bin"))?;
        tw.add(&sbang, Path::new("bin/sbang"))?;
    }
    let mut parents = Vec::new();
    for (prefix, _) in &packages {
        let rel = prefix.strip_prefix(&root.dir).unwrap_or(prefix);
        tw.add_parents(&root.dir, rel, &mut parents)?;
        tw.add_tree(prefix, rel)?;
    }
    tw.add_tree(&view_build, Path::new(&opts.view_name))?;
    if modules_build.is_dir() {
        tw.add_tree(&modules_build, Path::new(MODULES_DIR))?;
    }
    let gz = tw.builder.into_inner().map_err(io_err(tmp.path()))?;
    let mut hashing = gz.finish().map_err(io_err(tmp.path()))?;
    hashing.flush().map_err(io_err(tmp.path()))?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    let bytes = hashing.bytes;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| io_err(tmp.path())(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp.path()))?;
    drop(file);

    // Sign the finished file, then put both in place.
    let asc = {
        let mut name = output.as_os_str().to_owned();
        name.push(".asc");
        PathBuf::from(name)
    };
    let signature = match &opts.key {
        Some((key, pass)) => {
            let mut f = File::open(tmp.path()).map_err(io_err(tmp.path()))?;
            let sig = crate::trust::sign_detached(key, pass.as_deref(), &mut f).map_err(|e| {
                ExportError::Sign {
                    path: output.clone(),
                    reason: e.to_string(),
                }
            })?;
            Some(sig)
        }
        None => None,
    };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(tmp.path()))?;
    tmp.persist(&output).map_err(|e| io_err(&output)(e.error))?;
    match signature {
        Some(sig) => write_public(&asc, &sig)?,
        None => match std::fs::remove_file(&asc) {
            Ok(()) => info!("removed the stale signature {}", asc.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&asc)(e)),
        },
    }
    info!(
        "exported {} package(s) from {} to {}",
        packages.len(),
        root.dir.display(),
        output.display()
    );
    Ok(ExportReport {
        signature: opts.key.as_ref().map(|_| asc),
        output,
        sha256,
        bytes,
        root: root.dir.clone(),
        packages: exported,
        modules: written
            .iter()
            .map(|w| {
                Path::new(MODULES_DIR)
                    .join(w.path.strip_prefix(&modules_build).unwrap_or(&w.path))
                    .display()
                    .to_string()
            })
            .collect(),
        view: opts.view_name.clone(),
    })
}
