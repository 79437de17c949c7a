//! Running a build command: stdout and stderr go, line by line, into one log file; Spack's
//! status lines (`==> …`) also go to a progress callback.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use super::runtime::CommandLine;
use super::BuildError;

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The last line that reported an error (Spack's `==> Error: …`), for the one-line message.
    pub last_error: Option<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn pump(stream: impl Read, tx: mpsc::Sender<String>) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if tx.send(line.to_string()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether a line reports an error worth repeating in the one-line failure message.
fn is_error_line(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("==> Error")
        || l.starts_with("Error")
        || l.starts_with("error:")
        || l.starts_with("FATAL:")
        || l.contains(": Error response from daemon")
}

/// A Spack status line (`==> Installing …`), without its marker.
pub fn status_line(line: &str) -> Option<&str> {
    line.strip_prefix("==> ").map(str::trim)
}

/// Run `cmd`, appending everything it prints to `log` (created with a header naming the
/// command) and passing each line to `on_line`. The child's stdin is closed.
pub fn run_logged(
    cmd: &CommandLine,
    log: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<Outcome, BuildError> {
    let io = |what: String| move |source: std::io::Error| BuildError::Io { what, source };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening the build log {}", log.display())))?;
    let write_err = |source: std::io::Error| BuildError::Io {
        what: format!("writing the build log {}", log.display()),
        source,
    };
    writeln!(file, "# sf-cache build: {}", cmd.display()).map_err(write_err)?;

    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &cmd.env {
        command.env(k, v);
    }
    let mut child = command.spawn().map_err(|source| BuildError::Spawn {
        program: cmd.program.to_string_lossy().into_owned(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || pump(out, tx)));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || pump(err, tx)));
    }
    drop(tx);
    let mut last_error = None;
    let mut write_failed = None;
    for line in rx {
        if write_failed.is_none() {
            if let Err(e) = writeln!(file, "{line}") {
                write_failed = Some(e);
            }
        }
        if is_error_line(&line) {
            last_error = Some(line.trim().to_string());
        }
        on_line(&line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .map_err(io(format!("waiting for {}", cmd.program.to_string_lossy())))?;
    let code = status.code();
    let _ = writeln!(
        file,
        "# sf-cache build: exit {}",
        code.map_or("by signal".to_string(), |c| c.to_string())
    );
    if let Some(e) = write_failed {
        return Err(write_err(e));
    }
    file.flush().map_err(write_err)?;
    Ok(Outcome { code, last_error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandLine {
        CommandLine {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("SF_T".into(), "from-env".into())],
        }
    }

    #[test]
    fn both_streams_reach_the_log_and_status_lines_the_callback() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("logs/b.log");
        let mut seen = Vec::new();
        let o = run_logged(
            &sh("echo '==> Installing x'; echo to-stderr >&2; echo $SF_T; printf 'no newline'"),
            &log,
            |l| {
                if let Some(s) = status_line(l) {
                    seen.push(s.to_string())
                }
            },
        )
        .unwrap();
        assert!(o.success());
        assert_eq!(seen, vec!["Installing x"]);
        let text = std::fs::read_to_string(&log).unwrap();
        for want in [
            "# sf-cache build: /bin/sh -c",
            "==> Installing x",
            "to-stderr",
            "from-env",
            "no newline",
            "# sf-cache build: exit 0",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }

    #[test]
    fn failure_keeps_the_code_and_the_last_error() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("b.log");
        let o = run_logged(
            // Both errors on one stream: the two streams are read concurrently, so only the order
            // within a stream is defined.
            &sh("echo '==> Error: first' >&2; echo '==> Error: Failed to install x' >&2; echo done; exit 3"),
            &log,
            |_| {},
        )
        .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(
            o.last_error.as_deref(),
            Some("==> Error: Failed to install x")
        );
        for l in [
            "docker: Error response from daemon: pull access denied",
            "FATAL: image not found",
        ] {
            assert!(is_error_line(l), "{l}");
        }
        assert!(!is_error_line("==> Installing error-handler"));
    }

    #[test]
    fn a_missing_program_names_it() {
        let d = tempfile::tempdir().unwrap();
        let cmd = CommandLine {
            program: "/nonexistent/spack".into(),
            args: vec![],
            env: vec![],
        };
        let e = run_logged(&cmd, &d.path().join("l"), |_| {}).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/spack"), "{e}");
    }
}
