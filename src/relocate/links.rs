//! Symlink targets (reference §7.7, `relocate.py: relocate_links`).
//!
//! For each listed symlink whose target is absolute and starts with an old prefix (first listed
//! entry, no path-boundary check) the link is replaced by one pointing to `new + rest`. Relative
//! targets are never touched. The new link is created under a temporary name in the same
//! directory and renamed over the old one (atomic; Spack unlinks then re-creates).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{PrefixMap, RelocateError};

/// The relocated target of a symlink target, or `None` when it stays (relative, or no prefix
/// matches). Identity entries of `map` are ignored.
pub fn relocate_link_target(target: &[u8], map: &PrefixMap) -> Option<Vec<u8>> {
    if !target.starts_with(b"/") {
        return None;
    }
    let m = map.without_identities();
    m.map_start(target)
}

/// Relocate one symlink. Returns whether it was re-pointed. `path` must be a symlink.
pub fn relocate_link(path: &Path, map: &PrefixMap) -> Result<bool, RelocateError> {
    let target = fs::read_link(path).map_err(|e| RelocateError::io(path, e))?;
    let Some(new) = relocate_link_target(target.as_os_str().as_bytes(), map) else {
        return Ok(false);
    };
    let new = PathBuf::from(OsStr::from_bytes(&new));
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0u32;
    let tmp = loop {
        let tmp = dir.join(format!(".{name}.sf-reloc-{}-{attempt}", std::process::id()));
        match std::os::unix::fs::symlink(&new, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(RelocateError::io(&tmp, e)),
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(RelocateError::io(path, e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets_under_old_prefixes_are_mapped() {
        let d = tempfile::tempdir().unwrap();
        let m = PrefixMap::from_pairs([("/old/root/dep-1", "/new/dep-1"), ("/old/root", "/new")]);
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "a",
                "/old/root/dep-1/lib/libx.so",
                Some("/new/dep-1/lib/libx.so"),
            ),
            ("b", "/old/root/self/bin/greet", Some("/new/self/bin/greet")),
            ("c", "greet", None),
            ("d", "../old/root/x", None),
            ("e", "/usr/lib/libc.so", None),
            ("f", "/old/rootless/x", Some("/newless/x")),
            ("g", "/old/root/dangling", Some("/new/dangling")),
        ];
        for (name, target, want) in cases {
            let p = d.path().join(name);
            std::os::unix::fs::symlink(target, &p).unwrap();
            let changed = relocate_link(&p, &m).unwrap();
            assert_eq!(changed, want.is_some(), "{name}");
            let now = fs::read_link(&p).unwrap();
            assert_eq!(now, PathBuf::from(want.unwrap_or(target)), "{name}");
        }
        // no temporary names left behind
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), cases.len());
    }

    #[test]
    fn not_a_symlink_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("file");
        fs::write(&p, "x").unwrap();
        let m = PrefixMap::from_pairs([("/a", "/b")]);
        assert!(matches!(
            relocate_link(&p, &m),
            Err(RelocateError::Io { .. })
        ));
    }
}
