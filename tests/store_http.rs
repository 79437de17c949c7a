//! Integration tests of `sf_cache::store` against the real fixture caches, served from disk and
//! through the fault-injecting HTTP server of `tests/common/http_server.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http_server::{Fault, HttpServer, ALWAYS};
use futures_util::StreamExt;
use sf_cache::store::{Store, StoreError, StoreKind, StoreOptions};

/// Tests that change proxy / CA environment variables take this for writing; every
/// `Store::open` (where reqwest reads those variables) takes it for reading.
static ENV_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn v3() -> PathBuf {
    common::fixtures_dir().join("spack-v3")
}

/// Options for tests: no netrc from the user's home, fast backoff, short timeouts.
fn opts() -> StoreOptions {
    StoreOptions {
        netrc_path: Some(PathBuf::from("/nonexistent/netrc")),
        backoff_base: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn open(location: &str, o: &StoreOptions) -> Store {
    let _g = ENV_LOCK.read().await;
    Store::open(location, o).expect("open store")
}

/// Some blob of the fixture cache (found on disk, never hard-coded): (rel path, bytes).
fn some_blob() -> (String, Vec<u8>) {
    let dir = v3().join("blobs/sha256");
    let mut best: Option<(String, Vec<u8>)> = None;
    for sub in std::fs::read_dir(&dir).unwrap() {
        let sub = sub.unwrap();
        for f in std::fs::read_dir(sub.path()).unwrap() {
            let f = f.unwrap();
            let rel = format!(
                "blobs/sha256/{}/{}",
                sub.file_name().to_str().unwrap(),
                f.file_name().to_str().unwrap()
            );
            let data = std::fs::read(f.path()).unwrap();
            // the largest blob, so that mid-body faults have room
            if best.as_ref().is_none_or(|(_, b)| data.len() > b.len()) {
                best = Some((rel, data));
            }
        }
    }
    best.expect("fixture has blobs")
}

async fn collect(mut s: sf_cache::store::ObjectStream) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    while let Some(c) = s.stream.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn http_get_head_range_404() {
    let srv = HttpServer::start(v3());
    let store = open(&format!("{}/", srv.base_url()), &opts()).await;
    assert_eq!(store.kind(), StoreKind::Http);
    assert_eq!(store.display_url(), srv.base_url());

    let (rel, data) = some_blob();
    assert_eq!(
        store.get_bytes(&rel).await.unwrap(),
        Bytes::from(data.clone())
    );
    let layout = std::fs::read(v3().join("v3/layout.json")).unwrap();
    assert_eq!(store.get_bytes("v3/layout.json").await.unwrap(), layout);

    let meta = store.head(&rel).await.unwrap().expect("exists");
    assert_eq!(meta.len, Some(data.len() as u64));
    assert!(meta.etag.is_some());
    assert!(store.exists(&rel).await.unwrap());
    assert!(!store.exists("blobs/sha256/00/nothing").await.unwrap());
    assert!(store.head("nothing").await.unwrap().is_none());

    let err = store
        .get_bytes("blobs/sha256/00/nothing")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("/blobs/sha256/00/nothing"),
        "{err}"
    );

    // Range honoured
    let os = store.get_stream(&rel, 100).await.unwrap();
    assert_eq!(os.offset, 100);
    assert_eq!(os.total_len, Some(data.len() as u64));
    assert_eq!(collect(os).await.unwrap(), &data[100..]);
    let log = srv.log();
    assert_eq!(log.last().unwrap().header("range"), Some("bytes=100-"));

    // Range ignored by the server → offset 0, whole body
    srv.set_fault(&rel, Fault::IgnoreRange { times: 1 });
    let os = store.get_stream(&rel, 100).await.unwrap();
    assert_eq!(os.offset, 0);
    assert_eq!(collect(os).await.unwrap(), data);

    // Range past the end → 416 as an Http error
    let err = store
        .get_stream(&rel, data.len() as u64 + 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Http { status: 416, .. }), "{err}");

    // list is not possible over plain HTTP; writes neither
    assert!(matches!(
        store.list("").await,
        Err(StoreError::Unsupported { .. })
    ));
    assert!(matches!(
        store.put_bytes("x", Bytes::new()).await,
        Err(StoreError::Unsupported { .. })
    ));
}

#[tokio::test]
async fn http_503_then_ok_is_retried() {
    let srv = HttpServer::start(v3());
    let store = open(&srv.base_url(), &opts()).await;
    srv.set_fault(
        "/v3/layout.json",
        Fault::Status {
            status: 503,
            times: 2,
        },
    );
    assert!(store.get_bytes("v3/layout.json").await.is_ok());
    assert_eq!(srv.requests("/v3/layout.json"), 3);

    // HEAD is retried too
    srv.set_fault(
        "/v3/",
        Fault::Status {
            status: 502,
            times: 1,
        },
    );
    assert!(store.head("v3/layout.json").await.unwrap().is_some());

    // Without retries the error surfaces, retryable
    let o = StoreOptions {
        retries: 0,
        ..opts()
    };
    let once = open(&srv.base_url(), &o).await;
    srv.set_fault(
        "/v3/layout.json",
        Fault::Status {
            status: 503,
            times: 1,
        },
    );
    let err = once.get_bytes("v3/layout.json").await.unwrap_err();
    assert!(matches!(err, StoreError::Http { status: 503, .. }), "{err}");
    assert!(err.is_retryable());

    // Persistent 503: bounded number of attempts (1 + retries)
    srv.clear_faults();
    srv.set_fault(
        "/v3/layout.json",
        Fault::Status {
            status: 503,
            times: ALWAYS,
        },
    );
    let before = srv.requests("/v3/layout.json");
    assert!(store.get_bytes("v3/layout.json").await.is_err());
    assert_eq!(
        srv.requests("/v3/layout.json") - before,
        1 + opts().retries as usize
    );

    // 403 is not retried
    srv.clear_faults();
    srv.set_fault(
        "/v3/layout.json",
        Fault::Status {
            status: 403,
            times: 1,
        },
    );
    let before = srv.requests("/v3/layout.json");
    let err = store.get_bytes("v3/layout.json").await.unwrap_err();
    assert!(matches!(err, StoreError::Http { status: 403, .. }), "{err}");
    assert_eq!(srv.requests("/v3/layout.json") - before, 1);
}

#[tokio::test]
async fn http_broken_bodies() {
    let srv = HttpServer::start(v3());
    let o = StoreOptions {
        retries: 0,
        ..opts()
    };
    let store = open(&srv.base_url(), &o).await;
    let (rel, data) = some_blob();

    srv.set_fault(
        &rel,
        Fault::DropAfter {
            bytes: 1000,
            times: 1,
        },
    );
    let err = store.get_bytes(&rel).await.unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");
    assert!(err.is_retryable());

    srv.set_fault(
        &rel,
        Fault::Truncate {
            bytes: 10,
            times: 1,
        },
    );
    let err = collect(store.get_stream(&rel, 0).await.unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");

    srv.set_fault(&rel, Fault::WrongLength { delta: 5, times: 1 });
    assert!(store.get_bytes(&rel).await.is_err());

    // With retries, a dropped connection heals.
    let retrying = open(&srv.base_url(), &opts()).await;
    srv.set_fault(
        &rel,
        Fault::DropAfter {
            bytes: 10,
            times: 1,
        },
    );
    assert_eq!(retrying.get_bytes(&rel).await.unwrap(), data);
}

#[tokio::test]
async fn http_slow_body_times_out() {
    let srv = HttpServer::start(v3());
    let o = StoreOptions {
        retries: 0,
        read_timeout: Duration::from_millis(300),
        ..opts()
    };
    let store = open(&srv.base_url(), &o).await;
    let (rel, _) = some_blob();
    srv.set_fault(
        &rel,
        Fault::Slow {
            chunk: 100,
            delay: Duration::from_secs(2),
            times: 1,
        },
    );
    let t = Instant::now();
    let res = match store.get_stream(&rel, 0).await {
        Ok(s) => collect(s).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = res.unwrap_err();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn connection_refused_is_network_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = StoreOptions {
        retries: 1,
        ..opts()
    };
    let store = open(&format!("http://127.0.0.1:{port}/cache"), &o).await;
    let err = store.get_bytes("v3/layout.json").await.unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");
}

#[tokio::test]
async fn file_store_on_fixture() {
    for loc in [
        v3().display().to_string(),
        format!("{}/", v3().display()),
        format!("file://{}", v3().display()),
    ] {
        let store = open(&loc, &opts()).await;
        assert_eq!(store.kind(), StoreKind::File);
        let (rel, data) = some_blob();
        assert_eq!(store.get_bytes(&rel).await.unwrap(), data);
        let listed = store.list("blobs").await.unwrap();
        assert!(listed.contains(&rel), "{listed:?}");
        assert!(listed.iter().all(|p| p.starts_with("blobs/sha256/")));
        let all = store.list("").await.unwrap();
        assert!(all.contains(&"v3/layout.json".to_string()));
        let os = store.get_stream(&rel, 7).await.unwrap();
        assert_eq!(os.offset, 7);
        assert_eq!(collect(os).await.unwrap(), &data[7..]);
        assert!(store
            .get_bytes("blobs/nothing")
            .await
            .unwrap_err()
            .is_not_found());
    }
}

#[tokio::test]
async fn file_store_put_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path().to_str().unwrap(), &opts()).await;
    let (rel, data) = some_blob();
    let src = v3().join(&rel);
    store.put_file(&rel, &src).await.unwrap();
    assert_eq!(std::fs::read(tmp.path().join(&rel)).unwrap(), data);
    store
        .put_bytes("v3/layout.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    // Concurrent writers of the same object: readers only ever see one complete version.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![i; 100_000]);
            s.put_bytes("obj/x", body).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = store.get_bytes("obj/x").await.unwrap();
    assert_eq!(got.len(), 100_000);
    assert!(got.iter().all(|b| *b == got[0]));
    assert_eq!(store.list("obj").await.unwrap(), vec!["obj/x".to_string()]);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("obj")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind");
    assert!(store.put_bytes("../escape", Bytes::new()).await.is_err());
    assert!(!tmp.path().parent().unwrap().join("escape").exists());
}

/// Run `f` on a current-thread runtime while capturing all tracing output (TRACE level).
fn with_captured_logs<F: std::future::Future<Output = ()>>(f: F) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .finish();
    tracing::subscriber::with_default(sub, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    });
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8_lossy(&out).into_owned()
}

fn basic(user: &str, pass: &str) -> String {
    use data_encoding::BASE64;
    format!(
        "Basic {}",
        BASE64.encode(format!("{user}:{pass}").as_bytes())
    )
}

#[test]
fn netrc_basic_auth_for_matching_host_only() {
    let srv = HttpServer::start(v3());
    let tmp = tempfile::tempdir().unwrap();
    let netrc = tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        "machine other.example login bob password nope\n\
         machine 127.0.0.1 login alice password Sup3rSecretPw\n",
    )
    .unwrap();
    let logs = with_captured_logs(async {
        let o = StoreOptions {
            netrc_path: Some(netrc.clone()),
            ..opts()
        };
        let store = open(&srv.base_url(), &o).await;
        srv.require_auth(Some(&basic("alice", "Sup3rSecretPw")));
        store.get_bytes("v3/layout.json").await.unwrap();
        let dbg = format!("{store:?} {o:?} {}", store.display_url());
        assert!(!dbg.contains("Sup3rSecretPw"), "{dbg}");

        // Wrong password → 401 error that does not leak the password
        srv.require_auth(Some(&basic("alice", "other")));
        let err = store.get_bytes("v3/layout.json").await.unwrap_err();
        assert!(matches!(err, StoreError::Http { status: 401, .. }), "{err}");
        assert!(!format!("{err} {err:?}").contains("Sup3rSecretPw"));
        srv.require_auth(None);

        // A store on another host name (localhost) gets no credentials from this netrc.
        let other = open(&format!("http://localhost:{}", srv.addr().port()), &o).await;
        other.get_bytes("v3/layout.json").await.unwrap();
    });
    let log = srv.log();
    let with_auth: Vec<_> = log
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .collect();
    assert_eq!(with_auth.len(), 2, "{log:?}");
    assert_eq!(
        log.last().unwrap().header("authorization"),
        None,
        "credentials sent to a host the netrc does not name"
    );
    assert!(!logs.contains("Sup3rSecretPw"), "password in logs:\n{logs}");
    assert!(
        !logs.contains(&basic("alice", "Sup3rSecretPw")),
        "header in logs"
    );
}

#[test]
fn bearer_token_and_url_userinfo() {
    let srv = HttpServer::start(v3());
    let logs = with_captured_logs(async {
        let o = StoreOptions {
            bearer_token: Some("tok-abc123-SECRET".into()),
            ..opts()
        };
        let store = open(&srv.base_url(), &o).await;
        srv.require_auth(Some("Bearer tok-abc123-SECRET"));
        store.get_bytes("v3/layout.json").await.unwrap();
        assert!(!format!("{store:?} {o:?}").contains("tok-abc123-SECRET"));

        // user:password in the URL → basic auth, never displayed
        let url = format!("http://carol:Pw%40ss@127.0.0.1:{}/", srv.addr().port());
        let store = open(&url, &opts()).await;
        assert_eq!(store.display_url(), srv.base_url());
        srv.require_auth(Some(&basic("carol", "Pw@ss")));
        store.get_bytes("v3/layout.json").await.unwrap();
        let err = store.get_bytes("v3/missing").await.unwrap_err();
        assert!(!err.to_string().contains("Pw"), "{err}");
        assert!(!format!("{store:?}").contains("Pw"));
    });
    assert!(!logs.contains("tok-abc123-SECRET"), "{logs}");
    assert!(
        !logs.contains("Pw%40ss") && !logs.contains("Pw@ss"),
        "{logs}"
    );
}

/// Verified: reqwest (feature `system-proxy`) reads `HTTP_PROXY` / `NO_PROXY` from the
/// environment when the client is built. Requests to a proxied host arrive at the proxy in
/// absolute form; hosts listed in `NO_PROXY` are contacted directly.
#[tokio::test]
async fn proxy_env_and_no_proxy_are_honoured() {
    let proxy = HttpServer::start(v3()); // serves the same files: a perfect "caching proxy"
    let origin = HttpServer::start(v3());
    let _w = ENV_LOCK.write().await;
    let saved: Vec<(&str, Option<std::ffi::OsString>)> = [
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, std::env::var_os(k)))
    .collect();
    for (k, _) in &saved {
        std::env::remove_var(k);
    }
    std::env::set_var("HTTP_PROXY", proxy.base_url());

    // 1. Through the proxy: the origin host does not even resolve.
    let via_proxy = Store::open("http://sf-origin.invalid:8080/", &opts()).unwrap();
    // 2. NO_PROXY lists 127.0.0.1: direct.
    std::env::set_var("NO_PROXY", "127.0.0.1");
    let direct = Store::open(&origin.base_url(), &opts()).unwrap();
    for (k, v) in &saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    drop(_w);

    let layout = std::fs::read(v3().join("v3/layout.json")).unwrap();
    assert_eq!(via_proxy.get_bytes("v3/layout.json").await.unwrap(), layout);
    let plog = proxy.log();
    assert_eq!(plog.len(), 1, "{plog:?}");
    assert_eq!(
        plog[0].target,
        "http://sf-origin.invalid:8080/v3/layout.json"
    );
    assert_eq!(plog[0].header("host"), Some("sf-origin.invalid:8080"));

    direct.get_bytes("v3/layout.json").await.unwrap();
    assert_eq!(
        proxy.total_requests(),
        1,
        "NO_PROXY host went through the proxy"
    );
    assert_eq!(origin.requests("/v3/layout.json"), 1);
}

fn openssl_available() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An extra CA (option `ca_cert`, or `SSL_CERT_FILE`) lets us talk to an HTTPS server whose
/// certificate the system roots do not know. Uses `openssl s_server -WWW` as the server.
#[tokio::test]
async fn https_with_extra_ca() {
    if !openssl_available() {
        eprintln!("SKIPPED https_with_extra_ca: the openssl CLI is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::tls::make_certs(tmp.path());
    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("hello.txt"), b"hello over tls\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(&www)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("openssl s_server exited early: {st}");
        }
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _guard = Kill(child);
    let url = format!("https://127.0.0.1:{port}");
    let o = StoreOptions {
        retries: 0,
        ..opts()
    };

    // Unknown CA → a network (TLS) error. SSL_CERT_FILE must not point at our CA here.
    let _w = ENV_LOCK.write().await;
    let saved = std::env::var_os("SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_FILE");
    let untrusted = Store::open(&url, &o).unwrap();
    std::env::set_var("SSL_CERT_FILE", &ca);
    let via_env = Store::open(&url, &o).unwrap();
    match &saved {
        Some(v) => std::env::set_var("SSL_CERT_FILE", v),
        None => std::env::remove_var("SSL_CERT_FILE"),
    }
    drop(_w);
    let err = untrusted.get_bytes("hello.txt").await.unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");

    // ca_cert option
    let with_ca = open(
        &url,
        &StoreOptions {
            ca_cert: Some(ca.clone()),
            ..o.clone()
        },
    )
    .await;
    assert_eq!(
        with_ca.get_bytes("hello.txt").await.unwrap(),
        "hello over tls\n"
    );
    // SSL_CERT_FILE
    assert_eq!(
        via_env.get_bytes("hello.txt").await.unwrap(),
        "hello over tls\n"
    );

    // A ca_cert that is not PEM is an error naming the file.
    let bad = tmp.path().join("bad.pem");
    std::fs::write(&bad, b"not a cert").unwrap();
    let _r = ENV_LOCK.read().await;
    let err = Store::open(
        &url,
        &StoreOptions {
            ca_cert: Some(bad),
            ..o
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad.pem"), "{err}");
}

#[test]
fn server_counts_and_faults_are_bounded() {
    // The test server itself: status fault wears off, unknown method → 405, `..` refused.
    use std::io::{Read, Write};
    let srv = HttpServer::start(v3());
    srv.set_fault(
        "/v3",
        Fault::Status {
            status: 500,
            times: 1,
        },
    );
    let get = |target: &str| {
        let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/v3/layout.json").starts_with("HTTP/1.1 500"));
    assert!(get("/v3/layout.json").starts_with("HTTP/1.1 200"));
    assert!(get("/v3/../../etc/passwd").starts_with("HTTP/1.1 400"));
    assert!(get("/v3%2flayout.json").starts_with("HTTP/1.1 200"));
    assert_eq!(srv.requests("v3/layout.json"), 3);
    assert_eq!(common::http_server::counts(&srv.log()).len(), 2);
}

// ───────────────────────────── fetch engine ─────────────────────────────

mod fetch {
    use super::*;
    use sf_cache::fetch::{
        BlobCache, BlobRequest, FetchError, FetchOptions, Fetcher, NoProgress, ProgressSink,
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn fetch_opts() -> FetchOptions {
        FetchOptions {
            retries: 3,
            backoff_base: Duration::from_millis(10),
            blob_timeout: Duration::from_secs(20),
            offline: false,
            lock_wait: Duration::from_secs(20),
        }
    }

    fn digest_of(rel: &str) -> String {
        rel.rsplit('/').next().unwrap().to_string()
    }

    struct Setup {
        srv: HttpServer,
        store: Store,
        _tmp: tempfile::TempDir,
        cache: BlobCache,
        rel: String,
        data: Vec<u8>,
    }

    async fn setup() -> Setup {
        let srv = HttpServer::start(v3());
        let store = open(
            &srv.base_url(),
            &StoreOptions {
                retries: 0,
                read_timeout: Duration::from_secs(2),
                ..opts()
            },
        )
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(tmp.path().join("blobs")).unwrap();
        let (rel, data) = some_blob();
        Setup {
            srv,
            store,
            _tmp: tmp,
            cache,
            rel,
            data,
        }
    }

    impl Setup {
        fn fetcher(&self, o: FetchOptions) -> Fetcher {
            Fetcher::new(self.cache.clone(), 2, Arc::new(NoProgress)).with_options(o)
        }
        fn req(&self, size: bool) -> BlobRequest {
            BlobRequest::new(
                digest_of(&self.rel),
                size.then_some(self.data.len() as u64),
                vec![(self.store.clone(), self.rel.clone())],
            )
        }
        fn assert_cached(&self, p: &Path) {
            assert_eq!(std::fs::read(p).unwrap(), self.data);
            assert!(self.cache.contains(&digest_of(&self.rel)));
        }
        fn assert_not_cached(&self) {
            let d = digest_of(&self.rel);
            assert!(!self.cache.contains(&d));
            assert!(!self.cache.partial_path(&d).unwrap().exists());
        }
    }

    #[tokio::test]
    async fn dropped_connection_resumes_with_range() {
        let s = setup().await;
        let half = s.data.len() as u64 / 2;
        s.srv.set_fault(
            &s.rel,
            Fault::DropAfter {
                bytes: half,
                times: 1,
            },
        );
        #[derive(Default)]
        struct Count(AtomicU64);
        impl ProgressSink for Count {
            fn start(&self, _: &str, _: Option<u64>) {}
            fn advance(&self, _: &str, n: u64) {
                self.0.fetch_add(n, Ordering::SeqCst);
            }
            fn finish(&self, _: &str) {}
        }
        let count = Arc::new(Count::default());
        let f = Fetcher::new(s.cache.clone(), 1, count.clone()).with_options(fetch_opts());
        let p = f.fetch(vec![s.req(true)]).await.unwrap();
        s.assert_cached(&p[0]);
        let log = s.srv.log();
        assert_eq!(log.len(), 2, "{log:?}");
        let range = log[1].header("range").expect("second request resumes");
        let from: u64 = range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        assert!(from > 0 && from <= half, "{range}");
        assert_eq!(count.0.load(Ordering::SeqCst), s.data.len() as u64);
    }

    #[tokio::test]
    async fn status_503_then_success() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::Status {
                status: 503,
                times: 2,
            },
        );
        let p = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(false)])
            .await
            .unwrap();
        s.assert_cached(&p[0]);
        assert_eq!(s.srv.requests(&s.rel), 3);
    }

    #[tokio::test]
    async fn truncated_body_is_resumed() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::Truncate {
                bytes: 100,
                times: 2,
            },
        );
        let p = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(false)])
            .await
            .unwrap();
        s.assert_cached(&p[0]);
        assert_eq!(s.srv.requests(&s.rel), 3);
    }

    /// A Content-Length that disagrees with the expected size fails early and cleanly; without
    /// an expected size the digest catches it.
    #[tokio::test]
    async fn short_content_length_is_refused() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::WrongLength {
                delta: -5,
                times: ALWAYS,
            },
        );
        let err = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(true)])
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::SizeMismatch { .. }), "{err}");
        s.assert_not_cached();
        assert_eq!(s.srv.requests(&s.rel), 1);
        let err = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(false)])
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err}");
        s.assert_not_cached();
    }

    /// Too long a Content-Length: the body ends early (a network error), the resume gets 416,
    /// and the bytes we have are accepted only because their sha256 matches.
    #[tokio::test]
    async fn long_content_length() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::WrongLength {
                delta: 5,
                times: ALWAYS,
            },
        );
        let err = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(true)])
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::SizeMismatch { .. }), "{err}");
        s.assert_not_cached();
        let before = s.srv.requests(&s.rel);
        let p = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(false)])
            .await
            .unwrap();
        s.assert_cached(&p[0]);
        assert_eq!(s.srv.requests(&s.rel) - before, 2);
    }

    /// Every attempt fails: the number of requests is bounded by the retry budget.
    #[tokio::test]
    async fn persistent_failure_is_bounded() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::Status {
                status: 503,
                times: ALWAYS,
            },
        );
        let err = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(false)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(s.srv.requests(&s.rel), 4); // 1 + 3 retries
        s.assert_not_cached();
    }

    #[tokio::test]
    async fn slow_body_times_out_within_bound() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::Slow {
                chunk: 64,
                delay: Duration::from_millis(200),
                times: ALWAYS,
            },
        );
        let t = Instant::now();
        let err = s
            .fetcher(FetchOptions {
                blob_timeout: Duration::from_secs(1),
                ..fetch_opts()
            })
            .fetch(vec![s.req(true)])
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::TimedOut { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(!s.cache.contains(&digest_of(&s.rel)));
    }

    #[tokio::test]
    async fn wrong_digest_is_refused_and_not_cached() {
        let s = setup().await;
        s.srv.set_fault(&s.rel, Fault::Corrupt { times: ALWAYS });
        let err = s
            .fetcher(fetch_opts())
            .fetch(vec![s.req(true)])
            .await
            .unwrap_err();
        match &err {
            FetchError::DigestMismatch {
                url,
                expected,
                actual,
            } => {
                assert_eq!(expected, &digest_of(&s.rel));
                assert_ne!(actual, expected);
                assert!(url.ends_with(&s.rel));
            }
            other => panic!("{other}"),
        }
        s.assert_not_cached();
        assert_eq!(
            s.srv.requests(&s.rel),
            1,
            "a digest mismatch is not retried"
        );
    }

    #[tokio::test]
    async fn next_source_after_failure() {
        let s = setup().await;
        let bad = HttpServer::start(v3());
        bad.set_fault(
            "/",
            Fault::Status {
                status: 404,
                times: ALWAYS,
            },
        );
        let bad_store = open(&bad.base_url(), &opts()).await;
        let corrupt = HttpServer::start(v3());
        corrupt.set_fault("/", Fault::Corrupt { times: ALWAYS });
        let corrupt_store = open(&corrupt.base_url(), &opts()).await;
        let req = BlobRequest::new(
            digest_of(&s.rel),
            None,
            vec![
                (bad_store, s.rel.clone()),
                (corrupt_store, s.rel.clone()),
                (s.store.clone(), s.rel.clone()),
            ],
        );
        let p = s.fetcher(fetch_opts()).fetch(vec![req]).await.unwrap();
        s.assert_cached(&p[0]);
        assert_eq!(bad.requests(&s.rel), 1, "404 is not retried");
        assert_eq!(corrupt.requests(&s.rel), 1);
        // second fetch: from the cache, no request
        let before = s.srv.total_requests();
        s.fetcher(fetch_opts())
            .fetch(vec![s.req(true)])
            .await
            .unwrap();
        assert_eq!(s.srv.total_requests(), before);
        // offline: cached one OK
        let off = s.fetcher(FetchOptions {
            offline: true,
            ..fetch_opts()
        });
        off.fetch(vec![s.req(true)]).await.unwrap();
    }

    #[tokio::test]
    async fn same_digest_concurrently_is_downloaded_once() {
        let s = setup().await;
        s.srv.set_fault(
            &s.rel,
            Fault::Slow {
                chunk: 4096,
                delay: Duration::from_millis(20),
                times: ALWAYS,
            },
        );
        let f = s.fetcher(fetch_opts());
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let f = f.clone();
            let r = s.req(true);
            tasks.push(tokio::spawn(async move { f.fetch_one(&r).await }));
        }
        // and the same digest twice inside one call
        let both = f.fetch(vec![s.req(true), s.req(true)]).await.unwrap();
        for t in tasks {
            let p = t.await.unwrap().unwrap();
            s.assert_cached(&p);
        }
        assert_eq!(both[0], both[1]);
        assert_eq!(s.srv.requests(&s.rel), 1);
    }

    #[tokio::test]
    async fn all_fixture_blobs_concurrently() {
        let s = setup().await;
        let store_files = Store::open(v3().to_str().unwrap(), &opts()).unwrap();
        let blobs = store_files.list("blobs/sha256").await.unwrap();
        assert!(blobs.len() >= 3);
        let reqs: Vec<_> = blobs
            .iter()
            .map(|rel| {
                let size = std::fs::metadata(v3().join(rel)).unwrap().len();
                BlobRequest::new(
                    format!("sha256:{}", digest_of(rel)),
                    Some(size),
                    vec![(s.store.clone(), rel.clone())],
                )
            })
            .collect();
        s.srv.set_fault(
            "/blobs/",
            Fault::Status {
                status: 500,
                times: 3,
            },
        );
        let f = Fetcher::new(s.cache.clone(), 4, Arc::new(NoProgress)).with_options(fetch_opts());
        let paths = f.fetch(reqs).await.unwrap();
        for (rel, p) in blobs.iter().zip(&paths) {
            assert_eq!(
                std::fs::read(p).unwrap(),
                std::fs::read(v3().join(rel)).unwrap()
            );
            assert!(p.ends_with(format!("sha256/{}", &rel["blobs/sha256/".len()..])));
        }
    }

    /// A 24 MiB blob (generated), dropped at 10 MiB: streamed to disk and resumed with Range.
    #[tokio::test]
    async fn big_blob_resumes() {
        use sha2::{Digest, Sha256};
        let root = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 24 << 20];
        let mut x: u32 = 12345;
        for b in data.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 24) as u8;
        }
        let digest = hex::encode(Sha256::digest(&data));
        std::fs::write(root.path().join("big"), &data).unwrap();
        let srv = common::HttpServer::start(root.path());
        srv.set_fault(
            "/big",
            common::Fault::DropAfter {
                bytes: 10 << 20,
                times: 1,
            },
        );
        let store = open(&srv.base_url(), &opts()).await;
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(tmp.path().join("blobs")).unwrap();
        let f = Fetcher::new(cache.clone(), 1, Arc::new(NoProgress)).with_options(fetch_opts());
        let req = BlobRequest::new(
            digest.clone(),
            Some(data.len() as u64),
            vec![(store, "big".into())],
        );
        let p = f.fetch(vec![req]).await.unwrap();
        assert_eq!(std::fs::metadata(&p[0]).unwrap().len(), data.len() as u64);
        assert_eq!(sf_cache::fetch::sha256_file(&p[0]).unwrap(), digest);
        let log = srv.log();
        assert_eq!(log.len(), 2);
        assert!(log[1].header("range").is_some());
    }
}
