//! A registry repository seen as a layout-v3 buildcache, so that everything that reads or writes
//! v3 caches (catalogs, verified entries, the fetch engine, `mirror`, the writer behind `publish`
//! and `update-index`) works on `oci://` URLs unchanged. The images are Spack's (format reference
//! §8.2): Spack 1.x reads what is pushed here, and what Spack pushed is read here.
//!
//! | v3 path | in the registry |
//! |---|---|
//! | `blobs/sha256/<xx>/<hex>` | blob `sha256:<hex>` |
//! | `v3/manifests/index/index.manifest.json` | tag `index.spack` (an image whose one layer is the index JSON); read back as an unsigned v3 manifest naming that layer |
//! | `v3/manifests/spec/<name>/<stem>.spec.manifest.json` | the image `<stem>.spack` (config = the spec merged into an OCI image config, layers = link/run dependencies then the package's tarball); sf-cache also stores the manifest as written (clearsigned when signed) under `<stem>.spack.sig`, which readers prefer; without it an unsigned v3 manifest naming the image's config (the spec) and last layer (the tarball) is made up |
//! | `v3/manifests/key/<file>.manifest.json` | tag `key-<file>` (a document) |
//! | `v3/layout.json` | implied (every registry cache is layout v3): reads as absent, writes are dropped |
//! | `build_cache/…` (layout v2) | never: a registry holds layout v3 only |
//!
//! A *document* is an image whose first layer is the document's bytes and whose further layers
//! are the blobs the document names, so that the registry keeps them (garbage collection) and
//! refuses the document when one is missing (blobs are pushed first).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use futures_util::FutureExt;
use serde_json::{json, Value};
use sha2::Sha256;
use tracing::debug;

use super::layout::{self, media as v3media};
use super::manifest::{BlobRecord, Manifest};
use super::oci::{
    image_tag, is_oci_url, media, sanitize_tag, signature_tag, Descriptor, ImageManifest, OciUrl,
    INDEX_TAG,
};
use crate::spec::{DepTypes, SpecFile};
use crate::store::oci::{sha256_digest, OciClient, OciCredentials};
use crate::store::{
    Backend, ObjectMeta, ObjectStream, Precondition, Store, StoreError, StoreKind, StoreOptions,
};

/// Media type of a document layer (a v3 manifest as sf-cache wrote it, clearsigned or not).
pub const DOCUMENT_MEDIA: &str = "application/vnd.sf-cache.v3.document";
/// Prefix of the tags of key manifests and of the key index.
const KEY_TAG_PREFIX: &str = "key-";
/// The config of the index image and of documents, as Spack writes it for the index.
const EMPTY_CONFIG: &[u8] = b"{}";

/// Open a store: an `oci://` / `oci+http://` URL as a registry cache, anything else as
/// [`Store::open`] does.
pub fn open_store(
    location: &str,
    opts: &StoreOptions,
    creds: &OciCredentials,
) -> Result<Store, StoreError> {
    if !is_oci_url(location) {
        return Store::open(location, opts);
    }
    let url = OciUrl::parse(location).map_err(|e| StoreError::InvalidLocation {
        location: location.trim().to_string(),
        reason: e.to_string(),
    })?;
    let client = OciClient::open(url.scheme, &url.registry, &url.repository, creds, opts)?;
    Ok(Store::Layout(Arc::new(OciStore::new(url, client))))
}

/// What a v3 path is in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Object {
    /// `sha256:<hex>`
    Blob(String),
    LayoutJson,
    IndexManifest,
    /// The polite `<name>-<version>-<hash>` of the file name.
    SpecManifest(String),
    /// A document under this tag.
    Document(String),
    /// Layout v2: never in a registry.
    V2,
}

fn classify(rel: &str) -> Result<Object, StoreError> {
    let unsupported = || StoreError::Unsupported {
        what: format!(
            "the object `{rel}` in an OCI registry (only layout-v3 objects map to images)"
        ),
    };
    if let Some(rest) = rel.strip_prefix("blobs/sha256/") {
        let hex = rest.rsplit('/').next().unwrap_or(rest);
        return if super::mirror::is_sha256_hex(hex) {
            Ok(Object::Blob(format!("sha256:{hex}")))
        } else {
            Err(unsupported())
        };
    }
    if rel == layout::V3_LAYOUT_JSON {
        return Ok(Object::LayoutJson);
    }
    if rel == layout::V3_INDEX_MANIFEST {
        return Ok(Object::IndexManifest);
    }
    if let Some(rest) = rel.strip_prefix(layout::V3_SPEC_DIR) {
        let file = rest.rsplit('/').next().unwrap_or(rest);
        return match file.strip_suffix(".spec.manifest.json") {
            Some(stem) if !stem.is_empty() => Ok(Object::SpecManifest(stem.to_string())),
            _ => Err(unsupported()),
        };
    }
    if let Some(file) = rel.strip_prefix(layout::V3_KEY_DIR) {
        return match file.strip_suffix(".manifest.json") {
            Some(base) if !base.is_empty() && !base.contains('/') => Ok(Object::Document(
                sanitize_tag(&format!("{KEY_TAG_PREFIX}{base}")),
            )),
            _ => Err(unsupported()),
        };
    }
    if rel.starts_with("build_cache/") || rel == "build_cache" {
        return Ok(Object::V2);
    }
    Err(unsupported())
}

/// The image tag of a spec manifest's stem.
fn stem_tag(stem: &str) -> String {
    sanitize_tag(&format!("{stem}.spack"))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: sha256_digest(bytes),
        size: bytes.len() as u64,
        annotations: None,
    }
}

fn record(d: &Descriptor, media_type: &str, compression: &str) -> Option<BlobRecord> {
    Some(BlobRecord {
        content_length: d.size,
        media_type: media_type.to_string(),
        compression: compression.to_string(),
        checksum_algorithm: "sha256".into(),
        checksum: d.sha256()?.to_string(),
    })
}

fn manifest_bytes(records: Vec<BlobRecord>) -> Bytes {
    Bytes::from(
        Manifest {
            version: 3,
            data: records,
        }
        .to_spack_json(),
    )
}

/// Go's name of a Spack target family (what an image config's `architecture` holds).
fn goarch(target: &str) -> String {
    let family = crate::spec::HostTargets::for_target(target)
        .family()
        .to_string();
    match family.as_str() {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        _ => family,
    }
}

/// `sha256:<hex>` of the uncompressed bytes of a gzip stream (an image layer's `diff_id`).
fn diff_id_of(reader: impl Read) -> std::io::Result<String> {
    let decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(reader));
    let (digest, _) = crate::fs::digest_reader::<Sha256>(decoder)?;
    Ok(format!("sha256:{}", hex::encode(digest)))
}

/// A blocking reader over chunks sent from async code (read on a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The link/run dependencies of the root of `sf`, dependencies before dependents, externals
/// left out (their files are not in any tarball).
fn layer_order(sf: &SpecFile) -> Vec<(String, String, String)> {
    let by_hash: HashMap<&str, &crate::spec::Spec> =
        sf.nodes.iter().map(|n| (n.hash.as_str(), n)).collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    fn visit<'a>(
        spec: &'a crate::spec::Spec,
        by_hash: &HashMap<&str, &'a crate::spec::Spec>,
        seen: &mut HashSet<&'a str>,
        out: &mut Vec<(String, String, String)>,
    ) {
        for d in spec.deps_of_type(DepTypes::LINK_RUN) {
            let Some(dep) = by_hash.get(d.hash.as_str()) else {
                continue;
            };
            if seen.insert(dep.hash.as_str()) {
                visit(dep, by_hash, seen, out);
                if !dep.is_external() {
                    out.push((dep.name.clone(), dep.version.clone(), dep.hash.clone()));
                }
            }
        }
    }
    let root = sf.root();
    seen.insert(root.hash.as_str());
    visit(root, &by_hash, &mut seen, &mut out);
    out
}

/// A repository of a registry, read and written as a layout-v3 cache.
pub struct OciStore {
    url: OciUrl,
    client: OciClient,
    /// `diff_id` of gzip blobs this process pushed or measured, by digest.
    diff_ids: Mutex<HashMap<String, String>>,
    /// The package layer (and its `diff_id`) of images this process pushed, by DAG hash.
    layers: Mutex<HashMap<String, (Descriptor, String)>>,
}

impl std::fmt::Debug for OciStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciStore")
            .field("url", &self.url.display())
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl OciStore {
    pub fn new(url: OciUrl, client: OciClient) -> OciStore {
        OciStore {
            url,
            client,
            diff_ids: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn tag_url(&self, what: &str) -> String {
        format!("{}:{what}", self.url.display())
    }

    fn corrupt(&self, what: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            url: self.tag_url(what),
            reason: reason.into(),
        }
    }

    /// An image manifest by tag, parsed, with its digest; `None` when the tag does not exist.
    async fn image(&self, tag: &str) -> Result<Option<(ImageManifest, String)>, StoreError> {
        let Some(m) = self.client.get_manifest(tag).await? else {
            return Ok(None);
        };
        let im: ImageManifest = serde_json::from_slice(&m.bytes).map_err(|e| {
            self.corrupt(
                tag,
                format!("not an OCI image manifest ({e}); was the tag pushed by something else?"),
            )
        })?;
        Ok(Some((im, m.digest)))
    }

    /// A small blob, checked against its digest.
    async fn checked_blob(&self, d: &Descriptor, what: &str) -> Result<Bytes, StoreError> {
        let bytes = self.client.get_blob_bytes(&d.digest).await?;
        let actual = sha256_digest(&bytes);
        if actual != d.digest {
            return Err(self.corrupt(
                what,
                format!(
                    "the registry served {actual} for {}: the copy is corrupt or was tampered with",
                    d.digest
                ),
            ));
        }
        Ok(bytes)
    }

    /// A document: its bytes and the digest of the manifest that holds it.
    async fn document(&self, tag: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        let Some((im, digest)) = self.image(tag).await? else {
            return Ok(None);
        };
        let layer = im
            .layers
            .first()
            .ok_or_else(|| self.corrupt(tag, "the document image has no layer"))?;
        Ok(Some((self.checked_blob(layer, tag).await?, digest)))
    }

    /// The index as an unsigned v3 manifest naming the index layer, and the image's digest.
    async fn index_manifest(&self) -> Result<Option<(Bytes, String)>, StoreError> {
        let Some((im, digest)) = self.image(INDEX_TAG).await? else {
            return Ok(None);
        };
        let rec = im
            .layers
            .first()
            .and_then(|l| record(l, v3media::INDEX, "none"))
            .ok_or_else(|| self.corrupt(INDEX_TAG, "the index image names no sha256 layer"))?;
        Ok(Some((manifest_bytes(vec![rec]), digest)))
    }

    /// The manifest of a spec: the stored document, else one made up from Spack's image.
    async fn spec_manifest(&self, stem: &str) -> Result<Option<Bytes>, StoreError> {
        let tag = stem_tag(stem);
        if let Some((doc, _)) = self.document(&signature_tag(&tag)).await? {
            return Ok(Some(doc));
        }
        let Some((im, _)) = self.image(&tag).await? else {
            return Ok(None);
        };
        let tarball = im
            .package_layer()
            .and_then(|l| record(l, v3media::TARBALL, "gzip"));
        let spec = record(&im.config, v3media::SPEC, "none");
        let (Some(t), Some(s)) = (tarball, spec) else {
            return Err(self.corrupt(&tag, "the image has no sha256 layer or config"));
        };
        // Unsigned, but not unchecked: the spec in the config names its tarball's checksum, and
        // a layer swapped under the tag without a matching config is refused.
        let config = self.checked_blob(&im.config, &tag).await?;
        let named = serde_json::from_slice::<Value>(&config).ok().and_then(|c| {
            c.pointer("/binary_cache_checksum/hash")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(named) = named {
            if named != t.checksum {
                return Err(self.corrupt(
                    &tag,
                    format!(
                        "the image's last layer is sha256:{} but its config names the tarball \
                         sha256:{named}: the image was tampered with or pushed inconsistently",
                        t.checksum
                    ),
                ));
            }
        }
        Ok(Some(manifest_bytes(vec![t, s])))
    }

    async fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        match classify(rel)? {
            Object::Blob(d) => match self.client.get_blob_bytes(&d).await {
                Ok(b) => Ok(Some(b)),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            // Implied, never stored: a registry without `index.spack` is then refused as
            // "not a buildcache", naming the tag and `update-index`.
            Object::LayoutJson => Ok(None),
            Object::IndexManifest => Ok(self.index_manifest().await?.map(|(b, _)| b)),
            Object::SpecManifest(stem) => self.spec_manifest(&stem).await,
            Object::Document(tag) => Ok(self.document(&tag).await?.map(|(b, _)| b)),
            Object::V2 => Ok(None),
        }
    }

    fn not_found(&self, rel: &str) -> StoreError {
        StoreError::NotFound {
            url: Backend::object_url(self, rel),
        }
    }

    async fn put_blob(&self, digest: &str, bytes: Bytes) -> Result<(), StoreError> {
        if self.client.head_blob(digest).await?.is_none() {
            self.client.put_blob_bytes(digest, bytes).await?;
        }
        Ok(())
    }

    /// Push a document under `tag`: its bytes, then an image naming them and the blobs the
    /// document names (which must already be in the repository). Returns the image's digest.
    async fn put_document(&self, tag: &str, bytes: Bytes) -> Result<String, StoreError> {
        let mut layers = vec![descriptor(DOCUMENT_MEDIA, &bytes)];
        self.put_blob(&layers[0].digest, bytes.clone()).await?;
        if let Ok(m) = super::writer::read_manifest_unverified(&bytes, tag) {
            for r in m.data.iter().filter(|r| r.checksum_algorithm == "sha256") {
                layers.push(Descriptor {
                    media_type: r.media_type.clone(),
                    digest: format!("sha256:{}", r.checksum),
                    size: r.content_length,
                    annotations: None,
                });
            }
        }
        self.put_image(tag, layers, EMPTY_CONFIG.to_vec(), None)
            .await
    }

    async fn put_image(
        &self,
        tag: &str,
        layers: Vec<Descriptor>,
        config: Vec<u8>,
        description: Option<String>,
    ) -> Result<String, StoreError> {
        let config = Bytes::from(config);
        let config_desc = descriptor(media::CONFIG, &config);
        self.put_blob(&config_desc.digest, config).await?;
        let mut im = ImageManifest::new(config_desc, layers);
        if let Some(d) = description {
            let mut a = serde_json::Map::new();
            a.insert(
                "org.opencontainers.image.description".into(),
                Value::String(d),
            );
            im.annotations = Some(a);
        }
        let body = serde_json::to_vec(&im).map_err(|e| self.corrupt(tag, e.to_string()))?;
        let digest = sha256_digest(&body);
        // The same image under the same tag: nothing to push (re-runs push nothing).
        if let Some(current) = self.client.get_manifest(tag).await? {
            if current.digest == digest {
                return Ok(digest);
            }
        }
        self.client
            .put_manifest(tag, media::MANIFEST, Bytes::from(body))
            .await
    }

    /// Push the index image for a v3 index manifest (its index blob is already pushed).
    async fn put_index(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let what = layout::V3_INDEX_MANIFEST;
        let m = super::writer::read_manifest_unverified(bytes, what)
            .map_err(|e| self.corrupt(what, e.to_string()))?;
        let rec = m
            .record(v3media::INDEX, v3media::INDEX_PREFIX)
            .filter(|r| r.checksum_algorithm == "sha256")
            .ok_or_else(|| self.corrupt(what, "the index manifest names no sha256 index blob"))?;
        let layer = Descriptor {
            // As Spack advertises it, although the layer is plain JSON.
            media_type: media::LAYER_TAR_GZIP.into(),
            digest: format!("sha256:{}", rec.checksum),
            size: rec.content_length,
            annotations: None,
        };
        self.put_image(INDEX_TAG, vec![layer], EMPTY_CONFIG.to_vec(), None)
            .await
    }

    /// The `diff_id` of a gzip blob in the repository: remembered, else measured by streaming it.
    async fn diff_id(&self, digest: &str) -> Result<String, StoreError> {
        if let Some(d) = self.diff_ids.lock().unwrap().get(digest) {
            return Ok(d.clone());
        }
        let mut object = self.client.get_blob_stream(digest, 0).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let task = tokio::task::spawn_blocking(move || {
            diff_id_of(ChannelReader {
                rx,
                current: Bytes::new(),
            })
        });
        while let Some(chunk) = object.stream.next().await {
            // The reader stops early only when the bytes are not gzip data: its error follows.
            if tx.send(chunk?).await.is_err() {
                break;
            }
        }
        drop(tx);
        let id = task
            .await
            .map_err(|e| self.corrupt(digest, e.to_string()))?
            .map_err(|e| self.corrupt(digest, format!("the layer is not gzip data: {e}")))?;
        self.diff_ids
            .lock()
            .unwrap()
            .insert(digest.to_string(), id.clone());
        Ok(id)
    }

    /// The package layer and `diff_id` of a dependency's image: pushed by this process, else
    /// read from the registry; `None` when the registry has no image for it (yet).
    async fn dependency_layer(
        &self,
        name: &str,
        version: &str,
        hash: &str,
    ) -> Result<Option<(Descriptor, String)>, StoreError> {
        if let Some(l) = self.layers.lock().unwrap().get(hash) {
            return Ok(Some(l.clone()));
        }
        let tag = image_tag(name, version, hash);
        let Some((im, _)) = self.image(&tag).await? else {
            debug!("{tag} is not in the registry yet: its layer is left out of dependents' images");
            return Ok(None);
        };
        let Some(layer) = im.package_layer().cloned() else {
            return Ok(None);
        };
        let config = self.checked_blob(&im.config, &tag).await?;
        let from_config = serde_json::from_slice::<Value>(&config).ok().and_then(|c| {
            c.pointer("/rootfs/diff_ids")?
                .as_array()?
                .last()?
                .as_str()
                .map(str::to_string)
        });
        let id = match from_config {
            Some(id) => id,
            None => self.diff_id(&layer.digest).await?,
        };
        Ok(Some((layer, id)))
    }

    /// Push Spack's image for a spec manifest (whose blobs are already pushed), then the
    /// manifest itself as the image's signature document.
    async fn put_spec(&self, stem: &str, text: Bytes) -> Result<(), StoreError> {
        let tag = stem_tag(stem);
        let m = super::writer::read_manifest_unverified(&text, &tag)
            .map_err(|e| self.corrupt(&tag, e.to_string()))?;
        let (Some(tar), Some(spec_rec)) = (
            m.record(v3media::TARBALL, v3media::TARBALL_PREFIX),
            m.record(v3media::SPEC, v3media::SPEC_PREFIX),
        ) else {
            return Err(self.corrupt(&tag, "the manifest names no tarball or no spec blob"));
        };
        let tar_desc = Descriptor {
            media_type: media::LAYER_TAR_GZIP.into(),
            digest: format!("sha256:{}", tar.checksum),
            size: tar.content_length,
            annotations: None,
        };
        let spec_desc = Descriptor {
            media_type: spec_rec.media_type.clone(),
            digest: format!("sha256:{}", spec_rec.checksum),
            size: spec_rec.content_length,
            annotations: None,
        };
        let up_to_date = match self.image(&tag).await? {
            Some((im, _)) => im.package_layer().map(|l| &l.digest) == Some(&tar_desc.digest),
            None => false,
        };
        if !up_to_date {
            let raw = self.checked_blob(&spec_desc, &tag).await?;
            let json = super::entry::maybe_gunzip(&raw, &tag)
                .map_err(|e| self.corrupt(&tag, format!("the spec blob: {e}")))?;
            let value: Value = serde_json::from_slice(&json)
                .map_err(|e| self.corrupt(&tag, format!("the spec blob: {e}")))?;
            let sf = SpecFile::from_value(value.clone())
                .map_err(|e| self.corrupt(&tag, format!("the spec blob: {e}")))?;
            let mut layers = Vec::new();
            let mut diff_ids = Vec::new();
            for (name, version, hash) in layer_order(&sf) {
                if let Some((l, id)) = self.dependency_layer(&name, &version, &hash).await? {
                    layers.push(l);
                    diff_ids.push(id);
                }
            }
            let own_id = self.diff_id(&tar_desc.digest).await?;
            layers.push(tar_desc.clone());
            diff_ids.push(own_id.clone());
            let root = sf.root();
            let mut config = json!({
                "architecture": goarch(root.target().unwrap_or("x86_64")),
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "config": {"Env": []},
            });
            let c = config.as_object_mut().expect("an object");
            c.insert(
                "spec".into(),
                value.get("spec").cloned().unwrap_or(Value::Null),
            );
            c.insert("buildcache_layout_version".into(), json!(3));
            c.insert(
                "binary_cache_checksum".into(),
                json!({"hash_algorithm": "sha256", "hash": tar.checksum}),
            );
            c.insert("archive_size".into(), json!(tar.content_length));
            c.insert("archive_compression".into(), json!("gzip"));
            let body =
                serde_json::to_vec(&config).map_err(|e| self.corrupt(&tag, e.to_string()))?;
            let description = format!("{}@{} /{}", root.name, root.version, root.hash);
            self.put_image(&tag, layers, body, Some(description))
                .await?;
            self.layers
                .lock()
                .unwrap()
                .insert(root.hash.clone(), (tar_desc, own_id));
        }
        let sig = signature_tag(&tag);
        if self.document(&sig).await?.map(|(b, _)| b) != Some(text.clone()) {
            self.put_document(&sig, text).await?;
        }
        Ok(())
    }

    async fn put(&self, rel: &str, bytes: Bytes) -> Result<String, StoreError> {
        match classify(rel)? {
            Object::Blob(d) => {
                let actual = sha256_digest(&bytes);
                if actual != d {
                    return Err(StoreError::InvalidLocation {
                        location: Backend::object_url(self, rel),
                        reason: format!("the bytes hash to {actual}, not to the path's digest"),
                    });
                }
                self.put_blob(&d, bytes).await?;
                Ok(d)
            }
            Object::LayoutJson => Ok(String::new()),
            Object::IndexManifest => self.put_index(&bytes).await,
            Object::SpecManifest(stem) => {
                let d = sha256_digest(&bytes);
                self.put_spec(&stem, bytes).await?;
                Ok(d)
            }
            Object::Document(tag) => self.put_document(&tag, bytes).await,
            Object::V2 => Err(StoreError::Unsupported {
                what: format!(
                    "writing the layout-v2 object `{rel}` to an OCI registry (registries hold layout v3: mirror with --to-layout v3)"
                ),
            }),
        }
    }

    /// The version token of an object for conditional writes: the digest of the image that
    /// holds it (index, documents), else of its bytes.
    async fn etag(&self, rel: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        match classify(rel)? {
            Object::IndexManifest => self.index_manifest().await,
            Object::Document(tag) => self.document(&tag).await,
            _ => Ok(self.get(rel).await?.map(|b| {
                let d = sha256_digest(&b);
                (b, d)
            })),
        }
    }

    /// Spec manifest paths of every image in the repository (Spack's `update-index` rule: tags
    /// ending in `.spack` except the index; each config read for the spec's name).
    async fn list_specs(&self) -> Result<Vec<String>, StoreError> {
        let tags = self.client.list_tags().await?;
        let specs: Vec<String> = tags
            .into_iter()
            .filter(|t| t.ends_with(".spack") && t != INDEX_TAG)
            .collect();
        let mut out: Vec<String> = stream::iter(specs)
            .map(|tag| async move {
                let Some((im, _)) = self.image(&tag).await? else {
                    return Ok::<_, StoreError>(None);
                };
                let config = self.checked_blob(&im.config, &tag).await?;
                let root = serde_json::from_slice::<Value>(&config)
                    .ok()
                    .and_then(|c| c.pointer("/spec/nodes/0").cloned());
                let path = root.and_then(|n| {
                    let s = |k: &str| n.get(k).and_then(Value::as_str).map(str::to_string);
                    Some(layout::v3_spec_manifest(
                        &s("name")?,
                        &s("version")?,
                        &s("hash")?,
                    ))
                });
                if path.is_none() {
                    debug!("{tag}: its config holds no spec; not a Spack image");
                }
                Ok(path)
            })
            .buffer_unordered(8)
            .try_filter_map(|p| async move { Ok(p) })
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }
}

impl Backend for OciStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Oci
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    /// A blob of another repository of the same registry is mounted, not downloaded and
    /// uploaded again.
    fn copy_within<'a>(
        &'a self,
        src: &'a Store,
        src_rel: &'a str,
        rel: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let Store::Layout(b) = src else {
                return Ok(false);
            };
            let Some(other) = b.as_any().downcast_ref::<OciStore>() else {
                return Ok(false);
            };
            let (Ok(Object::Blob(d)), Ok(Object::Blob(from))) = (classify(rel), classify(src_rel))
            else {
                return Ok(false);
            };
            if d != from
                || other.url.scheme != self.url.scheme
                || other.url.registry != self.url.registry
            {
                return Ok(false);
            }
            if self.client.head_blob(&d).await?.is_some() {
                return Ok(true);
            }
            let mounted = self.client.mount_blob(&d, &other.url.repository).await?;
            debug!(
                "{d}: {} from {}",
                if mounted { "mounted" } else { "not mounted" },
                other.url.repository
            );
            Ok(mounted)
        }
        .boxed()
    }

    fn display_url(&self) -> String {
        self.url.display()
    }

    /// `REPO:TAG` for what a tag holds, `REPO@DIGEST` for blobs (the references of `skopeo`).
    fn object_url(&self, rel: &str) -> String {
        let repo = self.url.display();
        match classify(rel) {
            Ok(Object::Blob(d)) => format!("{repo}@{d}"),
            Ok(Object::IndexManifest) => format!("{repo}:{INDEX_TAG}"),
            Ok(Object::SpecManifest(stem)) => format!("{repo}:{}", stem_tag(&stem)),
            Ok(Object::Document(tag)) => format!("{repo}:{tag}"),
            _ => format!("{repo}/{rel}"),
        }
    }

    fn get_bytes<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        async move { self.get(rel).await?.ok_or_else(|| self.not_found(rel)) }.boxed()
    }

    fn get_stream<'a>(
        &'a self,
        rel: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ObjectStream, StoreError>> {
        async move {
            if let Object::Blob(d) = classify(rel)? {
                return self.client.get_blob_stream(&d, offset).await;
            }
            let bytes = self.get(rel).await?.ok_or_else(|| self.not_found(rel))?;
            let total = bytes.len() as u64;
            let rest = bytes.slice((offset.min(total)) as usize..);
            Ok(ObjectStream {
                total_len: Some(total),
                offset: offset.min(total),
                stream: Box::pin(stream::iter([Ok(rest)])),
            })
        }
        .boxed()
    }

    fn head<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>> {
        async move {
            let len = match classify(rel)? {
                Object::Blob(d) => self.client.head_blob(&d).await?,
                _ => self.get(rel).await?.map(|b| b.len() as u64),
            };
            Ok(len.map(|len| ObjectMeta {
                len: Some(len),
                etag: None,
            }))
        }
        .boxed()
    }

    fn why_absent<'a>(&'a self, _probed: &'a [&'a str]) -> BoxFuture<'a, String> {
        async move {
            format!(
                "registry {} has no tag {INDEX_TAG} in repository {} (check the URL; a cache \
                 pushed without an index needs `sf-cache update-index {}`)",
                self.url.registry,
                self.url.repository,
                self.url.display()
            )
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            let p = prefix.trim_end_matches('/');
            if layout::V3_SPEC_DIR.trim_end_matches('/') == p {
                return self.list_specs().await;
            }
            if layout::V3_KEY_DIR.trim_end_matches('/') == p {
                let tags = self.client.list_tags().await?;
                return Ok(tags
                    .iter()
                    .filter_map(|t| t.strip_prefix(KEY_TAG_PREFIX))
                    .map(|base| format!("{}{base}.manifest.json", layout::V3_KEY_DIR))
                    .collect());
            }
            if p == "build_cache" || p.starts_with("build_cache/") {
                return Ok(Vec::new());
            }
            Err(StoreError::Unsupported {
                what: format!("listing `{prefix}` in an OCI registry"),
            })
        }
        .boxed()
    }

    fn put_bytes<'a>(
        &'a self,
        rel: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.put(rel, bytes).await.map(|_| ()) }.boxed()
    }

    fn get_with_etag<'a>(
        &'a self,
        rel: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, String)>, StoreError>> {
        async move { self.etag(rel).await }.boxed()
    }

    /// Registries have no conditional writes: the condition is checked just before the push
    /// (a writer racing in between wins or loses as with Spack's own OCI pushes).
    fn put_bytes_if<'a>(
        &'a self,
        rel: &'a str,
        bytes: Bytes,
        pre: Precondition,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        async move {
            let current = self.etag(rel).await?.map(|(_, e)| e);
            let holds = match &pre {
                Precondition::Always => true,
                Precondition::IfAbsent => current.is_none(),
                Precondition::IfMatch(e) => current.as_deref() == Some(e.as_str()),
            };
            if !holds {
                return Err(StoreError::PreconditionFailed {
                    url: Backend::object_url(self, rel),
                });
            }
            self.put(rel, bytes).await
        }
        .boxed()
    }

    fn delete<'a>(&'a self, rel: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            match classify(rel)? {
                Object::Blob(d) => self.client.delete_blob(&d).await,
                Object::IndexManifest => self.client.delete_tag(INDEX_TAG).await,
                Object::Document(tag) => self.client.delete_tag(&tag).await,
                Object::SpecManifest(stem) => {
                    let tag = stem_tag(&stem);
                    self.client.delete_tag(&signature_tag(&tag)).await?;
                    self.client.delete_tag(&tag).await
                }
                Object::LayoutJson | Object::V2 => Ok(()),
            }
        }
        .boxed()
    }

    fn put_file<'a>(
        &'a self,
        rel: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let Object::Blob(d) = classify(rel)? else {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| StoreError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                return self.put(rel, Bytes::from(bytes)).await.map(|_| ());
            };
            // The layer's diff_id (for the image config) is measured while the blob uploads.
            let known = self.diff_ids.lock().unwrap().contains_key(&d);
            let p = path.to_path_buf();
            let measure = async move {
                if known {
                    return None;
                }
                tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::open(&p).ok()?;
                    let mut magic = [0u8; 2];
                    f.read_exact(&mut magic).ok()?;
                    if magic != [0x1f, 0x8b] {
                        return None;
                    }
                    diff_id_of(std::io::Cursor::new(magic).chain(f)).ok()
                })
                .await
                .ok()
                .flatten()
            };
            let upload = async {
                if self.client.head_blob(&d).await?.is_none() {
                    self.client.put_blob_file(&d, path).await?;
                }
                Ok::<_, StoreError>(())
            };
            let (id, up) = tokio::join!(measure, upload);
            up?;
            if let Some(id) = id {
                self.diff_ids.lock().unwrap().insert(d, id);
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_paths_map_to_registry_objects() {
        let hex = "ab".repeat(32);
        assert_eq!(
            classify(&format!("blobs/sha256/ab/{hex}")).unwrap(),
            Object::Blob(format!("sha256:{hex}"))
        );
        assert!(classify("blobs/sha256/ab/xyz").is_err());
        assert_eq!(
            classify(layout::V3_INDEX_MANIFEST).unwrap(),
            Object::IndexManifest
        );
        assert_eq!(
            classify(layout::V3_LAYOUT_JSON).unwrap(),
            Object::LayoutJson
        );
        let p = layout::v3_spec_manifest("py-x", "1.0+a", "pgvza7iamblnpepta3jh2thtyfktejqr");
        let Object::SpecManifest(stem) = classify(&p).unwrap() else {
            panic!("{p}")
        };
        assert_eq!(
            stem_tag(&stem),
            image_tag("py-x", "1.0+a", "pgvza7iamblnpepta3jh2thtyfktejqr")
        );
        assert_eq!(
            classify(&layout::v3_key_manifest("ABCD")).unwrap(),
            Object::Document("key-ABCD.key".into())
        );
        assert_eq!(
            classify(layout::V3_KEY_INDEX_MANIFEST).unwrap(),
            Object::Document("key-keys".into())
        );
        assert_eq!(classify(layout::V2_INDEX).unwrap(), Object::V2);
        assert!(matches!(
            classify("elsewhere/x"),
            Err(StoreError::Unsupported { .. })
        ));
    }

    #[test]
    fn goarch_follows_spack() {
        assert_eq!(goarch("x86_64_v3"), "amd64");
        assert_eq!(goarch("zen2"), "amd64");
        assert_eq!(goarch("aarch64"), "arm64");
    }

    #[test]
    fn diff_id_is_the_sha256_of_the_uncompressed_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"hello tar").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(diff_id_of(&gz[..]).unwrap(), sha256_digest(b"hello tar"));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for c in gz.chunks(3) {
            tx.try_send(Bytes::copy_from_slice(c)).unwrap();
        }
        drop(tx);
        let r = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        assert_eq!(diff_id_of(r).unwrap(), sha256_digest(b"hello tar"));
    }
}
