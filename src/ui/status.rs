//! One status line for long-running steps that report lines of text (the source build): a
//! spinner with the latest status on a terminal, plain lines when stderr is not a terminal,
//! nothing with `-q`/`--json`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner on stderr drawn with `template`, ticking by itself.
pub(crate) fn spinner(template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

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
        let bar = spinner("{spinner} {prefix} [{elapsed}] {wide_msg}");
        bar.set_prefix(prefix.to_string());
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

/// A step that may be slow (reading indexes, verifying manifests): a spinner at once on a
/// terminal; on a plain stderr one line if the step still runs after [`SlowStep::AFTER`], and
/// its outcome line when it took that long. Quick steps print nothing, so a quick failure stays
/// one line. Nothing with `-q`/`--json`.
pub struct SlowStep {
    bar: Option<ProgressBar>,
    /// Plain mode: tells the timer thread the step ended; the thread says whether it printed.
    timer: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>)>,
    started: std::time::Instant,
}

impl SlowStep {
    /// How long a step runs before a plain line is printed.
    pub const AFTER: Duration = Duration::from_secs(1);

    pub fn start(quiet: bool, text: &str) -> SlowStep {
        SlowStep::start_to(quiet, std::io::stderr().is_terminal(), text, || {
            Box::new(std::io::stderr())
        })
    }

    fn start_to(
        quiet: bool,
        terminal: bool,
        text: &str,
        out: impl FnOnce() -> Box<dyn Write + Send> + Send + 'static,
    ) -> SlowStep {
        let started = std::time::Instant::now();
        if quiet {
            return SlowStep {
                bar: None,
                timer: None,
                started,
            };
        }
        if terminal {
            let bar = spinner("{spinner} [{elapsed}] {wide_msg}");
            bar.set_message(text.to_string());
            return SlowStep {
                bar: Some(bar),
                timer: None,
                started,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let text = text.to_string();
        let handle = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(SlowStep::AFTER)
            {
                let _ = writeln!(out(), "{text}");
                return true;
            }
            false
        });
        SlowStep {
            bar: None,
            timer: Some((tx, handle)),
            started,
        }
    }

    /// The step is over: `outcome` replaces the spinner's line for a moment, or is printed as
    /// a plain line when the step was slow.
    pub fn finish(mut self, outcome: &str) {
        self.end(Some(outcome), &mut std::io::stderr());
    }

    fn end(&mut self, outcome: Option<&str>, out: &mut dyn Write) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some((tx, handle)) = self.timer.take() {
            let _ = tx.send(());
            let printed = handle.join().unwrap_or(false);
            let slow = self.started.elapsed() >= SlowStep::AFTER;
            if let Some(o) = outcome.filter(|_| printed || slow) {
                let _ = writeln!(out, "{o} ({:.1} s)", self.started.elapsed().as_secs_f64());
            }
        }
    }
}

impl Drop for SlowStep {
    fn drop(&mut self) {
        self.end(None, &mut std::io::sink());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::tests::Shared;

    #[test]
    fn a_quick_step_prints_nothing_and_a_slow_one_its_start_and_outcome() {
        let out = Shared::default();
        let o = out.clone();
        let mut quick = SlowStep::start_to(false, false, "reading", move || Box::new(o));
        let mut end = Shared::default();
        quick.end(Some("read"), &mut end);
        assert_eq!(out.text(), "");
        assert_eq!(end.text(), "");

        let o = out.clone();
        let mut slow = SlowStep::start_to(false, false, "reading the indexes", move || Box::new(o));
        std::thread::sleep(SlowStep::AFTER + Duration::from_millis(200));
        assert_eq!(out.text(), "reading the indexes\n");
        slow.end(Some("read 3 specs"), &mut end);
        assert!(end.text().starts_with("read 3 specs ("), "{}", end.text());
        assert!(end.text().ends_with(" s)\n"), "{}", end.text());

        // Quiet: nothing at all, however slow.
        let o = out.clone();
        let mut q = SlowStep::start_to(true, false, "x", move || Box::new(o));
        std::thread::sleep(SlowStep::AFTER + Duration::from_millis(100));
        let mut end = Shared::default();
        q.end(Some("y"), &mut end);
        assert_eq!(out.text(), "reading the indexes\n");
        assert_eq!(end.text(), "");
    }
}
