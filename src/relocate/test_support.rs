//! Test helpers: compile tiny C programs, run readelf, unpack the fixture tarballs.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A long build-like prefix under `base` (padded with Spack's placeholder), not created.
pub fn padded_prefix(base: &Path, len: usize) -> String {
    let mut s = format!("{}/build", base.display());
    while s.len() < len {
        s.push_str("/__spack_path_placeholder__");
    }
    s.truncate(len);
    while s.ends_with('/') {
        s.pop();
        s.push('_');
    }
    s
}

/// Compile `src` (C) in `dir` to `dir/name` with extra `args`; panics with the compiler output.
pub fn compile(dir: &Path, name: &str, src: &str, args: &[String]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    fs::write(&c, src).unwrap();
    let out = dir.join(name);
    let res = Command::new("cc")
        .arg("-o")
        .arg(&out)
        .arg(&c)
        .args(args)
        .output()
        .expect("the tests need a C compiler `cc` on PATH");
    assert!(
        res.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// `readelf -d` output.
pub fn readelf_dynamic(path: &Path) -> String {
    let res = Command::new("/usr/bin/readelf")
        .arg("-d")
        .arg(path)
        .output()
        .expect("the tests need /usr/bin/readelf (binutils)");
    assert!(res.status.success());
    String::from_utf8_lossy(&res.stdout).into_owned()
}

/// `readelf -l` output (program headers, shows the interpreter).
pub fn readelf_program_headers(path: &Path) -> String {
    let res = Command::new("/usr/bin/readelf")
        .arg("-l")
        .arg(path)
        .output()
        .expect("the tests need /usr/bin/readelf (binutils)");
    String::from_utf8_lossy(&res.stdout).into_owned()
}

pub const FIXTURES: &str = "/work/shared/fixtures";

/// The install tarball blob of `package` in the v3 fixture cache, found through its signed
/// spec manifest (mediaType `application/vnd.spack.install.v2.tar+gzip`).
pub fn v3_tarball(package: &str) -> PathBuf {
    let root = Path::new(FIXTURES).join("spack-v3");
    let mdir = root.join("v3/manifests/spec").join(package);
    let manifest = fs::read_dir(&mdir)
        .unwrap_or_else(|e| panic!("fixture manifests missing at {}: {e}", mdir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".spec.manifest.json"))
        .expect("no spec manifest");
    let text = fs::read_to_string(&manifest).unwrap();
    let start = text.find('{').unwrap();
    let end = text
        .find("-----BEGIN PGP SIGNATURE-----")
        .unwrap_or(text.len());
    let json: serde_json::Value = serde_json::from_str(text[start..end].trim()).unwrap();
    let digest = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mediaType"] == "application/vnd.spack.install.v2.tar+gzip")
        .and_then(|d| d["checksum"].as_str())
        .expect("no install tarball in manifest")
        .to_string();
    root.join("blobs/sha256").join(&digest[..2]).join(&digest)
}

/// Parsed bits of `.spack/binary_distribution`.
#[derive(Debug)]
pub struct Buildinfo {
    pub buildpath: String,
    pub sbang_install_path: String,
    pub hash_to_prefix: Vec<(String, String)>,
    pub textfiles: Vec<String>,
    pub binaries: Vec<String>,
    pub links: Vec<String>,
    pub hardlinks_deduped: bool,
}

fn strs(v: &serde_norway::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|x| x.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Extract the tarball's prefix (the grandparent of `.spack/binary_distribution`) into `dest`
/// (created); returns the buildinfo. Directories, files (with mode), symlinks and hardlinks.
pub fn extract_prefix(tarball: &Path, dest: &Path) -> Buildinfo {
    // First pass: find the archive prefix.
    let open = || {
        let f = fs::File::open(tarball).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(f))
    };
    let mut prefix = None;
    let mut bi_text = String::new();
    for e in open().entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".spack/binary_distribution") {
            let p = Path::new(&name).parent().unwrap().parent().unwrap();
            prefix = Some(p.to_path_buf());
            e.read_to_string(&mut bi_text).unwrap();
        }
    }
    let prefix = prefix.expect("not a Spack package tarball");
    fs::create_dir_all(dest).unwrap();
    for e in open().entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().into_owned();
        let Ok(rel) = name.strip_prefix(&prefix) else {
            continue;
        };
        let out = dest.join(rel);
        let kind = e.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&out).unwrap();
        } else if kind.is_symlink() {
            let target = e.link_name().unwrap().unwrap().into_owned();
            std::os::unix::fs::symlink(target, &out).unwrap();
        } else if kind.is_hard_link() {
            let target = e.link_name().unwrap().unwrap().into_owned();
            let src = dest.join(target.strip_prefix(&prefix).unwrap());
            fs::hard_link(src, &out).unwrap();
        } else if kind.is_file() {
            fs::create_dir_all(out.parent().unwrap()).unwrap();
            e.unpack(&out).unwrap();
        }
    }
    let v: serde_norway::Value = serde_norway::from_str(&bi_text).unwrap();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let hash_to_prefix = v
        .get("hash_to_prefix")
        .and_then(|m| m.as_mapping())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Buildinfo {
        buildpath: s("buildpath"),
        sbang_install_path: s("sbang_install_path"),
        hash_to_prefix,
        textfiles: strs(&v, "relocate_textfiles"),
        binaries: strs(&v, "relocate_binaries"),
        links: strs(&v, "relocate_links"),
        hardlinks_deduped: v
            .get("hardlinks_deduped")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
    }
}
