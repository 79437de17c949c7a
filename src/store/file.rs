//! Local directory backend.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use sha2::{Digest, Sha256};

use super::{check_prefix, check_rel, ObjectMeta, ObjectStream, Precondition, StoreError};

const CHUNK: usize = 256 * 1024;
/// Temporary files written by `put_*` start with this; `list` skips them.
pub(crate) const TMP_PREFIX: &str = ".sf-tmp-";
/// Lock files of conditional writes (`.sf-lock.<object name>`, beside the object) start with
/// this; `list` skips them. They are never deleted (deleting a lock file races with its users).
pub(crate) const LOCK_PREFIX: &str = ".sf-lock.";

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `"abc"` / `W/"abc"` / `abc` → `abc`.
fn bare_etag(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}

/// A store rooted at a local directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: Arc<PathBuf>,
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// A store at `root` (trailing slashes are irrelevant for paths).
    pub fn new(root: PathBuf) -> FileStore {
        let s = root.to_string_lossy();
        let trimmed = s.trim_end_matches('/');
        let root = if trimmed.is_empty() {
            PathBuf::from("/")
        } else {
            PathBuf::from(trimmed)
        };
        FileStore {
            root: Arc::new(root),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn display_url(&self) -> String {
        if self.root.is_absolute() {
            format!("file://{}", self.root.display())
        } else {
            self.root.display().to_string()
        }
    }

    /// Local path of an object.
    pub fn path_of(&self, rel: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(check_rel(rel)?))
    }

    /// Lock file guarding conditional writes of `rel` (see [`LOCK_PREFIX`]).
    pub fn lock_path_of(&self, rel: &str) -> Result<PathBuf, StoreError> {
        let dest = self.path_of(rel)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(dest.with_file_name(format!("{LOCK_PREFIX}{name}")))
    }

    fn map_open_err(&self, path: &Path, e: std::io::Error) -> StoreError {
        if e.kind() == ErrorKind::NotFound {
            StoreError::NotFound {
                url: path.display().to_string(),
            }
        } else {
            io_err(path, e)
        }
    }

    pub(crate) async fn get_bytes(&self, rel: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(rel)?;
        match tokio::fs::read(&path).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) => Err(self.map_open_err(&path, e)),
        }
    }

    pub(crate) async fn get_stream(
        &self,
        rel: &str,
        offset: u64,
    ) -> Result<ObjectStream, StoreError> {
        let path = self.path_of(rel)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.map_open_err(&path, e))?;
        let len = file.metadata().await.map_err(|e| io_err(&path, e))?.len();
        let offset = offset.min(len);
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| io_err(&path, e))?;
        }
        let state = (file, path, false);
        let s = stream::unfold(state, |(mut file, path, done)| async move {
            if done {
                return None;
            }
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, path, false)))
                }
                Err(e) => {
                    let err = io_err(&path, e);
                    Some((Err(err), (file, path, true)))
                }
            }
        });
        Ok(ObjectStream {
            total_len: Some(len),
            offset,
            stream: Box::pin(s),
        })
    }

    pub(crate) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path_of(rel)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                len: Some(m.len()),
                etag: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = check_prefix(prefix)?.to_string();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .map_err(|e| StoreError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    pub(crate) async fn put_bytes(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        let dest = self.path_of(rel)?;
        tokio::task::spawn_blocking(move || {
            atomic_write(&dest, |f| f.write_all(&bytes)).map_err(|(p, e)| io_err(&p, e))
        })
        .await
        .map_err(join_err)?
    }

    pub(crate) async fn get_with_etag(
        &self,
        rel: &str,
    ) -> Result<Option<(Bytes, String)>, StoreError> {
        let path = self.path_of(rel)?;
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(v) => {
                let etag = sha256_hex(&v);
                Ok(Some((Bytes::from(v), etag)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
        .map_err(join_err)?
    }

    pub(crate) async fn put_bytes_if(
        &self,
        rel: &str,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<String, StoreError> {
        let dest = self.path_of(rel)?;
        let lock = self.lock_path_of(rel)?;
        tokio::task::spawn_blocking(move || put_if_blocking(&dest, &lock, &bytes, &pre))
            .await
            .map_err(join_err)?
    }

    pub(crate) async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let dest = self.path_of(rel)?;
        let lock = self.lock_path_of(rel)?;
        tokio::task::spawn_blocking(move || {
            if !dest.parent().is_some_and(Path::is_dir) {
                return Ok(()); // no directory, no object
            }
            // Serialise with conditional writers of this object.
            let guard = ObjectLock::take(&lock)?;
            let res = match std::fs::remove_file(&dest) {
                Ok(()) => {
                    if let Some(d) = dest.parent() {
                        crate::fs::sync_dir(d);
                    }
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&dest, e)),
            };
            drop(guard);
            res
        })
        .await
        .map_err(join_err)?
    }

    /// Write `rel` atomically from `fill`, without fsyncs (blocking): durable only after
    /// [`FileStore::sync`], which the caller must call before anything names the object.
    pub fn put_unsynced_blocking(
        &self,
        rel: &str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let dest = self.path_of(rel)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::fs::write_atomic_unsynced(
            &dest,
            crate::fs::Mode::Umask(0o666),
            &format!("{TMP_PREFIX}{name}."),
            fill,
        )
        .map_err(|e| io_err(&dest, e))
    }

    /// Make everything written into this store durable (one `syncfs` of its file system).
    pub async fn sync(&self) -> Result<(), StoreError> {
        let root = self.root.to_path_buf();
        tokio::task::spawn_blocking(move || {
            crate::fs::sync_filesystem(&root).map_err(|e| io_err(&root, e))
        })
        .await
        .map_err(join_err)?
    }

    pub(crate) async fn put_file(&self, rel: &str, src: &Path) -> Result<(), StoreError> {
        let dest = self.path_of(rel)?;
        let src = src.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut input = std::fs::File::open(&src).map_err(|e| io_err(&src, e))?;
            atomic_write(&dest, |f| std::io::copy(&mut input, f).map(|_| ()))
                .map_err(|(p, e)| io_err(&p, e))
        })
        .await
        .map_err(join_err)?
    }
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    let start = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    };
    let mut out = Vec::new();
    match std::fs::symlink_metadata(&start) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&start, e)),
        Ok(m) if m.is_file() => {
            out.push(prefix.to_string());
            return Ok(out);
        }
        Ok(_) => {}
    }
    let mut stack = vec![(start, prefix.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), "skipping a non-UTF-8 file name");
                continue;
            };
            if name.starts_with(TMP_PREFIX) || name.starts_with(LOCK_PREFIX) {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            // Follow symlinks for files and directories alike (a mirror may be a link farm).
            let ft = std::fs::metadata(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
            if ft.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if ft.is_file() {
                out.push(child_rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Conditional write: temp file written and fsynced first, then under an exclusive `flock` of
/// `lock`: check `pre` against the current content, rename, fsync the directory.
/// The lock of one object's conditional writes (`.sf-lock.<name>` beside it). Removed when
/// released, so a store holds no lock files between runs: it is unlinked while still held, and
/// a writer that locked a file unlinked meanwhile opens the path again.
struct ObjectLock {
    file: std::fs::File,
    path: PathBuf,
}

impl ObjectLock {
    fn take(path: &Path) -> Result<ObjectLock, StoreError> {
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| io_err(path, e))?;
            file.lock().map_err(|e| io_err(path, e))?;
            if crate::fs::same_file(&file, path) {
                return Ok(ObjectLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

fn put_if_blocking(
    dest: &Path,
    lock: &Path,
    bytes: &[u8],
    pre: &Precondition,
) -> Result<String, StoreError> {
    let tmp = write_temp(dest, |f| f.write_all(bytes)).map_err(|(p, e)| io_err(&p, e))?;
    let lock_file = ObjectLock::take(lock)?;
    let failed = || StoreError::PreconditionFailed {
        url: dest.display().to_string(),
    };
    match pre {
        Precondition::Always => {}
        Precondition::IfAbsent => match std::fs::symlink_metadata(dest) {
            Ok(_) => return Err(failed()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dest, e)),
        },
        Precondition::IfMatch(expected) => match std::fs::read(dest) {
            Ok(cur) => {
                if sha256_hex(&cur) != bare_etag(expected) {
                    tracing::debug!(object = %dest.display(), "If-Match etag is stale");
                    return Err(failed());
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(failed()),
            Err(e) => return Err(io_err(dest, e)),
        },
    }
    tmp.persist(dest).map_err(|e| io_err(dest, e.error))?;
    if let Some(d) = dest.parent() {
        crate::fs::sync_dir(d);
    }
    drop(lock_file);
    Ok(sha256_hex(bytes))
}

/// Write `dest` atomically: temp file in the same directory, fsync, rename, fsync the directory.
pub(crate) fn atomic_write(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // 0666 minus the umask (see write_temp).
    crate::fs::write_atomic_with(
        dest,
        crate::fs::Mode::Umask(0o666),
        &format!("{TMP_PREFIX}{name}."),
        fill,
    )
    .map_err(|e| (dest.to_path_buf(), e))
}

/// A fsynced temp file beside `dest` (parent directories created), filled by `fill`.
fn write_temp(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<tempfile::NamedTempFile, (PathBuf, std::io::Error)> {
    let dir = dest
        .parent()
        .ok_or_else(|| {
            (
                dest.to_path_buf(),
                std::io::Error::new(ErrorKind::InvalidInput, "no parent directory"),
            )
        })?
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // 0666 minus the umask, like any newly created file: published blobs must be readable by the
    // web server that serves the directory (tempfile's default would be 0600).
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{name}."))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(|e| (dir.clone(), e))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| (tmp_path.clone(), e))?;
    fill(&mut file).map_err(|e| (tmp_path.clone(), e))?;
    file.sync_all().map_err(|e| (tmp_path.clone(), e))?;
    drop(file);
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn written_objects_are_world_readable_under_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().to_path_buf());
        s.put_bytes("blobs/x", Bytes::from_static(b"x"))
            .await
            .unwrap();
        // SAFETY: umask only swaps the process mask; it is restored right away.
        let mask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        let mode = std::fs::metadata(dir.path().join("blobs/x"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o666 & !(mask as u32), "mode {mode:o}");
    }

    #[tokio::test]
    async fn put_get_list_stream() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().to_path_buf());
        s.put_bytes("a/b/c.txt", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        s.put_bytes("a/d.txt", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(s.get_bytes("a/b/c.txt").await.unwrap(), "hello world");
        assert_eq!(s.list("").await.unwrap(), vec!["a/b/c.txt", "a/d.txt"]);
        assert_eq!(s.list("a/b/").await.unwrap(), vec!["a/b/c.txt"]);
        assert!(s.list("nope").await.unwrap().is_empty());
        let mut os = s.get_stream("a/b/c.txt", 6).await.unwrap();
        assert_eq!((os.offset, os.total_len), (6, Some(11)));
        let mut got = Vec::new();
        while let Some(c) = os.stream.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"world");
        assert!(s.get_bytes("zz").await.unwrap_err().is_not_found());
        assert!(s.head("zz").await.unwrap().is_none());
        assert!(s.head("a").await.unwrap().is_none());
        assert_eq!(s.head("a/d.txt").await.unwrap().unwrap().len, Some(1));
        assert!(s.get_bytes("../x").await.is_err());
        // overwrite is atomic and leaves no temp files behind
        s.put_bytes("a/d.txt", Bytes::from_static(b"yy"))
            .await
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().to_path_buf());
        assert!(s.get_with_etag("v3/index.json").await.unwrap().is_none());
        // IfMatch on a missing object fails.
        let e = s
            .put_bytes_if(
                "v3/index.json",
                Bytes::from_static(b"x"),
                Precondition::IfMatch("00".into()),
            )
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        assert!(e.to_string().contains("index.json"), "{e}");
        assert!(e.to_string().contains("another writer"), "{e}");
        let e1 = s
            .put_bytes_if(
                "v3/index.json",
                Bytes::from_static(b"one"),
                Precondition::IfAbsent,
            )
            .await
            .unwrap();
        assert_eq!(e1, sha256_hex(b"one"));
        let e = s
            .put_bytes_if(
                "v3/index.json",
                Bytes::from_static(b"two"),
                Precondition::IfAbsent,
            )
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed());
        let (body, etag) = s.get_with_etag("v3/index.json").await.unwrap().unwrap();
        assert_eq!((&body[..], etag.as_str()), (&b"one"[..], e1.as_str()));
        // Quoted etags (as S3 gives them) are accepted too.
        let e2 = s
            .put_bytes_if(
                "v3/index.json",
                Bytes::from_static(b"two"),
                Precondition::IfMatch(format!("\"{e1}\"")),
            )
            .await
            .unwrap();
        let e = s
            .put_bytes_if(
                "v3/index.json",
                Bytes::from_static(b"3"),
                Precondition::IfMatch(e1),
            )
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed());
        s.put_bytes_if(
            "v3/index.json",
            Bytes::from_static(b"4"),
            Precondition::Always,
        )
        .await
        .unwrap();
        assert_eq!(s.get_bytes("v3/index.json").await.unwrap(), "4");
        assert_ne!(e2, sha256_hex(b"4"));
        // Lock and temp files never show up in listings.
        assert_eq!(s.list("").await.unwrap(), vec!["v3/index.json"]);
        // No lock file stays behind once a conditional write is over.
        assert!(!s.lock_path_of("v3/index.json").unwrap().exists());
        s.delete("v3/index.json").await.unwrap();
        s.delete("v3/index.json").await.unwrap();
        s.delete("never/existed").await.unwrap();
        assert!(s.get_with_etag("v3/index.json").await.unwrap().is_none());
        assert!(s.delete("../x").await.is_err());
    }

    /// Many writers read the same version and race with IfMatch: exactly one wins per round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_if_match_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path().to_path_buf());
        s.put_bytes_if("idx", Bytes::from_static(b"base"), Precondition::IfAbsent)
            .await
            .unwrap();
        for round in 0..10 {
            let (_, etag) = s.get_with_etag("idx").await.unwrap().unwrap();
            let mut tasks = Vec::new();
            for w in 0..8 {
                let s = s.clone();
                let etag = etag.clone();
                tasks.push(tokio::spawn(async move {
                    let body = Bytes::from(format!("round {round} writer {w}"));
                    s.put_bytes_if("idx", body, Precondition::IfMatch(etag))
                        .await
                }));
            }
            let mut wins = Vec::new();
            for (w, t) in tasks.into_iter().enumerate() {
                match t.await.unwrap() {
                    Ok(_) => wins.push(w),
                    Err(e) => assert!(e.is_precondition_failed(), "{e}"),
                }
            }
            assert_eq!(wins.len(), 1, "round {round}: winners {wins:?}");
            let body = s.get_bytes("idx").await.unwrap();
            assert_eq!(body, format!("round {round} writer {}", wins[0]));
        }
        // Read-modify-write loops from concurrent tasks lose no update.
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let (body, etag) = s
                        .get_with_etag("counter")
                        .await
                        .unwrap()
                        .unwrap_or_default();
                    let n: u32 = std::str::from_utf8(&body).unwrap().parse().unwrap_or(0);
                    let pre = if etag.is_empty() {
                        Precondition::IfAbsent
                    } else {
                        Precondition::IfMatch(etag)
                    };
                    match s
                        .put_bytes_if("counter", Bytes::from((n + 1).to_string()), pre)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_precondition_failed() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.get_bytes("counter").await.unwrap(), "6");
    }
}
