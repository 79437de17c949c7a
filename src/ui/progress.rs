//! Download progress: one indicatif bar per active blob plus an overall bar on a terminal; plain
//! lines when stderr is not a terminal; nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fetch::ProgressSink;

enum Mode {
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    Lines {
        sizes: Mutex<HashMap<String, (Option<u64>, u64)>>,
    },
    Quiet,
}

pub struct DownloadProgress {
    mode: Mode,
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
            Mode::Bars {
                multi,
                total,
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Lines {
                sizes: Mutex::new(HashMap::new()),
            }
        };
        DownloadProgress { mode }
    }

    /// Clear the bars.
    pub fn done(&self) {
        if let Mode::Bars { total, multi, .. } = &self.mode {
            total.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

impl ProgressSink for DownloadProgress {
    fn start(&self, blob: &str, size: Option<u64>) {
        match &self.mode {
            Mode::Bars { multi, bars, .. } => {
                let bar = multi.insert_from_back(1, ProgressBar::new(size.unwrap_or(0)));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(short(blob).to_string());
                if let Ok(mut b) = bars.lock() {
                    b.insert(blob.to_string(), bar);
                }
            }
            Mode::Lines { sizes } => {
                if let Ok(mut s) = sizes.lock() {
                    s.insert(blob.to_string(), (size, 0));
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "fetching {}{}",
                    short(blob),
                    size.map(|s| format!(" ({})", HumanBytes(s)))
                        .unwrap_or_default()
                );
            }
            Mode::Quiet => {}
        }
    }

    fn advance(&self, blob: &str, bytes: u64) {
        match &self.mode {
            Mode::Bars { total, bars, .. } => {
                total.inc(bytes);
                if let Some(b) = bars.lock().ok().and_then(|b| b.get(blob).cloned()) {
                    b.inc(bytes);
                }
            }
            Mode::Lines { sizes } => {
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
        match &self.mode {
            Mode::Bars { multi, bars, .. } => {
                if let Some(b) = bars.lock().ok().and_then(|mut b| b.remove(blob)) {
                    b.finish_and_clear();
                    multi.remove(&b);
                }
            }
            Mode::Lines { sizes } => {
                let got = sizes
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(blob))
                    .map(|(_, n)| n)
                    .unwrap_or(0);
                let _ = writeln!(
                    std::io::stderr(),
                    "fetched {} ({})",
                    short(blob),
                    HumanBytes(got)
                );
            }
            Mode::Quiet => {}
        }
    }

    fn failed(&self, blob: &str, error: &str) {
        if let Mode::Lines { .. } = self.mode {
            let _ = writeln!(std::io::stderr(), "failed {}: {error}", short(blob));
        }
        self.finish(blob);
    }
}
