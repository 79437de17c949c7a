//! Lmod modulefiles for installed specs, and nothing else.
//!
//! [`write_modules`] renders `templates/modules/*.lua.j2` (Jinja2 syntax, minijinja) for
//! installed packages into `<module_dir>/<name>/<version>.lua` (`<version>-gpu.lua` for a GPU
//! build, with the CPU build marked as the default in `.modulerc.lua` when both are there),
//! atomically. The templates are embedded in the binary ([`templates`]); a directory given in
//! [`ModuleOptions`] overrides them file by file. Which directories a module prepends is decided
//! here, from what exists in the package's prefix ([`layout`]), never in the template.

pub mod layout;
pub mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;
use tracing::info;

use crate::error::ErrorKind;
use crate::install::receipt::Receipt;
use crate::install::root::{
    absolute_root, existing_projection, installed_in, resolve_installed, Unresolved,
};
use crate::install::uninstall::display_name;
use crate::spec::{compiler_of, SpecFile, VariantValue, Version};

pub use templates::Templates;

#[derive(Debug, Error)]
pub enum ModulesError {
    #[error("{}: not an sf-cache install root (no .sf-cache/root.json); give the --root that packages were installed into", root.display())]
    NoRoot { root: PathBuf },
    #[error("no package with hash `{hash}` is installed in {}; install it first", root.display())]
    NotInstalled { root: PathBuf, hash: String },
    #[error("hash prefix `{hash}` matches several installed packages ({candidates}); give more characters of the hash")]
    Ambiguous { hash: String, candidates: String },
    #[error("{first} and {second} would both write the module {}; generate them separately (narrow the query) or into different module directories", path.display())]
    Duplicate {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("module template {name}: {reason}; fix the template (or remove it from the templates directory to use the built-in one)")]
    Template { name: String, reason: String },
    #[error("module templates directory {}: {source}; give a readable directory holding *.lua.j2 files", dir.display())]
    TemplateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("install root {}: {reason}", root.display())]
    Root { root: PathBuf, reason: String },
}

impl ModulesError {
    /// What sort of failure this is (the command line maps it to an exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModulesError::Ambiguous { .. } | ModulesError::TemplateDir { .. } => ErrorKind::Usage,
            ModulesError::NotInstalled { .. } => ErrorKind::NoMatch,
            _ => ErrorKind::Failure,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModulesError + '_ {
    move |source| ModulesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct ModuleOptions {
    /// Where `<name>/<version>.lua` files are written.
    pub module_dir: PathBuf,
    /// Override templates directory (`slurm.lua.j2`, `generic.lua.j2`, …); None = embedded
    /// defaults from templates/modules/ (include_str!).
    pub templates_dir: Option<PathBuf>,
    /// When Some, each module points at this view (merged tree) instead of the package's prefix.
    pub view: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenModule {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub path: PathBuf,
    pub prefix: PathBuf,
}

/// Write a file that other users may read (mode 0644) atomically: temporary file in the same
/// directory, fsync, rename.
pub(crate) fn write_public(path: &Path, bytes: &[u8]) -> Result<(), ModulesError> {
    use std::io::Write;
    crate::fs::write_atomic_with(path, crate::fs::Mode::Exact(0o644), ".sf-cache-tmp-", |f| {
        f.write_all(bytes)
    })
    .map_err(io_err(path))
}

/// The environment variable that overrides a module's prefix: `<NAME>_INSTALL_PREFIX`, the name
/// upper-cased with every character other than A-Z, 0-9 and `_` turned into `_`.
pub fn prefix_variable(name: &str) -> String {
    format!("{}_INSTALL_PREFIX", env_stem(name))
}

/// `<NAME>_ROOT`, as Spack's own modules set it.
pub fn root_variable(name: &str) -> String {
    format!("{}_ROOT", env_stem(name))
}

fn env_stem(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// `<module_dir>/<name>/<version>.lua`, with `/` in either part replaced.
pub fn module_path(module_dir: &Path, name: &str, version: &str) -> PathBuf {
    module_dir
        .join(module_name(name))
        .join(format!("{}.lua", module_name(version)))
}

/// A name or version as a path component of the module tree (`/` and NUL replaced).
fn module_name(s: &str) -> String {
    s.replace(['/', '\0'], "_")
}

/// Resolve full hashes or unique prefixes against the installed packages (order kept, each
/// package once).
pub(crate) fn resolve_hashes<'a>(
    root: &Path,
    installed: &'a [(PathBuf, Receipt)],
    hashes: &[String],
) -> Result<Vec<&'a (PathBuf, Receipt)>, ModulesError> {
    resolve_installed(installed, hashes).map_err(|e| match e {
        Unresolved::NotInstalled { hash } => ModulesError::NotInstalled {
            root: root.to_path_buf(),
            hash,
        },
        Unresolved::Ambiguous { hash, candidates } => ModulesError::Ambiguous { hash, candidates },
    })
}

/// The installed packages of a root, without locking it (see [`installed_in`]).
pub(crate) fn installed_packages(root: &Path) -> Result<Vec<(PathBuf, Receipt)>, ModulesError> {
    let projection = existing_projection(root)
        .map_err(|e| ModulesError::Root {
            root: root.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| ModulesError::NoRoot {
            root: root.to_path_buf(),
        })?;
    Ok(installed_in(root, &projection))
}

/// What a template sees.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleContext {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub short_hash: String,
    /// `platform-os-target` from the spec, when it says.
    pub arch: Option<String>,
    /// The prefix baked into the module (the package's prefix, or the view).
    pub prefix: String,
    /// `<NAME>_INSTALL_PREFIX`.
    pub prefix_var: String,
    /// `<NAME>_ROOT`.
    pub root_var: String,
    /// True when the module points at a view.
    pub view: bool,
    /// Environment variable → directories (relative to the prefix) to prepend, only those that
    /// exist: `PATH`, `MANPATH`, `LD_LIBRARY_PATH`, `PKG_CONFIG_PATH`.
    pub paths: BTreeMap<String, Vec<String>>,
    /// Prepend the prefix itself to `CMAKE_PREFIX_PATH`.
    pub cmake_prefix: bool,
    /// Default `SLURM_CONF` (the Slurm template).
    pub default_conf: String,
    /// The compiler the package was built with (`gcc@13.3.0`), when its spec says.
    pub build_compiler: Option<String>,
    /// The target it was built for (`x86_64_v3`), when its spec says.
    pub build_target: Option<String>,
    /// `gpu` for a build with a GPU variant on (`+nvml`, `+rsmi`, `+cuda`, `+rocm`), else `cpu`.
    pub build_type: String,
    /// The module's version: the package version, with `-gpu` for a GPU build, so that both
    /// builds of one release have their own module.
    pub module_version: String,
    /// `sf-cache <version>`.
    pub generator: String,
    /// The template file name used.
    pub template: String,
}

/// Default `SLURM_CONF` of the Slurm module.
pub const DEFAULT_SLURM_CONF: &str = "/etc/slurm/slurm.conf";

fn arch_of(spec: &serde_json::Value) -> Option<String> {
    let a = spec.get("arch")?;
    let platform = a.get("platform")?.as_str()?;
    let os = a.get("platform_os")?.as_str()?;
    let target = match a.get("target")? {
        serde_json::Value::String(s) => s.clone(),
        v => v.get("name")?.as_str()?.to_string(),
    };
    Some(format!("{platform}-{os}-{target}"))
}

/// Variants whose being on makes a build a GPU build.
const GPU_VARIANTS: &[&str] = &["nvml", "rsmi", "cuda", "rocm"];

/// How an installed package was built, from its `.spack/spec.json` (the whole DAG, so that a
/// Spack 1.x compiler, a build dependency, is found with its version).
struct Build {
    compiler: Option<String>,
    target: Option<String>,
    gpu: bool,
}

fn build_of(package_prefix: &Path) -> Build {
    let parsed = std::fs::read(package_prefix.join(".spack/spec.json"))
        .ok()
        .and_then(|bytes| SpecFile::parse(&bytes).ok());
    let Some(sf) = parsed else {
        return Build {
            compiler: None,
            target: None,
            gpu: false,
        };
    };
    let root = sf.root();
    Build {
        compiler: compiler_of(root, &|h| sf.find(h)).map(|c| format!("{}@{}", c.name, c.version)),
        target: root.arch.as_ref().map(|a| a.target.clone()),
        gpu: GPU_VARIANTS
            .iter()
            .any(|v| matches!(root.variants.get(*v), Some(VariantValue::Bool(true)))),
    }
}

/// The module version of a build: `<version>`, or `<version>-gpu` for a GPU build.
pub fn module_version(version: &str, gpu: bool) -> String {
    if gpu {
        format!("{version}-gpu")
    } else {
        version.to_string()
    }
}

/// The template context of one installed package.
pub fn module_context(package_prefix: &Path, receipt: &Receipt, prefix: &Path) -> ModuleContext {
    let l = layout::scan(package_prefix);
    let build = build_of(package_prefix);
    ModuleContext {
        name: receipt.name.clone(),
        version: receipt.version.clone(),
        hash: receipt.hash.clone(),
        short_hash: receipt.hash.chars().take(7).collect(),
        arch: arch_of(&receipt.spec),
        prefix: prefix.display().to_string(),
        prefix_var: prefix_variable(&receipt.name),
        root_var: root_variable(&receipt.name),
        view: false,
        paths: l.paths,
        cmake_prefix: l.cmake_prefix,
        default_conf: DEFAULT_SLURM_CONF.to_string(),
        build_compiler: build.compiler,
        build_target: build.target,
        build_type: if build.gpu { "gpu" } else { "cpu" }.to_string(),
        module_version: module_version(&receipt.version, build.gpu),
        generator: format!("sf-cache {}", env!("CARGO_PKG_VERSION")),
        template: String::new(),
    }
}

/// Write (atomically, replacing older ones) the modules of the installed specs with these DAG
/// hashes (full or unique prefixes) under `root`.
pub fn write_modules(
    root: &Path,
    hashes: &[String],
    opts: &ModuleOptions,
) -> Result<Vec<WrittenModule>, ModulesError> {
    let root = absolute_root(root).map_err(io_err(root))?;
    let installed = installed_packages(&root)?;
    let chosen = resolve_hashes(&root, &installed, hashes)?;
    let templates = Templates::load(opts.templates_dir.as_deref())?;
    let module_dir = absolute_root(&opts.module_dir).map_err(io_err(&opts.module_dir))?;
    let view = match &opts.view {
        Some(v) => Some(absolute_root(v).map_err(io_err(v))?),
        None => None,
    };

    // Render everything first: a template error writes nothing.
    let mut rendered: Vec<(WrittenModule, String, String)> = Vec::new();
    for (prefix, receipt) in chosen {
        let target = view.clone().unwrap_or_else(|| prefix.clone());
        let mut ctx = module_context(prefix, receipt, &target);
        ctx.view = view.is_some();
        let text = templates.render(&mut ctx)?;
        let path = module_path(&module_dir, &receipt.name, &ctx.module_version);
        if let Some((_, _, other)) = rendered.iter().find(|(w, _, _)| w.path == path) {
            return Err(ModulesError::Duplicate {
                path,
                first: other.clone(),
                second: display_name(receipt),
            });
        }
        rendered.push((
            WrittenModule {
                name: receipt.name.clone(),
                version: ctx.module_version.clone(),
                hash: receipt.hash.clone(),
                path,
                prefix: target,
            },
            text,
            display_name(receipt),
        ));
    }
    let mut written: Vec<WrittenModule> = Vec::new();
    for (w, text, _) in rendered {
        write_public(&w.path, text.as_bytes())?;
        info!("module {} for {}@{}", w.path.display(), w.name, w.version);
        written.push(w);
    }
    let mut names: Vec<&str> = written.iter().map(|w| w.name.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        write_default_marker(&module_dir, name)?;
    }
    Ok(written)
}

/// Where a package has GPU and CPU modules side by side, mark the newest CPU one as the default
/// in `<module_dir>/<name>/.modulerc.lua` (Lmod would otherwise take the highest version, which
/// may be a `-gpu` one).
fn write_default_marker(module_dir: &Path, name: &str) -> Result<(), ModulesError> {
    let dir_name = module_name(name);
    let dir = module_dir.join(&dir_name);
    let versions: Vec<String> = crate::fs::sorted_entries(&dir)
        .map_err(io_err(&dir))?
        .into_iter()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_suffix(".lua")
                .filter(|v| !v.starts_with('.'))
                .map(str::to_string)
        })
        .collect();
    if !versions.iter().any(|v| v.ends_with("-gpu")) {
        return Ok(());
    }
    let Some(default) = versions
        .iter()
        .filter(|v| !v.ends_with("-gpu"))
        .max_by(|a, b| Version::parse(a).ok().cmp(&Version::parse(b).ok()))
    else {
        return Ok(());
    };
    let text = format!(
        "-- Written by sf-cache: `module load {dir_name}` takes the CPU build; the GPU build is {dir_name}/<version>-gpu.\nmodule_version({:?}, \"default\")\n",
        format!("{dir_name}/{default}")
    );
    write_public(&dir.join(".modulerc.lua"), text.as_bytes())
}

#[cfg(test)]
mod tests;
