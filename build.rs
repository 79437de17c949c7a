//! Embeds the OpenPGP public keys shipped in `keys/*.asc` into the binary
//! (see `src/trust/mod.rs`, `Keyring::builtin`).
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let keys_dir = manifest_dir.join("keys");
    println!("cargo:rerun-if-changed={}", keys_dir.display());

    let mut files: Vec<PathBuf> = match fs::read_dir(&keys_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "asc") && p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();

    let mut out = String::from("pub(crate) static BUILTIN_KEYS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            name,
            f.display().to_string()
        ));
    }
    out.push_str("];\n");

    let out_path = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_keys.rs");
    fs::write(&out_path, out).expect("write builtin_keys.rs");
}
