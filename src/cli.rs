//! Command-line definitions (clap). Help, man page and completions all come from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SF_CACHE_GIT_COMMIT"),
    ", ",
    env!("SF_CACHE_BUILD_TARGET"),
    ", ",
    env!("SF_CACHE_BUILD_PROFILE"),
    ")"
);

/// Install, verify, mirror and publish Spack binary buildcaches, without Spack.
#[derive(Debug, Parser)]
#[command(name = "sf-cache", version, long_version = LONG_VERSION, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 other failure, 2 usage error, 3 verification failure, 4 nothing matches the query."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More logging (-v debug, -vv trace); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print nothing but errors and results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (TOML); default `$SF_CACHE_HOME/config.toml` or the XDG config directory.
    #[arg(long, global = true, value_name = "FILE", env = "SF_CACHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Accept unsigned packages from every mirror.
    #[arg(long, global = true)]
    pub allow_unsigned: bool,
    /// Extra CA bundle (PEM) for HTTPS mirrors, e.g. behind a TLS-intercepting proxy.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Endpoint of an S3-compatible server for s3:// locations (e.g. http://127.0.0.1:9000);
    /// default: $SF_CACHE_S3_ENDPOINT, `[network] s3_endpoint`, $S3_ENDPOINT_URL, then AWS's own.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Seconds a server may stay silent (while connecting, and between two reads) before a
    /// request is abandoned; default `[network] read_timeout`, else 60 (connect: 15).
    /// A silent server fails a request after at most (retries + 1) × this.
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Retries of a request that failed on the network, timed out or got HTTP 5xx/429;
    /// default `[network] retries`, else 3.
    #[arg(long, global = true, value_name = "N")]
    pub retries: Option<u32>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct MirrorArgs {
    /// Buildcache to read: URL (file://, http://, https://, s3://), path, or a mirror name from
    /// the config.
    /// Repeatable; earlier mirrors win on a tie. Default: the mirrors of the config file.
    #[arg(short, long = "mirror", value_name = "MIRROR")]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the specs a buildcache offers.
    List(ListArgs),
    /// Show the best match for a query: spec, dependencies, blobs, signature, closure.
    Show(ShowArgs),
    /// Install packages and their run/link closure into a root, without Spack.
    Install(InstallArgs),
    /// Check installed packages against their receipts (modified, missing, extra files).
    Verify(VerifyArgs),
    /// Remove installed packages (refused while others depend on them, unless --force).
    Uninstall(UninstallArgs),
    /// A software bill of materials (SPDX 2.3 or CycloneDX 1.6 JSON) of an installed package's
    /// closure (--root) or of a cache entry's (--mirror).
    Sbom(SbomArgs),
    /// Rewrite the root's Spack database (ROOT/.spack-db/index.json) from what is installed, so
    /// that Spack can use the root as an upstream (done by every install, uninstall and relocate).
    Reindex(ReindexArgs),
    /// The local blob cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Manage trusted OpenPGP keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a buildcache (or the closures of queries) to another store, or into a one-file bundle.
    Mirror(MirrorCmdArgs),
    /// Verify a bundle made by `mirror --bundle` and write it out as a buildcache.
    Import(ImportArgs),
    /// Publish installed prefixes as a (signed) layout-v3 buildcache that Spack and sf-cache install.
    Publish(PublishArgs),
    /// Rebuild a buildcache's index from the spec manifests it holds (keeps existing records).
    UpdateIndex(UpdateIndexArgs),
    /// Slurm Factory named caches: Slurm by release and GCC toolchain (`slurm list`, `slurm install`).
    #[command(subcommand)]
    Slurm(SlurmCommand),
    /// Write Lmod modules (`<name>/<version>.lua`) for installed packages.
    Module(ModuleArgs),
    /// Fix up an install root (or an extracted export) after it was moved to another path.
    Relocate(RelocateArgs),
    /// Write one relocatable .tar.gz of installed packages with a view and Lmod modules.
    Export(ExportArgs),
    /// Build a spec from source with Spack (in a container or on the host) and publish it into
    /// the local buildcache.
    Build(BuildArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Spec query, e.g. `greet@2.1 %gcc@12`.
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    #[command(flatten)]
    pub mirrors: MirrorArgs,
    /// Also list externals and nodes without a binary (build-only dependencies).
    #[arg(long)]
    pub all: bool,
    /// List what is installed in this root instead of what the mirrors offer.
    #[arg(long, value_name = "DIR", conflicts_with = "all")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct InstallArgs {
    /// Spec queries, e.g. `greet@2.1` or `slurm@25.11 %gcc@13.4.0 +gpu` (one query per argument;
    /// quote queries that contain spaces).
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    #[command(flatten)]
    pub mirrors: MirrorArgs,
    /// Install root; each package lands in DIR/<projection>.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Projection below the root (default `{name}-{version}-{hash}`; fixed at a root's first install).
    #[arg(long, value_name = "PATTERN")]
    pub projection: Option<String>,
    /// Concurrent downloads (default: 8).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the plan (installed, to fetch, sizes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Use only the local caches (indexes, metadata, blobs): no network.
    #[arg(long)]
    pub offline: bool,
    /// Link the installed closure into one merged tree (bin, lib, share …) at DIR.
    #[arg(long, value_name = "DIR")]
    pub view: Option<PathBuf>,
    /// Write the exact plan (hashes, metadata and tarball digests, mirrors) to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "lockfile")]
    pub write_lockfile: Option<PathBuf>,
    /// Install exactly the plan in FILE; fail if anything differs.
    #[arg(long, value_name = "FILE")]
    pub lockfile: Option<PathBuf>,
    /// Keep setuid/setgid bits from archives (refused by default).
    #[arg(long)]
    pub allow_setuid: bool,
    /// When no mirror has a match, build the query from source (`sf-cache build`) and install
    /// the result from the local buildcache (not with --dry-run: a miss is reported).
    #[arg(long)]
    pub build_on_miss: bool,
    #[command(flatten)]
    pub build: BuildFlags,
    // --- Spack sites (issue 14) ---
    /// Install exactly the roots of a Spack environment lockfile (`spack.lock`, versions 5–6)
    /// and their link/run closures, by hash: no query resolution.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["lockfile", "query"])]
    pub spack_lock: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only packages matching this query (default: all).
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    Spdx,
    Cyclonedx,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// Packages whose closures to describe (one query per argument, one document each).
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Describe installed packages of this root (with every installed file).
    #[arg(long, value_name = "DIR", conflicts_with = "mirrors")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub mirrors: MirrorArgs,
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: SbomFormat,
    /// Write the document to FILE (several queries: into the directory FILE, one file each);
    /// default: standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// The install root.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Remove even when other installed packages depend on it.
    #[arg(long)]
    pub force: bool,
    /// Views to rebuild without the removed packages.
    #[arg(long, value_name = "DIR")]
    pub view: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove blobs that no receipt of a known install root references.
    Gc,
    /// Remove every cached blob and index.
    Clean,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Spec query, e.g. `slurm@25.11 %gcc@13.4.0 +gpu` or `/hashprefix`.
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
    #[command(flatten)]
    pub mirrors: MirrorArgs,
    /// Also download and check every install tarball of the closure.
    #[arg(long)]
    pub verify_blobs: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List trusted keys and pinned fingerprints.
    List,
    /// Trust the public key(s) in an armored file.
    Add {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Stop trusting a key added with `keys add` or `keys trust-mirror`.
    Remove {
        #[arg(value_name = "FINGERPRINT")]
        fingerprint: String,
    },
    /// Show the keys a mirror publishes; trust them with --yes.
    TrustMirror {
        #[arg(value_name = "MIRROR")]
        mirror: String,
        /// Trust the keys shown.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct MirrorCmdArgs {
    /// Buildcache to copy: path, file://, http(s)://, s3://, or a mirror name from the config.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to write the copy (path, file:// or s3://). Omitted with --bundle.
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
    /// Spec queries: copy only the run/link closures of their best matches (default: everything).
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    /// Also copy the build dependencies that have binaries.
    #[arg(long)]
    pub with_build_deps: bool,
    /// Convert v2 specs to this layout (only `v3`); converted manifests are signed with --key.
    #[arg(long, value_name = "LAYOUT", value_parser = ["v3"])]
    pub to_layout: Option<String>,
    /// Armored secret key that signs converted manifests (passphrase: $SF_CACHE_KEY_PASSPHRASE
    /// or --passphrase-file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of --key (first line).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub passphrase_file: Option<PathBuf>,
    /// Find the manifests by listing the source store instead of reading its index.
    #[arg(long)]
    pub list_objects: bool,
    /// Write one bundle file (zstd-compressed tar) instead of a directory.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Concurrent transfers (default: 8).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Bundle written by `sf-cache mirror SRC --bundle FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to write the buildcache (path, file:// or s3://).
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// Concurrent transfers (default: 8).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("signing").required(true).args(["key", "unsigned"])))]
pub struct PublishArgs {
    /// Installed prefixes (each holds `.spack/spec.json`), installed by sf-cache or by Spack.
    #[arg(value_name = "PREFIX", required = true, num_args = 1..)]
    pub prefixes: Vec<PathBuf>,
    /// Buildcache to write: path, file:// or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Armored OpenPGP secret key that signs the manifests (passphrase: $SF_CACHE_KEY_PASSPHRASE
    /// or --passphrase-file; never on the command line).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of --key (first line).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub passphrase_file: Option<PathBuf>,
    /// Publish unsigned manifests (readers need --allow-unsigned or `signed = false`).
    #[arg(long)]
    pub unsigned: bool,
    /// Rewrite entries that already exist in DEST.
    #[arg(long)]
    pub force: bool,
    /// Do not update the index (run `sf-cache update-index DEST` later).
    #[arg(long)]
    pub no_index: bool,
    /// Also publish link/run dependencies that DEST lacks, from the same install root.
    #[arg(long)]
    pub with_deps: bool,
    /// Also pack files added or changed since the install (listed first; files that look like
    /// secret keys still need --include-private).
    #[arg(long)]
    pub include_untracked: bool,
    /// Pack this file (or directory) although it is not world-readable or looks like a secret
    /// key: the tarball makes it readable by everyone who reads the cache. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub include_private: Vec<PathBuf>,
    /// List what would be packed of each prefix and why each other file is left out; write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Store a CycloneDX SBOM of each entry as a blob named in its signed manifest.
    #[arg(long)]
    pub sbom: bool,
    /// Prefixes packed at once (default: the number of cores).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct UpdateIndexArgs {
    /// Buildcache whose index is rebuilt from the spec manifests present: path, file:// or s3://.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// Concurrent reads (default: 8).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Show what the Slurm Factory caches offer for each Slurm release and GCC toolchain.
    List(SlurmListArgs),
    /// Install Slurm and the GCC runtime from the Slurm Factory caches, with a view and a module.
    Install(Box<SlurmInstallArgs>),
    /// Make an installed Slurm a running node: slurm.conf, the MUNGE key, directories, users
    /// and systemd units for the node's roles.
    Setup(SlurmSetupArgs),
}

/// How `slurm setup` (and `slurm install --setup`) lays out a node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The cluster's name (ClusterName).
    #[arg(long, value_name = "NAME", default_value = "cluster")]
    pub cluster: String,
    /// The controller's host name (SlurmctldHost; default: this host).
    #[arg(long, value_name = "HOST")]
    pub controller: Option<String>,
    /// The cluster's MUNGE key to install (default: keep this node's, or make one with the
    /// installed mungekey).
    #[arg(long, value_name = "FILE")]
    pub munge_key: Option<PathBuf>,
    /// Configuration directory: DIR/slurm/slurm.conf, DIR/munge/munge.key.
    #[arg(long, value_name = "DIR", default_value = "/etc")]
    pub sysconfdir: PathBuf,
    /// State and logs: DIR/spool/slurm*, DIR/log/{slurm,munge}, DIR/lib/munge.
    #[arg(long, value_name = "DIR", default_value = "/var")]
    pub localstatedir: PathBuf,
    /// Runtime files: DIR/munge/munge.socket.2, DIR/slurm/*.pid.
    #[arg(long, value_name = "DIR", default_value = "/run")]
    pub rundir: PathBuf,
    /// Where the systemd units are written.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub systemd_dir: PathBuf,
    /// Do not create the slurm and munge users and groups: the daemons run as the current user.
    #[arg(long)]
    pub no_users: bool,
    /// Rewrite slurm.conf (and a different --munge-key), keeping the old as .bak.
    #[arg(long)]
    pub force_config: bool,
}

#[derive(Debug, Args)]
pub struct SlurmSetupArgs {
    /// The node's roles, comma-separated: controller, compute, login, dbd (a one-node cluster
    /// is controller,compute).
    #[arg(long, value_name = "ROLE[,ROLE…]")]
    pub role: String,
    /// The install root holding Slurm and MUNGE.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Rewrite slurm.conf (and the other files written once, and a different --munge-key),
    /// keeping the old ones as .bak.
    #[arg(long)]
    pub force: bool,
    /// Print each file with its content; write nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Check a node set up before (files, key, units, MUNGE, scontrol ping) instead.
    #[arg(long)]
    pub check: bool,
}

/// Where the Slurm Factory caches are.
#[derive(Debug, Args)]
pub struct SlurmBaseArgs {
    /// Base URL or path of the Slurm Factory caches; default: $SF_CACHE_SLURM_FACTORY_BASE, then
    /// `[slurm_factory] base_url`, then https://slurm-factory-spack-binary-cache.vantagecompute.ai.
    #[arg(long, value_name = "URL|PATH")]
    pub base: Option<String>,
}

#[derive(Debug, Args)]
pub struct SlurmListArgs {
    /// Only this Slurm release (e.g. 25.11; default: all of the matrix).
    #[arg(long, value_name = "VERSION")]
    pub slurm_version: Option<String>,
    /// Only this GCC toolchain of the legacy GCC-keyed scheme (e.g. 13.4.0).
    #[arg(long, value_name = "VERSION")]
    pub compiler_version: Option<String>,
    /// This OS toolchain (noble, rockylinux9, …; default: the host's, from /etc/os-release, else
    /// noble): each cell probes the URL schemes in order and shows which one answered.
    #[arg(long, value_name = "NAME", conflicts_with = "compiler_version")]
    pub toolchain: Option<String>,
    /// The legacy GCC-keyed scheme, every GCC toolchain of the matrix.
    #[arg(long, conflicts_with_all = ["toolchain", "compiler_version"])]
    pub legacy: bool,
    #[command(flatten)]
    pub base: SlurmBaseArgs,
    /// Caches read at once (default: 4).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct SlurmInstallArgs {
    /// Slurm release (default: 25.11, or `[slurm_factory] default_slurm_version`).
    #[arg(long, value_name = "VERSION")]
    pub slurm_version: Option<String>,
    /// GCC toolchain Slurm was built with, in the legacy GCC-keyed scheme (e.g. 13.4.0).
    #[arg(long, value_name = "VERSION")]
    pub compiler_version: Option<String>,
    /// OS toolchain of the current caches (rockylinux8|9|10, jammy, noble, resolute; default: the
    /// host's, from /etc/os-release, else noble): probes the toolchain URL schemes in order
    /// ([slurm_factory] scheme). Excludes --compiler-version.
    #[arg(long, value_name = "NAME", conflicts_with = "compiler_version")]
    pub toolchain: Option<String>,
    /// Install a toolchain whose glibc is newer than the host's.
    #[arg(long)]
    pub force: bool,
    /// The GPU build (NVML and ROCm SMI support).
    #[arg(long, conflicts_with = "minimal")]
    pub gpu: bool,
    /// The minimal build (without the OpenMPI/PMIx extras).
    #[arg(long)]
    pub minimal: bool,
    /// Install root; each package lands in DIR/<projection>.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Link the installed closure into one merged tree at DIR.
    #[arg(long, value_name = "DIR")]
    pub view: Option<PathBuf>,
    /// Where the Lmod module is written (default: ROOT/modules).
    #[arg(long, value_name = "DIR")]
    pub module_dir: Option<PathBuf>,
    /// Module templates overriding the built-in ones (`slurm.lua.j2`, …).
    #[arg(long, value_name = "DIR")]
    pub module_templates: Option<PathBuf>,
    #[command(flatten)]
    pub base: SlurmBaseArgs,
    /// Concurrent downloads (default: 8).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Use only the local caches (indexes, metadata, blobs): no network.
    #[arg(long)]
    pub offline: bool,
    /// When no cache has the build, build it from source (`sf-cache build`) with the variant's
    /// first query and install the result from the local buildcache.
    #[arg(long)]
    pub build_on_miss: bool,
    #[command(flatten)]
    pub build: BuildFlags,
    /// Then set the node up for these roles (`sf-cache slurm setup --role ROLES`).
    #[arg(long, value_name = "ROLE[,ROLE…]")]
    pub setup: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct ModuleArgs {
    /// Installed specs to write modules for (one query per argument; default: every installed
    /// package).
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    /// Install root the packages are in.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Where the modules go (`module use DIR`); each is written to DIR/<name>/<version>.lua.
    #[arg(long, value_name = "DIR")]
    pub module_dir: PathBuf,
    /// Point the modules at this view instead of each package's prefix.
    #[arg(long, value_name = "DIR")]
    pub view: Option<PathBuf>,
    /// Directory of templates (`<package>.lua.j2`, `generic.lua.j2`) overriding the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RelocateArgs {
    /// The install root (or extracted export) at its new place.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Where DIR used to be (default: what the export record or the install receipts say).
    #[arg(long, value_name = "OLD")]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Installed specs to export with their link/run dependencies (one query per argument).
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Install root the packages are in.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The .tar.gz to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Armored OpenPGP secret key: also write a detached signature FILE.asc (passphrase:
    /// $SF_CACHE_KEY_PASSPHRASE or --passphrase-file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of --key (first line).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub passphrase_file: Option<PathBuf>,
    /// Name of the view directory inside the export.
    #[arg(long, value_name = "NAME", default_value = "view")]
    pub view: String,
    /// Directory of module templates overriding the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

/// How `build` (and `install --build-on-miss`) runs Spack.
#[derive(Debug, Args, Clone, Default)]
pub struct BuildFlags {
    /// Where Spack runs: docker, podman, apptainer or host (default: `[build] runtime`, else
    /// the first of docker, podman, apptainer on PATH).
    #[arg(long, value_name = "RUNTIME", help_heading = "Source build")]
    pub runtime: Option<String>,
    /// Container image with Spack and a compiler (default: `[build] image`, else
    /// `sf-cache-build:bookworm`).
    #[arg(long, value_name = "IMAGE", help_heading = "Source build")]
    pub image: Option<String>,
    /// A Spack checkout: run directly by `--runtime host`, mounted into containers.
    #[arg(long, value_name = "DIR", help_heading = "Source build")]
    pub spack_root: Option<PathBuf>,
    /// Keep the build's stage directory (and its environment) for inspection.
    #[arg(long, help_heading = "Source build")]
    pub keep_stage: bool,
    /// Publish the build into this buildcache (path, file:// or s3://) instead of the local one.
    #[arg(
        long,
        value_name = "DEST",
        requires = "key",
        help_heading = "Source build"
    )]
    pub publish: Option<String>,
    /// Armored secret key that signs what --publish writes (passphrase:
    /// $SF_CACHE_KEY_PASSPHRASE or --passphrase-file).
    #[arg(
        long,
        value_name = "FILE",
        requires = "publish",
        help_heading = "Source build"
    )]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of --key (first line).
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        help_heading = "Source build"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Extra environment variable for Spack (repeatable).
    #[arg(
        long = "build-env",
        value_name = "NAME=VALUE",
        help_heading = "Source build"
    )]
    pub build_env: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The spec to build, e.g. `slurm@25.11 +nvml %gcc@13.4.0` or `sf-hello`.
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Mirrors Spack may reuse binaries from (default: the mirrors of the config file).
    #[command(flatten)]
    pub mirrors: MirrorArgs,
    /// Parallel build jobs (`spack install -j`; default `[build] jobs`, else Spack's).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub flags: BuildFlags,
}
