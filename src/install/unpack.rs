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
    /// Hex sha256 of the content (files and hard links).
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
}

struct Extractor<'o> {
    partial: PathBuf,
    opts: &'o UnpackOptions,
    finder: Option<Finder<'o>>,
    members: Vec<Member>,
    index: HashMap<String, usize>,
    top: Option<String>,
    buf: Vec<u8>,
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
                }
            }
            FileKind::Hardlink => {
                let (i, target) = hardlink_source.ok_or_else(|| UnpackError::BadName {
                    member: name.clone(),
                })?;
                fs::hard_link(self.path_of(&target), &path).map_err(io_err(&path))?;
                let src = &self.members[i];
                Member {
                    name,
                    kind,
                    mode: src.mode,
                    size: src.size,
                    sha256: src.sha256.clone(),
                    link: Some(target),
                    has_hint: false,
                }
            }
            FileKind::File => {
                let mtime = entry.header().mtime().unwrap_or(0);
                let (size, sha256, has_hint) = self.write_file(entry, &path, mode, mtime)?;
                Member {
                    name,
                    kind,
                    mode,
                    size,
                    sha256: Some(sha256),
                    link: None,
                    has_hint,
                }
            }
        };
        tracing::trace!(member = %shown, kind = ?member.kind, "unpacked");
        self.push(member);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        mtime: u64,
    ) -> Result<(u64, String, bool), UnpackError> {
        // O_CREAT|O_EXCL: fails on any existing name, symlinks included (never followed).
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        let mut hasher = Sha256::new();
        let mut scan = self.finder.as_ref().map(StreamScan::new);
        let mut size = 0u64;
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e)),
            };
            let chunk = &self.buf[..n];
            hasher.update(chunk);
            if let Some(s) = scan.as_mut() {
                s.feed(chunk);
            }
            file.write_all(chunk).map_err(io_err(path))?;
            size += n as u64;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(path))?;
        let mtime = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0);
        filetime::set_file_handle_times(&file, None, Some(mtime)).map_err(io_err(path))?;
        let found = scan.is_some_and(|s| s.found);
        Ok((size, hex::encode(hasher.finalize()), found))
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
        for m in self.members.iter().filter(|m| inside(&m.name)) {
            let rel = strip(&m.name);
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
            files_with_prefix: self.finder.as_ref().map(|_| with_hint),
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
    let mut ex = Extractor {
        partial: partial.to_path_buf(),
        opts,
        finder,
        members: Vec::new(),
        index: HashMap::new(),
        top: None,
        buf: Vec::new(),
    };
    {
        let entries = archive.entries().map_err(corrupt)?;
        for entry in entries {
            let mut entry = entry.map_err(corrupt)?;
            ex.entry(&mut entry)?;
        }
    }
    // Read to the end so that gzip's CRC and length trailer are checked.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    ex.finish(staging)
}

/// Streaming substring search that also finds matches straddling chunk boundaries.
struct StreamScan<'f, 'n> {
    finder: &'f Finder<'n>,
    /// Last `needle.len() - 1` bytes seen.
    carry: Vec<u8>,
    found: bool,
}

impl<'f, 'n> StreamScan<'f, 'n> {
    fn new(finder: &'f Finder<'n>) -> Self {
        StreamScan {
            finder,
            carry: Vec::new(),
            found: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        let keep = self.finder.needle().len().saturating_sub(1);
        if self.found || chunk.is_empty() {
            return;
        }
        if keep > 0 && !self.carry.is_empty() {
            let mut joined = self.carry.clone();
            joined.extend_from_slice(&chunk[..keep.min(chunk.len())]);
            if self.finder.find(&joined).is_some() {
                self.found = true;
                return;
            }
        }
        if self.finder.find(chunk).is_some() {
            self.found = true;
            return;
        }
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use tar::{EntryType, Header};

    // ---------- archive builders ----------

    /// One member to put into a synthetic archive; names are written raw (up to 100 bytes) so
    /// that hostile names the `tar` crate's builder would refuse can be produced.
    enum M<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8], u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Raw(&'a [u8], EntryType, u32, &'a [u8], &'a [u8]),
    }

    fn header(name: &[u8], kind: EntryType, mode: u32, size: u64, link: &[u8]) -> Header {
        let mut h = Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    fn tar_of(members: &[M]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let (h, data): (Header, &[u8]) = match m {
                M::Dir(n) => (
                    header(n.as_bytes(), EntryType::Directory, 0o755, 0, b""),
                    b"",
                ),
                M::File(n, d, mode) => (
                    header(n.as_bytes(), EntryType::Regular, *mode, d.len() as u64, b""),
                    d,
                ),
                M::Sym(n, t) => (
                    header(n.as_bytes(), EntryType::Symlink, 0o777, 0, t.as_bytes()),
                    b"",
                ),
                M::Hard(n, t) => (
                    header(n.as_bytes(), EntryType::Link, 0o644, 0, t.as_bytes()),
                    b"",
                ),
                M::Raw(n, kind, mode, link, d) => {
                    (header(n, *kind, *mode, d.len() as u64, link), d)
                }
            };
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    const P: &str = "opt/store/linux-x86_64/pkg-1.0-abcdef";
    const BD: &[u8] = b"{sbang_install_path: /opt/store/bin/sbang, buildpath: /opt/store, \
        spackprefix: /spack, relative_prefix: linux-x86_64/pkg-1.0-abcdef, hardlinks_deduped: true, \
        hash_to_prefix: {abcdef: /opt/store/linux-x86_64/pkg-1.0-abcdef}, relocate_binaries: [], \
        relocate_links: [], relocate_textfiles: [share/a.txt]}";

    fn p(rel: &str) -> String {
        format!("{P}/{rel}")
    }

    /// A well-formed format-2 package: parents, prefix, `.spack/`, `extra` members, buildinfo last.
    fn package(extra: &[M]) -> Vec<u8> {
        let (bd, spack, share) = (p(".spack/binary_distribution"), p(".spack/"), p("share/"));
        let a = p("share/a.txt");
        let mut members = vec![
            M::Dir("opt/"),
            M::Dir("opt/store/"),
            M::Dir("opt/store/linux-x86_64/"),
            M::Dir("opt/store/linux-x86_64/pkg-1.0-abcdef/"),
            M::Dir(&spack),
            M::Dir(&share),
            M::File(
                &a,
                b"prefix /opt/store/linux-x86_64/pkg-1.0-abcdef here\n",
                0o644,
            ),
        ];
        members.extend(extra.iter().map(|m| match m {
            M::Dir(n) => M::Dir(n),
            M::File(n, d, mo) => M::File(n, d, *mo),
            M::Sym(n, t) => M::Sym(n, t),
            M::Hard(n, t) => M::Hard(n, t),
            M::Raw(n, k, mo, l, d) => M::Raw(n, *k, *mo, l, d),
        }));
        members.push(M::File(&bd, BD, 0o644));
        gz(&tar_of(&members))
    }

    struct Sandbox {
        _dir: tempfile::TempDir,
        root: PathBuf,
        staging: PathBuf,
        outside: PathBuf,
    }

    /// `root/` holds `stage` (the staging dir, created by unpack) and `outside/` (an existing
    /// directory hostile archives aim at).
    fn sandbox() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        Sandbox {
            staging: root.join("stage"),
            root,
            outside,
            _dir: dir,
        }
    }

    impl Sandbox {
        fn unpack(&self, bytes: &[u8]) -> Result<Unpacked, UnpackError> {
            unpack_tarball(bytes, &self.staging, &UnpackOptions::default())
        }

        /// Nothing but `outside/` (still empty) and no staging dir is left in the root.
        fn assert_clean(&self) {
            let mut names: Vec<_> = fs::read_dir(&self.root)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                ["outside"],
                "unexpected leftovers in {:?}",
                self.root
            );
            assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 0);
        }
    }

    // ---------- synthetic archives ----------

    #[test]
    fn well_formed_package() {
        let sb = sandbox();
        let (hf, hl, sl) = (p("share/b.txt"), p("share/c.txt"), p("share/link"));
        let bytes = package(&[
            M::File(&hf, b"data", 0o755),
            M::Hard(&hl, &hf),
            M::Sym(&sl, "/opt/store/linux-x86_64/pkg-1.0-abcdef/share/a.txt"),
        ]);
        let up = sb.unpack(&bytes).unwrap();
        assert_eq!(up.prefix_in_archive, P);
        assert_eq!(up.buildinfo.buildpath, "/opt/store");
        assert_eq!(up.files_with_prefix, None);
        let paths: Vec<_> = up.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".spack",
                "share",
                "share/a.txt",
                "share/b.txt",
                "share/c.txt",
                "share/link",
                ".spack/binary_distribution"
            ]
        );
        let s = &sb.staging;
        assert_eq!(fs::read(s.join("share/b.txt")).unwrap(), b"data");
        let m = fs::metadata(s.join("share/b.txt")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(m.mtime(), 0);
        assert_eq!(m.ino(), fs::metadata(s.join("share/c.txt")).unwrap().ino());
        let c = &up.files[4];
        assert_eq!(c.kind, FileKind::Hardlink);
        assert_eq!(c.link_target.as_deref(), Some("share/b.txt"));
        assert_eq!(c.sha256, up.files[3].sha256);
        assert_eq!(
            up.files[3].sha256.as_deref(),
            Some("3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7")
        );
        assert_eq!(
            fs::read_link(s.join("share/link")).unwrap(),
            Path::new("/opt/store/linux-x86_64/pkg-1.0-abcdef/share/a.txt")
        );
        // nothing but the package in staging, nothing else next to it
        let mut top: Vec<_> = fs::read_dir(s)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, [".spack", "share"]);
    }

    #[test]
    fn prefix_hint_is_scanned() {
        let sb = sandbox();
        let f = p("share/b.txt");
        let bytes = package(&[M::File(&f, b"no prefix in here", 0o644)]);
        let opts = UnpackOptions {
            allow_setuid: false,
            old_prefix_hint: Some(b"/opt/store/linux-x86_64/pkg-1.0-abcdef".to_vec()),
        };
        let up = unpack_tarball(&bytes[..], &sb.staging, &opts).unwrap();
        // `.spack/binary_distribution` names the prefix too: every regular file is scanned
        assert_eq!(
            up.files_with_prefix.unwrap(),
            ["share/a.txt", ".spack/binary_distribution"]
        );
    }

    #[test]
    fn format1_without_parents_and_buildinfo_not_last() {
        let sb = sandbox();
        let bytes = gz(&tar_of(&[
            M::Dir("pkg-1.0-abcdef/"),
            M::Dir("pkg-1.0-abcdef/.spack/"),
            M::File("pkg-1.0-abcdef/.spack/binary_distribution", BD, 0o644),
            // no directory entry for bin/: created implicitly
            M::File("pkg-1.0-abcdef/bin/tool", b"#!/bin/sh\n", 0o755),
        ]));
        let up = sb.unpack(&bytes).unwrap();
        assert_eq!(up.prefix_in_archive, "pkg-1.0-abcdef");
        assert!(sb.staging.join("bin/tool").is_file());
        assert!(up
            .files
            .iter()
            .any(|f| f.path == "bin" && f.kind == FileKind::Dir && f.mode == 0o755));
    }

    #[test]
    fn plain_tar_is_accepted() {
        let sb = sandbox();
        let bytes = tar_of(&[
            M::Dir("pkg/"),
            M::Dir("pkg/.spack/"),
            M::File("pkg/.spack/binary_distribution", BD, 0o644),
        ]);
        sb.unpack(&bytes).unwrap();
    }

    #[test]
    fn existing_empty_staging_is_used_and_emptied_on_error() {
        let sb = sandbox();
        fs::create_dir(&sb.staging).unwrap();
        let bad = package(&[M::Raw(
            b"opt/store/x/../../../../outside/f",
            EntryType::Regular,
            0o644,
            b"",
            b"x",
        )]);
        assert!(sb.unpack(&bad).is_err());
        assert_eq!(fs::read_dir(&sb.staging).unwrap().count(), 0);
        sb.unpack(&package(&[])).unwrap();
        let again = sb.unpack(&package(&[]));
        assert!(
            matches!(again, Err(UnpackError::StagingNotEmpty { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn setuid_allowed_when_asked() {
        let sb = sandbox();
        let f = p("bin/su");
        let bytes = package(&[M::File(&f, b"x", 0o4755)]);
        let err = sb.unpack(&bytes).unwrap_err();
        assert!(
            matches!(err, UnpackError::Setuid { mode: 0o4755, .. }),
            "{err}"
        );
        sb.assert_clean();
        let opts = UnpackOptions {
            allow_setuid: true,
            old_prefix_hint: None,
        };
        unpack_tarball(&bytes[..], &sb.staging, &opts).unwrap();
        let mode = fs::metadata(sb.staging.join("bin/su")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[test]
    fn directory_special_bits_are_dropped() {
        let sb = sandbox();
        let d = p("lib/");
        let bytes = package(&[M::Raw(d.as_bytes(), EntryType::Directory, 0o2755, b"", b"")]);
        sb.unpack(&bytes).unwrap();
        let mode = fs::metadata(sb.staging.join("lib")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    /// Each hostile archive is refused with the expected error and leaves nothing behind.
    #[test]
    fn hostile_archives_are_refused() {
        let sb = sandbox();
        let outside = sb.outside.to_str().unwrap().to_string();
        let outside_file = format!("{outside}/pwned");
        let (lnk, through) = (p("evil"), p("evil/pwned"));
        let (f, h) = (p("share/f"), p("share/h"));
        let later = p("share/later");
        let cases: Vec<(&str, Vec<u8>, ErrCheck)> = vec![
            (
                "dotdot",
                package(&[M::Raw(
                    b"opt/../../outside/pwned",
                    EntryType::Regular,
                    0o644,
                    b"",
                    b"x",
                )]),
                |e| matches!(e, UnpackError::EscapesPrefix { .. }),
            ),
            (
                "absolute",
                package(&[M::Raw(
                    outside_file.as_bytes(),
                    EntryType::Regular,
                    0o644,
                    b"",
                    b"x",
                )]),
                |e| matches!(e, UnpackError::AbsoluteName { .. }),
            ),
            (
                "write through symlink",
                package(&[M::Sym(&lnk, &outside), M::File(&through, b"x", 0o644)]),
                |e| matches!(e, UnpackError::ThroughLink { .. }),
            ),
            (
                "overwrite symlink",
                package(&[M::Sym(&lnk, &outside_file), M::File(&lnk, b"x", 0o644)]),
                |e| matches!(e, UnpackError::Duplicate { .. }),
            ),
            (
                "hardlink absolute",
                package(&[M::Hard(&h, &outside_file)]),
                |e| {
                    matches!(
                        e,
                        UnpackError::BadHardlink {
                            reason: "is an absolute path",
                            ..
                        }
                    )
                },
            ),
            (
                "hardlink dotdot",
                package(&[M::Hard(&h, "opt/../../outside/x")]),
                |e| {
                    matches!(
                        e,
                        UnpackError::BadHardlink {
                            reason: "escapes the package prefix",
                            ..
                        }
                    )
                },
            ),
            (
                "hardlink to later member",
                package(&[M::Hard(&h, &later), M::File(&later, b"x", 0o644)]),
                |e| matches!(e, UnpackError::BadHardlink { .. }),
            ),
            (
                "hardlink to symlink",
                package(&[M::Sym(&f, "/etc/passwd"), M::Hard(&h, &f)]),
                |e| matches!(e, UnpackError::BadHardlink { .. }),
            ),
            (
                "hardlink to parent dir outside prefix",
                package(&[M::Hard(&h, "opt/store")]),
                |e| matches!(e, UnpackError::BadHardlink { .. }),
            ),
            (
                "char device",
                package(&[M::Raw(f.as_bytes(), EntryType::Char, 0o644, b"", b"")]),
                |e| matches!(e, UnpackError::UnsupportedType { .. }),
            ),
            (
                "block device",
                package(&[M::Raw(f.as_bytes(), EntryType::Block, 0o644, b"", b"")]),
                |e| matches!(e, UnpackError::UnsupportedType { .. }),
            ),
            (
                "fifo",
                package(&[M::Raw(f.as_bytes(), EntryType::Fifo, 0o644, b"", b"")]),
                |e| matches!(e, UnpackError::UnsupportedType { .. }),
            ),
            ("setgid", package(&[M::File(&f, b"x", 0o2755)]), |e| {
                matches!(e, UnpackError::Setuid { .. })
            }),
            (
                "file beside the prefix",
                package(&[M::File("opt/store/other.txt", b"x", 0o644)]),
                |e| matches!(e, UnpackError::OutsidePrefix { .. }),
            ),
            (
                "second top-level tree",
                package(&[M::File("etc/passwd", b"x", 0o644)]),
                |e| matches!(e, UnpackError::OutsidePrefix { .. }),
            ),
            (
                "sibling sharing the prefix as a string",
                package(&[M::File(
                    "opt/store/linux-x86_64/pkg-1.0-abcdefX/f",
                    b"x",
                    0o644,
                )]),
                |e| matches!(e, UnpackError::OutsidePrefix { .. }),
            ),
            (
                "top-level file",
                package(&[M::File("README", b"x", 0o644)]),
                |e| matches!(e, UnpackError::OutsidePrefix { .. }),
            ),
            (
                "duplicate file",
                package(&[M::File(&f, b"x", 0o644), M::File(&f, b"y", 0o644)]),
                |e| matches!(e, UnpackError::Duplicate { .. }),
            ),
            (
                "directory over a file",
                package(&[
                    M::File(&f, b"x", 0o644),
                    M::File(&through_file(&f), b"y", 0o644),
                ]),
                |e| matches!(e, UnpackError::ThroughLink { .. }),
            ),
            (
                "non-utf8 name",
                package(&[M::Raw(
                    b"opt/store/\xff",
                    EntryType::Regular,
                    0o644,
                    b"",
                    b"x",
                )]),
                |e| matches!(e, UnpackError::BadName { .. }),
            ),
            (
                "no buildinfo",
                gz(&tar_of(&[M::Dir("pkg/"), M::File("pkg/a", b"x", 0o644)])),
                |e| matches!(e, UnpackError::NotSpackPackage),
            ),
            (
                "buildinfo at top",
                gz(&tar_of(&[
                    M::Dir(".spack/"),
                    M::File(".spack/binary_distribution", BD, 0o644),
                ])),
                |e| matches!(e, UnpackError::NotSpackPackage),
            ),
            (
                "bad buildinfo",
                gz(&tar_of(&[
                    M::Dir("pkg/"),
                    M::Dir("pkg/.spack/"),
                    M::File("pkg/.spack/binary_distribution", b"[1, 2]", 0o644),
                ])),
                |e| matches!(e, UnpackError::BuildInfo(_)),
            ),
        ];
        for (what, bytes, check) in cases {
            let err = sb.unpack(&bytes).expect_err(what);
            assert!(check(&err), "{what}: unexpected error {err:?}");
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{what}: multi-line message {msg}");
            sb.assert_clean();
        }
    }

    type ErrCheck = fn(&UnpackError) -> bool;

    fn through_file(f: &str) -> String {
        format!("{f}/sub")
    }

    #[test]
    fn error_message_names_member() {
        let sb = sandbox();
        let bytes = gz(&tar_of(&[M::Raw(
            b"../etc/passwd",
            EntryType::Regular,
            0o644,
            b"",
            b"x",
        )]));
        let msg = sb.unpack(&bytes).unwrap_err().to_string();
        assert_eq!(
            msg,
            "archive member `../etc/passwd` escapes the package prefix; the tarball is hostile or corrupt — refusing it"
        );
        sb.assert_clean();
    }

    #[test]
    fn tar_in_tar_is_recognised() {
        let sb = sandbox();
        let stem = "linux-ubuntu20.04-x86_64-gcc-9.4.0-zlib-1.2.11-abc";
        let inner = gz(&tar_of(&[M::Dir("zlib/")]));
        let (t, s) = (format!("{stem}.tar.gz"), format!("{stem}.spec.json"));
        let outer = tar_of(&[M::File(&t, &inner, 0o644), M::File(&s, b"{}", 0o644)]);
        for bytes in [outer.clone(), gz(&outer)] {
            let err = sb.unpack(&bytes).unwrap_err();
            assert!(matches!(err, UnpackError::TarInTar { .. }), "{err:?}");
            assert!(err.to_string().contains("tar-in-tar"));
            sb.assert_clean();
        }
    }

    #[test]
    fn not_archives() {
        let sb = sandbox();
        assert!(matches!(sb.unpack(b""), Err(UnpackError::Empty)));
        assert!(matches!(
            sb.unpack(b"hello world"),
            Err(UnpackError::NotAnArchive)
        ));
        assert!(matches!(
            sb.unpack(b"BZh91AY&SY..."),
            Err(UnpackError::UnsupportedCompression("bzip2"))
        ));
        assert!(matches!(
            sb.unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Err(UnpackError::UnsupportedCompression("zstd"))
        ));
        sb.assert_clean();
    }

    #[test]
    fn truncated_and_corrupt_gzip() {
        let sb = sandbox();
        let bytes = package(&[]);
        for cut in [bytes.len() - 1, bytes.len() - 8, bytes.len() / 2, 20] {
            let err = sb.unpack(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, UnpackError::Corrupt { .. }),
                "cut {cut}: {err:?}"
            );
            sb.assert_clean();
        }
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 6] ^= 0xff; // CRC trailer
        let err = sb.unpack(&flipped).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
        sb.assert_clean();
    }

    // ---------- streaming search ----------

    fn scan_chunks(needle: &[u8], data: &[u8], cuts: &[usize]) -> bool {
        let finder = Finder::new(needle);
        let mut scan = StreamScan::new(&finder);
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&data.len())) {
            let c = c.clamp(start, data.len());
            scan.feed(&data[start..c]);
            start = c;
        }
        scan.found
    }

    #[test]
    fn stream_scan_across_boundaries() {
        let needle = b"/opt/prefix";
        let data = b"xxxxxxx/opt/prefixyyyy";
        for a in 0..data.len() {
            for b in a..data.len() {
                assert!(scan_chunks(needle, data, &[a, b]), "cuts {a} {b}");
            }
        }
        assert!(!scan_chunks(needle, b"/opt/prefi/opt/prefi", &[10]));
        assert!(scan_chunks(b"z", b"abcz", &[1, 2, 3]));
    }

    proptest::proptest! {
        #[test]
        fn stream_scan_matches_naive(
            data in proptest::collection::vec(0u8..3, 0..200),
            needle in proptest::collection::vec(0u8..3, 1..6),
            mut cuts in proptest::collection::vec(0usize..200, 0..12),
        ) {
            cuts.sort_unstable();
            let naive = data.windows(needle.len()).any(|w| w == &needle[..]);
            proptest::prop_assert_eq!(scan_chunks(&needle, &data, &cuts), naive);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let sb = sandbox();
            proptest::prop_assert!(sb.unpack(&bytes).is_err());
            let gzipped = gz(&bytes);
            proptest::prop_assert!(sb.unpack(&gzipped).is_err());
            let mut headed = bytes.clone();
            headed.resize(headed.len().max(300), 0);
            headed[257..262].copy_from_slice(b"ustar");
            proptest::prop_assert!(sb.unpack(&gz(&headed)).is_err());
            sb.assert_clean();
        }
    }

    // ---------- real fixtures ----------

    fn fixtures() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("SF_FIXTURES").map(PathBuf::from),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")),
            Some(PathBuf::from("/work/shared/fixtures")),
        ];
        candidates
            .into_iter()
            .flatten()
            .find(|p| p.join("spack-v3").is_dir())
    }

    fn fixtures_or_fail() -> PathBuf {
        fixtures().expect("fixtures not found: set SF_FIXTURES to the shared/fixtures directory")
    }

    /// `(package name, tarball path)` of every install tarball of a v3 cache, via its manifests.
    fn v3_tarballs(cache: &Path) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let spec_dir = cache.join("v3/manifests/spec");
        for pkg in fs::read_dir(&spec_dir).unwrap() {
            let pkg = pkg.unwrap();
            for manifest in fs::read_dir(pkg.path()).unwrap() {
                let text = fs::read_to_string(manifest.unwrap().path()).unwrap();
                let body = text.split("-----BEGIN PGP SIGNATURE").next().unwrap();
                let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                for blob in v["data"].as_array().unwrap() {
                    if blob["mediaType"].as_str().unwrap().contains(".install.") {
                        let sum = blob["checksum"].as_str().unwrap();
                        let path = cache.join("blobs/sha256").join(&sum[..2]).join(sum);
                        out.push((pkg.file_name().into_string().unwrap(), path));
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn v2_tarballs(cache: &Path) -> Vec<(String, PathBuf)> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "spack") {
                    out.push(p);
                }
            }
        }
        let mut paths = Vec::new();
        walk(&cache.join("build_cache"), &mut paths);
        let mut out: Vec<_> = paths
            .into_iter()
            .map(|p| {
                let dir = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
                let name = dir.rsplit_once('-').unwrap().0.to_string(); // `<name>-<version>`
                (name, p)
            })
            .collect();
        out.sort();
        out
    }

    /// Independent listing with the `tar` crate: (relative path, kind, mode) of non-directories.
    fn listing(tarball: &Path, prefix: &str) -> Vec<(String, FileKind, u32)> {
        let f = File::open(tarball).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let t = e.header().entry_type();
            if t.is_dir() {
                continue;
            }
            let rel = name
                .strip_prefix(&format!("{prefix}/"))
                .unwrap()
                .to_string();
            let kind = if t.is_symlink() {
                FileKind::Symlink
            } else if t.is_hard_link() {
                FileKind::Hardlink
            } else {
                FileKind::File
            };
            let mode = if kind == FileKind::Symlink {
                0o777
            } else {
                e.header().mode().unwrap()
            };
            out.push((rel, kind, mode));
        }
        out
    }

    fn check_fixture(name: &str, tarball: &Path) -> (Unpacked, Sandbox) {
        let sb = sandbox();
        let up = sb
            .unpack(&fs::read(tarball).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // every non-directory member, in archive order, with its kind and mode
        let mut expected = listing(tarball, &up.prefix_in_archive);
        let mut got: Vec<_> = up
            .files
            .iter()
            .filter(|f| f.kind != FileKind::Dir)
            .map(|f| (f.path.clone(), f.kind, f.mode))
            .collect();
        // hard links report their target's mode
        for e in expected.iter_mut().filter(|e| e.1 == FileKind::Hardlink) {
            e.2 = got.iter().find(|g| g.0 == e.0).map(|g| g.2).unwrap_or(e.2);
        }
        assert_eq!(got, expected, "{name}");
        for f in &up.files {
            let path = sb.staging.join(&f.path);
            let meta = fs::symlink_metadata(&path).unwrap();
            match f.kind {
                FileKind::File | FileKind::Hardlink => {
                    assert!(meta.is_file());
                    assert_eq!(meta.len(), f.size);
                    assert_eq!(meta.mode() & 0o7777, f.mode, "{}", f.path);
                    let sum = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
                    assert_eq!(f.sha256.as_deref(), Some(sum.as_str()));
                }
                FileKind::Dir => assert!(meta.is_dir()),
                FileKind::Symlink => {
                    assert_eq!(
                        fs::read_link(&path).unwrap().to_str(),
                        f.link_target.as_deref()
                    );
                }
            }
        }
        // the prefix in the archive is the build-time prefix named by the buildinfo
        let bi = &up.buildinfo;
        assert_eq!(
            format!("/{}", up.prefix_in_archive),
            bi.old_prefix().unwrap(),
            "{name}"
        );
        assert!(bi.hardlinks_deduped);
        let own = bi.hash_to_prefix.as_ref().unwrap();
        assert!(own.iter().any(|(_, pfx)| pfx[1..] == up.prefix_in_archive));
        got.retain(|g| g.1 == FileKind::Symlink);
        (up, sb)
    }

    fn greet_checks(up: &Unpacked, sb: &Sandbox, spack_dir: &[&str]) {
        let non_dirs: Vec<_> = up
            .files
            .iter()
            .filter(|f| f.kind != FileKind::Dir)
            .map(|f| f.path.as_str())
            .collect();
        let mut expected = vec![
            ".spack/install_environment.json",
            ".spack/install_manifest.json",
            ".spack/install_times.json",
            ".spack/spack-build-env.txt",
            ".spack/spack-build-out.txt.gz",
            ".spack/spec.json",
        ];
        expected.extend_from_slice(spack_dir);
        expected.extend_from_slice(&[
            "bin/greet",
            "bin/greet-abs",
            "bin/greet-wrapper",
            "bin/hello",
            "lib/libgreet-alias.so",
            "libexec/greet/greet-sh",
            "share/greet/message.txt",
            "share/greet/paths-hardlink.txt",
            "share/greet/paths.txt",
            ".spack/binary_distribution",
        ]);
        assert_eq!(non_dirs, expected);
        let rec = |p: &str| up.files.iter().find(|f| f.path == p).unwrap();
        assert_eq!(rec("bin/hello").link_target.as_deref(), Some("greet"));
        let abs = rec("bin/greet-abs").link_target.clone().unwrap();
        assert_eq!(abs, format!("/{}/bin/greet", up.prefix_in_archive));
        let alias = rec("lib/libgreet-alias.so").link_target.clone().unwrap();
        assert!(alias.starts_with("/tmp/sf-fixtures/") && alias.ends_with("/lib/libgreet.so"));
        assert!(alias.contains("/libgreet-1.2.0-"));
        let hl = rec("share/greet/paths.txt");
        assert_eq!(hl.kind, FileKind::Hardlink);
        assert_eq!(
            hl.link_target.as_deref(),
            Some("share/greet/paths-hardlink.txt")
        );
        let ino = |p: &str| fs::metadata(sb.staging.join(p)).unwrap().ino();
        assert_eq!(
            ino("share/greet/paths.txt"),
            ino("share/greet/paths-hardlink.txt")
        );
        assert_eq!(rec("bin/greet").mode, 0o755);
        assert_eq!(rec("libexec/greet/greet-sh").mode, 0o755);
        assert_eq!(rec("share/greet/message.txt").mode, 0o644);
        let bi = &up.buildinfo;
        assert_eq!(
            bi.relocate_binaries,
            ["bin/greet", "libexec/greet/greet-sh"]
        );
        assert_eq!(
            bi.relocate_links,
            ["bin/greet-abs", "lib/libgreet-alias.so"]
        );
        assert_eq!(
            bi.relocate_textfiles,
            ["bin/greet-wrapper", "share/greet/paths-hardlink.txt"]
        );
        assert_eq!(bi.hash_to_prefix.as_ref().unwrap().len(), 2);
        assert!(bi
            .sbang_install_path
            .as_ref()
            .unwrap()
            .ends_with("/opt/bin/sbang"));
    }

    fn libgreet_checks(up: &Unpacked) {
        let rec = |p: &str| up.files.iter().find(|f| f.path == p).unwrap();
        assert_eq!(
            rec("lib/libgreet.so").link_target.as_deref(),
            Some("libgreet.so.1")
        );
        assert_eq!(
            rec("lib/libgreet.so.1").link_target.as_deref(),
            Some("libgreet.so.1.2.0")
        );
        assert_eq!(rec("lib/libgreet.so.1.2.0").mode, 0o755);
        assert_eq!(rec("include/libgreet.h").mode, 0o644);
        assert_eq!(up.files.last().unwrap().path, ".spack/binary_distribution");
        assert_eq!(up.buildinfo.relocate_binaries, ["lib/libgreet.so.1.2.0"]);
        assert!(up.buildinfo.relocate_links.is_empty());
    }

    #[test]
    fn fixture_v3_tarballs() {
        let root = fixtures_or_fail();
        for cache in ["spack-v3", "spack-v3-unsigned"] {
            let tarballs = v3_tarballs(&root.join(cache));
            let names: Vec<_> = tarballs.iter().map(|t| t.0.as_str()).collect();
            assert_eq!(names, ["compiler-wrapper", "greet", "libgreet"]);
            for (name, path) in &tarballs {
                let (up, sb) = check_fixture(name, path);
                match name.as_str() {
                    "greet" => greet_checks(
                        &up,
                        &sb,
                        &[
                            ".spack/repos/spack_repo/sfdemo/repo.yaml",
                            ".spack/repos/spack_repo/sfdemo/packages/greet/package.py",
                        ],
                    ),
                    "libgreet" => libgreet_checks(&up),
                    _ => {
                        // compiler-wrapper: many absolute symlinks into its own prefix
                        let own = format!("/{}/", up.prefix_in_archive);
                        assert!(up.files.iter().any(|f| f.kind == FileKind::Symlink
                            && f.link_target
                                .as_deref()
                                .is_some_and(|t| t.starts_with(&own))));
                    }
                }
            }
        }
    }

    #[test]
    fn fixture_v2_tarballs() {
        let root = fixtures_or_fail();
        let tarballs = v2_tarballs(&root.join("spack-v2"));
        let names: Vec<_> = tarballs.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["greet", "libgreet"]);
        for (name, path) in &tarballs {
            let (up, sb) = check_fixture(name, path);
            if name == "greet" {
                greet_checks(
                    &up,
                    &sb,
                    &[
                        ".spack/repos/sfdemo/repo.yaml",
                        ".spack/repos/sfdemo/packages/greet/package.py",
                        ".spack/repos/sfdemo/packages/libgreet/package.py",
                    ],
                );
            } else {
                libgreet_checks(&up);
            }
        }
    }

    #[test]
    fn fixture_with_prefix_hint_and_truncation() {
        let root = fixtures_or_fail();
        let (_, path) = v3_tarballs(&root.join("spack-v3"))
            .into_iter()
            .find(|t| t.0 == "greet")
            .unwrap();
        let bytes = fs::read(&path).unwrap();
        // learn the old prefix from a first unpack, then scan for it
        let sb = sandbox();
        let first = sb.unpack(&bytes).unwrap();
        let hint = first.buildinfo.old_prefix().unwrap();
        let sb2 = sandbox();
        let opts = UnpackOptions {
            allow_setuid: false,
            old_prefix_hint: Some(hint.into_bytes()),
        };
        let up = unpack_tarball(&bytes[..], &sb2.staging, &opts).unwrap();
        let hits = up.files_with_prefix.unwrap();
        for must in [
            "bin/greet",
            "libexec/greet/greet-sh",
            "bin/greet-wrapper",
            "share/greet/paths-hardlink.txt",
        ] {
            assert!(hits.iter().any(|h| h == must), "{must} not in {hits:?}");
        }
        assert!(!hits.iter().any(|h| h == "share/greet/message.txt"));
        // truncated downloads are refused, nothing left behind
        let sb3 = sandbox();
        for cut in [bytes.len() - 1, bytes.len() * 2 / 3, 100] {
            let err = sb3.unpack(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
            sb3.assert_clean();
        }
    }
}
