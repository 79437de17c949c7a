//! Certificates made with the openssl CLI for TLS tests: a CA and a server certificate for
//! 127.0.0.1, or one self-signed certificate (a token signer).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A self-signed RSA certificate for `subject` (`/CN=…`) and its key, valid two days; `extra`
/// goes to `openssl req` as it is (`-addext …`).
pub fn self_signed(key: &Path, cert: &Path, subject: &str, extra: &[&str]) {
    run(std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", subject])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert));
}

pub fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make a CA and a server cert for 127.0.0.1 with the openssl CLI; returns (ca.pem, cert, key).
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    self_signed(
        &p("ca.key"),
        &p("ca.pem"),
        "/CN=sf-cache test CA",
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    run(std::process::Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("srv.key"))
        .arg("-out")
        .arg(p("srv.csr")));
    std::fs::write(
        p("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("srv.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("srv.pem")));
    (p("ca.pem"), p("srv.pem"), p("srv.key"))
}
