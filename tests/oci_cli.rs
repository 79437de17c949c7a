//! End-to-end tests of `oci://` and `oci+http://` caches against a real registry (Debian's
//! `docker-registry`, the CNCF distribution server, started per test by `common::registry`),
//! with skopeo as an independent client checking what sf-cache pushes.
//!
//! Tests FAIL when `docker-registry`, `skopeo`, `htpasswd` or `openssl` is missing:
//! `apt-get install docker-registry skopeo apache2-utils openssl` (`.ci/run` does it).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cli::*;
use common::registry::{Options, Registry, PASSWORD};
use serde_json::Value;

const SECRET: &str = "keys/sf-cache-fixture.secret.asc";

/// Run with a private auth file (never the user's `~/.docker/config.json`).
fn run(home: &Home, args: &[&str]) -> Output {
    home.cmd()
        .env("REGISTRY_AUTH_FILE", home.dir.path().join("auth.json"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(home: &Home, args: &[&str]) -> String {
    let o = run(home, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn ok_json(home: &Home, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(home, &a)).unwrap()
}

fn check_greet(root: &Path) {
    let o = Command::new(prefix_of(root, "greet").join("bin/greet"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("Hello from libgreet 1.2.0!\ngreet 2.1.0\n"),
        "{out}"
    );
    let p = prefix_of(root, "greet");
    assert!(
        out.contains(&format!("{}/share/greet", &s(&p)[1..])),
        "{out}"
    );
}

fn image_tag(name: &str, version: &str, hash: &str) -> String {
    format!("{name}-{version}-{hash}.spack")
}

fn skopeo(reg: &Registry, args: &[&str]) -> Output {
    let mut c = Command::new("skopeo");
    let flags = reg.skopeo_flags();
    let sub = args[0];
    c.arg(sub);
    for f in &flags {
        // `copy` names its flags per side (the source here).
        if sub == "copy" {
            c.arg(f.replacen("--", "--src-", 1));
        } else {
            c.arg(f);
        }
    }
    c.args(&args[1..]);
    c.output().unwrap()
}

/// A client on the registry for the hostile steps (pushing what sf-cache never would).
fn client(reg: &Registry, repo: &str) -> sf_cache::store::oci::OciClient {
    sf_cache::store::oci::OciClient::open(
        "http",
        &format!("127.0.0.1:{}", reg.port),
        repo,
        &Default::default(),
        &Default::default(),
    )
    .unwrap()
}

/// The image manifest under `tag`, as JSON.
async fn manifest_json(c: &sf_cache::store::oci::OciClient, tag: &str) -> Value {
    let m = c.get_manifest(tag).await.unwrap().unwrap();
    serde_json::from_slice(&m.bytes).unwrap()
}

/// Put `m` under `tag` as an OCI image manifest.
async fn put_manifest_json(c: &sf_cache::store::oci::OciClient, tag: &str, m: &Value) {
    c.put_manifest(
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(m).unwrap().into(),
    )
    .await
    .unwrap();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn fixture_blob_exists(hex: &str) -> bool {
    fx(&format!("spack-v3/blobs/sha256/{}/{hex}", &hex[..2])).is_file()
}

#[test]
fn fixtures_round_trip_through_a_registry_signed_and_checked_by_skopeo() {
    let reg = Registry::start(Options::default());
    let url = reg.url("fixtures");
    let home = Home::trusting();

    let first = ok_json(&home, &["mirror", s(&fx("spack-v3")), &url]);
    assert_eq!(first["specs"], 3, "{first}");
    assert_eq!(first["blobs_copied"], 6, "{first}");
    let fpr = fixture_fingerprint();
    let mut want = vec![
        "index.spack".to_string(),
        "key-keys".to_string(),
        format!("key-{fpr}.key"),
    ];
    for (n, v, h) in [
        ("greet", "2.1.0", V3_GREET),
        ("libgreet", "1.2.0", V3_LIBGREET),
        ("compiler-wrapper", "1.0", V3_WRAPPER),
    ] {
        want.push(image_tag(n, v, h));
        want.push(format!("{}.sig", image_tag(n, v, h)));
    }
    want.sort();
    assert_eq!(reg.tags("fixtures"), want);

    // A re-run pushes nothing: no upload, no manifest.
    let (uploads, manifests) = (
        reg.requests("POST", "/blobs/uploads/"),
        reg.requests("PUT", "/manifests/"),
    );
    let again = ok_json(&home, &["mirror", s(&fx("spack-v3")), &url]);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(
        (
            reg.requests("POST", "/blobs/uploads/"),
            reg.requests("PUT", "/manifests/")
        ),
        (uploads, manifests),
        "{}",
        reg.log()
    );

    // A new user trusts the keys the registry publishes, installs, and the signature is checked.
    let user = Home::new();
    let o = run(&user, &["keys", "trust-mirror", &url, "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&fpr), "{}", stdout(&o));
    let root = user.dir.path().join("root");
    let r = ok_json(
        &user,
        &["install", "greet", "--mirror", &url, "--root", s(&root)],
    );
    assert!(r.to_string().contains(V3_GREET), "{r}");
    check_greet(&root);
    let v = ok_json(&user, &["show", "greet", "--mirror", &url]);
    assert!(v.to_string().contains(&fpr), "the signer is reported: {v}");

    // Registry → directory, then again: the second copies nothing.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("copy");
    let one = ok_json(&home, &["mirror", &url, s(&d)]);
    assert_eq!(one["specs"], 3, "{one}");
    let two = ok_json(&home, &["mirror", &url, s(&d)]);
    assert_eq!(two["blobs_copied"], 0, "{two}");
    let root2 = dir.path().join("root2");
    ok(
        &home,
        &["install", "greet", "--mirror", s(&d), "--root", s(&root2)],
    );
    check_greet(&root2);

    // Registry → one offline bundle → install.
    let bundle = dir.path().join("fixtures.sfbundle");
    ok(&home, &["mirror", &url, "--bundle", s(&bundle)]);
    let root4 = dir.path().join("root4");
    ok(
        &user,
        &[
            "install",
            "greet",
            "--mirror",
            s(&bundle),
            "--root",
            s(&root4),
        ],
    );
    check_greet(&root4);

    // Another repository of the same registry: the tarballs are mounted, never downloaded.
    let (tar_hex, _) = manifest_blob(
        &greet_manifest(&fx("spack-v3")),
        "application/vnd.spack.install",
    );
    let pulled = |r: &Registry| r.requests("GET", &format!("/v2/fixtures/blobs/sha256:{tar_hex}"));
    let before = pulled(&reg);
    let copy_url = reg.url("fixtures-copy");
    let c = ok_json(&home, &["mirror", &url, &copy_url]);
    assert_eq!(c["specs"], 3, "{c}");
    assert_eq!(
        pulled(&reg),
        before,
        "greet's tarball was downloaded instead of mounted"
    );
    assert!(reg.requests("POST", "mount=sha256") >= 3, "{}", reg.log());
    let root3 = dir.path().join("root3");
    ok(
        &user,
        &[
            "install",
            "greet",
            "--mirror",
            &copy_url,
            "--root",
            s(&root3),
        ],
    );
    check_greet(&root3);

    // skopeo reads every image: manifest, config (the spec), and a copy whose layers are the v3 blobs.
    for (n, v, h) in [
        ("greet", "2.1.0", V3_GREET),
        ("libgreet", "1.2.0", V3_LIBGREET),
    ] {
        let tag = image_tag(n, v, h);
        let o = skopeo(
            &reg,
            &[
                "inspect",
                "--config",
                "--raw",
                &reg.reference("fixtures", &tag),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let config: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(config["spec"]["nodes"][0]["hash"], h, "{config}");
        assert_eq!(config["buildcache_layout_version"], 3);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        let o = skopeo(
            &reg,
            &["inspect", "--raw", &reg.reference("fixtures", &tag)],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let m: Value = serde_json::from_slice(&o.stdout).unwrap();
        let layers = m["layers"].as_array().unwrap();
        // greet's image holds libgreet's layer first (its link dependency), then its own.
        assert_eq!(layers.len(), if n == "greet" { 2 } else { 1 }, "{m}");
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().unwrap().len(),
            layers.len()
        );
        let out = tempfile::tempdir().unwrap();
        let o = skopeo(
            &reg,
            &[
                "copy",
                &reg.reference("fixtures", &tag),
                &format!("dir:{}", s(out.path())),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        for l in layers {
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            assert!(fixture_blob_exists(hex), "{hex} is a v3 blob");
            let copied = std::fs::read(out.path().join(hex)).unwrap();
            let v3 =
                std::fs::read(fx(&format!("spack-v3/blobs/sha256/{}/{hex}", &hex[..2]))).unwrap();
            assert_eq!(copied, v3);
        }
    }
}

#[test]
fn unsigned_images_need_allow_unsigned_and_tampering_is_refused() {
    let reg = Registry::start(Options::default());
    let url = reg.url("spackstyle");
    let home = Home::trusting();
    ok(&home, &["mirror", s(&fx("spack-v3")), &url]);
    let greet_tag = image_tag("greet", "2.1.0", V3_GREET);
    let c = client(&reg, "spackstyle");

    // A signature document whose text was changed: a BAD signature, exit 3.
    let sig_tag = format!("{greet_tag}.sig");
    let (sig_manifest, doc) = block_on(async {
        let v = manifest_json(&c, &sig_tag).await;
        let d = v["layers"][0]["digest"].as_str().unwrap().to_string();
        (v, c.get_blob_bytes(&d).await.unwrap())
    });
    let text = String::from_utf8(doc.to_vec()).unwrap();
    let forged = text.replacen("\"contentLength\":", "\"contentLength\": ", 1);
    assert_ne!(forged, text);
    block_on(async {
        let digest = format!("sha256:{}", sha256_hex(forged.as_bytes()));
        c.put_blob_bytes(&digest, forged.clone().into())
            .await
            .unwrap();
        let mut m = sig_manifest.clone();
        m["layers"][0]["digest"] = digest.into();
        m["layers"][0]["size"] = forged.len().into();
        put_manifest_json(&c, &sig_tag, &m).await;
    });
    let root = home.dir.path().join("r0");
    let o = run(
        &home,
        &["install", "greet", "--mirror", &url, "--root", s(&root)],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("BAD signature"), "{}", stderr(&o));
    assert!(!root.join(format!("greet-2.1.0-{V3_GREET}")).exists());

    // What Spack pushes has no signature documents: refused unless asked for by name.
    for tag in reg
        .tags("spackstyle")
        .iter()
        .filter(|t| t.ends_with(".sig"))
    {
        let o = skopeo(&reg, &["delete", &reg.reference("spackstyle", tag)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let fresh = Home::trusting();
    let root = fresh.dir.path().join("r1");
    let o = run(
        &fresh,
        &["install", "greet", "--mirror", &url, "--root", s(&root)],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is not signed") && err.contains("--allow-unsigned"),
        "{err}"
    );
    ok(
        &fresh,
        &[
            "install",
            "greet",
            "--mirror",
            &url,
            "--root",
            s(&root),
            "--allow-unsigned",
        ],
    );
    check_greet(&root);

    // A layer swapped under the tag (libgreet's tarball as greet's) is refused: the config's
    // checksum no longer names the last layer.
    let lib_tag = image_tag("libgreet", "1.2.0", V3_LIBGREET);
    block_on(async {
        let lib = manifest_json(&c, &lib_tag).await;
        let mut g = manifest_json(&c, &greet_tag).await;
        let n = g["layers"].as_array().unwrap().len();
        g["layers"][n - 1] = lib["layers"][0].clone();
        put_manifest_json(&c, &greet_tag, &g).await;
    });
    let other = Home::trusting();
    let root = other.dir.path().join("r2");
    let o = run(
        &other,
        &[
            "install",
            "greet",
            "--mirror",
            &url,
            "--root",
            s(&root),
            "--allow-unsigned",
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("tampered"), "{}", stderr(&o));
    assert!(!root.join(format!("greet-2.1.0-{V3_GREET}")).exists());
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn publish_and_update_index_into_a_registry() {
    let reg = Registry::start(Options::default());
    let url = reg.url("team/published");
    let home = Home::trusting();
    let root = home.dir.path().join("root");
    install_fixture(&home, "greet", "spack-v3", &root);
    let r = ok_json(
        &home,
        &[
            "publish",
            s(&prefix_of(&root, "greet")),
            "--to",
            &url,
            "--key",
            s(&fx(SECRET)),
            "--with-deps",
        ],
    );
    assert!(r.to_string().contains(V3_GREET), "{r}");
    let user = Home::trusting();
    let root2 = user.dir.path().join("r2");
    ok(
        &user,
        &["install", "greet", "--mirror", &url, "--root", s(&root2)],
    );
    check_greet(&root2);

    // Without its index the registry is refused by name, and update-index rebuilds it.
    let o = skopeo(
        &reg,
        &["delete", &reg.reference("team/published", "index.spack")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&user, &["list", "--mirror", &url]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("index.spack"), "{}", stderr(&o));
    assert!(stderr(&o).contains("update-index"), "{}", stderr(&o));
    ok(&home, &["update-index", &url]);
    let listed = ok(&user, &["list", "--mirror", &url]);
    assert!(
        listed.contains("greet") && listed.contains("libgreet"),
        "{listed}"
    );
}

#[test]
fn tls_with_a_private_ca_and_basic_auth_from_the_auth_file() {
    let reg = Registry::start(Options {
        tls: true,
        auth: true,
        ..Options::default()
    });
    let url = reg.url("secure");
    let home = Home::trusting();
    let ca = reg.ca();

    // No CA: the certificate is refused.
    let o = run(
        &home,
        &["--retries", "0", "mirror", s(&fx("spack-v3")), &url],
    );
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );

    // No credentials: a 401 that names the auth file to use.
    let o = run(
        &home,
        &["--ca-cert", s(&ca), "mirror", s(&fx("spack-v3")), &url],
    );
    assert_ne!(code(&o), 0);
    let err = stderr(&o);
    assert!(err.contains("401") && err.contains("auth.json"), "{err}");
    assert!(err.contains("REGISTRY_AUTH_FILE"), "{err}");

    // Wrong password: refused, and never printed.
    reg.auth_file(&home.dir.path().join("auth.json"), "wrong-password");
    let o = run(
        &home,
        &["-v", "--ca-cert", s(&ca), "list", "--mirror", &url],
    );
    assert_ne!(code(&o), 0);
    assert!(!stderr(&o).contains("wrong-password") && !stdout(&o).contains("wrong-password"));

    reg.auth_file(&home.dir.path().join("auth.json"), PASSWORD);
    let o = run(
        &home,
        &[
            "-v",
            "--ca-cert",
            s(&ca),
            "mirror",
            s(&fx("spack-v3")),
            &url,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains(PASSWORD) && !stdout(&o).contains(PASSWORD));
    let root = home.dir.path().join("root");
    ok(
        &home,
        &[
            "--ca-cert",
            s(&ca),
            "install",
            "greet",
            "--mirror",
            &url,
            "--root",
            s(&root),
        ],
    );
    check_greet(&root);
    // skopeo, with its own TLS stack, reads what was pushed.
    let o = skopeo(
        &reg,
        &[
            "inspect",
            &reg.reference("secure", &image_tag("greet", "2.1.0", V3_GREET)),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Credentials from environment variables named in the config, as Spack's
    // --oci-username-variable / --oci-password-variable.
    let cfg = home.dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror]]\nname = \"reg\"\nurl = \"{url}\"\noci_username_variable = \"REG_USER\"\noci_password_variable = \"REG_PASS\"\n"
        ),
    )
    .unwrap();
    let o = home
        .cmd()
        .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
        .env("REG_USER", common::registry::USER)
        .env("REG_PASS", PASSWORD)
        .args([
            "--config",
            s(&cfg),
            "--ca-cert",
            s(&ca),
            "list",
            "--mirror",
            "reg",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("greet"));
}

#[test]
fn a_push_killed_midway_leaves_a_readable_registry_and_a_rerun_completes_it() {
    // A cache with one 24 MiB incompressible file: uploaded in chunks (16 MiB each).
    let home = Home::trusting();
    let root = home.dir.path().join("root");
    install_fixture(&home, "greet", "spack-v3", &root);
    let greet = prefix_of(&root, "greet");
    let mut big = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(greet.join("share/greet/big.bin"), &big).unwrap();
    let local = home.dir.path().join("local-cache");
    ok(
        &home,
        &[
            "publish",
            s(&greet),
            "--to",
            s(&local),
            "--key",
            s(&fx(SECRET)),
            "--with-deps",
            "--include-untracked",
        ],
    );

    let reg = Registry::start(Options::default());
    let url = reg.url("killed");
    let mut child = home
        .std_cmd()
        .env("REGISTRY_AUTH_FILE", home.dir.path().join("auth.json"))
        .args(["-q", "mirror", "--jobs", "1", s(&local), &url])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reg.requests("PATCH", "/blobs/uploads/") == 0 && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        reg.requests("PATCH", "/blobs/uploads/") > 0,
        "the large blob went up in chunks: {}",
        reg.log()
    );

    // Whatever the registry holds now is read cleanly: either no index yet (a clear refusal)
    // or a complete one.
    let o = run(&home, &["list", "--mirror", &url]);
    if !o.status.success() {
        assert!(stderr(&o).contains("index.spack"), "{}", stderr(&o));
    }
    let r = ok_json(&home, &["mirror", s(&local), &url]);
    assert_eq!(r["specs"], 2, "{r}");
    let user = Home::trusting();
    let root2 = user.dir.path().join("r2");
    ok(
        &user,
        &["install", "greet", "--mirror", &url, "--root", s(&root2)],
    );
    check_greet(&root2);
    assert_eq!(
        std::fs::read(prefix_of(&root2, "greet").join("share/greet/big.bin")).unwrap(),
        big
    );
    let again = ok_json(&home, &["mirror", s(&local), &url]);
    assert_eq!(again["blobs_copied"], 0, "{again}");
}

#[test]
fn bearer_tokens_from_the_registrys_token_service_are_fetched_once_per_scope() {
    let tokens = tempfile::tempdir().unwrap();
    let (cert, answer) = common::registry::token_service_answer(tokens.path(), "bearer");
    std::fs::write(tokens.path().join("token"), &answer).unwrap();
    let service = common::HttpServer::start(tokens.path());
    let reg = Registry::start(Options {
        token: Some((service.url("/token"), cert)),
        ..Options::default()
    });
    let url = reg.url("bearer");
    let home = Home::trusting();
    // Anonymous requests are refused with a Bearer challenge; the token answers them.
    let r = ok_json(&home, &["mirror", s(&fx("spack-v3")), &url]);
    assert_eq!(r["specs"], 3, "{r}");
    let fetched = service.requests("/token");
    assert!(fetched >= 1, "the token service was asked");
    // One token per scope (pull; pull,push), not one per request: dozens of requests were made.
    assert!(fetched <= 3, "{fetched} token requests");
    assert!(reg.requests("PUT", "/manifests/") >= 6);
    let root = home.dir.path().join("root");
    ok(
        &home,
        &["install", "greet", "--mirror", &url, "--root", s(&root)],
    );
    check_greet(&root);
    let log = service.log();
    let q = log.iter().find(|r| r.path == "/token").unwrap();
    assert!(
        q.target.contains("service=sf-test-registry")
            && q.target.contains("scope=repository%3Abearer%3Apull"),
        "{}",
        q.target
    );
}
