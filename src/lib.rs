//! # ferry
//!
//! Moves every file of a directory tree through a concurrent pipeline — **load → gzip
//! compress → upload** — as fast as the machine allows, with bounded memory, live progress
//! and nothing lost: every discovered file ends as exactly one of succeeded, skipped,
//! failed or cancelled.
//!
//! ```text
//! producers (walk) ──FileTask──▶ load ──Segment──▶ compress ──Packed──▶ upload → sink/
//!     ──Outcome──▶ record (ledger) → summary, manifest
//!     reporter thread (report/) reads metrics and draws progress
//! ```
//!
//! ## Map of the crate
//! - [`pipeline`] — the generic engine: bounded channels, one rayon pool per stage,
//!   cancellation ([`pipeline::CancelToken`]), engine events and stage metrics. Knows
//!   nothing of files, and imports nothing from the rest of the crate.
//! - [`run()`] — ferry's pipeline wired from a [`Config`]: the library entry point.
//! - [`plan`] — a run prepared: inputs checked, sink opened, manifest read.
//! - [`walk`] — producers: input roots and `--files-from` lists → [`task::FileTask`].
//! - [`load`] — opens files safely and reads them as segments within the [`budget`].
//! - [`compress`] — the compress stage: each segment deflated by its worker's compressor.
//! - [`gzip`] — deflate pieces, header, trailer, CRC combine.
//! - [`upload`] — in-order assembly of each file's pieces into one gzip member at the sink.
//! - [`ledger`] — the collector: outcomes counted, failures listed, deliveries kept.
//! - [`sink`] — the [`sink::Sink`] / [`sink::Upload`] traits and the `dir:`, `sim:` and
//!   `s3://` sinks.
//! - [`manifest`] — what was delivered (formats, and the compact index a rerun keeps).
//! - [`journal`] — deliveries saved as the run goes, folded into the manifest at the end.
//! - [`verify`] — `ferry verify`: every delivered object checked against the manifest.
//! - [`restore`] — `ferry restore`: the way back, fetch → inflate → write under DEST.
//! - [`inflate`] — reading ferry's objects back (whole, streamed, or by segment), shared
//!   by verify and restore.
//! - [`shard`] — `--shard K/N`; [`shard::plan`], `ferry plan`: lists balanced by bytes;
//!   [`shard::report`], shard reports at the sink and `ferry report`.
//! - [`report`] — log levels, progress bars, the end summary and JSON report.
//! - [`metrics`] — ferry's run counters of files and bytes.
//! - [`task`] — the data that flows between stages.
//! - [`config`], [`cli`], [`error`], [`words`], [`interrupt`] — settings, flags, typed
//!   errors and exit codes, user-facing words, Ctrl-C.
//!
//! ```no_run
//! use ferry::{run, Config, pipeline::CancelToken, sink::SinkSpec};
//! let config = Config::builder(vec!["logs".into()], SinkSpec::Dir("out".into()))
//!     .build()
//!     .expect("valid settings");
//! let summary = run(&config, CancelToken::new()).expect("setup failed");
//! println!("{}", summary.render_text());
//! ```

pub mod beneath;
pub mod budget;
pub mod cli;
pub mod compress;
pub mod config;
pub mod error;
pub mod gzip;
pub mod ident;
pub mod inflate;
pub mod interrupt;
pub mod journal;
pub mod lease;
pub mod ledger;
pub mod load;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod restore;
mod run;
pub mod shard;
pub mod sink;
pub mod task;
pub mod upload;
pub mod verify;
pub mod walk;
pub mod words;

pub use config::Config;
pub use error::{ExitCode, FerryError};
pub use report::Summary;
pub use run::run;
