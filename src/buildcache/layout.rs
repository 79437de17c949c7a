//! Where things live inside a buildcache, for layout v3 (Spack 1.x) and v2 (Spack 0.18–0.23).
//! Pure path arithmetic: nothing here touches a store.

use std::fmt;

use serde::Serialize;

/// The mirror layout a record was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    V3,
    V2,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::V3 => "v3",
            Layout::V2 => "v2",
        })
    }
}

pub const V3_LAYOUT_JSON: &str = "v3/layout.json";
pub const V3_INDEX_MANIFEST: &str = "v3/manifests/index/index.manifest.json";
pub const V3_KEY_INDEX_MANIFEST: &str = "v3/manifests/key/keys.manifest.json";
pub const V3_KEY_DIR: &str = "v3/manifests/key/";
pub const V3_SPEC_DIR: &str = "v3/manifests/spec/";
pub const V2_INDEX: &str = "build_cache/index.json";
pub const V2_INDEX_HASH: &str = "build_cache/index.json.hash";
pub const V2_KEY_INDEX: &str = "build_cache/_pgp/index.json";

/// Media types Spack 1.0–1.2 writes into v3 manifests.
pub mod media {
    pub const TARBALL: &str = "application/vnd.spack.install.v2.tar+gzip";
    pub const TARBALL_PREFIX: &str = "application/vnd.spack.install.v";
    pub const SPEC: &str = "application/vnd.spack.spec.v5+json";
    pub const SPEC_PREFIX: &str = "application/vnd.spack.spec.v";
    pub const INDEX: &str = "application/vnd.spack.db.v8+json";
    pub const INDEX_PREFIX: &str = "application/vnd.spack.db.v";
    pub const KEY: &str = "application/pgp-keys";
    pub const KEY_INDEX: &str = "application/vnd.spack.keyindex.v1+json";
}

/// Spack's `polite_filename`: every character outside `[A-Za-z0-9_+.-]` becomes `_`.
pub fn polite(component: &str) -> String {
    component
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json`.
pub fn v3_spec_manifest(name: &str, version: &str, hash: &str) -> String {
    format!(
        "{V3_SPEC_DIR}{name}/{}.spec.manifest.json",
        polite(&format!("{name}-{version}-{hash}"))
    )
}

/// `blobs/<algorithm>/<first two hex digits>/<checksum>`.
pub fn blob_path(algorithm: &str, checksum: &str) -> String {
    let head = checksum.get(..2).unwrap_or(checksum);
    format!("blobs/{algorithm}/{head}/{checksum}")
}

/// `v3/manifests/key/<FPR>.key.manifest.json`.
pub fn v3_key_manifest(fingerprint: &str) -> String {
    format!("{V3_KEY_DIR}{fingerprint}.key.manifest.json")
}

/// `build_cache/_pgp/<FPR>.pub`.
pub fn v2_key_file(fingerprint: &str) -> String {
    format!("build_cache/_pgp/{fingerprint}.pub")
}

/// The parts of a v2 file name: `<arch>-<compiler>-<compiler version>-<name>-<version>-<hash>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Stem {
    /// `<platform>-<os>-<target>`
    pub arch: String,
    /// `<compiler name>-<compiler version>`, or `none-none` for specs without a compiler.
    pub compiler: String,
    pub name: String,
    pub version: String,
    pub hash: String,
}

impl V2Stem {
    fn stem(&self) -> String {
        polite(&format!(
            "{}-{}-{}-{}-{}",
            self.arch, self.compiler, self.name, self.version, self.hash
        ))
    }

    /// `build_cache/<stem>.spec.json.sig`
    pub fn signed_spec_file(&self) -> String {
        format!("build_cache/{}.spec.json.sig", self.stem())
    }

    /// `build_cache/<stem>.spec.json`
    pub fn spec_file(&self) -> String {
        format!("build_cache/{}.spec.json", self.stem())
    }

    /// `build_cache/<stem>.spec.yaml` (Spack ≤ 0.16; recognised only to refuse it clearly).
    pub fn yaml_spec_file(&self) -> String {
        format!("build_cache/{}.spec.yaml", self.stem())
    }

    /// `build_cache/<arch>/<compiler>/<name>-<version>/<stem>.spack`
    pub fn tarball(&self) -> String {
        format!(
            "build_cache/{}/{}/{}/{}.spack",
            polite(&self.arch),
            polite(&self.compiler),
            polite(&format!("{}-{}", self.name, self.version)),
            self.stem()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_paths_match_spack() {
        assert_eq!(
            v3_spec_manifest("greet", "2.1.0", "pgvza7iamblnpepta3jh2thtyfktejqr"),
            "v3/manifests/spec/greet/greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr.spec.manifest.json"
        );
        assert_eq!(
            v3_spec_manifest("x", "git.abc=1.2", "h"),
            "v3/manifests/spec/x/x-git.abc_1.2-h.spec.manifest.json"
        );
        assert_eq!(blob_path("sha256", "dd69b8"), "blobs/sha256/dd/dd69b8");
        assert_eq!(blob_path("sha256", "d"), "blobs/sha256/d/d");
    }

    #[test]
    fn v2_paths_match_spack() {
        let s = V2Stem {
            arch: "linux-debian12-x86_64".into(),
            compiler: "gcc-12.2.0".into(),
            name: "greet".into(),
            version: "2.1.0".into(),
            hash: "ruqirndwo36kjwhzknomdzk2br25xuso".into(),
        };
        assert_eq!(s.signed_spec_file(), "build_cache/linux-debian12-x86_64-gcc-12.2.0-greet-2.1.0-ruqirndwo36kjwhzknomdzk2br25xuso.spec.json.sig");
        assert_eq!(s.tarball(), "build_cache/linux-debian12-x86_64/gcc-12.2.0/greet-2.1.0/linux-debian12-x86_64-gcc-12.2.0-greet-2.1.0-ruqirndwo36kjwhzknomdzk2br25xuso.spack");
    }
}
