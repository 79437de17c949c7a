//! A thin OCI distribution client on the reqwest stack: manifests by tag or digest, blobs by
//! digest (Range resume), blob upload (monolithic or chunked), cross-repository mount, and
//! registry auth (anonymous, Bearer token from `WWW-Authenticate` cached per scope, basic
//! credentials from the Docker/Podman auth file or from environment variables).
//!
//! This layer knows registries, not buildcaches: tags and documents are opaque here.
//! Credentials and tokens are [`Secret`]s: never logged, never in `Debug` or errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE,
    WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, StatusCode};
use tokio::io::AsyncReadExt;

use super::http::{content_length, http_client, map_reqwest};
use super::netrc::Secret;
use super::{ObjectStream, StoreError, StoreOptions};

/// Blobs above this size are uploaded in chunks of this size (`PATCH` with `Content-Range`).
pub const CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// Environment variable naming the auth file (as Podman and skopeo use it).
pub const AUTH_FILE_ENV: &str = "REGISTRY_AUTH_FILE";

/// Where basic credentials come from.
#[derive(Clone, Debug, Default)]
pub struct OciCredentials {
    /// Environment variable holding the user name (Spack's `--oci-username-variable`).
    pub username_env: Option<String>,
    /// Environment variable holding the password or token (`--oci-password-variable`).
    pub password_env: Option<String>,
    /// Auth file; `None` = `$REGISTRY_AUTH_FILE`, then `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
}

/// The auth file consulted when none is given.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(AUTH_FILE_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The `auths` entry for `registry` in a Docker/Podman auth file: base64 `user:password`.
pub fn auth_file_lookup(path: &Path, registry: &str) -> Option<(String, Secret)> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(k, v)| {
        let key = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let key = key.strip_suffix("/v1").unwrap_or(key);
        (key == registry).then_some(v)
    })?;
    let b64 = entry.get("auth")?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, pass) = raw.split_once(':')?;
    Some((user.to_string(), Secret::new(pass)))
}

struct Inner {
    /// `scheme://host[:port]`
    origin: String,
    registry: String,
    repository: String,
    client: reqwest::Client,
    basic: Option<(String, Secret)>,
    /// Where credentials were looked for, for the 401 message.
    auth_hint: String,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, Secret>>,
    /// Held while a token is fetched: requests that were refused at the same time wait for that
    /// token instead of each asking the token service.
    token_fetch: tokio::sync::Mutex<()>,
    retries: u32,
    backoff_base: Duration,
}

/// A client for one repository of one registry. Cheap to clone.
#[derive(Clone)]
pub struct OciClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciClient")
            .field("origin", &self.inner.origin)
            .field("repository", &self.inner.repository)
            .field("basic", &self.inner.basic.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A manifest as the registry returned it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: Option<String>,
    /// `sha256:<hex>` of `bytes` (computed here, not taken from the server).
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`: an OCI digest.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_challenge(v: &str) -> Option<(String, HashMap<String, String>)> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl OciClient {
    /// A client for `scheme://registry/v2/repository`. Nothing is contacted yet.
    pub fn open(
        scheme: &str,
        registry: &str,
        repository: &str,
        creds: &OciCredentials,
        opts: &StoreOptions,
    ) -> Result<OciClient, StoreError> {
        let location = format!("{scheme}://{registry}/{repository}");
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: location.clone(),
            reason,
        };
        let client = http_client(opts).map_err(invalid)?;

        let env = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| std::env::var(n).ok())
                .filter(|v| !v.is_empty())
        };
        let auth_file = creds.auth_file.clone().or_else(default_auth_file);
        let (basic, auth_hint) = match (env(&creds.username_env), env(&creds.password_env)) {
            (Some(u), Some(p)) => (
                Some((u, Secret::new(p))),
                format!(
                    "the credentials in ${} / ${} were refused",
                    creds.username_env.as_deref().unwrap_or(""),
                    creds.password_env.as_deref().unwrap_or("")
                ),
            ),
            _ => {
                let shown = auth_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.docker/config.json".into());
                match auth_file
                    .as_deref()
                    .and_then(|p| auth_file_lookup(p, registry))
                {
                    Some(c) => (
                        Some(c),
                        format!("the credentials for {registry} in {shown} were refused"),
                    ),
                    None => (
                        None,
                        format!(
                            "no credentials for {registry}: add an `auths` entry for it to \
                             {shown} (or set ${AUTH_FILE_ENV}), e.g. with \
                             `skopeo login {registry}`"
                        ),
                    ),
                }
            }
        };
        Ok(OciClient {
            inner: Arc::new(Inner {
                origin: format!("{scheme}://{registry}"),
                registry: registry.to_string(),
                repository: repository.to_string(),
                client,
                basic,
                auth_hint,
                tokens: Mutex::new(HashMap::new()),
                token_fetch: tokio::sync::Mutex::new(()),
                retries: opts.retries,
                backoff_base: opts.backoff_base,
            }),
        })
    }

    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    pub fn repository(&self) -> &str {
        &self.inner.repository
    }

    fn api(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.inner.origin, self.inner.repository)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.inner.origin)
        }
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.inner.repository)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.inner.repository)
    }

    /// The cached token of a scope (its text, to compare; never logged).
    fn token(&self, scope: &str) -> Option<String> {
        self.inner
            .tokens
            .lock()
            .unwrap()
            .get(scope)
            .map(|t| t.expose().to_string())
    }

    fn authorize(&self, req: RequestBuilder, scope: &str) -> RequestBuilder {
        let token = self.inner.tokens.lock().unwrap().get(scope).cloned();
        match (token, &self.inner.basic) {
            (Some(t), _) => req.bearer_auth(t.expose()),
            (None, Some((u, p))) => req.basic_auth(u, Some(p.expose())),
            (None, None) => req,
        }
    }

    /// Get a Bearer token for the challenge and cache it under `scope`.
    async fn fetch_token(
        &self,
        params: &HashMap<String, String>,
        scope: &str,
        url: &str,
    ) -> Result<(), StoreError> {
        let realm = params.get("realm").ok_or_else(|| StoreError::Http {
            url: url.to_string(),
            status: 401,
        })?;
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = params.get("service") {
            q.push(("service", s));
        }
        q.push(("scope", scope));
        let mut req = self.inner.client.get(with_query(realm, &q));
        if let Some((u, p)) = &self.inner.basic {
            req = req.basic_auth(u, Some(p.expose()));
        }
        let resp = req.send().await.map_err(|e| map_reqwest(realm, e))?;
        if !resp.status().is_success() {
            return Err(self.unauthorized(url));
        }
        let raw = resp.bytes().await.map_err(|e| map_reqwest(realm, e))?;
        let body: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| StoreError::Network {
                url: realm.to_string(),
                reason: format!("token response is not JSON: {e}"),
            })?;
        let tok = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| StoreError::Network {
                url: realm.to_string(),
                reason: "token response has no token".into(),
            })?;
        self.inner
            .tokens
            .lock()
            .unwrap()
            .insert(scope.to_string(), Secret::new(tok));
        Ok(())
    }

    fn unauthorized(&self, url: &str) -> StoreError {
        StoreError::Unauthorized {
            url: url.to_string(),
            hint: self.inner.auth_hint.clone(),
        }
    }

    /// Send a request (built anew per attempt), answering one auth challenge.
    async fn send(
        &self,
        url: &str,
        scope: &str,
        build: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response, StoreError> {
        for round in 0..2 {
            let used = self.token(scope);
            let resp = self
                .authorize(build(), scope)
                .send()
                .await
                .map_err(|e| map_reqwest(url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            match challenge {
                Some((s, params)) if s == "bearer" && round == 0 => {
                    let _one_at_a_time = self.inner.token_fetch.lock().await;
                    // Another request may have fetched a new token meanwhile.
                    if self.token(scope) == used {
                        self.fetch_token(&params, scope, url).await?
                    }
                }
                Some((s, _)) if s == "basic" && round == 0 && self.inner.basic.is_some() => {}
                _ => return Err(self.unauthorized(url)),
            }
            tracing::debug!(url = %url, "answered an auth challenge");
        }
        Err(self.unauthorized(url))
    }

    fn status_error(url: &str, status: StatusCode) -> StoreError {
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            StoreError::NotFound {
                url: url.to_string(),
            }
        } else {
            StoreError::Http {
                url: url.to_string(),
                status: status.as_u16(),
            }
        }
    }

    async fn with_retries<T, F, Fut>(&self, url: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        super::with_retries(self.inner.retries, self.inner.backoff_base, url, op).await
    }

    /// A manifest by tag or digest; `None` when the registry does not have it.
    pub async fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, StoreError> {
        let url = self.api(&format!("manifests/{reference}"));
        let scope = self.pull_scope();
        self.with_retries(&url, || async {
            let c = self.inner.client.clone();
            let u = url.clone();
            let resp = self
                .send(&url, &scope, &move || {
                    c.get(&u).header(ACCEPT, crate_accept())
                })
                .await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(Self::status_error(&url, status));
            }
            let media_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = resp.bytes().await.map_err(|e| map_reqwest(&url, e))?;
            let digest = sha256_digest(&bytes);
            Ok(Some(FetchedManifest {
                bytes,
                media_type,
                digest,
            }))
        })
        .await
    }

    /// Size of a blob, or `None` when the repository does not have it.
    pub async fn head_blob(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        let url = self.api(&format!("blobs/{digest}"));
        let scope = self.pull_scope();
        self.with_retries(&url, || async {
            let c = self.inner.client.clone();
            let u = url.clone();
            let resp = self.send(&url, &scope, &move || c.head(&u)).await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(content_length(resp.headers()).unwrap_or(0))),
                StatusCode::NOT_FOUND => Ok(None),
                s => Err(Self::status_error(&url, s)),
            }
        })
        .await
    }

    /// Stream a blob from `offset` (Range). One attempt: the fetch engine retries and resumes.
    pub async fn get_blob_stream(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<ObjectStream, StoreError> {
        let url = self.api(&format!("blobs/{digest}"));
        let scope = self.pull_scope();
        let c = self.inner.client.clone();
        let u = url.clone();
        let resp = self
            .send(&url, &scope, &move || {
                let r = c.get(&u);
                if offset > 0 {
                    r.header(RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Self::status_error(&url, status));
        }
        let headers = resp.headers().clone();
        let len = content_length(&headers);
        let (start, total_len) = if status == StatusCode::PARTIAL_CONTENT {
            match content_range(&headers) {
                Some(v) => v,
                None => (offset, len.map(|l| l + offset)),
            }
        } else {
            (0, len)
        };
        let u2 = url.clone();
        let stream = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| map_reqwest(&u2, e)));
        Ok(ObjectStream {
            total_len,
            offset: start,
            stream: Box::pin(stream),
        })
    }

    /// A whole small blob (configs, the index).
    pub async fn get_blob_bytes(&self, digest: &str) -> Result<Bytes, StoreError> {
        let url = self.api(&format!("blobs/{digest}"));
        let scope = self.pull_scope();
        self.with_retries(&url, || async {
            let c = self.inner.client.clone();
            let u = url.clone();
            let resp = self.send(&url, &scope, &move || c.get(&u)).await?;
            if !resp.status().is_success() {
                return Err(Self::status_error(&url, resp.status()));
            }
            resp.bytes().await.map_err(|e| map_reqwest(&url, e))
        })
        .await
    }

    /// Try to mount `digest` from another repository of the same registry. `true` when the
    /// registry mounted it (201); `false` when it opened an upload instead (then abandoned).
    pub async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool, StoreError> {
        let url = self.api("blobs/uploads/");
        let scope = format!("{},repository:{from}:pull", self.push_scope());
        let c = self.inner.client.clone();
        let u = url.clone();
        let (d, f) = (digest.to_string(), from.to_string());
        let resp = self
            .send(&url, &scope, &move || {
                c.post(with_query(
                    &u,
                    &[("mount", d.as_str()), ("from", f.as_str())],
                ))
                .header(CONTENT_LENGTH, 0)
            })
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Start an upload session; the returned URL is where chunks and the final PUT go.
    async fn start_upload(&self) -> Result<String, StoreError> {
        let url = self.api("blobs/uploads/");
        let scope = self.push_scope();
        let c = self.inner.client.clone();
        let u = url.clone();
        let resp = self
            .send(&url, &scope, &move || c.post(&u).header(CONTENT_LENGTH, 0))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::status_error(&url, resp.status()));
        }
        location(&resp, &url).map(|l| self.absolute(&l))
    }

    /// Upload a blob held in memory (small: configs, manifests of signatures, the index).
    pub async fn put_blob_bytes(&self, digest: &str, bytes: Bytes) -> Result<(), StoreError> {
        let url = self.api(&format!("blobs/{digest}"));
        self.with_retries(&url, || async {
            let upload = self.start_upload().await?;
            self.finish_upload(&upload, digest, bytes.clone()).await
        })
        .await
    }

    async fn finish_upload(
        &self,
        upload: &str,
        digest: &str,
        body: Bytes,
    ) -> Result<(), StoreError> {
        let scope = self.push_scope();
        let c = self.inner.client.clone();
        let u = upload.to_string();
        let d = digest.to_string();
        let resp = self
            .send(upload, &scope, &move || {
                c.put(with_query(&u, &[("digest", d.as_str())]))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, body.len())
                    .body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::status_error(upload, resp.status()));
        }
        Ok(())
    }

    /// Upload a blob from a file: one request up to [`CHUNK_SIZE`], chunked (`PATCH` with
    /// `Content-Range`, then the closing `PUT`) above. The registry checks the digest.
    pub async fn put_blob_file(&self, digest: &str, path: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if size <= CHUNK_SIZE {
            let bytes = Bytes::from(tokio::fs::read(path).await.map_err(io)?);
            return self.put_blob_bytes(digest, bytes).await;
        }
        let url = self.api(&format!("blobs/{digest}"));
        self.with_retries(&url, || async {
            let mut upload = self.start_upload().await?;
            let mut file = tokio::fs::File::open(path).await.map_err(io)?;
            let mut sent = 0u64;
            let scope = self.push_scope();
            while sent < size {
                let n = CHUNK_SIZE.min(size - sent) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact(&mut buf).await.map_err(io)?;
                let chunk = Bytes::from(buf);
                let c = self.inner.client.clone();
                let u = upload.clone();
                let range = format!("{}-{}", sent, sent + n as u64 - 1);
                let resp = self
                    .send(&upload, &scope, &move || {
                        c.patch(&u)
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, chunk.len())
                            .body(chunk.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Self::status_error(&upload, resp.status()));
                }
                upload = self.absolute(&location(&resp, &upload)?);
                sent += n as u64;
                tracing::debug!(sent, size, "uploaded a chunk");
            }
            self.finish_upload(&upload, digest, Bytes::new()).await
        })
        .await
    }

    /// Put a manifest under a tag (or digest); returns the digest of `bytes`.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, StoreError> {
        let url = self.api(&format!("manifests/{reference}"));
        let scope = self.push_scope();
        self.with_retries(&url, || async {
            let c = self.inner.client.clone();
            let u = url.clone();
            let b = bytes.clone();
            let m = media_type.to_string();
            let resp = self
                .send(&url, &scope, &move || {
                    c.put(&u).header(CONTENT_TYPE, m.clone()).body(b.clone())
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(Self::status_error(&url, resp.status()));
            }
            Ok(sha256_digest(&bytes))
        })
        .await
    }

    /// Delete a blob. Registries that do not allow deletes (405, the default of many) leave it
    /// to their garbage collection: an unreferenced blob is invisible to every reader.
    pub async fn delete_blob(&self, digest: &str) -> Result<(), StoreError> {
        self.delete(&self.api(&format!("blobs/{digest}"))).await
    }

    /// Delete the manifest a tag points at (and so the tag); a missing tag is not an error.
    pub async fn delete_tag(&self, tag: &str) -> Result<(), StoreError> {
        let Some(m) = self.get_manifest(tag).await? else {
            return Ok(());
        };
        self.delete(&self.api(&format!("manifests/{}", m.digest)))
            .await
    }

    async fn delete(&self, url: &str) -> Result<(), StoreError> {
        let scope = format!("repository:{}:delete", self.inner.repository);
        let c = self.inner.client.clone();
        let u = url.to_string();
        let resp = self.send(url, &scope, &move || c.delete(&u)).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::FORBIDDEN => {
                tracing::debug!(url = %url, "the registry does not allow deletes");
                Ok(())
            }
            s => Err(Self::status_error(url, s)),
        }
    }

    /// Tags of the repository (follows `Link` pagination).
    pub async fn list_tags(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut next = Some(self.api("tags/list?n=1000"));
        let scope = self.pull_scope();
        while let Some(url) = next.take() {
            let c = self.inner.client.clone();
            let u = url.clone();
            let resp = self.send(&url, &scope, &move || c.get(&u)).await?;
            match resp.status() {
                StatusCode::NOT_FOUND => break,
                s if !s.is_success() => return Err(Self::status_error(&url, s)),
                _ => {}
            }
            next = link_next(resp.headers()).map(|l| self.absolute(&l));
            let raw = resp.bytes().await.map_err(|e| map_reqwest(&url, e))?;
            let body: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|e| StoreError::Network {
                    url: url.clone(),
                    reason: format!("tag list is not JSON: {e}"),
                })?;
            if let Some(tags) = body.get("tags").and_then(|t| t.as_array()) {
                out.extend(tags.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `url` with `pairs` appended to its query (keeps a query the registry put in a Location).
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn crate_accept() -> &'static str {
    "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json"
}

fn location(resp: &reqwest::Response, url: &str) -> Result<String, StoreError> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| StoreError::Network {
            url: url.to_string(),
            reason: "the registry answered without a Location header".into(),
        })
}

fn content_range(h: &HeaderMap) -> Option<(u64, Option<u64>)> {
    super::parse_content_range(h.get(CONTENT_RANGE)?.to_str().ok()?)
}

/// `<…/v2/repo/tags/list?last=x&n=1000>; rel="next"` → the URL.
fn link_next(h: &HeaderMap) -> Option<String> {
    let v = h.get("link")?.to_str().ok()?;
    let (url, rel) = v.split_once(';')?;
    rel.contains("next").then(|| {
        url.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }

    #[test]
    fn auth_file_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://reg.example:5000/":{{"auth":"{enc}"}},"other":{{}}}}}}"#
            ),
        )
        .unwrap();
        let (u, p) = auth_file_lookup(&f, "reg.example:5000").unwrap();
        assert_eq!((u.as_str(), p.expose()), ("alice", "s3cret"));
        assert!(auth_file_lookup(&f, "other").is_none());
        assert!(auth_file_lookup(&f, "nowhere").is_none());
    }

    #[test]
    fn secrets_not_in_debug_and_401_names_the_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("bob:pa55word");
        std::fs::write(
            &f,
            format!(r#"{{"auths":{{"r.example":{{"auth":"{enc}"}}}}}}"#),
        )
        .unwrap();
        let creds = OciCredentials {
            auth_file: Some(f.clone()),
            ..Default::default()
        };
        let c =
            OciClient::open("https", "r.example", "x", &creds, &StoreOptions::default()).unwrap();
        assert!(!format!("{c:?}").contains("pa55word"));
        let anon = OciCredentials {
            auth_file: Some(dir.path().join("missing.json")),
            ..Default::default()
        };
        let c =
            OciClient::open("https", "r.example", "x", &anon, &StoreOptions::default()).unwrap();
        let e = c
            .unauthorized("https://r.example/v2/x/manifests/t")
            .to_string();
        assert!(e.contains("missing.json") && e.contains("auths"), "{e}");
    }

    #[test]
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "</v2/r/tags/list?last=b&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(link_next(&h).unwrap(), "/v2/r/tags/list?last=b&n=2");
    }
}
