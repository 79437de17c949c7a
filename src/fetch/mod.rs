//! Download engine and content-addressed blob cache.
//!
//! [`Fetcher::fetch`] brings blobs into a [`BlobCache`]: concurrently (`jobs`), resuming partial
//! downloads with HTTP Range, retrying connection errors / timeouts / 5xx with exponential
//! backoff and jitter, within a bounded total time per blob, hashing on the fly (sha256), and
//! falling back to the next source when one fails. Bodies are streamed to disk: memory stays
//! flat whatever the blob size. A blob enters the cache only after its digest matched.

mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::store::{backoff_delay, Store, StoreError};

pub use cache::{normalize_digest, sha256_file, BlobCache, LockGuard};

/// Errors of the fetch engine. Messages name the blob/URL and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: sha256 mismatch (expected {expected}, got {actual}); the mirror is corrupt or tampered with, try another mirror")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: size mismatch (expected {expected} bytes, got {actual}); the mirror is corrupt or stale, try another mirror")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source} (check the cache directory and its permissions)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob sha256:{digest}: gave up after {seconds} s ({last}); check the network or raise the fetch timeout")]
    TimedOut {
        digest: String,
        seconds: u64,
        last: String,
    },
    #[error("blob sha256:{digest} is not in the local cache and offline mode is on; fetch it online first")]
    Offline { digest: String },
    #[error("blob sha256:{digest}: no source to download it from (configure a mirror)")]
    NoSources { digest: String },
    #[error("invalid sha256 digest {digest:?} (expected 64 hex characters)")]
    InvalidDigest { digest: String },
    #[error("{}: locked by another sf-cache process; wait for it or remove a stale lock", path.display())]
    Locked { path: PathBuf },
}

impl FetchError {
    fn is_retryable(&self) -> bool {
        match self {
            FetchError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Progress reporting hooks (the `ui` module plugs progress bars in here).
/// `blob` is the digest (64 hex). Calls for different blobs interleave.
pub trait ProgressSink: Send + Sync {
    /// A download starts (`size` when known).
    fn start(&self, blob: &str, size: Option<u64>);
    /// `bytes` more bytes were written (resumed bytes are reported once, at start).
    fn advance(&self, blob: &str, bytes: u64);
    /// The blob is in the cache.
    fn finish(&self, blob: &str);
    /// The blob could not be fetched.
    fn failed(&self, blob: &str, error: &str) {
        let _ = error;
        self.finish(blob);
    }
    /// The server announced the blob's length (only when `start` had no size).
    fn length(&self, blob: &str, total: u64) {
        let _ = (blob, total);
    }
    /// A download is tried again (`attempt` of `retries`) after `error`, from byte `resume_at`.
    /// One short warning line by default.
    fn retrying(&self, blob: &str, attempt: u32, retries: u32, resume_at: u64, error: &str) {
        let d = blob.strip_prefix("sha256:").unwrap_or(blob);
        tracing::warn!(
            "retrying {} ({attempt}/{retries}, from byte {resume_at}): {error}",
            &d[..d.len().min(12)]
        );
    }
}

/// A sink that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str) {}
}

/// One blob to fetch, with the places it can come from (tried in order).
#[derive(Clone, Debug)]
pub struct BlobRequest {
    /// sha256, hex (a `sha256:` prefix is accepted).
    pub digest: String,
    /// Expected size, when known (checked; lets a wrong body fail early).
    pub size: Option<u64>,
    /// `(store, object path)` pairs.
    pub sources: Vec<(Store, String)>,
}

impl BlobRequest {
    pub fn new(
        digest: impl Into<String>,
        size: Option<u64>,
        sources: Vec<(Store, String)>,
    ) -> Self {
        BlobRequest {
            digest: digest.into(),
            size,
            sources,
        }
    }
}

/// Tuning of the fetch engine.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Retries per source after the first attempt, on retryable errors.
    pub retries: u32,
    /// First backoff delay (doubled each retry, capped, with jitter).
    pub backoff_base: Duration,
    /// Total time allowed per blob (all sources and retries together).
    pub blob_timeout: Duration,
    /// Cache only: never touch the network.
    pub offline: bool,
    /// How long to wait for another process writing the same blob.
    pub lock_wait: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 5,
            backoff_base: Duration::from_millis(500),
            blob_timeout: Duration::from_secs(30 * 60),
            offline: false,
            lock_wait: Duration::from_secs(30 * 60),
        }
    }
}

/// The download engine.
#[derive(Clone)]
pub struct Fetcher {
    cache: BlobCache,
    jobs: usize,
    progress: Arc<dyn ProgressSink>,
    opts: FetchOptions,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.cache)
            .field("jobs", &self.jobs)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

const WRITE_BUF: usize = 256 * 1024;

impl Fetcher {
    /// A fetcher with default options; `jobs` is clamped to at least 1.
    pub fn new(cache: BlobCache, jobs: usize, progress: Arc<dyn ProgressSink>) -> Fetcher {
        Fetcher {
            cache,
            jobs: jobs.max(1),
            progress,
            opts: FetchOptions::default(),
        }
    }

    /// Replace the options.
    pub fn with_options(mut self, opts: FetchOptions) -> Fetcher {
        self.opts = opts;
        self
    }

    /// The cache this fetcher fills.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// Hold the cache's shared lock until the guard drops: `cache gc` and `cache clean` (which
    /// take it exclusively) wait meanwhile. An install holds it from its first download until
    /// every package is committed, so no blob it fetched disappears before it is unpacked.
    pub async fn hold_cache(&self) -> Result<cache::LockGuard, FetchError> {
        self.cache.lock_shared(self.opts.lock_wait).await
    }

    /// Fetch all blobs (at most `jobs` at once). Returns their cache paths in request order.
    /// Every request is attempted; on failure the first error is returned (others are logged).
    pub async fn fetch(&self, reqs: Vec<BlobRequest>) -> Result<Vec<PathBuf>, FetchError> {
        let results: Vec<Result<PathBuf, FetchError>> = futures_util::stream::iter(reqs)
            .map(|r| async move { self.fetch_one(&r).await })
            .buffered(self.jobs)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => out.push(p),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    } else {
                        tracing::error!(error = %e, "blob fetch failed");
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Fetch one blob.
    pub async fn fetch_one(&self, req: &BlobRequest) -> Result<PathBuf, FetchError> {
        let digest = normalize_digest(&req.digest)?;
        let dest = self.cache.path_of(&digest)?;
        if dest.is_file() {
            tracing::debug!(digest = %digest, "blob already cached");
            return Ok(dest);
        }
        if self.opts.offline {
            return Err(FetchError::Offline { digest });
        }
        if req.sources.is_empty() {
            return Err(FetchError::NoSources { digest });
        }
        let _shared = self.cache.lock_shared(self.opts.lock_wait).await?;
        let _lock = self.cache.lock_digest(&digest, self.opts.lock_wait).await?;
        if dest.is_file() {
            return Ok(dest); // someone else fetched it while we waited
        }
        // The time bound starts once we own the blob (waiting for another writer is separate).
        let deadline = tokio::time::Instant::now() + self.opts.blob_timeout;
        self.progress.start(&digest, req.size);
        let mut last: Option<FetchError> = None;
        for (store, rel) in &req.sources {
            match self
                .download_from(&digest, req.size, store, rel, deadline)
                .await
            {
                Ok(p) => {
                    self.progress.finish(&digest);
                    return Ok(p);
                }
                Err(e) => {
                    tracing::warn!(url = %store.object_url(rel), error = %e,
                        "download failed; trying the next source if any");
                    let timed_out = matches!(e, FetchError::TimedOut { .. });
                    last = Some(e);
                    if timed_out {
                        break;
                    }
                }
            }
        }
        let err = last.unwrap_or(FetchError::NoSources {
            digest: digest.clone(),
        });
        self.progress.failed(&digest, &err.to_string());
        Err(err)
    }

    /// The start of a blob, for a look before the install commits to downloading it: at least
    /// `at_least` bytes (or the whole blob) from its first source, kept as the beginning of its
    /// partial download so that [`Fetcher::fetch`] later resumes after them (one download in
    /// all). Returns the file holding them (the cached blob when it is there already), or
    /// `None` offline or without a source. The bytes are not verified yet: only a look.
    pub async fn peek(
        &self,
        req: &BlobRequest,
        at_least: u64,
    ) -> Result<Option<PathBuf>, FetchError> {
        let digest = normalize_digest(&req.digest)?;
        let dest = self.cache.path_of(&digest)?;
        if dest.is_file() {
            return Ok(Some(dest));
        }
        let Some((store, rel)) = req.sources.first().filter(|_| !self.opts.offline) else {
            return Ok(None);
        };
        let _shared = self.cache.lock_shared(self.opts.lock_wait).await?;
        let _lock = self.cache.lock_digest(&digest, self.opts.lock_wait).await?;
        if dest.is_file() {
            return Ok(Some(dest));
        }
        let partial = self.cache.partial_path(&digest)?;
        let mut have = match tokio::fs::metadata(&partial).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if have >= at_least || req.size.is_some_and(|s| have >= s) {
            return Ok(Some(partial));
        }
        let os = store.get_stream(rel, have).await?;
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true);
        if os.offset == have {
            options.append(true);
        } else if os.offset == 0 {
            // The server ignored the Range request: start the partial over.
            options.write(true).truncate(true);
            have = 0;
        } else {
            return Ok(None);
        }
        let mut file = options.open(&partial).await.map_err(|e| io(&partial, e))?;
        let mut stream = os.stream;
        while have < at_least {
            let Some(chunk) = stream.next().await else {
                break;
            };
            let chunk = chunk?;
            if req.size.is_some_and(|s| have + chunk.len() as u64 > s) {
                // Longer than announced: leave it to the fetch, which reports it.
                break;
            }
            file.write_all(&chunk).await.map_err(|e| io(&partial, e))?;
            have += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| io(&partial, e))?;
        file.sync_data().await.map_err(|e| io(&partial, e))?;
        Ok(Some(partial))
    }

    /// Move a verified partial download into the cache.
    async fn promote(&self, digest: &str, partial: PathBuf) -> Result<PathBuf, FetchError> {
        let cache = self.cache.clone();
        let d = digest.to_string();
        tokio::task::spawn_blocking(move || cache.insert_verified(&d, &partial))
            .await
            .map_err(|e| FetchError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn download_from(
        &self,
        digest: &str,
        size: Option<u64>,
        store: &Store,
        rel: &str,
        deadline: tokio::time::Instant,
    ) -> Result<PathBuf, FetchError> {
        let url = store.object_url(rel);
        let partial = self.cache.partial_path(digest)?;
        // Resume state: hash what an earlier run (or a peek) left behind.
        let (mut hasher, mut have) = rehash_partial(&partial, size).await?;
        if have > 0 {
            tracing::debug!(url = %url, have, "resuming partial download");
            self.progress.advance(digest, have);
            // Complete already (a peek read a small blob whole): no request at all.
            if size == Some(have) && hex::encode(hasher.clone().finalize()) == digest {
                return self.promote(digest, partial).await;
            }
        }
        let mut attempt = 0u32;
        // A partial left by an earlier run may be corrupt: on a digest mismatch, start over once.
        let mut stale_partial = have > 0;
        loop {
            let res = tokio::time::timeout_at(
                deadline,
                self.attempt(digest, size, store, rel, &partial, &mut hasher, &mut have),
            )
            .await;
            let err = match res {
                Ok(Ok(total)) => {
                    if let Some(expected) = size.or(total) {
                        if have != expected {
                            let _ = tokio::fs::remove_file(&partial).await;
                            return Err(FetchError::SizeMismatch {
                                url,
                                expected,
                                actual: have,
                            });
                        }
                    }
                    let actual = hex::encode(std::mem::take(&mut hasher).finalize());
                    if actual != digest && stale_partial {
                        tracing::warn!(url = %url, "resumed partial was corrupt; downloading again");
                        stale_partial = false;
                        restart(&partial, &mut hasher, &mut have).await?;
                        continue;
                    }
                    if actual != digest {
                        let _ = tokio::fs::remove_file(&partial).await;
                        return Err(FetchError::DigestMismatch {
                            url,
                            expected: digest.to_string(),
                            actual,
                        });
                    }
                    return self.promote(digest, partial).await;
                }
                Ok(Err(e)) => e,
                Err(_elapsed) => {
                    return Err(FetchError::TimedOut {
                        digest: digest.to_string(),
                        seconds: self.opts.blob_timeout.as_secs(),
                        last: format!("{url}: still downloading"),
                    })
                }
            };
            if matches!(
                &err,
                FetchError::SizeMismatch { .. } | FetchError::DigestMismatch { .. }
            ) {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(err);
            }
            if !err.is_retryable() || attempt >= self.opts.retries {
                return Err(err);
            }
            let delay = backoff_delay(self.opts.backoff_base, attempt);
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(FetchError::TimedOut {
                    digest: digest.to_string(),
                    seconds: self.opts.blob_timeout.as_secs(),
                    last: err.to_string(),
                });
            }
            attempt += 1;
            tracing::debug!(url = %url, error = %err, attempt, resume_at = have,
                delay_ms = delay.as_millis() as u64, "retrying download");
            self.progress
                .retrying(digest, attempt, self.opts.retries, have, &err.to_string());
            tokio::time::sleep(delay).await;
        }
    }

    /// One GET (Range from `have`), appending to `partial`. Returns the total length announced
    /// by the server when the body ended normally.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        digest: &str,
        size: Option<u64>,
        store: &Store,
        rel: &str,
        partial: &Path,
        hasher: &mut Sha256,
        have: &mut u64,
    ) -> Result<Option<u64>, FetchError> {
        let url = store.object_url(rel);
        let os = match store.get_stream(rel, *have).await {
            Ok(os) => os,
            Err(StoreError::Http { status: 416, .. }) if *have > 0 => {
                // Our partial is as long as (or longer than) the object: verify what we have,
                // or start over if it cannot be complete.
                let complete = match size {
                    Some(s) => s == *have,
                    None => hex::encode(hasher.clone().finalize()) == digest,
                };
                if complete {
                    return Ok(Some(*have));
                }
                restart(partial, hasher, have).await?;
                store.get_stream(rel, 0).await?
            }
            Err(e) => return Err(e.into()),
        };
        if os.offset != *have {
            if os.offset != 0 {
                return Err(FetchError::Store(StoreError::Network {
                    url,
                    reason: format!("server resumed at byte {} instead of {}", os.offset, have),
                }));
            }
            tracing::debug!(url = %url, "server ignored Range; starting over");
            restart(partial, hasher, have).await?;
        }
        if let (Some(expected), Some(total)) = (size, os.total_len) {
            if expected != total {
                return Err(FetchError::SizeMismatch {
                    url,
                    expected,
                    actual: total,
                });
            }
        }
        let total = os.total_len;
        if let (None, Some(t)) = (size, total) {
            self.progress.length(digest, t);
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .await
            .map_err(|e| io(partial, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUF, file);
        let mut stream = os.stream;
        let result: Result<(), FetchError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if let Some(limit) = size.or(total) {
                    if *have + chunk.len() as u64 > limit {
                        return Err(FetchError::SizeMismatch {
                            url: url.clone(),
                            expected: limit,
                            actual: *have + chunk.len() as u64,
                        });
                    }
                }
                out.write_all(&chunk).await.map_err(|e| io(partial, e))?;
                hasher.update(&chunk);
                *have += chunk.len() as u64;
                self.progress.advance(digest, chunk.len() as u64);
            }
            Ok(())
        }
        .await;
        // Keep what arrived, whatever happened: the next attempt resumes from there.
        out.flush().await.map_err(|e| io(partial, e))?;
        let file = out.into_inner();
        file.sync_data().await.map_err(|e| io(partial, e))?;
        result?;
        if let Some(expected) = size.or(total) {
            if *have < expected {
                return Err(FetchError::Store(StoreError::Network {
                    url,
                    reason: format!("body ended after {} of {} bytes", have, expected),
                }));
            }
        }
        Ok(total)
    }
}

fn io(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

async fn restart(partial: &Path, hasher: &mut Sha256, have: &mut u64) -> Result<(), FetchError> {
    match tokio::fs::remove_file(partial).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(partial, e)),
        _ => {}
    }
    *hasher = Sha256::new();
    *have = 0;
    Ok(())
}

/// Hash an existing partial file (dropping it if longer than the expected size).
async fn rehash_partial(partial: &Path, size: Option<u64>) -> Result<(Sha256, u64), FetchError> {
    let p = partial.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<(Sha256, u64), FetchError> {
        use std::io::Read;
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Sha256::new(), 0)),
            Err(e) => return Err(io(&p, e)),
        };
        let len = f.metadata().map_err(|e| io(&p, e))?.len();
        if size.is_some_and(|s| len > s) {
            drop(f);
            std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
            return Ok((Sha256::new(), 0));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; WRITE_BUF];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| io(&p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
        Ok((h, n_total))
    })
    .await
    .map_err(|e| io(partial, std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[tokio::test]
    async fn a_peek_is_the_start_of_the_download_and_a_whole_small_blob_needs_no_second_read() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("b")).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let small = b"a small blob".to_vec();
        std::fs::write(src.join("b/big"), &big).unwrap();
        std::fs::write(src.join("b/small"), &small).unwrap();
        let store = Store::open(src.to_str().unwrap(), &StoreOptions::default()).unwrap();
        let cache = BlobCache::open(tmp.path().join("cache")).unwrap();
        let f = Fetcher::new(cache.clone(), 2, Arc::new(NoProgress));
        let req = |data: &[u8], rel: &str| {
            BlobRequest::new(
                sha(data),
                Some(data.len() as u64),
                vec![(store.clone(), rel.to_string())],
            )
        };
        // The start of the big blob lands in its partial download, not in the cache.
        let big_req = req(&big, "b/big");
        let p = f.peek(&big_req, 64 << 10).await.unwrap().unwrap();
        let peeked = std::fs::read(&p).unwrap();
        assert!(
            peeked.len() >= 64 << 10 && peeked.len() < big.len(),
            "{}",
            peeked.len()
        );
        assert_eq!(&big[..peeked.len()], &peeked[..]);
        assert!(!cache.contains(&sha(&big)));
        // The fetch resumes after it and verifies the whole blob.
        let got = f.fetch_one(&big_req).await.unwrap();
        assert_eq!(std::fs::read(got).unwrap(), big);
        // A blob read whole by the peek needs no second read: its source may even be gone.
        let small_req = req(&small, "b/small");
        f.peek(&small_req, 64 << 10).await.unwrap().unwrap();
        std::fs::remove_file(src.join("b/small")).unwrap();
        let got = f.fetch_one(&small_req).await.unwrap();
        assert_eq!(std::fs::read(got).unwrap(), small);
        // A peek of a cached blob is the blob; offline, there is nothing to peek.
        assert_eq!(
            f.peek(&big_req, 1).await.unwrap().unwrap(),
            cache.path_of(&sha(&big)).unwrap()
        );
        let off = Fetcher::new(cache.clone(), 1, Arc::new(NoProgress)).with_options(FetchOptions {
            offline: true,
            ..Default::default()
        });
        assert!(off
            .peek(&req(b"other", "b/other"), 1)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn fetch_from_file_store_and_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("b")).unwrap();
        let data = vec![7u8; 300_000];
        std::fs::write(src.join("b/blob"), &data).unwrap();
        let store = Store::open(src.to_str().unwrap(), &StoreOptions::default()).unwrap();
        let cache = BlobCache::open(tmp.path().join("cache")).unwrap();
        let f = Fetcher::new(cache.clone(), 2, Arc::new(NoProgress));
        let d = sha(&data);
        let req = BlobRequest::new(
            d.clone(),
            Some(data.len() as u64),
            vec![(store.clone(), "b/blob".into())],
        );
        let p = f.fetch(vec![req.clone()]).await.unwrap();
        assert_eq!(std::fs::read(&p[0]).unwrap(), data);
        assert!(cache.contains(&d));

        // offline: cached blob fine, missing blob refused
        let off = Fetcher::new(cache.clone(), 1, Arc::new(NoProgress)).with_options(FetchOptions {
            offline: true,
            ..Default::default()
        });
        assert!(off.fetch(vec![req]).await.is_ok());
        let other = BlobRequest::new(sha(b"x"), None, vec![(store.clone(), "b/blob".into())]);
        assert!(matches!(
            off.fetch_one(&other).await,
            Err(FetchError::Offline { .. })
        ));

        // wrong digest: error, nothing cached, no partial left
        let err = f.fetch_one(&other).await.unwrap_err();
        assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err}");
        assert!(!cache.contains(&sha(b"x")));
        assert!(!cache.partial_path(&sha(b"x")).unwrap().exists());
        // wrong size: error early
        let wrong = BlobRequest::new(sha(b"y"), Some(5), vec![(store, "b/blob".into())]);
        assert!(matches!(
            f.fetch_one(&wrong).await,
            Err(FetchError::SizeMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn resumes_a_partial_left_by_an_earlier_run() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.join("blob"), &data).unwrap();
        let store = Store::open(src.to_str().unwrap(), &StoreOptions::default()).unwrap();
        let cache = BlobCache::open(tmp.path().join("cache")).unwrap();
        let d = sha(&data);
        std::fs::write(cache.partial_path(&d).unwrap(), &data[..40_000]).unwrap();
        let f = Fetcher::new(cache.clone(), 1, Arc::new(NoProgress));
        let p = f
            .fetch_one(&BlobRequest::new(
                d.clone(),
                None,
                vec![(store, "blob".into())],
            ))
            .await
            .unwrap();
        assert_eq!(std::fs::read(p).unwrap(), data);
        assert!(!cache.partial_path(&d).unwrap().exists());
    }
}
