//! Layout-v3 writer round trip on the real Spack fixtures: unpack a fixture tarball at its original
//! build prefix, pack it again, and compare; write a signed cache and read it back with the read
//! side and with real `gpg`; rebuild indexes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sf_cache::buildcache::buildinfo::BuildInfo;
use sf_cache::buildcache::layout::{self, media};
use sf_cache::buildcache::manifest::Manifest;
use sf_cache::buildcache::writer::{
    pack_prefix, BuildInfoInputs, CacheWriter, EntryOptions, IndexBuilder, Signer,
};
use sf_cache::buildcache::{Catalog, IndexCache, Mirror, TrustContext, VerifiedEntry};
use sf_cache::install::unpack::{unpack_tarball, UnpackOptions};
use sf_cache::spec::SpecFile;
use sf_cache::store::{Store, StoreOptions};
use sf_cache::trust::Keyring;

/// Tests that create the fixtures' build prefixes under /tmp run one at a time.
static PREFIX_LOCK: Mutex<()> = Mutex::new(());

fn fixtures() -> PathBuf {
    if let Ok(p) = std::env::var("SF_FIXTURES") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if local.join("spack-v3").is_dir() {
        return local;
    }
    PathBuf::from("/work/shared/fixtures")
}

fn v3() -> PathBuf {
    fixtures().join("spack-v3")
}

/// Manifest of a fixture package, found by name (never by digest).
fn fixture_manifest(name: &str) -> Manifest {
    let dir = v3().join("v3/manifests/spec").join(name);
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".spec.manifest.json"))
        .unwrap();
    let text = std::fs::read(entry).unwrap();
    let json = sf_cache::trust::extract_cleartext(&text).unwrap_or(text);
    Manifest::parse(&json, name).unwrap()
}

fn fixture_blob(name: &str, media_type: &str) -> Vec<u8> {
    let m = fixture_manifest(name);
    let r = m.data.iter().find(|r| r.media_type == media_type).unwrap();
    std::fs::read(v3().join(r.path())).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
struct Member {
    name: String,
    kind: u8,
    mode: u32,
    size: u64,
    link: Option<String>,
    content: Vec<u8>,
}

fn members(tgz: &[u8]) -> Vec<Member> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        out.push(Member {
            name: String::from_utf8(e.path_bytes().to_vec()).unwrap(),
            kind: h.entry_type().as_byte(),
            mode: h.mode().unwrap(),
            size: h.size().unwrap(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.to_vec()).unwrap()),
            content,
        });
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 0);
    }
    out
}

fn original_buildinfo(ms: &[Member]) -> BuildInfo {
    let last = ms.last().unwrap();
    assert!(last.name.ends_with(".spack/binary_distribution"));
    BuildInfo::parse(&last.content).unwrap()
}

/// Unpack a fixture package at its original build prefix; returns the prefix.
fn unpack_at_build_prefix(name: &str) -> (PathBuf, Vec<u8>) {
    let tgz = fixture_blob(name, media::TARBALL);
    let ms = members(&tgz);
    let bi = original_buildinfo(&ms);
    let prefix = PathBuf::from(bi.old_prefix().unwrap());
    assert!(
        prefix.starts_with("/tmp/"),
        "fixture prefix must be under /tmp"
    );
    if prefix.exists() {
        std::fs::remove_dir_all(&prefix).unwrap();
    }
    std::fs::create_dir_all(prefix.parent().unwrap()).unwrap();
    unpack_tarball(&tgz[..], &prefix, &UnpackOptions::default()).unwrap();
    (prefix, tgz)
}

fn inputs_for(prefix: &Path, original: &BuildInfo) -> BuildInfoInputs {
    let sf = SpecFile::parse(&std::fs::read(prefix.join(".spack/spec.json")).unwrap()).unwrap();
    let mut i = BuildInfoInputs::for_spack_prefix(prefix, &sf, &original.buildpath).unwrap();
    i.spackprefix = original.spackprefix.clone();
    i
}

fn repack_matches_original(name: &str) {
    let _g = PREFIX_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (prefix, tgz) = unpack_at_build_prefix(name);
    let orig = members(&tgz);
    let orig_bi = original_buildinfo(&orig);
    let inputs = inputs_for(&prefix, &orig_bi);
    // Derived inputs equal what Spack wrote.
    assert_eq!(
        Some(inputs.hash_to_prefix.clone()),
        orig_bi.hash_to_prefix,
        "hash_to_prefix"
    );
    assert_eq!(inputs.sbang_install_path, orig_bi.sbang_install_path);

    let mut out = Vec::new();
    let packed = pack_prefix(&prefix, &inputs, &mut out).unwrap();
    assert_eq!(packed.size, out.len() as u64);
    assert_eq!(
        packed.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out))
    );
    assert_eq!(&out[..10], b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff");
    let ours = members(&out);

    // (a) same members, order, types, modes, sizes, link targets and contents (except buildinfo).
    let n = orig.len();
    assert_eq!(ours.len(), n, "member count");
    for (a, b) in ours[..n - 1].iter().zip(&orig[..n - 1]) {
        assert_eq!(a, b, "member {}", b.name);
    }
    assert_eq!(ours[n - 1].name, orig[n - 1].name);
    assert_eq!(ours[n - 1].mode, 0o644);

    // (b) the generated buildinfo equals Spack's, field by field and even byte for byte.
    let ours_bi = original_buildinfo(&ours);
    assert_eq!(ours_bi, packed.buildinfo);
    assert_eq!(ours_bi.relocate_binaries, orig_bi.relocate_binaries);
    assert_eq!(ours_bi.relocate_textfiles, orig_bi.relocate_textfiles);
    assert_eq!(ours_bi.relocate_links, orig_bi.relocate_links);
    assert_eq!(ours_bi.hash_to_prefix, orig_bi.hash_to_prefix);
    assert_eq!(ours_bi, orig_bi);
    assert_eq!(
        String::from_utf8_lossy(&ours[n - 1].content),
        String::from_utf8_lossy(&orig[n - 1].content)
    );

    // Reproducible: packing again gives the same bytes.
    let mut again = Vec::new();
    pack_prefix(&prefix, &inputs, &mut again).unwrap();
    assert_eq!(again, out);
    std::fs::remove_dir_all(&prefix).unwrap();
}

#[test]
fn repack_greet_matches_spack() {
    repack_matches_original("greet");
}

#[test]
fn repack_libgreet_matches_spack() {
    repack_matches_original("libgreet");
}

struct GpgHome(tempfile::TempDir);

impl GpgHome {
    fn new() -> Self {
        GpgHome(
            tempfile::Builder::new()
                .prefix("sfgpg")
                .tempdir_in("/tmp")
                .unwrap(),
        )
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.0.path())
            .args(["--batch", "--no-tty", "--quiet"]);
        c
    }
    fn verify(&self, text: &[u8]) -> bool {
        let f = self.0.path().join("msg.asc");
        std::fs::write(&f, text).unwrap();
        let o = self.cmd().arg("--verify").arg(&f).output().unwrap();
        o.status.success()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.0.path())
            .args(["--kill", "all"])
            .output();
    }
}

fn mirror(dir: &Path) -> Mirror {
    let loc = dir.to_str().unwrap();
    Mirror::new(
        "written",
        Store::open(loc, &StoreOptions::default()).unwrap(),
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_cache_reads_back_and_gpg_verifies() {
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let secret = std::fs::read(fixtures().join("keys/sf-cache-fixture.secret.asc")).unwrap();
    let signer = Signer::from_secret_armored(&secret, None).unwrap();
    let writer = CacheWriter::new(store).with_signer(signer.clone());

    let mut written = Vec::new();
    let mut dag_hashes = std::collections::BTreeSet::new();
    for name in ["libgreet", "greet"] {
        let (prefix, tgz) = {
            let _g = PREFIX_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            unpack_at_build_prefix(name)
        };
        let orig_bi = original_buildinfo(&members(&tgz));
        let opts = EntryOptions {
            buildinfo: Some(inputs_for(&prefix, &orig_bi)),
            ..Default::default()
        };
        let e = writer.write_entry(&prefix, &opts).await.unwrap();
        assert!(e.signed && e.uploaded);
        for n in &e.raw_nodes {
            dag_hashes.insert(n["hash"].as_str().unwrap().to_string());
        }
        // Writing again without force is a no-op.
        let again = writer.write_entry(&prefix, &opts).await.unwrap();
        assert!(!again.uploaded);
        assert_eq!(again.tarball, e.tarball);
        std::fs::remove_dir_all(&prefix).unwrap();
        written.push(e);
    }
    writer.publish_keys().await.unwrap();
    let summary = writer.write_index(&written).await.unwrap();
    assert_eq!(summary.in_buildcache, 2);
    assert_eq!(summary.records, dag_hashes.len());

    // Layout files.
    let root = cache.path();
    assert_eq!(
        std::fs::read(root.join(layout::V3_LAYOUT_JSON)).unwrap(),
        br#"{"signing": "gpg"}"#
    );
    assert!(root
        .join(layout::v3_key_manifest(&signer.fingerprint))
        .is_file());
    let keys_m = Manifest::parse(
        &std::fs::read(root.join(layout::V3_KEY_INDEX_MANIFEST)).unwrap(),
        "keys",
    )
    .unwrap();
    let key_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(keys_m.data[0].path())).unwrap()).unwrap();
    assert!(key_index["keys"][&signer.fingerprint].is_object());

    // (c) Read back with the read side, signatures required.
    let mut ring = Keyring::default();
    ring.add_armored(
        &std::fs::read(fixtures().join("keys/sf-cache-fixture.pub.asc")).unwrap(),
        "fixture",
    )
    .unwrap();
    let trust = TrustContext::new(ring, false);
    let mirrors = vec![mirror(root)];
    let idx = tempfile::tempdir().unwrap();
    let catalog = Catalog::load(mirrors.clone(), &IndexCache::new(idx.path()))
        .await
        .unwrap();
    let pushed: Vec<_> = catalog
        .entries()
        .iter()
        .filter(|e| e.in_buildcache)
        .collect();
    assert_eq!(pushed.len(), 2);
    for entry in pushed {
        let v = VerifiedEntry::fetch(&mirrors, entry, &trust, &catalog)
            .await
            .unwrap();
        assert_eq!(v.signature.status, "good");
        assert_eq!(
            v.signature.fingerprint.as_deref(),
            Some(signer.fingerprint.as_str())
        );
        assert_eq!(v.specfile.buildcache_layout_version, Some(2));
        let w = written.iter().find(|w| w.hash == entry.spec.hash).unwrap();
        assert_eq!(v.tarball.digest, w.tarball.checksum);
        // The tarball blob unpacks with the install-side unpacker.
        let tgz = std::fs::read(root.join(&v.tarball.path)).unwrap();
        let stage = tempfile::tempdir().unwrap();
        let un =
            unpack_tarball(&tgz[..], &stage.path().join("p"), &UnpackOptions::default()).unwrap();
        assert_eq!(Some(un.buildinfo), w.buildinfo);
    }

    // Real gpg accepts every signed manifest.
    let gpg = GpgHome::new();
    let st = gpg
        .cmd()
        .arg("--import")
        .arg(fixtures().join("keys/sf-cache-fixture.pub.asc"))
        .output()
        .unwrap();
    assert!(st.status.success());
    for w in &written {
        let text = std::fs::read(root.join(&w.manifest_path)).unwrap();
        assert!(text.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----"));
        assert!(gpg.verify(&text), "gpg rejects {}", w.manifest_path);
    }

    // (d) update_index over the written cache: exactly the DAG nodes, right flags.
    let before = std::fs::read(root.join(layout::V3_INDEX_MANIFEST)).unwrap();
    let summary2 = writer.update_index().await.unwrap();
    let after = std::fs::read(root.join(layout::V3_INDEX_MANIFEST)).unwrap();
    assert_eq!(before, after, "update_index reproduces write_index");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(summary2.blob.path())).unwrap()).unwrap();
    let installs = index["database"]["installs"].as_object().unwrap();
    let hashes: std::collections::BTreeSet<String> = installs.keys().cloned().collect();
    assert_eq!(hashes, dag_hashes);
    for (h, rec) in installs {
        let expected = written.iter().any(|w| &w.hash == h);
        assert_eq!(rec["in_buildcache"].as_bool(), Some(expected), "{h}");
    }
}

/// update_index over a copy of Spack's own (unsigned) fixture cache, without its index, gives
/// the index Spack wrote (same records, flags and ref counts).
#[tokio::test]
async fn update_index_reproduces_spacks_index() {
    let src = fixtures().join("spack-v3-unsigned");
    let dst = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", src.display()))
        .arg(dst.path())
        .status()
        .unwrap();
    assert!(st.success());
    let orig_m = Manifest::parse(
        &std::fs::read(src.join(layout::V3_INDEX_MANIFEST)).unwrap(),
        "index",
    )
    .unwrap();
    let orig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join(orig_m.data[0].path())).unwrap()).unwrap();
    std::fs::remove_file(dst.path().join(layout::V3_INDEX_MANIFEST)).unwrap();

    let store = Store::open(dst.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let writer = CacheWriter::new(store);
    let s = writer.update_index().await.unwrap();
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.path().join(s.blob.path())).unwrap()).unwrap();
    assert_eq!(ours["database"]["version"], "8");
    assert_eq!(ours, orig);

    // Merge: an extra record in the existing index survives another update (marked not in the
    // buildcache since it has no manifest); pushed records keep their flags.
    let mut ib = IndexBuilder::from_existing(&serde_json::to_vec(&ours).unwrap(), "t").unwrap();
    ib.add_dag(
        &[serde_json::json!({"name":"ghost","version":"1","hash":"ghostghostghostghostghostghostgh"})],
        true,
    );
    let json = ib.to_json();
    let blob = layout::blob_path(
        "sha256",
        &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json)),
    );
    std::fs::create_dir_all(dst.path().join(&blob).parent().unwrap()).unwrap();
    std::fs::write(dst.path().join(&blob), &json).unwrap();
    let m = Manifest {
        version: 3,
        data: vec![sf_cache::buildcache::manifest::BlobRecord {
            content_length: json.len() as u64,
            media_type: media::INDEX.into(),
            compression: "none".into(),
            checksum_algorithm: "sha256".into(),
            checksum: blob.rsplit('/').next().unwrap().into(),
        }],
    };
    std::fs::write(
        dst.path().join(layout::V3_INDEX_MANIFEST),
        m.to_spack_json(),
    )
    .unwrap();
    let s2 = writer.update_index().await.unwrap();
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.path().join(s2.blob.path())).unwrap()).unwrap();
    let inst = merged["database"]["installs"].as_object().unwrap();
    assert_eq!(
        inst.len(),
        orig["database"]["installs"].as_object().unwrap().len() + 1
    );
    assert_eq!(
        inst["ghostghostghostghostghostghostgh"]["in_buildcache"],
        false
    );
    assert_eq!(s2.in_buildcache, s.in_buildcache);
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 64 MiB file (zeros, then a prefix at the very end) is streamed, never buffered whole: it is
/// classified as text containing the prefix (NUL is valid UTF-8, as in Spack), and the peak RSS
/// grows by far less than the file size.
#[test]
fn large_file_streams() {
    let root = tempfile::tempdir().unwrap();
    let buildpath = root.path().join("store");
    let prefix = buildpath.join("linux-x86_64/big-1.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    std::fs::create_dir_all(prefix.join("share")).unwrap();
    std::fs::create_dir_all(prefix.join(".spack")).unwrap();
    let big = prefix.join("share/big.dat");
    let size: u64 = 64 << 20;
    {
        let f = std::fs::File::create(&big).unwrap();
        let tail = format!(" {}/lib", prefix.display());
        f.set_len(size - tail.len() as u64).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(tail.as_bytes()).unwrap();
    }
    std::fs::write(prefix.join(".spack/binary_distribution"), "stale").unwrap();
    let inputs = BuildInfoInputs {
        buildpath: buildpath.to_str().unwrap().into(),
        sbang_install_path: None,
        spackprefix: None,
        hash_to_prefix: vec![(
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            prefix.to_str().unwrap().into(),
        )],
    };
    let hwm_before = vm_hwm_kib();
    let out = tempfile::NamedTempFile::new().unwrap();
    let packed = pack_prefix(
        &prefix,
        &inputs,
        std::io::BufWriter::new(out.reopen().unwrap()),
    )
    .unwrap();
    if let (Some(a), Some(b)) = (hwm_before, vm_hwm_kib()) {
        assert!(
            b.saturating_sub(a) < 32 * 1024,
            "peak RSS grew by {} KiB",
            b - a
        );
    }
    assert_eq!(packed.buildinfo.relocate_textfiles, vec!["share/big.dat"]);
    assert_eq!(packed.size, std::fs::metadata(out.path()).unwrap().len());
    // The archive holds the full file and exactly one (fresh) binary_distribution, last.
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(out.path()).unwrap(),
    ));
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        if name.ends_with("share/big.dat") {
            assert_eq!(e.header().size().unwrap(), size);
        }
        names.push(name);
    }
    assert!(names
        .last()
        .unwrap()
        .ends_with(".spack/binary_distribution"));
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with("binary_distribution"))
            .count(),
        1
    );
}
