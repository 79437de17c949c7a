//! Configuration: defaults < config file < environment (`SF_CACHE_*`) < flags, and the one place
//! where the tool keeps its state (`$SF_CACHE_HOME`, else the XDG directories).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; fix the path or pass --config FILE")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("no home directory: set SF_CACHE_HOME (or HOME / XDG_*_HOME) to say where sf-cache keeps its state")]
    NoHome,
}

/// Where sf-cache keeps its state.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    /// User keyring (kept with data, never where `cache clean` wipes).
    pub keys_dir: PathBuf,
    /// Content-addressed blobs and parsed indexes.
    pub cache_dir: PathBuf,
    /// Scratch space (same filesystem as the cache, for atomic renames).
    pub tmp_dir: PathBuf,
}

impl Paths {
    /// `$SF_CACHE_HOME` when set, else `$XDG_CONFIG_HOME/sf-cache`, `$XDG_DATA_HOME/sf-cache` and
    /// `$XDG_CACHE_HOME/sf-cache` with the usual `~/.config`, `~/.local/share`, `~/.cache` defaults.
    pub fn from_env() -> Result<Paths, ConfigError> {
        Self::from_vars(|k| std::env::var_os(k).filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Paths, ConfigError> {
        if let Some(home) = var("SF_CACHE_HOME") {
            let home = PathBuf::from(home);
            return Ok(Paths {
                config_file: home.join("config.toml"),
                keys_dir: home.join("keys"),
                cache_dir: home.join("cache"),
                tmp_dir: home.join("tmp"),
            });
        }
        let user_home = var("HOME").map(PathBuf::from);
        let xdg = |name: &str, fallback: &str| -> Result<PathBuf, ConfigError> {
            match var(name) {
                Some(v) => Ok(PathBuf::from(v)),
                None => user_home
                    .as_ref()
                    .map(|h| h.join(fallback))
                    .ok_or(ConfigError::NoHome),
            }
        };
        let config = xdg("XDG_CONFIG_HOME", ".config")?.join("sf-cache");
        let data = xdg("XDG_DATA_HOME", ".local/share")?.join("sf-cache");
        let cache = xdg("XDG_CACHE_HOME", ".cache")?.join("sf-cache");
        Ok(Paths {
            config_file: config.join("config.toml"),
            keys_dir: data.join("keys"),
            tmp_dir: cache.join("tmp"),
            cache_dir: cache,
        })
    }

    pub fn index_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("index")
    }

    pub fn blob_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("blobs")
    }
}

/// One `[[mirror]]` table of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub name: String,
    pub url: String,
    /// `false` lets this mirror's unsigned content be used without `--allow-unsigned`.
    #[serde(default = "default_true")]
    pub signed: bool,
    /// Name of an environment variable holding a bearer token for this mirror.
    #[serde(default)]
    pub token_env: Option<String>,
    /// OCI registries: names of the environment variables holding the user name and the
    /// password or token (Spack's `--oci-username-variable` / `--oci-password-variable`).
    /// Without them, the Docker/Podman auth file is read (`$REGISTRY_AUTH_FILE`, else
    /// `~/.docker/config.json`).
    #[serde(default)]
    pub oci_username_variable: Option<String>,
    #[serde(default)]
    pub oci_password_variable: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// Projection of an installed prefix below the root, e.g. `{name}-{version}-{hash:7}`.
    pub projection: Option<String>,
    pub jobs: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Fingerprints whose keys are trusted when a mirror serves them.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// Extra armored public key files to trust.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Extra CA bundle (PEM), for sites that intercept TLS.
    pub ca_cert: Option<PathBuf>,
    /// Seconds to wait for a connection.
    pub connect_timeout: Option<u64>,
    /// Seconds without progress before a transfer is abandoned.
    pub read_timeout: Option<u64>,
    pub retries: Option<u32>,
    /// Alternative netrc file (default `$NETRC` or `~/.netrc`).
    pub netrc: Option<PathBuf>,
    /// Endpoint of an S3-compatible server for `s3://` locations (MinIO, Ceph, …), e.g.
    /// `http://127.0.0.1:9000`. `--s3-endpoint` and `SF_CACHE_S3_ENDPOINT` override it.
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`endpoint/bucket/key`); default: on exactly when a custom
    /// endpoint is in use.
    pub s3_path_style: Option<bool>,
}

/// `[build]`: the fallback source build (`sf-cache build`, `install --build-on-miss`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// `docker`, `podman`, `apptainer` or `host`; default: the first of docker, podman,
    /// apptainer found on PATH.
    pub runtime: Option<String>,
    /// Container image holding Spack and a compiler (default `sf-cache-build:bookworm`).
    pub image: Option<String>,
    /// A Spack checkout: run directly by the `host` runtime, mounted into containers.
    pub spack_root: Option<PathBuf>,
    /// Directory overriding the embedded `spack.yaml.j2` / `build.sh.j2` templates.
    pub templates_dir: Option<PathBuf>,
    /// Package repository (the directory holding `repo.yaml`) overriding the embedded one.
    pub repo_dir: Option<PathBuf>,
    /// Parallel build jobs given to Spack (`spack install -j`).
    pub jobs: Option<usize>,
    /// Extra environment variables for Spack (e.g. proxies).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// The config file (`config.toml`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<MirrorConfig>,
    #[serde(default)]
    pub install: InstallConfig,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub build: BuildConfig,
    /// Read by the Slurm Factory layer; kept as raw TOML here so this module stays independent.
    #[serde(default)]
    pub slurm_factory: Option<toml::Table>,
}

impl Config {
    /// Load `path`. A missing file is an empty config unless `required` (an explicit `--config`).
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }

    pub fn mirror_named(&self, name: &str) -> Option<&MirrorConfig> {
        self.mirrors.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            owned
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn sf_cache_home_holds_everything() {
        let p = Paths::from_vars(vars(&[("SF_CACHE_HOME", "/x"), ("HOME", "/h")])).unwrap();
        assert_eq!(p.config_file, PathBuf::from("/x/config.toml"));
        assert_eq!(p.keys_dir, PathBuf::from("/x/keys"));
        assert_eq!(p.cache_dir, PathBuf::from("/x/cache"));
    }

    #[test]
    fn xdg_defaults_and_overrides() {
        let p = Paths::from_vars(vars(&[("HOME", "/h")])).unwrap();
        assert_eq!(
            p.config_file,
            PathBuf::from("/h/.config/sf-cache/config.toml")
        );
        assert_eq!(p.keys_dir, PathBuf::from("/h/.local/share/sf-cache/keys"));
        assert_eq!(p.cache_dir, PathBuf::from("/h/.cache/sf-cache"));
        let p = Paths::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/c")])).unwrap();
        assert_eq!(p.cache_dir, PathBuf::from("/c/sf-cache"));
        assert!(Paths::from_vars(vars(&[])).is_err());
    }

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            r#"
[[mirror]]
name = "sf"
url = "https://example.invalid/cache"
token_env = "SF_TOKEN"

[[mirror]]
name = "local"
url = "/srv/cache"
signed = false

[install]
projection = "{name}-{version}-{hash:7}"

[trust]
pinned = ["FDEA90667641505264EFD114DFB92630BCA5AB71"]

[network]
s3_endpoint = "http://127.0.0.1:9000"
s3_path_style = false

[build]
runtime = "podman"
image = "localhost/spack:1.0"
jobs = 4
env = { HTTPS_PROXY = "http://proxy:3128" }
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.mirrors.len(), 2);
        assert!(c.mirrors[0].signed);
        assert!(!c.mirror_named("local").unwrap().signed);
        assert_eq!(c.trust.pinned.len(), 1);
        assert_eq!(
            c.network.s3_endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(c.network.s3_path_style, Some(false));
        assert_eq!(c.build.runtime.as_deref(), Some("podman"));
        assert_eq!(c.build.jobs, Some(4));
        assert_eq!(c.build.env["HTTPS_PROXY"], "http://proxy:3128");
    }

    #[test]
    fn unknown_keys_are_reported() {
        let e = Config::parse(
            "[[mirror]]\nname='a'\nurl='b'\nsigend=false\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("c.toml"), "{e}");
    }
}
