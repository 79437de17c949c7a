//! Local directory backend.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{check_prefix, check_rel, ObjectMeta, ObjectStream, StoreError};

const CHUNK: usize = 256 * 1024;
/// Temporary files written by `put_*` start with this; `list` skips them.
pub(crate) const TMP_PREFIX: &str = ".sf-tmp-";

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
        .map_err(|e| StoreError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
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
        .map_err(|e| StoreError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
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
            if name.starts_with(TMP_PREFIX) {
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

/// Write `dest` atomically: temp file in the same directory, fsync, rename, fsync the directory.
pub(crate) fn atomic_write(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), (PathBuf, std::io::Error)> {
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
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{name}."))
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
    tmp.persist(dest)
        .map_err(|e| (dest.to_path_buf(), e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

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
}
