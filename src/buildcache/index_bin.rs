//! The parsed form of an index kept in the local cache: a compact, versioned binary encoding of
//! [`Index`], so a warm `list`/`show` skips JSON parsing (about 3× faster on a 50 000-spec index,
//! see docs/benchmarks.md). The file ends with the sha256 of everything before it; any mismatch,
//! truncation or unknown version makes the reader fall back to the JSON text.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::index::{Index, IndexRecord};
use crate::spec::{
    Arch, BuildSpecRef, CompilerRef, DepEdge, DepTypes, External, Spec, VariantValue,
};

/// Bump the last byte whenever the encoding or the `Spec` model changes.
const MAGIC: &[u8; 8] = b"SFIDX\x00\x00\x02";

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn strs(&mut self, l: &[String]) {
        self.len(l.len());
        for s in l {
            self.str(s);
        }
    }
    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(x) => {
                self.u8(1);
                f(self, x)
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn len(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        // A length can never exceed what is left: refuse before allocating.
        (n <= self.buf.len() - self.pos).then_some(n)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.len()?;
        (0..n).map(|_| self.str()).collect()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(f(self)?)),
            _ => None,
        }
    }
}

fn encode_spec(w: &mut Writer, s: &Spec) {
    w.str(&s.name);
    w.str(&s.version);
    w.opt(&s.namespace, |w, n| w.str(n));
    w.opt(&s.arch, |w, a| {
        w.str(&a.platform);
        w.str(&a.os);
        w.str(&a.target);
    });
    w.opt(&s.compiler, |w, c| {
        w.str(&c.name);
        w.str(&c.version);
    });
    w.len(s.variants.len());
    for (k, v) in &s.variants {
        w.str(k);
        match v {
            VariantValue::Bool(b) => {
                w.u8(0);
                w.u8(u8::from(*b));
            }
            VariantValue::Str(x) => {
                w.u8(1);
                w.str(x);
            }
            VariantValue::List(l) => {
                w.u8(2);
                w.strs(l);
            }
        }
    }
    w.opt(&s.flags, |w, f| {
        w.len(f.len());
        for (k, l) in f {
            w.str(k);
            w.strs(l);
        }
    });
    w.len(s.dependencies.len());
    for d in &s.dependencies {
        w.str(&d.name);
        w.str(&d.hash);
        w.u8(d.deptypes.bits());
        w.strs(&d.virtuals);
    }
    w.opt(&s.external, |w, e| {
        w.opt(&e.path, |w, p| w.str(p));
        w.opt(&e.module, |w, m| w.strs(m));
    });
    w.opt(&s.build_spec, |w, b| {
        w.str(&b.name);
        w.str(&b.hash);
    });
    w.str(&s.hash);
    w.u32(s.format_version);
}

fn deptypes_from_bits(bits: u8) -> DepTypes {
    let mut t = DepTypes::empty();
    for one in [
        DepTypes::BUILD,
        DepTypes::LINK,
        DepTypes::RUN,
        DepTypes::TEST,
    ] {
        if bits & one.bits() != 0 {
            t.insert(one);
        }
    }
    t
}

fn decode_spec(r: &mut Reader) -> Option<Spec> {
    let name = r.str()?;
    let version = r.str()?;
    let namespace = r.opt(|r| r.str())?;
    let arch = r.opt(|r| {
        Some(Arch {
            platform: r.str()?,
            os: r.str()?,
            target: r.str()?,
        })
    })?;
    let compiler = r.opt(|r| {
        Some(CompilerRef {
            name: r.str()?,
            version: r.str()?,
        })
    })?;
    let mut variants = BTreeMap::new();
    for _ in 0..r.len()? {
        let k = r.str()?;
        let v = match r.u8()? {
            0 => VariantValue::Bool(r.u8()? == 1),
            1 => VariantValue::Str(r.str()?),
            2 => VariantValue::List(r.strs()?),
            _ => return None,
        };
        variants.insert(k, v);
    }
    let flags = r.opt(|r| {
        let mut f = BTreeMap::new();
        for _ in 0..r.len()? {
            let k = r.str()?;
            f.insert(k, r.strs()?);
        }
        Some(f)
    })?;
    let n = r.len()?;
    let mut dependencies = Vec::with_capacity(n);
    for _ in 0..n {
        dependencies.push(DepEdge {
            name: r.str()?,
            hash: r.str()?,
            deptypes: deptypes_from_bits(r.u8()?),
            virtuals: r.strs()?,
        });
    }
    let external = r.opt(|r| {
        Some(External {
            path: r.opt(|r| r.str())?,
            module: r.opt(|r| r.strs())?,
        })
    })?;
    let build_spec = r.opt(|r| {
        Some(BuildSpecRef {
            name: r.str()?,
            hash: r.str()?,
        })
    })?;
    Some(Spec {
        name,
        version,
        namespace,
        arch,
        compiler,
        variants,
        flags,
        dependencies,
        external,
        build_spec,
        hash: r.str()?,
        format_version: r.u32()?,
    })
}

/// Encode an index (with the trailing checksum).
pub fn encode(index: &Index) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(index.records.len() * 512 + 64));
    w.0.extend_from_slice(MAGIC);
    w.u32(index.db_version);
    w.len(index.records.len());
    for r in &index.records {
        w.u32(r.ref_count);
        w.u8(u8::from(r.in_buildcache));
        encode_spec(&mut w, &r.spec);
    }
    let sum = Sha256::digest(&w.0);
    w.0.extend_from_slice(&sum);
    w.0
}

/// Decode bytes written by [`encode`]; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<Index> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if body.get(..8)? != MAGIC || Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader { buf: body, pos: 8 };
    let db_version = r.u32()?;
    let n = r.len()?;
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        let ref_count = r.u32()?;
        let in_buildcache = r.u8()? == 1;
        records.push(IndexRecord {
            spec: decode_spec(&mut r)?,
            ref_count,
            in_buildcache,
        });
    }
    (r.pos == body.len()).then_some(Index {
        db_version,
        records,
    })
}

pub fn read(path: &Path) -> Option<Index> {
    decode(&std::fs::read(path).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Index {
        let json = br#"{"database":{"version":"8","installs":{
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":{"spec":{"name":"glibc","version":"2.36",
            "arch":{"platform":"linux","platform_os":"debian12","target":"x86_64"},
            "parameters":{"build_system":"generic","cflags":[]},
            "external":{"path":"/usr","module":null,"extra_attributes":{}},
            "hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"ref_count":1,"in_buildcache":false},
          "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":{"spec":{"name":"slurm","version":"25-11-6-1",
            "arch":{"platform":"linux","platform_os":"ubuntu24.04","target":"x86_64_v3"},
            "namespace":"slurm_factory","parameters":{"gpu":true,"pmix":"5","tags":["a","b"]},
            "dependencies":[{"name":"glibc","hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
              "parameters":{"deptypes":["build","link"],"virtuals":["libc"]}}],
            "annotations":{"original_specfile_version":4,"compiler":"gcc@=13.4.0"},
            "hash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},"ref_count":0,"in_buildcache":true}}}}"#;
        Index::parse(json, "t").unwrap()
    }

    #[test]
    fn round_trips_exactly() {
        let idx = sample();
        let back = decode(&encode(&idx)).unwrap();
        assert_eq!(back.db_version, idx.db_version);
        assert_eq!(back.records.len(), idx.records.len());
        for (a, b) in idx.records.iter().zip(&back.records) {
            assert_eq!(a.spec, b.spec);
            assert_eq!(a.ref_count, b.ref_count);
            assert_eq!(a.in_buildcache, b.in_buildcache);
        }
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = encode(&sample());
        for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_none(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(b"").is_none());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let sum = Sha256::digest(&framed);
            framed.extend_from_slice(&sum);
            let _ = decode(&framed);
        }
    }
}
