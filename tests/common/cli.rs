//! Running the built `sf-cache` binary in a private home, and small helpers over fixture caches.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

pub const V3_GREET: &str = "pgvza7iamblnpepta3jh2thtyfktejqr";
pub const V3_LIBGREET: &str = "2upkbtnnkl4ztegz36plrhvvzftkoxxu";
pub const V3_WRAPPER: &str = "4fghq5ibtjw6ag4knvkpnmu2cdp3bamt";
pub const V2_GREET: &str = "ruqirndwo36kjwhzknomdzk2br25xuso";
pub const V2_LIBGREET: &str = "ytzlrepf63rno4vzg2rr7nhdonfpjum5";

/// A path inside the fixtures.
pub fn fx(rel: &str) -> PathBuf {
    super::fixtures_dir().join(rel)
}

/// A private sf-cache home for one test.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A home that trusts the fixture key.
    pub fn trusting() -> Home {
        let h = Home::new();
        let out = h.run(&[
            "keys",
            "add",
            fx("keys/sf-cache-fixture.pub.asc").to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        h
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sf-cache").unwrap();
        c.env("SF_CACHE_HOME", self.dir.path())
            .env_remove("SF_CACHE_CONFIG")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env("SF_CACHE_HOST_TARGET", "x86_64_v3")
            .env("NO_PROXY", "127.0.0.1,localhost");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// A `std::process::Command` for the binary (for tests that kill it).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("sf-cache"));
        c.env("SF_CACHE_HOME", self.dir.path())
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env("SF_CACHE_HOST_TARGET", "x86_64_v3")
            .env("NO_PROXY", "127.0.0.1,localhost");
        c
    }
}

/// Install `query` from the fixture cache `cache` (e.g. `spack-v3`) into `root`, which must work.
pub fn install_fixture(home: &Home, query: &str, cache: &str, root: &Path) {
    let o = home.run(&[
        "install",
        query,
        "--mirror",
        s(&fx(cache)),
        "--root",
        s(root),
    ]);
    assert!(o.status.success(), "install {query}: {}", stderr(&o));
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parse stdout as JSON, asserting success.
pub fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The fixture key's fingerprint, as gpg reports it.
pub fn fixture_fingerprint() -> String {
    let out = std::process::Command::new("gpg")
        .args(["--show-keys", "--with-colons"])
        .arg(fx("keys/sf-cache-fixture.pub.asc"))
        .output()
        .expect("gpg is needed by the tests (apt-get install gnupg)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("fingerprint in gpg output")
        .to_string()
}

/// The JSON payload of a (possibly clearsigned) v3 manifest file.
pub fn manifest_json(manifest: &Path) -> Value {
    let text = std::fs::read_to_string(manifest).unwrap();
    let start = text
        .find("{\n\"version\"")
        .or_else(|| text.find('{'))
        .unwrap();
    let end = text
        .find("-----BEGIN PGP SIGNATURE-----")
        .unwrap_or(text.len());
    serde_json::from_str(text[start..end].trim()).unwrap()
}

/// The (checksum, size) of the blob with `media_prefix` in a v3 manifest file.
pub fn manifest_blob(manifest: &Path, media_prefix: &str) -> (String, u64) {
    let v = manifest_json(manifest);
    let rec = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mediaType"].as_str().unwrap().starts_with(media_prefix))
        .unwrap();
    (
        rec["checksum"].as_str().unwrap().to_string(),
        rec["contentLength"].as_u64().unwrap(),
    )
}

pub fn greet_manifest(cache: &Path) -> PathBuf {
    cache.join(format!(
        "v3/manifests/spec/greet/greet-2.1.0-{V3_GREET}.spec.manifest.json"
    ))
}

/// The path of the greet install tarball blob in a v3 cache.
pub fn greet_tarball(cache: &Path) -> PathBuf {
    let (d, _) = manifest_blob(&greet_manifest(cache), "application/vnd.spack.install.v");
    cache.join(format!("blobs/sha256/{}/{d}", &d[..2]))
}

/// Copy a fixture cache into a temp dir so a test can damage the copy.
pub fn copy_cache(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    super::copy_tree(&fx(name), dir.path()).unwrap();
    dir
}

pub fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    std::fs::write(path, b).unwrap();
}

/// The installed prefix of package `name` in an sf-cache root with the default projection.
pub fn prefix_of(root: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .unwrap_or_else(|| panic!("{name} not installed in {root:?}"))
}

/// A small synthetic Spack store (`.spack-db/index.json` + prefixes with `.spack/spec.json`), for
/// tests that need many independent packages to publish.
pub fn synthetic_store(dir: &Path, names: &[String]) -> Vec<PathBuf> {
    let store = dir.join("spack-store");
    let mut installs = serde_json::Map::new();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let hash: String = format!("{:a>32}", format!("z{i}"))
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    (b'a' + (c as u8 - b'0')) as char
                } else {
                    c
                }
            })
            .collect();
        let p = store.join(format!("linux-x86_64/{name}-1.0-{hash}"));
        std::fs::create_dir_all(p.join(".spack")).unwrap();
        std::fs::create_dir_all(p.join("share")).unwrap();
        let node = serde_json::json!({
            "name": name, "version": "1.0",
            "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
            "namespace": "builtin", "parameters": {"build_system": "generic"},
            "annotations": {"original_specfile_version": 5},
            "hash": hash,
        });
        std::fs::write(
            p.join(".spack/spec.json"),
            serde_json::to_vec(
                &serde_json::json!({"spec": {"_meta": {"version": 5}, "nodes": [node]}}),
            )
            .unwrap(),
        )
        .unwrap();
        // Some bulk so packing takes a moment.
        let text = format!("{name} lives in {}\n", p.display()).repeat(20_000);
        std::fs::write(p.join("share/data.txt"), text).unwrap();
        installs.insert(
            hash,
            serde_json::json!({"spec": {}, "path": p.to_str().unwrap(), "installed": true}),
        );
        out.push(p);
    }
    std::fs::create_dir_all(store.join(".spack-db")).unwrap();
    std::fs::write(
        store.join(".spack-db/index.json"),
        serde_json::to_vec(
            &serde_json::json!({"database": {"version": "8", "installs": installs}}),
        )
        .unwrap(),
    )
    .unwrap();
    out
}

/// One package of [`spack_store_of`].
#[derive(Debug, Clone)]
pub struct Pkg {
    /// Unique label (two builds of one package need two keys).
    pub key: &'static str,
    pub name: &'static str,
    pub version: &'static str,
    /// Boolean variants, e.g. `("nvml", true)`.
    pub variants: Vec<(&'static str, bool)>,
    /// Keys of link/run dependencies (listed before this package).
    pub deps: Vec<&'static str>,
    /// Built with this gcc (an external build dependency, as in Spack 1.x specs).
    pub gcc: Option<&'static str>,
}

impl Pkg {
    pub fn new(key: &'static str, name: &'static str, version: &'static str) -> Pkg {
        Pkg {
            key,
            name,
            version,
            variants: Vec::new(),
            deps: Vec::new(),
            gcc: None,
        }
    }
    pub fn variant(mut self, name: &'static str, on: bool) -> Pkg {
        self.variants.push((name, on));
        self
    }
    pub fn dep(mut self, key: &'static str) -> Pkg {
        self.deps.push(key);
        self
    }
    pub fn gcc(mut self, version: &'static str) -> Pkg {
        self.gcc = Some(version);
        self
    }
}

/// An installed package of [`spack_store_of`].
#[derive(Debug, Clone)]
pub struct StorePkg {
    pub prefix: PathBuf,
    pub hash: String,
}

/// A synthetic Spack 1.x store whose specs have the names, versions, variants, link/run
/// dependencies and compilers asked for (format-5 nodes with real DAG hashes; the compiler an
/// external `gcc` node). Each prefix holds `bin/<name>-info`, a script that prints the package,
/// its version and its own prefix (so a relocated copy shows where it landed).
pub fn spack_store_of(dir: &Path, pkgs: &[Pkg]) -> std::collections::BTreeMap<String, StorePkg> {
    use serde_json::json;
    let store = dir.join("spack-store");
    let arch = json!({"platform": "linux", "platform_os": "ubuntu24.04", "target": "x86_64"});
    let hash_of = |mut node: Value| -> Value {
        let h = sf_cache::spec::dag_hash::recompute(&node).expect("a format-5 node hashes");
        node["hash"] = Value::String(h);
        node
    };
    // key → (node, every node of its DAG, deps first)
    let mut nodes: std::collections::BTreeMap<&str, (Value, Vec<Value>)> = Default::default();
    let mut out = std::collections::BTreeMap::new();
    let mut installs = serde_json::Map::new();
    for p in pkgs {
        let mut params = serde_json::Map::new();
        params.insert("build_system".into(), json!("generic"));
        for (k, v) in &p.variants {
            params.insert((*k).into(), json!(v));
        }
        let mut edges: Vec<(String, String, Value)> = Vec::new();
        let mut dag: Vec<Value> = Vec::new();
        let add = |n: &Value, dag: &mut Vec<Value>| {
            if !dag.iter().any(|d| d["hash"] == n["hash"]) {
                dag.push(n.clone());
            }
        };
        if let Some(g) = p.gcc {
            let gcc = hash_of(json!({
                "name": "gcc", "version": g, "arch": arch.clone(), "namespace": "builtin",
                "parameters": {"build_system": "autotools", "languages": ["c", "c++"]},
                "external": {"path": "/usr", "module": null, "extra_attributes": {}},
                "annotations": {"original_specfile_version": 5},
            }));
            edges.push((
                "gcc".into(),
                gcc["hash"].as_str().unwrap().into(),
                json!({"deptypes": ["build"], "virtuals": ["c"]}),
            ));
            add(&gcc, &mut dag);
        }
        for d in &p.deps {
            let (dn, ddag) = nodes
                .get(d)
                .unwrap_or_else(|| panic!("{}: dependency {d} must come first", p.key));
            edges.push((
                dn["name"].as_str().unwrap().into(),
                dn["hash"].as_str().unwrap().into(),
                json!({"deptypes": ["link", "run"], "virtuals": []}),
            ));
            for n in ddag {
                add(n, &mut dag);
            }
        }
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        let mut node = serde_json::Map::new();
        node.insert("name".into(), json!(p.name));
        node.insert("version".into(), json!(p.version));
        node.insert("arch".into(), arch.clone());
        node.insert("namespace".into(), json!("builtin"));
        node.insert("parameters".into(), Value::Object(params));
        if !edges.is_empty() {
            node.insert(
                "dependencies".into(),
                Value::Array(
                    edges
                        .into_iter()
                        .map(|(n, h, p)| json!({"name": n, "hash": h, "parameters": p}))
                        .collect(),
                ),
            );
        }
        node.insert(
            "annotations".into(),
            json!({"original_specfile_version": 5}),
        );
        let node = hash_of(Value::Object(node));
        let hash = node["hash"].as_str().unwrap().to_string();
        let prefix = store.join(format!("linux-x86_64/{}-{}-{hash}", p.name, p.version));
        std::fs::create_dir_all(prefix.join(".spack")).unwrap();
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        let mut all = vec![node.clone()];
        all.extend(dag.iter().cloned());
        std::fs::write(
            prefix.join(".spack/spec.json"),
            serde_json::to_vec(&json!({"spec": {"_meta": {"version": 5}, "nodes": all}})).unwrap(),
        )
        .unwrap();
        let script = prefix.join(format!("bin/{}-info", p.name));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{} {} in {}\"\n",
                p.name,
                p.version,
                prefix.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        if p.name == "slurm" {
            // What the Slurm module checks for before it loads.
            let scontrol = prefix.join("bin/scontrol");
            std::fs::write(&scontrol, "#!/bin/sh\necho scontrol\n").unwrap();
            std::fs::set_permissions(&scontrol, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        installs.insert(
            hash.clone(),
            json!({"spec": {}, "path": prefix.to_str().unwrap(), "installed": true}),
        );
        dag.push(node.clone());
        nodes.insert(p.key, (node, dag));
        out.insert(p.key.to_string(), StorePkg { prefix, hash });
    }
    std::fs::create_dir_all(store.join(".spack-db")).unwrap();
    std::fs::write(
        store.join(".spack-db/index.json"),
        serde_json::to_vec(&json!({"database": {"version": "8", "installs": installs}})).unwrap(),
    )
    .unwrap();
    out
}

/// A path as `&str`, for argument lists (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every path below `root` with its content digest, or `-> TARGET` for a symlink; the root's
/// state directory (`.sf-cache*`) is left out.
pub fn tree_digest(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".sf-cache") {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if md.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())),
                );
            }
        }
    }
    out
}

/// A Spack root whose `bin/spack` is the Spack STAND-IN script `tests/data/spack-stand-in`
/// (not Spack: see the script's header), made under `dir`.
pub fn spack_stand_in(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("stand-in-spack");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let target = root.join("bin/spack");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spack-stand-in"),
        &target,
    )
    .unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}
