//! The in-process limit for unpacking an install tarball: gzip-decode (flate2 with zlib-rs, the
//! crate's own decoder) and untar (the `tar` crate) one blob into a directory, with nothing else
//! (no checksum, no relocation, no staging, no receipts). `bench install` compares
//! `sf-cache install` against it.
//!
//!     cargo build --release --example unpack_limit
//!     target/release/examples/unpack_limit BLOB|- DIR
//!
//! BLOB `-` reads standard input. Prints the unpacked bytes and members.
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!("usage: unpack_limit BLOB|- DIR");
        std::process::exit(2);
    }
    let input: Box<dyn Read> = if args[0] == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args[0])?)
    };
    let reader = BufReader::with_capacity(1 << 20, input);
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let mut archive = tar::Archive::new(gz);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let dir = Path::new(&args[1]);
    std::fs::create_dir_all(dir)?;
    let (mut bytes, mut members) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        bytes += entry.header().size()?;
        members += 1;
        entry.unpack_in(dir)?;
    }
    println!("{bytes} bytes, {members} members");
    Ok(())
}
