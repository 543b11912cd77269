//! Log lines with levels: a cheap handle workers log through, which hands lines to the
//! reporter thread (or stderr) without blocking and never formats a hidden line.

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
    Stages(Vec<std::sync::Arc<crate::pipeline::StageMetrics>>),
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
        // One line for a person: a name's control characters (ESC, newlines) are shown
        // escaped, never sent to the terminal.
        let raw = crate::words::redacted(&text()).into_owned();
        let text = match raw.chars().any(char::is_control) {
            true => crate::words::escaped(&raw).into_owned(),
            false => raw,
        };
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
    pub fn file_error(&self, path: &std::path::Path, cause: &dyn std::fmt::Display) {
        self.line(Level::Error, || {
            format!("ferry: {}: {cause}", path.display())
        });
    }

    /// An error not about one file: `ferry: <text>`. Always shown.
    pub fn error(&self, text: impl FnOnce() -> String) {
        self.line(Level::Error, || format!("ferry: {}", text()));
    }

    /// A result worth saying, `ferry: <text>`, shown unless `-q`.
    pub fn status(&self, text: impl FnOnce() -> String) {
        self.line(Level::Warn, || format!("ferry: {}", text()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filter_and_never_format_what_is_hidden() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let log = Log::to_reporter(Level::Warn, tx);
        log.info(|| panic!("formatted a hidden line"));
        log.warn(|| "careful".into());
        log.file_error(std::path::Path::new("a/b"), &"permission denied");
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
