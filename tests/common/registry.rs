//! A real OCI registry for one test: Debian's `docker-registry` (the CNCF distribution server)
//! on a free port of 127.0.0.1, with its storage in a temporary directory; optionally over TLS
//! (a CA and a server certificate made here with `openssl`) and with htpasswd basic auth
//! (`htpasswd -B`, from apache2-utils). Stopped when dropped.
//!
//! Tests FAIL (they do not skip) when the programs are missing: `apt-get install docker-registry
//! skopeo apache2-utils openssl` (`.ci/run` does it).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "sfuser";
pub const PASSWORD: &str = "sf-secret-pw";

fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: the OCI tests run a real registry; install it with \
         `apt-get install {package}` (.ci/run does)"
    );
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: bool,
    pub auth: bool,
    child: Child,
}

#[derive(Default, Clone)]
pub struct Options {
    pub tls: bool,
    /// htpasswd basic auth.
    pub auth: bool,
    /// Bearer token auth: (realm URL, PEM certificate whose key signs the tokens).
    pub token: Option<(String, PathBuf)>,
}

/// The service and issuer names a token for [`Options::token`] must carry.
pub const TOKEN_SERVICE: &str = "sf-test-registry";
pub const TOKEN_ISSUER: &str = "sf-test-issuer";

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and certificate in `dir`, and a registry token (RS256 JWT with the
/// certificate in `x5c`) granting pull and push on `repo` for an hour, as a token service
/// answers: `{"token": …, "access_token": …}`. Returns (certificate path, response body).
pub fn token_service_answer(dir: &Path, repo: &str) -> (PathBuf, String) {
    require("openssl", "openssl");
    let key = dir.join("token.key");
    let cert = dir.join("token.pem");
    super::tls::self_signed(&key, &cert, "/CN=sf-cache test token signer", &[]);
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(der.status.success());
    use base64::Engine;
    let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": USER, "aud": TOKEN_SERVICE,
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("sf-{now}"),
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let input = dir.join("token.input");
    std::fs::write(&input, &signing_input).unwrap();
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        sig.status.success(),
        "{}",
        String::from_utf8_lossy(&sig.stderr)
    );
    let jwt = format!("{signing_input}.{}", b64url(&sig.stdout));
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 3600}).to_string();
    (cert, body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(opts: Options) -> Registry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if opts.tls {
            require("openssl", "openssl");
            let (_, cert, key) = super::tls::make_certs(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if opts.auth {
            require("htpasswd", "apache2-utils");
            let o = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .unwrap();
            assert!(o.status.success());
            std::fs::write(dir.path().join("htpasswd"), &o.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: sf-cache-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if let Some((realm, cert)) = &opts.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry {
            dir,
            port,
            tls: opts.tls,
            auth: opts.auth,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on 127.0.0.1:{port}: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// `oci+http://127.0.0.1:PORT/REPO` or `oci://…` over TLS.
    pub fn url(&self, repo: &str) -> String {
        let scheme = if self.tls { "oci" } else { "oci+http" };
        format!("{scheme}://127.0.0.1:{}/{repo}", self.port)
    }

    /// `127.0.0.1:PORT/REPO` (skopeo's `docker://` form).
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo}:{tag}", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests with this method whose path contains `needle`, from the access log.
    pub fn requests(&self, method: &str, needle: &str) -> usize {
        let m = format!("\"{method} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&m) && l.contains(needle))
            .count()
    }

    /// A Docker/Podman auth file holding this registry's credentials.
    pub fn auth_file(&self, path: &Path, password: &str) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        std::fs::write(
            path,
            format!(
                "{{\"auths\": {{\"127.0.0.1:{}\": {{\"auth\": \"{b64}\"}}}}}}",
                self.port
            ),
        )
        .unwrap();
    }

    /// Tags of a repository, through the registry API (plain HTTP, no auth only).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let o = Command::new("skopeo")
            .args(self.skopeo_flags())
            .arg("list-tags")
            .arg(format!("docker://127.0.0.1:{}/{repo}", self.port))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut t: Vec<String> = v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    }

    /// skopeo's flags for this registry (CA or plain HTTP, credentials).
    pub fn skopeo_flags(&self) -> Vec<String> {
        require("skopeo", "skopeo");
        let mut f = Vec::new();
        if self.tls {
            let certs = self.dir.path().join("skopeo-certs");
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::copy(self.ca(), certs.join("ca.crt")).unwrap();
            f.push(format!("--cert-dir={}", certs.display()));
        } else {
            f.push("--tls-verify=false".into());
        }
        if self.auth {
            f.push(format!("--creds={USER}:{PASSWORD}"));
        }
        f
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
