//! ELF RPATH/RUNPATH and PT_INTERP (reference §7.5, `relocate.py: relocate_elf_binaries`,
//! `util/elf.py`), and the `drop_redundant_rpaths` post-install hook (§7.1 step 5).
//!
//! Parsing follows Spack's `parse_elf` exactly in what it accepts: ET_EXEC/ET_DYN only; program
//! headers with `p_filesz == 0` ignored; PT_INTERP cut at its first NUL (no NUL → not ELF); the
//! dynamic array read only when there is a PT_LOAD, up to DT_NULL; at most one DT_RPATH/DT_RUNPATH
//! and exactly one DT_STRTAB; the string table located by mapping DT_STRTAB's address through
//! the PT_LOAD segments and sized by the SHT_STRTAB section header at that offset (no section
//! headers → not relocatable); DT_NEEDED/DT_SONAME/rpath strings must be NUL-terminated. A file
//! that fails any check is skipped silently, as Spack does. Headers are read with goblin.
//!
//! Rewriting (`_get_rpath_substitution`, `_get_pt_interp_substitution`): the rpath is split on
//! `:`, **empty entries are dropped**, every entry that starts with an old prefix (first listed,
//! no boundary check) gets the new prefix, and the entries are joined with `:` — only if at least
//! one entry matched. The interpreter is mapped the same way. When both new strings fit, they are
//! written at the same offsets and the rest of the old strings is filled with NUL; the tag
//! (RPATH vs RUNPATH) is unchanged. When one is longer, Spack falls back to `patchelf
//! --force-rpath`; we have no patchelf, so this is [`RelocateError::ElfStringTooLong`] and the
//! file is left untouched (no partial update either way).
//!
//! `$ORIGIN`: entries such as `$ORIGIN/../lib` never start with an absolute old prefix, so they
//! are kept verbatim by relocation; [`drop_redundant_rpaths`] keeps every entry starting with `$`
//! and drops absolute entries that do not exist and every relative or empty entry
//! (`hooks/drop_redundant_rpaths.py: should_keep`). Spack runs that hook after every install on
//! Linux, over every regular file of the prefix.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Elf, ProgramHeader, SectionHeader};

use super::{lossy, patch_in_place, PrefixMap, RelocateError};

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_SONAME: i64 = 14;
const DT_RPATH: i64 = 15;
const DT_RUNPATH: i64 = 29;
const SHT_STRTAB: u32 = 3;

/// A C string found in an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfCString {
    /// The string without its NUL.
    pub value: Vec<u8>,
    /// File offset of its first byte.
    pub offset: u64,
}

/// The strings Spack relocates in an ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfStrings {
    /// PT_INTERP (the dynamic loader path), cut at the first NUL.
    pub interp: Option<ElfCString>,
    /// DT_RPATH or DT_RUNPATH string.
    pub rpath: Option<ElfCString>,
    /// True when `rpath` is a DT_RUNPATH.
    pub is_runpath: bool,
    /// DT_NEEDED strings.
    pub needed: Vec<Vec<u8>>,
    /// DT_SONAME.
    pub soname: Option<Vec<u8>>,
}

fn c_string(buf: &[u8], start: usize) -> Option<&[u8]> {
    let rest = buf.get(start..)?;
    let end = memchr::memchr(0, rest)?;
    Some(&rest[..end])
}

/// The bytes of an ELF file by offset: a buffer, or a file read region by region (the headers,
/// the dynamic array and the string table: never the whole file, whatever its size).
pub trait ElfSource {
    /// Length of the file.
    fn size(&self) -> u64;
    /// `len` bytes at `off`, or `None` past the end.
    fn region(&self, off: u64, len: u64) -> Option<std::borrow::Cow<'_, [u8]>>;
}

impl ElfSource for [u8] {
    fn size(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn region(&self, off: u64, len: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        self.get(off..off.checked_add(len)?)
            .map(std::borrow::Cow::Borrowed)
    }
}

impl ElfSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn region(&self, off: u64, len: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.as_slice().region(off, len)
    }
}

/// An open file as an [`ElfSource`] (positioned reads).
pub struct FileSource<'f> {
    file: &'f fs::File,
    len: u64,
}

impl<'f> FileSource<'f> {
    pub fn new(file: &'f fs::File) -> std::io::Result<FileSource<'f>> {
        Ok(FileSource {
            file,
            len: file.metadata()?.len(),
        })
    }
}

impl ElfSource for FileSource<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn region(&self, off: u64, len: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::os::unix::fs::FileExt;
        if off.checked_add(len)? > self.len {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.file.read_exact_at(&mut buf, off).ok()?;
        Some(std::borrow::Cow::Owned(buf))
    }
}

/// Parse like Spack's `parse_elf(f, interpreter, dynamic_section=True)`. `None` means Spack's
/// parser would fail (not ELF, not ET_EXEC/ET_DYN, malformed, ambiguous rpath, …): skip the
/// file.
pub fn parse_elf_strings<S: ElfSource + ?Sized>(src: &S, interpreter: bool) -> Option<ElfStrings> {
    if src.size() < 16 {
        return None;
    }
    // The ELF header: 52 bytes (32-bit) or 64 (64-bit).
    let head = src.region(0, src.size().min(64))?;
    let data: &[u8] = &head;
    if !super::is_elf_magic(data) {
        return None;
    }
    let is_64 = match data[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match data[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let header = Elf::parse_header(data).ok()?;
    if header.e_type != ET_EXEC && header.e_type != ET_DYN {
        return None;
    }
    let ctx = Ctx::new(
        if is_64 {
            Container::Big
        } else {
            Container::Little
        },
        if le { Endian::Little } else { Endian::Big },
    );
    let phdrs = if header.e_phnum == 0 {
        Vec::new()
    } else {
        let n = header.e_phnum as usize;
        let table = src.region(header.e_phoff, (n * ProgramHeader::size(ctx)) as u64)?;
        ProgramHeader::parse(&table, 0, n, ctx).ok()?
    };
    let mut loads: Vec<(u64, u64)> = Vec::new();
    let mut interp_ph = None;
    let mut dyn_ph = None;
    for ph in &phdrs {
        if ph.p_filesz == 0 {
            continue;
        }
        match ph.p_type {
            PT_LOAD => loads.push((ph.p_offset, ph.p_vaddr)),
            PT_INTERP => interp_ph = Some((ph.p_offset, ph.p_filesz)),
            PT_DYNAMIC => dyn_ph = Some((ph.p_offset, ph.p_filesz)),
            _ => {}
        }
    }
    loads.sort_by_key(|&(_, vaddr)| vaddr);

    let mut out = ElfStrings::default();
    if interpreter {
        if let Some((off, size)) = interp_ph {
            let seg = src.region(off, size)?;
            let value = c_string(&seg, 0)?.to_vec();
            out.interp = Some(ElfCString { value, offset: off });
        }
    }
    let Some((dyn_off, dyn_size)) = dyn_ph else {
        return Some(out);
    };
    if loads.is_empty() {
        return Some(out);
    }
    let entsize: u64 = if is_64 { 16 } else { 8 };
    let read_uint = |b: &[u8]| -> u64 {
        let mut v: u64 = 0;
        if le {
            for (i, x) in b.iter().enumerate() {
                v |= (*x as u64) << (8 * i);
            }
        } else {
            for x in b {
                v = (v << 8) | *x as u64;
            }
        }
        v
    };
    let (mut n_rpath, mut n_runpath, mut n_strtab) = (0, 0, 0);
    let mut strtab_vaddr = 0u64;
    let mut rpath_off = 0u64;
    let mut needed_offs = Vec::new();
    let mut soname_off = None;
    // The dynamic array up to DT_NULL: an array cut short by the end of the file is malformed
    // only when DT_NULL is not reached before the cut.
    let whole = dyn_size / entsize * entsize;
    let avail = src.size().saturating_sub(dyn_off) / entsize * entsize;
    let dynamic = src.region(dyn_off, whole.min(avail))?;
    let mut reached_null = false;
    for e in dynamic.chunks_exact(entsize as usize) {
        let half = (entsize / 2) as usize;
        let raw_tag = read_uint(&e[..half]);
        let tag = if is_64 {
            raw_tag as i64
        } else {
            raw_tag as u32 as i32 as i64
        };
        let val = read_uint(&e[half..]);
        match tag {
            DT_NULL => {
                reached_null = true;
                break;
            }
            DT_RPATH => {
                n_rpath += 1;
                rpath_off = val;
                out.is_runpath = false;
            }
            DT_RUNPATH => {
                n_runpath += 1;
                rpath_off = val;
                out.is_runpath = true;
            }
            DT_STRTAB => {
                n_strtab += 1;
                strtab_vaddr = val;
            }
            DT_NEEDED => needed_offs.push(val),
            DT_SONAME => soname_off = Some(val),
            _ => {}
        }
    }
    if !reached_null && avail < whole {
        return None;
    }
    let has_rpath = n_rpath + n_runpath > 0;
    if n_rpath + n_runpath > 1 || n_strtab != 1 {
        return None;
    }
    if !(has_rpath || soname_off.is_some() || !needed_offs.is_empty()) {
        return Some(out);
    }
    // vaddr -> file offset through the PT_LOAD segments (bisect_right - 1; Python's index -1
    // wraps to the last segment).
    let idx = loads.partition_point(|&(_, v)| v <= strtab_vaddr);
    let (p_off, p_vaddr) = if idx == 0 {
        *loads.last()?
    } else {
        loads[idx - 1]
    };
    let strtab_off = i128::from(p_off) - i128::from(p_vaddr) + i128::from(strtab_vaddr);
    let strtab_off = u64::try_from(strtab_off).ok()?;
    // Size from the SHT_STRTAB section header at that offset.
    if header.e_shnum == 0 {
        return None;
    }
    let n = header.e_shnum as usize;
    let table = src.region(header.e_shoff, (n * SectionHeader::size(ctx)) as u64)?;
    let shdrs = SectionHeader::parse_from(&table, 0, n, ctx).ok()?;
    let sh = shdrs
        .iter()
        .find(|sh| sh.sh_type == SHT_STRTAB && sh.sh_offset == strtab_off)?;
    let strtab = src.region(strtab_off, sh.sh_size)?;
    let strtab: &[u8] = &strtab;
    for off in needed_offs {
        out.needed
            .push(c_string(strtab, usize::try_from(off).ok()?)?.to_vec());
    }
    if let Some(off) = soname_off {
        out.soname = Some(c_string(strtab, usize::try_from(off).ok()?)?.to_vec());
    }
    if has_rpath {
        let value = c_string(strtab, usize::try_from(rpath_off).ok()?)?.to_vec();
        out.rpath = Some(ElfCString {
            value,
            offset: strtab_off.checked_add(rpath_off)?,
        });
    }
    Some(out)
}

/// A planned in-place string update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfUpdate {
    /// `"rpath"`, `"runpath"` or `"interpreter"`.
    pub what: &'static str,
    /// Old string.
    pub old: Vec<u8>,
    /// New string.
    pub new: Vec<u8>,
    /// File offset.
    pub offset: u64,
}

impl ElfUpdate {
    /// Fits in place.
    pub fn inplace(&self) -> bool {
        self.new.len() <= self.old.len()
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.new.clone();
        b.resize(self.old.len().max(self.new.len()), 0);
        b
    }
}

/// The updates Spack would make to `data` for `map` (identities ignored). Empty when the file is
/// not ELF (by Spack's parser) or nothing matches.
pub fn elf_updates<S: ElfSource + ?Sized>(data: &S, map: &PrefixMap) -> Vec<ElfUpdate> {
    let m = map.without_identities();
    if m.is_empty() {
        return Vec::new();
    }
    let Some(strings) = parse_elf_strings(data, true) else {
        return Vec::new();
    };
    let mut updates = Vec::new();
    if let Some(rp) = &strings.rpath {
        let mut entries: Vec<Vec<u8>> = rp
            .value
            .split(|&b| b == b':')
            .filter(|e| !e.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut changed = false;
        for e in &mut entries {
            if let Some(n) = m.map_start(e) {
                *e = n;
                changed = true;
            }
        }
        if changed {
            updates.push(ElfUpdate {
                what: if strings.is_runpath {
                    "runpath"
                } else {
                    "rpath"
                },
                old: rp.value.clone(),
                new: entries.join(&b':'),
                offset: rp.offset,
            });
        }
    }
    if let Some(it) = &strings.interp {
        if let Some(n) = m.map_start(&it.value) {
            updates.push(ElfUpdate {
                what: "interpreter",
                old: it.value.clone(),
                new: n,
                offset: it.offset,
            });
        }
    }
    updates
}

/// Relocate RPATH/RUNPATH and PT_INTERP of one file in place (same inode, mode kept). Returns
/// whether it changed. Non-ELF or unparsable files: `Ok(false)`. A longer new string:
/// [`RelocateError::ElfStringTooLong`], file untouched.
pub fn relocate_elf_file(path: &Path, map: &PrefixMap) -> Result<bool, RelocateError> {
    let m = map.without_identities();
    if m.is_empty() || !has_elf_magic(path)? {
        return Ok(false);
    }
    // Only the headers, the dynamic array and the string table are read, never the whole file.
    let file = fs::File::open(path).map_err(|e| RelocateError::io(path, e))?;
    let src = FileSource::new(&file).map_err(|e| RelocateError::io(path, e))?;
    let updates = elf_updates(&src, &m);
    drop(file);
    if let Some(u) = updates.iter().find(|u| !u.inplace()) {
        return Err(RelocateError::ElfStringTooLong {
            file: path.to_path_buf(),
            what: u.what,
            old: lossy(&u.old),
            new: lossy(&u.new),
        });
    }
    let patches: Vec<(u64, Vec<u8>)> = updates.iter().map(|u| (u.offset, u.bytes())).collect();
    patch_in_place(path, &patches)?;
    Ok(!patches.is_empty())
}

fn has_elf_magic(path: &Path) -> Result<bool, RelocateError> {
    let mut f = fs::File::open(path).map_err(|e| RelocateError::io(path, e))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RelocateError::io(path, e)),
        }
    }
    Ok(got == 4 && super::is_elf_magic(&magic))
}

/// The RPATH/RUNPATH of a file: `(value, is_runpath)`, or `None` (no rpath / not ELF).
pub fn read_rpath(path: &Path) -> Result<Option<(Vec<u8>, bool)>, RelocateError> {
    let file = fs::File::open(path).map_err(|e| RelocateError::io(path, e))?;
    let src = FileSource::new(&file).map_err(|e| RelocateError::io(path, e))?;
    Ok(parse_elf_strings(&src, false).and_then(|s| s.rpath.map(|r| (r.value, s.is_runpath))))
}

/// The PT_INTERP of a file, or `None`.
pub fn read_interpreter(path: &Path) -> Result<Option<Vec<u8>>, RelocateError> {
    let file = fs::File::open(path).map_err(|e| RelocateError::io(path, e))?;
    let src = FileSource::new(&file).map_err(|e| RelocateError::io(path, e))?;
    Ok(parse_elf_strings(&src, true).and_then(|s| s.interp.map(|i| i.value)))
}

/// Spack's `should_keep`: the entry starts with `$` (`$ORIGIN`, `${ORIGIN}`, …) or is absolute
/// and `lexists` says it exists (a dangling symlink counts as existing).
pub fn should_keep_rpath(entry: &[u8], lexists: &dyn Fn(&[u8]) -> bool) -> bool {
    entry.starts_with(b"$") || (entry.starts_with(b"/") && lexists(entry))
}

/// `os.path.lexists` on the real file system.
pub fn host_lexists(entry: &[u8]) -> bool {
    fs::symlink_metadata(Path::new(std::ffi::OsStr::from_bytes(entry))).is_ok()
}

/// Existence check for a prefix still in its staging directory: paths under `final_prefix`
/// are looked up under `staging` instead, everything else on the host.
#[derive(Clone, Debug)]
pub struct StagedLexists {
    /// Where the prefix will live.
    pub final_prefix: PathBuf,
    /// Where it is now.
    pub staging: PathBuf,
}

impl StagedLexists {
    /// `lexists(entry)` with the staging mapping.
    pub fn lexists(&self, entry: &[u8]) -> bool {
        let fp = self.final_prefix.as_os_str().as_bytes();
        if let Some(rest) = entry.strip_prefix(fp) {
            if rest.is_empty() || rest.starts_with(b"/") {
                let mut p = self.staging.as_os_str().as_bytes().to_vec();
                p.extend_from_slice(rest);
                return host_lexists(&p);
            }
        }
        host_lexists(entry)
    }
}

/// An rpath rewritten by [`drop_redundant_rpaths`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpathChange {
    /// The rpath before.
    pub old: Vec<u8>,
    /// The rpath after.
    pub new: Vec<u8>,
}

/// Spack's `drop_redundant_rpaths` for one file: keep only entries [`should_keep_rpath`]
/// accepts (splitting on `:` *with* empty entries, which are dropped), write in place with NUL
/// padding. Returns `(old, new)` when it changed; not ELF / no rpath / unreadable → `None`.
pub fn drop_redundant_rpaths(
    path: &Path,
    lexists: &dyn Fn(&[u8]) -> bool,
) -> Result<Option<RpathChange>, RelocateError> {
    match has_elf_magic(path) {
        Ok(true) => {}
        _ => return Ok(None),
    }
    let Ok(file) = fs::File::open(path) else {
        return Ok(None);
    };
    let Ok(src) = FileSource::new(&file) else {
        return Ok(None);
    };
    let Some(rp) = parse_elf_strings(&src, false).and_then(|s| s.rpath) else {
        return Ok(None);
    };
    drop(file);
    let new: Vec<u8> = rp
        .value
        .split(|&b| b == b':')
        .filter(|e| should_keep_rpath(e, lexists))
        .collect::<Vec<_>>()
        .join(&b':');
    if new == rp.value || new.len() > rp.value.len() {
        return Ok(None);
    }
    let mut bytes = new.clone();
    bytes.resize(rp.value.len(), 0);
    patch_in_place(path, &[(rp.offset, bytes)])?;
    Ok(Some(RpathChange { old: rp.value, new }))
}

/// Run [`drop_redundant_rpaths`] over every regular file under `dir` (symlinks and symlinked
/// directories not followed; each hardlinked inode once), like Spack's post-install hook.
/// Returns the changed files (relative to `dir`) with old and new rpath.
pub fn drop_redundant_rpaths_in_tree(
    dir: &Path,
    lexists: &dyn Fn(&[u8]) -> bool,
) -> Result<Vec<(PathBuf, RpathChange)>, RelocateError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = crate::fs::sorted_entries(&d).map_err(|e| RelocateError::io(&d, e))?;
        for e in entries {
            let p = e.path();
            let md = fs::symlink_metadata(&p).map_err(|err| RelocateError::io(&p, err))?;
            if md.is_dir() {
                stack.push(p);
            } else {
                drop_in_file(dir, &p, &md, lexists, &mut seen, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// [`drop_redundant_rpaths_in_tree`] over known files only: `rels` (relative to `dir`) are the
/// candidates, e.g. the files that unpacking saw start with the ELF magic.
pub fn drop_redundant_rpaths_in(
    dir: &Path,
    rels: &[String],
    lexists: &dyn Fn(&[u8]) -> bool,
) -> Result<Vec<(PathBuf, RpathChange)>, RelocateError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for rel in rels {
        let p = dir.join(rel);
        let md = fs::symlink_metadata(&p).map_err(|err| RelocateError::io(&p, err))?;
        drop_in_file(dir, &p, &md, lexists, &mut seen, &mut out)?;
    }
    Ok(out)
}

fn drop_in_file(
    dir: &Path,
    p: &Path,
    md: &fs::Metadata,
    lexists: &dyn Fn(&[u8]) -> bool,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut Vec<(PathBuf, RpathChange)>,
) -> Result<(), RelocateError> {
    if !md.is_file() || (md.nlink() > 1 && !seen.insert((md.dev(), md.ino()))) {
        return Ok(());
    }
    if let Some(change) = drop_redundant_rpaths(p, lexists)? {
        let rel = p.strip_prefix(dir).unwrap_or(p).to_path_buf();
        tracing::debug!(
            "dropped rpath entries in {}: {} -> {}",
            rel.display(),
            lossy(&change.old),
            lossy(&change.new)
        );
        out.push((rel, change));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
