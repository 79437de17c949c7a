//! File primitives every layer uses, written once: the atomic write (temporary file in the same
//! directory, fsync of the file, rename, fsync of the directory), the streamed digest of a file
//! (sha256, or any other hash), the sorted listing of a directory and a program's place on `PATH`.
//!
//! This is the bottom layer: it imports nothing of the crate. Errors are plain `std::io::Error`;
//! callers add the path and their own error kind.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Permissions of a file written by [`write_atomic_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0600: only the owner can read it, from the first byte on (keys, root state).
    Private,
    /// Created with these bits minus the process umask, like any new file (published objects).
    Umask(u32),
    /// Exactly these bits, whatever the umask (modulefiles everyone must read).
    Exact(u32),
}

/// Write `bytes` to `path` atomically, owner-only (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, Mode::Private, ".sf-cache-tmp-", |f| {
        f.write_all(bytes)
    })
}

/// Write `path` atomically: parent directories are created, `fill` writes a temporary file named
/// `<prefix><random>` in the same directory, which is fsynced and renamed over `path`; then the
/// directory is fsynced so the rename itself survives a crash. A failure at any point leaves the
/// old content (or nothing) at `path`, never a mix, and no temporary file behind.
pub fn write_atomic_with(
    path: &Path,
    mode: Mode,
    prefix: &str,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_atomic_inner(path, mode, prefix, fill, true)
}

/// [`write_atomic_with`] without its two fsyncs: readers never see a partial file, but the
/// content is durable only once the caller has synced the file system ([`sync_filesystem`]), as
/// it must before anything refers to the file. For writing many files: one `syncfs` instead of
/// two fsyncs per file.
pub fn write_atomic_unsynced(
    path: &Path,
    mode: Mode,
    prefix: &str,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_atomic_inner(path, mode, prefix, fill, false)
}

/// Flush everything written on the file system holding `dir` (`syncfs(2)`).
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    // SAFETY: syncfs only reads the file descriptor, which stays open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write_atomic_inner(
    path: &Path,
    mode: Mode,
    prefix: &str,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    durable: bool,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if let Mode::Umask(bits) = mode {
        builder.permissions(std::fs::Permissions::from_mode(bits));
    }
    let tmp = builder.tempfile_in(dir)?;
    if let Mode::Exact(bits) = mode {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(bits))?;
    }
    let mut file = tmp.as_file().try_clone()?;
    fill(&mut file)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        sync_dir(dir);
    }
    Ok(())
}

/// fsync a directory so that a rename or a new entry in it is durable. Best effort: some file
/// systems refuse to open or sync directories, and the data itself was synced already.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Whether the open `file` is still the file at `path` (same device and inode): a lock taken
/// on a lock file that its last holder unlinked meanwhile must be taken again on the new one.
pub fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Look `name` up in a `PATH`-style list (executable regular files only).
pub fn find_program(name: &str, path: Option<&std::ffi::OsStr>) -> Option<std::path::PathBuf> {
    std::env::split_paths(path?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The entries of a directory sorted by name, so walks are deterministic.
pub fn sorted_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The digest (raw bytes) and length of a file under any hash `D`, read in 1 MiB blocks.
pub fn digest_file<D: Digest>(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    digest_reader::<D>(File::open(path)?)
}

/// The digest (raw bytes) and length of everything `f` yields, under any hash `D`, read in
/// 1 MiB blocks.
pub fn digest_reader<D: Digest>(mut f: impl Read) -> std::io::Result<(Vec<u8>, u64)> {
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().to_vec(), len))
}

/// sha256 (lowercase hex) and length of a file, read in 1 MiB blocks.
pub fn sha256_file_len(path: &Path) -> std::io::Result<(String, u64)> {
    digest_file::<Sha256>(path).map(|(d, len)| (hex::encode(d), len))
}

/// sha256 (lowercase hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_file_len(path).map(|(digest, _)| digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/file");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file")]);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_content_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("file");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, Mode::Private, ".t-", |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn modes_are_applied() {
        let d = tempfile::tempdir().unwrap();
        let exact = d.path().join("exact");
        write_atomic_with(&exact, Mode::Exact(0o644), ".t-", |f| f.write_all(b"x")).unwrap();
        assert_eq!(std::fs::metadata(&exact).unwrap().mode() & 0o777, 0o644);
        let umask = d.path().join("umask");
        write_atomic_with(&umask, Mode::Umask(0o666), ".t-", |f| f.write_all(b"x")).unwrap();
        let m = std::fs::metadata(&umask).unwrap().mode() & 0o777;
        assert_eq!(m & 0o600, 0o600, "owner can read and write: {m:o}");
        assert_eq!(m & 0o111, 0, "never executable: {m:o}");
    }

    #[test]
    fn entries_come_sorted_by_name() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b", "a", "c"] {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let names: Vec<_> = sorted_entries(d.path())
            .unwrap()
            .into_iter()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(sorted_entries(&d.path().join("missing")).is_err());
    }

    #[test]
    fn sha256_of_a_file_matches_the_known_digest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file_len(&p).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string(),
                3
            )
        );
        let big = d.path().join("big");
        std::fs::write(&big, vec![7u8; (1 << 20) + 5]).unwrap();
        let expect = hex::encode(Sha256::digest(vec![7u8; (1 << 20) + 5]));
        assert_eq!(sha256_file(&big).unwrap(), expect);
    }
}
