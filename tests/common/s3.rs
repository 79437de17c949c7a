//! Test support for the S3 backend: reach the local S3-compatible server (moto) and make a fresh
//! bucket per test.
//!
//! The server URL comes from `SF_CACHE_TEST_S3` (default `http://127.0.0.1:9000`). Tests FAIL
//! (they do not skip) when it does not answer; start it with
//! `pip install "moto[server]" && moto_server -H 127.0.0.1 -p 9000` (`.ci/run` does this).
//!
//! Use: `mod common;` then `common::s3::require_server()`, `common::s3::fresh_bucket(…)`.
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use sf_cache::store::{Store, StoreOptions};

/// Default URL of the local S3 server.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";

/// URL of the local S3 server (`SF_CACHE_TEST_S3`, else [`DEFAULT_ENDPOINT`]).
pub fn endpoint() -> String {
    std::env::var("SF_CACHE_TEST_S3")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim()
        .trim_end_matches('/')
        .to_string()
}

/// Panics with instructions unless the S3 server accepts TCP connections and (dummy)
/// credentials are in the environment.
pub fn require_server() -> String {
    let ep = endpoint();
    let url = url::Url::parse(&ep)
        .unwrap_or_else(|e| panic!("SF_CACHE_TEST_S3={ep:?} is not a URL: {e}"));
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(9000);
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
        || std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none()
    {
        panic!(
            "the S3 tests sign requests with credentials from the environment: \
             export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
             AWS_DEFAULT_REGION=us-east-1 (dummy values for the local server; .ci/run does this)"
        );
    }
    if !reachable {
        panic!(
            "the local S3 server {ep} does not answer; start it with \
             `pip install \"moto[server]\" && moto_server -H 127.0.0.1 -p 9000` \
             (or set SF_CACHE_TEST_S3 to another S3-compatible server)"
        );
    }
    ep
}

/// An SDK client for test setup (bucket creation, ACLs), with dummy static credentials.
pub fn admin_client() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Create a fresh, empty bucket with a unique name (`tag` is a short lowercase hint).
pub async fn fresh_bucket(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    let name = format!("sft-{tag}-{}-{nanos:x}-{n}", std::process::id());
    admin_client()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create bucket {name} on {}: {}",
                endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
    name
}

/// Store options pointing at the local server (path-style; credentials from the environment,
/// anonymous when there are none — moto accepts both).
pub fn options() -> StoreOptions {
    StoreOptions {
        s3_endpoint: Some(endpoint()),
        backoff_base: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Open `s3://bucket/prefix` on the local server.
pub fn open(bucket: &str, prefix: &str) -> Store {
    let loc = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    Store::open(&loc, &options()).unwrap_or_else(|e| panic!("open {loc}: {e}"))
}
