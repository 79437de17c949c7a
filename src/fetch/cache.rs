//! Content-addressed blob cache: `<dir>/sha256/<xx>/<digest>`, partial downloads in `<dir>/tmp/`.
//!
//! A blob lands under its digest only after its sha256 was checked. Writers hold a shared lock
//! on `<dir>/.lock` (so a cleaner can take it exclusively) and an exclusive lock per digest
//! (`tmp/<digest>.lock`), so two tasks or processes never write the same partial file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::FetchError;

/// A validated sha256 digest: 64 lowercase hex characters (a `sha256:` prefix is accepted).
pub fn normalize_digest(digest: &str) -> Result<String, FetchError> {
    let d = digest.trim();
    let d = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
    if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(d)
    } else {
        Err(FetchError::InvalidDigest {
            digest: digest.chars().take(80).collect(),
        })
    }
}

fn io(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of a whole file (streamed), hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    crate::fs::sha256_file(path).map_err(|e| io(path, e))
}

/// The blob cache directory.
#[derive(Clone, Debug)]
pub struct BlobCache {
    dir: PathBuf,
}

/// A held file lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    /// Per-digest locks are removed when released, so a run leaves no `tmp/*.lock` behind.
    remove: bool,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a waiter that opened the old file notices that
        // its inode is no longer the path's (see `acquire`) and opens the path afresh.
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

impl BlobCache {
    /// Open (creating) a cache at `dir` (normally `$SF_CACHE_HOME/cache/blobs`).
    pub fn open(dir: impl Into<PathBuf>) -> Result<BlobCache, FetchError> {
        let dir = dir.into();
        for sub in ["sha256", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
        }
        Ok(BlobCache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives (whether or not it is present).
    pub fn path_of(&self, digest: &str) -> Result<PathBuf, FetchError> {
        let d = normalize_digest(digest)?;
        Ok(self.dir.join("sha256").join(&d[..2]).join(&d))
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &str) -> bool {
        self.path_of(digest).is_ok_and(|p| p.is_file())
    }

    /// Open a cached blob for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File, FetchError> {
        let p = self.path_of(digest)?;
        File::open(&p).map_err(|e| io(&p, e))
    }

    /// Path of the partial download of a blob.
    pub fn partial_path(&self, digest: &str) -> Result<PathBuf, FetchError> {
        let d = normalize_digest(digest)?;
        Ok(self.dir.join("tmp").join(format!("{d}.part")))
    }

    /// Move a file whose sha256 the caller has just checked to equal `digest` into the cache
    /// (rename; same file system as `tmp/`). Returns the blob path. If the blob is already
    /// present, `file` is removed and the existing blob kept.
    pub fn insert_verified(&self, digest: &str, file: &Path) -> Result<PathBuf, FetchError> {
        let dest = self.path_of(digest)?;
        let parent = dest.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        if dest.is_file() {
            let _ = std::fs::remove_file(file);
            return Ok(dest);
        }
        if let Ok(f) = File::open(file) {
            f.sync_all().map_err(|e| io(file, e))?;
        }
        std::fs::rename(file, &dest).map_err(|e| io(&dest, e))?;
        crate::fs::sync_dir(&parent);
        Ok(dest)
    }

    /// Hash `src`, and if it matches `digest` copy it into the cache (atomically).
    pub fn insert_file(&self, digest: &str, src: &Path) -> Result<PathBuf, FetchError> {
        let d = normalize_digest(digest)?;
        if self.contains(&d) {
            return self.path_of(&d);
        }
        let tmp = tempfile::Builder::new()
            .prefix("import-")
            .tempfile_in(self.dir.join("tmp"))
            .map_err(|e| io(&self.dir.join("tmp"), e))?;
        std::fs::copy(src, tmp.path()).map_err(|e| io(src, e))?;
        let actual = sha256_file(tmp.path())?;
        if actual != d {
            return Err(FetchError::DigestMismatch {
                url: src.display().to_string(),
                expected: d,
                actual,
            });
        }
        let (_, path) = tmp.keep().map_err(|e| io(src, e.error))?;
        self.insert_verified(&d, &path)
    }

    /// Remove a blob (no error if absent).
    pub fn remove(&self, digest: &str) -> Result<(), FetchError> {
        let p = self.path_of(digest)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p, e)),
            _ => Ok(()),
        }
    }

    fn lock_file(&self, path: PathBuf) -> Result<File, FetchError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))
    }

    /// Exclusive lock of the whole cache (for `cache clean`/gc); waits up to `wait`.
    pub async fn lock_exclusive(&self, wait: Duration) -> Result<LockGuard, FetchError> {
        let path = self.dir.join(".lock");
        self.acquire(path, false, false, wait).await
    }

    /// Shared lock of the whole cache, held while writing blobs.
    pub(crate) async fn lock_shared(&self, wait: Duration) -> Result<LockGuard, FetchError> {
        let path = self.dir.join(".lock");
        self.acquire(path, true, false, wait).await
    }

    /// Exclusive lock for writing one digest's partial file.
    pub(crate) async fn lock_digest(
        &self,
        digest: &str,
        wait: Duration,
    ) -> Result<LockGuard, FetchError> {
        let d = normalize_digest(digest)?;
        let path = self.dir.join("tmp").join(format!("{d}.lock"));
        self.acquire(path, false, true, wait).await
    }

    /// Lock `path` (shared or exclusive), waiting up to `wait`. `removable`: the file is
    /// unlinked on release; a lock taken on a file that was unlinked meanwhile is dropped and
    /// taken again on the path's current file, so two holders never coexist.
    async fn acquire(
        &self,
        path: PathBuf,
        shared: bool,
        removable: bool,
        wait: Duration,
    ) -> Result<LockGuard, FetchError> {
        let deadline = tokio::time::Instant::now() + wait;
        'open: loop {
            let file = self.lock_file(path.clone())?;
            loop {
                let r = if shared {
                    file.try_lock_shared()
                } else {
                    file.try_lock()
                };
                match r {
                    Ok(()) => {
                        if removable && !crate::fs::same_file(&file, &path) {
                            drop(file);
                            continue 'open;
                        }
                        return Ok(LockGuard {
                            file,
                            path,
                            remove: removable,
                        });
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(FetchError::Locked { path });
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests() {
        assert_eq!(
            normalize_digest(&format!("sha256:{}", EMPTY.to_uppercase())).unwrap(),
            EMPTY
        );
        for bad in ["", "abc", "../../etc/passwd", &"g".repeat(64)] {
            assert!(normalize_digest(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_waiter_on_a_removed_digest_lock_retakes_it_and_excludes_others() {
        let tmp = tempfile::tempdir().unwrap();
        let c = BlobCache::open(tmp.path().join("blobs")).unwrap();
        let first = c.lock_digest(EMPTY, Duration::from_secs(1)).await.unwrap();
        let c2 = c.clone();
        let waiter =
            tokio::spawn(async move { c2.lock_digest(EMPTY, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert!(crate::fs::same_file(&second.file, second.path()));
        assert!(matches!(
            c.lock_digest(EMPTY, Duration::from_millis(100)).await,
            Err(FetchError::Locked { .. })
        ));
        drop(second);
        let tmp_dir = tmp.path().join("blobs/tmp");
        assert_eq!(std::fs::read_dir(&tmp_dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn insert_and_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let c = BlobCache::open(tmp.path().join("blobs")).unwrap();
        let src = tmp.path().join("empty");
        std::fs::write(&src, b"").unwrap();
        assert!(!c.contains(EMPTY));
        let p = c.insert_file(EMPTY, &src).unwrap();
        assert!(p.ends_with(format!("sha256/e3/{EMPTY}")));
        assert!(c.contains(EMPTY));
        std::fs::write(&src, b"x").unwrap();
        c.remove(EMPTY).unwrap();
        assert!(matches!(
            c.insert_file(EMPTY, &src),
            Err(FetchError::DigestMismatch { .. })
        ));
        assert!(!c.contains(EMPTY));
        assert!(c.path_of("nope").is_err());

        let g = c.lock_digest(EMPTY, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            c.lock_digest(EMPTY, Duration::from_millis(60)).await,
            Err(FetchError::Locked { .. })
        ));
        let lock_path = g.path().to_path_buf();
        assert!(lock_path.exists());
        drop(g);
        assert!(
            !lock_path.exists(),
            "a released digest lock leaves no file behind"
        );
        let _g = c
            .lock_digest(EMPTY, Duration::from_millis(60))
            .await
            .unwrap();
        let s1 = c.lock_shared(Duration::from_secs(1)).await.unwrap();
        let _s2 = c.lock_shared(Duration::from_secs(1)).await.unwrap();
        assert!(c.lock_exclusive(Duration::from_millis(60)).await.is_err());
        drop(s1);
    }
}
