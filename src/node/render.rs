//! The files of a Slurm node, rendered from what is installed and the options: `slurm.conf`,
//! `cgroup.conf`, `slurmdbd.conf`, systemd units, and the daemons' command lines. Pure: no I/O.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Role, Roles};

/// Where a node keeps its files (the `--sysconfdir`, `--localstatedir`, `--rundir` and
/// `--systemd-dir` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub sysconf: PathBuf,
    pub localstate: PathBuf,
    pub run: PathBuf,
    pub systemd: PathBuf,
}

impl Default for Dirs {
    fn default() -> Self {
        Dirs {
            sysconf: "/etc".into(),
            localstate: "/var".into(),
            run: "/run".into(),
            systemd: "/etc/systemd/system".into(),
        }
    }
}

impl Dirs {
    pub fn slurm_conf(&self) -> PathBuf {
        self.sysconf.join("slurm/slurm.conf")
    }
    pub fn cgroup_conf(&self) -> PathBuf {
        self.sysconf.join("slurm/cgroup.conf")
    }
    pub fn slurmdbd_conf(&self) -> PathBuf {
        self.sysconf.join("slurm/slurmdbd.conf")
    }
    pub fn munge_dir(&self) -> PathBuf {
        self.sysconf.join("munge")
    }
    pub fn munge_key(&self) -> PathBuf {
        self.munge_dir().join("munge.key")
    }
    pub fn munge_socket(&self) -> PathBuf {
        self.run.join("munge/munge.socket.2")
    }
    pub fn munge_run(&self) -> PathBuf {
        self.run.join("munge")
    }
    pub fn slurm_run(&self) -> PathBuf {
        self.run.join("slurm")
    }
    pub fn munge_lib(&self) -> PathBuf {
        self.localstate.join("lib/munge")
    }
    pub fn munge_log(&self) -> PathBuf {
        self.localstate.join("log/munge")
    }
    pub fn slurm_log(&self) -> PathBuf {
        self.localstate.join("log/slurm")
    }
    pub fn state_save(&self) -> PathBuf {
        self.localstate.join("spool/slurmctld")
    }
    pub fn slurmd_spool(&self) -> PathBuf {
        self.localstate.join("spool/slurmd")
    }
}

/// The installed Slurm and MUNGE a node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slurm: PathBuf,
    pub slurm_version: String,
    pub munge: PathBuf,
}

impl Installed {
    pub fn plugin_dir(&self) -> PathBuf {
        self.slurm.join("lib/slurm")
    }
    /// A plugin of this build (`proctrack_cgroup`, `accounting_storage_mysql`).
    pub fn plugin(&self, name: &str) -> PathBuf {
        self.plugin_dir().join(format!("{name}.so"))
    }
}

/// What the rendering needs besides the paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParams {
    pub cluster: String,
    pub controller: String,
    /// This node's `NodeName=…` line from `slurmd -C` (compute nodes).
    pub node_line: Option<String>,
    /// The user the Slurm daemons run as (`SlurmUser`).
    pub slurm_user: String,
    /// The user munged runs as.
    pub munge_user: String,
    /// The cgroup plugins for this host's cgroup version (1 or 2) are installed.
    pub cgroup: Option<u8>,
    /// `task/affinity` is installed.
    pub affinity: bool,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A daemon's command line (foreground), as the unit runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `munge`, `slurmctld`, `slurmd`, `slurmdbd`.
    pub name: &'static str,
    pub argv: Vec<String>,
    /// Environment the daemon needs (`SLURM_CONF`).
    pub env: Vec<(String, String)>,
}

/// The daemons the roles run, in start order.
pub fn daemons(roles: &Roles, inst: &Installed, dirs: &Dirs) -> Vec<Daemon> {
    let conf = p(&dirs.slurm_conf());
    let slurm_env = vec![("SLURM_CONF".to_string(), conf.clone())];
    let mut out = vec![Daemon {
        name: "munge",
        argv: vec![
            p(&inst.munge.join("sbin/munged")),
            "--foreground".into(),
            format!("--socket={}", p(&dirs.munge_socket())),
            format!("--key-file={}", p(&dirs.munge_key())),
            format!("--pid-file={}", p(&dirs.munge_run().join("munged.pid"))),
            format!("--log-file={}", p(&dirs.munge_log().join("munged.log"))),
            format!("--seed-file={}", p(&dirs.munge_lib().join("munged.seed"))),
        ],
        env: vec![],
    }];
    if roles.has(Role::Dbd) {
        out.push(Daemon {
            name: "slurmdbd",
            argv: vec![p(&inst.slurm.join("sbin/slurmdbd")), "-D".into()],
            env: slurm_env.clone(),
        });
    }
    if roles.has(Role::Controller) {
        out.push(Daemon {
            name: "slurmctld",
            argv: vec![
                p(&inst.slurm.join("sbin/slurmctld")),
                "-D".into(),
                "-f".into(),
                conf.clone(),
            ],
            env: slurm_env.clone(),
        });
    }
    if roles.has(Role::Compute) {
        out.push(Daemon {
            name: "slurmd",
            argv: vec![
                p(&inst.slurm.join("sbin/slurmd")),
                "-D".into(),
                "-f".into(),
                conf,
            ],
            env: slurm_env,
        });
    }
    out
}

/// `slurm.conf` for the cluster as this node sees it.
pub fn slurm_conf(roles: &Roles, inst: &Installed, dirs: &Dirs, params: &NodeParams) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `sf-cache slurm setup --role {roles}` for Slurm {} in {}.",
        inst.slurm_version,
        p(&inst.slurm)
    );
    let _ = writeln!(
        s,
        "# Edit freely: setup never rewrites this file (--force keeps a .bak).\n"
    );
    let _ = writeln!(s, "ClusterName={}", params.cluster);
    let _ = writeln!(s, "SlurmctldHost={}", params.controller);
    let _ = writeln!(s, "SlurmUser={}", params.slurm_user);
    let _ = writeln!(
        s,
        "\n# Authentication: MUNGE, at the socket munged is started with."
    );
    let _ = writeln!(s, "AuthType=auth/munge");
    let _ = writeln!(s, "CredType=cred/munge");
    let _ = writeln!(s, "AuthInfo=socket={}", p(&dirs.munge_socket()));
    let _ = writeln!(s, "\nPluginDir={}", p(&inst.plugin_dir()));
    let _ = writeln!(s, "StateSaveLocation={}", p(&dirs.state_save()));
    let _ = writeln!(s, "SlurmdSpoolDir={}", p(&dirs.slurmd_spool()));
    let _ = writeln!(
        s,
        "SlurmctldPidFile={}",
        p(&dirs.slurm_run().join("slurmctld.pid"))
    );
    let _ = writeln!(
        s,
        "SlurmdPidFile={}",
        p(&dirs.slurm_run().join("slurmd.pid"))
    );
    let _ = writeln!(
        s,
        "SlurmctldLogFile={}",
        p(&dirs.slurm_log().join("slurmctld.log"))
    );
    let _ = writeln!(
        s,
        "SlurmdLogFile={}",
        p(&dirs.slurm_log().join("slurmd.log"))
    );
    if let Some(v) = params.cgroup {
        let _ = writeln!(
            s,
            "\n# The cgroup v{v} plugins of this host's cgroup version are installed (cgroup.conf)."
        );
        let _ = writeln!(s, "ProctrackType=proctrack/cgroup");
        let task = if params.affinity {
            "task/cgroup,task/affinity"
        } else {
            "task/cgroup"
        };
        let _ = writeln!(s, "TaskPlugin={task}");
    } else {
        let _ = writeln!(
            s,
            "\n# No cgroup plugins for this host's cgroup version in this build."
        );
        let _ = writeln!(s, "ProctrackType=proctrack/linuxproc");
        let task = if params.affinity {
            "task/affinity"
        } else {
            "task/none"
        };
        let _ = writeln!(s, "TaskPlugin={task}");
    }
    let _ = writeln!(s, "ReturnToService=2");
    let _ = writeln!(s, "SchedulerType=sched/backfill");
    let _ = writeln!(s, "SelectType=select/cons_tres");
    if roles.has(Role::Dbd) {
        let _ = writeln!(s, "\nAccountingStorageType=accounting_storage/slurmdbd");
        let _ = writeln!(s, "AccountingStorageHost={}", params.controller);
    }
    let _ = writeln!(s, "\n# Nodes and partitions.");
    if let Some(line) = &params.node_line {
        if roles.has(Role::Controller) && !line.contains("NodeAddr=") {
            // One node is the whole cluster: it is reached where the controller is, whether or
            // not its host name resolves.
            let _ = writeln!(s, "{line} NodeAddr={}", params.controller);
        } else {
            let _ = writeln!(s, "{line}");
        }
    }
    let _ = writeln!(
        s,
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    );
    s
}

/// `cgroup.conf` for the cgroup version whose plugins are installed.
pub fn cgroup_conf(version: u8) -> String {
    format!(
        "# Written by `sf-cache slurm setup`.\nCgroupPlugin=cgroup/v{version}\nConstrainCores=yes\nConstrainRAMSpace=yes\nConstrainDevices=yes\n"
    )
}

/// `slurmdbd.conf` (mode 0600, owned by SlurmUser): the database password is the admin's to
/// add (`StoragePass=`), never written by setup.
pub fn slurmdbd_conf(dirs: &Dirs, params: &NodeParams) -> String {
    format!(
        "# Written by `sf-cache slurm setup --role dbd`. Add the database password (StoragePass=)\n\
         # and check the storage settings; setup never rewrites this file.\n\
         AuthType=auth/munge\n\
         AuthInfo=socket={}\n\
         DbdHost={}\n\
         SlurmUser={}\n\
         LogFile={}\n\
         PidFile={}\n\
         StorageType=accounting_storage/mysql\n\
         StorageHost=localhost\n\
         StorageUser={}\n",
        p(&dirs.munge_socket()),
        params.controller,
        params.slurm_user,
        p(&dirs.slurm_log().join("slurmdbd.log")),
        p(&dirs.slurm_run().join("slurmdbd.pid")),
        params.slurm_user,
    )
}

/// Quote one argument for a systemd `ExecStart=` line.
fn unit_arg(a: &str) -> String {
    if a.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '$' || c == '%')
    {
        let escaped = a
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
            .replace('$', "$$");
        format!("\"{escaped}\"")
    } else {
        a.to_string()
    }
}

/// The systemd unit of a daemon, with the users, directories and limits Slurm's and MUNGE's own
/// units use.
pub fn unit(d: &Daemon, dirs: &Dirs, params: &NodeParams) -> String {
    let exec: Vec<String> = d.argv.iter().map(|a| unit_arg(a)).collect();
    let mut s = String::new();
    let (description, after, user, limits): (&str, &str, &str, &[&str]) = match d.name {
        "munge" => (
            "MUNGE authentication service",
            "network.target time-sync.target",
            &params.munge_user,
            &[],
        ),
        "slurmdbd" => (
            "Slurm DBD accounting daemon",
            "network-online.target remote-fs.target munge.service mysql.service mysqld.service mariadb.service",
            &params.slurm_user,
            &["LimitNOFILE=65536"],
        ),
        "slurmctld" => (
            "Slurm controller daemon",
            "network-online.target remote-fs.target munge.service sssd.service",
            &params.slurm_user,
            &["LimitNOFILE=65536", "TasksMax=infinity"],
        ),
        _ => (
            "Slurm node daemon",
            "munge.service network-online.target remote-fs.target sssd.service",
            // slurmd runs as root: it starts jobs as their users.
            "root",
            &[
                "KillMode=process",
                "LimitNOFILE=131072",
                "LimitMEMLOCK=infinity",
                "LimitSTACK=infinity",
                "Delegate=yes",
                "TasksMax=infinity",
            ],
        ),
    };
    let _ = writeln!(s, "# Written by `sf-cache slurm setup`.");
    let _ = writeln!(s, "[Unit]\nDescription={description}");
    let _ = writeln!(s, "After={after}\nWants=network-online.target");
    if d.name != "munge" {
        let _ = writeln!(s, "Requires=munge.service");
        let _ = writeln!(s, "ConditionPathExists={}", p(&dirs.slurm_conf()));
    }
    let _ = writeln!(s, "\n[Service]\nType=simple");
    if user != "root" {
        let _ = writeln!(s, "User={user}\nGroup={user}");
    }
    for (k, v) in &d.env {
        let _ = writeln!(s, "Environment={}", unit_arg(&format!("{k}={v}")));
    }
    // Under /run the runtime directories are systemd's to make at each boot.
    if dirs.run == Path::new("/run") {
        let rd = if d.name == "munge" { "munge" } else { "slurm" };
        let _ = writeln!(s, "RuntimeDirectory={rd}\nRuntimeDirectoryPreserve=yes");
    }
    let _ = writeln!(s, "ExecStart={}", exec.join(" "));
    if d.name != "munge" {
        let _ = writeln!(s, "ExecReload=/bin/kill -HUP $MAINPID");
    }
    for l in limits {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "Restart=on-failure");
    let _ = writeln!(s, "\n[Install]\nWantedBy=multi-user.target");
    s
}

/// The `ExecStart=` command line of a unit file's text, split back into arguments.
pub fn exec_start(unit_text: &str) -> Option<Vec<String>> {
    let line = unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))?;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '%' if chars.peek() == Some(&'%') => {
                chars.next();
                cur.push('%');
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                cur.push('$');
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Installed, Dirs, NodeParams) {
        (
            Installed {
                slurm: "/opt/sf/slurm-24.11.5-abc".into(),
                slurm_version: "24.11.5".into(),
                munge: "/opt/sf/munge-0.5.16-def".into(),
            },
            Dirs {
                sysconf: "/t/etc".into(),
                localstate: "/t/var".into(),
                run: "/t/run".into(),
                systemd: "/t/systemd".into(),
            },
            NodeParams {
                cluster: "c1".into(),
                controller: "head".into(),
                node_line: Some("NodeName=n1 CPUs=2 RealMemory=1000".into()),
                slurm_user: "slurm".into(),
                munge_user: "munge".into(),
                cgroup: None,
                affinity: false,
            },
        )
    }

    #[test]
    fn slurm_conf_names_the_directories_the_socket_and_this_node() {
        let (inst, dirs, params) = setup();
        let roles = Roles::parse("controller,compute").unwrap();
        let c = slurm_conf(&roles, &inst, &dirs, &params);
        for line in [
            "ClusterName=c1",
            "SlurmctldHost=head",
            "SlurmUser=slurm",
            "AuthType=auth/munge",
            "AuthInfo=socket=/t/run/munge/munge.socket.2",
            "PluginDir=/opt/sf/slurm-24.11.5-abc/lib/slurm",
            "StateSaveLocation=/t/var/spool/slurmctld",
            "SlurmdSpoolDir=/t/var/spool/slurmd",
            "ProctrackType=proctrack/linuxproc",
            "NodeName=n1 CPUs=2 RealMemory=1000 NodeAddr=head",
            "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing:\n{c}");
        }
        assert!(!c.contains("AccountingStorageType"));
        let with_cgroup = slurm_conf(
            &Roles::parse("controller,dbd").unwrap(),
            &inst,
            &dirs,
            &NodeParams {
                cgroup: Some(2),
                affinity: true,
                node_line: None,
                ..params
            },
        );
        assert!(with_cgroup.contains("ProctrackType=proctrack/cgroup"));
        assert!(with_cgroup.contains("TaskPlugin=task/cgroup,task/affinity"));
        assert!(c.contains("TaskPlugin=task/none"));
        assert!(cgroup_conf(2).contains("CgroupPlugin=cgroup/v2"));
        assert!(with_cgroup.contains("AccountingStorageType=accounting_storage/slurmdbd"));
        assert!(!with_cgroup.contains("NodeName="));
    }

    #[test]
    fn units_run_the_daemons_command_lines_and_read_back() {
        let (inst, dirs, params) = setup();
        let roles = Roles::parse("controller,compute,dbd").unwrap();
        let ds = daemons(&roles, &inst, &dirs);
        let names: Vec<&str> = ds.iter().map(|d| d.name).collect();
        assert_eq!(names, ["munge", "slurmdbd", "slurmctld", "slurmd"]);
        assert!(ds[0]
            .argv
            .contains(&"--socket=/t/run/munge/munge.socket.2".to_string()));
        for d in &ds {
            let u = unit(d, &dirs, &params);
            assert_eq!(exec_start(&u).unwrap(), d.argv, "{u}");
            // Not under /run: the directories are setup's to make.
            assert!(!u.contains("RuntimeDirectory"), "{u}");
        }
        let ctld = unit(&ds[2], &dirs, &params);
        assert!(ctld.contains("User=slurm\nGroup=slurm"), "{ctld}");
        assert!(ctld.contains("Environment=SLURM_CONF=/t/etc/slurm/slurm.conf"));
        assert!(ctld.contains("Requires=munge.service"));
        let slurmd = unit(&ds[3], &dirs, &params);
        assert!(!slurmd.contains("User="), "{slurmd}");
        assert!(slurmd.contains("Delegate=yes"));
        // Arguments with spaces or systemd specials survive the round trip.
        let odd = Daemon {
            name: "munge",
            argv: vec!["/a b/munged".into(), "--x=100%".into(), "$HOME".into()],
            env: vec![],
        };
        assert_eq!(exec_start(&unit(&odd, &dirs, &params)).unwrap(), odd.argv);
        let under_run = Dirs {
            run: "/run".into(),
            ..dirs
        };
        assert!(unit(&ds[0], &under_run, &params).contains("RuntimeDirectory=munge"));
    }
}
