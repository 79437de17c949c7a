//! End-to-end relocation of the real fixture packages (Spack 1.0.2 v3 cache).

use super::test_support::{extract_prefix, readelf_dynamic, v3_tarball, Buildinfo};
use super::*;
use std::process::Command;

struct Installed {
    dir: PathBuf,
    bi: Buildinfo,
}

fn new_prefix_for(bi: &Buildinfo, old_prefix: &str, new_root: &Path) -> PathBuf {
    let rel = old_prefix
        .strip_prefix(&bi.buildpath)
        .expect("prefix under buildpath");
    PathBuf::from(format!("{}{}", new_root.display(), rel))
}

fn lists(bi: &Buildinfo) -> RelocateLists {
    let p = |v: &Vec<String>| v.iter().map(PathBuf::from).collect();
    RelocateLists {
        textfiles: p(&bi.textfiles),
        binaries: p(&bi.binaries),
        links: p(&bi.links),
        hardlinks_deduped: bi.hardlinks_deduped,
    }
}

/// Extract `package` from the fixture cache to its place under `new_root` and relocate it.
fn install(package: &str, new_root: &Path, sbang_root: &Path) -> Result<Installed, RelocateError> {
    let tarball = v3_tarball(package);
    let tmp = new_root.join(".extract").join(package);
    let bi = extract_prefix(&tarball, &tmp);
    // The package's own old prefix is the hash_to_prefix entry whose name matches.
    let (_, own_old) = bi
        .hash_to_prefix
        .iter()
        .find(|(_, p)| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(&format!("{package}-")))
        })
        .expect("own prefix in hash_to_prefix")
        .clone();
    let dir = new_prefix_for(&bi, &own_old, new_root);
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    fs::rename(&tmp, &dir).unwrap();
    let prefixes: Vec<(Vec<u8>, Vec<u8>)> = bi
        .hash_to_prefix
        .iter()
        .map(|(_, old)| {
            let new = new_prefix_for(&bi, old, new_root);
            (
                old.clone().into_bytes(),
                new.as_os_str().as_encoded_bytes().to_vec(),
            )
        })
        .collect();
    let new_sbang = sbang::sbang_install_path(sbang_root, sbang::SYSTEM_SHEBANG_LIMIT)?;
    let map = PrefixMap::for_install(
        bi.buildpath.as_bytes(),
        new_root.as_os_str().as_encoded_bytes(),
        Some(bi.sbang_install_path.as_bytes()),
        new_sbang.as_os_str().as_encoded_bytes(),
        &prefixes,
    );
    assert_eq!(map.entries()[0].0, bi.sbang_install_path.as_bytes());
    assert_eq!(map.entries().last().unwrap().0, bi.buildpath.as_bytes());
    relocate_package(&dir, &map, &lists(&bi))?;
    Ok(Installed { dir, bi })
}

#[test]
fn greet_fixture_relocates_and_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let lib = install("libgreet", &root, &root).unwrap();
    let greet = install("greet", &root, &root).unwrap();
    let old_root = greet.bi.buildpath.clone();

    // ELF: RPATH of bin/greet points at the new prefixes, still DT_RPATH.
    let (rpath, runpath) = elf::read_rpath(&greet.dir.join("bin/greet"))
        .unwrap()
        .unwrap();
    assert!(!runpath);
    let want = format!("{}/lib:{}/lib", greet.dir.display(), lib.dir.display());
    assert_eq!(String::from_utf8(rpath).unwrap(), want);
    assert!(
        readelf_dynamic(&greet.dir.join("bin/greet")).contains(&format!("Library rpath: [{want}]"))
    );
    // goblin agrees
    let data = fs::read(greet.dir.join("bin/greet")).unwrap();
    let g = goblin::elf::Elf::parse(&data).unwrap();
    assert_eq!(g.rpaths, vec![want.as_str()]);

    // links
    assert_eq!(
        fs::read_link(greet.dir.join("bin/greet-abs")).unwrap(),
        greet.dir.join("bin/greet")
    );
    assert_eq!(
        fs::read_link(greet.dir.join("lib/libgreet-alias.so")).unwrap(),
        lib.dir.join("lib/libgreet.so")
    );
    assert_eq!(
        fs::read_link(greet.dir.join("bin/hello")).unwrap(),
        PathBuf::from("greet")
    );

    // text, through the hardlink pair
    let paths = fs::read_to_string(greet.dir.join("share/greet/paths.txt")).unwrap();
    assert_eq!(
        paths,
        fs::read_to_string(greet.dir.join("share/greet/paths-hardlink.txt")).unwrap()
    );
    assert!(!paths.contains(&old_root), "{paths}");
    assert!(paths.contains(&greet.dir.display().to_string()));
    assert!(paths.contains(&lib.dir.display().to_string()));
    let pc = fs::read_to_string(lib.dir.join("lib/pkgconfig/libgreet.pc")).unwrap();
    assert!(
        pc.contains(&format!("prefix={}", lib.dir.display())),
        "{pc}"
    );

    // the sbang line was relocated to the new root
    let wrapper = fs::read_to_string(greet.dir.join("bin/greet-wrapper")).unwrap();
    let sbang_path = root.join("bin/sbang");
    let first = wrapper.lines().next().unwrap();
    assert_eq!(first, format!("#!/bin/sh {}", sbang_path.display()));
    assert!(!wrapper.contains(&old_root));

    // no relocated file still names the build root
    for rel in greet.bi.textfiles.iter().chain(&greet.bi.binaries) {
        let data = fs::read(greet.dir.join(rel)).unwrap();
        assert!(
            memchr::memmem::find(&data, old_root.as_bytes()).is_none(),
            "{rel} still contains the build root"
        );
    }

    // post-install hooks
    elf::drop_redundant_rpaths_in_tree(&greet.dir, &elf::host_lexists).unwrap();
    elf::drop_redundant_rpaths_in_tree(&lib.dir, &elf::host_lexists).unwrap();
    let (rpath, _) = elf::read_rpath(&greet.dir.join("bin/greet"))
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(rpath)
        .unwrap()
        .contains(&format!("{}/lib", lib.dir.display())));
    sbang::install_sbang(&sbang_path).unwrap();
    let patched =
        sbang::filter_shebangs_in_tree(&greet.dir, &sbang_path, sbang::SYSTEM_SHEBANG_LIMIT)
            .unwrap();
    assert!(patched.is_empty(), "{patched:?}");

    // the relocated program runs: finds libgreet through RPATH and its data via the C string
    let out = Command::new(greet.dir.join("bin/greet")).output().unwrap();
    assert!(
        out.status.success(),
        "greet failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // and the script with the relocated sbang line runs through our sbang
    let out = Command::new(greet.dir.join("bin/greet-wrapper"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "greet-wrapper failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn greet_fixture_into_longer_root_fails_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let mut root = d.path().join("r");
    while root.as_os_str().len() < 140 {
        root.push("long-directory-name");
    }
    // the unpadded root (for sbang) stays short, as with Spack's padded install trees
    match install("greet", &root, d.path()) {
        Err(RelocateError::ElfStringTooLong { file, what, .. }) => {
            assert!(file.ends_with("bin/greet") || file.ends_with("libexec/greet/greet-sh"));
            assert_eq!(what, "rpath");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("relocation to a longer root must fail"),
    }
}

#[test]
fn binary_strings_fail_when_only_strings_grow() {
    // strings step alone on the fixture binary: PrefixTooLong names the file and both prefixes
    let d = tempfile::tempdir().unwrap();
    let bi = extract_prefix(&v3_tarball("greet"), d.path());
    let long = format!("{}/{}", bi.buildpath, "x".repeat(10));
    let map = PrefixMap::from_pairs([(bi.buildpath.as_str(), long.as_str())]);
    let f = d.path().join("bin/greet");
    match binary::relocate_binary_file(&f, &map) {
        Err(RelocateError::PrefixTooLong { file, old, new }) => {
            assert_eq!(file, f);
            assert_eq!(old, bi.buildpath);
            assert_eq!(new, long);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn identity_map_is_a_no_op() {
    let d = tempfile::tempdir().unwrap();
    let bi = extract_prefix(&v3_tarball("greet"), d.path());
    let before = fs::read(d.path().join("bin/greet")).unwrap();
    let map = PrefixMap::for_install(
        bi.buildpath.as_bytes(),
        bi.buildpath.as_bytes(),
        Some(bi.sbang_install_path.as_bytes()),
        bi.sbang_install_path.as_bytes(),
        &[],
    );
    assert!(map.is_empty());
    let r = relocate_package(d.path(), &map, &lists(&bi)).unwrap();
    assert_eq!(r, RelocateReport::default());
    assert_eq!(fs::read(d.path().join("bin/greet")).unwrap(), before);
}

#[test]
fn hardlinks_deduped_when_buildinfo_says_not() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("a"), "/old/x\n").unwrap();
    fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
    let map = PrefixMap::from_pairs([("/old", "/n")]);
    let l = RelocateLists {
        textfiles: vec!["a".into(), "b".into()],
        hardlinks_deduped: false,
        ..Default::default()
    };
    let r = relocate_package(d.path(), &map, &l).unwrap();
    assert_eq!(r.text_changed, vec![PathBuf::from("a")]);
    assert_eq!(fs::read_to_string(d.path().join("b")).unwrap(), "/n/x\n");
}
