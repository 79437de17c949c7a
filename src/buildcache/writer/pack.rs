//! The package tarball: a reproducible gzip'd POSIX/PAX tar of an installed Spack prefix, in
//! Spack 1.x's member order, with a freshly computed `.spack/binary_distribution` as the last
//! member (format reference §6.1–6.3, `binary_distribution.py: tarfile_of_spec_prefix`,
//! `util/archive.py: reproducible_tarfile_from_prefix`, `gzip_compressed_tarfile`).
//!
//! Every regular file is read exactly once: its bytes go to the tar stream and, in the same pass,
//! to the [`FileScanner`] that classifies it for the relocation lists. So nothing is ever held
//! whole in memory (a file may be gigabytes), and the lists always describe the bytes that were
//! archived, even if the prefix changes while it is packed. The buildinfo can be computed this way
//! only because it is the *last* member.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use super::scan::{FileClass, PrefixMatcher};
use super::WriterError;
use crate::buildcache::buildinfo::BuildInfo;
use crate::buildcache::layout;
use crate::spec::{DepTypes, SpecFile};

const CHUNK: usize = 256 << 10;
const PLACEHOLDER: &str = "__spack_path_placeholder__";

/// What the buildinfo needs besides the scan: where the package was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfoInputs {
    /// The build store root (padded when padding was on), e.g. `/opt/spack/__spack_path_placeholder__/…`.
    pub buildpath: String,
    /// `<unpadded store root>/bin/sbang`.
    pub sbang_install_path: Option<String>,
    /// Spack's own installation prefix on the build host (unused by Spack 1.x readers).
    pub spackprefix: Option<String>,
    /// `(dag hash, build-time prefix)` of the root, its transitive link dependencies
    /// (breadth-first) and its direct run dependencies, externals excluded, in that order.
    pub hash_to_prefix: Vec<(String, String)>,
}

/// Strip the `__spack_path_placeholder__` padding components from a padded store root.
pub fn unpadded_root(root: &str) -> &str {
    let mut r = root.trim_end_matches('/');
    loop {
        let Some((head, last)) = r.rsplit_once('/') else {
            return r;
        };
        let is_pad = !last.is_empty()
            && (PLACEHOLDER.starts_with(last)
                || last
                    .strip_suffix('_')
                    .is_some_and(|l| !l.is_empty() && PLACEHOLDER.starts_with(l)));
        if !is_pad || head.is_empty() {
            return r;
        }
        r = head;
    }
}

/// Spack 1.x's default install projection `{platform}-{target}/{name}-{version}-{hash}`.
pub fn default_projection(spec: &crate::spec::Spec) -> Option<String> {
    let arch = spec.arch.as_ref()?;
    Some(format!(
        "{}/{}",
        layout::polite(&format!("{}-{}", arch.platform, arch.target)),
        layout::polite(&format!("{}-{}-{}", spec.name, spec.version, spec.hash))
    ))
}

impl BuildInfoInputs {
    /// Derive the inputs for a prefix installed by Spack under `buildpath` with the default
    /// projection: `hash_to_prefix` from the DAG in `specfile` (nodes[0] = the package; its own
    /// prefix is `prefix`), sbang from the unpadded root. `spackprefix` is left unset.
    pub fn for_spack_prefix(
        prefix: &Path,
        specfile: &SpecFile,
        buildpath: &str,
    ) -> Result<BuildInfoInputs, WriterError> {
        let buildpath_trimmed = buildpath.trim_end_matches('/').to_string();
        Self::for_installed_prefix(prefix, specfile, buildpath, |s| {
            default_projection(s)
                .map(|proj| format!("{buildpath_trimmed}/{proj}"))
                .ok_or_else(|| WriterError::Spec {
                    path: prefix.join(".spack/spec.json"),
                    reason: format!(
                        "node {} has no architecture; cannot compute its prefix",
                        s.name
                    ),
                })
        })
    }

    /// Like [`for_spack_prefix`](Self::for_spack_prefix), but the build-time prefix of each
    /// (non-external) dependency comes from `dep_prefix` (e.g. the install receipts of the same
    /// root, or a Spack store's database) instead of a guessed projection.
    pub fn for_installed_prefix(
        prefix: &Path,
        specfile: &SpecFile,
        buildpath: &str,
        mut dep_prefix: impl FnMut(&crate::spec::Spec) -> Result<String, WriterError>,
    ) -> Result<BuildInfoInputs, WriterError> {
        let buildpath = buildpath.trim_end_matches('/').to_string();
        let root = specfile.nodes.first().ok_or_else(|| WriterError::Spec {
            path: prefix.join(".spack/spec.json"),
            reason: "the spec has no nodes".into(),
        })?;
        let root_prefix = prefix
            .to_str()
            .ok_or_else(|| WriterError::NonUtf8Path {
                path: prefix.to_path_buf(),
            })?
            .trim_end_matches('/')
            .to_string();
        let mut out: Vec<(String, String)> = vec![(root.hash.clone(), root_prefix)];
        let mut push = |hash: &str, out: &mut Vec<(String, String)>| -> Result<(), WriterError> {
            if out.iter().any(|(h, _)| h == hash) {
                return Ok(());
            }
            let Some(s) = specfile.find(hash) else {
                return Ok(()); // not in the file: nothing to relocate for it
            };
            if s.external.is_some() {
                return Ok(());
            }
            let p = dep_prefix(s)?;
            out.push((hash.to_string(), p.trim_end_matches('/').to_string()));
            Ok(())
        };
        // Transitive link dependencies, breadth-first.
        let mut queue: VecDeque<&crate::spec::Spec> = VecDeque::from([root]);
        let mut seen: Vec<&str> = vec![root.hash.as_str()];
        while let Some(s) = queue.pop_front() {
            for e in &s.dependencies {
                if !e.deptypes.intersects(DepTypes::LINK) || seen.contains(&e.hash.as_str()) {
                    continue;
                }
                seen.push(&e.hash);
                push(&e.hash, &mut out)?;
                if let Some(d) = specfile.find(&e.hash) {
                    queue.push_back(d);
                }
            }
        }
        for e in &root.dependencies {
            if e.deptypes.intersects(DepTypes::RUN) {
                push(&e.hash, &mut out)?;
            }
        }
        Ok(BuildInfoInputs {
            sbang_install_path: Some(format!("{}/bin/sbang", unpadded_root(&buildpath))),
            buildpath,
            spackprefix: None,
            hash_to_prefix: out,
        })
    }

    /// The prefixes whose occurrence makes a text file relocatable (Spack's
    /// `prefixes_to_relocate`): package prefixes, sbang path, store root.
    pub fn prefixes_to_relocate(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hash_to_prefix.iter().map(|(_, p)| p.clone()).collect();
        v.extend(self.sbang_install_path.clone());
        v.push(self.buildpath.clone());
        v
    }
}

/// Result of [`pack_prefix`].
#[derive(Debug, Clone)]
pub struct PackedTarball {
    /// Hex sha256 of the gzip bytes written.
    pub sha256: String,
    /// Number of gzip bytes written.
    pub size: u64,
    pub buildinfo: BuildInfo,
    /// The `.spack/binary_distribution` text as archived.
    pub buildinfo_yaml: String,
    /// Number of tar members (headers for PAX records not counted).
    pub members: usize,
}

/// A writer that hashes and counts what passes through (Spack's `ChecksumWriter`).
pub struct ChecksumWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> ChecksumWriter<W> {
    pub fn new(inner: W) -> Self {
        ChecksumWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `(hex sha256, byte count, inner writer)`.
    pub fn finish(self) -> (String, u64, W) {
        (hex::encode(self.hasher.finalize()), self.count, self.inner)
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A gzip encoder with Spack's parameters: level 6, no file name, mtime 0.
pub fn spack_gzip<W: Write>(w: W) -> GzEncoder<W> {
    GzBuilder::new().mtime(0).write(w, Compression::new(6))
}

/// Gzip a small in-memory buffer with [`spack_gzip`].
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = spack_gzip(Vec::with_capacity(data.len() / 3 + 64));
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

use super::tar::{Kind, TarWriter};
use crate::buildcache::buildinfo::buildinfo_yaml;

// ---------------------------------------------------------------------------------------------

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriterError + '_ {
    move |source| WriterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8(rel: &[u8], abs: &Path) -> Result<String, WriterError> {
    String::from_utf8(rel.to_vec()).map_err(|_| WriterError::NonUtf8Path {
        path: abs.to_path_buf(),
    })
}

fn norm_file_mode(mode: u32) -> u32 {
    if mode & 0o100 != 0 {
        0o755
    } else {
        0o644
    }
}

struct Walker<'a, W: Write> {
    tar: TarWriter<W>,
    matcher: PrefixMatcher,
    skip: Option<(u64, u64)>,
    exclude: &'a HashSet<&'a [u8]>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    info: &'a mut BuildInfo,
    members: usize,
    buf: Vec<u8>,
}

impl<W: Write> Walker<'_, W> {
    fn tar_err(&self, path: &Path) -> impl FnOnce(io::Error) -> WriterError + '_ {
        let p = path.to_path_buf();
        move |source| WriterError::Output {
            reason: format!("{source} (while writing {})", p.display()),
        }
    }

    /// Archive one non-directory entry. `rel` is relative to the prefix, `name` the member name.
    fn entry(
        &mut self,
        abs: &Path,
        rel: &[u8],
        name: &[u8],
        meta: &fs::Metadata,
    ) -> Result<(), WriterError> {
        let ft = meta.file_type();
        let key = (meta.dev(), meta.ino());
        if self.skip == Some(key) || self.exclude.contains(rel) {
            return Ok(());
        }
        let listable = !(rel == b".spack" || rel.starts_with(b".spack/"));
        if ft.is_symlink() {
            let target = fs::read_link(abs)
                .map_err(io_err(abs))?
                .into_os_string()
                .into_vec();
            self.tar
                .header(name, Kind::Symlink, 0o755, 0, &target)
                .map_err(self.tar_err(abs))?;
            self.members += 1;
            if listable && self.matcher.link_matches(&target) {
                self.info.relocate_links.push(utf8(rel, abs)?);
            }
            return Ok(());
        }
        if !ft.is_file() {
            // Devices, fifos, sockets: Spack skips them too.
            tracing::debug!("skipping special file {}", abs.display());
            return Ok(());
        }
        let mode = norm_file_mode(meta.mode());
        if meta.nlink() > 1 {
            if let Some(first) = self.hardlinks.get(&key) {
                let first = first.clone();
                self.tar
                    .header(name, Kind::Hardlink, mode, 0, &first)
                    .map_err(self.tar_err(abs))?;
                self.members += 1;
                return Ok(());
            }
            self.hardlinks.insert(key, name.to_vec());
        }
        let size = meta.len();
        self.tar
            .header(name, Kind::File, mode, size, b"")
            .map_err(self.tar_err(abs))?;
        self.members += 1;
        let mut file = File::open(abs).map_err(io_err(abs))?;
        let mut scanner = self.matcher.scanner();
        let mut left = size;
        while left > 0 {
            let want = (left.min(self.buf.len() as u64)) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(WriterError::ChangedWhilePacking {
                        path: abs.to_path_buf(),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(abs)(e)),
            };
            let chunk = &self.buf[..n];
            if listable {
                scanner.feed(chunk);
            }
            self.tar
                .w
                .write_all(chunk)
                .map_err(|source| WriterError::Output {
                    reason: format!("{source} (while writing {})", abs.display()),
                })?;
            self.tar.written += n as u64;
            left -= n as u64;
        }
        self.tar.pad(size).map_err(self.tar_err(abs))?;
        if listable {
            match scanner.finish() {
                FileClass::Binary => self.info.relocate_binaries.push(utf8(rel, abs)?),
                FileClass::Text { has_prefix: true } => {
                    self.info.relocate_textfiles.push(utf8(rel, abs)?)
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

fn dir_name(name: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(b'/');
    v
}

/// Pack the installed prefix `prefix` (absolute) into `out` as a gzip'd tar; see the module docs.
pub fn pack_prefix(
    prefix: &Path,
    inputs: &BuildInfoInputs,
    out: impl Write,
) -> Result<PackedTarball, WriterError> {
    pack_prefix_excluding(prefix, inputs, &[], out)
}

/// [`pack_prefix`], leaving out the paths named in `exclude` (relative to the prefix; a directory
/// with everything below it), e.g. an installer's own receipts, which describe one local install
/// and never travel in a tarball, or files created after the install.
pub fn pack_prefix_excluding(
    prefix: &Path,
    inputs: &BuildInfoInputs,
    exclude: &[String],
    out: impl Write,
) -> Result<PackedTarball, WriterError> {
    if !prefix.is_absolute() {
        return Err(WriterError::NotAPrefix {
            path: prefix.to_path_buf(),
            reason: "the prefix must be an absolute path".into(),
        });
    }
    let meta = fs::metadata(prefix).map_err(io_err(prefix))?;
    if !meta.is_dir() {
        return Err(WriterError::NotAPrefix {
            path: prefix.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    // Normalize: drop `.`/trailing-slash components (never resolve symlinks: names are as given).
    let clean: PathBuf = prefix.components().collect();
    let prefix_str = clean.to_str().ok_or_else(|| WriterError::NonUtf8Path {
        path: clean.clone(),
    })?;
    let prefix_name = prefix_str.trim_start_matches('/').as_bytes().to_vec();
    if prefix_name.is_empty() {
        return Err(WriterError::NotAPrefix {
            path: clean.clone(),
            reason: "refusing to pack the root directory".into(),
        });
    }

    let mut info = BuildInfo {
        sbang_install_path: inputs.sbang_install_path.clone(),
        buildpath: inputs.buildpath.clone(),
        spackprefix: inputs.spackprefix.clone(),
        relative_prefix: prefix_str
            .strip_prefix(inputs.buildpath.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string),
        hardlinks_deduped: true,
        hash_to_prefix: Some(inputs.hash_to_prefix.clone()),
        ..BuildInfo::default()
    };

    let skip = fs::symlink_metadata(clean.join(".spack/binary_distribution"))
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let gz = spack_gzip(ChecksumWriter::new(out));
    let exclude: HashSet<&[u8]> = exclude.iter().map(|e| e.as_bytes()).collect();
    let mut walker = Walker {
        tar: TarWriter { w: gz, written: 0 },
        matcher: PrefixMatcher::new(&inputs.prefixes_to_relocate()),
        skip,
        exclude: &exclude,
        hardlinks: HashMap::new(),
        info: &mut info,
        members: 0,
        buf: vec![0u8; CHUNK],
    };

    // Parent directories of the prefix (format 2).
    let comps: Vec<&[u8]> = prefix_name.split(|&b| b == b'/').collect();
    for i in 1..comps.len() {
        let name = dir_name(&comps[..i].join(&b'/'));
        walker
            .tar
            .header(&name, Kind::Dir, 0o755, 0, b"")
            .map_err(walker.tar_err(&clean))?;
        walker.members += 1;
    }

    // Depth-first pre-order; per directory: the directory, its non-directories sorted by name,
    // then its subdirectories in name order.
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(clean.clone(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let name = if rel.is_empty() {
            prefix_name.clone()
        } else {
            join(&prefix_name, &rel)
        };
        walker
            .tar
            .header(&dir_name(&name), Kind::Dir, 0o755, 0, b"")
            .map_err(walker.tar_err(&dir))?;
        walker.members += 1;
        let mut entries: Vec<(OsString, fs::Metadata)> = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let p = e.path();
            let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            entries.push((e.file_name(), m));
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut subdirs = Vec::new();
        for (fname, m) in entries {
            let abs = dir.join(&fname);
            let erel = join(&rel, fname.as_bytes());
            if m.file_type().is_dir() {
                if !walker.exclude.contains(erel.as_slice()) {
                    subdirs.push((abs, erel));
                }
                continue;
            }
            let ename = join(&prefix_name, &erel);
            walker.entry(&abs, &erel, &ename, &m)?;
        }
        stack.extend(subdirs.into_iter().rev());
    }

    let yaml = buildinfo_yaml(walker.info);
    let bname = join(&prefix_name, b".spack/binary_distribution");
    walker
        .tar
        .header(&bname, Kind::File, 0o644, yaml.len() as u64, b"")
        .and_then(|()| walker.tar.put(yaml.as_bytes()))
        .and_then(|()| walker.tar.pad(yaml.len() as u64))
        .map_err(|source| WriterError::Output {
            reason: source.to_string(),
        })?;
    walker.members += 1;
    let members = walker.members;
    let gz = walker.tar.finish().map_err(|source| WriterError::Output {
        reason: source.to_string(),
    })?;
    let cw = gz.finish().map_err(|source| WriterError::Output {
        reason: source.to_string(),
    })?;
    let (sha256, size, mut out) = cw.finish();
    out.flush().map_err(|source| WriterError::Output {
        reason: source.to_string(),
    })?;
    tracing::debug!(
        "packed {} ({members} members, {size} bytes, sha256 {sha256})",
        clean.display()
    );
    Ok(PackedTarball {
        sha256,
        size,
        buildinfo: info,
        buildinfo_yaml: yaml,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildcache::writer::tar::pax_record;

    #[test]
    fn unpadded() {
        let r = "/tmp/x/opt/__spack_path_placeholder__/__spack_path_placeholder__/__spack_path_p";
        assert_eq!(unpadded_root(r), "/tmp/x/opt");
        assert_eq!(unpadded_root("/opt/spack"), "/opt/spack");
        assert_eq!(unpadded_root("/opt/__sp_"), "/opt");
        assert_eq!(
            unpadded_root("/__spack_path_placeholder__"),
            "/__spack_path_placeholder__"
        );
    }

    #[test]
    fn pax_record_lengths() {
        let r = pax_record("path", b"abc");
        assert_eq!(r, b"12 path=abc\n");
        let long = vec![b'a'; 95];
        let r = pax_record("path", &long);
        let s = String::from_utf8(r.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn yaml_roundtrips_through_the_reader() {
        let b = BuildInfo {
            sbang_install_path: Some("/o/bin/sbang".into()),
            buildpath: "/o/__spack_path_placeholder__".into(),
            spackprefix: None,
            relative_prefix: Some("linux-x86_64/a-1.0-abc".into()),
            hardlinks_deduped: true,
            hash_to_prefix: Some(vec![("abc".into(), "/o/x y".into())]),
            relocate_textfiles: vec!["share/a: b".into(), "true".into(), "1.0".into()],
            relocate_binaries: vec!["bin/a\"q\\".into(), "lib/é".into()],
            relocate_links: vec![],
            relative_rpaths: false,
        };
        let y = buildinfo_yaml(&b);
        assert!(y.ends_with("}\n") && y.lines().count() == 1);
        assert_eq!(BuildInfo::parse(y.as_bytes()).unwrap(), b);
    }
}
