//! Build-time inputs: the OpenPGP public keys shipped in `keys/*.asc` (embedded into the binary, see
//! `src/trust/mod.rs`, `Keyring::builtin`) and build information for `sf-cache --version`.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    embed_keys();
    build_info();
}

fn embed_keys() {
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

fn build_info() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=SF_CACHE_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=SF_CACHE_BUILD_TARGET={}",
        env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=SF_CACHE_BUILD_PROFILE={}",
        env::var("PROFILE").unwrap_or_default()
    );
    // Rerun when HEAD moves: HEAD itself (checkout) and the branch it points to (commit). Asked
    // from git, so that worktrees (where `.git` is a file) and fresh commits are followed too.
    for path in git_paths_of_head() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn git_paths_of_head() -> Vec<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut paths = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        paths.push(head);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(r) = git(&["rev-parse", "--git-path", &branch]) {
            paths.push(r);
        }
    }
    paths
}
