//! One file per subcommand; this file holds what they share: the context built from global flags
//! and the config, and the error type that carries an exit code.

pub mod build;
pub mod export;
pub mod install;
pub mod install_flow;
pub mod keys;
pub mod lifecycle;
pub mod list;
pub mod mirror;
pub mod module;
pub mod publish;
pub mod relocate;
pub mod roots;
pub mod sbom;
pub mod show;
pub mod slurm;
pub mod source_build;
// Spack sites (issue 14)
pub mod spack_lock;

use std::fmt;
use std::path::PathBuf;

use crate::buildcache::{BuildcacheError, Catalog, IndexCache, Mirror, TrustContext};
use crate::cli::{GlobalArgs, MirrorArgs};
use crate::config::{Config, Paths};
use crate::spec::Query;
use crate::store::StoreOptions;
use crate::trust::{Keyring, UserKeyring};
use crate::ui::Output;

/// Exit codes (documented in the README).
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const VERIFICATION: u8 = 3;
    pub const NO_MATCH: u8 = 4;

    /// The exit code of a library error's kind: the one place kinds become numbers.
    pub fn code(kind: crate::error::ErrorKind) -> u8 {
        use crate::error::ErrorKind;
        match kind {
            ErrorKind::Failure => FAILURE,
            ErrorKind::Usage => USAGE,
            ErrorKind::Verification => VERIFICATION,
            ErrorKind::NoMatch => NO_MATCH,
        }
    }
}

/// A failure with its exit code and one line for the user.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<BuildcacheError> for Failure {
    fn from(e: BuildcacheError) -> Failure {
        Failure {
            code: exit::code(e.kind()),
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        // A closed stdout (`sf-cache list | head`) is not a failure worth a message.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure {
                code: 0,
                message: String::new(),
            };
        }
        Failure {
            code: exit::FAILURE,
            message: e.to_string(),
        }
    }
}

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure { code: exit::FAILURE, message: e.to_string() }
            }
        }
    )*};
}
failure_from!(
    crate::config::ConfigError,
    crate::store::StoreError,
    serde_json::Error
);

impl From<crate::trust::TrustError> for Failure {
    fn from(e: crate::trust::TrustError) -> Failure {
        Failure::new(exit::code(e.kind()), e.to_string())
    }
}

pub type CmdResult = Result<(), Failure>;

use crate::store::oci::OciCredentials;

/// Registry credentials of a configured mirror (environment variable names; the auth file
/// otherwise).
fn oci_credentials(m: &crate::config::MirrorConfig) -> OciCredentials {
    OciCredentials {
        username_env: m.oci_username_variable.clone(),
        password_env: m.oci_password_variable.clone(),
        auth_file: None,
    }
}

/// Everything a command needs from the global flags and the config.
pub struct Context {
    /// `--offline`: nothing from the network, only the local caches.
    pub offline: bool,
    pub paths: Paths,
    pub config: Config,
    pub out: Output,
    pub global: GlobalArgs,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Result<Context, Failure> {
        let paths = Paths::from_env()?;
        let config = match &global.config {
            Some(p) => Config::load(p, true)?,
            None => Config::load(&paths.config_file, false)?,
        };
        Ok(Context {
            offline: false,
            paths,
            out: Output {
                json: global.json,
                quiet: global.quiet,
            },
            config,
            global,
        })
    }

    /// A store to write into (`dest`: a path, file:// or s3:// URL); `what` names it in
    /// messages (`destination`, `--publish`). HTTP(S) is refused: it cannot be written.
    pub fn open_writable(&self, what: &str, dest: &str) -> Result<crate::store::Store, Failure> {
        let (url, token_env, creds) = match self.config.mirror_named(dest) {
            Some(m) => (m.url.clone(), m.token_env.clone(), oci_credentials(m)),
            None => (dest.to_string(), None, OciCredentials::default()),
        };
        let store =
            crate::buildcache::open_store(&url, &self.store_options(token_env.as_deref()), &creds)
                .map_err(|e| Failure::usage(format!("{what} `{dest}`: {e}")))?;
        if store.kind() == crate::store::StoreKind::Http {
            return Err(Failure::usage(format!(
                "{what} `{dest}` is an HTTP URL, which cannot be written; give a path, file://, s3:// or oci:// URL"
            )));
        }
        Ok(store)
    }

    /// Store options from flags, environment and config (never logged: they may hold secrets).
    pub fn store_options(&self, token_env: Option<&str>) -> StoreOptions {
        let mut opts = StoreOptions {
            ca_cert: self
                .global
                .ca_cert
                .clone()
                .or_else(|| self.config.network.ca_cert.clone()),
            netrc_path: self.config.network.netrc.clone(),
            bearer_token: token_env
                .and_then(|var| std::env::var(var).ok())
                .filter(|t| !t.is_empty()),
            ..StoreOptions::default()
        };
        if let Some(s) = self.config.network.connect_timeout {
            opts.connect_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(s) = self.config.network.read_timeout {
            opts.read_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(r) = self.config.network.retries {
            opts.retries = r;
        }
        if let Some(s) = self.global.timeout {
            let t = std::time::Duration::from_secs(s);
            opts.read_timeout = t;
            opts.connect_timeout = opts.connect_timeout.min(t);
        }
        if let Some(r) = self.global.retries {
            opts.retries = r;
        }
        opts.s3_endpoint = self.s3_endpoint();
        opts.s3_path_style = self.config.network.s3_path_style;
        opts
    }

    /// Retries of a failed request: `--retries`, else `[network] retries`.
    pub fn retries(&self) -> Option<u32> {
        self.global.retries.or(self.config.network.retries)
    }

    /// The S3 endpoint: `--s3-endpoint`, else `$SF_CACHE_S3_ENDPOINT` (read by the store, so
    /// `None` here), else `[network] s3_endpoint`; `None` leaves `$S3_ENDPOINT_URL` and the AWS
    /// defaults to the store.
    fn s3_endpoint(&self) -> Option<String> {
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if let Some(e) = nonempty(&self.global.s3_endpoint) {
            return Some(e);
        }
        if nonempty(&std::env::var(crate::store::S3_ENDPOINT_ENV).ok()).is_some() {
            return None;
        }
        nonempty(&self.config.network.s3_endpoint)
    }

    /// Open one mirror named by a URL, a path, or a config mirror name.
    pub fn open_mirror(&self, spec: &str) -> Result<Mirror, Failure> {
        // A bundle file (`mirror --bundle`): extracted once, verified, into the cache.
        let bundle_dir;
        let spec = if crate::mirror::bundle::is_bundle(std::path::Path::new(spec)) {
            let dir = self.paths.cache_dir.join("bundles");
            bundle_dir = crate::mirror::bundle::extract_cached(std::path::Path::new(spec), &dir)?;
            bundle_dir.to_str().unwrap_or(spec)
        } else {
            spec
        };
        let (name, url, signed, token_env, creds) = match self.config.mirror_named(spec) {
            Some(m) => (
                m.name.clone(),
                m.url.clone(),
                m.signed,
                m.token_env.clone(),
                oci_credentials(m),
            ),
            None => (
                spec.to_string(),
                spec.to_string(),
                true,
                None,
                OciCredentials::default(),
            ),
        };
        let store = crate::buildcache::open_store(
            &url,
            &self.store_options(token_env.as_deref()),
            &creds,
        )
        .map_err(|e| {
            Failure::usage(format!(
                "mirror `{spec}`: {e}; give a URL (file://, http://, https://, s3://, oci://), a path, or a mirror name from the config"
            ))
        })?;
        let url = store.display_url();
        // A local directory needs neither a metadata cache nor an offline mode.
        let remote = store.kind() != crate::store::StoreKind::File;
        Ok(Mirror {
            name,
            meta_cache: remote.then(|| {
                self.paths
                    .cache_dir
                    .join("meta")
                    .join(crate::buildcache::mirror::mirror_id(&url))
            }),
            offline: self.offline && remote,
            url,
            store,
            signed,
        })
    }

    /// The mirrors a command reads: `--mirror` values, else the config's mirrors.
    pub fn mirrors(&self, args: &MirrorArgs) -> Result<Vec<Mirror>, Failure> {
        let names: Vec<String> = if args.mirrors.is_empty() {
            self.config.mirrors.iter().map(|m| m.name.clone()).collect()
        } else {
            args.mirrors.clone()
        };
        if names.is_empty() {
            return Err(Failure::usage(
                "no mirror given: pass --mirror URL|PATH|NAME or add a [[mirror]] to the config file",
            ));
        }
        names.iter().map(|n| self.open_mirror(n)).collect()
    }

    pub fn index_cache(&self) -> IndexCache {
        IndexCache::new(self.paths.index_cache_dir())
    }

    pub async fn catalog(&self, args: &MirrorArgs) -> Result<Catalog, Failure> {
        let mirrors = self.mirrors(args)?;
        Ok(Catalog::load(mirrors, &self.index_cache()).await?)
    }

    /// Builtin keys and pins, pins and key files from the config, and the user keyring.
    pub fn keyring(&self) -> Result<Keyring, Failure> {
        let mut ring = Keyring::builtin();
        for fpr in &self.config.trust.pinned {
            ring.pin(fpr)
                .map_err(|e| Failure::new(exit::FAILURE, format!("config [trust] pinned: {e}")))?;
        }
        for file in &self.config.trust.keys {
            let bytes = std::fs::read(file).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!(
                        "cannot read key file {} named in the config: {e}",
                        file.display()
                    ),
                )
            })?;
            ring.add_armored(&bytes, &file.display().to_string())?;
        }
        self.user_keyring().load_into(&mut ring)?;
        Ok(ring)
    }

    pub fn user_keyring(&self) -> UserKeyring {
        UserKeyring::new(self.paths.keys_dir.clone())
    }

    pub fn trust(&self) -> Result<TrustContext, Failure> {
        Ok(TrustContext::new(
            self.keyring()?,
            self.global.allow_unsigned,
        ))
    }

    /// The registry of install roots (for `cache gc`).
    pub fn roots_registry(&self) -> PathBuf {
        match self.paths.keys_dir.parent() {
            Some(data) => data.join("roots.json"),
            None => self.paths.cache_dir.join("roots.json"),
        }
    }

    pub fn blob_cache_path(&self, algorithm: &str, digest: &str) -> PathBuf {
        self.paths
            .blob_cache_dir()
            .join(algorithm)
            .join(digest.get(..2).unwrap_or(digest))
            .join(digest)
    }
}

/// Parse a query given as one or several words.
pub fn parse_query(words: &[String]) -> Result<Query, Failure> {
    let text = words.join(" ");
    Query::parse(&text).map_err(|e| Failure::usage(format!("invalid query `{text}`: {e}")))
}

/// An armored secret key read for signing, with its passphrase.
pub(crate) struct SigningKey {
    pub path: std::path::PathBuf,
    pub armored: Vec<u8>,
    pub passphrase: Option<String>,
}

/// Read the signing key `path` and its passphrase, the same way on every command that signs:
/// `--passphrase-file` (its first line), else `$SF_CACHE_KEY_PASSPHRASE` (never the command line).
pub(crate) fn read_signing_key(
    path: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> Result<SigningKey, Failure> {
    let armored = std::fs::read(path).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("cannot read the signing key {}: {e}", path.display()),
        )
    })?;
    let passphrase = match passphrase_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!("cannot read the passphrase file {}: {e}", f.display()),
                )
            })?;
            Some(text.lines().next().unwrap_or("").to_string())
        }
        None => std::env::var("SF_CACHE_KEY_PASSPHRASE")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    Ok(SigningKey {
        path: path.to_path_buf(),
        armored,
        passphrase,
    })
}

impl SigningKey {
    /// The failure of a key that cannot sign.
    pub(crate) fn cannot_sign(&self, e: impl fmt::Display) -> Failure {
        Failure::new(
            exit::FAILURE,
            format!(
                "signing key {} cannot sign: {e}; give an armored secret key (and its passphrase in $SF_CACHE_KEY_PASSPHRASE or --passphrase-file)",
                self.path.display()
            ),
        )
    }

    /// A manifest signer from this key.
    pub(crate) fn signer(&self) -> Result<crate::buildcache::writer::Signer, Failure> {
        crate::buildcache::writer::Signer::from_secret_armored(
            &self.armored,
            self.passphrase.as_deref(),
        )
        .map_err(|e| self.cannot_sign(e))
    }
}
