use super::*;
use crate::relocate::test_support::{
    compile, padded_prefix, readelf_dynamic, readelf_program_headers,
};
use std::process::Command;

const PROG: &str = r#"#include <stdio.h>
static const char *data_dir = "@OLD@/share/data";
int main(void) { puts(data_dir); return 0; }
"#;

fn prog(old: &str) -> String {
    PROG.replace("@OLD@", old)
}

fn run(path: &Path) -> String {
    let out = Command::new(path).output().unwrap();
    assert!(out.status.success(), "{} failed", path.display());
    String::from_utf8(out.stdout).unwrap()
}

fn map1(old: &str, new: &str) -> PrefixMap {
    PrefixMap::from_pairs([(old, new)])
}

fn relocate_all(path: &Path, map: &PrefixMap) {
    relocate_elf_file(path, map).unwrap();
    crate::relocate::binary::relocate_binary_file(path, map).unwrap();
}

#[test]
fn rpath_and_string_relocated_to_shorter_prefix() {
    let d = tempfile::tempdir().unwrap();
    let old = padded_prefix(d.path(), 160);
    let rpath = format!("-Wl,-rpath,{old}/lib:{old}/lib64");
    let exe = compile(
        d.path(),
        "p",
        &prog(&old),
        &[rpath, "-Wl,--disable-new-dtags".into()],
    );
    assert!(readelf_dynamic(&exe).contains(&format!("Library rpath: [{old}/lib:{old}/lib64]")));
    assert_eq!(run(&exe), format!("{old}/share/data\n"));
    let (rp, runpath) = read_rpath(&exe).unwrap().unwrap();
    assert!(!runpath);
    // goblin's full parser agrees with ours
    let data = std::fs::read(&exe).unwrap();
    let g = goblin::elf::Elf::parse(&data).unwrap();
    assert_eq!(g.rpaths, vec![std::str::from_utf8(&rp).unwrap()]);

    let new = format!("{}/n", d.path().display());
    let m = map1(&old, &new);
    relocate_all(&exe, &m);
    let dynamic = readelf_dynamic(&exe);
    assert!(
        dynamic.contains(&format!("Library rpath: [{new}/lib:{new}/lib64]")),
        "{dynamic}"
    );
    let printed = run(&exe);
    assert!(
        printed.ends_with(&format!("{new}/share/data\n")),
        "{printed}"
    );
    assert_eq!(
        printed.trim_start_matches('/'),
        format!("{}/share/data\n", &new[1..])
    );
    // the old string is NUL padded away
    let data = std::fs::read(&exe).unwrap();
    let s = parse_elf_strings(&data, true).unwrap();
    let off = s.rpath.unwrap().offset as usize;
    let old_rpath_len = format!("{old}/lib:{old}/lib64").len();
    let new_rpath = format!("{new}/lib:{new}/lib64");
    assert_eq!(&data[off..off + new_rpath.len()], new_rpath.as_bytes());
    assert!(data[off + new_rpath.len()..=off + old_rpath_len]
        .iter()
        .all(|&b| b == 0));
    // second run: nothing left to do
    assert!(!relocate_elf_file(&exe, &m).unwrap());
}

#[test]
fn runpath_stays_runpath() {
    let d = tempfile::tempdir().unwrap();
    let old = padded_prefix(d.path(), 140);
    let exe = compile(
        d.path(),
        "p",
        &prog(&old),
        &[
            format!("-Wl,-rpath,{old}/lib"),
            "-Wl,--enable-new-dtags".into(),
        ],
    );
    assert!(readelf_dynamic(&exe).contains("Library runpath"));
    let new = format!("{}/short", d.path().display());
    relocate_all(&exe, &map1(&old, &new));
    let dynamic = readelf_dynamic(&exe);
    assert!(
        dynamic.contains(&format!("Library runpath: [{new}/lib]")),
        "{dynamic}"
    );
    assert!(!dynamic.contains("Library rpath"));
    assert!(run(&exe).ends_with(&format!("{new}/share/data\n")));
    assert!(read_rpath(&exe).unwrap().unwrap().1);
}

#[test]
fn empty_entries_dropped_and_unmatched_kept() {
    let d = tempfile::tempdir().unwrap();
    let old = padded_prefix(d.path(), 120);
    let exe = compile(
        d.path(),
        "p",
        &prog("/x"),
        &[
            format!("-Wl,-rpath,$ORIGIN/../lib::{old}/lib:/usr/lib:"),
            "-Wl,--disable-new-dtags".into(),
        ],
    );
    let new = format!("{}/n", d.path().display());
    let m = map1(&old, &new);
    let updates = elf_updates(&std::fs::read(&exe).unwrap(), &m);
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].new,
        format!("$ORIGIN/../lib:{new}/lib:/usr/lib").into_bytes()
    );
    assert!(relocate_elf_file(&exe, &m).unwrap());
    assert_eq!(
        read_rpath(&exe).unwrap().unwrap().0,
        format!("$ORIGIN/../lib:{new}/lib:/usr/lib").into_bytes()
    );
    assert_eq!(run(&exe), "/x/share/data\n");
    // no matching entry: empty entries are NOT dropped (nothing is written)
    let exe2 = compile(
        d.path(),
        "q",
        &prog("/x"),
        &[
            "-Wl,-rpath,/usr/lib::/opt".into(),
            "-Wl,--disable-new-dtags".into(),
        ],
    );
    assert!(!relocate_elf_file(&exe2, &m).unwrap());
    assert_eq!(
        read_rpath(&exe2).unwrap().unwrap().0,
        b"/usr/lib::/opt".to_vec()
    );
}

#[test]
fn longer_rpath_is_an_error_and_file_untouched() {
    let d = tempfile::tempdir().unwrap();
    let old = format!("{}/o", d.path().display());
    let exe = compile(
        d.path(),
        "p",
        &prog("/x"),
        &[
            format!("-Wl,-rpath,{old}/lib"),
            "-Wl,--disable-new-dtags".into(),
        ],
    );
    let before = std::fs::read(&exe).unwrap();
    let new = padded_prefix(d.path(), 150);
    let err = relocate_elf_file(&exe, &map1(&old, &new)).unwrap_err();
    match &err {
        RelocateError::ElfStringTooLong { what, file, .. } => {
            assert_eq!(*what, "rpath");
            assert_eq!(file, &exe);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("shorter root"));
    assert_eq!(std::fs::read(&exe).unwrap(), before);
}

#[test]
fn interpreter_relocated_and_program_runs() {
    let d = tempfile::tempdir().unwrap();
    let plain = compile(d.path(), "plain", &prog("/x"), &[]);
    let Some(loader) = read_interpreter(&plain).unwrap() else {
        return; // static toolchain: nothing to test
    };
    let loader = Path::new(std::ffi::OsStr::from_bytes(&loader)).to_path_buf();
    let (ldir, lname) = (loader.parent().unwrap(), loader.file_name().unwrap());
    let old = padded_prefix(d.path(), 100);
    let exe = compile(
        d.path(),
        "p",
        &prog("/x"),
        &[format!(
            "-Wl,--dynamic-linker={old}/{}",
            lname.to_string_lossy()
        )],
    );
    assert!(readelf_program_headers(&exe).contains(&old));
    assert!(
        Command::new(&exe).output().is_err()
            || !Command::new(&exe).output().unwrap().status.success()
    );
    let m = map1(&old, &ldir.to_string_lossy());
    assert!(relocate_elf_file(&exe, &m).unwrap());
    assert_eq!(
        read_interpreter(&exe).unwrap().unwrap(),
        loader.as_os_str().as_bytes()
    );
    assert!(readelf_program_headers(&exe).contains(&format!(
        "[Requesting program interpreter: {}]",
        loader.display()
    )));
    assert_eq!(run(&exe), "/x/share/data\n");
}

#[test]
fn drop_redundant_rpaths_keeps_origin_and_existing() {
    let d = tempfile::tempdir().unwrap();
    let exists = d.path().join("libdir");
    std::fs::create_dir(&exists).unwrap();
    let dangling = d.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target", &dangling).unwrap();
    let rp = format!(
        "$ORIGIN/../lib:/nonexistent/sf-cache/lib::{}:relative/lib:{}:${{ORIGIN}}",
        exists.display(),
        dangling.display()
    );
    let exe = compile(
        d.path(),
        "p",
        &prog("/x"),
        &[format!("-Wl,-rpath,{rp}"), "-Wl,--disable-new-dtags".into()],
    );
    let RpathChange { old, new } = drop_redundant_rpaths(&exe, &host_lexists).unwrap().unwrap();
    assert_eq!(old, rp.as_bytes());
    let want = format!(
        "$ORIGIN/../lib:{}:{}:${{ORIGIN}}",
        exists.display(),
        dangling.display()
    );
    assert_eq!(new, want.as_bytes());
    assert_eq!(read_rpath(&exe).unwrap().unwrap().0, want.as_bytes());
    assert!(drop_redundant_rpaths(&exe, &host_lexists)
        .unwrap()
        .is_none());
    assert_eq!(run(&exe), "/x/share/data\n");

    // staged lookups: an entry under the final prefix is checked in the staging dir
    let staged = StagedLexists {
        final_prefix: PathBuf::from("/final/prefix"),
        staging: d.path().to_path_buf(),
    };
    assert!(staged.lexists(b"/final/prefix/libdir"));
    assert!(!staged.lexists(b"/final/prefix/nolib"));
    assert!(!staged.lexists(b"/final/prefixlibdir"));
    assert!(staged.lexists(d.path().as_os_str().as_bytes()));

    // tree walk: finds the file, skips non-ELF and symlinks
    std::fs::write(d.path().join("text"), "hello").unwrap();
    let exe2 = compile(
        d.path(),
        "q",
        &prog("/x"),
        &[
            "-Wl,-rpath,/nonexistent/a:/usr".into(),
            "-Wl,--disable-new-dtags".into(),
        ],
    );
    std::os::unix::fs::symlink(&exe2, d.path().join("libdir/link")).unwrap();
    let changed = drop_redundant_rpaths_in_tree(d.path(), &host_lexists).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].0, PathBuf::from("q"));
    assert_eq!(changed[0].1.new, b"/usr".to_vec());
}

#[test]
fn non_elf_and_garbage_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    let m = map1("/a", "/b");
    assert!(!relocate_elf_file(&f, &m).unwrap());
    std::fs::write(&f, b"\x7fELF\x02\x01\x01garbage").unwrap();
    assert!(!relocate_elf_file(&f, &m).unwrap());
    assert!(drop_redundant_rpaths(&f, &host_lexists).unwrap().is_none());
    // an object file (ET_REL) is not relocated by Spack's ELF step
    let obj = d.path().join("o.o");
    std::fs::write(d.path().join("o.c"), "const char *s = \"/a/x\";\n").unwrap();
    assert!(Command::new("cc")
        .arg("-c")
        .arg("-o")
        .arg(&obj)
        .arg(d.path().join("o.c"))
        .status()
        .unwrap()
        .success());
    assert!(parse_elf_strings(&std::fs::read(&obj).unwrap(), true).is_none());
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let mut d = data.clone();
        if d.len() >= 4 { d[..4].copy_from_slice(b"\x7fELF"); }
        let _ = parse_elf_strings(&d, true);
        let _ = elf_updates(&d, &PrefixMap::from_pairs([("/a", "/b")]));
    }

    #[test]
    fn mutated_real_binary_never_panics(idx in 0usize..20000, val in proptest::prelude::any::<u8>()) {
        let mut d = sample_binary().clone();
        let i = idx % d.len();
        d[i] = val;
        let _ = parse_elf_strings(&d, true);
        let _ = elf_updates(&d, &PrefixMap::from_pairs([("/usr", "/u")]));
    }
}

fn sample_binary() -> &'static Vec<u8> {
    static BIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let exe = compile(
            d.path(),
            "s",
            &prog("/usr/share"),
            &[
                "-Wl,-rpath,/usr/lib:/usr/lib64".into(),
                "-Wl,--disable-new-dtags".into(),
            ],
        );
        std::fs::read(exe).unwrap()
    })
}

/// Reading a file region by region parses exactly as reading it whole, for the whole binary,
/// every truncation of it at a few hundred lengths, and mutated copies.
#[test]
fn a_file_read_by_regions_parses_as_the_whole_buffer() {
    let d = tempfile::tempdir().unwrap();
    let whole = sample_binary();
    let check = |bytes: &[u8]| {
        let p = d.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let src = FileSource::new(&f).unwrap();
        assert_eq!(
            parse_elf_strings(&src, true),
            parse_elf_strings(bytes, true),
            "{} bytes",
            bytes.len()
        );
    };
    assert!(parse_elf_strings(&whole[..], true).unwrap().rpath.is_some());
    check(whole);
    let step = (whole.len() / 300).max(1);
    for n in (0..whole.len()).step_by(step) {
        check(&whole[..n]);
    }
    for i in (0..whole.len()).step_by(step * 7) {
        let mut m = whole.clone();
        m[i] ^= 0x5a;
        check(&m);
    }
}
