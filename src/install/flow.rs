//! The install flow as a library, called with plain typed options (never command-line types):
//! [`prepare`] decides the root and its projection before anything is read from the network;
//! [`execute`] takes a [`Plan`] and does the rest — external checks, downloads, prefix-length
//! checks, unpack, relocate, commit, and the view. The command edge resolves the queries (and a
//! build on a miss) in between and prints.

use std::path::{Path, PathBuf};

use super::gc;
use super::installer::{self, InstallError, InstallOptions, InstallReport};
use super::plan::{Action, Plan};
use super::projection::Projection;
use super::root::{absolute_root, existing_projection, InstallRoot};
use super::view;
use crate::buildcache::Catalog;
use crate::error::ErrorKind;
use crate::fetch::Fetcher;

/// Why the flow stopped (beyond the installer's own errors).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Root(String),
    #[error("{0}")]
    View(String),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FlowError {
    /// What sort of failure this is (the command line maps it to an exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            FlowError::Usage(_) => ErrorKind::Usage,
            FlowError::Install(e) => e.kind(),
            _ => ErrorKind::Failure,
        }
    }
}

/// Where to install: the root as given and the projection asked for.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub root: &'a Path,
    /// `--projection`: must agree with a root that has one.
    pub projection_flag: Option<&'a str>,
    /// The config's `[install] projection`: used for a new root only.
    pub projection_config: Option<&'a str>,
    /// `--view`.
    pub view: Option<&'a Path>,
}

/// A root ready to plan against: its absolute path and projection.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub root_dir: PathBuf,
    pub projection: Projection,
}

/// The root and its projection, decided before anything is downloaded. Precedence: the flag,
/// then the config, then the root's own (which a different flag may not override), then the
/// default.
pub fn prepare(t: &Target<'_>) -> Result<Prepared, FlowError> {
    let root_dir = absolute_root(t.root).map_err(|e| FlowError::Io {
        path: t.root.to_path_buf(),
        source: e,
    })?;
    let requested = match t.projection_flag.or(t.projection_config) {
        Some(p) => Some(Projection::parse(p).map_err(|e| FlowError::Usage(e.to_string()))?),
        None => None,
    };
    super::root::check_is_dir(&root_dir).map_err(FlowError::Root)?;
    let existing = existing_projection(&root_dir).map_err(|e| FlowError::Root(e.to_string()))?;
    let projection = match (&existing, &requested) {
        (Some(e), Some(r)) if e != r && t.projection_flag.is_some() => {
            return Err(FlowError::Usage(format!(
                "install root {} uses projection `{}`, not `{}`; use the same projection or another root",
                root_dir.display(),
                e.as_str(),
                r.as_str()
            )))
        }
        (Some(e), _) => e.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => Projection::default(),
    };
    if let Some(v) = t.view {
        let v = absolute_root(v).map_err(|e| FlowError::Io {
            path: v.to_path_buf(),
            source: e,
        })?;
        if v == root_dir {
            return Err(FlowError::Usage(format!(
                "--view {} is the install root itself; give the view its own directory",
                v.display()
            )));
        }
    }
    Ok(Prepared {
        root_dir,
        projection,
    })
}

/// How [`execute`] installs.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub allow_setuid: bool,
    /// Add the plan's packages to this view (made when absent).
    pub view: Option<PathBuf>,
    /// The registry of install roots that `cache gc` reads.
    pub roots_registry: PathBuf,
    /// Where unpacking and relocation are reported.
    pub progress: installer::StageReporter,
}

/// What the flow installed.
#[derive(Debug)]
pub struct Installed {
    pub root: PathBuf,
    pub report: InstallReport,
    pub view: Option<String>,
}

/// Download, check, unpack, relocate and commit what `plan` says, then update the view.
/// `fetched` is called once the downloads are over (e.g. to clear progress bars).
pub async fn execute(
    prepared: &Prepared,
    plan: &Plan,
    catalog: &Catalog,
    fetcher: &Fetcher,
    opts: &ExecOptions,
    fetched: impl FnOnce(),
) -> Result<Installed, FlowError> {
    installer::check_externals(plan, catalog)?;
    if plan.to_install().next().is_some() {
        super::root::check_writable(&prepared.root_dir).map_err(FlowError::Root)?;
    }
    // A root too long for the packages is refused before anything is downloaded.
    let known =
        installer::check_prefix_lengths_early(plan, catalog, fetcher, &prepared.root_dir).await?;
    // Held until the packages are committed: a concurrent `cache gc`/`clean` waits for it.
    let _cache_held = fetcher.hold_cache().await.map_err(InstallError::from)?;
    let tarballs = installer::fetch_tarballs(plan, catalog, fetcher).await;
    fetched();
    let tarballs = tarballs?;
    let build_prefixes =
        installer::check_prefix_lengths(plan, &prepared.root_dir, &tarballs, &known)?;

    let root = InstallRoot::open(&prepared.root_dir, Some(&prepared.projection), true)
        .map_err(|e| FlowError::Root(e.to_string()))?;
    if let Err(e) = gc::register_root(&opts.roots_registry, &root.dir) {
        tracing::warn!("{e}");
    }
    let unpack_jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let report = installer::execute(
        plan,
        catalog,
        &root,
        &tarballs,
        &InstallOptions {
            allow_setuid: opts.allow_setuid,
            unpack_jobs,
            progress: opts.progress.clone(),
            build_prefixes,
        },
    )
    .await?;
    // The root's Spack database, so that Spack can use the root as an upstream.
    super::spack_db::refresh(&root);
    let mut view_path = None;
    if let Some(v) = &opts.view {
        let mut hashes: Vec<String> = view::read_view(v)
            .ok()
            .flatten()
            .map(|r| r.hashes)
            .unwrap_or_default();
        for item in &plan.items {
            if !matches!(item.action, Action::External { .. }) && !hashes.contains(&item.node.hash)
            {
                hashes.push(item.node.hash.clone());
            }
        }
        let installed: Vec<String> = root.installed().into_iter().map(|(_, r)| r.hash).collect();
        hashes.retain(|h| installed.contains(h));
        let r = view::build_view(v, &root, &hashes).map_err(|e| FlowError::View(e.to_string()))?;
        view_path = Some(r.view.display().to_string());
    }
    Ok(Installed {
        root: root.dir.clone(),
        report,
        view: view_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(root: &Path) -> Target<'_> {
        Target {
            root,
            projection_flag: None,
            projection_config: None,
            view: None,
        }
    }

    #[test]
    fn projection_precedence_flag_then_config_then_root_then_default() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let p = prepare(&target(&root)).unwrap();
        assert_eq!(p.projection, Projection::default());
        assert_eq!(p.root_dir, root);
        let cfg = "{name}/{version}-{hash:7}";
        let p = prepare(&Target {
            projection_config: Some(cfg),
            ..target(&root)
        })
        .unwrap();
        assert_eq!(p.projection.as_str(), cfg);
        let flag = "{name}-{hash}";
        let p = prepare(&Target {
            projection_flag: Some(flag),
            projection_config: Some(cfg),
            ..target(&root)
        })
        .unwrap();
        assert_eq!(p.projection.as_str(), flag);
    }

    #[test]
    fn a_root_keeps_its_projection_and_a_different_flag_is_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let own = Projection::parse("{name}/{hash}").unwrap();
        InstallRoot::open(&root, Some(&own), true).unwrap();
        // The config does not override the root's own projection.
        let p = prepare(&Target {
            projection_config: Some("{name}-{hash}"),
            ..target(&root)
        })
        .unwrap();
        assert_eq!(p.projection, own);
        let e = prepare(&Target {
            projection_flag: Some("{name}-{hash}"),
            ..target(&root)
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(
            e.to_string().contains("uses projection `{name}/{hash}`"),
            "{e}"
        );
    }

    #[test]
    fn a_view_on_the_root_itself_is_refused_before_anything_else() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let e = prepare(&Target {
            view: Some(&root),
            ..target(&root)
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().contains("is the install root itself"), "{e}");
        assert!(!root.exists(), "nothing created");
    }
}
