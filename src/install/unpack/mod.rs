//! Safe, single-pass extraction of a Spack package tarball into a staging directory.
//!
//! # Where the package prefix is
//! Spack (1.x `binary_distribution.py: _ensure_common_prefix`) reads the *whole* member list
//! before extracting anything: the prefix `P` is the grandparent of the shortest regular-file
//! member ending in `.spack/binary_distribution`, every member must lie under `P` or be a
//! directory that is a parent of `P`, and only `P/…` is extracted with `P` stripped. Spack relies
//! on no member order; and its writers do not help either: `binary_distribution` is the **last**
//! member (appended after the walk), format 2 (0.22+) lists the parent directories first,
//! format 1 (0.18–0.21) does not.
//!
//! We stream the archive once and never buffer it. Each member is checked on its own before it
//! is written (see below) and written under a private directory inside `staging`
//! (`staging/.sf-cache-unpack.partial/<full member name>`). When the archive ends, `P` is
//! determined exactly as Spack does, every member is checked against it (a member outside `P`
//! fails the whole unpack), and the entries of `P` are moved into `staging` with a handful of
//! `rename(2)` calls (one per top-level entry of the package prefix). The cost is a few renames;
//! in exchange we accept every archive Spack accepts, whatever its order, and never guess. Nothing
//! is ever written outside `staging`, and on any error everything we created is removed.
//! Cheap early refusals still happen before writing: every member must share the first path
//! component of the first member, and a non-directory at the top level is never inside a prefix
//! (that is also how a format-0 tar-in-tar archive is recognised).
//!
//! # What is refused before a member is written
//! absolute names, `..` components, non-UTF-8 names, device files, fifos, sparse files,
//! setuid/setgid regular files (unless [`UnpackOptions::allow_setuid`]), a second member with the
//! name of an existing non-directory (no overwrites, hence never a write through a symlink), any
//! member whose path crosses a symlink (or a file) created earlier from the archive, hard links
//! whose target is absolute, escapes, or is not a regular file extracted earlier. Files are
//! created with `O_CREAT|O_EXCL` (which never follows a symlink), directories with `mkdir(2)`.
//! Symlink targets are data and are created verbatim (relocation rewrites them later).
//!
//! # Modes, times, ownership
//! Modes come from the archive (regular files: setuid/setgid kept only when allowed, sticky
//! dropped; directories: `0o777` bits, plus special bits only when allowed), applied after the
//! content is written (directories at the very end, deepest first, so a read-only directory does
//! not stop its own extraction). Regular files get the archive mtime (Spack's extraction does the
//! same, usually 1970-01-01). Ownership is never changed. The staging directory's own mode is the
//! caller's business.
//!
//! # Threads
//! The calling thread inflates the stream, parses the tar headers, makes every check above and
//! creates directories and symlinks; the bytes of regular files go to two writer threads
//! (bounded queues of 256 KiB chunks, buffers reused), which create each file, write, hash and
//! scan it, and set its mode and mtime on the open descriptor. A directory's files go to one
//! writer (two threads creating names in one directory only fight over its lock). Hard links
//! are made once the writers are done. A writer's failure (disk full) ends the unpack with that
//! error; either way the writers are joined before anything is cleaned up.
//!
//! # Prefix detection while writing
//! The old prefix is known only from `binary_distribution`, the last member. So every regular
//! file's sha256 is computed while it is written ([`FileRecord::sha256`], for receipts and
//! verification), and when the caller already knows the old prefix (e.g. from an earlier package
//! of the same build) it passes [`UnpackOptions::old_prefix_hint`]: each regular file is then
//! scanned for those bytes with a streaming `memmem` window that also finds matches straddling
//! read buffers, and the matching paths are returned in [`Unpacked::files_with_prefix`]. Without a
//! hint the caller relies on the buildinfo lists, as Spack does.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use flate2::read::MultiGzDecoder;
use memchr::memmem::Finder;
use sha2::{Digest, Sha256};

use crate::buildcache::buildinfo::{BuildInfo, BuildInfoError};

/// Name of the private directory inside `staging` that holds members until the prefix is known.
const PARTIAL_DIR: &str = ".sf-cache-unpack.partial";
/// Largest `binary_distribution` we read (it lists paths; real ones are a few KiB to a few MiB).
const MAX_BUILDINFO: u64 = 64 << 20;
/// Read/write chunk for member contents.
const CHUNK: usize = 256 << 10;

/// Options for [`unpack_tarball`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Accept setuid/setgid regular files (and keep special bits on directories).
    pub allow_setuid: bool,
    /// Old (build-time) prefix bytes to look for in every regular file, if already known.
    pub old_prefix_hint: Option<Vec<u8>>,
    /// Stop hashing a file once the hint is found in it ([`FileRecord::sha256`] is then `None`):
    /// for callers that relocate such files and hash their final bytes anyway.
    pub unhashed_when_found: bool,
    /// Told how many members were read so far, every [`FileCounter::EVERY`] members and at the end.
    pub on_files: Option<FileCounter>,
}

/// A callback told the number of members unpacked so far (progress display).
#[derive(Clone)]
pub struct FileCounter(std::sync::Arc<dyn Fn(u64) + Send + Sync>);

impl FileCounter {
    /// Members between two calls.
    pub const EVERY: u64 = 256;

    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> FileCounter {
        FileCounter(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for FileCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileCounter")
    }
}

/// Kind of an unpacked member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// One member of the package prefix, as unpacked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRecord {
    /// Path relative to the package prefix (`/`-separated, no leading `/`).
    pub path: String,
    pub kind: FileKind,
    /// Mode applied (permission bits; `0o777` for symlinks).
    pub mode: u32,
    /// Content size in bytes (files and hard links; 0 otherwise).
    pub size: u64,
    /// Hex sha256 of the content (files and hard links; `None` for files left unhashed, see
    /// [`UnpackOptions::unhashed_when_found`]).
    pub sha256: Option<String>,
    /// Symlink target verbatim, or the hard-link target's path relative to the prefix.
    pub link_target: Option<String>,
}

/// Result of [`unpack_tarball`].
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub buildinfo: BuildInfo,
    /// Members inside the package prefix in archive order (the prefix directory itself and its
    /// parents left out; directories created implicitly for members are included with mode 0755).
    pub files: Vec<FileRecord>,
    /// The package prefix as named in the archive (build-time prefix without its leading `/`).
    pub prefix_in_archive: String,
    /// With [`UnpackOptions::old_prefix_hint`]: relative paths of the regular files containing it.
    pub files_with_prefix: Option<Vec<String>>,
    /// Regular files written from the archive (not hard links) that start with the ELF magic, and
    /// those that start with `#!`: what the post-install steps look at, without a tree walk.
    pub elf_files: Vec<String>,
    pub script_files: Vec<String>,
}

/// Why a package tarball was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the package archive is empty; the download is truncated — fetch it again")]
    Empty,
    #[error("the package archive is {0}-compressed; only gzip and plain tar package tarballs are supported")]
    UnsupportedCompression(&'static str),
    #[error("the package archive is neither gzip nor tar; the download is corrupt or not a Spack package — fetch it again")]
    NotAnArchive,
    #[error("cannot read the package archive: {reason}; the download is truncated or corrupt — fetch it again")]
    Corrupt { reason: String },
    #[error("the package archive is a Spack ≤0.17 tar-in-tar package (member `{member}`); it cannot be installed, rebuild and push it with a newer Spack")]
    TarInTar { member: String },
    #[error("archive member `{member}` has an absolute name; the tarball is hostile or corrupt — refusing it")]
    AbsoluteName { member: String },
    #[error("archive member `{member}` escapes the package prefix; the tarball is hostile or corrupt — refusing it")]
    EscapesPrefix { member: String },
    #[error("archive member `{member}` lies outside the package prefix `{prefix}`; the tarball is hostile or corrupt — refusing it")]
    OutsidePrefix { member: String, prefix: String },
    #[error("archive member `{member}` has an empty or non-UTF-8 name or link target; the tarball is corrupt — refusing it")]
    BadName { member: String },
    #[error("archive member `{member}` is a {kind}, which a Spack package never contains; the tarball is hostile or corrupt — refusing it")]
    UnsupportedType { member: String, kind: String },
    #[error("archive member `{member}` has setuid/setgid bits (mode {mode:o}); refusing it — pass --allow-setuid if you trust this package")]
    Setuid { member: String, mode: u32 },
    #[error("archive member `{member}` would be written through `{through}`, which the archive created as a symlink or file; the tarball is hostile or corrupt — refusing it")]
    ThroughLink { member: String, through: String },
    #[error("archive member `{member}` is a hard link to `{target}`, which {reason}; the tarball is hostile or corrupt — refusing it")]
    BadHardlink {
        member: String,
        target: String,
        reason: &'static str,
    },
    #[error("archive member `{member}` appears twice; refusing to overwrite it — the tarball is hostile or corrupt")]
    Duplicate { member: String },
    #[error("the archive has no `.spack/binary_distribution` member; it is not a Spack binary package (or a Spack ≤0.17 one) — refusing it")]
    NotSpackPackage,
    #[error("the archive names no package prefix directory for `{member}`; the tarball is corrupt — refusing it")]
    MissingPrefixDir { member: String },
    #[error("staging directory `{}` is not an empty directory; remove it and retry", path.display())]
    StagingNotEmpty { path: PathBuf },
    #[error("cannot write `{}`: {source}; check free space and permissions of the install root", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    BuildInfo(#[from] BuildInfoError),
    /// A writer thread stopped early; its own error is reported instead.
    #[error("unpacking stopped: a writer thread ended early")]
    WriterGone,
}

impl UnpackError {
    /// What sort of failure this is: a hostile member (absolute or escaping name, a link out of
    /// the prefix, a device, setuid bits, a duplicate) is a verification failure, like a bad
    /// checksum; an unreadable or unsupported archive and local I/O are plain failures.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            UnpackError::AbsoluteName { .. }
            | UnpackError::EscapesPrefix { .. }
            | UnpackError::OutsidePrefix { .. }
            | UnpackError::BadName { .. }
            | UnpackError::UnsupportedType { .. }
            | UnpackError::Setuid { .. }
            | UnpackError::ThroughLink { .. }
            | UnpackError::BadHardlink { .. }
            | UnpackError::Duplicate { .. } => ErrorKind::Verification,
            _ => ErrorKind::Failure,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(e: io::Error) -> UnpackError {
    let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("unexpected end of data ({e})")
    } else {
        e.to_string()
    };
    UnpackError::Corrupt { reason }
}

/// Unpack a package tarball (gzip-compressed or plain tar) into `staging`.
///
/// `staging` must be an empty directory or not exist (its parent must exist); afterwards it holds
/// the package prefix's contents. On error everything this call created is removed (and
/// `staging` itself if this call created it).
pub fn unpack_tarball(
    reader: impl Read,
    staging: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    let created = match fs::symlink_metadata(staging) {
        Ok(meta) => {
            let empty = meta.is_dir()
                && fs::read_dir(staging)
                    .map_err(io_err(staging))?
                    .next()
                    .is_none();
            if !empty {
                return Err(UnpackError::StagingNotEmpty {
                    path: staging.to_path_buf(),
                });
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(staging).map_err(io_err(staging))?;
            true
        }
        Err(e) => return Err(io_err(staging)(e)),
    };
    let partial = staging.join(PARTIAL_DIR);
    let result = fs::create_dir(&partial)
        .map_err(io_err(&partial))
        .and_then(|()| unpack_inner(reader, staging, &partial, opts));
    if result.is_err() {
        // Best effort: remove what we created; `remove_dir_all` never follows symlinks.
        if created {
            let _ = fs::remove_dir_all(staging);
        } else if let Ok(entries) = fs::read_dir(staging) {
            for entry in entries.flatten() {
                let p = entry.path();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let _ = if is_dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
    result
}

/// Sniff the compression from the first bytes and return a reader of the tar stream.
fn open_tar_stream<'a>(mut reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut head = vec![0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    head.truncate(filled);
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let kind = if head.is_empty() {
        return Err(UnpackError::Empty);
    } else if gzip {
        None
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        None
    } else {
        return Err(UnpackError::NotAnArchive);
    };
    if let Some(kind) = kind {
        return Err(UnpackError::UnsupportedCompression(kind));
    }
    let stream = io::Cursor::new(head).chain(reader);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(stream),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, stream))
    })
}

/// A member as seen in the archive (full normalized name).
struct Member {
    name: String,
    kind: FileKind,
    mode: u32,
    size: u64,
    sha256: Option<String>,
    /// Symlink: target verbatim; hard link: normalized full name of the target.
    link: Option<String>,
    has_hint: bool,
    /// What the content starts with (regular files).
    head: Head,
}

/// What a regular file's content starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Head {
    #[default]
    Other,
    Elf,
    Script,
}

impl Head {
    fn of(first: &[u8]) -> Head {
        if first.starts_with(b"\x7fELF") {
            Head::Elf
        } else if first.starts_with(b"#!") {
            Head::Script
        } else {
            Head::Other
        }
    }
}

struct Extractor<'o> {
    partial: PathBuf,
    opts: &'o UnpackOptions,
    /// Whether regular files are scanned for [`UnpackOptions::old_prefix_hint`].
    scan: bool,
    members: Vec<Member>,
    index: HashMap<String, usize>,
    top: Option<String>,
    /// Where regular files' bytes go (see [`writer`]).
    writers: Writers,
    /// Hard links, created once every file is written: `(member index, source member index)`.
    hardlinks: Vec<(usize, usize)>,
}

/// Normalize a member name: UTF-8, relative, no `..`; `.` and empty components dropped.
fn normalize(raw: &[u8]) -> Result<String, UnpackError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| UnpackError::BadName { member: shown() })?;
    if text.starts_with('/') {
        return Err(UnpackError::AbsoluteName { member: shown() });
    }
    let mut parts = Vec::new();
    for comp in text.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(UnpackError::EscapesPrefix { member: shown() }),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn looks_like_tar_in_tar(name: &str) -> bool {
    [
        ".tar.gz",
        ".tar.bz2",
        ".spec.json",
        ".spec.yaml",
        ".spec.json.asc",
        ".spec.json.sig",
    ]
    .iter()
    .any(|ext| name.ends_with(ext))
}

impl<'o> Extractor<'o> {
    fn path_of(&self, name: &str) -> PathBuf {
        self.partial.join(name)
    }

    /// Make sure every ancestor of `name` is a directory created from this archive: refuse
    /// symlinks and files on the way, create missing ones (recorded as implicit directories).
    fn ensure_parents(&mut self, name: &str) -> Result<(), UnpackError> {
        let mut end = 0;
        while let Some(pos) = name[end..].find('/') {
            let ancestor = &name[..end + pos];
            end += pos + 1;
            match self.index.get(ancestor).map(|&i| self.members[i].kind) {
                Some(FileKind::Dir) => {}
                Some(_) => {
                    return Err(UnpackError::ThroughLink {
                        member: name.to_string(),
                        through: ancestor.to_string(),
                    })
                }
                None => {
                    let path = self.path_of(ancestor);
                    fs::create_dir(&path).map_err(io_err(&path))?;
                    self.push(Member {
                        name: ancestor.to_string(),
                        kind: FileKind::Dir,
                        mode: 0o755,
                        size: 0,
                        sha256: None,
                        link: None,
                        has_hint: false,
                        head: Head::Other,
                    });
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, m: Member) {
        self.index.insert(m.name.clone(), self.members.len());
        self.members.push(m);
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let name = normalize(&raw_name)?;
        let is_dir = etype.is_dir();
        if name.is_empty() {
            if is_dir {
                return Ok(()); // `./`: the archive root itself
            }
            return Err(UnpackError::BadName { member: shown });
        }

        // Cheap early refusals, before anything about this member is written.
        let first = name.split('/').next().unwrap_or_default();
        if !is_dir && !name.contains('/') {
            if looks_like_tar_in_tar(&name) {
                return Err(UnpackError::TarInTar { member: name });
            }
            return Err(UnpackError::OutsidePrefix {
                member: name,
                prefix: "(package prefix)".to_string(),
            });
        }
        match &self.top {
            None => self.top = Some(first.to_string()),
            Some(top) if top != first => {
                return Err(UnpackError::OutsidePrefix {
                    member: name,
                    prefix: format!("{top}/…"),
                })
            }
            Some(_) => {}
        }

        let kind = if etype.is_file() || etype.is_contiguous() {
            FileKind::File
        } else if is_dir {
            FileKind::Dir
        } else if etype.is_symlink() {
            FileKind::Symlink
        } else if etype.is_hard_link() {
            FileKind::Hardlink
        } else {
            let what = if etype.is_character_special() {
                "character device".to_string()
            } else if etype.is_block_special() {
                "block device".to_string()
            } else if etype.is_fifo() {
                "fifo".to_string()
            } else if etype.is_gnu_sparse() {
                "sparse file".to_string()
            } else {
                format!("tar entry of type {:?}", etype.as_byte() as char)
            };
            return Err(UnpackError::UnsupportedType {
                member: name,
                kind: what,
            });
        };

        let header_mode = entry.header().mode().map_err(corrupt)?;
        let special = header_mode & 0o6000;
        if kind == FileKind::File && special != 0 && !self.opts.allow_setuid {
            return Err(UnpackError::Setuid {
                member: name,
                mode: header_mode & 0o7777,
            });
        }
        let mode = match (kind, self.opts.allow_setuid) {
            (FileKind::Symlink, _) => 0o777,
            (FileKind::File, true) => header_mode & 0o6777,
            (FileKind::Dir, true) => header_mode & 0o7777,
            _ => header_mode & 0o777,
        };

        if let Some(&i) = self.index.get(&name) {
            if kind == FileKind::Dir && self.members[i].kind == FileKind::Dir {
                self.members[i].mode = mode;
                return Ok(());
            }
            return Err(UnpackError::Duplicate { member: name });
        }

        // Link targets are validated before anything is created.
        let link = match kind {
            FileKind::Symlink | FileKind::Hardlink => {
                let raw = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let target = std::str::from_utf8(&raw)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UnpackError::BadName {
                        member: name.clone(),
                    })?
                    .to_string();
                Some(target)
            }
            _ => None,
        };
        let mut hardlink_source = None;
        if kind == FileKind::Hardlink {
            let target = link.as_deref().unwrap_or_default();
            let bad = |reason| UnpackError::BadHardlink {
                member: name.clone(),
                target: target.to_string(),
                reason,
            };
            let norm = match normalize(target.as_bytes()) {
                Ok(n) if !n.is_empty() => n,
                Ok(_) => return Err(bad("is empty")),
                Err(UnpackError::AbsoluteName { .. }) => return Err(bad("is an absolute path")),
                Err(_) => return Err(bad("escapes the package prefix")),
            };
            match self.index.get(&norm) {
                Some(&i) if matches!(self.members[i].kind, FileKind::File | FileKind::Hardlink) => {
                    hardlink_source = Some((i, norm));
                }
                _ => return Err(bad("is not a regular file extracted before it")),
            }
        }

        self.ensure_parents(&name)?;
        let path = self.path_of(&name);
        let member = match kind {
            FileKind::Dir => {
                fs::create_dir(&path).map_err(io_err(&path))?;
                Member {
                    name,
                    kind,
                    mode,
                    size: 0,
                    sha256: None,
                    link: None,
                    has_hint: false,
                    head: Head::Other,
                }
            }
            FileKind::Symlink => {
                let target = link.unwrap_or_default();
                std::os::unix::fs::symlink(&target, &path).map_err(io_err(&path))?;
                Member {
                    name,
                    kind,
                    mode,
                    size: 0,
                    sha256: None,
                    link: Some(target),
                    has_hint: false,
                    head: Head::Other,
                }
            }
            FileKind::Hardlink => {
                // Made after the writers are done (its source may still be being written); its
                // size and digest are the source's, filled in then.
                let (i, target) = hardlink_source.ok_or_else(|| UnpackError::BadName {
                    member: name.clone(),
                })?;
                self.hardlinks.push((self.members.len(), i));
                Member {
                    name,
                    kind,
                    mode: self.members[i].mode,
                    size: 0,
                    sha256: None,
                    link: Some(target),
                    has_hint: false,
                    head: Head::Other,
                }
            }
            FileKind::File => {
                let mtime = entry.header().mtime().unwrap_or(0);
                self.send_file(entry, path, mode, mtime)?;
                // Size and digest come back from the writer.
                Member {
                    name,
                    kind,
                    mode,
                    size: 0,
                    sha256: None,
                    link: None,
                    has_hint: false,
                    head: Head::Other,
                }
            }
        };
        tracing::trace!(member = %shown, kind = ?member.kind, "unpacked");
        self.push(member);
        Ok(())
    }

    /// Hand a regular file's bytes to a writer thread, chunk by chunk. Files of one directory go
    /// to one writer: two threads creating names in the same directory only contend for its lock
    /// (the kernel spins on it), while different directories proceed in parallel.
    fn send_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: PathBuf,
        mode: u32,
        mtime: u64,
    ) -> Result<(), UnpackError> {
        let index = self.members.len();
        let w = self.writers.for_dir(path.parent().unwrap_or(Path::new("")));
        self.writers.send(
            w,
            Op::Open {
                index,
                path,
                mode,
                mtime,
            },
        )?;
        let mut remaining = entry.size();
        while remaining > 0 {
            let mut buf = self.writers.buffer();
            let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
            let mut n = 0;
            while n < want {
                match entry.read(&mut buf[n..want]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(corrupt(e)),
                }
            }
            if n == 0 {
                break;
            }
            remaining -= n as u64;
            self.writers.send(w, Op::Data(buf, n))?;
        }
        // A short member is the archive's truncation: reading the next header reports it.
        self.writers.send(w, Op::Close)
    }

    /// After the last member: find the prefix, check every member against it, move it into
    /// `staging`, apply directory modes and parse the buildinfo.
    fn finish(self, staging: &Path) -> Result<Unpacked, UnpackError> {
        let bd = self
            .members
            .iter()
            .filter(|m| {
                m.kind == FileKind::File
                    && m.name.ends_with("/.spack/binary_distribution")
                    && m.name.len() > "/.spack/binary_distribution".len()
            })
            .min_by_key(|m| m.name.len())
            .ok_or(UnpackError::NotSpackPackage)?;
        let prefix = bd.name[..bd.name.len() - "/.spack/binary_distribution".len()].to_string();
        tracing::debug!(prefix = %prefix, "package prefix in archive");
        let inside = |name: &str| {
            name.len() > prefix.len()
                && name.starts_with(prefix.as_str())
                && name.as_bytes()[prefix.len()] == b'/'
        };
        for m in &self.members {
            let parent_of_prefix = m.kind == FileKind::Dir
                && (m.name == prefix
                    || (prefix.starts_with(m.name.as_str())
                        && prefix.as_bytes().get(m.name.len()) == Some(&b'/')));
            if !(inside(&m.name) || parent_of_prefix) {
                return Err(UnpackError::OutsidePrefix {
                    member: m.name.clone(),
                    prefix,
                });
            }
        }
        if !matches!(
            self.index.get(&prefix).map(|&i| self.members[i].kind),
            Some(FileKind::Dir)
        ) {
            return Err(UnpackError::MissingPrefixDir {
                member: bd.name.clone(),
            });
        }

        // Move the prefix's entries into staging.
        let src_root = self.path_of(&prefix);
        let entries = fs::read_dir(&src_root).map_err(io_err(&src_root))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&src_root))?;
            let file_name = entry.file_name();
            let dest = staging.join(&file_name);
            if file_name == PARTIAL_DIR {
                return Err(UnpackError::BadName {
                    member: format!("{prefix}/{PARTIAL_DIR}"),
                });
            }
            fs::rename(entry.path(), &dest).map_err(io_err(&dest))?;
        }
        fs::remove_dir_all(&self.partial).map_err(io_err(&self.partial))?;

        let strip = |name: &str| name[prefix.len() + 1..].to_string();
        let mut dirs: Vec<(usize, PathBuf, u32)> = Vec::new();
        let mut files = Vec::new();
        let mut with_hint = Vec::new();
        let (mut elf_files, mut script_files) = (Vec::new(), Vec::new());
        for m in self.members.iter().filter(|m| inside(&m.name)) {
            let rel = strip(&m.name);
            if m.kind == FileKind::File {
                match m.head {
                    Head::Elf => elf_files.push(rel.clone()),
                    Head::Script => script_files.push(rel.clone()),
                    Head::Other => {}
                }
            }
            if m.kind == FileKind::Dir {
                dirs.push((rel.matches('/').count(), staging.join(&rel), m.mode));
            }
            if m.has_hint {
                with_hint.push(rel.clone());
            }
            let link_target = match m.kind {
                FileKind::Hardlink => m.link.as_deref().map(strip),
                _ => m.link.clone(),
            };
            files.push(FileRecord {
                path: rel,
                kind: m.kind,
                mode: m.mode,
                size: m.size,
                sha256: m.sha256.clone(),
                link_target,
            });
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (_, path, mode) in &dirs {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io_err(path))?;
        }

        let bd_path = staging.join(".spack").join("binary_distribution");
        let mut text = Vec::new();
        File::open(&bd_path)
            .map_err(io_err(&bd_path))?
            .take(MAX_BUILDINFO)
            .read_to_end(&mut text)
            .map_err(io_err(&bd_path))?;
        let buildinfo = BuildInfo::parse(&text)?;

        tracing::debug!(members = files.len(), staging = %staging.display(), "package unpacked");
        Ok(Unpacked {
            buildinfo,
            files,
            prefix_in_archive: prefix,
            files_with_prefix: self.scan.then_some(with_hint),
            elf_files,
            script_files,
        })
    }
}

fn unpack_inner(
    reader: impl Read,
    staging: &Path,
    partial: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    let stream = open_tar_stream(reader)?;
    let mut archive = tar::Archive::new(stream);
    let finder = opts
        .old_prefix_hint
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(Finder::new);
    let finder = finder.as_ref();
    let mut ex = std::thread::scope(|s| -> Result<Extractor<'_>, UnpackError> {
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let mut txs = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..WRITERS {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let recycle = recycle_tx.clone();
            txs.push(tx);
            let unhashed = opts.unhashed_when_found;
            handles.push(s.spawn(move || writer(rx, recycle, finder, unhashed)));
        }
        drop(recycle_tx);
        let mut ex = Extractor {
            partial: partial.to_path_buf(),
            opts,
            scan: finder.is_some(),
            members: Vec::new(),
            index: HashMap::new(),
            top: None,
            writers: Writers {
                txs,
                recycle: recycle_rx,
                last_dir: None,
                next: 0,
            },
            hardlinks: Vec::new(),
        };
        let read = (|| {
            let entries = archive.entries().map_err(corrupt)?;
            for entry in entries {
                let mut entry = entry.map_err(corrupt)?;
                ex.entry(&mut entry)?;
                if let Some(c) = &opts.on_files {
                    let n = ex.members.len() as u64;
                    if n.is_multiple_of(FileCounter::EVERY) {
                        (c.0)(n);
                    }
                }
            }
            if let Some(c) = &opts.on_files {
                (c.0)(ex.members.len() as u64);
            }
            Ok(())
        })();
        // Closing the channels ends the writers once they have written what they were given.
        ex.writers.txs.clear();
        let mut written = Vec::new();
        let mut failed = None;
        for h in handles {
            match h.join() {
                Ok(Ok(w)) => written.extend(w),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(UnpackError::Corrupt {
                        reason: "a writer thread panicked".into(),
                    });
                }
            }
        }
        match (read, failed) {
            // A writer's failure (disk full, permissions) is the cause when the reader only saw
            // the writer go away.
            (Err(UnpackError::WriterGone), Some(e)) | (Ok(()), Some(e)) => return Err(e),
            (Err(e), _) => return Err(e),
            (Ok(()), None) => {}
        }
        for w in written {
            let m = &mut ex.members[w.index];
            m.size = w.size;
            m.sha256 = w.sha256;
            m.has_hint = w.found;
            m.head = w.head;
        }
        Ok(ex)
    })?;
    for (i, src) in std::mem::take(&mut ex.hardlinks) {
        let (from, to) = (
            ex.path_of(&ex.members[src].name),
            ex.path_of(&ex.members[i].name),
        );
        fs::hard_link(&from, &to).map_err(io_err(&to))?;
        let (size, sha256) = (ex.members[src].size, ex.members[src].sha256.clone());
        ex.members[i].size = size;
        ex.members[i].sha256 = sha256;
    }
    // Read to the end so that gzip's CRC and length trailer are checked.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    ex.finish(staging)
}

/// Writer threads per unpack: file creation (the kernel's inode allocation) dominates unpacking
/// many files, and two writers overlap it with each other and with inflating.
const WRITERS: usize = 2;
/// Chunks queued per writer (each up to [`CHUNK`] bytes).
const QUEUE: usize = 8;

/// What a writer thread is told, in order: open a file, its bytes, close it.
enum Op {
    Open {
        index: usize,
        path: PathBuf,
        mode: u32,
        mtime: u64,
    },
    /// A buffer and how many of its bytes are the file's.
    Data(Vec<u8>, usize),
    Close,
}

/// What a writer reports about one file.
struct Written {
    index: usize,
    size: u64,
    sha256: Option<String>,
    found: bool,
    head: Head,
}

/// The reading side's handles on the writers.
struct Writers {
    txs: Vec<mpsc::SyncSender<Op>>,
    /// Buffers the writers are done with (always [`CHUNK`] long), reused before allocating.
    recycle: mpsc::Receiver<Vec<u8>>,
    /// The writer of the last directory seen, and the next one to give a new directory.
    last_dir: Option<(PathBuf, usize)>,
    next: usize,
}

impl Writers {
    /// The writer for files of `dir`: the same as the previous file's when the directory is the
    /// same (archives list a directory's files together), else the next in turn.
    fn for_dir(&mut self, dir: &Path) -> usize {
        if let Some((d, w)) = &self.last_dir {
            if d == dir {
                return *w;
            }
        }
        let w = self.next;
        self.next = (w + 1) % self.txs.len();
        self.last_dir = Some((dir.to_path_buf(), w));
        w
    }

    fn send(&self, w: usize, op: Op) -> Result<(), UnpackError> {
        self.txs[w].send(op).map_err(|_| UnpackError::WriterGone)
    }

    fn buffer(&self) -> Vec<u8> {
        self.recycle.try_recv().unwrap_or_else(|_| vec![0; CHUNK])
    }
}

/// The file mode creation mask, read once (`/proc/self/status`; `umask(2)` cannot be read
/// without setting it, which would race with other threads). `None`: unknown.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Ask the kernel to start writing `file`'s pages to disk now, without waiting (as dpkg does):
/// the install ends with one `syncfs` before its commit, which then finds most of the data
/// already written instead of waiting for all of it.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which stays open for the call; a
    // failure (e.g. a file system without support) only loses the head start.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// A writer thread: creates each file with `O_CREAT|O_EXCL` and its final mode, writes and
/// hashes its bytes, sets its mtime on the open descriptor; `fchmod` only when the umask or
/// special bits make the creation mode differ from the archive's.
fn writer(
    rx: mpsc::Receiver<Op>,
    recycle: mpsc::Sender<Vec<u8>>,
    finder: Option<&Finder<'_>>,
    unhashed_when_found: bool,
) -> Result<Vec<Written>, UnpackError> {
    struct Open<'f, 'n> {
        index: usize,
        path: PathBuf,
        file: File,
        mode: u32,
        mtime: u64,
        /// `None` once the file is known to be left unhashed.
        hasher: Option<Sha256>,
        scan: Option<StreamScan<'f, 'n>>,
        size: u64,
        head: Head,
    }
    let mask = umask();
    let mut out = Vec::new();
    let mut cur: Option<Open<'_, '_>> = None;
    for op in rx {
        match op {
            Op::Open {
                index,
                path,
                mode,
                mtime,
            } => {
                // O_CREAT|O_EXCL: fails on any existing name, symlinks included (never followed).
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o777)
                    .open(&path)
                    .map_err(io_err(&path))?;
                cur = Some(Open {
                    index,
                    path,
                    file,
                    mode,
                    mtime,
                    hasher: Some(Sha256::new()),
                    scan: finder.map(StreamScan::new),
                    size: 0,
                    head: Head::Other,
                });
            }
            Op::Data(buf, n) => {
                let Some(f) = cur.as_mut() else {
                    return Err(UnpackError::WriterGone);
                };
                let chunk = &buf[..n];
                if f.size == 0 {
                    // The first chunk holds min(size, CHUNK) bytes: enough for any magic.
                    f.head = Head::of(chunk);
                }
                if let Some(s) = f.scan.as_mut() {
                    s.feed(chunk);
                    if s.found && unhashed_when_found {
                        f.hasher = None;
                    }
                }
                if let Some(h) = f.hasher.as_mut() {
                    h.update(chunk);
                }
                f.file.write_all(chunk).map_err(io_err(&f.path))?;
                f.size += n as u64;
                let _ = recycle.send(buf);
            }
            Op::Close => {
                let Some(f) = cur.take() else {
                    return Err(UnpackError::WriterGone);
                };
                let exact = mask.is_some_and(|m| f.mode & m == 0) && f.mode & 0o7000 == 0;
                if !exact {
                    f.file
                        .set_permissions(fs::Permissions::from_mode(f.mode))
                        .map_err(io_err(&f.path))?;
                }
                let mtime =
                    filetime::FileTime::from_unix_time(i64::try_from(f.mtime).unwrap_or(0), 0);
                filetime::set_file_handle_times(&f.file, None, Some(mtime))
                    .map_err(io_err(&f.path))?;
                start_writeback(&f.file);
                out.push(Written {
                    index: f.index,
                    size: f.size,
                    sha256: f.hasher.map(|h| hex::encode(h.finalize())),
                    found: f.scan.is_some_and(|s| s.found),
                    head: f.head,
                });
            }
        }
    }
    Ok(out)
}

mod scan;
use scan::StreamScan;

#[cfg(test)]
mod tests;
