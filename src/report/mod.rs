//! The reporting layer: log lines with levels, live progress bars, the end summary and the
//! JSON report. Workers never print: they send events to one reporter thread, which owns
//! the terminal, so log lines never tear the bars and a slow terminal never blocks work.

mod progress;
mod summary;

pub use progress::{ProgressMode, Reporter};
pub use summary::{Failure, StageSummary, Summary, Totals};

use crossbeam_channel::Sender;

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only errors (`-q`).
    Error = 0,
    /// Errors and warnings (the default).
    Warn = 1,
    /// One line per file (`-v`).
    Info = 2,
    /// Engine and channel events (`-vv`).
    Debug = 3,
}

/// A message for the reporter thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A line to print on stderr.
    Line(String),
    /// The pipeline's stage metrics, known once it is built.
    Stages(Vec<std::sync::Arc<crate::metrics::StageMetrics>>),
}

/// A cheap, cloneable handle that workers log through. Messages below the level are
/// never formatted; the rest go to the reporter thread without blocking.
#[derive(Clone)]
pub struct Log {
    level: Level,
    tx: Option<Sender<Event>>,
}

impl Log {
    /// A log that prints directly to stderr (no reporter thread), for library callers.
    pub fn stderr(level: Level) -> Self {
        Log { level, tx: None }
    }

    pub(crate) fn to_reporter(level: Level, tx: Sender<Event>) -> Self {
        Log {
            level,
            tx: Some(tx),
        }
    }

    /// Whether messages at `level` are shown.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    fn line(&self, level: Level, text: impl FnOnce() -> String) {
        if !self.enabled(level) {
            return;
        }
        let text = text();
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(Event::Line(text)) {
                    if let Event::Line(t) = e.into_inner() {
                        eprintln!("{t}");
                    }
                }
            }
            None => eprintln!("{text}"),
        }
    }

    /// An error about one file: `ferry: <path>: <cause>`. Always shown.
    pub fn file_error(&self, path: &std::path::Path, cause: &str) {
        self.line(Level::Error, || {
            format!("ferry: {}: {cause}", path.display())
        });
    }

    /// A warning, shown unless `-q`.
    pub fn warn(&self, text: impl FnOnce() -> String) {
        self.line(Level::Warn, || format!("ferry: warning: {}", text()));
    }

    /// A per-file line, shown at `-v`.
    pub fn info(&self, text: impl FnOnce() -> String) {
        self.line(Level::Info, text);
    }

    /// Debug detail, shown at `-vv`.
    pub fn debug(&self, text: impl FnOnce() -> String) {
        self.line(Level::Debug, || format!("[debug] {}", text()));
    }
}

/// Bytes in binary units, as people read them: `1.2 MiB`, `230 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(230 * 1024), "230 KiB");
        assert_eq!(human_bytes(1258291), "1.2 MiB");
    }

    #[test]
    fn levels_filter_and_never_format_what_is_hidden() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let log = Log::to_reporter(Level::Warn, tx);
        log.info(|| panic!("formatted a hidden line"));
        log.warn(|| "careful".into());
        log.file_error(std::path::Path::new("a/b"), "permission denied");
        let lines: Vec<String> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Line(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            ["ferry: warning: careful", "ferry: a/b: permission denied"]
        );
    }
}
