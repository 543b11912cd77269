//! The reporting layer: log lines with levels, live progress bars, the end summary and the
//! JSON report. Workers never print: they send events to one reporter thread, which owns
//! the terminal, so log lines never tear the bars and a slow terminal never blocks work.

pub mod exporter;
pub mod lines;
mod log;
mod progress;
mod summary;

pub use lines::Sample;
pub use log::{Level, Lines, Log};
pub use progress::{ColorMode, Look, ProgressMode, Reporter};
pub use summary::{write_json, Bottleneck, Failure, StageSummary, Summary, Totals};
