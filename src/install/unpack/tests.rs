//! Tests of `install::unpack`: member checks, prefix handling, the stream scan, real fixtures.

use super::*;
use std::os::unix::fs::MetadataExt;
use tar::{EntryType, Header};

// ---------- archive builders ----------

/// One member to put into a synthetic archive; names are written raw (up to 100 bytes) so
/// that hostile names the `tar` crate's builder would refuse can be produced.
enum M<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Raw(&'a [u8], EntryType, u32, &'a [u8], &'a [u8]),
}

fn header(name: &[u8], kind: EntryType, mode: u32, size: u64, link: &[u8]) -> Header {
    let mut h = Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn tar_of(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let (h, data): (Header, &[u8]) = match m {
            M::Dir(n) => (
                header(n.as_bytes(), EntryType::Directory, 0o755, 0, b""),
                b"",
            ),
            M::File(n, d, mode) => (
                header(n.as_bytes(), EntryType::Regular, *mode, d.len() as u64, b""),
                d,
            ),
            M::Sym(n, t) => (
                header(n.as_bytes(), EntryType::Symlink, 0o777, 0, t.as_bytes()),
                b"",
            ),
            M::Hard(n, t) => (
                header(n.as_bytes(), EntryType::Link, 0o644, 0, t.as_bytes()),
                b"",
            ),
            M::Raw(n, kind, mode, link, d) => (header(n, *kind, *mode, d.len() as u64, link), d),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const P: &str = "opt/store/linux-x86_64/pkg-1.0-abcdef";
const BD: &[u8] = b"{sbang_install_path: /opt/store/bin/sbang, buildpath: /opt/store, \
    spackprefix: /spack, relative_prefix: linux-x86_64/pkg-1.0-abcdef, hardlinks_deduped: true, \
    hash_to_prefix: {abcdef: /opt/store/linux-x86_64/pkg-1.0-abcdef}, relocate_binaries: [], \
    relocate_links: [], relocate_textfiles: [share/a.txt]}";

fn p(rel: &str) -> String {
    format!("{P}/{rel}")
}

/// A well-formed format-2 package: parents, prefix, `.spack/`, `extra` members, buildinfo last.
fn package(extra: &[M]) -> Vec<u8> {
    let (bd, spack, share) = (p(".spack/binary_distribution"), p(".spack/"), p("share/"));
    let a = p("share/a.txt");
    let mut members = vec![
        M::Dir("opt/"),
        M::Dir("opt/store/"),
        M::Dir("opt/store/linux-x86_64/"),
        M::Dir("opt/store/linux-x86_64/pkg-1.0-abcdef/"),
        M::Dir(&spack),
        M::Dir(&share),
        M::File(
            &a,
            b"prefix /opt/store/linux-x86_64/pkg-1.0-abcdef here\n",
            0o644,
        ),
    ];
    members.extend(extra.iter().map(|m| match m {
        M::Dir(n) => M::Dir(n),
        M::File(n, d, mo) => M::File(n, d, *mo),
        M::Sym(n, t) => M::Sym(n, t),
        M::Hard(n, t) => M::Hard(n, t),
        M::Raw(n, k, mo, l, d) => M::Raw(n, *k, *mo, l, d),
    }));
    members.push(M::File(&bd, BD, 0o644));
    gz(&tar_of(&members))
}

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    staging: PathBuf,
    outside: PathBuf,
}

/// `root/` holds `stage` (the staging dir, created by unpack) and `outside/` (an existing
/// directory hostile archives aim at).
fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let outside = root.join("outside");
    fs::create_dir(&outside).unwrap();
    Sandbox {
        staging: root.join("stage"),
        root,
        outside,
        _dir: dir,
    }
}

impl Sandbox {
    fn unpack(&self, bytes: &[u8]) -> Result<Unpacked, UnpackError> {
        unpack_tarball(bytes, &self.staging, &UnpackOptions::default())
    }

    /// Nothing but `outside/` (still empty) and no staging dir is left in the root.
    fn assert_clean(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside"],
            "unexpected leftovers in {:?}",
            self.root
        );
        assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 0);
    }
}

// ---------- synthetic archives ----------

#[test]
fn well_formed_package() {
    let sb = sandbox();
    let (hf, hl, sl) = (p("share/b.txt"), p("share/c.txt"), p("share/link"));
    let bytes = package(&[
        M::File(&hf, b"data", 0o755),
        M::Hard(&hl, &hf),
        M::Sym(&sl, "/opt/store/linux-x86_64/pkg-1.0-abcdef/share/a.txt"),
    ]);
    let up = sb.unpack(&bytes).unwrap();
    assert_eq!(up.prefix_in_archive, P);
    assert_eq!(up.buildinfo.buildpath, "/opt/store");
    assert_eq!(up.files_with_prefix, None);
    let paths: Vec<_> = up.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".spack",
            "share",
            "share/a.txt",
            "share/b.txt",
            "share/c.txt",
            "share/link",
            ".spack/binary_distribution"
        ]
    );
    let s = &sb.staging;
    assert_eq!(fs::read(s.join("share/b.txt")).unwrap(), b"data");
    let m = fs::metadata(s.join("share/b.txt")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(m.mtime(), 0);
    assert_eq!(m.ino(), fs::metadata(s.join("share/c.txt")).unwrap().ino());
    let c = &up.files[4];
    assert_eq!(c.kind, FileKind::Hardlink);
    assert_eq!(c.link_target.as_deref(), Some("share/b.txt"));
    assert_eq!(c.sha256, up.files[3].sha256);
    assert_eq!(
        up.files[3].sha256.as_deref(),
        Some("3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7")
    );
    assert_eq!(
        fs::read_link(s.join("share/link")).unwrap(),
        Path::new("/opt/store/linux-x86_64/pkg-1.0-abcdef/share/a.txt")
    );
    // nothing but the package in staging, nothing else next to it
    let mut top: Vec<_> = fs::read_dir(s)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, [".spack", "share"]);
}

#[test]
fn prefix_hint_is_scanned() {
    let sb = sandbox();
    let f = p("share/b.txt");
    let bytes = package(&[M::File(&f, b"no prefix in here", 0o644)]);
    let opts = UnpackOptions {
        allow_setuid: false,
        old_prefix_hint: Some(b"/opt/store/linux-x86_64/pkg-1.0-abcdef".to_vec()),
        ..Default::default()
    };
    let up = unpack_tarball(&bytes[..], &sb.staging, &opts).unwrap();
    // `.spack/binary_distribution` names the prefix too: every regular file is scanned
    assert_eq!(
        up.files_with_prefix.unwrap(),
        ["share/a.txt", ".spack/binary_distribution"]
    );
    assert!(up
        .files
        .iter()
        .all(|f| f.kind != FileKind::File || f.sha256.is_some()));

    // Asked to, the files naming the prefix are left unhashed (the caller hashes them after
    // relocating them); the others keep their digest.
    let sb = sandbox();
    let up = unpack_tarball(
        &bytes[..],
        &sb.staging,
        &UnpackOptions {
            unhashed_when_found: true,
            ..opts
        },
    )
    .unwrap();
    let sha = |rel: &str| {
        up.files
            .iter()
            .find(|f| f.path == rel)
            .unwrap()
            .sha256
            .clone()
    };
    assert_eq!(sha("share/a.txt"), None);
    assert_eq!(sha(".spack/binary_distribution"), None);
    assert_eq!(
        sha("share/b.txt").as_deref(),
        Some(hex::encode(Sha256::digest(b"no prefix in here")).as_str())
    );
}

#[test]
fn format1_without_parents_and_buildinfo_not_last() {
    let sb = sandbox();
    let bytes = gz(&tar_of(&[
        M::Dir("pkg-1.0-abcdef/"),
        M::Dir("pkg-1.0-abcdef/.spack/"),
        M::File("pkg-1.0-abcdef/.spack/binary_distribution", BD, 0o644),
        // no directory entry for bin/: created implicitly
        M::File("pkg-1.0-abcdef/bin/tool", b"#!/bin/sh\n", 0o755),
    ]));
    let up = sb.unpack(&bytes).unwrap();
    assert_eq!(up.prefix_in_archive, "pkg-1.0-abcdef");
    assert!(sb.staging.join("bin/tool").is_file());
    assert!(up
        .files
        .iter()
        .any(|f| f.path == "bin" && f.kind == FileKind::Dir && f.mode == 0o755));
}

#[test]
fn plain_tar_is_accepted() {
    let sb = sandbox();
    let bytes = tar_of(&[
        M::Dir("pkg/"),
        M::Dir("pkg/.spack/"),
        M::File("pkg/.spack/binary_distribution", BD, 0o644),
    ]);
    sb.unpack(&bytes).unwrap();
}

#[test]
fn existing_empty_staging_is_used_and_emptied_on_error() {
    let sb = sandbox();
    fs::create_dir(&sb.staging).unwrap();
    let bad = package(&[M::Raw(
        b"opt/store/x/../../../../outside/f",
        EntryType::Regular,
        0o644,
        b"",
        b"x",
    )]);
    assert!(sb.unpack(&bad).is_err());
    assert_eq!(fs::read_dir(&sb.staging).unwrap().count(), 0);
    sb.unpack(&package(&[])).unwrap();
    let again = sb.unpack(&package(&[]));
    assert!(
        matches!(again, Err(UnpackError::StagingNotEmpty { .. })),
        "{again:?}"
    );
}

#[test]
fn setuid_allowed_when_asked() {
    let sb = sandbox();
    let f = p("bin/su");
    let bytes = package(&[M::File(&f, b"x", 0o4755)]);
    let err = sb.unpack(&bytes).unwrap_err();
    assert!(
        matches!(err, UnpackError::Setuid { mode: 0o4755, .. }),
        "{err}"
    );
    sb.assert_clean();
    let opts = UnpackOptions {
        allow_setuid: true,
        old_prefix_hint: None,
        ..Default::default()
    };
    unpack_tarball(&bytes[..], &sb.staging, &opts).unwrap();
    let mode = fs::metadata(sb.staging.join("bin/su")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o4755);
}

#[test]
fn directory_special_bits_are_dropped() {
    let sb = sandbox();
    let d = p("lib/");
    let bytes = package(&[M::Raw(d.as_bytes(), EntryType::Directory, 0o2755, b"", b"")]);
    sb.unpack(&bytes).unwrap();
    let mode = fs::metadata(sb.staging.join("lib")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o755);
}

/// Each hostile archive is refused with the expected error and leaves nothing behind.
#[test]
fn hostile_archives_are_refused() {
    let sb = sandbox();
    let outside = sb.outside.to_str().unwrap().to_string();
    let outside_file = format!("{outside}/pwned");
    let (lnk, through) = (p("evil"), p("evil/pwned"));
    let (f, h) = (p("share/f"), p("share/h"));
    let later = p("share/later");
    let cases: Vec<(&str, Vec<u8>, ErrCheck)> = vec![
        (
            "dotdot",
            package(&[M::Raw(
                b"opt/../../outside/pwned",
                EntryType::Regular,
                0o644,
                b"",
                b"x",
            )]),
            |e| matches!(e, UnpackError::EscapesPrefix { .. }),
        ),
        (
            "absolute",
            package(&[M::Raw(
                outside_file.as_bytes(),
                EntryType::Regular,
                0o644,
                b"",
                b"x",
            )]),
            |e| matches!(e, UnpackError::AbsoluteName { .. }),
        ),
        (
            "write through symlink",
            package(&[M::Sym(&lnk, &outside), M::File(&through, b"x", 0o644)]),
            |e| matches!(e, UnpackError::ThroughLink { .. }),
        ),
        (
            "overwrite symlink",
            package(&[M::Sym(&lnk, &outside_file), M::File(&lnk, b"x", 0o644)]),
            |e| matches!(e, UnpackError::Duplicate { .. }),
        ),
        (
            "hardlink absolute",
            package(&[M::Hard(&h, &outside_file)]),
            |e| {
                matches!(
                    e,
                    UnpackError::BadHardlink {
                        reason: "is an absolute path",
                        ..
                    }
                )
            },
        ),
        (
            "hardlink dotdot",
            package(&[M::Hard(&h, "opt/../../outside/x")]),
            |e| {
                matches!(
                    e,
                    UnpackError::BadHardlink {
                        reason: "escapes the package prefix",
                        ..
                    }
                )
            },
        ),
        (
            "hardlink to later member",
            package(&[M::Hard(&h, &later), M::File(&later, b"x", 0o644)]),
            |e| matches!(e, UnpackError::BadHardlink { .. }),
        ),
        (
            "hardlink to symlink",
            package(&[M::Sym(&f, "/etc/passwd"), M::Hard(&h, &f)]),
            |e| matches!(e, UnpackError::BadHardlink { .. }),
        ),
        (
            "hardlink to parent dir outside prefix",
            package(&[M::Hard(&h, "opt/store")]),
            |e| matches!(e, UnpackError::BadHardlink { .. }),
        ),
        (
            "char device",
            package(&[M::Raw(f.as_bytes(), EntryType::Char, 0o644, b"", b"")]),
            |e| matches!(e, UnpackError::UnsupportedType { .. }),
        ),
        (
            "block device",
            package(&[M::Raw(f.as_bytes(), EntryType::Block, 0o644, b"", b"")]),
            |e| matches!(e, UnpackError::UnsupportedType { .. }),
        ),
        (
            "fifo",
            package(&[M::Raw(f.as_bytes(), EntryType::Fifo, 0o644, b"", b"")]),
            |e| matches!(e, UnpackError::UnsupportedType { .. }),
        ),
        ("setgid", package(&[M::File(&f, b"x", 0o2755)]), |e| {
            matches!(e, UnpackError::Setuid { .. })
        }),
        (
            "file beside the prefix",
            package(&[M::File("opt/store/other.txt", b"x", 0o644)]),
            |e| matches!(e, UnpackError::OutsidePrefix { .. }),
        ),
        (
            "second top-level tree",
            package(&[M::File("etc/passwd", b"x", 0o644)]),
            |e| matches!(e, UnpackError::OutsidePrefix { .. }),
        ),
        (
            "sibling sharing the prefix as a string",
            package(&[M::File(
                "opt/store/linux-x86_64/pkg-1.0-abcdefX/f",
                b"x",
                0o644,
            )]),
            |e| matches!(e, UnpackError::OutsidePrefix { .. }),
        ),
        (
            "top-level file",
            package(&[M::File("README", b"x", 0o644)]),
            |e| matches!(e, UnpackError::OutsidePrefix { .. }),
        ),
        (
            "duplicate file",
            package(&[M::File(&f, b"x", 0o644), M::File(&f, b"y", 0o644)]),
            |e| matches!(e, UnpackError::Duplicate { .. }),
        ),
        (
            "directory over a file",
            package(&[
                M::File(&f, b"x", 0o644),
                M::File(&through_file(&f), b"y", 0o644),
            ]),
            |e| matches!(e, UnpackError::ThroughLink { .. }),
        ),
        (
            "non-utf8 name",
            package(&[M::Raw(
                b"opt/store/\xff",
                EntryType::Regular,
                0o644,
                b"",
                b"x",
            )]),
            |e| matches!(e, UnpackError::BadName { .. }),
        ),
        (
            "no buildinfo",
            gz(&tar_of(&[M::Dir("pkg/"), M::File("pkg/a", b"x", 0o644)])),
            |e| matches!(e, UnpackError::NotSpackPackage),
        ),
        (
            "buildinfo at top",
            gz(&tar_of(&[
                M::Dir(".spack/"),
                M::File(".spack/binary_distribution", BD, 0o644),
            ])),
            |e| matches!(e, UnpackError::NotSpackPackage),
        ),
        (
            "bad buildinfo",
            gz(&tar_of(&[
                M::Dir("pkg/"),
                M::Dir("pkg/.spack/"),
                M::File("pkg/.spack/binary_distribution", b"[1, 2]", 0o644),
            ])),
            |e| matches!(e, UnpackError::BuildInfo(_)),
        ),
    ];
    for (what, bytes, check) in cases {
        let err = sb.unpack(&bytes).expect_err(what);
        assert!(check(&err), "{what}: unexpected error {err:?}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{what}: multi-line message {msg}");
        sb.assert_clean();
    }
}

type ErrCheck = fn(&UnpackError) -> bool;

fn through_file(f: &str) -> String {
    format!("{f}/sub")
}

#[test]
fn error_message_names_member() {
    let sb = sandbox();
    let bytes = gz(&tar_of(&[M::Raw(
        b"../etc/passwd",
        EntryType::Regular,
        0o644,
        b"",
        b"x",
    )]));
    let msg = sb.unpack(&bytes).unwrap_err().to_string();
    assert_eq!(
        msg,
        "archive member `../etc/passwd` escapes the package prefix; the tarball is hostile or corrupt — refusing it"
    );
    sb.assert_clean();
}

#[test]
fn tar_in_tar_is_recognised() {
    let sb = sandbox();
    let stem = "linux-ubuntu20.04-x86_64-gcc-9.4.0-zlib-1.2.11-abc";
    let inner = gz(&tar_of(&[M::Dir("zlib/")]));
    let (t, s) = (format!("{stem}.tar.gz"), format!("{stem}.spec.json"));
    let outer = tar_of(&[M::File(&t, &inner, 0o644), M::File(&s, b"{}", 0o644)]);
    for bytes in [outer.clone(), gz(&outer)] {
        let err = sb.unpack(&bytes).unwrap_err();
        assert!(matches!(err, UnpackError::TarInTar { .. }), "{err:?}");
        assert!(err.to_string().contains("tar-in-tar"));
        sb.assert_clean();
    }
}

#[test]
fn not_archives() {
    let sb = sandbox();
    assert!(matches!(sb.unpack(b""), Err(UnpackError::Empty)));
    assert!(matches!(
        sb.unpack(b"hello world"),
        Err(UnpackError::NotAnArchive)
    ));
    assert!(matches!(
        sb.unpack(b"BZh91AY&SY..."),
        Err(UnpackError::UnsupportedCompression("bzip2"))
    ));
    assert!(matches!(
        sb.unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
        Err(UnpackError::UnsupportedCompression("zstd"))
    ));
    sb.assert_clean();
}

#[test]
fn truncated_and_corrupt_gzip() {
    let sb = sandbox();
    let bytes = package(&[]);
    for cut in [bytes.len() - 1, bytes.len() - 8, bytes.len() / 2, 20] {
        let err = sb.unpack(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, UnpackError::Corrupt { .. }),
            "cut {cut}: {err:?}"
        );
        sb.assert_clean();
    }
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 6] ^= 0xff; // CRC trailer
    let err = sb.unpack(&flipped).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
    sb.assert_clean();
}

// ---------- streaming search ----------

fn scan_chunks(needle: &[u8], data: &[u8], cuts: &[usize]) -> bool {
    let finder = Finder::new(needle);
    let mut scan = StreamScan::new(&finder);
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(start, data.len());
        scan.feed(&data[start..c]);
        start = c;
    }
    scan.found
}

#[test]
fn stream_scan_across_boundaries() {
    let needle = b"/opt/prefix";
    let data = b"xxxxxxx/opt/prefixyyyy";
    for a in 0..data.len() {
        for b in a..data.len() {
            assert!(scan_chunks(needle, data, &[a, b]), "cuts {a} {b}");
        }
    }
    assert!(!scan_chunks(needle, b"/opt/prefi/opt/prefi", &[10]));
    assert!(scan_chunks(b"z", b"abcz", &[1, 2, 3]));
}

proptest::proptest! {
    #[test]
    fn stream_scan_matches_naive(
        data in proptest::collection::vec(0u8..3, 0..200),
        needle in proptest::collection::vec(0u8..3, 1..6),
        mut cuts in proptest::collection::vec(0usize..200, 0..12),
    ) {
        cuts.sort_unstable();
        let naive = data.windows(needle.len()).any(|w| w == &needle[..]);
        proptest::prop_assert_eq!(scan_chunks(&needle, &data, &cuts), naive);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let sb = sandbox();
        proptest::prop_assert!(sb.unpack(&bytes).is_err());
        let gzipped = gz(&bytes);
        proptest::prop_assert!(sb.unpack(&gzipped).is_err());
        let mut headed = bytes.clone();
        headed.resize(headed.len().max(300), 0);
        headed[257..262].copy_from_slice(b"ustar");
        proptest::prop_assert!(sb.unpack(&gz(&headed)).is_err());
        sb.assert_clean();
    }
}

// ---------- real fixtures ----------

fn fixtures() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SF_FIXTURES").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")),
        Some(PathBuf::from("/work/shared/fixtures")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("spack-v3").is_dir())
}

fn fixtures_or_fail() -> PathBuf {
    fixtures().expect("fixtures not found: set SF_FIXTURES to the shared/fixtures directory")
}

/// `(package name, tarball path)` of every install tarball of a v3 cache, via its manifests.
fn v3_tarballs(cache: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let spec_dir = cache.join("v3/manifests/spec");
    for pkg in fs::read_dir(&spec_dir).unwrap() {
        let pkg = pkg.unwrap();
        for manifest in fs::read_dir(pkg.path()).unwrap() {
            let text = fs::read_to_string(manifest.unwrap().path()).unwrap();
            let body = text.split("-----BEGIN PGP SIGNATURE").next().unwrap();
            let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            for blob in v["data"].as_array().unwrap() {
                if blob["mediaType"].as_str().unwrap().contains(".install.") {
                    let sum = blob["checksum"].as_str().unwrap();
                    let path = cache.join("blobs/sha256").join(&sum[..2]).join(sum);
                    out.push((pkg.file_name().into_string().unwrap(), path));
                }
            }
        }
    }
    out.sort();
    out
}

fn v2_tarballs(cache: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "spack") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&cache.join("build_cache"), &mut paths);
    let mut out: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let dir = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
            let name = dir.rsplit_once('-').unwrap().0.to_string(); // `<name>-<version>`
            (name, p)
        })
        .collect();
    out.sort();
    out
}

/// Independent listing with the `tar` crate: (relative path, kind, mode) of non-directories.
fn listing(tarball: &Path, prefix: &str) -> Vec<(String, FileKind, u32)> {
    let f = File::open(tarball).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let t = e.header().entry_type();
        if t.is_dir() {
            continue;
        }
        let rel = name
            .strip_prefix(&format!("{prefix}/"))
            .unwrap()
            .to_string();
        let kind = if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_hard_link() {
            FileKind::Hardlink
        } else {
            FileKind::File
        };
        let mode = if kind == FileKind::Symlink {
            0o777
        } else {
            e.header().mode().unwrap()
        };
        out.push((rel, kind, mode));
    }
    out
}

fn check_fixture(name: &str, tarball: &Path) -> (Unpacked, Sandbox) {
    let sb = sandbox();
    let up = sb
        .unpack(&fs::read(tarball).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // every non-directory member, in archive order, with its kind and mode
    let mut expected = listing(tarball, &up.prefix_in_archive);
    let mut got: Vec<_> = up
        .files
        .iter()
        .filter(|f| f.kind != FileKind::Dir)
        .map(|f| (f.path.clone(), f.kind, f.mode))
        .collect();
    // hard links report their target's mode
    for e in expected.iter_mut().filter(|e| e.1 == FileKind::Hardlink) {
        e.2 = got.iter().find(|g| g.0 == e.0).map(|g| g.2).unwrap_or(e.2);
    }
    assert_eq!(got, expected, "{name}");
    for f in &up.files {
        let path = sb.staging.join(&f.path);
        let meta = fs::symlink_metadata(&path).unwrap();
        match f.kind {
            FileKind::File | FileKind::Hardlink => {
                assert!(meta.is_file());
                assert_eq!(meta.len(), f.size);
                assert_eq!(meta.mode() & 0o7777, f.mode, "{}", f.path);
                let sum = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
                assert_eq!(f.sha256.as_deref(), Some(sum.as_str()));
            }
            FileKind::Dir => assert!(meta.is_dir()),
            FileKind::Symlink => {
                assert_eq!(
                    fs::read_link(&path).unwrap().to_str(),
                    f.link_target.as_deref()
                );
            }
        }
    }
    // the prefix in the archive is the build-time prefix named by the buildinfo
    let bi = &up.buildinfo;
    assert_eq!(
        format!("/{}", up.prefix_in_archive),
        bi.old_prefix().unwrap(),
        "{name}"
    );
    assert!(bi.hardlinks_deduped);
    let own = bi.hash_to_prefix.as_ref().unwrap();
    assert!(own.iter().any(|(_, pfx)| pfx[1..] == up.prefix_in_archive));
    got.retain(|g| g.1 == FileKind::Symlink);
    (up, sb)
}

fn greet_checks(up: &Unpacked, sb: &Sandbox, spack_dir: &[&str]) {
    let non_dirs: Vec<_> = up
        .files
        .iter()
        .filter(|f| f.kind != FileKind::Dir)
        .map(|f| f.path.as_str())
        .collect();
    let mut expected = vec![
        ".spack/install_environment.json",
        ".spack/install_manifest.json",
        ".spack/install_times.json",
        ".spack/spack-build-env.txt",
        ".spack/spack-build-out.txt.gz",
        ".spack/spec.json",
    ];
    expected.extend_from_slice(spack_dir);
    expected.extend_from_slice(&[
        "bin/greet",
        "bin/greet-abs",
        "bin/greet-wrapper",
        "bin/hello",
        "lib/libgreet-alias.so",
        "libexec/greet/greet-sh",
        "share/greet/message.txt",
        "share/greet/paths-hardlink.txt",
        "share/greet/paths.txt",
        ".spack/binary_distribution",
    ]);
    assert_eq!(non_dirs, expected);
    let rec = |p: &str| up.files.iter().find(|f| f.path == p).unwrap();
    assert_eq!(rec("bin/hello").link_target.as_deref(), Some("greet"));
    let abs = rec("bin/greet-abs").link_target.clone().unwrap();
    assert_eq!(abs, format!("/{}/bin/greet", up.prefix_in_archive));
    let alias = rec("lib/libgreet-alias.so").link_target.clone().unwrap();
    assert!(alias.starts_with("/tmp/sf-fixtures/") && alias.ends_with("/lib/libgreet.so"));
    assert!(alias.contains("/libgreet-1.2.0-"));
    let hl = rec("share/greet/paths.txt");
    assert_eq!(hl.kind, FileKind::Hardlink);
    assert_eq!(
        hl.link_target.as_deref(),
        Some("share/greet/paths-hardlink.txt")
    );
    let ino = |p: &str| fs::metadata(sb.staging.join(p)).unwrap().ino();
    assert_eq!(
        ino("share/greet/paths.txt"),
        ino("share/greet/paths-hardlink.txt")
    );
    assert_eq!(rec("bin/greet").mode, 0o755);
    assert_eq!(rec("libexec/greet/greet-sh").mode, 0o755);
    assert_eq!(rec("share/greet/message.txt").mode, 0o644);
    let bi = &up.buildinfo;
    assert_eq!(
        bi.relocate_binaries,
        ["bin/greet", "libexec/greet/greet-sh"]
    );
    assert_eq!(
        bi.relocate_links,
        ["bin/greet-abs", "lib/libgreet-alias.so"]
    );
    assert_eq!(
        bi.relocate_textfiles,
        ["bin/greet-wrapper", "share/greet/paths-hardlink.txt"]
    );
    assert_eq!(bi.hash_to_prefix.as_ref().unwrap().len(), 2);
    assert!(bi
        .sbang_install_path
        .as_ref()
        .unwrap()
        .ends_with("/opt/bin/sbang"));
}

fn libgreet_checks(up: &Unpacked) {
    let rec = |p: &str| up.files.iter().find(|f| f.path == p).unwrap();
    assert_eq!(
        rec("lib/libgreet.so").link_target.as_deref(),
        Some("libgreet.so.1")
    );
    assert_eq!(
        rec("lib/libgreet.so.1").link_target.as_deref(),
        Some("libgreet.so.1.2.0")
    );
    assert_eq!(rec("lib/libgreet.so.1.2.0").mode, 0o755);
    assert_eq!(rec("include/libgreet.h").mode, 0o644);
    assert_eq!(up.files.last().unwrap().path, ".spack/binary_distribution");
    assert_eq!(up.buildinfo.relocate_binaries, ["lib/libgreet.so.1.2.0"]);
    assert!(up.buildinfo.relocate_links.is_empty());
}

#[test]
fn fixture_v3_tarballs() {
    let root = fixtures_or_fail();
    for cache in ["spack-v3", "spack-v3-unsigned"] {
        let tarballs = v3_tarballs(&root.join(cache));
        let names: Vec<_> = tarballs.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["compiler-wrapper", "greet", "libgreet"]);
        for (name, path) in &tarballs {
            let (up, sb) = check_fixture(name, path);
            match name.as_str() {
                "greet" => greet_checks(
                    &up,
                    &sb,
                    &[
                        ".spack/repos/spack_repo/sfdemo/repo.yaml",
                        ".spack/repos/spack_repo/sfdemo/packages/greet/package.py",
                    ],
                ),
                "libgreet" => libgreet_checks(&up),
                _ => {
                    // compiler-wrapper: many absolute symlinks into its own prefix
                    let own = format!("/{}/", up.prefix_in_archive);
                    assert!(up.files.iter().any(|f| f.kind == FileKind::Symlink
                        && f.link_target
                            .as_deref()
                            .is_some_and(|t| t.starts_with(&own))));
                }
            }
        }
    }
}

#[test]
fn fixture_v2_tarballs() {
    let root = fixtures_or_fail();
    let tarballs = v2_tarballs(&root.join("spack-v2"));
    let names: Vec<_> = tarballs.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["greet", "libgreet"]);
    for (name, path) in &tarballs {
        let (up, sb) = check_fixture(name, path);
        if name == "greet" {
            greet_checks(
                &up,
                &sb,
                &[
                    ".spack/repos/sfdemo/repo.yaml",
                    ".spack/repos/sfdemo/packages/greet/package.py",
                    ".spack/repos/sfdemo/packages/libgreet/package.py",
                ],
            );
        } else {
            libgreet_checks(&up);
        }
    }
}

#[test]
fn fixture_with_prefix_hint_and_truncation() {
    let root = fixtures_or_fail();
    let (_, path) = v3_tarballs(&root.join("spack-v3"))
        .into_iter()
        .find(|t| t.0 == "greet")
        .unwrap();
    let bytes = fs::read(&path).unwrap();
    // learn the old prefix from a first unpack, then scan for it
    let sb = sandbox();
    let first = sb.unpack(&bytes).unwrap();
    let hint = first.buildinfo.old_prefix().unwrap();
    let sb2 = sandbox();
    let opts = UnpackOptions {
        allow_setuid: false,
        old_prefix_hint: Some(hint.into_bytes()),
        ..Default::default()
    };
    let up = unpack_tarball(&bytes[..], &sb2.staging, &opts).unwrap();
    let hits = up.files_with_prefix.unwrap();
    for must in [
        "bin/greet",
        "libexec/greet/greet-sh",
        "bin/greet-wrapper",
        "share/greet/paths-hardlink.txt",
    ] {
        assert!(hits.iter().any(|h| h == must), "{must} not in {hits:?}");
    }
    assert!(!hits.iter().any(|h| h == "share/greet/message.txt"));
    // truncated downloads are refused, nothing left behind
    let sb3 = sandbox();
    for cut in [bytes.len() - 1, bytes.len() * 2 / 3, 100] {
        let err = sb3.unpack(&bytes[..cut]).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
        sb3.assert_clean();
    }
}

// ---------- the writer threads ----------

#[test]
fn a_writer_failure_is_reported_as_itself_and_nothing_is_left() {
    // A name component longer than NAME_MAX passes every check of the reading side; creating the
    // file fails on a writer thread (ENAMETOOLONG). The error names that file, not the writer.
    let sb = sandbox();
    let long = p(&format!("share/{}", "x".repeat(300)));
    let mut b = tar::Builder::new(Vec::new());
    let dirs = [
        "opt/",
        "opt/store/",
        "opt/store/linux-x86_64/",
        &format!("{P}/"),
        &p("share/"),
    ];
    for d in dirs {
        b.append(
            &header(d.as_bytes(), EntryType::Directory, 0o755, 0, b""),
            &b""[..],
        )
        .unwrap();
    }
    let mut add = |name: &str, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    for i in 0..8 {
        add(&p(&format!("share/f{i}")), &vec![b'a'; 300 << 10]);
    }
    add(&long, b"x");
    for i in 8..40 {
        add(&p(&format!("share/f{i}")), &vec![b'b'; 100 << 10]);
    }
    add(&p(".spack/binary_distribution"), BD);
    let bytes = gz(&b.into_inner().unwrap());
    let e = sb.unpack(&bytes).unwrap_err();
    match &e {
        UnpackError::Io { path, .. } => {
            assert!(path.to_string_lossy().ends_with(&"x".repeat(300)), "{e}")
        }
        other => panic!("expected the writer's I/O error, got {other}"),
    }
    sb.assert_clean();
}

#[test]
fn modes_are_exact_whatever_the_umask_and_hard_links_share_the_source() {
    let sb = sandbox();
    let (ro, rw, ex, hl) = (p("share/ro"), p("share/rw"), p("share/ex"), p("share/hl"));
    let (elf, hex_) = (p("lib/libx.so"), p("share/hl-ex"));
    let lib = p("lib/");
    let bytes = package(&[
        M::File(&ro, b"read only", 0o444),
        M::File(&rw, b"group writable", 0o664),
        M::File(&ex, b"#!/bin/sh\n", 0o755),
        M::Hard(&hl, &rw),
        M::Hard(&hex_, &ex),
        M::Dir(&lib),
        M::File(&elf, b"\x7fELF\x02\x01\x01", 0o755),
    ]);
    let up = sb.unpack(&bytes).unwrap();
    // What the post-install steps look at: written files by their first bytes, links left out.
    assert_eq!(up.elf_files, ["lib/libx.so"]);
    assert_eq!(up.script_files, ["share/ex"]);
    let mode = |rel: &str| fs::metadata(sb.staging.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(mode("share/ro"), 0o444);
    assert_eq!(mode("share/rw"), 0o664);
    assert_eq!(mode("share/ex"), 0o755);
    let ino = |rel: &str| fs::metadata(sb.staging.join(rel)).unwrap().ino();
    assert_eq!(ino("share/hl"), ino("share/rw"));
    let rec = |rel: &str| up.files.iter().find(|f| f.path == rel).unwrap().clone();
    assert_eq!(rec("share/hl").sha256, rec("share/rw").sha256);
    assert_eq!(rec("share/hl").size, 14);
    assert_eq!(
        rec("share/rw").sha256.as_deref(),
        Some(hex::encode(Sha256::digest(b"group writable")).as_str())
    );
}

#[test]
fn the_file_counter_is_told_every_few_hundred_members_and_at_the_end() {
    let sb = sandbox();
    let names: Vec<String> = (0..600).map(|i| p(&format!("share/n{i}"))).collect();
    let extra: Vec<M> = names.iter().map(|n| M::File(n, b"x", 0o644)).collect();
    let bytes = package(&extra);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let opts = UnpackOptions {
        on_files: Some(FileCounter::new(move |n| s2.lock().unwrap().push(n))),
        ..Default::default()
    };
    let up = unpack_tarball(&bytes[..], &sb.staging, &opts).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..2], [256, 512]);
    // Every member read, the archive's parents of the prefix included.
    assert_eq!(*seen.last().unwrap(), up.files.len() as u64 + 4);
}
