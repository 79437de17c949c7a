//! Download progress: one indicatif bar per active blob plus an overall bar on a terminal; plain
//! lines when stderr is not a terminal; nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fetch::ProgressSink;
use crate::install::installer::{StagePhase, StageProgress};

enum Mode {
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
        bars: Mutex<HashMap<String, ProgressBar>>,
        /// Blobs whose size is not known yet: the total grows with their bytes.
        sizeless: Mutex<std::collections::HashSet<String>>,
    },
    Lines {
        sizes: Mutex<HashMap<String, (Option<u64>, u64)>>,
        out: Mutex<Box<dyn Write + Send>>,
    },
    Quiet,
}

pub struct DownloadProgress {
    mode: Mode,
    /// What a blob is, by digest hex (`slurm@24.11.5`): bars and lines name packages, not digests.
    names: HashMap<String, String>,
}

fn short(digest: &str) -> &str {
    let d = digest.strip_prefix("sha256:").unwrap_or(digest);
    &d[..d.len().min(12)]
}

impl DownloadProgress {
    /// `total_bytes`: the sum of the blob sizes to fetch, when known.
    pub fn new(quiet: bool, total_bytes: u64) -> DownloadProgress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(total_bytes));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            total.set_prefix("total");
            total.enable_steady_tick(Duration::from_millis(200));
            set_active_bars(Some(multi.clone()));
            Mode::Bars {
                multi,
                total,
                bars: Mutex::new(HashMap::new()),
                sizeless: Mutex::new(Default::default()),
            }
        } else {
            return DownloadProgress::lines_to(Box::new(std::io::stderr()));
        };
        DownloadProgress {
            mode,
            names: HashMap::new(),
        }
    }

    /// Name blobs after what they hold (digest hex, with or without `sha256:` → a name such as
    /// `slurm@24.11.5`); blobs without a name are shown by their short digest.
    pub fn with_names(mut self, names: impl IntoIterator<Item = (String, String)>) -> Self {
        self.names = names
            .into_iter()
            .map(|(d, n)| (d.strip_prefix("sha256:").unwrap_or(&d).to_string(), n))
            .collect();
        self
    }

    fn label(&self, blob: &str) -> String {
        let hex = blob.strip_prefix("sha256:").unwrap_or(blob);
        match self.names.get(hex) {
            Some(n) => n.clone(),
            None => short(blob).to_string(),
        }
    }

    /// Plain lines (one per blob started, fetched or failed) written to `out`.
    pub fn lines_to(out: Box<dyn Write + Send>) -> DownloadProgress {
        DownloadProgress {
            mode: Mode::Lines {
                sizes: Mutex::new(HashMap::new()),
                out: Mutex::new(out),
            },
            names: HashMap::new(),
        }
    }

    /// Clear the bars.
    pub fn done(&self) {
        if let Mode::Bars { total, multi, .. } = &self.mode {
            total.finish_and_clear();
            let _ = multi.clear();
            set_active_bars(None);
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        if let Mode::Lines { out, .. } = &self.mode {
            if let Ok(mut o) = out.lock() {
                let _ = o.write_fmt(text);
                let _ = o.write_all(b"\n");
            }
        }
    }

    /// Forget `blob`: its bar is removed; on plain lines, a fetched blob gets its line (a failed
    /// one has had its `failed` line, and is never reported as fetched).
    fn end(&self, blob: &str, fetched: bool) {
        match &self.mode {
            Mode::Bars { multi, bars, .. } => {
                if let Some(b) = bars.lock().ok().and_then(|mut b| b.remove(blob)) {
                    b.finish_and_clear();
                    multi.remove(&b);
                }
            }
            Mode::Lines { sizes, .. } => {
                let got = sizes
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(blob))
                    .map(|(_, n)| n)
                    .unwrap_or(0);
                if fetched {
                    self.line(format_args!(
                        "fetched {} ({})",
                        self.label(blob),
                        HumanBytes(got)
                    ));
                }
            }
            Mode::Quiet => {}
        }
    }
}

/// The bar of `blob`, if it has one.
fn bar_of(bars: &Mutex<HashMap<String, ProgressBar>>, blob: &str) -> Option<ProgressBar> {
    bars.lock().ok().and_then(|b| b.get(blob).cloned())
}

/// The bars on screen now, if any: log lines are printed above them (see [`LogWriter`]).
static ACTIVE_BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn set_active_bars(multi: Option<MultiProgress>) {
    if let Ok(mut a) = ACTIVE_BARS.lock() {
        *a = multi;
    }
}

/// The writer of log lines (`tracing`): one whole line at a time to stderr, printed above the
/// progress bars while there are any, so a log line never tears a bar.
#[derive(Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.buf);
        let active = ACTIVE_BARS.lock().ok().and_then(|a| a.clone());
        match active {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(&bytes)),
            None => std::io::stderr().write_all(&bytes),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl ProgressSink for DownloadProgress {
    fn start(&self, blob: &str, size: Option<u64>) {
        match &self.mode {
            Mode::Bars {
                multi,
                bars,
                sizeless,
                ..
            } => {
                if size.is_none() {
                    if let Ok(mut u) = sizeless.lock() {
                        u.insert(blob.to_string());
                    }
                }
                let bar = multi.insert_from_back(1, ProgressBar::new(size.unwrap_or(0)));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(self.label(blob));
                if let Ok(mut b) = bars.lock() {
                    b.insert(blob.to_string(), bar);
                }
            }
            Mode::Lines { sizes, .. } => {
                if let Ok(mut s) = sizes.lock() {
                    s.insert(blob.to_string(), (size, 0));
                }
                self.line(format_args!(
                    "fetching {}{}",
                    self.label(blob),
                    size.map(|s| format!(" ({})", HumanBytes(s)))
                        .unwrap_or_default()
                ));
            }
            Mode::Quiet => {}
        }
    }

    fn advance(&self, blob: &str, bytes: u64) {
        match &self.mode {
            Mode::Bars {
                total,
                bars,
                sizeless,
                ..
            } => {
                let bar = bar_of(bars, blob);
                if sizeless.lock().is_ok_and(|u| u.contains(blob)) {
                    // Still no length: the bars grow with the bytes, so they stay true.
                    total.inc_length(bytes);
                    if let Some(b) = &bar {
                        b.inc_length(bytes);
                    }
                }
                total.inc(bytes);
                if let Some(b) = &bar {
                    b.inc(bytes);
                }
            }
            Mode::Lines { sizes, .. } => {
                if let Ok(mut s) = sizes.lock() {
                    if let Some(e) = s.get_mut(blob) {
                        e.1 += bytes;
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    fn finish(&self, blob: &str) {
        self.end(blob, true);
    }

    fn failed(&self, blob: &str, error: &str) {
        self.line(format_args!("failed {}: {error}", self.label(blob)));
        self.end(blob, false);
    }

    fn length(&self, blob: &str, length: u64) {
        match &self.mode {
            Mode::Bars {
                total,
                bars,
                sizeless,
                ..
            } => {
                if sizeless.lock().is_ok_and(|mut u| u.remove(blob)) {
                    if let Some(b) = bar_of(bars, blob) {
                        // Bytes already counted (a resumed part) are in the length already.
                        let counted = b.length().unwrap_or(0);
                        total.inc_length(length.saturating_sub(counted));
                        b.set_length(length);
                    }
                }
            }
            Mode::Lines { sizes, .. } => {
                if let Ok(mut s) = sizes.lock() {
                    if let Some(e) = s.get_mut(blob) {
                        e.0 = Some(length);
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    fn retrying(&self, blob: &str, attempt: u32, retries: u32, resume_at: u64, error: &str) {
        if matches!(self.mode, Mode::Quiet) {
            return;
        }
        let from = if resume_at > 0 {
            format!(", resuming at {}", HumanBytes(resume_at))
        } else {
            String::new()
        };
        tracing::warn!(
            "retrying {} ({attempt}/{retries}{from}): {error}",
            self.label(blob)
        );
    }
}

/// Unpacking and relocation, per package: on a terminal one spinner line naming each package
/// being staged, its phase and files so far; on a plain stderr one line per phase when it ends
/// (`unpacked slurm@24.11.5: 22944 files in 2.1 s`, `relocated …: 1179 files changed in 0.9 s`);
/// nothing with `-q`/`--json`.
pub struct StageStatus {
    bar: Option<ProgressBar>,
    out: Option<Mutex<Box<dyn Write + Send>>>,
    /// Per package: what it is doing and when that phase started.
    state: Mutex<std::collections::BTreeMap<String, (String, std::time::Instant)>>,
}

impl StageStatus {
    pub fn new(quiet: bool) -> StageStatus {
        if quiet {
            StageStatus::with(None, None)
        } else if std::io::stderr().is_terminal() {
            let bar = super::status::spinner("{spinner} [{elapsed}] {wide_msg}");
            StageStatus::with(Some(bar), None)
        } else {
            StageStatus::lines_to(Box::new(std::io::stderr()))
        }
    }

    /// Plain lines written to `out`.
    pub fn lines_to(out: Box<dyn Write + Send>) -> StageStatus {
        StageStatus::with(None, Some(out))
    }

    fn with(bar: Option<ProgressBar>, out: Option<Box<dyn Write + Send>>) -> StageStatus {
        StageStatus {
            bar,
            out: out.map(Mutex::new),
            state: Mutex::new(Default::default()),
        }
    }

    /// Remove the spinner.
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        if let Some(out) = &self.out {
            if let Ok(mut o) = out.lock() {
                let _ = o.write_fmt(text);
                let _ = o.write_all(b"\n");
            }
        }
    }

    /// Set (or with `None` drop) what `package` is doing; returns the previous phase's age.
    fn set(&self, package: &str, doing: Option<String>) -> Duration {
        let Ok(mut st) = self.state.lock() else {
            return Duration::ZERO;
        };
        let now = std::time::Instant::now();
        let age = st
            .get(package)
            .map(|(_, t)| now.duration_since(*t))
            .unwrap_or_default();
        match doing {
            Some(d) => {
                let keep_clock = st
                    .get(package)
                    .is_some_and(|(old, _)| old.split(',').next() == d.split(',').next());
                let t = if keep_clock {
                    st.get(package).map(|(_, t)| *t).unwrap_or(now)
                } else {
                    now
                };
                st.insert(package.to_string(), (d, t));
            }
            None => {
                st.remove(package);
            }
        }
        if let Some(b) = &self.bar {
            let text: Vec<String> = st.iter().map(|(p, (d, _))| format!("{p}: {d}")).collect();
            b.set_message(text.join(" · "));
        }
        age
    }
}

impl StageProgress for StageStatus {
    fn phase(&self, package: &str, phase: StagePhase) {
        match phase {
            StagePhase::Unpacking => {
                self.set(package, Some("unpacking".into()));
            }
            StagePhase::Relocating { files } => {
                let took = self.set(package, Some("relocating".into()));
                self.line(format_args!(
                    "unpacked {package}: {files} files in {:.1} s",
                    took.as_secs_f64()
                ));
            }
            StagePhase::Staged { changed, .. } => {
                let took = self.set(package, None);
                self.line(format_args!(
                    "relocated {package}: {changed} files changed in {:.1} s",
                    took.as_secs_f64()
                ));
            }
        }
    }

    fn files(&self, package: &str, done: u64) {
        if self.bar.is_some() {
            self.set(package, Some(format!("unpacking, {done} files")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::tests::Shared;

    #[test]
    fn blobs_are_named_after_their_packages_when_known() {
        let out = Shared::default();
        let p = DownloadProgress::lines_to(Box::new(out.clone()))
            .with_names([("fd1de8b39bf2bbbb".to_string(), "slurm@24.11.5".to_string())]);
        p.start("sha256:fd1de8b39bf2bbbb", Some(3));
        p.start("sha256:630779eee475aaaa", None);
        p.advance("sha256:fd1de8b39bf2bbbb", 3);
        p.finish("sha256:fd1de8b39bf2bbbb");
        let text = out.text();
        assert_eq!(
            text,
            "fetching slurm@24.11.5 (3 B)\nfetching 630779eee475\nfetched slurm@24.11.5 (3 B)\n"
        );
    }

    #[test]
    fn a_failed_download_is_never_reported_as_fetched() {
        let out = Shared::default();
        let p = DownloadProgress::lines_to(Box::new(out.clone()));
        let bad = "sha256:630779eee475aaaa";
        let good = "sha256:fd1de8b39bf2bbbb";
        p.start(bad, Some(10));
        p.start(good, Some(3));
        p.advance(bad, 4);
        p.advance(good, 3);
        p.failed(bad, "sha256 mismatch");
        p.finish(good);
        let text = out.text();
        assert_eq!(
            text,
            "fetching 630779eee475 (10 B)\nfetching fd1de8b39bf2 (3 B)\n\
             failed 630779eee475: sha256 mismatch\nfetched fd1de8b39bf2 (3 B)\n"
        );
    }

    #[test]
    fn staging_prints_one_line_per_phase_on_plain_output() {
        let out = Shared::default();
        let st = StageStatus::lines_to(Box::new(out.clone()));
        st.phase("slurm@24.11.5", StagePhase::Unpacking);
        st.files("slurm@24.11.5", 256);
        st.phase("munge@0.5.16", StagePhase::Unpacking);
        st.phase("slurm@24.11.5", StagePhase::Relocating { files: 300 });
        st.phase(
            "slurm@24.11.5",
            StagePhase::Staged {
                files: 300,
                changed: 12,
            },
        );
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("unpacked slurm@24.11.5: 300 files in "),
            "{text}"
        );
        assert!(
            lines[1].starts_with("relocated slurm@24.11.5: 12 files changed in "),
            "{text}"
        );
        // munge is still unpacking.
        assert_eq!(st.state.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_total_stays_true_when_sizes_are_learnt_late_or_never() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let total = multi.add(ProgressBar::new(10));
        let p = DownloadProgress {
            mode: Mode::Bars {
                multi,
                total: total.clone(),
                bars: Mutex::new(HashMap::new()),
                sizeless: Mutex::new(Default::default()),
            },
            names: HashMap::new(),
        };
        // Planned: 10 bytes. A blob without a size learns its length from the server...
        p.start("a", Some(10));
        p.start("b", None);
        p.advance("b", 4);
        assert_eq!(total.length(), Some(14));
        p.length("b", 100);
        assert_eq!(total.length(), Some(110));
        p.advance("b", 96);
        // ...and one that never does grows the total with its bytes.
        p.start("c", None);
        p.advance("c", 7);
        p.advance("a", 10);
        assert_eq!(total.length(), Some(117));
        assert_eq!(total.position(), 117);
    }
}
