//! HTTP(S) backend on reqwest (rustls, HTTP/2, proxies from `HTTP(S)_PROXY`/`NO_PROXY`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE};
use reqwest::{Method, StatusCode};

use super::netrc::{Netrc, Secret};
use super::StoreOptions;
use super::{check_rel, redact_location, ObjectMeta, ObjectStream, StoreError};

/// Characters escaped inside one path segment of an object key.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[derive(Clone)]
enum Auth {
    Bearer(Secret),
    Basic {
        user: String,
        password: Option<Secret>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { .. } => f.write_str("Basic(***)"),
        }
    }
}

struct Inner {
    /// Base URL without userinfo and without trailing slash.
    base: String,
    client: reqwest::Client,
    auth: Option<Auth>,
    retries: u32,
    backoff_base: Duration,
}

/// A store served over HTTP(S). Read-only.
#[derive(Clone)]
pub struct HttpStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStore")
            .field("base", &self.inner.base)
            .field("auth", &self.inner.auth)
            .finish()
    }
}

/// The HTTP client of a store (plain HTTP(S) and OCI registries alike): user agent, timeouts,
/// redirects, the extra CA certificates of the options and of `$SSL_CERT_FILE`. Proxies come from
/// the environment (reqwest reads `HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY` when the client is
/// built); their values may hold credentials, so they are never logged.
pub(crate) fn http_client(opts: &StoreOptions) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(opts.user_agent.clone())
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.read_timeout)
        .redirect(reqwest::redirect::Policy::limited(10));
    let mut certs = Vec::new();
    if let Some(ca) = &opts.ca_cert {
        certs.extend(load_pem_bundle(ca).map_err(|reason| {
            format!("extra CA certificate: {reason} (fix the ca_cert setting or --ca-cert)")
        })?);
    }
    if let Some(env_ca) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        match load_pem_bundle(std::path::Path::new(&env_ca)) {
            Ok(c) => certs.extend(c),
            Err(reason) => tracing::warn!("ignoring SSL_CERT_FILE: {reason}"),
        }
    }
    if !certs.is_empty() {
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| {
        format!(
            "cannot build the HTTP client: {}",
            error_chain(&e.without_url())
        )
    })
}

pub(super) fn load_pem_bundle(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

impl HttpStore {
    pub(crate) fn open(location: &str, opts: &StoreOptions) -> Result<HttpStore, StoreError> {
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: redact_location(location),
            reason,
        };
        let mut url = url::Url::parse(location).map_err(|e| invalid(e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| invalid("URL has no host".into()))?
            .to_string();
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "a store URL must not have a query or fragment".into(),
            ));
        }
        // Credentials from the URL itself win, then the bearer token, then netrc.
        let url_user = percent_encoding::percent_decode_str(url.username())
            .decode_utf8_lossy()
            .into_owned();
        let url_pass = url
            .password()
            .map(|p| Secret::new(percent_encoding::percent_decode_str(p).decode_utf8_lossy()));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let auth = if !url_user.is_empty() || url_pass.is_some() {
            Some(Auth::Basic {
                user: url_user,
                password: url_pass,
            })
        } else if let Some(tok) = opts.bearer_token.as_ref().filter(|t| !t.is_empty()) {
            Some(Auth::Bearer(Secret::new(tok.clone())))
        } else {
            let netrc_path = opts.netrc_path.clone().or_else(Netrc::default_path);
            netrc_path.and_then(|p| {
                Netrc::load(&p).lookup(&host).map(|e| {
                    tracing::debug!(host = %host, netrc = %p.display(), "using netrc credentials");
                    Auth::Basic {
                        user: e.login.clone(),
                        password: e.password.clone(),
                    }
                })
            })
        };
        let base = url.as_str().trim_end_matches('/').to_string();

        let client = http_client(opts).map_err(invalid)?;
        tracing::debug!(base = %base, auth = auth.is_some(), "opened HTTP store");
        Ok(HttpStore {
            inner: Arc::new(Inner {
                base,
                client,
                auth,
                retries: opts.retries,
                backoff_base: opts.backoff_base,
            }),
        })
    }

    pub(crate) fn display_url(&self) -> String {
        self.inner.base.clone()
    }

    fn url_of(&self, rel: &str) -> Result<String, StoreError> {
        let rel = check_rel(rel)?;
        let mut out = self.inner.base.clone();
        for seg in rel.split('/') {
            out.push('/');
            out.extend(utf8_percent_encode(seg, SEGMENT));
        }
        Ok(out)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        offset: u64,
    ) -> Result<reqwest::Response, StoreError> {
        let mut req = self.inner.client.request(method, url);
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        match &self.inner.auth {
            Some(Auth::Bearer(t)) => req = req.bearer_auth(t.expose()),
            Some(Auth::Basic { user, password }) => {
                req = req.basic_auth(user, password.as_ref().map(|p| p.expose()))
            }
            None => {}
        }
        let resp = req.send().await.map_err(|e| map_reqwest(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        tracing::debug!(url = %url, status = status.as_u16(), "HTTP error status");
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            Err(StoreError::NotFound {
                url: url.to_string(),
            })
        } else {
            Err(StoreError::Http {
                url: url.to_string(),
                status: status.as_u16(),
            })
        }
    }

    async fn with_retries<T, F, Fut>(&self, url: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        super::with_retries(self.inner.retries, self.inner.backoff_base, url, op).await
    }

    pub(crate) async fn get_bytes(&self, rel: &str) -> Result<Bytes, StoreError> {
        let url = self.url_of(rel)?;
        self.with_retries(&url, || async {
            let resp = self.send(Method::GET, &url, 0).await?;
            resp.bytes().await.map_err(|e| map_reqwest(&url, e))
        })
        .await
    }

    /// One attempt (no retry: the fetch engine retries and resumes with Range).
    pub(crate) async fn get_stream(
        &self,
        rel: &str,
        offset: u64,
    ) -> Result<ObjectStream, StoreError> {
        let url = self.url_of(rel)?;
        let resp = self.send(Method::GET, &url, offset).await?;
        let headers = resp.headers();
        let len = content_length(headers);
        let (start, total_len) = if resp.status() == StatusCode::PARTIAL_CONTENT {
            match parse_content_range(headers) {
                Some((start, total)) => (start, total),
                None => {
                    return Err(StoreError::Network {
                        url,
                        reason: "206 response without a valid Content-Range header".into(),
                    })
                }
            }
        } else {
            (0, len)
        };
        let stream_url = url.clone();
        let stream = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| map_reqwest(&stream_url, e)));
        Ok(ObjectStream {
            total_len,
            offset: start,
            stream: Box::pin(stream),
        })
    }

    pub(crate) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let url = self.url_of(rel)?;
        self.with_retries(&url, || async {
            match self.send(Method::HEAD, &url, 0).await {
                Ok(resp) => Ok(Some(ObjectMeta {
                    len: content_length(resp.headers()),
                    etag: resp
                        .headers()
                        .get(ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                })),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    pub(crate) async fn get_with_etag(
        &self,
        rel: &str,
    ) -> Result<Option<(Bytes, String)>, StoreError> {
        let url = self.url_of(rel)?;
        self.with_retries(&url, || async {
            let resp = match self.send(Method::GET, &url, 0).await {
                Ok(r) => r,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let etag = resp
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = resp.bytes().await.map_err(|e| map_reqwest(&url, e))?;
            Ok(Some((body, etag)))
        })
        .await
    }

    /// Whether requests carry an `Authorization` header (for diagnostics; never the value).
    pub fn has_credentials(&self) -> bool {
        self.inner.auth.is_some()
    }
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `bytes start-end/total` → (start, total).
fn parse_content_range(h: &HeaderMap) -> Option<(u64, Option<u64>)> {
    super::parse_content_range(h.get(CONTENT_RANGE)?.to_str().ok()?)
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

pub(super) fn map_reqwest(url: &str, e: reqwest::Error) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout {
            url: url.to_string(),
        };
    }
    // Request URLs never carry userinfo (stripped in `open`), but drop it anyway.
    let e = e.without_url();
    StoreError::Network {
        url: url.to_string(),
        reason: error_chain(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 10-99/100"));
        assert_eq!(parse_content_range(&h), Some((10, Some(100))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 10-99/*"));
        assert_eq!(parse_content_range(&h), Some((10, None)));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 9-1/100"));
        assert_eq!(parse_content_range(&h), None);
        h.insert(CONTENT_RANGE, HeaderValue::from_static("junk"));
        assert_eq!(parse_content_range(&h), None);
    }

    #[test]
    fn urls_are_encoded_per_segment() {
        let s = HttpStore::open("http://h.example/base/", &StoreOptions::default()).unwrap();
        assert_eq!(
            s.url_of("a b/c#d/e%f").unwrap(),
            "http://h.example/base/a%20b/c%23d/e%25f"
        );
        assert!(s.url_of("../etc/passwd").is_err());
    }

    proptest::proptest! {
        #[test]
        fn content_range_never_panics(v in "\\PC{0,40}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(CONTENT_RANGE, v);
                let _ = parse_content_range(&h);
            }
        }

        #[test]
        fn content_range_roundtrip(a in 0u64..1 << 40, len in 1u64..1 << 20, extra in 0u64..10) {
            let mut h = HeaderMap::new();
            let total = a + len + extra;
            h.insert(CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {}-{}/{}", a, a + len - 1, total)).unwrap());
            proptest::prop_assert_eq!(parse_content_range(&h), Some((a, Some(total))));
        }
    }
}
