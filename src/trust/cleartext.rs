//! A strict parser for OpenPGP cleartext-signed text (RFC 4880 §7 / RFC 9580 §7).
//!
//! It is deliberately as strict as GnuPG 2.2 where GnuPG rejects a message (unknown headers,
//! a missing `Hash:` header, a wrong armor checksum, a second armored block), so that our verdict
//! matches `gpg --verify`, which is what Spack uses.

use data_encoding::BASE64;

/// First line of a cleartext-signed message.
pub(crate) const BEGIN_SIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

/// The parts of a cleartext-signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cleartext {
    /// Hash algorithm names listed in the `Hash:` headers (e.g. `SHA512`).
    pub hash_names: Vec<String>,
    /// The signed text: dash-escaping undone, trailing spaces/tabs removed from every line,
    /// lines joined with `\n`, and no final line ending (it belongs to the framework).
    pub text: Vec<u8>,
    /// The dearmored signature packets (binary OpenPGP).
    pub signature: Vec<u8>,
}

/// Splits into lines (without the `\n`, and without a trailing `\r`).
fn lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = input;
    let mut done = input.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => {
                done = true;
                (rest, &rest[rest.len()..])
            }
        };
        rest = next;
        if !done && rest.is_empty() {
            done = true;
        }
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

fn trim_end_ws(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((&last, head)) = l.split_last() {
        if last == b' ' || last == b'\t' || last == b'\r' {
            l = head;
        } else {
            break;
        }
    }
    l
}

fn trim_ascii(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

/// Parses a cleartext-signed message. `Err` carries a one-line reason.
pub(crate) fn parse(input: &[u8]) -> Result<Cleartext, String> {
    let mut it = lines(input);

    // 1. The framework's first line.
    match it.next() {
        Some(l) if trim_end_ws(l) == BEGIN_SIGNED => {}
        _ => return Err("does not start with `-----BEGIN PGP SIGNED MESSAGE-----`".into()),
    }

    // 2. Armor headers up to an empty line: only `Hash:` is accepted (as GnuPG does).
    let mut hash_names = Vec::new();
    let mut saw_blank = false;
    for l in it.by_ref() {
        let l = trim_end_ws(l);
        if l.is_empty() {
            saw_blank = true;
            break;
        }
        let Some(value) = l.strip_prefix(b"Hash: ") else {
            return Err(format!(
                "unexpected cleartext header line {:?} (only `Hash:` headers are allowed)",
                String::from_utf8_lossy(l)
            ));
        };
        for name in value.split(|&b| b == b',') {
            let name = trim_ascii(name);
            if name.is_empty() {
                return Err("empty algorithm name in `Hash:` header".into());
            }
            hash_names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    if !saw_blank {
        return Err("truncated: no empty line after the cleartext headers".into());
    }
    if hash_names.is_empty() {
        return Err("missing `Hash:` header".into());
    }

    // 3. The text, up to the signature armor.
    let mut text: Vec<u8> = Vec::new();
    let mut first = true;
    let mut saw_sig = false;
    for l in it.by_ref() {
        if trim_end_ws(l) == BEGIN_SIGNATURE {
            saw_sig = true;
            break;
        }
        let l = l.strip_prefix(b"- ").unwrap_or(l);
        if !first {
            text.push(b'\n');
        }
        first = false;
        text.extend_from_slice(trim_end_ws(l));
    }
    if !saw_sig {
        return Err("truncated: no `-----BEGIN PGP SIGNATURE-----` line".into());
    }

    // 4. Signature armor: headers, empty line, base64 lines, optional CRC, end line.
    let mut b64: Vec<u8> = Vec::new();
    let mut crc: Option<Vec<u8>> = None;
    let mut in_headers = true;
    let mut saw_end = false;
    for l in it.by_ref() {
        let l = trim_ascii(l);
        if in_headers {
            if l.is_empty() {
                in_headers = false;
                continue;
            }
            if is_armor_header(l) {
                continue;
            }
            // Base64 directly after the BEGIN line: tolerate.
            in_headers = false;
        }
        if l == END_SIGNATURE {
            saw_end = true;
            break;
        }
        if l.is_empty() {
            continue;
        }
        if crc.is_some() {
            return Err("data after the armor checksum line".into());
        }
        if let Some(c) = l.strip_prefix(b"=") {
            crc = Some(c.to_vec());
            continue;
        }
        if !l
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(format!(
                "invalid character in signature armor line {:?}",
                String::from_utf8_lossy(l)
            ));
        }
        b64.extend_from_slice(l);
    }
    // GnuPG accepts a missing END line (truncated after the checksum); so do we.
    if saw_end {
        for l in it {
            if trim_ascii(l).starts_with(b"-----BEGIN PGP") {
                return Err(
                    "more than one armored block (only one signed message is allowed)".into(),
                );
            }
        }
    }

    let signature = BASE64
        .decode(&b64)
        .map_err(|e| format!("signature armor is not valid base64: {e}"))?;
    if signature.is_empty() {
        return Err("empty signature block".into());
    }
    if let Some(c) = crc {
        let got = BASE64
            .decode(&c)
            .map_err(|_| "malformed armor checksum line".to_string())?;
        if got.len() != 3 {
            return Err("malformed armor checksum line".into());
        }
        let want = crc24(&signature).to_be_bytes();
        if got[..] != want[1..4] {
            return Err("armor checksum (CRC24) mismatch: the signature block is corrupted".into());
        }
    }

    Ok(Cleartext {
        hash_names,
        text,
        signature,
    })
}

fn is_armor_header(l: &[u8]) -> bool {
    match memchr::memmem::find(l, b": ") {
        Some(i) if i > 0 => l[..i]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        _ => false,
    }
}

/// CRC-24 as defined for OpenPGP armor.
fn crc24(data: &[u8]) -> u32 {
    const INIT: u32 = 0x00B7_04CE;
    const POLY: u32 = 0x0186_4CFB;
    let mut crc = INIT;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= POLY;
            }
        }
    }
    crc & 0x00FF_FFFF
}

/// CRC-24 for tests in the parent module.
#[cfg(test)]
pub(crate) fn tests_crc24(data: &[u8]) -> u32 {
    crc24(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "-----BEGIN PGP SIGNATURE-----\n\nAAEC\n=\
                       AAAA\n-----END PGP SIGNATURE-----\n";

    fn with_crc(body: &str) -> String {
        let crc = crc24(&[0, 1, 2]).to_be_bytes();
        let crc = BASE64.encode(&crc[1..4]);
        format!(
            "{body}-----BEGIN PGP SIGNATURE-----\n\nAAEC\n={crc}\n-----END PGP SIGNATURE-----\n"
        )
    }

    #[test]
    fn crc24_known_value() {
        // CRC-24 of the empty input is the init value.
        assert_eq!(crc24(b""), 0x00B7_04CE);
    }

    #[test]
    fn parses_text_and_undoes_dash_escaping() {
        let msg = with_crc(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\n- -x  \n\"a\":1\t\n}\n",
        );
        let c = parse(msg.as_bytes()).unwrap();
        assert_eq!(c.hash_names, vec!["SHA512"]);
        assert_eq!(c.text, b"{\n-x\n\"a\":1\n}");
        assert_eq!(c.signature, vec![0, 1, 2]);
    }

    #[test]
    fn crlf_is_normalised() {
        let msg = with_crc("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256, SHA512\n\na\nb\n")
            .replace('\n', "\r\n");
        let c = parse(msg.as_bytes()).unwrap();
        assert_eq!(c.hash_names, vec!["SHA256", "SHA512"]);
        assert_eq!(c.text, b"a\nb");
    }

    #[test]
    fn rejects_bad_crc_and_headers() {
        let bad_crc = format!("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nx\n{SIG}");
        assert!(parse(bad_crc.as_bytes()).unwrap_err().contains("CRC24"));
        let no_hash = with_crc("-----BEGIN PGP SIGNED MESSAGE-----\n\nx\n");
        assert!(parse(no_hash.as_bytes()).unwrap_err().contains("Hash"));
        let comment =
            with_crc("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\nComment: x\n\nx\n");
        assert!(parse(comment.as_bytes()).is_err());
        let two = with_crc("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nx\n");
        let two = format!("{two}{two}");
        assert!(parse(two.as_bytes()).unwrap_err().contains("more than one"));
    }

    #[test]
    fn truncated_inputs_are_errors() {
        let msg = with_crc("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\n}\n");
        for n in 0..msg.len() {
            // Must not panic; a cut before the base64 is complete is an error.
            let r = parse(&msg.as_bytes()[..n]);
            if n < msg.find("AAEC").unwrap() + 4 {
                assert!(r.is_err(), "cut at {n} parsed");
            }
        }
    }
}
