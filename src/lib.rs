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
//!     reporter thread (view/) reads metrics and draws progress
//! ```
//!
//! ## Map of the crate
//! - [`commands`] — the five commands (`deliver`, `restore`, `verify`, `plan`, `report`)
//!   and the one harness they all run through: sink → history → engine → reporter →
//!   wait → what it found → exit code. [`run()`] is the delivery, for library callers.
//! - [`pipeline`] — the generic engine: bounded channels, one rayon pool per stage,
//!   cancellation ([`pipeline::CancelToken`]), engine events and stage metrics. Knows
//!   nothing of files, and imports nothing from the rest of the crate.
//! - Delivery's stages: [`walk`] (producers: input roots, `--files-from`, planned lists →
//!   [`task::FileTask`]), [`load`] (open safely, read segments within the [`budget`]),
//!   [`compress`] (deflate each segment; [`gzip`] frames them), [`upload`] (pieces in
//!   order into one gzip member at the sink), [`ledger`] (the accounting of outcomes,
//!   for every command).
//! - Restore's stages: [`unpack`] (fetch → inflate → write under DEST), reading objects
//!   with [`inflate`], which `ferry verify` shares.
//! - [`sink`] — the [`sink::Sink`] / [`sink::Upload`] traits and the `dir:`, `sim:` and
//!   object store sinks; [`beneath`] writes under a user's directory only through handles.
//! - [`history`] — what a sink remembers: manifest, journal, lease, plans, shard reports.
//! - [`view`] — log levels, progress bars, the end summary and JSON report; [`counters`],
//!   the files and bytes they read.
//! - [`task`] — the data that flows between stages; [`shard`] — `--shard K/N`; [`globs`]
//!   — `--include`/`--exclude`.
//! - [`config`], [`cli`], [`error`], [`words`], [`interrupt`], [`ident`] — settings,
//!   flags, typed errors and exit codes, user-facing words, Ctrl-C, run ids.
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
pub mod bwlimit;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod counters;
pub mod error;
pub mod form;
pub mod globs;
pub mod gzip;
pub mod history;
pub mod ident;
pub mod inflate;
pub mod interrupt;
pub mod ledger;
pub mod load;
pub mod pipeline;
pub mod shard;
pub mod sink;
pub mod task;
pub mod unpack;
pub mod upload;
pub mod view;
pub mod walk;
pub mod words;

pub use commands::deliver::run;
pub use config::Config;
pub use error::{ExitCode, FerryError};
pub use view::Summary;
