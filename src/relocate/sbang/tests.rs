use super::*;
use std::process::Command;

fn long_dir(base: &Path, min_len: usize) -> PathBuf {
    let mut p = base.to_path_buf();
    while p.as_os_str().len() < min_len {
        p.push("__spack_path_placeholder__");
    }
    p
}

#[test]
fn limits_and_paths() {
    assert_eq!(SPACK_SHEBANG_LIMIT, 4096);
    #[cfg(target_os = "linux")]
    assert_eq!(SYSTEM_SHEBANG_LIMIT, 127);
    let p = sbang_install_path(Path::new("/opt/r"), 127).unwrap();
    assert_eq!(p, PathBuf::from("/opt/r/bin/sbang"));
    let long = "/x".repeat(70);
    let e = sbang_install_path(Path::new(&long), 127).unwrap_err();
    assert!(matches!(
        e,
        RelocateError::SbangPathTooLong {
            len: 150,
            limit: 127,
            ..
        }
    ));
    assert_eq!(
        sbang_shebang_line(Path::new("/opt/r/bin/sbang")),
        b"#!/bin/sh /opt/r/bin/sbang".to_vec()
    );
}

#[test]
fn interpreter_extraction() {
    assert_eq!(get_interpreter(b"#!/bin/sh -e\n"), Some(&b"/bin/sh"[..]));
    assert_eq!(
        get_interpreter(b"#! \t/usr/bin/env python\n"),
        Some(&b"/usr/bin/env"[..])
    );
    assert_eq!(get_interpreter(b"#!   \n"), None);
    assert_eq!(get_interpreter(b"#!"), None);
    assert_eq!(get_interpreter(b"#!/a\0b"), Some(&b"/a"[..]));
}

#[test]
fn shebang_length_rule_counts_the_newline() {
    let sb = Path::new("/r/bin/sbang");
    // 126 chars + "\n" = 127: fits
    let interp = format!("#!/{}", "a".repeat(123));
    assert_eq!(interp.len(), 126);
    let content = format!("{interp}\necho\n");
    assert!(filter_shebang_bytes(content.as_bytes(), sb, 127).is_none());
    // 127 chars + "\n" = 128: too long
    let interp = format!("#!/{}", "a".repeat(124));
    let content = format!("{interp}\necho\n");
    let out = filter_shebang_bytes(content.as_bytes(), sb, 127).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("#!/bin/sh /r/bin/sbang\n{interp}\necho\n")
    );
    // no newline and shorter than 4096: still patched
    let content = format!("#!/{}", "b".repeat(200));
    assert!(filter_shebang_bytes(content.as_bytes(), sb, 127).is_some());
    // 4096 bytes without newline: left alone
    let content = format!("#!/{}", "b".repeat(5000));
    assert!(filter_shebang_bytes(content.as_bytes(), sb, 127).is_none());
    // exactly 4096 bytes ending in newline: patched
    let content = format!("#!/{}\nrest", "b".repeat(4092));
    assert!(filter_shebang_bytes(content.as_bytes(), sb, 127).is_some());
    // not a shebang, blanks only
    assert!(filter_shebang_bytes(b"echo", sb, 127).is_none());
    let blanks = format!("#!{}\n", " ".repeat(200));
    assert!(filter_shebang_bytes(blanks.as_bytes(), sb, 127).is_none());
    // already the sbang line (long sbang path with a small limit)
    assert!(filter_shebang_bytes(b"#!/bin/sh /r/bin/sbang\n#!/x\n", sb, 10).is_none());
}

#[test]
fn language_specific_second_lines() {
    let sb = Path::new("/r/bin/sbang");
    let long = format!("/{}", "p".repeat(130));
    let f = |interp: &str| {
        let c = format!("#!{long}/bin/{interp} -x\nbody\n");
        String::from_utf8(filter_shebang_bytes(c.as_bytes(), sb, 127).unwrap()).unwrap()
    };
    assert_eq!(
        f("lua"),
        format!("#!/bin/sh /r/bin/sbang\n--!{long}/bin/lua -x\nbody\n")
    );
    assert_eq!(
        f("luajit"),
        format!("#!/bin/sh /r/bin/sbang\n--!{long}/bin/luajit -x\nbody\n")
    );
    assert_eq!(
        f("node"),
        format!("#!/bin/sh /r/bin/sbang\n//!{long}/bin/node -x\nbody\n")
    );
    // Spack quirk: " ?>" comes after the newline of the original line
    assert_eq!(
        f("php"),
        format!("#!/bin/sh /r/bin/sbang\n<?php #!{long}/bin/php -x\n ?>body\n")
    );
    assert_eq!(
        f("perl"),
        format!("#!/bin/sh /r/bin/sbang\n#!{long}/bin/perl -x\nbody\n")
    );
}

#[test]
fn end_to_end_long_shebang_runs_through_sbang() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let sbang = sbang_install_path(&root, SYSTEM_SHEBANG_LIMIT).unwrap();
    assert!(install_sbang(&sbang).unwrap());
    assert!(!install_sbang(&sbang).unwrap());
    assert_eq!(std::fs::read_to_string(&sbang).unwrap(), SBANG_SCRIPT);
    assert_eq!(
        std::fs::metadata(&sbang).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // a real interpreter behind a path longer than the kernel accepts
    let deep = long_dir(&d.path().join("deep"), 300);
    std::fs::create_dir_all(&deep).unwrap();
    std::os::unix::fs::symlink("/bin/sh", deep.join("sh")).unwrap();
    let prefix = d.path().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let script = prefix.join("bin/tool");
    std::fs::write(
        &script,
        format!(
            "#!{}/sh\necho \"args:$#:$1:$2\"\necho \"me:$0\"\n",
            deep.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
    let hard = prefix.join("bin/tool-hardlink");
    std::fs::hard_link(&script, &hard).unwrap();
    std::fs::write(
        prefix.join("bin/not-exec"),
        format!("#!{}/sh\n", deep.display()),
    )
    .unwrap();
    std::os::unix::fs::symlink("tool", prefix.join("bin/tool-link")).unwrap();
    let before = Command::new(&script).arg("a").output();
    assert!(before.is_err() || !before.unwrap().status.success());

    let patched = filter_shebangs_in_tree(&prefix, &sbang, SYSTEM_SHEBANG_LIMIT).unwrap();
    assert_eq!(patched, vec![PathBuf::from("bin/tool")]);
    let text = std::fs::read_to_string(&hard).unwrap();
    assert!(text.starts_with(&format!(
        "#!/bin/sh {}\n#!{}/sh\n",
        sbang.display(),
        deep.display()
    )));
    assert_eq!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let out = Command::new(&script).arg("a b").arg("c").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("args:2:a b:c\nme:{}\n", script.display()));
    // direct use: sbang SCRIPT ARGS
    let out = Command::new("/bin/sh")
        .arg(&sbang)
        .arg(&script)
        .arg("z")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("args:1:z:"));
    // sbang refuses to run itself
    let selfref = prefix.join("bin/selfref");
    std::fs::write(&selfref, format!("#!/bin/sh {0}\n#!{0}\n", sbang.display())).unwrap();
    let out = Command::new("/bin/sh")
        .arg(&sbang)
        .arg(&selfref)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    // missing interpreter line
    let none = prefix.join("bin/none");
    std::fs::write(&none, "echo hi\n").unwrap();
    let out = Command::new("/bin/sh")
        .arg(&sbang)
        .arg(&none)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn perl_gets_dash_x_through_env() {
    // Use a fake "perl" that prints its arguments, reached through /usr/bin/env.
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let perl = bin.join("perl");
    std::fs::write(
        &perl,
        "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&perl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sbang = d.path().join("sbang");
    std::fs::write(&sbang, SBANG_SCRIPT).unwrap();
    let script = d.path().join("s.pl");
    std::fs::write(
        &script,
        format!("#!/bin/sh {}\n#!/usr/bin/env perl -w\n", sbang.display()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("/bin/sh")
        .arg(&sbang)
        .arg(&script)
        .arg("arg 1")
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("[-w][-x][{}][arg 1]", script.display())
    );
}
