//! Host microarchitecture and target compatibility (archspec's table).

use std::sync::Arc;

use archspec::cpu::Microarchitecture;

/// Environment variable overriding the detected host microarchitecture (for tests).
pub const HOST_TARGET_ENV: &str = "SF_CACHE_HOST_TARGET";

/// The host's microarchitecture, for deciding which binaries it can run.
#[derive(Debug, Clone)]
pub struct HostTargets {
    host: Arc<Microarchitecture>,
}

impl HostTargets {
    /// Detect the host (archspec), unless `SF_CACHE_HOST_TARGET` names one. Falls back to the
    /// generic family of the machine architecture if detection fails.
    pub fn detect() -> HostTargets {
        if let Ok(name) = std::env::var(HOST_TARGET_ENV) {
            let name = name.trim();
            if !name.is_empty() {
                return HostTargets::for_target(name);
            }
        }
        match archspec::cpu::host() {
            Ok(host) => HostTargets { host },
            Err(_) => {
                let arch = std::env::consts::ARCH;
                tracing::warn!(
                    arch,
                    "could not detect the host microarchitecture; using the generic family"
                );
                HostTargets::for_target(arch)
            }
        }
    }

    /// A host of the named microarchitecture (unknown names become a generic target of that
    /// name).
    pub fn for_target(name: &str) -> HostTargets {
        let host = Microarchitecture::known_targets()
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(Microarchitecture::generic(name)));
        HostTargets { host }
    }

    /// The host microarchitecture's name (e.g. `zen3`).
    pub fn name(&self) -> &str {
        self.host.name()
    }

    /// The host's family (e.g. `x86_64`, `aarch64`, `ppc64le`).
    pub fn family(&self) -> &str {
        self.host.family().name()
    }

    /// Whether a binary built for `target` runs here: the host is that target or a descendant.
    /// Unknown target names run only when equal to the host's name or family name.
    pub fn can_run(&self, target: &str) -> bool {
        self.rank(target).is_some()
    }

    /// None if the host cannot run `target`; otherwise larger = more specific (closer to the
    /// host). The host itself ranks highest; the generic family ranks 1.
    pub fn rank(&self, target: &str) -> Option<u32> {
        let depth = |m: &Microarchitecture| m.ancestors().len() as u32 + 1;
        if target == self.host.name() {
            return Some(depth(&self.host));
        }
        match Microarchitecture::known_targets().get(target) {
            Some(t) => {
                if self.host.ancestors().iter().any(|a| a.name() == t.name()) {
                    Some(depth(t))
                } else {
                    None
                }
            }
            None => (target == self.family()).then_some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_levels_and_families() {
        let h = HostTargets::for_target("zen3");
        assert_eq!(h.name(), "zen3");
        assert_eq!(h.family(), "x86_64");
        for t in ["x86_64", "x86_64_v2", "x86_64_v3", "zen", "zen2", "zen3"] {
            assert!(h.can_run(t), "{t}");
        }
        for t in [
            "x86_64_v4",
            "zen4",
            "skylake_avx512",
            "aarch64",
            "nonsense",
            "ppc64le",
        ] {
            assert!(!h.can_run(t), "{t}");
        }
        let r = |t| h.rank(t).unwrap();
        assert!(r("x86_64") < r("x86_64_v2"));
        assert!(r("x86_64_v2") < r("x86_64_v3"));
        assert!(r("zen2") < r("zen3"));
        assert_eq!(r("x86_64"), 1);
        assert_eq!(h.rank("zen4"), None);
    }

    #[test]
    fn generic_hosts() {
        let h = HostTargets::for_target("x86_64");
        assert!(h.can_run("x86_64"));
        assert!(!h.can_run("x86_64_v2"));
        let a = HostTargets::for_target("neoverse_v1");
        assert_eq!(a.family(), "aarch64");
        assert!(a.can_run("aarch64"));
        assert!(!a.can_run("x86_64"));
        let u = HostTargets::for_target("riscv64");
        assert!(u.can_run("riscv64"));
        assert!(!u.can_run("x86_64"));
    }

    #[test]
    fn detect_runs() {
        let h = HostTargets::detect();
        assert!(h.can_run(h.family()));
        assert!(h.can_run(h.name()));
    }
}
