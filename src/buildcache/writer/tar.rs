//! A minimal POSIX/PAX tar writer: the shape Python's `tarfile` writes in PAX_FORMAT, as Spack's
//! tarballs have it.

use std::io::{self, Write};

const BLOCK: usize = 512;
/// Python's `tarfile.RECORDSIZE`: archives are padded to a multiple of it.
const RECORD: u64 = 20 * 512;

// ---------------------------------------------------------------------------------------------
// Minimal POSIX/PAX tar writer (the shape Python's `tarfile` writes in PAX_FORMAT).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Hardlink,
    Symlink,
    Dir,
}

impl Kind {
    pub(super) fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Dir => b'5',
        }
    }
}

pub(super) struct TarWriter<W: Write> {
    pub(super) w: W,
    pub(super) written: u64,
}

fn octal(field: &mut [u8], value: u64) {
    // `digits` octal digits then NUL, zero padded (Python's `itn`).
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

pub(super) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where <len> counts the whole record including itself.
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl<W: Write> TarWriter<W> {
    pub(super) fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub(super) fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    pub(super) fn raw_header(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        kind: u8,
        link: &[u8],
    ) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(
            &mut h[124..136],
            if size > 0o77777777777 { 0 } else { size },
        );
        octal(&mut h[136..148], 0);
        h[156] = kind;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}");
        h[148..154].copy_from_slice(&s.as_bytes()[s.len() - 6..]);
        h[154] = 0;
        h[155] = b' ';
        self.put(&h)
    }

    /// One member header (preceded by a PAX header when a field does not fit ustar).
    pub(super) fn header(
        &mut self,
        name: &[u8],
        kind: Kind,
        mode: u32,
        size: u64,
        link: &[u8],
    ) -> io::Result<()> {
        let mut pax = Vec::new();
        if name.len() > 100 || !name.is_ascii() {
            pax.extend(pax_record("path", name));
        }
        if link.len() > 100 || !link.is_ascii() {
            pax.extend(pax_record("linkpath", link));
        }
        if size > 0o77777777777 {
            pax.extend(pax_record("size", size.to_string().as_bytes()));
        }
        if !pax.is_empty() {
            self.raw_header(b"././@PaxHeader", 0o644, pax.len() as u64, b'x', b"")?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.raw_header(name, mode, size, kind.flag(), link)
    }

    /// Two zero blocks, then zeros up to a multiple of [`RECORD`] (as Python's tarfile does).
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        let rem = self.written % RECORD;
        if rem != 0 {
            let mut left = RECORD - rem;
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                self.put(&[0u8; BLOCK][..n])?;
                left -= n as u64;
            }
        }
        Ok(self.w)
    }
}
