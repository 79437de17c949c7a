//! One status line for long-running steps that report lines of text (the source build): a
//! spinner with the latest status on a terminal, plain lines when stderr is not a terminal,
//! nothing with `-q`/`--json`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct StatusLine {
    bar: Option<ProgressBar>,
    plain: bool,
}

impl StatusLine {
    pub fn new(quiet: bool, prefix: &str) -> StatusLine {
        if quiet {
            return StatusLine {
                bar: None,
                plain: false,
            };
        }
        if !std::io::stderr().is_terminal() {
            return StatusLine {
                bar: None,
                plain: true,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        StatusLine {
            bar: Some(bar),
            plain: false,
        }
    }

    /// Show `text` as the current status.
    pub fn set(&self, text: &str) {
        if let Some(b) = &self.bar {
            b.set_message(text.to_string());
        } else if self.plain {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }

    /// Remove the line.
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.done();
    }
}
