//! Relocation of an installed Spack binary package into a new prefix.
//!
//! Pure, synchronous file transforms (callers run them on blocking threads) that reproduce what
//! Spack 1.x does in `binary_distribution.py: relocate_package` and the `post_install` hooks
//! `sbang` and `drop_redundant_rpaths` (reference §7):
//!
//! * [`PrefixMap`]: the ordered old → new prefix map (§7.2), see [`PrefixMap::for_install`].
//! * [`text`]: whole-file regex substitution in text files with Spack's path-boundary rule (§7.3).
//! * [`binary`]: C strings inside binaries with Spack's `/`-padding rule (§7.4).
//! * [`elf`]: RPATH/RUNPATH and PT_INTERP rewritten in place with NUL padding (§7.5), plus the
//!   `drop_redundant_rpaths` post-install step.
//! * [`links`]: absolute symlink targets (§7.7).
//! * [`sbang`]: long shebangs, the sbang helper script and its install (§7.8).
//!
//! [`relocate_package`] runs the steps in Spack's order: ELF headers, links, text files,
//! binary strings. Spack's post-install hooks are separate calls, in this order after it:
//! [`sbang::install_sbang`] + [`sbang::filter_shebangs_in_tree`], then
//! [`elf::drop_redundant_rpaths_in_tree`] (with [`elf::StagedLexists`] when the prefix is still
//! in a staging directory, so entries under the final prefix are checked where they are now).
//!
//! **Writes and hardlinks.** Text files, binaries and scripts are rewritten *in place through
//! the open file* (same inode: overwrite, then truncate when the size changed), never by writing a
//! temporary file and renaming it. A package's hardlink set is listed once in the buildinfo
//! (`hardlinks_deduped`), so relocating one name must update every name of the inode, exactly as
//! Spack's `open(path, "rb+")` does. Mode bits are untouched (a read-only file gets `u+w` for
//! the duration of the write and its mode back afterwards). Symlinks are replaced atomically
//! (new link under a temporary name, then rename).

pub mod binary;
pub mod elf;
pub mod links;
pub mod prefix_map;
pub mod sbang;
pub mod text;

use std::collections::HashSet;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use prefix_map::{old_prefixes_by_hash, PrefixMap, PrefixPairs};

/// Errors of the relocation step. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RelocateError {
    /// Reading or writing a file failed.
    #[error("{}: {source} (check that the file exists and is writable)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A binary contains an old prefix whose replacement is longer (Spack `CannotGrowString`).
    #[error(
        "cannot relocate {}: new prefix {new:?} is longer than the old prefix {old:?}; install to \
         a shorter root or use a cache built with more padding (config:install_tree:padded_length)",
        file.display()
    )]
    PrefixTooLong {
        /// The binary.
        file: PathBuf,
        /// The old prefix (lossy UTF-8).
        old: String,
        /// The new prefix (lossy UTF-8).
        new: String,
    },
    /// A short C string cannot be padded safely (Spack `CannotShrinkCString`).
    #[error(
        "cannot relocate {}: replacing {old:?} with {new:?} in the C string {string:?} would \
         break strings that share its suffix; install to a shorter root or use a cache built with \
         more padding (config:install_tree:padded_length)",
        file.display()
    )]
    CannotShrinkCString {
        /// The binary.
        file: PathBuf,
        /// The old prefix (lossy UTF-8).
        old: String,
        /// The new prefix (lossy UTF-8).
        new: String,
        /// The whole matched C string without its NUL (lossy UTF-8).
        string: String,
    },
    /// The new RPATH/RUNPATH or interpreter does not fit in place (Spack would call patchelf).
    #[error(
        "cannot relocate {}: the new ELF {what} {new:?} is longer than the old one {old:?} and \
         cannot be rewritten in place; install to a shorter root",
        file.display()
    )]
    ElfStringTooLong {
        /// The ELF file.
        file: PathBuf,
        /// `"rpath"`, `"runpath"` or `"interpreter"`.
        what: &'static str,
        /// Old value (lossy UTF-8).
        old: String,
        /// New value (lossy UTF-8).
        new: String,
    },
    /// `<root>/bin/sbang` is longer than the kernel shebang limit (Spack `SbangPathError`).
    #[error(
        "install root too long: sbang path {} is {len} bytes, more than the shebang limit of \
         {limit}; choose an install root with a shorter path",
        path.display()
    )]
    SbangPathTooLong {
        /// The sbang path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The buildinfo has neither `hash_to_prefix` nor `prefix_to_hash` (Spack
    /// `NewLayoutException`).
    #[error(
        "package {package}: its buildinfo has neither hash_to_prefix nor prefix_to_hash (made by \
         a too old Spack); it cannot be relocated, rebuild it with a newer Spack"
    )]
    MissingPrefixMapping {
        /// The package (name/hash) for the message.
        package: String,
    },
}

impl RelocateError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RelocateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Open `path` for reading and writing without truncating it, keeping its inode. When the file
/// is not writable by its owner (permission denied) `u+w` is added and the original mode is
/// returned so that [`restore_mode`] puts it back.
pub(crate) fn open_rw(path: &Path) -> Result<(fs::File, Option<u32>), RelocateError> {
    let open = || fs::OpenOptions::new().read(true).write(true).open(path);
    match open() {
        Ok(f) => Ok((f, None)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let meta = fs::symlink_metadata(path).map_err(|e| RelocateError::io(path, e))?;
            if !meta.file_type().is_file() {
                return Err(RelocateError::io(path, e));
            }
            let mode = meta.permissions().mode();
            if mode & 0o200 != 0 {
                return Err(RelocateError::io(path, e));
            }
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200))
                .map_err(|e| RelocateError::io(path, e))?;
            match open() {
                Ok(f) => Ok((f, Some(mode))),
                Err(e) => {
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
                    Err(RelocateError::io(path, e))
                }
            }
        }
        Err(e) => Err(RelocateError::io(path, e)),
    }
}

pub(crate) fn restore_mode(path: &Path, mode: Option<u32>) -> Result<(), RelocateError> {
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| RelocateError::io(path, e))?;
    }
    Ok(())
}

/// Replace the whole content of `path` in place (same inode, mode untouched): overwrite from
/// offset 0 and truncate to the new length.
pub(crate) fn rewrite_in_place(path: &Path, data: &[u8]) -> Result<(), RelocateError> {
    let (mut f, mode) = open_rw(path)?;
    let res = (|| {
        f.seek(SeekFrom::Start(0))?;
        f.write_all(data)?;
        f.set_len(data.len() as u64)?;
        f.flush()
    })();
    drop(f);
    res.map_err(|e| RelocateError::io(path, e))?;
    restore_mode(path, mode)
}

/// Write `patches` (offset, bytes) into `path` in place (same inode, same length).
pub(crate) fn patch_in_place(path: &Path, patches: &[(u64, Vec<u8>)]) -> Result<(), RelocateError> {
    if patches.is_empty() {
        return Ok(());
    }
    let (f, mode) = open_rw(path)?;
    let res = (|| {
        use std::os::unix::fs::FileExt;
        for (off, bytes) in patches {
            f.write_all_at(bytes, *off)?;
        }
        Ok::<(), std::io::Error>(())
    })();
    drop(f);
    res.map_err(|e| RelocateError::io(path, e))?;
    restore_mode(path, mode)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, RelocateError> {
    fs::read(path).map_err(|e| RelocateError::io(path, e))
}

/// True when the first bytes are the ELF magic (`relocate.py: is_elf_magic`).
pub fn is_elf_magic(magic: &[u8]) -> bool {
    magic.starts_with(b"\x7fELF")
}

/// The relocation lists of a buildinfo (`relocate_textfiles`, `relocate_binaries`,
/// `relocate_links`), paths relative to the prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelocateLists {
    /// `relocate_textfiles`.
    pub textfiles: Vec<PathBuf>,
    /// `relocate_binaries`.
    pub binaries: Vec<PathBuf>,
    /// `relocate_links`.
    pub links: Vec<PathBuf>,
    /// buildinfo `hardlinks_deduped` (absent = false): when false, names of an already listed
    /// inode are dropped from the text and binary lists (`dedupe_hardlinks_if_necessary`).
    pub hardlinks_deduped: bool,
}

/// What [`relocate_package`] changed (paths relative to the prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelocateReport {
    /// ELF files whose RPATH/RUNPATH or interpreter changed.
    pub elf_changed: Vec<PathBuf>,
    /// Symlinks re-pointed.
    pub links_changed: Vec<PathBuf>,
    /// Text files rewritten.
    pub text_changed: Vec<PathBuf>,
    /// Binaries whose embedded strings changed.
    pub binaries_changed: Vec<PathBuf>,
}

/// Relocate the package unpacked at `dir` (the staging or final prefix directory; the map's new
/// prefixes are the *final* locations) in Spack's order (`relocate_package`): ELF headers of
/// `binaries`, `links`, `textfiles`, then strings inside `binaries`. An empty map (after identity
/// removal) does nothing. Mach-O is not supported (ELF platforms only).
pub fn relocate_package(
    dir: &Path,
    map: &PrefixMap,
    lists: &RelocateLists,
) -> Result<RelocateReport, RelocateError> {
    let mut report = RelocateReport::default();
    if map.is_empty() {
        return Ok(report);
    }
    for (old, new) in map.entries() {
        tracing::debug!("relocating {} => {}", lossy(old), lossy(new));
    }
    let (textfiles, binaries) = if lists.hardlinks_deduped {
        (lists.textfiles.clone(), lists.binaries.clone())
    } else {
        let mut seen = HashSet::new();
        (
            dedupe_hardlinks(dir, &lists.textfiles, &mut seen)?,
            dedupe_hardlinks(dir, &lists.binaries, &mut seen)?,
        )
    };
    for rel in &binaries {
        if elf::relocate_elf_file(&dir.join(rel), map)? {
            report.elf_changed.push(rel.clone());
        }
    }
    for rel in &lists.links {
        if links::relocate_link(&dir.join(rel), map)? {
            report.links_changed.push(rel.clone());
        }
    }
    for rel in &textfiles {
        if text::relocate_text_file(&dir.join(rel), map)? {
            report.text_changed.push(rel.clone());
        }
    }
    for rel in &binaries {
        if binary::relocate_binary_file(&dir.join(rel), map)? {
            report.binaries_changed.push(rel.clone());
        }
    }
    Ok(report)
}

fn dedupe_hardlinks(
    dir: &Path,
    list: &[PathBuf],
    seen: &mut HashSet<(u64, u64)>,
) -> Result<Vec<PathBuf>, RelocateError> {
    let mut out = Vec::with_capacity(list.len());
    for rel in list {
        let p = dir.join(rel);
        let m = fs::symlink_metadata(&p).map_err(|e| RelocateError::io(&p, e))?;
        if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        out.push(rel.clone());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
