//! Spack's OCI buildcache layout: where things live in a registry repository.
//! Pure naming and document shapes: nothing here touches the network.
//!
//! - Every spec is one image in the repository named by the mirror URL, tagged
//!   `<name>-<version>-<dag hash>.spack` after [`sanitize_tag`].
//! - The index is the tag [`INDEX_TAG`]: an image with an empty config whose only layer is the
//!   index JSON.
//! - sf-cache stores the clearsigned spec manifest of an image under the tag
//!   [`signature_tag`] (`<image tag>.sig`, sanitised the same way), so readers that know
//!   nothing about it (Spack, skopeo) are not disturbed.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Tag of the index image.
pub const INDEX_TAG: &str = "index.spack";

/// OCI media types used by Spack's images.
pub mod media {
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// What a registry is asked for when a manifest is read.
    pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json";
}

/// A mirror URL that names a registry repository.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OciUrlError {
    #[error(
        "{url:?} is not an OCI URL; use oci://HOST[:PORT]/REPO or oci+http://HOST[:PORT]/REPO"
    )]
    NotOci { url: String },
    #[error("{url:?}: {reason}; use oci://HOST[:PORT]/REPO[/…]")]
    Invalid { url: String, reason: String },
}

/// `oci://HOST[:PORT]/REPO[/…]` (HTTPS) or `oci+http://…` (plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciUrl {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub registry: String,
    /// Repository name, lowercased as Docker requires (`org/cache`).
    pub repository: String,
}

/// Whether a location names a registry (`oci://` or `oci+http://`).
pub fn is_oci_url(location: &str) -> bool {
    let l = location.trim().to_ascii_lowercase();
    l.starts_with("oci://") || l.starts_with("oci+http://")
}

impl OciUrl {
    pub fn parse(url: &str) -> Result<OciUrl, OciUrlError> {
        let trimmed = url.trim();
        let lower = trimmed.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("oci://") {
            ("https", &trimmed["oci://".len()..])
        } else if lower.starts_with("oci+http://") {
            ("http", &trimmed["oci+http://".len()..])
        } else {
            return Err(OciUrlError::NotOci {
                url: trimmed.to_string(),
            });
        };
        let invalid = |reason: &str| OciUrlError::Invalid {
            url: trimmed.to_string(),
            reason: reason.to_string(),
        };
        if rest.contains('@') {
            return Err(invalid(
                "credentials or digests do not belong in the URL (use the auth file)",
            ));
        }
        let rest = rest.trim_end_matches('/');
        let (registry, repository) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no repository after the registry host"))?;
        if registry.is_empty() || !valid_registry(registry) {
            return Err(invalid("bad registry host"));
        }
        let repository = repository.to_ascii_lowercase();
        if repository.contains(':') {
            return Err(invalid(
                "a tag does not belong in a mirror URL (tags are per spec)",
            ));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository components must be [a-z0-9] words joined by '.', '_', '__' or '-'",
            ));
        }
        Ok(OciUrl {
            scheme,
            registry: registry.to_string(),
            repository,
        })
    }

    /// `scheme://host[:port]/v2/<repository>`: the base of every API request.
    pub fn api_base(&self) -> String {
        format!("{}://{}/v2/{}", self.scheme, self.registry, self.repository)
    }

    /// The URL as the user writes it.
    pub fn display(&self) -> String {
        let s = if self.scheme == "http" {
            "oci+http"
        } else {
            "oci"
        };
        format!("{s}://{}/{}", self.registry, self.repository)
    }
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The distribution spec's path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

/// Spack's tag sanitising: every character outside `[A-Za-z0-9_.-]` becomes `_`; a result
/// longer than 128 characters keeps its first 64 and last 64.
pub fn sanitize_tag(tag: &str) -> String {
    let s: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.len() > 128 {
        format!("{}{}", &s[..64], &s[s.len() - 64..])
    } else {
        s
    }
}

/// The tag of a spec's image: `<name>-<version>-<hash>.spack`, sanitised.
pub fn image_tag(name: &str, version: &str, hash: &str) -> String {
    sanitize_tag(&format!("{name}-{version}-{hash}.spack"))
}

/// The tag under which sf-cache stores the clearsigned spec manifest of an image.
pub fn signature_tag(image_tag: &str) -> String {
    sanitize_tag(&format!("{image_tag}.sig"))
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Descriptor {
    /// The hex part of a `sha256:` digest, or `None` for other algorithms or bad digests.
    pub fn sha256(&self) -> Option<&str> {
        let hex = self.digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ImageManifest {
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media::MANIFEST.to_string()),
            config,
            layers,
            annotations: None,
        }
    }

    /// The spec's own tarball: the last layer.
    pub fn package_layer(&self) -> Option<&Descriptor> {
        self.layers.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = OciUrl::parse("oci://ghcr.io/Org/Cache/").unwrap();
        assert_eq!(
            (u.scheme, u.registry.as_str(), u.repository.as_str()),
            ("https", "ghcr.io", "org/cache")
        );
        assert_eq!(u.api_base(), "https://ghcr.io/v2/org/cache");
        assert_eq!(u.display(), "oci://ghcr.io/org/cache");
        let h = OciUrl::parse("oci+http://127.0.0.1:5000/fixtures").unwrap();
        assert_eq!(h.api_base(), "http://127.0.0.1:5000/v2/fixtures");
        assert_eq!(h.display(), "oci+http://127.0.0.1:5000/fixtures");
        assert!(is_oci_url("OCI://x/y") && !is_oci_url("https://x/y"));
        for bad in [
            "oci://host",
            "oci://host/",
            "oci://u:p@host/r",
            "oci://host/r:tag",
            "oci://host:99999/r",
            "oci://host/a//b",
            "oci://host/-a",
            "oci://host/a..b",
        ] {
            assert!(
                matches!(OciUrl::parse(bad), Err(OciUrlError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            OciUrl::parse("https://h/r"),
            Err(OciUrlError::NotOci { .. })
        ));
        assert!(OciUrl::parse("oci://h/a__b/c-d/e.f").is_ok());
    }

    #[test]
    fn tags_follow_spack() {
        assert_eq!(
            image_tag("greet", "2.1.0", "pgvza7iamblnpepta3jh2thtyfktejqr"),
            "greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr.spack"
        );
        assert_eq!(image_tag("x", "git.abc=1.2", "h"), "x-git.abc_1.2-h.spack");
        let long = image_tag(&"n".repeat(200), "1", "hhhh");
        assert_eq!(long.len(), 128);
        assert!(long.starts_with(&"n".repeat(64)));
        assert!(long.ends_with("-1-hhhh.spack"));
        assert_eq!(
            signature_tag("greet-2.1.0-h.spack"),
            "greet-2.1.0-h.spack.sig"
        );
        assert_eq!(signature_tag(&long).len(), 128);
        assert_ne!(signature_tag(&long), long);
    }

    #[test]
    fn manifest_round_trip() {
        let d = |m: &str, c: char| Descriptor {
            media_type: m.into(),
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size: 3,
            annotations: None,
        };
        let m = ImageManifest::new(
            d(media::CONFIG, 'a'),
            vec![d(media::LAYER_TAR_GZIP, 'b'), d(media::LAYER_TAR_GZIP, 'c')],
        );
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["schemaVersion"], 2);
        assert_eq!(j["mediaType"], media::MANIFEST);
        assert_eq!(j["layers"][1]["mediaType"], media::LAYER_TAR_GZIP);
        let back: ImageManifest = serde_json::from_value(j).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.package_layer().unwrap().sha256(),
            Some(&*"c".repeat(64))
        );
        let mut bad = d(media::CONFIG, 'z');
        bad.digest = "sha512:00".into();
        assert_eq!(bad.sha256(), None);
    }
}
