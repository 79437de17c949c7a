//! `sf-cache slurm setup`: from an installed Slurm and MUNGE to a node that runs them — the
//! configuration, the MUNGE key, the directories, the users and the systemd units a node of the
//! given roles needs, written atomically and idempotently ([`setup`]), and the checks that it
//! works ([`check`]).
//!
//! Every path a node uses comes from [`render::Dirs`] (`/etc`, `/var`, `/run`,
//! `/etc/systemd/system` by default), so a whole node can live in a temporary directory. munged
//! is always started with `--socket=<rundir>/munge/munge.socket.2`: the socket path compiled into
//! a relocated MUNGE keeps the padded build length, longer than the kernel's 108-byte limit.

pub mod render;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use thiserror::Error;

use crate::error::ErrorKind;
use crate::install::root::{absolute_root, existing_projection, installed_in};
pub use render::{Daemon, Dirs, Installed, NodeParams};

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("unknown role `{0}`: the roles are controller, compute, login and dbd, comma-separated (a one-node cluster is controller,compute)")]
    Role(String),
    #[error("{}: not an sf-cache install root (no .sf-cache/root.json); give the --root Slurm was installed into", root.display())]
    NoRoot { root: PathBuf },
    #[error("no {name} is installed in {}; install it first (sf-cache slurm install --root {})", root.display(), root.display())]
    Missing { name: &'static str, root: PathBuf },
    #[error("{} builds of {name} are installed in {} ({list}); set up a root that holds one", count, root.display())]
    Several {
        name: &'static str,
        root: PathBuf,
        count: usize,
        list: String,
    },
    #[error("the MUNGE socket {} would be {len} bytes, longer than the {MAX_SOCKET_PATH} bytes the kernel allows for a socket path; give a shorter --rundir", path.display())]
    SocketTooLong { path: PathBuf, len: usize },
    #[error("this Slurm has no {} (built without +mariadb): the dbd role needs the MySQL/MariaDB accounting plugin", path.display())]
    NoDbPlugin { path: PathBuf },
    #[error("--munge-key {}: {reason}", path.display())]
    MungeKey { path: PathBuf, reason: String },
    #[error("{} exists with another key; give --force to replace it (the old one is kept as .bak), or drop --munge-key", path.display())]
    KeyDiffers { path: PathBuf },
    #[error("{what} failed: {reason}")]
    Command { what: String, reason: String },
    #[error("cannot create the {what} `{name}`: {reason}; create it yourself, or give --no-users")]
    User {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NodeError {
    /// What sort of failure this is (the command line maps it to an exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            NodeError::Role(_)
            | NodeError::SocketTooLong { .. }
            | NodeError::MungeKey { .. }
            | NodeError::KeyDiffers { .. }
            | NodeError::NoRoot { .. }
            | NodeError::Several { .. } => ErrorKind::Usage,
            NodeError::Missing { .. } => ErrorKind::NoMatch,
            _ => ErrorKind::Failure,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controller,
    Compute,
    Login,
    Dbd,
}

impl Role {
    /// The role as `--role` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Compute => "compute",
            Role::Login => "login",
            Role::Dbd => "dbd",
        }
    }
}

/// The roles of a node (`controller,compute`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    pub fn parse(text: &str) -> Result<Roles, NodeError> {
        let mut set = BTreeSet::new();
        for part in text.split(',').map(str::trim) {
            let role = match part.to_ascii_lowercase().as_str() {
                "controller" => Role::Controller,
                "compute" => Role::Compute,
                "login" => Role::Login,
                "dbd" => Role::Dbd,
                _ => return Err(NodeError::Role(part.to_string())),
            };
            set.insert(role);
        }
        Ok(Roles(set))
    }

    pub fn has(&self, r: Role) -> bool {
        self.0.contains(&r)
    }

    pub fn list(&self) -> Vec<Role> {
        self.0.iter().copied().collect()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// Options of [`setup`].
#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub roles: Roles,
    pub root: PathBuf,
    pub cluster: String,
    /// Default: this host's name.
    pub controller: Option<String>,
    /// Copy this MUNGE key (default: keep the node's, or make one with the installed `mungekey`).
    pub munge_key: Option<PathBuf>,
    pub dirs: Dirs,
    /// Rewrite `slurm.conf` (and the other files setup writes only once), keeping a `.bak`.
    pub force: bool,
    /// Create the `slurm` and `munge` users and groups when missing; without, everything runs
    /// as the current user.
    pub users: bool,
    /// Write nothing: report each file with its content.
    pub dry_run: bool,
}

/// One file of the node.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    /// `written`, `unchanged`, `kept` (setup writes it only once), `replaced` (`--force`, the old
    /// one kept as `.bak`), `would write` / `would keep` (`--dry-run`).
    pub action: &'static str,
    pub mode: String,
    pub owner: String,
    /// The content (`--dry-run`; never for the MUNGE key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A daemon the node runs.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonReport {
    pub name: &'static str,
    pub unit: String,
    /// The unit's command line.
    pub command: Vec<String>,
    pub environment: Vec<String>,
}

/// What [`setup`] did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    pub roles: Vec<Role>,
    pub slurm: String,
    pub slurm_version: String,
    pub munge: String,
    pub slurm_conf: String,
    pub munge_socket: String,
    pub files: Vec<FileReport>,
    pub directories: Vec<String>,
    pub users_created: Vec<String>,
    pub daemons: Vec<DaemonReport>,
    pub dry_run: bool,
}

/// The one installed build of `name` in the root.
fn installed_one(
    root: &Path,
    all: &[(PathBuf, crate::install::receipt::Receipt)],
    name: &'static str,
) -> Result<(PathBuf, String), NodeError> {
    let found: Vec<&(PathBuf, crate::install::receipt::Receipt)> =
        all.iter().filter(|(_, r)| r.name == name).collect();
    match found.as_slice() {
        [] => Err(NodeError::Missing {
            name,
            root: root.to_path_buf(),
        }),
        [(p, r)] => Ok((p.clone(), r.version.clone())),
        many => Err(NodeError::Several {
            name,
            root: root.to_path_buf(),
            count: many.len(),
            list: many
                .iter()
                .map(|(_, r)| {
                    format!(
                        "{}@{} /{}",
                        r.name,
                        r.version,
                        &r.hash[..7.min(r.hash.len())]
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The Slurm and MUNGE installed in `root`.
pub fn find_installed(root: &Path) -> Result<Installed, NodeError> {
    let root = absolute_root(root).map_err(io_err(root))?;
    let projection = existing_projection(&root)
        .ok()
        .flatten()
        .ok_or_else(|| NodeError::NoRoot { root: root.clone() })?;
    let all = installed_in(&root, &projection);
    let (slurm, slurm_version) = installed_one(&root, &all, "slurm")?;
    let (munge, _) = installed_one(&root, &all, "munge")?;
    Ok(Installed {
        slurm,
        slurm_version,
        munge,
    })
}

/// Run a program of the install and return its standard output.
fn run(argv: &[String], what: &str) -> Result<String, NodeError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| NodeError::Command {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(NodeError::Command {
            what: what.to_string(),
            reason: err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("exited with an error")
                .trim()
                .to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// This host's name (the kernel's, up to the first dot).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().split('.').next().unwrap_or("").to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The host's cgroup version when this build has the plugins for it (`cgroup_v1`/`cgroup_v2`,
/// `proctrack_cgroup`, `task_cgroup`): a v2 host (`/sys/fs/cgroup/cgroup.controllers`) needs
/// `cgroup_v2`, which Slurm builds only with dbus.
fn cgroup_version(inst: &Installed) -> Option<u8> {
    let v: u8 = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        2
    } else {
        1
    };
    let all = [
        format!("cgroup_v{v}"),
        "proctrack_cgroup".into(),
        "task_cgroup".into(),
    ];
    all.iter().all(|p| inst.plugin(p).is_file()).then_some(v)
}

/// A user's (uid, gid), or None when there is no such user.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points at a valid passwd record.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// The current user's name.
fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwuid(libc::getuid()) };
    if pw.is_null() {
        return "root".to_string();
    }
    // SAFETY: pw is non-null; pw_name is a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// Create a system user and its group when missing. Returns whether it was created.
fn ensure_user(name: &str) -> Result<bool, NodeError> {
    if user_ids(name).is_some() {
        return Ok(false);
    }
    let fail = |what: &'static str, reason: String| NodeError::User {
        what,
        name: name.to_string(),
        reason,
    };
    let group_exists = std::ffi::CString::new(name)
        .ok()
        // SAFETY: getgrnam returns static storage or NULL; only tested for NULL.
        .is_some_and(|c| !unsafe { libc::getgrnam(c.as_ptr()) }.is_null());
    if !group_exists {
        let st = Command::new("groupadd")
            .args(["--system", name])
            .status()
            .map_err(|e| fail("group", e.to_string()))?;
        if !st.success() {
            return Err(fail("group", format!("groupadd exited with {st}")));
        }
    }
    let st = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--gid",
            name,
            name,
        ])
        .status()
        .map_err(|e| fail("user", e.to_string()))?;
    if !st.success() {
        return Err(fail("user", format!("useradd exited with {st}")));
    }
    Ok(true)
}

fn chown(path: &Path, owner: &str) -> Result<(), NodeError> {
    let Some((uid, gid)) = user_ids(owner) else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(path))
}

/// A file setup writes.
struct Planned {
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
    owner: String,
    /// Written only when absent (or with `--force`, keeping a `.bak`).
    once: bool,
}

/// The directories a node needs: (path, mode, owner).
fn directories(roles: &Roles, dirs: &Dirs, params: &NodeParams) -> Vec<(PathBuf, u32, String)> {
    let root = current_user();
    let (s, m) = (params.slurm_user.clone(), params.munge_user.clone());
    let mut out = vec![
        (dirs.sysconf.join("slurm"), 0o755, root.clone()),
        (dirs.munge_dir(), 0o700, m.clone()),
        (dirs.munge_run(), 0o755, m.clone()),
        (dirs.munge_lib(), 0o700, m.clone()),
        (dirs.munge_log(), 0o700, m),
        (dirs.slurm_run(), 0o755, s.clone()),
        (dirs.slurm_log(), 0o755, s.clone()),
        (dirs.systemd.clone(), 0o755, root.clone()),
    ];
    if roles.has(Role::Controller) {
        out.push((dirs.state_save(), 0o700, s));
    }
    if roles.has(Role::Compute) {
        out.push((dirs.slurmd_spool(), 0o755, root));
    }
    out
}

/// Set up a node: see the module documentation.
pub fn setup(opts: &SetupOptions) -> Result<SetupReport, NodeError> {
    let inst = find_installed(&opts.root)?;
    let dirs = &opts.dirs;
    let socket = dirs.munge_socket();
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(NodeError::SocketTooLong { path: socket, len });
    }
    if opts.roles.has(Role::Dbd) && !inst.plugin("accounting_storage_mysql").is_file() {
        return Err(NodeError::NoDbPlugin {
            path: inst.plugin("accounting_storage_mysql"),
        });
    }
    let key_source = match &opts.munge_key {
        Some(k) => Some(std::fs::read(k).map_err(|e| NodeError::MungeKey {
            path: k.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    if key_source.as_ref().is_some_and(|k| k.len() < 32) {
        return Err(NodeError::MungeKey {
            path: opts.munge_key.clone().unwrap_or_default(),
            reason: "shorter than the 32 bytes MUNGE needs".into(),
        });
    }
    let (slurm_user, munge_user) = if opts.users {
        ("slurm".to_string(), "munge".to_string())
    } else {
        (current_user(), current_user())
    };
    let node_line = if opts.roles.has(Role::Compute) {
        let argv = vec![
            inst.slurm.join("sbin/slurmd").display().to_string(),
            "-C".to_string(),
        ];
        let out = run(&argv, "slurmd -C (this node's hardware)")?;
        out.lines()
            .find(|l| l.starts_with("NodeName="))
            .map(str::to_string)
    } else {
        None
    };
    let params = NodeParams {
        cluster: opts.cluster.clone(),
        controller: opts.controller.clone().unwrap_or_else(host_name),
        node_line,
        slurm_user: slurm_user.clone(),
        munge_user: munge_user.clone(),
        cgroup: cgroup_version(&inst),
        affinity: inst.plugin("task_affinity").is_file(),
    };
    let daemons = render::daemons(&opts.roles, &inst, dirs);
    let mut planned = vec![Planned {
        path: dirs.slurm_conf(),
        content: render::slurm_conf(&opts.roles, &inst, dirs, &params).into_bytes(),
        mode: 0o644,
        owner: current_user(),
        once: true,
    }];
    if let Some(v) = params.cgroup {
        planned.push(Planned {
            path: dirs.cgroup_conf(),
            content: render::cgroup_conf(v).into_bytes(),
            mode: 0o644,
            owner: current_user(),
            once: true,
        });
    }
    if opts.roles.has(Role::Dbd) {
        planned.push(Planned {
            path: dirs.slurmdbd_conf(),
            content: render::slurmdbd_conf(dirs, &params).into_bytes(),
            mode: 0o600,
            owner: slurm_user.clone(),
            once: true,
        });
    }
    let mut daemon_reports = Vec::new();
    for d in &daemons {
        let path = dirs.systemd.join(format!("{}.service", d.name));
        planned.push(Planned {
            path: path.clone(),
            content: render::unit(d, dirs, &params).into_bytes(),
            mode: 0o644,
            owner: current_user(),
            once: false,
        });
        daemon_reports.push(DaemonReport {
            name: d.name,
            unit: path.display().to_string(),
            command: d.argv.clone(),
            environment: d.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        });
    }
    let dir_list = directories(&opts.roles, dirs, &params);
    let mut report = SetupReport {
        roles: opts.roles.list(),
        slurm: inst.slurm.display().to_string(),
        slurm_version: inst.slurm_version.clone(),
        munge: inst.munge.display().to_string(),
        slurm_conf: dirs.slurm_conf().display().to_string(),
        munge_socket: socket.display().to_string(),
        files: Vec::new(),
        directories: dir_list
            .iter()
            .map(|(p, _, _)| p.display().to_string())
            .collect(),
        users_created: Vec::new(),
        daemons: daemon_reports,
        dry_run: opts.dry_run,
    };
    if opts.dry_run {
        for f in &planned {
            let exists = f.path.exists();
            report.files.push(FileReport {
                path: f.path.display().to_string(),
                action: if f.once && exists && !opts.force {
                    "would keep"
                } else {
                    "would write"
                },
                mode: format!("{:04o}", f.mode),
                owner: f.owner.clone(),
                content: Some(String::from_utf8_lossy(&f.content).into_owned()),
            });
        }
        report.files.push(FileReport {
            path: dirs.munge_key().display().to_string(),
            action: if dirs.munge_key().exists() {
                "would keep"
            } else {
                "would write"
            },
            mode: "0400".into(),
            owner: munge_user,
            content: None,
        });
        return Ok(report);
    }

    if opts.users {
        for u in ["slurm", "munge"] {
            if ensure_user(u)? {
                report.users_created.push(u.to_string());
            }
        }
    }
    for (dir, mode, owner) in &dir_list {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(io_err(dir))?;
        chown(dir, owner)?;
    }
    for f in &planned {
        let action = write_file(f, opts.force)?;
        report.files.push(FileReport {
            path: f.path.display().to_string(),
            action,
            mode: format!("{:04o}", f.mode),
            owner: f.owner.clone(),
            content: None,
        });
    }
    let key_action = munge_key(&inst, dirs, key_source.as_deref(), &munge_user, opts.force)?;
    report.files.push(FileReport {
        path: dirs.munge_key().display().to_string(),
        action: key_action,
        mode: "0400".into(),
        owner: munge_user,
        content: None,
    });
    Ok(report)
}

/// Write one planned file atomically. Returns what was done.
fn write_file(f: &Planned, force: bool) -> Result<&'static str, NodeError> {
    let existing = std::fs::read(&f.path).ok();
    let mut action = "written";
    if let Some(old) = &existing {
        if *old == f.content {
            return Ok("unchanged");
        }
        if f.once {
            if !force {
                return Ok("kept");
            }
            let mut bak = f.path.clone().into_os_string();
            bak.push(".bak");
            std::fs::copy(&f.path, &bak).map_err(io_err(&f.path))?;
            action = "replaced";
        }
    }
    use std::io::Write;
    crate::fs::write_atomic_with(
        &f.path,
        crate::fs::Mode::Exact(f.mode),
        ".sf-cache-tmp-",
        |file| file.write_all(&f.content),
    )
    .map_err(io_err(&f.path))?;
    chown(&f.path, &f.owner)?;
    Ok(action)
}

/// The MUNGE key: kept when present (the same key as `--munge-key`, or none given), copied from
/// `--munge-key`, or made with the installed `mungekey`; mode 0400, owned by munged's user.
fn munge_key(
    inst: &Installed,
    dirs: &Dirs,
    source: Option<&[u8]>,
    owner: &str,
    force: bool,
) -> Result<&'static str, NodeError> {
    let path = dirs.munge_key();
    let existing = std::fs::read(&path).ok();
    let action = match (&existing, source) {
        (Some(old), Some(new)) if old.as_slice() == new => return Ok("unchanged"),
        (Some(_), None) => return Ok("kept"),
        (Some(_), Some(_)) if !force => return Err(NodeError::KeyDiffers { path }),
        (Some(_), Some(_)) => {
            let mut bak = path.clone().into_os_string();
            bak.push(".bak");
            std::fs::rename(&path, &bak).map_err(io_err(&path))?;
            "replaced"
        }
        (None, _) => "written",
    };
    match source {
        Some(bytes) => {
            use std::io::Write;
            crate::fs::write_atomic_with(
                &path,
                crate::fs::Mode::Exact(0o400),
                ".sf-cache-tmp-",
                |f| f.write_all(bytes),
            )
            .map_err(io_err(&path))?;
        }
        None => {
            // mungekey writes the file itself: into a temporary name, then renamed.
            let tmp = dirs.munge_dir().join(".munge.key.sf-cache-new");
            let _ = std::fs::remove_file(&tmp);
            let argv = vec![
                inst.munge.join("sbin/mungekey").display().to_string(),
                "--create".into(),
                format!("--keyfile={}", tmp.display()),
            ];
            run(&argv, "mungekey --create")?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400))
                .map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
    }
    chown(&path, owner)?;
    Ok(action)
}

/// One line of [`check`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Check a node set up with these options: the files, the key, the units (with
/// `systemd-analyze verify` where present), MUNGE end to end, and `scontrol ping` on a
/// controller.
pub fn check(opts: &SetupOptions) -> Result<Vec<CheckLine>, NodeError> {
    let inst = find_installed(&opts.root)?;
    let dirs = &opts.dirs;
    let mut out = Vec::new();
    let mut line = |check: String, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        out.push(CheckLine { check, ok, detail });
    };
    let conf = dirs.slurm_conf();
    line(
        format!("{}", conf.display()),
        if conf.is_file() {
            Ok("present".into())
        } else {
            Err("missing: run sf-cache slurm setup".into())
        },
    );
    let key = dirs.munge_key();
    line(
        format!("{}", key.display()),
        match std::fs::metadata(&key) {
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 == 0 {
                    Ok(format!("mode {mode:04o}"))
                } else {
                    Err(format!(
                        "mode {mode:04o}: readable by others; chmod 0400 it"
                    ))
                }
            }
            Err(e) => Err(format!("{e}: run sf-cache slurm setup")),
        },
    );
    let analyze = crate::fs::find_program("systemd-analyze", std::env::var_os("PATH").as_deref());
    for d in render::daemons(&opts.roles, &inst, dirs) {
        let unit = dirs.systemd.join(format!("{}.service", d.name));
        let r = if !unit.is_file() {
            Err("missing: run sf-cache slurm setup".into())
        } else if let Some(sa) = &analyze {
            match Command::new(sa).arg("verify").arg(&unit).output() {
                Ok(o) if o.status.success() => Ok("systemd-analyze verify: ok".into()),
                Ok(o) => Err(format!(
                    "systemd-analyze verify: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("failed")
                        .trim()
                )),
                Err(e) => Err(format!("systemd-analyze: {e}")),
            }
        } else {
            Ok("present (systemd-analyze not installed: not verified)".into())
        };
        line(format!("{}", unit.display()), r);
    }
    let socket = dirs.munge_socket().display().to_string();
    let munge = inst.munge.join("bin/munge");
    let unmunge = inst.munge.join("bin/unmunge");
    let r = (|| {
        let cred = Command::new(&munge)
            .args(["-n", "-S", &socket])
            .output()
            .map_err(|e| e.to_string())?;
        if !cred.status.success() {
            return Err(format!(
                "munge -n: {} (is munged running on {socket}?)",
                String::from_utf8_lossy(&cred.stderr).trim()
            ));
        }
        let mut child = Command::new(&unmunge)
            .args(["-S", &socket])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(&cred.stdout).map_err(|e| e.to_string())?;
        }
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok("munge -n | unmunge: Success".to_string())
        } else {
            Err(format!(
                "unmunge: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    })();
    line("MUNGE".into(), r);
    if opts.roles.has(Role::Controller) {
        let o = Command::new(inst.slurm.join("bin/scontrol"))
            .arg("ping")
            .env("SLURM_CONF", &conf)
            .output();
        let r = match o {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("UP") => {
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            Ok(o) => Err(format!(
                "scontrol ping: {}",
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
            )),
            Err(e) => Err(format!("scontrol: {e}")),
        };
        line("slurmctld".into(), r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        let r = Roles::parse("compute, controller").unwrap();
        assert_eq!(r.to_string(), "controller,compute");
        assert!(r.has(Role::Controller) && r.has(Role::Compute) && !r.has(Role::Dbd));
        let e = Roles::parse("controller,master").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().starts_with("unknown role `master`"), "{e}");
    }

    #[test]
    fn a_rundir_that_makes_the_socket_too_long_is_refused_naming_the_limit() {
        let dirs = Dirs {
            run: PathBuf::from(format!("/{}", "r".repeat(90))),
            ..Dirs::default()
        };
        let len = dirs.munge_socket().as_os_str().len();
        assert!(len > MAX_SOCKET_PATH);
        let e = NodeError::SocketTooLong {
            path: dirs.munge_socket(),
            len,
        };
        assert!(e.to_string().contains("longer than the 107 bytes"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Usage);
    }
}
