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

/// The lines a [`Log`] made by [`Log::pending`] has written, waiting for the reporter
/// thread that will print them. Lines still waiting when this is dropped (the command
/// failed before its reporter started) go to stderr, in order: none is lost.
pub struct Lines {
    pub(crate) rx: Option<crossbeam_channel::Receiver<String>>,
}

impl Lines {
    /// Hands the waiting lines, and every later one, to their printer.
    pub(crate) fn take(mut self) -> crossbeam_channel::Receiver<String> {
        self.rx.take().unwrap_or_else(crossbeam_channel::never)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            rx.try_iter().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// A cheap, cloneable handle that workers log through. Messages below the level are
/// never formatted; the rest go to the reporter thread without blocking.
#[derive(Clone)]
pub struct Log {
    level: Level,
    tx: Option<Sender<String>>,
}

impl Log {
    /// A log that prints directly to stderr (no reporter thread), for library callers.
    pub fn stderr(level: Level) -> Self {
        Log { level, tx: None }
    }

    /// A log whose lines wait in [`Lines`] until a reporter thread starts on them, so a
    /// command can log (its sink client's retries) before its progress view exists.
    pub fn pending(level: Level) -> (Self, Lines) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            Log {
                level,
                tx: Some(tx),
            },
            Lines { rx: Some(rx) },
        )
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
                if let Err(e) = tx.send(text) {
                    eprintln!("{}", e.into_inner());
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
        let (log, lines) = Log::pending(Level::Warn);
        log.info(|| panic!("formatted a hidden line"));
        log.warn(|| "careful".into());
        log.file_error(std::path::Path::new("a/b"), &"permission denied");
        let lines: Vec<String> = lines.take().try_iter().collect();
        assert_eq!(
            lines,
            ["ferry: warning: careful", "ferry: a/b: permission denied"]
        );
    }
}
