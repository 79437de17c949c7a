//! The files a build hands to Spack: the environment (`spack.yaml`) and the script the runtime
//! runs (`build.sh`), rendered with minijinja from `templates/spack/` (embedded in the binary; a
//! templates directory overrides them file by file).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::BuildError;

/// Embedded defaults, by file name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        SPACK_YAML,
        include_str!("../../templates/spack/spack.yaml.j2"),
    ),
    (BUILD_SH, include_str!("../../templates/spack/build.sh.j2")),
];

pub const SPACK_YAML: &str = "spack.yaml.j2";
pub const BUILD_SH: &str = "build.sh.j2";

/// Install trees are padded to this length so that the binaries relocate into any shorter prefix.
pub const PADDED_LENGTH: usize = 128;
/// Projection of the build's install tree (short hashes keep the padded prefixes readable).
pub const PROJECTION: &str = "{name}-{version}-{hash:7}";

/// A mirror Spack may reuse binaries from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvMirror {
    pub name: String,
    pub url: String,
    pub signed: bool,
}

/// A package repository, as Spack sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvRepo {
    pub name: String,
    pub path: String,
}

/// Everything `spack.yaml.j2` is rendered from. Paths are as Spack sees them (inside the
/// container for a container runtime).
#[derive(Debug, Clone, Serialize)]
pub struct EnvContext {
    pub spec: String,
    pub install_root: String,
    pub padded_length: usize,
    pub projection: String,
    pub source_cache: String,
    pub stage: String,
    pub misc_cache: String,
    pub local_cache: String,
    pub mirrors: Vec<EnvMirror>,
    pub repos: Vec<EnvRepo>,
    pub jobs: Option<usize>,
}

/// What `build.sh.j2` is rendered from.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptContext {
    /// The Spack command (a path or `spack`).
    pub spack: String,
    pub env_dir: String,
    /// Install and trust the keys of the signed mirrors first.
    pub trust_mirrors: bool,
    pub keep_stage: bool,
}

/// The templates: embedded ones, each replaced by a file of the same name in `dir` when given.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub dir: Option<PathBuf>,
}

/// A string as a YAML scalar: JSON's double-quoted form is valid YAML and escapes everything.
fn yaml_quote(s: String) -> String {
    serde_json::to_string(&s).unwrap_or_else(|_| "\"\"".into())
}

/// A string as one POSIX shell word.
fn sh_quote(s: String) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s;
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Templates {
    pub fn new(dir: Option<PathBuf>) -> Templates {
        Templates { dir }
    }

    /// The source of template `name` and where it came from.
    fn source(&self, name: &str) -> Result<(String, String), BuildError> {
        if let Some(dir) = &self.dir {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => return Ok((t, p.display().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(BuildError::Template {
                        name: p.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        EMBEDDED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| (t.to_string(), format!("embedded {name}")))
            .ok_or_else(|| BuildError::Template {
                name: name.into(),
                reason: "no such template".into(),
            })
    }

    fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, BuildError> {
        let (text, origin) = self.source(name)?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_filter("q", yaml_quote);
        env.add_filter("sh", sh_quote);
        let source_text = text.clone();
        let bad = |e: minijinja::Error| {
            // One line: the error and the template line it points at.
            let at = e
                .line()
                .and_then(|n| source_text.lines().nth(n.saturating_sub(1)))
                .map(|l| format!(": `{}`", l.trim()))
                .unwrap_or_default();
            BuildError::Template {
                name: origin.clone(),
                reason: format!("{e}{at}"),
            }
        };
        env.add_template_owned(name.to_string(), text)
            .map_err(bad)?;
        env.get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(bad)
    }

    pub fn render_env(&self, ctx: &EnvContext) -> Result<String, BuildError> {
        let out = self.render(SPACK_YAML, ctx)?;
        // A template that renders YAML Spack cannot read should fail here, naming the template.
        serde_norway::from_str::<serde_norway::Value>(&out).map_err(|e| BuildError::Template {
            name: self.origin(SPACK_YAML),
            reason: format!("renders invalid YAML: {e}"),
        })?;
        Ok(out)
    }

    pub fn render_script(&self, ctx: &ScriptContext) -> Result<String, BuildError> {
        self.render(BUILD_SH, ctx)
    }

    fn origin(&self, name: &str) -> String {
        self.source(name)
            .map(|(_, o)| o)
            .unwrap_or_else(|_| name.into())
    }
}

/// A local path as a `file://` URL (other URLs are returned as they are).
pub fn as_url(location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else {
        format!("file://{}", Path::new(location).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/build/testdata")
            .join(name)
    }

    /// Compare with a golden file; `SF_CACHE_BLESS=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let p = testdata(name);
        if std::env::var_os("SF_CACHE_BLESS").is_some() {
            std::fs::write(&p, actual).unwrap();
        }
        let want = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (SF_CACHE_BLESS=1 writes it)", p.display()));
        assert_eq!(
            actual,
            want,
            "rendering differs from {} (SF_CACHE_BLESS=1 rewrites it)",
            p.display()
        );
    }

    fn container_ctx() -> EnvContext {
        EnvContext {
            spec: "slurm@25.11 +nvml %gcc@13.4.0".into(),
            install_root: "/home/u/.local/share/sf-cache/build/opt".into(),
            padded_length: PADDED_LENGTH,
            projection: PROJECTION.into(),
            source_cache: "/sf-cache/source-cache".into(),
            stage: "/sf-cache/stage".into(),
            misc_cache: "/sf-cache/out/misc-cache".into(),
            local_cache: "file:///sf-cache/buildcache".into(),
            mirrors: vec![
                EnvMirror {
                    name: "slurm-factory".into(),
                    url: "https://slurm-factory-spack-binary-cache.vantagecompute.ai/slurm/25.11/13.4.0/buildcache".into(),
                    signed: true,
                },
                EnvMirror {
                    name: "site: \"odd\" name".into(),
                    url: "file:///sf-cache/mirrors/1".into(),
                    signed: false,
                },
            ],
            repos: vec![EnvRepo {
                name: "slurm_factory".into(),
                path: "/sf-cache/repos/spack_repo/slurm_factory".into(),
            }],
            jobs: Some(8),
        }
    }

    #[test]
    fn spack_yaml_golden_container() {
        let out = Templates::default().render_env(&container_ctx()).unwrap();
        golden("spack.container.yaml", &out);
    }

    #[test]
    fn spack_yaml_golden_host_minimal() {
        let ctx = EnvContext {
            spec: "sf-hello".into(),
            install_root: "/tmp/x/build/opt".into(),
            source_cache: "/tmp/x/build/source-cache".into(),
            stage: "/tmp/x/build/runs/1/stage".into(),
            misc_cache: "/tmp/x/build/runs/1/out/misc-cache".into(),
            local_cache: "file:///tmp/x/build/buildcache".into(),
            mirrors: vec![],
            repos: vec![EnvRepo {
                name: "slurm_factory".into(),
                path: "/tmp/x/build/repo/spack_repo/slurm_factory".into(),
            }],
            jobs: None,
            ..container_ctx()
        };
        let out = Templates::default().render_env(&ctx).unwrap();
        golden("spack.host.yaml", &out);
    }

    #[test]
    fn rendered_yaml_has_the_settings_spack_needs() {
        let out = Templates::default().render_env(&container_ctx()).unwrap();
        let v: serde_norway::Value = serde_norway::from_str(&out).unwrap();
        let s = &v["spack"];
        assert_eq!(
            s["specs"][0].as_str(),
            Some("slurm@25.11 +nvml %gcc@13.4.0")
        );
        let tree = &s["config"]["install_tree"];
        assert_eq!(tree["padded_length"].as_u64(), Some(128));
        assert_eq!(
            tree["projections"]["all"].as_str(),
            Some("{name}-{version}-{hash:7}")
        );
        assert_eq!(
            s["config"]["shared_linking"]["type"].as_str(),
            Some("rpath")
        );
        assert_eq!(
            s["mirrors"]["site: \"odd\" name"]["signed"].as_bool(),
            Some(false)
        );
        assert_eq!(
            s["mirrors"]["slurm-factory"]["signed"].as_bool(),
            Some(true)
        );
        assert_eq!(
            s["repos"]["slurm_factory"].as_str(),
            Some("/sf-cache/repos/spack_repo/slurm_factory")
        );
    }

    #[test]
    fn build_script_golden() {
        let out = Templates::default()
            .render_script(&ScriptContext {
                spack: "/sf-cache/spack/bin/spack".into(),
                env_dir: "/sf-cache/env".into(),
                trust_mirrors: true,
                keep_stage: true,
            })
            .unwrap();
        golden("build.sh", &out);
        let plain = Templates::default()
            .render_script(&ScriptContext {
                spack: "/opt/my spack/bin/spack".into(),
                env_dir: "/sf-cache/env".into(),
                trust_mirrors: false,
                keep_stage: false,
            })
            .unwrap();
        assert!(
            plain.contains(
                "exec '/opt/my spack/bin/spack' -e /sf-cache/env install --fail-fast -v\n"
            ),
            "{plain}"
        );
        assert!(!plain.contains("buildcache keys"), "{plain}");
    }

    #[test]
    fn override_dir_replaces_one_template_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SPACK_YAML),
            "spack:\n  specs: [{{ spec | q }}]\n",
        )
        .unwrap();
        let t = Templates::new(Some(dir.path().to_path_buf()));
        assert_eq!(
            t.render_env(&container_ctx()).unwrap(),
            "spack:\n  specs: [\"slurm@25.11 +nvml %gcc@13.4.0\"]\n"
        );
        // build.sh still comes from the embedded default.
        assert!(t
            .render_script(&ScriptContext {
                spack: "spack".into(),
                env_dir: "/e".into(),
                trust_mirrors: false,
                keep_stage: false,
            })
            .unwrap()
            .contains("exec spack -e /e install"));
        // An unknown variable is an error naming the file.
        std::fs::write(dir.path().join(SPACK_YAML), "spack: {{ nope }}\n").unwrap();
        let e = t.render_env(&container_ctx()).unwrap_err().to_string();
        assert!(e.contains(SPACK_YAML) && e.contains("nope"), "{e}");
        // Output that is not YAML too.
        std::fs::write(dir.path().join(SPACK_YAML), "spack: [unclosed\n").unwrap();
        let e = t.render_env(&container_ctx()).unwrap_err().to_string();
        assert!(e.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn quoting() {
        assert_eq!(yaml_quote("a: b".into()), "\"a: b\"");
        assert_eq!(sh_quote("/usr/bin/spack".into()), "/usr/bin/spack");
        assert_eq!(sh_quote("it's".into()), r"'it'\''s'");
        assert_eq!(sh_quote(String::new()), "''");
        assert_eq!(as_url("/srv/cache"), "file:///srv/cache");
        assert_eq!(as_url("s3://b/p"), "s3://b/p");
    }
}
