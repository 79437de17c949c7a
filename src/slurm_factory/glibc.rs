//! The host's glibc against the glibc a toolchain's builds need.

use super::Toolchain;
use crate::spec::Version;

/// Overrides the detected host glibc (tests, and checking a target host from another machine).
pub const HOST_GLIBC_ENV: &str = "SF_CACHE_HOST_GLIBC";

/// The host's glibc version (`2.36`): `$SF_CACHE_HOST_GLIBC` when set, else what the C library
/// says; None on a non-glibc host.
pub fn host_glibc() -> Option<String> {
    if let Some(v) = std::env::var(HOST_GLIBC_ENV)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        return Some(v);
    }
    detected()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn detected() -> Option<String> {
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let p = unsafe { libc::gnu_get_libc_version() };
    if p.is_null() {
        return None;
    }
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    s.to_str().ok().map(str::to_string)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn detected() -> Option<String> {
    None
}

/// A warning when `host` (a glibc version) is older than the toolchain needs; `toolchains` are
/// the matrix's, to suggest the ones that fit. None when the host is new enough or either
/// version cannot be read.
pub fn check(host: &str, tc: &Toolchain, toolchains: &[Toolchain]) -> Option<String> {
    let have = Version::parse(host).ok()?;
    let need = Version::parse(&tc.glibc).ok()?;
    if have >= need {
        return None;
    }
    let fits: Vec<&str> = toolchains
        .iter()
        .filter(|t| Version::parse(&t.glibc).is_ok_and(|g| g <= have))
        .map(|t| t.gcc.as_str())
        .collect();
    let hint = if fits.is_empty() {
        "no toolchain of the matrix fits this host".to_string()
    } else {
        format!(
            "toolchains that fit this host: --compiler-version {}",
            fits.join(" | ")
        )
    };
    Some(format!(
        "this host has glibc {host}, older than glibc {} that the {} builds need: its programs may fail to start (`GLIBC_{}' not found); {hint}",
        tc.glibc,
        tc.describe(),
        tc.glibc
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(gcc: &str, glibc: &str) -> Toolchain {
        Toolchain {
            gcc: gcc.into(),
            glibc: glibc.into(),
            distros: vec![],
            note: None,
        }
    }

    #[test]
    fn warns_only_when_the_host_is_older() {
        let all = vec![
            tc("13.4.0", "2.39"),
            tc("10.5.0", "2.31"),
            tc("8.5.0", "2.28"),
        ];
        let w = check("2.28", &all[0], &all).expect("2.28 < 2.39");
        assert!(w.contains("glibc 2.28"), "{w}");
        assert!(w.contains("glibc 2.39"), "{w}");
        assert!(w.contains("GCC 13.4.0"), "{w}");
        assert!(w.contains("--compiler-version 8.5.0"), "{w}");
        assert!(!w.contains("10.5.0"), "{w}");
        // Equal or newer: no warning. 2.4 < 2.39 compares numerically, not as text.
        assert_eq!(check("2.39", &all[0], &all), None);
        assert_eq!(check("2.40", &all[0], &all), None);
        assert!(check("2.4", &all[0], &all).is_some());
        assert_eq!(check("2.17", &tc("7.5.0", "2.17"), &all), None);
        let none = check("2.12", &all[2], &all).unwrap();
        assert!(none.contains("no toolchain of the matrix fits"), "{none}");
        // Unreadable versions: no claim either way.
        assert_eq!(check("", &all[0], &all), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn reads_the_host_glibc() {
        let v = detected().expect("a glibc host reports its version");
        assert!(v.starts_with("2."), "{v}");
        assert!(Version::parse(&v).is_ok());
    }
}
