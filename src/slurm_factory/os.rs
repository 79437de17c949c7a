//! OS toolchains: the host's toolchain from `/etc/os-release`, and the glibc refusal.
//!
//! Slurm Factory names its current caches after the distribution they were built on
//! (`rockylinux9`, `noble`, …); each such toolchain has one GCC and one glibc.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::Version;

/// Overrides the os-release file read (tests, and choosing for another host).
pub const OS_RELEASE_ENV: &str = "SF_CACHE_OS_RELEASE";

/// One OS toolchain of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OsToolchain {
    /// As the caches name it: `noble`, `rockylinux9`.
    pub name: String,
    pub gcc: String,
    /// The glibc its builds need at least (the distribution's own).
    pub glibc: String,
}

impl OsToolchain {
    /// The GCC toolchain its builds are queried by (`%gcc@…`).
    pub fn as_toolchain(&self) -> super::Toolchain {
        super::Toolchain {
            gcc: self.gcc.clone(),
            glibc: self.glibc.clone(),
            distros: vec![],
            note: Some(self.name.clone()),
        }
    }
}

/// What the host's os-release says, as a toolchain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A toolchain of the matrix.
    Known(String),
    /// The file names a distribution without a toolchain (the text says which).
    Unknown(String),
}

/// The os-release file to read: `$SF_CACHE_OS_RELEASE`, else `/etc/os-release`.
pub fn os_release_path() -> PathBuf {
    std::env::var_os(OS_RELEASE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/os-release"))
}

/// The toolchain an os-release text names: Rocky/RHEL/Alma (and their `ID_LIKE`) major version →
/// `rockylinuxN`, Ubuntu → its codename. `known` are the matrix's toolchain names.
pub fn detect(os_release: &str, known: &[&str]) -> Detected {
    let field = |key: &str| -> Option<String> {
        os_release.lines().find_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
        })
    };
    let id = field("ID").unwrap_or_default().to_ascii_lowercase();
    let like = field("ID_LIKE").unwrap_or_default().to_ascii_lowercase();
    let version = field("VERSION_ID").unwrap_or_default();
    let rhel_family = ["rocky", "rhel", "almalinux", "centos"];
    let name = if rhel_family.contains(&id.as_str()) || like.split_whitespace().any(|w| w == "rhel")
    {
        let major = version.split('.').next().unwrap_or("").to_string();
        (!major.is_empty()).then(|| format!("rockylinux{major}"))
    } else if id == "ubuntu" || like.split_whitespace().any(|w| w == "ubuntu") {
        field("UBUNTU_CODENAME")
            .or_else(|| field("VERSION_CODENAME"))
            .map(|c| c.to_ascii_lowercase())
    } else {
        None
    };
    match name {
        Some(n) if known.contains(&n.as_str()) => Detected::Known(n),
        Some(n) => Detected::Unknown(format!("{id} {version} ({n})")),
        None => Detected::Unknown(if id.is_empty() {
            "an unknown distribution".to_string()
        } else {
            format!("{id} {version}").trim_end().to_string()
        }),
    }
}

/// None when `tc` runs on a host with glibc `host`; else the one-line refusal, naming the
/// toolchains that fit and `--force`. Unreadable versions are not refused.
pub fn refuse(host: &str, tc: &OsToolchain, all: &[OsToolchain]) -> Option<String> {
    let have = Version::parse(host).ok()?;
    let need = Version::parse(&tc.glibc).ok()?;
    if have >= need {
        return None;
    }
    let fits: Vec<&str> = all
        .iter()
        .filter(|t| Version::parse(&t.glibc).is_ok_and(|g| g <= have))
        .map(|t| t.name.as_str())
        .collect();
    let hint = if fits.is_empty() {
        "no toolchain fits this host".to_string()
    } else {
        format!("toolchains that fit: --toolchain {}", fits.join(" | "))
    };
    Some(format!(
        "toolchain {} needs glibc {} but this host has glibc {host}; {hint} (or --force to install anyway)",
        tc.name, tc.glibc
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "rockylinux8",
        "rockylinux9",
        "rockylinux10",
        "jammy",
        "noble",
        "resolute",
    ];

    #[test]
    fn detects_the_toolchain_from_sample_os_release_files() {
        let rocky9 = "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n";
        assert_eq!(detect(rocky9, KNOWN), Detected::Known("rockylinux9".into()));
        let rhel8 = "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.10\"\n";
        assert_eq!(detect(rhel8, KNOWN), Detected::Known("rockylinux8".into()));
        let alma10 = "ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"10.0\"\n";
        assert_eq!(
            detect(alma10, KNOWN),
            Detected::Known("rockylinux10".into())
        );
        let noble = "PRETTY_NAME=\"Ubuntu 24.04.2 LTS\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n";
        assert_eq!(detect(noble, KNOWN), Detected::Known("noble".into()));
        let jammy = "ID=ubuntu\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n";
        assert_eq!(detect(jammy, KNOWN), Detected::Known("jammy".into()));
        // Known family, no toolchain for the release; another distribution; an empty file.
        let focal = "ID=ubuntu\nVERSION_ID=\"20.04\"\nVERSION_CODENAME=focal\n";
        assert_eq!(
            detect(focal, KNOWN),
            Detected::Unknown("ubuntu 20.04 (focal)".into())
        );
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(detect(debian, KNOWN), Detected::Unknown("debian 12".into()));
        assert_eq!(
            detect("", KNOWN),
            Detected::Unknown("an unknown distribution".into())
        );
    }

    #[test]
    fn refuses_a_toolchain_newer_than_the_host_glibc() {
        let tc = |n: &str, g: &str| OsToolchain {
            name: n.into(),
            gcc: "1.0".into(),
            glibc: g.into(),
        };
        let all = vec![
            tc("rockylinux8", "2.28"),
            tc("jammy", "2.35"),
            tc("noble", "2.39"),
        ];
        let r = refuse("2.36", &all[2], &all).expect("2.36 < 2.39");
        assert_eq!(
            r,
            "toolchain noble needs glibc 2.39 but this host has glibc 2.36; toolchains that fit: --toolchain rockylinux8 | jammy (or --force to install anyway)"
        );
        assert_eq!(refuse("2.39", &all[2], &all), None);
        assert_eq!(refuse("2.41", &all[2], &all), None);
        assert!(refuse("2.17", &all[0], &all)
            .unwrap()
            .contains("no toolchain fits this host"));
        assert_eq!(refuse("", &all[0], &all), None);
    }
}
