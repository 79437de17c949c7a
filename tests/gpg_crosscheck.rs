//! Cross-check: for every signed fixture and many tampered copies, sf-cache's verdict
//! (good / not good) equals `gpg --verify`'s exit status (0 / non-zero), with and without the
//! signing key in the keyring. Spack trusts exactly `gpg --verify`, so we must agree with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sf_cache::trust::{Keyring, SignatureStatus};

fn fixtures_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("SF_FIXTURES") {
        candidates.push(PathBuf::from(d));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    candidates.push(PathBuf::from("/work/shared/fixtures"));
    candidates
        .into_iter()
        .find(|p| p.join("keys/sf-cache-fixture.pub.asc").is_file())
        .expect("fixtures not found: set SF_FIXTURES to the shared fixtures directory")
}

fn collect(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

fn signed_files() -> Vec<PathBuf> {
    let f = fixtures_dir();
    let mut out = Vec::new();
    collect(
        &f.join("spack-v3/v3/manifests/spec"),
        ".spec.manifest.json",
        &mut out,
    );
    collect(&f.join("spack-v2/build_cache"), ".spec.json.sig", &mut out);
    out.sort();
    assert!(out.len() >= 5, "signed fixtures missing: {out:?}");
    out
}

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new(key: Option<&Path>) -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("sfx")
            .tempdir_in("/tmp")
            .unwrap();
        let g = Gpg { home };
        if let Some(k) = key {
            let o = g.cmd().arg("--import").arg(k).output().expect("run gpg");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        g
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty"]);
        c
    }
    fn verify(&self, file: &Path) -> (bool, String) {
        let o = self.cmd().arg("--verify").arg(file).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// Tampered variants of a clearsigned text: (name, bytes). All start with the framework header.
fn tampers(text: &str, other_sig_block: &str) -> Vec<(&'static str, String)> {
    let body_start = text.find("\n\n").unwrap() + 2;
    let sig_start = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let crc_at = text.find("\n=").unwrap() + 1;
    let crc_end = crc_at + text[crc_at..].find('\n').unwrap();
    let b64_start = sig_start + text[sig_start..].find("\n\n").unwrap() + 2;
    let body = &text[body_start..sig_start];

    let flip = |s: &str, at: usize| -> String {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8_lossy(&b).into_owned()
    };
    let first_quote = body_start + body.find('"').unwrap() + 1;
    let lines: Vec<&str> = body.lines().collect();
    let mut swapped = lines.clone();
    swapped.swap(1, 2);

    vec![
        ("original", text.to_string()),
        ("body byte", flip(text, first_quote)),
        ("body digit", {
            let i = body_start + body.find(|c: char| c.is_ascii_digit()).unwrap();
            let mut b = text.as_bytes().to_vec();
            b[i] = if b[i] == b'9' { b'1' } else { b[i] + 1 };
            String::from_utf8(b).unwrap()
        }),
        ("signature armor byte", flip(text, b64_start + 90)),
        ("signature armor last line", flip(text, crc_at - 4)),
        ("crc changed", flip(text, crc_at + 2)),
        (
            "crc removed",
            format!("{}{}", &text[..crc_at], &text[crc_end + 1..]),
        ),
        (
            "hash header SHA256",
            text.replacen("Hash: SHA512", "Hash: SHA256", 1),
        ),
        (
            "hash header removed",
            text.replacen("Hash: SHA512\n", "", 1),
        ),
        (
            "hash header list",
            text.replacen("Hash: SHA512", "Hash: SHA256, SHA512", 1),
        ),
        (
            "comment header",
            text.replacen("Hash: SHA512\n", "Hash: SHA512\nComment: x\n", 1),
        ),
        (
            "lowercase header",
            text.replacen("Hash: SHA512", "hash: SHA512", 1),
        ),
        (
            "no blank after headers",
            text.replacen("Hash: SHA512\n\n", "Hash: SHA512\n", 1),
        ),
        ("trailing whitespace", text.replacen(",\n", ", \t \n", 3)),
        ("crlf", text.replace('\n', "\r\n")),
        (
            "dash-escaped line",
            format!("{}- {}", &text[..body_start], &text[body_start..]),
        ),
        ("inserted empty line", text.replacen("{\n", "{\n\n", 1)),
        (
            "blank before signature",
            format!("{}\n{}", &text[..sig_start], &text[sig_start..]),
        ),
        (
            "lines swapped",
            format!(
                "{}{}\n{}",
                &text[..body_start],
                swapped.join("\n"),
                &text[sig_start..]
            ),
        ),
        (
            "final newline removed",
            text.trim_end_matches('\n').to_string(),
        ),
        (
            "end line removed",
            text.replacen("-----END PGP SIGNATURE-----\n", "", 1),
        ),
        ("garbage after end", format!("{text}some trailing words\n")),
        ("second message", format!("{text}{text}")),
        (
            "armor version header",
            text.replacen(
                "-----BEGIN PGP SIGNATURE-----\n",
                "-----BEGIN PGP SIGNATURE-----\nVersion: x\n",
                1,
            ),
        ),
        (
            "truncated body",
            text[..body_start + body.len() / 2].to_string(),
        ),
        ("truncated signature", text[..b64_start + 70].to_string()),
        ("truncated before crc", text[..crc_at].to_string()),
        (
            "other file's signature",
            format!("{}{}", &text[..sig_start], other_sig_block),
        ),
        (
            "empty body",
            format!("{}{}", &text[..body_start], &text[sig_start..]),
        ),
    ]
}

#[test]
fn sequoia_verdict_equals_gpg_exit_status() {
    let fx = fixtures_dir();
    let pubkey = fx.join("keys/sf-cache-fixture.pub.asc");
    let mut with_key = Keyring::default();
    with_key
        .add_armored(&std::fs::read(&pubkey).unwrap(), "fixture")
        .unwrap();
    let without_key = Keyring::default();
    let gpg_with = Gpg::new(Some(&pubkey));
    let gpg_without = Gpg::new(None);

    let files = signed_files();
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let work = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    let mut goods = 0;
    for (i, text) in texts.iter().enumerate() {
        let other = &texts[(i + 1) % texts.len()];
        let other_sig = &other[other.find("-----BEGIN PGP SIGNATURE-----").unwrap()..];
        for (name, variant) in tampers(text, other_sig) {
            assert!(
                name == "original" || variant != *text,
                "tamper {name} changed nothing"
            );
            let path = work
                .path()
                .join(format!("{i}-{}.asc", name.replace(' ', "_")));
            std::fs::write(&path, &variant).unwrap();
            for (keyring, gpg, label) in [
                (&with_key, &gpg_with, "with key"),
                (&without_key, &gpg_without, "without key"),
            ] {
                let v = keyring.verify_cleartext(variant.as_bytes());
                let (gpg_ok, gpg_err) = gpg.verify(&path);
                let ours = v.status == SignatureStatus::Good;
                checked += 1;
                goods += usize::from(ours);
                if ours != gpg_ok {
                    mismatches.push(format!(
                        "{} [{name}, {label}]: sf-cache {:?} ({:?}), gpg {}: {}",
                        files[i].display(),
                        v.status,
                        v.detail,
                        if gpg_ok { "good" } else { "not good" },
                        gpg_err.lines().last().unwrap_or("")
                    ));
                }
                if name == "original" {
                    let want = if label == "with key" {
                        SignatureStatus::Good
                    } else {
                        SignatureStatus::UnknownKey
                    };
                    assert_eq!(v.status, want, "{}", files[i].display());
                }
            }
        }
    }
    eprintln!("{checked} verdicts compared, {goods} good");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} verdicts differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(goods >= files.len());
}
