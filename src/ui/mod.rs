//! What users see: logs (tracing, to stderr), tables, and `--json` output (stdout).

use std::io::{IsTerminal, Write};

pub mod progress;
pub mod status;

use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Print a serializable value as pretty JSON on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        out.flush()
    }

    /// Print human text on stdout (results, not diagnostics).
    pub fn line(&self, text: impl AsRef<str>) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", text.as_ref())
    }

    /// Print `rows` as a JSON array with `--json`, else as a table of `headers` whose cells
    /// `cells` makes for each row. Returns whether it printed JSON (a caller may add human lines
    /// after a table, never after JSON).
    pub fn rows<T: Serialize>(
        &self,
        rows: &[T],
        headers: &[&str],
        cells: impl Fn(&T) -> Vec<String>,
    ) -> std::io::Result<bool> {
        if self.json {
            self.json(rows)?;
            return Ok(true);
        }
        let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
        self.table(headers, &table)?;
        Ok(false)
    }

    /// Print a table with left-aligned columns.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(render_table(headers, rows).as_bytes())?;
        out.flush()
    }
}

pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut s = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
    };
    push_row(headers.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    s
}

/// Set up tracing: `-q` errors only, default warnings, `-v` debug, `-vv` trace; `SF_CACHE_LOG`
/// (an env-filter directive) overrides. Logs go to stderr.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "sf_cache=debug,info",
            _ => "trace",
        }
    };
    let filter = std::env::var("SF_CACHE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter::default)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose > 0)
        .without_time()
        .try_init();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer the tests read back (progress and status lines).
    #[derive(Clone, Default)]
    pub(crate) struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn table_aligns_columns() {
        let t = render_table(
            &["NAME", "VERSION"],
            &[
                vec!["greet".into(), "2.1.0".into()],
                vec!["libgreet".into(), "1.2.0".into()],
            ],
        );
        assert_eq!(t, "NAME      VERSION\ngreet     2.1.0\nlibgreet  1.2.0\n");
    }
}
