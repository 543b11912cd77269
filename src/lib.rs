//! # ferry
//!
//! Moves every file of a directory tree through a concurrent pipeline — **load → gzip
//! compress → upload** — as fast as the machine allows, with bounded memory, live progress
//! and nothing lost: every discovered file ends as exactly one of succeeded, skipped,
//! failed or cancelled.
//!
//! ```text
//! producers (walk.rs)  ──FileTask──▶ load (load.rs) ──Segment──▶ compress (gzip.rs)
//!     ──Packed──▶ upload (upload.rs → sink/) ──Outcome──▶ collector (run.rs)
//!     reporter thread (report/) reads metrics.rs and draws progress
//! ```
//!
//! ## Map of the crate
//! - [`pipeline`] — the generic engine: bounded channels, one rayon pool per stage,
//!   cancellation ([`pipeline::CancelToken`]), engine events. Knows nothing of files.
//! - [`run()`] — ferry's pipeline wired from a [`Config`]: the library entry point.
//! - [`walk`] — producers: input roots and `--files-from` lists → [`task::FileTask`].
//! - [`load`] — opens files safely and reads them as segments within a byte [`load::Budget`].
//! - [`gzip`] — deflate pieces primed with a 32 KiB dictionary, header, trailer, CRC combine.
//! - [`upload`] — in-order assembly of each file's pieces into one gzip member at the sink.
//! - [`sink`] — the [`sink::Sink`] / [`sink::Upload`] traits and the `dir:` sink.
//! - [`manifest`] — what was delivered, so reruns skip unchanged files.
//! - [`verify`] — `ferry verify`: every delivered object checked against the manifest.
//! - [`report`] — log levels, progress bars, the end summary and JSON report.
//! - [`metrics`] — atomic counters, gauges and latency histograms.
//! - [`task`] — the data that flows between stages.
//! - [`config`], [`cli`], [`error`] — settings, flags, typed errors and exit codes.
//!
//! ```no_run
//! use ferry::{run, Config, pipeline::CancelToken, sink::SinkSpec};
//! let config = Config::new(vec!["logs".into()], SinkSpec::Dir("out".into()));
//! let summary = run(&config, CancelToken::new()).expect("setup failed");
//! println!("{}", summary.render_text());
//! ```

pub mod cli;
pub mod config;
pub mod error;
pub mod gzip;
pub mod load;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod report;
mod run;
pub mod sink;
pub mod task;
pub mod upload;
pub mod verify;
pub mod walk;

pub use config::Config;
pub use error::{ExitCode, FerryError};
pub use report::Summary;
pub use run::run;
