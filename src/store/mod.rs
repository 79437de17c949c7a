//! Object stores: local directories (`/path`, `file://`), HTTP(S) servers (read-only) and S3
//! buckets (`s3://bucket/prefix`, also S3-compatible servers via a custom endpoint).
//!
//! [`Store`] is a cheap-to-clone enum over backends. A layer above may add a backend of its
//! own through [`Backend`] (`Store::Layout`): the OCI registry presented as a layout-v3 cache
//! lives in `buildcache::oci_store`, since mapping cache paths to images is layout knowledge.
//!
//! Paths given to the methods (`rel`) are relative, `/`-separated object keys such as
//! `blobs/sha256/ab/abcd…`; `..`, absolute paths and empty segments are refused.
//!
//! Credentials (bearer token, netrc password, URL userinfo) are never logged and never appear
//! in `Debug` output, [`Store::display_url`] or error messages.

mod file;
mod http;
pub mod netrc;
pub mod oci;
mod s3;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;

pub use file::FileStore;
pub use http::HttpStore;
pub use s3::{
    S3Store, ENDPOINT_ENV as S3_ENDPOINT_ENV, MULTIPART_THRESHOLD as S3_MULTIPART_THRESHOLD,
};

/// A boxed stream of body chunks.
pub type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// Errors of object store operations. Every message names the object and hints at the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// 404/410 over HTTP, ENOENT on disk.
    #[error("{url}: not found (check the mirror URL and that the object was published)")]
    NotFound { url: String },
    /// Any other non-success HTTP status.
    #[error("{url}: HTTP status {status} (check the mirror URL and credentials, or retry later)")]
    Http { url: String, status: u16 },
    /// Connection refused/reset, TLS failure, body cut short, …
    #[error("{url}: network error: {reason} (check the network, proxy and CA settings)")]
    Network { url: String, reason: String },
    /// Connect or read timeout.
    #[error("{url}: timed out (the server is slow or unreachable; raise --timeout or `[network] read_timeout`, or retry later)")]
    Timeout { url: String },
    /// Local file system error.
    #[error("{}: {source} (check the path and its permissions)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Operation or location kind not supported by this backend.
    #[error("{what} is not supported")]
    Unsupported { what: String },
    /// The store location (or an object path) cannot be used.
    #[error("invalid store location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// A conditional write ([`Store::put_bytes_if`]) found the object changed (or present, or
    /// absent) contrary to its [`Precondition`].
    #[error(
        "{url}: another writer changed this object concurrently (precondition failed); \
         re-read it and retry"
    )]
    PreconditionFailed { url: String },
    /// A registry refused the request (401); `hint` says which credentials were tried or where
    /// to put them. Never contains a secret.
    #[error("{url}: unauthorized (401): {hint}")]
    Unauthorized { url: String, hint: String },
    /// A registry served something that is not what was asked for (a blob whose bytes do not
    /// match its digest, a tag that holds no image): corruption or tampering.
    #[error("{url}: {reason}")]
    Corrupt { url: String, reason: String },
    /// Credentials were configured but could not be loaded (broken AWS profile, expired SSO, …).
    #[error("{url}: cannot load credentials: {reason} (fix the AWS profile/environment settings)")]
    Credentials { url: String, reason: String },
}

impl StoreError {
    /// True for errors worth retrying: network errors, timeouts, HTTP 408/425/429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Network { .. } | StoreError::Timeout { .. } => true,
            StoreError::Http { status, .. } => {
                matches!(*status, 408 | 425 | 429) || (500..=599).contains(status)
            }
            _ => false,
        }
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True for [`StoreError::PreconditionFailed`] (re-read and retry the update).
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, StoreError::PreconditionFailed { .. })
    }
}

/// Condition of a conditional write ([`Store::put_bytes_if`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    Always,
    /// Write only when the object does not exist yet (S3 `If-None-Match: *`).
    IfAbsent,
    /// Write only when the object exists and its current ETag is this one (S3 `If-Match`), as
    /// returned by [`Store::get_with_etag`] or [`Store::put_bytes_if`].
    IfMatch(String),
}

/// Options for opening a store (only the HTTP backend uses most of them).
#[derive(Clone)]
pub struct StoreOptions {
    /// Extra CA bundle (PEM) trusted in addition to the system roots. `SSL_CERT_FILE` is also
    /// merged when set.
    pub ca_cert: Option<PathBuf>,
    /// Bearer token value (the caller reads it from the environment variable named in config).
    pub bearer_token: Option<String>,
    /// netrc file; `None` = `$NETRC` or `~/.netrc`. Basic auth is sent only to the matching host.
    pub netrc_path: Option<PathBuf>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Maximum time between two reads of a response (not a total timeout: blobs can be large).
    pub read_timeout: Duration,
    /// Retries (after the first attempt) of `get_bytes`/`head` on retryable errors.
    pub retries: u32,
    /// First backoff delay; doubled at each retry (capped at 10 s), with up to +50 % jitter.
    pub backoff_base: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
    /// S3: custom endpoint URL (S3-compatible servers); `None` = `SF_CACHE_S3_ENDPOINT`, then
    /// `S3_ENDPOINT_URL`, then the AWS defaults (`AWS_ENDPOINT_URL`, profile, AWS itself).
    pub s3_endpoint: Option<String>,
    /// S3: path-style addressing (`endpoint/bucket/key`); `None` = on exactly when a custom
    /// endpoint is in use.
    pub s3_path_style: Option<bool>,
    /// S3: never sign requests (public buckets), even when credentials exist. Without it,
    /// requests are unsigned only when the AWS credential chain finds nothing.
    pub s3_anonymous: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            ca_cert: None,
            bearer_token: None,
            netrc_path: None,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            retries: 3,
            backoff_base: Duration::from_millis(250),
            user_agent: concat!("sf-cache/", env!("CARGO_PKG_VERSION")).to_string(),
            s3_endpoint: None,
            s3_path_style: None,
            s3_anonymous: false,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("ca_cert", &self.ca_cert)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("netrc_path", &self.netrc_path)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("retries", &self.retries)
            .field("backoff_base", &self.backoff_base)
            .field("user_agent", &self.user_agent)
            .field(
                "s3_endpoint",
                &self.s3_endpoint.as_deref().map(redact_location),
            )
            .field("s3_path_style", &self.s3_path_style)
            .field("s3_anonymous", &self.s3_anonymous)
            .finish()
    }
}

/// Metadata of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub len: Option<u64>,
    pub etag: Option<String>,
}

/// A streamed object body.
pub struct ObjectStream {
    /// Length of the whole object when known.
    pub total_len: Option<u64>,
    /// Offset the stream actually starts at (0 when a server ignored the Range request).
    pub offset: u64,
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream")
            .field("total_len", &self.total_len)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// The kind of backend behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    File,
    Http,
    S3,
    Oci,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::File => "file",
            StoreKind::Http => "http",
            StoreKind::S3 => "s3",
            StoreKind::Oci => "oci",
        })
    }
}

/// A backend defined above this module, reached through the same path-keyed operations as the
/// built-in ones (see [`Store`] for what each does). Implementations keep credentials out of
/// `Debug` and [`Backend::display_url`].
pub trait Backend: std::fmt::Debug + Send + Sync {
    fn kind(&self) -> StoreKind;
    fn display_url(&self) -> String;
    /// How messages name one object (see [`Store::object_url`]).
    fn object_url(&self, rel: &str) -> String;
    fn get_bytes<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<Bytes, StoreError>>;
    fn get_stream<'a>(
        &'a self,
        rel: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ObjectStream, StoreError>>;
    fn head<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>>;
    fn why_absent<'a>(&'a self, probed: &'a [&'a str]) -> BoxFuture<'a, String>;
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    fn put_bytes<'a>(&'a self, rel: &'a str, bytes: Bytes)
        -> BoxFuture<'a, Result<(), StoreError>>;
    fn get_with_etag<'a>(
        &'a self,
        rel: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, String)>, StoreError>>;
    fn put_bytes_if<'a>(
        &'a self,
        rel: &'a str,
        bytes: Bytes,
        pre: Precondition,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
    fn delete<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    fn put_file<'a>(
        &'a self,
        rel: &'a str,
        path: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`Store::copy_within`].
    fn copy_within<'a>(
        &'a self,
        src: &'a Store,
        src_rel: &'a str,
        rel: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// For [`Backend::copy_within`]: whether `src` is a backend of the same kind.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// An object store. Cheap to clone (`Arc` inside), `Send + Sync`.
#[derive(Clone, Debug)]
pub enum Store {
    File(FileStore),
    Http(HttpStore),
    S3(S3Store),
    /// A backend of a layer above (an OCI registry seen as a layout-v3 cache).
    Layout(Arc<dyn Backend>),
}

impl Store {
    /// Open a store: a plain path, `file://…`, `http://…`, `https://…` or `s3://bucket/prefix`.
    /// Nothing is contacted yet (S3 credentials and region are resolved on the first request).
    pub fn open(location: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidLocation {
            location: redact_location(location),
            reason: reason.to_string(),
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid(
                "empty location; give a directory or an http(s):// URL",
            ));
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Store::Http(HttpStore::open(trimmed, opts)?));
        }
        if lower.starts_with("s3://") {
            return Ok(Store::S3(S3Store::open(trimmed, opts)?));
        }
        if lower.starts_with("file://") {
            let url = url::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|_| invalid("file:// URL must name a local absolute path"))?;
            return Ok(Store::File(FileStore::new(path)));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(StoreError::Unsupported {
                what: format!(
                    "URL scheme {scheme:?} (use a path, file://, http://, https://, s3://, oci:// or oci+http://)"
                ),
            });
        }
        Ok(Store::File(FileStore::new(PathBuf::from(trimmed))))
    }

    /// Location for humans and logs; never contains credentials.
    pub fn display_url(&self) -> String {
        match self {
            Store::File(s) => s.display_url(),
            Store::Http(s) => s.display_url(),
            Store::S3(s) => s.display_url(),
            Store::Layout(b) => b.display_url(),
        }
    }

    /// The backend kind.
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::File(_) => StoreKind::File,
            Store::Http(_) => StoreKind::Http,
            Store::S3(_) => StoreKind::S3,
            Store::Layout(b) => b.kind(),
        }
    }

    /// The display URL of one object.
    pub fn object_url(&self, rel: &str) -> String {
        match self {
            Store::Layout(b) => b.object_url(rel),
            _ => format!("{}/{}", self.display_url(), rel.trim_start_matches('/')),
        }
    }

    /// Whole object in memory (for small objects: manifests, index, keys).
    pub async fn get_bytes(&self, rel: &str) -> Result<Bytes, StoreError> {
        match self {
            Store::File(s) => s.get_bytes(rel).await,
            Store::Http(s) => s.get_bytes(rel).await,
            Store::S3(s) => s.get_bytes(rel).await,
            Store::Layout(b) => b.get_bytes(rel).await,
        }
    }

    /// Stream an object from `offset` (a Range request over HTTP when `offset > 0`).
    pub async fn get_stream(&self, rel: &str, offset: u64) -> Result<ObjectStream, StoreError> {
        match self {
            Store::File(s) => s.get_stream(rel, offset).await,
            Store::Http(s) => s.get_stream(rel, offset).await,
            Store::S3(s) => s.get_stream(rel, offset).await,
            Store::Layout(b) => b.get_stream(rel, offset).await,
        }
    }

    /// Metadata, or `None` when the object does not exist.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self {
            Store::File(s) => s.head(rel).await,
            Store::Http(s) => s.head(rel).await,
            Store::S3(s) => s.head(rel).await,
            Store::Layout(b) => b.head(rel).await,
        }
    }

    /// Why the store's root holds none of `probed` (object paths that were not found), in
    /// words that say what to check: no such directory, the HTTP 404s, no such bucket.
    pub async fn why_absent(&self, probed: &[&str]) -> String {
        match self {
            Store::File(s) => {
                let root = s.root();
                match std::fs::metadata(root) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        format!("no such directory {} (check the path)", root.display())
                    }
                    Err(e) => format!("cannot read {}: {e}", root.display()),
                    Ok(md) if !md.is_dir() => {
                        format!("{} is a file, not a directory", root.display())
                    }
                    Ok(_) => format!(
                        "the directory {} holds none of {}",
                        root.display(),
                        probed.join(", ")
                    ),
                }
            }
            Store::Http(_) => {
                format!(
                    "HTTP 404 for {}/{{{}}} (check the URL)",
                    self.display_url().trim_end_matches('/'),
                    probed.join(", ")
                )
            }
            Store::S3(s) => match s.bucket_exists().await {
                Ok(false) => format!(
                    "no such bucket {} (check the bucket name, the endpoint and the region)",
                    s.bucket()
                ),
                Ok(true) => format!(
                    "bucket {} has none of {} under {}",
                    s.bucket(),
                    probed.join(", "),
                    if s.prefix().is_empty() {
                        "its root".to_string()
                    } else {
                        format!("prefix {}/", s.prefix())
                    }
                ),
                Err(e) => format!("cannot check bucket {}: {e}", s.bucket()),
            },
            Store::Layout(b) => b.why_absent(probed).await,
        }
    }

    /// Whether the object exists.
    pub async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        Ok(self.head(rel).await?.is_some())
    }

    /// All object paths under `prefix` (recursive, sorted, relative to the store root, so they
    /// can be passed back to `get_*`). A missing prefix gives an empty list. HTTP: Unsupported.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::File(s) => s.list(prefix).await,
            Store::S3(s) => s.list(prefix).await,
            Store::Layout(b) => b.list(prefix).await,
            Store::Http(s) => Err(StoreError::Unsupported {
                what: format!("listing objects of HTTP store {}", s.display_url()),
            }),
        }
    }

    /// Write an object atomically (temp file in the same dir, fsync, rename).
    pub async fn put_bytes(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.put_bytes(rel, bytes).await,
            Store::S3(s) => s.put_bytes(rel, bytes).await,
            Store::Layout(b) => b.put_bytes(rel, bytes).await,
            Store::Http(s) => Err(StoreError::Unsupported {
                what: format!("writing to HTTP store {}", s.display_url()),
            }),
        }
    }

    /// Whole object plus its ETag (an opaque version token to pass back in
    /// [`Precondition::IfMatch`]), or `None` when it does not exist.
    /// File stores use the SHA-256 hex of the content; S3 and HTTP stores the `ETag` header (or
    /// `""` when an HTTP server sends none).
    pub async fn get_with_etag(&self, rel: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        match self {
            Store::File(s) => s.get_with_etag(rel).await,
            Store::Http(s) => s.get_with_etag(rel).await,
            Store::S3(s) => s.get_with_etag(rel).await,
            Store::Layout(b) => b.get_with_etag(rel).await,
        }
    }

    /// Write an object atomically if `pre` holds; returns the new ETag. When it does not hold:
    /// [`StoreError::PreconditionFailed`] (re-read with [`Store::get_with_etag`] and retry).
    /// Safe against concurrent writers using this method (file stores: exclusive `flock` on a
    /// lock file beside the object around check-and-rename; S3: conditional PUT).
    pub async fn put_bytes_if(
        &self,
        rel: &str,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<String, StoreError> {
        match self {
            Store::File(s) => s.put_bytes_if(rel, bytes, pre).await,
            Store::S3(s) => s.put_bytes_if(rel, bytes, pre).await,
            Store::Layout(b) => b.put_bytes_if(rel, bytes, pre).await,
            Store::Http(s) => Err(StoreError::Unsupported {
                what: format!("writing to HTTP store {}", s.display_url()),
            }),
        }
    }

    /// Delete an object; a missing object is not an error.
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.delete(rel).await,
            Store::S3(s) => s.delete(rel).await,
            Store::Layout(b) => b.delete(rel).await,
            Store::Http(s) => Err(StoreError::Unsupported {
                what: format!("deleting from HTTP store {}", s.display_url()),
            }),
        }
    }

    /// Copy the object `src_rel` of `src` to `rel` here without passing its bytes through this
    /// process, when both are on one server (a registry's cross-repository blob mount). `false`:
    /// not possible here; copy it through the client.
    pub async fn copy_within(
        &self,
        src: &Store,
        src_rel: &str,
        rel: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Layout(b) => b.copy_within(src, src_rel, rel).await,
            _ => Ok(false),
        }
    }

    /// Copy a local file into the store atomically. S3: one PUT streamed from the file, or a
    /// multipart upload (parts streamed from the file) above 64 MiB.
    pub async fn put_file(&self, rel: &str, path: &std::path::Path) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.put_file(rel, path).await,
            Store::S3(s) => s.put_file(rel, path).await,
            Store::Layout(b) => b.put_file(rel, path).await,
            Store::Http(s) => Err(StoreError::Unsupported {
                what: format!("writing to HTTP store {}", s.display_url()),
            }),
        }
    }
}

/// Check an object key: relative, `/`-separated, no `.`/`..`/empty segments, no NUL/backslash.
pub(crate) fn check_rel(rel: &str) -> Result<&str, StoreError> {
    let bad = |reason: &str| StoreError::InvalidLocation {
        location: rel.to_string(),
        reason: reason.to_string(),
    };
    if rel.is_empty() {
        return Err(bad("empty object path"));
    }
    if rel.starts_with('/') {
        return Err(bad("object paths must be relative"));
    }
    if rel.contains('\0') || rel.contains('\\') {
        return Err(bad("object paths must not contain NUL or backslash"));
    }
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad(
            "object paths must not contain empty, '.' or '..' segments",
        ));
    }
    Ok(rel)
}

/// Same check but for a listing prefix, which may be empty or end with `/`.
pub(crate) fn check_prefix(prefix: &str) -> Result<&str, StoreError> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return Ok("");
    }
    check_rel(p)
}

/// Remove `user:password@` from a location before it is shown anywhere.
pub(crate) fn redact_location(location: &str) -> String {
    if let Ok(mut url) = url::Url::parse(location) {
        if url.has_host() && (!url.username().is_empty() || url.password().is_some()) {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            return url.to_string();
        }
        return location.to_string();
    }
    // Not a URL: paths carry no credentials, but be careful with "scheme://user:pw@…" junk.
    if let Some((scheme, rest)) = location.split_once("://") {
        if let Some((_, host)) = rest.split_once('@') {
            return format!("{scheme}://{host}");
        }
    }
    location.to_string()
}

/// Run `op` until it succeeds, fails for good, or `retries` retries (after the first attempt) of
/// retryable errors are used up, sleeping [`backoff_delay`] between tries. Each retry is one
/// warning line naming `url`.
pub(crate) async fn with_retries<T, F, Fut>(
    retries: u32,
    backoff_base: Duration,
    url: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < retries => {
                let delay = backoff_delay(backoff_base, attempt);
                tracing::warn!(url = %url, error = %e, attempt = attempt + 1,
                    delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Delay before retry number `attempt` (0-based): base·2^attempt capped at 10 s, +0–50 % jitter.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(Duration::from_secs(10));
    let jitter: f64 = rand::random::<f64>() * 0.5;
    capped + capped.mul_f64(jitter)
}

/// A `Content-Range` value `bytes start-end/total` → (start, total); `*` totals are `None`.
/// Shared by the HTTP and S3 backends.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_kinds() {
        let o = StoreOptions::default();
        assert_eq!(Store::open("/tmp/x/", &o).unwrap().kind(), StoreKind::File);
        assert_eq!(
            Store::open("file:///tmp/x", &o).unwrap().display_url(),
            "file:///tmp/x"
        );
        assert_eq!(
            Store::open("http://h.example/a/b//", &o)
                .unwrap()
                .display_url(),
            "http://h.example/a/b"
        );
        let s3 = Store::open("s3://bucket/x/", &o).unwrap();
        assert_eq!(
            (s3.kind(), s3.display_url()),
            (StoreKind::S3, "s3://bucket/x".into())
        );
        assert!(matches!(
            Store::open("ftp://h/x", &o),
            Err(StoreError::Unsupported { .. })
        ));
        assert!(matches!(
            Store::open("  ", &o),
            Err(StoreError::InvalidLocation { .. })
        ));
    }

    #[test]
    fn credentials_never_displayed() {
        let o = StoreOptions {
            bearer_token: Some("tok-SECRET".into()),
            ..Default::default()
        };
        let s = Store::open("https://user:pa55word@h.example/cache/", &o).unwrap();
        let shown = format!("{} {:?} {:?}", s.display_url(), s, o);
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(!shown.contains("tok-SECRET"), "{shown}");
        assert!(!shown.contains("user:"), "{shown}");
        let e = Store::open("s3://k:secretkey@bucket/x", &o).unwrap_err();
        assert!(!e.to_string().contains("secretkey"), "{e}");
    }

    #[test]
    fn rel_checks() {
        assert!(check_rel("blobs/sha256/ab/abc").is_ok());
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "..", "a/"] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        assert_eq!(check_prefix("").unwrap(), "");
        assert_eq!(check_prefix("v3/").unwrap(), "v3");
        assert!(check_prefix("../x").is_err());
    }

    #[test]
    fn retryable() {
        let u = || "u".to_string();
        assert!(StoreError::Http {
            url: u(),
            status: 503
        }
        .is_retryable());
        assert!(StoreError::Http {
            url: u(),
            status: 429
        }
        .is_retryable());
        assert!(!StoreError::Http {
            url: u(),
            status: 403
        }
        .is_retryable());
        assert!(!StoreError::NotFound { url: u() }.is_retryable());
        assert!(StoreError::Timeout { url: u() }.is_retryable());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(100);
        let d0 = backoff_delay(b, 0);
        assert!(d0 >= b && d0 <= b.mul_f64(1.5));
        let d3 = backoff_delay(b, 3);
        assert!(d3 >= Duration::from_millis(800));
        assert!(backoff_delay(b, 40) <= Duration::from_secs(15));
    }
}
