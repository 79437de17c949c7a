//! Integration tests of the S3 backend of `sf_cache::store` against a local S3-compatible server
//! (moto: `pip install "moto[server]" && moto_server -H 127.0.0.1 -p 9000`; URL in
//! `SF_CACHE_TEST_S3`). Tests fail, not skip, when the server is not running.
//!
//! Some cases use the fault-injecting HTTP file server of `tests/common/http_server.rs` as a
//! path-style "S3 endpoint" for GETs: it records request headers (anonymous requests carry no
//! `Authorization`) and injects 5xx errors.

mod common;
use common::s3 as s3_support;

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::http_server::{Fault, HttpServer};
use futures_util::StreamExt;
use sf_cache::buildcache::mirror::{IndexCache, Mirror};
use sf_cache::store::{Precondition, Store, StoreError, StoreKind, StoreOptions};
use sha2::{Digest, Sha256};

async fn read_all(store: &Store, rel: &str, offset: u64) -> (u64, Option<u64>, Vec<u8>) {
    let mut os = store.get_stream(rel, offset).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = os.stream.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    (os.offset, os.total_len, got)
}

#[tokio::test]
async fn put_get_head_range_delete() {
    s3_support::require_server();
    let bucket = s3_support::fresh_bucket("basic").await;
    let store = s3_support::open(&bucket, "cache/sub/");
    assert_eq!(store.kind(), StoreKind::S3);
    assert_eq!(store.display_url(), format!("s3://{bucket}/cache/sub"));

    let body = Bytes::from_static(b"hello, object store");
    store
        .put_bytes("v3/layout.json", body.clone())
        .await
        .unwrap();
    assert_eq!(store.get_bytes("v3/layout.json").await.unwrap(), body);
    // The key is under the store prefix.
    let admin = s3_support::admin_client();
    admin
        .head_object()
        .bucket(&bucket)
        .key("cache/sub/v3/layout.json")
        .send()
        .await
        .unwrap();

    let meta = store.head("v3/layout.json").await.unwrap().unwrap();
    assert_eq!(meta.len, Some(body.len() as u64));
    assert!(meta.etag.is_some());
    assert!(store.exists("v3/layout.json").await.unwrap());
    assert!(!store.exists("v3/nope.json").await.unwrap());
    assert!(store.head("v3/nope.json").await.unwrap().is_none());

    let e = store.get_bytes("v3/nope.json").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("s3://{bucket}/cache/sub/v3/nope.json")),
        "{e}"
    );

    // Range reads.
    let (off, total, got) = read_all(&store, "v3/layout.json", 7).await;
    assert_eq!((off, total), (7, Some(body.len() as u64)));
    assert_eq!(got, &body[7..]);
    let (off, total, got) = read_all(&store, "v3/layout.json", 0).await;
    assert_eq!(
        (off, total, got.as_slice()),
        (0, Some(body.len() as u64), &body[..])
    );
    let (off, _, got) = read_all(&store, "v3/layout.json", body.len() as u64).await;
    assert_eq!((off, got.len()), (body.len() as u64, 0));
    assert!(store
        .get_stream("v3/nope.json", 0)
        .await
        .unwrap_err()
        .is_not_found());

    // put_file (single PUT) and overwrite.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("small.bin");
    std::fs::write(&f, b"0123456789").unwrap();
    store.put_file("blobs/small.bin", &f).await.unwrap();
    assert_eq!(
        store.get_bytes("blobs/small.bin").await.unwrap(),
        "0123456789"
    );

    store.delete("blobs/small.bin").await.unwrap();
    store.delete("blobs/small.bin").await.unwrap();
    assert!(!store.exists("blobs/small.bin").await.unwrap());
    assert!(store.get_bytes("../x").await.is_err());

    // A bucket that does not exist.
    let missing = s3_support::open(&format!("{bucket}-missing"), "");
    assert!(missing.get_bytes("a").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_and_is_relative_to_the_prefix() {
    s3_support::require_server();
    let bucket = s3_support::fresh_bucket("list").await;
    let store = s3_support::open(&bucket, "mirror");
    const N: usize = 1100;
    let mut keys: Vec<String> = (0..N).map(|i| format!("many/k{i:05}")).collect();
    keys.push("manyx/sibling".into());
    keys.push("other/x".into());
    let puts = futures_util::stream::iter(keys.clone())
        .map(|k| {
            let store = store.clone();
            async move { store.put_bytes(&k, Bytes::from(k.clone())).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(puts.iter().all(|r| r.is_ok()));
    // Outside the store prefix: never listed.
    s3_support::open(&bucket, "")
        .put_bytes("elsewhere/y", Bytes::from_static(b"y"))
        .await
        .unwrap();
    s3_support::open(&bucket, "")
        .put_bytes("mirrorx/z", Bytes::from_static(b"z"))
        .await
        .unwrap();

    let many = store.list("many").await.unwrap();
    assert_eq!(many.len(), N, "more than 1000 keys need several pages");
    assert_eq!(many, keys[..N].to_vec());
    assert_eq!(store.list("many/").await.unwrap().len(), N);
    let mut all = keys.clone();
    all.sort();
    assert_eq!(store.list("").await.unwrap(), all);
    assert_eq!(store.list("other/x").await.unwrap(), vec!["other/x"]);
    assert!(store.list("nothing").await.unwrap().is_empty());
    // Listed paths can be passed back.
    assert_eq!(store.get_bytes(&many[1042]).await.unwrap(), many[1042]);
}

fn write_pseudo_random(path: &Path, len: usize) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        for b in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n;
    }
    f.flush().unwrap();
    hex::encode(h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_of_a_70mb_file() {
    s3_support::require_server();
    let bucket = s3_support::fresh_bucket("multipart").await;
    let store = s3_support::open(&bucket, "big");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let len = 70 * 1024 * 1024 + 12345;
    assert!(len as u64 > sf_cache::store::S3_MULTIPART_THRESHOLD);
    let digest = write_pseudo_random(&path, len);
    store.put_file("blobs/blob.bin", &path).await.unwrap();

    let meta = store.head("blobs/blob.bin").await.unwrap().unwrap();
    assert_eq!(meta.len, Some(len as u64));
    // A multipart ETag is "<md5 of part md5s>-<part count>".
    let etag = meta.etag.unwrap();
    assert!(etag.trim_matches('"').ends_with("-5"), "{etag}");

    let mut os = store.get_stream("blobs/blob.bin", 0).await.unwrap();
    let mut h = Sha256::new();
    let mut n = 0usize;
    while let Some(c) = os.stream.next().await {
        let c = c.unwrap();
        n += c.len();
        h.update(&c);
    }
    assert_eq!(n, len);
    assert_eq!(hex::encode(h.finalize()), digest);

    // A range across a part boundary.
    let start = 16 * 1024 * 1024 - 10;
    let mut os = store.get_stream("blobs/blob.bin", start).await.unwrap();
    assert_eq!((os.offset, os.total_len), (start, Some(len as u64)));
    let first = os.stream.next().await.unwrap().unwrap();
    let file = std::fs::read(&path).unwrap();
    let k = first.len().min(64);
    assert_eq!(&first[..k], &file[start as usize..start as usize + k]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes() {
    s3_support::require_server();
    let bucket = s3_support::fresh_bucket("cond").await;
    let store = s3_support::open(&bucket, "c");
    let rel = "v3/manifests/index/index.manifest.json";
    assert!(store.get_with_etag(rel).await.unwrap().is_none());

    let e1 = store
        .put_bytes_if(rel, Bytes::from_static(b"one"), Precondition::IfAbsent)
        .await
        .unwrap();
    assert!(!e1.is_empty());
    let err = store
        .put_bytes_if(rel, Bytes::from_static(b"two"), Precondition::IfAbsent)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    assert!(err.to_string().contains("index.manifest.json"), "{err}");
    assert_eq!(store.get_bytes(rel).await.unwrap(), "one");

    let (body, etag) = store.get_with_etag(rel).await.unwrap().unwrap();
    assert_eq!((&body[..], &etag), (&b"one"[..], &e1));
    let e2 = store
        .put_bytes_if(
            rel,
            Bytes::from_static(b"two"),
            Precondition::IfMatch(etag.clone()),
        )
        .await
        .unwrap();
    assert_ne!(e1, e2);
    let err = store
        .put_bytes_if(
            rel,
            Bytes::from_static(b"three"),
            Precondition::IfMatch(etag),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_precondition_failed(),
        "stale If-Match must fail: {err}"
    );
    assert_eq!(store.get_bytes(rel).await.unwrap(), "two");
    let err = store
        .put_bytes_if(
            "v3/absent",
            Bytes::from_static(b"x"),
            Precondition::IfMatch(e2),
        )
        .await
        .unwrap_err();
    assert!(
        err.is_precondition_failed(),
        "If-Match on a missing key: {err}"
    );
    store
        .put_bytes_if(rel, Bytes::from_static(b"four"), Precondition::Always)
        .await
        .unwrap();
    assert_eq!(store.get_bytes(rel).await.unwrap(), "four");
}

/// Concurrent read-modify-write loops with If-Match lose no update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_if_match_updates_lose_nothing() {
    s3_support::require_server();
    let bucket = s3_support::fresh_bucket("race").await;
    let store = s3_support::open(&bucket, "");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let cur = s.get_with_etag("counter").await.unwrap();
                let (n, pre) = match cur {
                    None => (0u32, Precondition::IfAbsent),
                    Some((b, e)) => (
                        std::str::from_utf8(&b).unwrap().parse().unwrap(),
                        Precondition::IfMatch(e),
                    ),
                };
                match s
                    .put_bytes_if("counter", Bytes::from((n + 1).to_string()), pre)
                    .await
                {
                    Ok(_) => return conflicts,
                    Err(e) if e.is_precondition_failed() => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get_bytes("counter").await.unwrap(), "6");
}

/// Anonymous requests carry no Authorization header; 5xx are retried; 404 maps to NotFound.
/// (The HTTP file server plays a path-style S3 endpoint for GET/HEAD.)
#[tokio::test]
async fn anonymous_requests_are_unsigned_and_5xx_is_retried() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pub-bucket/cache")).unwrap();
    std::fs::write(root.path().join("pub-bucket/cache/obj.txt"), b"public data").unwrap();
    let srv = HttpServer::start(root.path());
    let opts = StoreOptions {
        s3_endpoint: Some(srv.base_url()),
        s3_anonymous: true,
        backoff_base: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    let store = Store::open("s3://pub-bucket/cache", &opts).unwrap();
    let Store::S3(s3) = &store else {
        panic!("not an S3 store")
    };
    assert!(s3.is_anonymous().await.unwrap());
    srv.set_fault(
        "/pub-bucket/cache/obj.txt",
        Fault::Status {
            status: 503,
            times: 2,
        },
    );
    assert_eq!(store.get_bytes("obj.txt").await.unwrap(), "public data");
    assert_eq!(srv.requests("/pub-bucket/cache/obj.txt"), 3);
    for r in srv.log() {
        assert!(r.header("authorization").is_none(), "signed: {r:?}");
    }
    assert!(store.get_bytes("nope").await.unwrap_err().is_not_found());
    assert!(store.head("nope").await.unwrap().is_none());
    let meta = store.head("obj.txt").await.unwrap().unwrap();
    assert_eq!(meta.len, Some(11));
    srv.set_fault(
        "/pub-bucket/cache/obj.txt",
        Fault::Status {
            status: 403,
            times: 1,
        },
    );
    // Public buckets answer 403 for missing keys to anonymous clients.
    assert!(store.head("obj.txt").await.unwrap().is_none());
}

/// Signed requests when credentials exist (CI exports dummy ones).
#[tokio::test]
async fn requests_are_signed_with_credentials_from_the_environment() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!("AWS_ACCESS_KEY_ID unset: the signed-request case needs credentials; skipped");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("b")).unwrap();
    std::fs::write(root.path().join("b/o"), b"x").unwrap();
    let srv = HttpServer::start(root.path());
    let opts = StoreOptions {
        s3_endpoint: Some(srv.base_url()),
        ..Default::default()
    };
    let store = Store::open("s3://b", &opts).unwrap();
    assert_eq!(store.get_bytes("o").await.unwrap(), "x");
    let log = srv.log();
    let auth = log[0]
        .header("authorization")
        .unwrap_or_default()
        .to_string();
    assert!(auth.starts_with("AWS4-HMAC-SHA256"), "{auth}");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    let shown = format!("{store:?} {}", store.display_url());
    assert!(secret.is_empty() || !shown.contains(&secret));
}

/// Without any credentials (no env, no profile, no instance metadata) the store falls back to
/// anonymous access, as Spack does. Runs in a child process with a scrubbed environment.
#[test]
fn no_credentials_means_anonymous() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "anonymous_fallback_child",
            "--ignored",
            "--nocapture",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SF_TEST_ANON_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

#[tokio::test]
#[ignore = "run by no_credentials_means_anonymous in a scrubbed environment"]
async fn anonymous_fallback_child() {
    assert!(std::env::var_os("SF_TEST_ANON_CHILD").is_some());
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("b")).unwrap();
    std::fs::write(root.path().join("b/o"), b"x").unwrap();
    let srv = HttpServer::start(root.path());
    let opts = StoreOptions {
        s3_endpoint: Some(srv.base_url()),
        ..Default::default()
    };
    let store = Store::open("s3://b", &opts).unwrap();
    let Store::S3(s3) = &store else {
        panic!("not an S3 store")
    };
    let t = std::time::Instant::now();
    assert!(s3.is_anonymous().await.unwrap());
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(store.get_bytes("o").await.unwrap(), "x");
    assert!(srv.log()[0].header("authorization").is_none());
}

/// moto enforces bucket ACLs for unsigned requests: an anonymous store lists and reads a
/// public-read bucket; a private bucket refuses it (403, which an anonymous store reports as
/// "not found", as public buckets answer 403 for missing keys).
#[tokio::test]
async fn anonymous_read_of_a_public_bucket() {
    s3_support::require_server();
    let public = s3_support::fresh_bucket("public").await;
    let private = s3_support::fresh_bucket("private").await;
    s3_support::admin_client()
        .put_bucket_acl()
        .bucket(&public)
        .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    for b in [&public, &private] {
        s3_support::open(b, "m")
            .put_bytes("v3/layout.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    let opts = StoreOptions {
        s3_anonymous: true,
        ..s3_support::options()
    };
    let anon = Store::open(&format!("s3://{public}/m"), &opts).unwrap();
    assert_eq!(anon.get_bytes("v3/layout.json").await.unwrap(), "{}");
    assert_eq!(anon.list("v3").await.unwrap(), vec!["v3/layout.json"]);
    assert!(anon
        .get_bytes("v3/missing")
        .await
        .unwrap_err()
        .is_not_found());

    let anon_private = Store::open(&format!("s3://{private}/m"), &opts).unwrap();
    let e = anon_private.get_bytes("v3/layout.json").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(anon_private.head("v3/layout.json").await.unwrap().is_none());
    // The signed store reads the private bucket.
    assert_eq!(
        s3_support::open(&private, "m")
            .get_bytes("v3/layout.json")
            .await
            .unwrap(),
        "{}"
    );
}

fn files_under(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    out
}

/// The real Spack-made v3 cache, uploaded to S3 through `Store`, reads back identically and
/// its index loads through the buildcache layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_cache_through_s3() {
    s3_support::require_server();
    let src = common::fixtures_dir().join("spack-v3");
    let bucket = s3_support::fresh_bucket("fixture").await;
    let store = s3_support::open(&bucket, "spack/v3cache");
    let files = files_under(&src);
    assert!(!files.is_empty());
    for (rel, path) in &files {
        store.put_file(rel, path).await.unwrap();
    }
    let rels: Vec<String> = files.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(store.list("").await.unwrap(), rels);
    for (rel, path) in &files {
        let got = store.get_bytes(rel).await.unwrap();
        assert_eq!(&got[..], &std::fs::read(path).unwrap()[..], "{rel}");
        if let Some(name) = rel.strip_prefix("blobs/sha256/") {
            let digest = name.rsplit('/').next().unwrap();
            assert_eq!(hex::encode(Sha256::digest(&got)), digest, "{rel}");
        }
    }
    let cache_dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::new("s3-fixture", store.clone(), false);
    let indexes = mirror
        .load_indexes(&IndexCache::new(cache_dir.path()))
        .await
        .unwrap();
    let names: std::collections::BTreeSet<String> = indexes
        .iter()
        .flat_map(|i| i.index.records.iter().map(|r| r.spec.name.clone()))
        .collect();
    for want in ["libgreet", "greet"] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    let err: StoreError = store.get_bytes("v3/missing.json").await.unwrap_err();
    assert!(err.is_not_found());
}
