//! DAG hash recomputation (Spack `Spec.spec_hash` + `b32_hash`), for checking stored hashes.
//!
//! The node dict without `hash` is serialized like Python
//! `json.dumps(d, ensure_ascii=True, separators=(",", ":"))` (key order as read), hashed with
//! SHA-1 and encoded with RFC 4648 base32 in lowercase (32 characters). Spliced nodes
//! (`build_spec`) take the last 7 characters from the build spec's hash.

use serde_json::Value;
use sha1::{Digest, Sha1};

/// Recompute the DAG hash of a node dict. Returns None when the node's form cannot reproduce
/// the hash: not an object, a v5 node converted from an older format
/// (`annotations.original_specfile_version < 5`), a format ≤3 node (deps with `type`, or
/// `full_hash`/`build_hash` keys), or a float that Python would print differently.
pub fn recompute(node: &Value) -> Option<String> {
    let obj = node.as_object()?;
    if let Some(v) = obj
        .get("annotations")
        .and_then(|a| a.get("original_specfile_version"))
    {
        if v.as_u64().is_none_or(|n| n < 5) {
            return None;
        }
    }
    if obj.contains_key("full_hash") || obj.contains_key("build_hash") {
        return None;
    }
    if let Some(Value::Array(deps)) = obj.get("dependencies") {
        if deps.iter().any(|d| d.get("type").is_some()) {
            return None;
        }
    } else if obj.get("dependencies").is_some() {
        return None;
    }
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let mut first = true;
    for (k, v) in obj {
        if k == "hash" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(&mut out, k);
        out.push(b':');
        write_value(&mut out, v)?;
    }
    out.push(b'}');
    let digest = Sha1::digest(&out);
    let mut h = data_encoding::BASE32_NOPAD
        .encode(digest.as_slice())
        .to_ascii_lowercase();
    if let Some(bh) = obj
        .get("build_spec")
        .and_then(|b| b.get("hash"))
        .and_then(Value::as_str)
    {
        if bh.len() >= 7 && bh.is_ascii() {
            h.truncate(h.len() - 7);
            h.push_str(&bh[bh.len() - 7..]);
        }
    }
    Some(h)
}

/// Whether the node's stored `hash` equals the recomputed one; None if it cannot be checked.
pub fn verify(node: &Value) -> Option<bool> {
    let stored = node.get("hash")?.as_str()?;
    recompute(node).map(|h| h == stored)
}

/// Python-compatible compact JSON (`ensure_ascii=True`). None for floats Python prints
/// differently.
pub fn python_json(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    write_value(&mut out, v)?;
    Some(out)
}

fn write_value(out: &mut Vec<u8>, v: &Value) -> Option<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                let s = n.to_string();
                // Python repr uses "1e+16"; only plain decimals are safe.
                if s.contains(['e', 'E']) || !s.contains('.') {
                    return None;
                }
                out.extend_from_slice(s.as_bytes());
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x)?;
            }
            out.push(b']');
        }
        Value::Object(o) => {
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, x)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[((*unit >> shift) & 0xf) as usize]);
                    }
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn python_escaping() {
        let v =
            json!({"a": "é\u{7f}\n\"\\/\u{1F600}\u{1}", "b": [1, -2, true, null, 0.5], "c": {}});
        let out = String::from_utf8(python_json(&v).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"a":"\u00e9\u007f\n\"\\/\ud83d\ude00\u0001","b":[1,-2,true,null,0.5],"c":{}}"#
        );
        assert!(python_json(&json!(1e300)).is_none());
    }

    #[test]
    fn known_hash_and_frankenhash() {
        // Hash of a tiny node computed by the same rules (sha1 of '{"name":"x"}').
        let h = recompute(&json!({"name": "x", "hash": "ignored"})).unwrap();
        assert_eq!(h.len(), 32);
        let expected = data_encoding::BASE32_NOPAD
            .encode(&Sha1::digest(br#"{"name":"x"}"#))
            .to_ascii_lowercase();
        assert_eq!(h, expected);
        let spliced = recompute(&json!({"name": "x",
            "build_spec": {"name": "x", "hash": "abcdefghijklmnopqrstuvwxyz234567"}}))
        .unwrap();
        assert!(spliced.ends_with("z234567"));
        assert!(
            recompute(&json!({"name":"x","annotations":{"original_specfile_version":4}})).is_none()
        );
        assert!(recompute(
            &json!({"name":"x","dependencies":[{"name":"y","hash":"h","type":["link"]}]})
        )
        .is_none());
        assert!(recompute(&json!([1])).is_none());
        assert_eq!(verify(&json!({"name": "x", "hash": expected})), Some(true));
    }

    proptest! {
        #[test]
        fn escaping_is_ascii_and_roundtrips(s in ".*") {
            let out = python_json(&Value::String(s.clone())).unwrap();
            prop_assert!(out.iter().all(|b| (0x20..0x7f).contains(b)));
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
