//! sbang and long shebangs (reference §7.8, `hooks/sbang.py`).
//!
//! * The kernel limit Spack assumes: [`SYSTEM_SHEBANG_LIMIT`] = 127 bytes on Linux (511 on
//!   macOS), counted **including** the line's `\n`. Lines are read up to
//!   [`SPACK_SHEBANG_LIMIT`] = 4096 bytes; a longer line without `\n` is left alone.
//! * A too-long first line gets a new first line `#!/bin/sh <root>/bin/sbang`; the original line
//!   becomes line 2 (`--!` instead of `#!` for `…/lua` and `…/luajit`, `//!` for `…/node`,
//!   `<?php ` + line + ` ?>` for `…/php` — with Spack's quirk that ` ?>` lands *after* the
//!   line's newline). Lines that are only `#!` + blanks, and files already starting with the
//!   exact sbang line, are skipped.
//! * The sbang script lives at `<unpadded root>/bin/sbang`; that path must itself fit in the limit
//!   ([`sbang_install_path`]). [`SBANG_SCRIPT`] is our own POSIX sh implementation with the same
//!   behaviour as Spack's: it runs the interpreter line found on the first two lines of the
//!   script (the last one found wins), adding `-x` for perl and ruby (also via `/usr/bin/env`),
//!   and refuses to run sbang as its own interpreter.
//! * Spack rewrites the patched script through a temporary file and `rename`; we rewrite it in
//!   place through the open file (same inode, so hardlinked names stay linked; mode unchanged).
//!
//! An existing sbang line (made on the build host) names the build host's sbang path; it is
//! rewritten by the text relocation through the map's first entry (old sbang → new sbang).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{read_file, rewrite_in_place, RelocateError};

/// OS shebang limit Spack assumes (`system_shebang_limit`), in bytes including the newline.
pub const SYSTEM_SHEBANG_LIMIT: usize = if cfg!(target_os = "macos") { 511 } else { 127 };

/// Spack's own maximum line length it looks at (`spack_shebang_limit`).
pub const SPACK_SHEBANG_LIMIT: usize = 4096;

/// Content of `<root>/bin/sbang` (our own implementation, POSIX sh).
pub const SBANG_SCRIPT: &str = r#"#!/bin/sh
# sbang (installed by sf-cache): run a script whose interpreter line is too long for the kernel.
#
# A script using it starts with two lines:
#     #!/bin/sh /path/to/sbang
#     #!/the/very/long/path/to/interpreter [args]
# The second line may also be written "//!..." (node), "--!..." (lua) or "<?php #!... ?>"
# (php) so that the interpreter ignores it. The last such line of the first two lines is run
# with the script path and the script's arguments appended ("-x" is added for perl and ruby
# so that they skip the lines above the real script). Direct use: sbang SCRIPT [ARGS...]

sbang_fail() {
    printf 'sbang: %s\n' "$*" >&2
    exit 1
}

[ "$#" -ge 1 ] || sbang_fail "usage: sbang SCRIPT [ARGS...]"
[ -f "$1" ] || sbang_fail "$1: no such file"

sbang_line=
sbang_n=0
while [ "$sbang_n" -lt 2 ]; do
    sbang_cur=
    IFS= read -r sbang_cur || [ -n "$sbang_cur" ] || break
    sbang_n=$((sbang_n + 1))
    case $sbang_cur in
        '#!'*) sbang_line=${sbang_cur#??} ;;
        '//!'* | '--!'*) sbang_line=${sbang_cur#???} ;;
        '<?php #!'*)
            sbang_line=${sbang_cur#'<?php #!'}
            sbang_line=${sbang_line%' ?>'}
            ;;
    esac
done < "$1"

sbang_words() {
    sbang_interp=${1-}
    sbang_arg1=${2-}
}
set -f
# shellcheck disable=SC2086
sbang_words $sbang_line
[ -n "$sbang_interp" ] || sbang_fail "no interpreter line found in $1"

sbang_is() {
    [ "${sbang_interp##*/}" = "$1" ] ||
        { [ "$sbang_interp" = /usr/bin/env ] && [ "$sbang_arg1" = "$1" ]; }
}

if sbang_is sbang; then
    sbang_fail "refusing to run sbang as the interpreter of $1"
fi
if sbang_is perl || sbang_is ruby; then
    # shellcheck disable=SC2086
    exec $sbang_line -x "$@"
fi
# shellcheck disable=SC2086
exec $sbang_line "$@"
"#;

/// `<unpadded_root>/bin/sbang`, or [`RelocateError::SbangPathTooLong`] when that path is longer
/// than `limit` (use [`SYSTEM_SHEBANG_LIMIT`]).
pub fn sbang_install_path(unpadded_root: &Path, limit: usize) -> Result<PathBuf, RelocateError> {
    let p = unpadded_root.join("bin").join("sbang");
    let len = p.as_os_str().len();
    if len > limit {
        return Err(RelocateError::SbangPathTooLong {
            path: p,
            len,
            limit,
        });
    }
    Ok(p)
}

/// `#!/bin/sh <sbang_path>` (no newline).
pub fn sbang_shebang_line(sbang_path: &Path) -> Vec<u8> {
    let mut l = b"#!/bin/sh ".to_vec();
    l.extend_from_slice(sbang_path.as_os_str().as_bytes());
    l
}

/// The interpreter of a shebang line: after `#!` and blanks, up to a blank, NUL or newline.
pub fn get_interpreter(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"#!")?;
    let start = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    let rest = &rest[start..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | 0 | b'\n'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Length of the first line as Spack reads it: up to and including `\n`, at most 4096 bytes.
fn first_line(content: &[u8]) -> &[u8] {
    let max = content.len().min(SPACK_SHEBANG_LIMIT);
    match memchr::memchr(b'\n', &content[..max]) {
        Some(i) => &content[..=i],
        None => &content[..max],
    }
}

/// The patched content when the first line is a shebang longer than `limit`, else `None`.
pub fn filter_shebang_bytes(content: &[u8], sbang_path: &Path, limit: usize) -> Option<Vec<u8>> {
    if !content.starts_with(b"#!") {
        return None;
    }
    let old = first_line(content);
    if old.len() <= limit {
        return None;
    }
    if old.len() == SPACK_SHEBANG_LIMIT && old.last() != Some(&b'\n') {
        return None;
    }
    let mut new_line = sbang_shebang_line(sbang_path);
    new_line.push(b'\n');
    if old == new_line.as_slice() {
        return None;
    }
    let interp = get_interpreter(old)?;
    let mut out = new_line;
    out.reserve(content.len() + 16);
    if interp.ends_with(b"/lua") || interp.ends_with(b"/luajit") {
        out.extend_from_slice(b"--!");
        out.extend_from_slice(&old[2..]);
    } else if interp.ends_with(b"/node") {
        out.extend_from_slice(b"//!");
        out.extend_from_slice(&old[2..]);
    } else if interp.ends_with(b"/php") {
        out.extend_from_slice(b"<?php ");
        out.extend_from_slice(old);
        out.extend_from_slice(b" ?>");
    } else {
        out.extend_from_slice(old);
    }
    out.extend_from_slice(&content[old.len()..]);
    Some(out)
}

/// Patch one file in place if its shebang is too long. Returns whether it changed.
pub fn filter_shebang_file(
    path: &Path,
    sbang_path: &Path,
    limit: usize,
) -> Result<bool, RelocateError> {
    let mut head = Vec::with_capacity(2);
    fs::File::open(path)
        .and_then(|f| f.take(2).read_to_end(&mut head))
        .map_err(|e| RelocateError::io(path, e))?;
    if head != b"#!" {
        return Ok(false);
    }
    let content = read_file(path)?;
    match filter_shebang_bytes(&content, sbang_path, limit) {
        None => Ok(false),
        Some(new) => {
            rewrite_in_place(path, &new)?;
            Ok(true)
        }
    }
}

/// Spack's post-install shebang filtering over a prefix: every regular (non-symlink) file with
/// an execute bit, symlinked directories not entered. Returns the patched files (relative).
pub fn filter_shebangs_in_tree(
    dir: &Path,
    sbang_path: &Path,
    limit: usize,
) -> Result<Vec<PathBuf>, RelocateError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = crate::fs::sorted_entries(&d).map_err(|e| RelocateError::io(&d, e))?;
        for e in entries {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else {
                filter_if_script(dir, &p, &md, sbang_path, limit, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// [`filter_shebangs_in_tree`] over known files only: `rels` (relative to `dir`) are the
/// candidates, e.g. the files that unpacking saw start with `#!`; each still needs to be a
/// regular file with an execute bit.
pub fn filter_shebangs_in(
    dir: &Path,
    rels: &[String],
    sbang_path: &Path,
    limit: usize,
) -> Result<Vec<PathBuf>, RelocateError> {
    let mut out = Vec::new();
    for rel in rels {
        let p = dir.join(rel);
        if let Ok(md) = fs::symlink_metadata(&p) {
            filter_if_script(dir, &p, &md, sbang_path, limit, &mut out)?;
        }
    }
    Ok(out)
}

fn filter_if_script(
    dir: &Path,
    p: &Path,
    md: &fs::Metadata,
    sbang_path: &Path,
    limit: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), RelocateError> {
    if md.is_file() && md.mode() & 0o111 != 0 && filter_shebang_file(p, sbang_path, limit)? {
        tracing::debug!("patched overlong shebang in {}", p.display());
        out.push(p.strip_prefix(dir).unwrap_or(p).to_path_buf());
    }
    Ok(())
}

/// Install [`SBANG_SCRIPT`] at `sbang_path` unless an identical file is there: parent created
/// (mode 0755 when created), temporary file in the same directory, mode 0755, fsync, rename.
/// Returns whether it was (re)written.
pub fn install_sbang(sbang_path: &Path) -> Result<bool, RelocateError> {
    if let Ok(existing) = fs::read(sbang_path) {
        if existing == SBANG_SCRIPT.as_bytes() {
            return Ok(false);
        }
    }
    let dir = sbang_path.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| RelocateError::io(dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| RelocateError::io(dir, e))?;
    }
    let tmp = dir.join(format!(".sbang.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(SBANG_SCRIPT.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        fs::rename(&tmp, sbang_path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(RelocateError::io(sbang_path, e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
