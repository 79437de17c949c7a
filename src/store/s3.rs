//! S3 backend (`s3://bucket/prefix`) on aws-sdk-s3.
//!
//! * Credentials: the standard AWS chain (environment, shared profile files, credential
//!   process, web identity, ECS/EC2 instance roles). When the chain finds no credentials at all,
//!   requests are sent unsigned (anonymous access to public buckets), as Spack does.
//! * Endpoint: [`StoreOptions::s3_endpoint`], else `SF_CACHE_S3_ENDPOINT`, else Spack's
//!   `S3_ENDPOINT_URL`, else whatever aws-config finds (`AWS_ENDPOINT_URL[_S3]`, profile).
//!   A custom endpoint implies path-style addressing unless [`StoreOptions::s3_path_style`]
//!   says otherwise, and request checksums only where S3 requires them (S3-compatible servers
//!   differ in their support of the newer checksum trailers).
//! * Region: `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile, else `us-east-1`.
//!
//! The SDK client is built lazily on the first request (loading config is async and
//! [`Store::open`](super::Store::open) is not). Credentials are never logged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{ProvideCredentials, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use super::{
    check_prefix, check_rel, redact_location, ObjectMeta, ObjectStream, Precondition, StoreError,
    StoreOptions,
};

/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Smallest part size used for multipart uploads (S3's minimum is 5 MiB).
const MIN_PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3 allows at most 10 000 parts.
const MAX_PARTS: u64 = 10_000;
/// Parts uploaded at once.
const PART_CONCURRENCY: usize = 4;

/// Environment variable naming a custom S3 endpoint (e.g. a local S3-compatible server).
pub const ENDPOINT_ENV: &str = "SF_CACHE_S3_ENDPOINT";

struct Client {
    s3: aws_sdk_s3::Client,
    /// Requests are unsigned.
    anonymous: bool,
    /// Send CRC32 checksums with multipart uploads (AWS itself; not custom endpoints).
    checksums: bool,
}

struct Inner {
    bucket: String,
    /// Key prefix without leading/trailing `/`; may be empty.
    prefix: String,
    display: String,
    endpoint: Option<String>,
    path_style: Option<bool>,
    anonymous: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
    retries: u32,
    backoff_base: Duration,
    client: tokio::sync::OnceCell<Client>,
}

/// A store in an S3 bucket (or an S3-compatible server), under a key prefix.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field(
                "endpoint",
                &self.inner.endpoint.as_deref().map(redact_location),
            )
            .field("path_style", &self.inner.path_style)
            .field("anonymous", &self.inner.anonymous)
            .finish()
    }
}

/// `s3://bucket/a/b/` → (`bucket`, `a/b`).
pub(crate) fn parse_location(location: &str) -> Result<(String, String), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidLocation {
        location: redact_location(location),
        reason: reason.to_string(),
    };
    let rest = location
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("s3://"))
        .map(|_| &location[5..])
        .ok_or_else(|| invalid("an S3 location starts with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') {
        return Err(invalid(
            "credentials in an s3:// URL are not supported; use the AWS credential chain \
             (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role)",
        ));
    }
    if bucket.is_empty() {
        return Err(invalid("no bucket name (write s3://bucket/prefix)"));
    }
    if bucket.len() > 255
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(invalid(
            "bucket names use letters, digits, '.', '-' and '_' only",
        ));
    }
    if prefix.contains('?') || prefix.contains('#') {
        return Err(invalid(
            "an s3:// location must not have a query or fragment",
        ));
    }
    let prefix = prefix.trim_matches('/');
    check_prefix(prefix).map_err(|_| {
        invalid("the key prefix must not contain empty, '.' or '..' segments, NUL or backslash")
    })?;
    Ok((bucket.to_string(), prefix.to_string()))
}

fn nonempty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Outcome of one attempt of reading a whole body.
enum BodyErr {
    /// The request failed (the SDK already retried it).
    Request(StoreError),
    /// The body was cut short: worth another attempt.
    Body(StoreError),
}

impl S3Store {
    pub(crate) fn open(location: &str, opts: &StoreOptions) -> Result<S3Store, StoreError> {
        let (bucket, prefix) = parse_location(location.trim())?;
        let shown = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let endpoint = opts
            .s3_endpoint
            .clone()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .or_else(|| nonempty_env(ENDPOINT_ENV))
            .or_else(|| nonempty_env("S3_ENDPOINT_URL"))
            .map(|e| {
                if e.contains("://") {
                    e
                } else {
                    format!("https://{e}")
                }
            });
        if let Some(ep) = &endpoint {
            url::Url::parse(ep).map_err(|e| StoreError::InvalidLocation {
                location: redact_location(ep),
                reason: format!("S3 endpoint is not a URL: {e} (fix the S3 endpoint setting)"),
            })?;
        }
        tracing::debug!(store = %shown, endpoint = ?endpoint.as_deref().map(redact_location),
            "opened S3 store");
        Ok(S3Store {
            inner: Arc::new(Inner {
                bucket,
                prefix,
                display: shown,
                endpoint,
                path_style: opts.s3_path_style,
                anonymous: opts.s3_anonymous,
                connect_timeout: opts.connect_timeout,
                read_timeout: opts.read_timeout,
                retries: opts.retries,
                backoff_base: opts.backoff_base,
                client: tokio::sync::OnceCell::new(),
            }),
        })
    }

    pub(crate) fn display_url(&self) -> String {
        self.inner.display.clone()
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The key prefix (no leading or trailing `/`; empty for the bucket root).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether requests are sent unsigned (forced, or no credentials were found). Builds the
    /// client if needed.
    pub async fn is_anonymous(&self) -> Result<bool, StoreError> {
        Ok(self.client().await?.anonymous)
    }

    /// The object key, its URL (for messages) and the client: what every request starts with.
    async fn request_target(&self, rel: &str) -> Result<(String, String, &Client), StoreError> {
        let key = self.key_of(rel)?;
        let url = self.url_of_key(&key);
        let client = self.client().await?;
        Ok((key, url, client))
    }

    async fn client(&self) -> Result<&Client, StoreError> {
        self.inner
            .client
            .get_or_try_init(|| build_client(&self.inner))
            .await
    }

    fn key_of(&self, rel: &str) -> Result<String, StoreError> {
        let rel = check_rel(rel)?;
        Ok(if self.inner.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{}", self.inner.prefix, rel)
        })
    }

    fn url_of_key(&self, key: &str) -> String {
        format!("s3://{}/{}", self.inner.bucket, key)
    }

    /// Map an SDK error. `not_found_on_403`: anonymous reads of a public bucket get 403 (not
    /// 404) for missing keys when listing is not public.
    fn map_err<E>(&self, url: &str, err: SdkError<E, HttpResponse>, anonymous: bool) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let url = url.to_string();
        match &err {
            SdkError::TimeoutError(_) => return StoreError::Timeout { url },
            SdkError::DispatchFailure(d) if d.is_timeout() => return StoreError::Timeout { url },
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                tracing::debug!(url = %url, status, code, message = se.err().message().unwrap_or(""),
                    "S3 error");
                tracing::trace!(url = %url, error = %DisplayErrorContext(&err), "S3 error detail");
                return match (status, code) {
                    (404, _) | (_, "NoSuchKey") | (_, "NotFound") => StoreError::NotFound { url },
                    (403, _) if anonymous => {
                        tracing::debug!(url = %url, "anonymous 403 treated as not found");
                        StoreError::NotFound { url }
                    }
                    (412, _) | (_, "PreconditionFailed") | (409, "ConditionalRequestConflict") => {
                        StoreError::PreconditionFailed { url }
                    }
                    (400, "RequestTimeout") => StoreError::Timeout { url },
                    _ => StoreError::Http { url, status },
                };
            }
            _ => {}
        }
        StoreError::Network {
            url,
            reason: DisplayErrorContext(&err).to_string(),
        }
    }

    async fn get_whole(&self, rel: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        let (key, url, client) = self.request_target(rel).await?;
        let mut attempt = 0u32;
        loop {
            let res: Result<(Bytes, String), BodyErr> = async {
                let out = client
                    .s3
                    .get_object()
                    .bucket(&self.inner.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| BodyErr::Request(self.map_err(&url, e, client.anonymous)))?;
                let etag = out.e_tag().unwrap_or("").to_string();
                let body = out.body.collect().await.map_err(|e| {
                    BodyErr::Body(StoreError::Network {
                        url: url.clone(),
                        reason: DisplayErrorContext(&e).to_string(),
                    })
                })?;
                Ok((body.into_bytes(), etag))
            }
            .await;
            match res {
                Ok(v) => return Ok(Some(v)),
                Err(BodyErr::Request(StoreError::NotFound { .. })) => return Ok(None),
                Err(BodyErr::Request(e)) => return Err(e),
                Err(BodyErr::Body(e)) if attempt < self.inner.retries => {
                    let delay = super::backoff_delay(self.inner.backoff_base, attempt);
                    tracing::warn!(url = %url, error = %e, attempt = attempt + 1, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(BodyErr::Body(e)) => return Err(e),
            }
        }
    }

    pub(crate) async fn get_bytes(&self, rel: &str) -> Result<Bytes, StoreError> {
        match self.get_whole(rel).await? {
            Some((b, _)) => Ok(b),
            None => Err(StoreError::NotFound {
                url: self.object_url(rel),
            }),
        }
    }

    pub(crate) async fn get_with_etag(
        &self,
        rel: &str,
    ) -> Result<Option<(Bytes, String)>, StoreError> {
        self.get_whole(rel).await
    }

    fn object_url(&self, rel: &str) -> String {
        format!("{}/{}", self.inner.display, rel)
    }

    /// One request (the SDK retries it); body errors are for the caller to resume with Range.
    pub(crate) async fn get_stream(
        &self,
        rel: &str,
        offset: u64,
    ) -> Result<ObjectStream, StoreError> {
        let (key, url, client) = self.request_target(rel).await?;
        let mut req = client.s3.get_object().bucket(&self.inner.bucket).key(&key);
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(SdkError::ServiceError(se)) if offset > 0 && se.raw().status().as_u16() == 416 => {
                // Offset at (or past) the end: an empty stream, as the file backend gives.
                let len = self
                    .head(rel)
                    .await?
                    .and_then(|m| m.len)
                    .ok_or_else(|| StoreError::NotFound { url: url.clone() })?;
                if offset < len {
                    return Err(StoreError::Http { url, status: 416 });
                }
                return Ok(ObjectStream {
                    total_len: Some(len),
                    offset: len,
                    stream: Box::pin(stream::empty()),
                });
            }
            Err(e) => return Err(self.map_err(&url, e, client.anonymous)),
        };
        let (start, total_len) = match out.content_range().and_then(super::parse_content_range) {
            Some((start, total)) => (start, total),
            None => (0, out.content_length().and_then(|l| u64::try_from(l).ok())),
        };
        let body = out.body;
        let s = stream::unfold(Some((body, url)), |st| async move {
            let (mut body, url) = st?;
            match body.next().await {
                None => None,
                Some(Ok(b)) => Some((Ok(b), Some((body, url)))),
                Some(Err(e)) => {
                    let err = StoreError::Network {
                        url,
                        reason: DisplayErrorContext(&e).to_string(),
                    };
                    Some((Err(err), None))
                }
            }
        });
        Ok(ObjectStream {
            total_len,
            offset: start,
            stream: Box::pin(s),
        })
    }

    pub(crate) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let (key, url, client) = self.request_target(rel).await?;
        match client
            .s3
            .head_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                len: out.content_length().and_then(|l| u64::try_from(l).ok()),
                etag: out.e_tag().map(str::to_string),
            })),
            Err(e) => match self.map_err(&url, e, client.anonymous) {
                StoreError::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Whether the bucket exists (`HeadBucket`: 404 or `NoSuchBucket` means no).
    pub(crate) async fn bucket_exists(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let url = format!("s3://{}", self.inner.bucket);
        match client
            .s3
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(&url, e, client.anonymous) {
                StoreError::NotFound { .. } => Ok(false),
                e => Err(e),
            },
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = check_prefix(prefix)?;
        let base = &self.inner.prefix;
        let full = match (base.is_empty(), p.is_empty()) {
            (true, _) => p.to_string(),
            (false, true) => base.clone(),
            (false, false) => format!("{base}/{p}"),
        };
        let url = if full.is_empty() {
            self.inner.display.clone()
        } else {
            self.url_of_key(&full)
        };
        let client = self.client().await?;
        let mut req = client
            .s3
            .list_objects_v2()
            .bucket(&self.inner.bucket)
            .max_keys(1000);
        if !full.is_empty() {
            req = req.prefix(&full);
        }
        let dir = format!("{full}/");
        let strip = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(&url, e, client.anonymous))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                if !full.is_empty() && key != full && !key.starts_with(&dir) {
                    continue;
                }
                let Some(rel) = key.strip_prefix(&strip) else {
                    continue;
                };
                if check_rel(rel).is_err() {
                    tracing::debug!(key, "skipping a key that is not a valid object path");
                    continue;
                }
                out.push(rel.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) async fn put_bytes(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.put_bytes_if(rel, bytes, Precondition::Always)
            .await
            .map(|_| ())
    }

    pub(crate) async fn put_bytes_if(
        &self,
        rel: &str,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<String, StoreError> {
        let (key, url, client) = self.request_target(rel).await?;
        let len = bytes.len() as i64;
        let mut req = client
            .s3
            .put_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .content_length(len)
            .body(ByteStream::from(bytes));
        let if_match = matches!(pre, Precondition::IfMatch(_));
        match pre {
            Precondition::Always => {}
            Precondition::IfAbsent => req = req.if_none_match("*"),
            Precondition::IfMatch(etag) => req = req.if_match(etag),
        }
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or("").to_string()),
            Err(e) => match self.map_err(&url, e, false) {
                // If-Match on a missing key: S3 answers 404.
                StoreError::NotFound { url } if if_match => {
                    Err(StoreError::PreconditionFailed { url })
                }
                e => Err(e),
            },
        }
    }

    pub(crate) async fn put_file(&self, rel: &str, path: &Path) -> Result<(), StoreError> {
        let key = self.key_of(rel)?;
        let url = self.url_of_key(&key);
        let io = |e: std::io::Error| StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let len = tokio::fs::metadata(path).await.map_err(io)?.len();
        let client = self.client().await?;
        if len > MULTIPART_THRESHOLD {
            return self.put_multipart(client, &key, &url, path, len).await;
        }
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(|e| StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(DisplayErrorContext(&e).to_string()),
            })?;
        client
            .s3
            .put_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| self.map_err(&url, e, false))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        client: &Client,
        key: &str,
        url: &str,
        path: &Path,
        len: u64,
    ) -> Result<(), StoreError> {
        let part_size = part_size(len);
        let mut create = client
            .s3
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(key);
        if client.checksums {
            create = create.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let created = create
            .send()
            .await
            .map_err(|e| self.map_err(url, e, false))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Network {
                url: url.to_string(),
                reason: "CreateMultipartUpload returned no upload id".into(),
            })?
            .to_string();
        tracing::debug!(url, len, part_size, "multipart upload started");
        let parts: Vec<(i32, u64, u64)> = (0..len.div_ceil(part_size))
            .map(|i| {
                let off = i * part_size;
                ((i + 1) as i32, off, part_size.min(len - off))
            })
            .collect();
        let uploaded = stream::iter(parts)
            .map(|(n, off, size)| {
                let upload_id = upload_id.clone();
                async move {
                    let body = ByteStream::read_from()
                        .path(path)
                        .offset(off)
                        .length(Length::Exact(size))
                        .build()
                        .await
                        .map_err(|e| StoreError::Io {
                            path: path.to_path_buf(),
                            source: std::io::Error::other(DisplayErrorContext(&e).to_string()),
                        })?;
                    let mut req = client
                        .s3
                        .upload_part()
                        .bucket(&self.inner.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(n)
                        .content_length(size as i64)
                        .body(body);
                    if client.checksums {
                        req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
                    }
                    let out = req.send().await.map_err(|e| self.map_err(url, e, false))?;
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                            .build(),
                    )
                }
            })
            .buffer_unordered(PART_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await;
        let result = match uploaded {
            Ok(mut done) => {
                done.sort_by_key(|p| p.part_number());
                client
                    .s3
                    .complete_multipart_upload()
                    .bucket(&self.inner.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(done))
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.map_err(url, e, false))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let abort = client
                .s3
                .abort_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(url, error = %DisplayErrorContext(&e),
                    "could not abort the failed multipart upload (a bucket lifecycle rule \
                     for incomplete uploads cleans it up)");
            }
        }
        result
    }

    pub(crate) async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let (key, url, client) = self.request_target(rel).await?;
        match client
            .s3
            .delete_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err(&url, e, false) {
                StoreError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// Part size for a multipart upload of `len` bytes: at least 16 MiB, at most 10 000 parts.
fn part_size(len: u64) -> u64 {
    let mib = 1024 * 1024;
    MIN_PART_SIZE.max(len.div_ceil(MAX_PARTS).div_ceil(mib) * mib)
}

async fn build_client(inner: &Inner) -> Result<Client, StoreError> {
    let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new())
        .or_else(Region::new("us-east-1"));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(inner.connect_timeout)
        .read_timeout(inner.read_timeout)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(inner.retries.saturating_add(1))
        .with_initial_backoff(inner.backoff_base);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts)
        .retry_config(retry);
    if let Some(ep) = &inner.endpoint {
        loader = loader.endpoint_url(ep);
    }
    if inner.anonymous {
        loader = loader.no_credentials();
    }
    let mut sdk = loader.load().await;
    let mut anonymous = inner.anonymous;
    if !anonymous {
        match sdk.credentials_provider() {
            None => anonymous = true,
            Some(p) => match p.provide_credentials().await {
                Ok(_) => {}
                Err(CredentialsError::CredentialsNotLoaded(_)) => anonymous = true,
                Err(e) => {
                    return Err(StoreError::Credentials {
                        url: inner.display.clone(),
                        reason: DisplayErrorContext(&e).to_string(),
                    })
                }
            },
        }
        if anonymous {
            tracing::info!(store = %inner.display,
                "no AWS credentials found: using anonymous (unsigned) requests");
            let mut b = sdk.into_builder();
            b.set_credentials_provider(None);
            sdk = b.build();
        }
    }
    let custom_endpoint = sdk.endpoint_url().is_some();
    let path_style = inner.path_style.unwrap_or(custom_endpoint);
    let mut b = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style);
    if custom_endpoint {
        b = b.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    if anonymous {
        b = b.allow_no_auth();
    }
    tracing::debug!(store = %inner.display, region = ?sdk.region().map(|r| r.to_string()),
        custom_endpoint, path_style, anonymous, "S3 client ready");
    Ok(Client {
        s3: aws_sdk_s3::Client::from_conf(b.build()),
        anonymous,
        checksums: !custom_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("s3://bucket/a/b/").unwrap(),
            ("bucket".into(), "a/b".into())
        );
        assert_eq!(
            parse_location("S3://my.bucket-1").unwrap(),
            ("my.bucket-1".into(), "".into())
        );
        assert_eq!(parse_location("s3://b/").unwrap(), ("b".into(), "".into()));
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b/a/../c",
            "s3://b/a//c",
            "s3://b/x?y",
            "s3://b c/x",
            "http://b/x",
        ] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
        let e = parse_location("s3://AKIA:s3cr3t@bucket/x").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn display_and_keys() {
        let o = StoreOptions::default();
        let s = S3Store::open("s3://bkt/cache/", &o).unwrap();
        assert_eq!(s.display_url(), "s3://bkt/cache");
        assert_eq!(s.key_of("v3/layout.json").unwrap(), "cache/v3/layout.json");
        assert!(s.key_of("../x").is_err());
        let s = S3Store::open("s3://bkt", &o).unwrap();
        assert_eq!(s.display_url(), "s3://bkt");
        assert_eq!(s.key_of("a").unwrap(), "a");
    }

    #[test]
    fn part_sizes() {
        assert_eq!(part_size(70 << 20), 16 << 20);
        let huge = 5u64 << 40; // 5 TiB: S3's maximum object size
        let ps = part_size(huge);
        assert!(huge.div_ceil(ps) <= MAX_PARTS);
        assert_eq!(ps % (1 << 20), 0);
    }

    #[test]
    fn content_range() {
        assert_eq!(
            crate::store::parse_content_range("bytes 5-9/10"),
            Some((5, Some(10)))
        );
        assert_eq!(
            crate::store::parse_content_range("bytes 5-9/*"),
            Some((5, None))
        );
        assert_eq!(crate::store::parse_content_range("bytes 9-5/10"), None);
        assert_eq!(crate::store::parse_content_range("junk"), None);
    }
}
