//! A real Slurm cluster in CI: the real Slurm 24.11.5 and MUNGE 0.5.16 that real Spack built
//! (`../shared/fixtures/real-slurm`), installed by sf-cache (plainly, and through `slurm install
//! --setup` from a base laid out as the current Slurm Factory scheme), set up by `slurm setup`
//! with every directory under a temporary one, and run: munged, `slurmctld -D` and `slurmd -D`
//! started with exactly the command lines of the units setup wrote; `sinfo` shows the node idle,
//! `srun` and an `sbatch` job run; the daemons are stopped, none left behind.
//!
//! Runs as root (the daemons start jobs as their users); the host needs the Debian runtime
//! libraries the fixture's README lists (`.ci/run` installs them). The two cluster tests share
//! Slurm's ports, so they take turns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cli::*;
use serde_json::Value;

/// One cluster at a time (slurmctld and slurmd listen on fixed ports).
static CLUSTER: Mutex<()> = Mutex::new(());

fn require_root() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("tests/slurm_node.rs runs Slurm's daemons and must run as root (CI does)");
    }
}

fn real_slurm() -> PathBuf {
    fx("real-slurm/cache")
}

/// The node's directories under `t` (short, so that the MUNGE socket path stays well under the
/// kernel's limit).
fn dir_args(t: &Path) -> Vec<String> {
    [
        ("--sysconfdir", "etc"),
        ("--localstatedir", "var"),
        ("--rundir", "run"),
        ("--systemd-dir", "sd"),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), s(&t.join(v)).to_string()])
    .collect()
}

/// Daemons started from unit files; stopped (TERM, then KILL) when dropped, even when an
/// assertion failed.
struct Daemons {
    children: Vec<(String, Child)>,
    /// The install root: every process running a program from it is ours.
    root: PathBuf,
}

/// Processes whose program lies under `root` (the daemons, and the slurmstepd they spawned).
fn processes_under(root: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            exe.starts_with(root).then_some(pid)
        })
        .collect()
}

impl Daemons {
    /// Start each unit's `ExecStart=` command with its `Environment=` lines, in order.
    fn start(units: &[PathBuf], logs: &Path, root: &Path) -> Daemons {
        let mut d = Daemons {
            children: Vec::new(),
            root: std::fs::canonicalize(root).unwrap(),
        };
        for u in units {
            let text = std::fs::read_to_string(u).unwrap();
            let argv = sf_cache::node::render::exec_start(&text)
                .unwrap_or_else(|| panic!("{u:?} has no ExecStart"));
            let name = u.file_stem().unwrap().to_string_lossy().into_owned();
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            for l in text.lines() {
                if let Some((k, v)) = l
                    .strip_prefix("Environment=")
                    .and_then(|e| e.split_once('='))
                {
                    c.env(k, v);
                }
            }
            let out = std::fs::File::create(logs.join(format!("{name}.out"))).unwrap();
            let child = c
                .stdout(Stdio::from(out.try_clone().unwrap()))
                .stderr(Stdio::from(out))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
            d.children.push((name, child));
            std::thread::sleep(Duration::from_millis(300));
        }
        d
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, c) in self.children.iter().rev() {
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, c) in self.children.iter_mut() {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Job step daemons outlive slurmd briefly: wait for them, then kill what is left.
        while !processes_under(&self.root).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in processes_under(&self.root) {
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie has been waited for by Drop; kill(pid, 0) on a reaped pid fails.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Run an installed Slurm client with the node's configuration.
fn client(slurm: &Path, conf: &Path, prog: &str, args: &[&str]) -> Output {
    Command::new(slurm.join("bin").join(prog))
        .args(args)
        .env("SLURM_CONF", conf)
        .output()
        .unwrap()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .split('.')
        .next()
        .unwrap()
        .to_string()
}

/// Wait (bounded) until `sinfo` shows the node idle, then run a step and a batch job.
fn run_jobs(slurm: &Path, conf: &Path, t: &Path, daemons_log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = client(slurm, conf, "sinfo", &["-h", "-o", "%t %N"]);
        if stdout(&o).trim_start().starts_with("idle") {
            break;
        }
        if Instant::now() > deadline {
            let logs: String = std::fs::read_dir(daemons_log)
                .unwrap()
                .flatten()
                .map(|e| {
                    format!(
                        "== {:?}\n{}",
                        e.path(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "the node never became idle: sinfo says {:?} {:?}\n{logs}",
                stdout(&o),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = client(slurm, conf, "sinfo", &[]);
    assert!(stdout(&o).contains("idle"), "{}", stdout(&o));
    let o = client(slurm, conf, "srun", &["-N1", "hostname"]);
    assert!(o.status.success(), "srun: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), host_name());
    let out = t.join("job.out");
    let o = client(
        slurm,
        conf,
        "sbatch",
        &["--wrap", "hostname", "-o", s(&out)],
    );
    assert!(o.status.success(), "sbatch: {}", stderr(&o));
    assert!(
        stdout(&o).starts_with("Submitted batch job"),
        "{}",
        stdout(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the batch job never wrote {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), host_name());
}

fn units(t: &Path) -> Vec<PathBuf> {
    ["munge", "slurmctld", "slurmd"]
        .iter()
        .map(|n| t.join(format!("sd/{n}.service")))
        .collect()
}

#[test]
fn setup_makes_a_one_node_cluster_that_runs_jobs() {
    require_root();
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::trusting();
    let t = tempfile::Builder::new()
        .prefix("sn")
        .tempdir_in("/tmp")
        .unwrap();
    let t = t.path();
    let root = t.join("r");
    let o = home.run(&[
        "install",
        "slurm",
        "--mirror",
        s(&real_slurm()),
        "--root",
        s(&root),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let setup = |extra: &[&str]| -> Output {
        let mut args: Vec<String> = [
            "slurm",
            "setup",
            "--role",
            "controller,compute",
            "--root",
            s(&root),
            "--cluster",
            "ci",
            "--controller",
            "localhost",
            "--no-users",
        ]
        .map(String::from)
        .to_vec();
        // A `--rundir` in `extra` replaces the temporary one.
        let mut dirs = dir_args(t);
        if let Some(i) = extra.iter().position(|a| *a == "--rundir") {
            let at = dirs.iter().position(|a| a == "--rundir").unwrap();
            dirs[at + 1] = extra[i + 1].to_string();
        }
        args.extend(dirs);
        let mut skip = false;
        for a in extra {
            if skip {
                skip = false;
                continue;
            }
            if *a == "--rundir" {
                skip = true;
                continue;
            }
            args.push(a.to_string());
        }
        home.cmd().args(&args).output().unwrap()
    };

    // A rundir that makes the socket path too long: refused, naming the limit; nothing written.
    let long_run = t.join("x".repeat(100));
    let o = setup(&["--rundir", s(&long_run)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("longer than the 107 bytes"),
        "{}",
        stderr(&o)
    );
    assert!(!t.join("etc").exists());
    // An unknown role: a usage error before anything.
    let o = home.run(&["slurm", "setup", "--role", "master", "--root", s(&root)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // The dbd role needs the MySQL accounting plugin, which this build (~mariadb) lacks.
    let o = home.run(&[
        "slurm",
        "setup",
        "--role",
        "controller,dbd",
        "--root",
        s(&root),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("+mariadb"), "{}", stderr(&o));
    // A MUNGE key too short to be one.
    let short = t.join("short.key");
    std::fs::write(&short, b"0123456789").unwrap();
    let o = setup(&["--munge-key", s(&short)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("32 bytes"), "{}", stderr(&o));
    assert!(!t.join("etc").exists());

    // --dry-run prints each file with its content and writes nothing.
    let o = setup(&["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "would write {}",
            s(&t.join("etc/slurm/slurm.conf"))
        )),
        "{out}"
    );
    assert!(out.contains("    ClusterName=ci"), "{out}");
    assert!(
        out.contains(&format!(
            "    AuthInfo=socket={}",
            s(&t.join("run/munge/munge.socket.2"))
        )),
        "{out}"
    );
    assert!(!t.join("etc").exists() && !t.join("sd").exists());

    // The setup, then again: the second run changes nothing.
    let o = setup(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = json(&o);
    let actions = |r: &Value| -> Vec<(String, String)> {
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert!(actions(&r).iter().all(|(_, a)| a == "written"), "{r:#}");
    let key = t.join("etc/munge/munge.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o400);
    }
    let conf_text = std::fs::read_to_string(t.join("etc/slurm/slurm.conf")).unwrap();
    assert!(
        conf_text.contains(&format!("NodeName={}", host_name())),
        "{conf_text}"
    );
    let before = std::fs::read(&key).unwrap();
    let r2: Value = json(&setup(&["--json"]));
    assert!(
        actions(&r2)
            .iter()
            .all(|(_, a)| a == "unchanged" || a == "kept"),
        "{r2:#}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key was replaced");

    // Run the node with exactly the units' command lines.
    let slurm = PathBuf::from(r["slurm"].as_str().unwrap());
    let conf = t.join("etc/slurm/slurm.conf");
    let logs = t.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pids = {
        let daemons = Daemons::start(&units(t), &logs, &root);
        run_jobs(&slurm, &conf, t, &logs);
        // --check: every line ok while the daemons run.
        let o = setup(&["--check"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("ok   MUNGE: munge -n | unmunge: Success"),
            "{out}"
        );
        assert!(out.contains("ok   slurmctld:"), "{out}");
        daemons.pids()
    };
    // Stopped: none of them left running; --check now says what is wrong, one line each.
    for p in pids {
        assert!(!alive(p), "daemon {p} still running");
    }
    let left = processes_under(&std::fs::canonicalize(&root).unwrap());
    assert!(left.is_empty(), "still running from {root:?}: {left:?}");
    let o = setup(&["--check"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("FAIL MUNGE: munge -n:"),
        "{}",
        stdout(&o)
    );
}

/// `slurm install --setup` from a base laid out as Slurm Factory's current scheme
/// (`<base>/<toolchain>/spack`), timed from the command's start to `srun` working.
#[test]
fn slurm_install_with_setup_from_a_toolchain_cache_runs_jobs() {
    require_root();
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::trusting();
    let t = tempfile::Builder::new()
        .prefix("si")
        .tempdir_in("/tmp")
        .unwrap();
    let t = t.path();
    let base = t.join("base");
    common::copy_tree(&real_slurm(), &base.join("noble/spack")).unwrap();
    // The fixture was built with the host's GCC 12.2.0 on Debian 12 (glibc 2.36): a `noble`
    // toolchain of that GCC, from the config.
    let config = t.join("config.toml");
    std::fs::write(
        &config,
        "[slurm_factory]\nos_toolchain = [{ name = \"noble\", gcc = \"12.2.0\", glibc = \"2.36\" }]\n",
    )
    .unwrap();
    let root = t.join("r");
    let started = Instant::now();
    let mut args: Vec<String> = [
        "--config",
        s(&config),
        "slurm",
        "install",
        "--json",
        "--toolchain",
        "noble",
        "--slurm-version",
        "24.11",
        "--base",
        s(&base),
        "--root",
        s(&root),
        "--setup",
        "controller,compute",
        "--controller",
        "localhost",
        "--no-users",
    ]
    .map(String::from)
    .to_vec();
    args.extend(dir_args(t));
    let o = home
        .cmd()
        .env("SF_CACHE_HOST_GLIBC", "2.36")
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["caches"][0]["name"], "noble/spack", "{r:#}");
    assert_eq!(
        r["setup"]["roles"],
        serde_json::json!(["controller", "compute"])
    );
    let slurm = PathBuf::from(r["setup"]["slurm"].as_str().unwrap());
    let conf = t.join("etc/slurm/slurm.conf");
    let logs = t.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let daemons = Daemons::start(&units(t), &logs, &root);
    run_jobs(&slurm, &conf, t, &logs);
    // Reported, never asserted: speed is the benchmarks' business.
    eprintln!(
        "slurm install --setup to a finished srun and batch job: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(daemons);
    let left = processes_under(&std::fs::canonicalize(&root).unwrap());
    assert!(left.is_empty(), "still running from {root:?}: {left:?}");
}
